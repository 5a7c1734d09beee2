import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import type { Federation, HttpMessageSignaturesSpec } from "@fedify/fedify";
import type { Activity, Recipient } from "@fedify/vocab";
import { listenOnLoopback, personActors } from "./person-actors.ts";

/**
 * A stand-in fediverse server like test/helpers/peer.ts (Person actors at
 * /users/<name>, a shared inbox at /inbox, RSA keys, Fedify verifying every
 * signature), which also records every inbox POST at the HTTP level, before
 * Fedify's own per-inbox duplicate check, so a test can count how many times
 * a server was sent an activity. Its inboxes can be told to answer slowly,
 * with an error status, or to let one particular delivery hang.
 */

export interface InboxHit {
  /** Request path: `/inbox` (shared) or `/users/<name>/inbox`. */
  readonly path: string;
  readonly shared: boolean;
  readonly id: string | null;
  readonly type: string | null;
  /** The object's id (a string object, or an embedded object's `id`). */
  readonly objectId: string | null;
  readonly body: Record<string, unknown> | null;
  readonly receivedAt: number;
  /** Status sent back; undefined while the request is still open. */
  status?: number;
  respondedAt?: number;
  /** The sender hung up before we answered (it crashed, or timed out). */
  aborted: boolean;
}

export interface InboxBehaviour {
  /** Answer inbox POSTs after this many ms (after Fedify has handled them). */
  delayMs: number;
  /** Answer inbox POSTs with this status at once, without handing them to Fedify. */
  failStatus: number | null;
  /**
   * Called for each inbox POST before it is handled; a number returned is an
   * extra delay (ms) for this request only. Lets a test slow down exactly one
   * delivery (say, the first one of an activity across all servers).
   */
  extraDelay?: (hit: InboxHit) => number;
  /** Called right after an inbox POST has been answered (the bytes handed to the socket). */
  onResponded?: (hit: InboxHit) => void;
}

export interface CountingPeer {
  readonly origin: URL;
  readonly host: string;
  readonly federation: Federation<void>;
  /** Every inbox POST, in arrival order. */
  readonly hits: InboxHit[];
  /** Activities Fedify accepted (signature verified, not a per-inbox duplicate). */
  readonly received: Activity[];
  readonly behaviour: InboxBehaviour;
  readonly names: readonly string[];
  actorId(name: string): URL;
  sharedInbox(): URL;
  /** Every request, inbox or not, in arrival order (actor and key fetches too). */
  readonly requests: { readonly method: string; readonly path: string }[];
  /** Inbox POSTs of the activity with this id (any inbox). */
  hitsOf(activityId: string): InboxHit[];
  /** Delivers through Fedify's own sender (double-knock), immediately. */
  send(from: string, to: Recipient, activity: Activity): Promise<void>;
  signedPost(inbox: URL, body: string, opts: { as: string; spec?: HttpMessageSignaturesSpec }): Promise<Request>;
  signedGet(url: URL, opts: { as: string; spec?: HttpMessageSignaturesSpec }): Promise<Request>;
  lookup(url: URL): Promise<unknown>;
  /** Stops listening (the port is closed: connections are refused) and drops open sockets. */
  close(): Promise<void>;
}

function describe(body: Record<string, unknown> | null): Pick<InboxHit, "id" | "type" | "objectId"> {
  if (!body) return { id: null, type: null, objectId: null };
  const object = body.object;
  const objectId = typeof object === "string" ? object : object && typeof object === "object" && typeof (object as { id?: unknown }).id === "string" ? (object as { id: string }).id : null;
  return {
    id: typeof body.id === "string" ? body.id : null,
    type: typeof body.type === "string" ? body.type : null,
    objectId,
  };
}

export async function startCountingPeer(names: readonly string[], behaviour: Partial<InboxBehaviour> = {}): Promise<CountingPeer> {
  const server: Server = createServer();
  const sockets = new Set<Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  const origin = await listenOnLoopback(server);
  const actors = await personActors(origin, names);
  const hits: InboxHit[] = [];
  const requests: { method: string; path: string }[] = [];
  const state: InboxBehaviour = { delayMs: 0, failStatus: null, ...behaviour };

  const isInbox = (path: string) => path === "/inbox" || /^\/users\/[^/]+\/inbox$/.test(path);

  server.on("request", async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? Buffer.concat(chunks) : undefined;
    const path = new URL(req.url ?? "/", origin).pathname;
    requests.push({ method: req.method ?? "", path });
    let hit: InboxHit | undefined;
    if (req.method === "POST" && isInbox(path)) {
      let json: Record<string, unknown> | null = null;
      try {
        json = JSON.parse(body?.toString("utf8") ?? "null") as Record<string, unknown>;
      } catch {
        json = null;
      }
      const h: InboxHit = { path, shared: path === "/inbox", ...describe(json), body: json, receivedAt: Date.now(), aborted: false };
      hit = h;
      hits.push(h);
      res.on("close", () => {
        if (h.respondedAt === undefined) h.aborted = true;
      });
      if (state.failStatus !== null) {
        h.status = state.failStatus;
        h.respondedAt = Date.now();
        res.writeHead(state.failStatus, { "Content-Type": "text/plain" });
        res.end("failing on purpose");
        return;
      }
    }
    const response = await actors.answer(req, body);
    const payload = Buffer.from(await response.arrayBuffer());
    if (hit) {
      const wait = state.delayMs + (state.extraDelay?.(hit) ?? 0);
      // Unref'd: a server told to hang must not keep the test process alive.
      if (wait > 0) await new Promise((r) => setTimeout(r, wait).unref());
      if (res.destroyed) return;
      hit.status = response.status;
      hit.respondedAt = Date.now();
    }
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(payload);
    if (hit) state.onResponded?.(hit);
  });

  let closed: Promise<void> | undefined;
  return {
    origin,
    host: origin.host,
    federation: actors.federation,
    hits,
    requests,
    received: actors.received,
    behaviour: state,
    names,
    actorId: (n) => new URL(`/users/${n}`, origin),
    sharedInbox: () => new URL("/inbox", origin),
    hitsOf: (id) => hits.filter((h) => h.id === id),
    send: actors.send,
    signedPost: actors.signedPost,
    signedGet: actors.signedGet,
    lookup: actors.lookup,
    close() {
      closed ??= new Promise<void>((r) => {
        server.close(() => r());
        for (const s of sockets) s.destroy();
      });
      return closed;
    },
  };
}

// A child process (bench/fanout.ts forks it) that plays a thousand member
// servers at once: one HTTP server per loopback address 127.77.x.y, all on
// one port and one handler. It verifies each delivery's HTTP signature with
// Fedify (the sender's key is fetched once, then cached), records the activity
// id per inbox, and answers 202, so the sender sees real, distinct origins
// (one connection pool each, one key fetch each) without a thousand processes.
import "../src/temporal.ts";
import { Agent, createServer, get, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createPublicKey } from "node:crypto";
import { createFederation, type KeyCache, MemoryKvStore, verifyRequest } from "@fedify/fedify";
import { CryptographicKey } from "@fedify/vocab";
import { claimSignature } from "../federation/inbox-fast-verify.ts";

export interface ReceiverStart {
  readonly hosts: number;
  /** This receiver plays servers offset … offset + hosts - 1 (one process cannot hold 2·10^4 sockets and their connections). */
  readonly offset?: number;
  /** Where the sender's keys live: the receiver fetches from here only. */
  readonly senderOrigin: string;
}

/** Messages the receiver sends its parent. */
export type ReceiverMessage =
  | { readonly kind: "listening"; readonly port: number; readonly hosts: readonly string[] }
  | { readonly kind: "stats"; readonly stats: ReceiverStats }
  /** How many verified POSTs of one activity id each inbox got (answer to { kind: "hits", activityId }). */
  | { readonly kind: "hits"; readonly hits: readonly (readonly [string, number])[] };

export interface ReceiverStats {
  /** Inbox POSTs answered 202 (signature verified). */
  readonly delivered: number;
  /** POSTs refused with 401: no signature, or one that did not verify against the sender's key. */
  readonly refused: number;
  /**
   * POSTs refused with 401 because the sender's key could not be fetched
   * (its server down or not answering): the sender retries them, as with
   * Mastodon. Apart from `refused`, so a crash test can tell a sender killed
   * mid-fetch from a bad signature.
   */
  readonly keyUnreachable: number;
  /** POSTs of an activity id this inbox already had. */
  readonly repeats: number;
  /** Distinct inboxes that received at least one delivery. */
  readonly inboxes: number;
  readonly firstAt: number | null;
  readonly lastAt: number | null;
  /** This process's CPU time (user + system) since it started, ms. */
  readonly cpuMs: number;
  readonly key_fetches: number;
  /** POSTs to /bare (the baseline: signed and verified like a delivery, not counted as one), answered 202. */
  readonly bare: number;
  /** Verified POSTs the synchronous verifier left to Fedify's verifyRequest. */
  readonly fedifyVerified: number;
  /**
   * For repeats: ms from the first POST of that id to this inbox arriving to
   * the repeat arriving (first few), and how long the first one took here
   * (arrival to 202): a repeat about the sender's HTTP timeout after a slow
   * first answer is the sender's retry, not a second claim.
   */
  readonly repeatGaps?: readonly { readonly inbox: string; readonly gapMs: number; readonly firstTookMs: number }[];
}

/** What claimSignature reads of a Request (method, url, header lookups), over Node's parsed request. */
function nodeRequest(req: IncomingMessage, url: string): Request {
  const header = (name: string) => {
    const v = req.headers[name.toLowerCase()];
    return typeof v === "string" ? v : null;
  };
  return { method: req.method ?? "", url, headers: { get: header, has: (name: string) => header(name) !== null } } as unknown as Request;
}

const keyAgent = new Agent({ keepAlive: true, maxSockets: 64 });

/** A GET of an http: URL (the sender's actor document), its status and text. */
function getText(url: URL): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: keyAgent, headers: { accept: "application/activity+json" } }, (res) => {
      res.setEncoding("utf8");
      let body = "";
      res.on("data", (chunk: string) => {
        body += chunk;
        if (body.length > MAX_BODY) req.destroy(new Error("the key document is too large"));
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setTimeout(30_000, () => req.destroy(new Error("the key GET timed out")));
  });
}

/** The loopback address of simulated server i (0-based): 127.77.0.1 … */
export function hostAddress(i: number): string {
  return `127.77.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

const MAX_BODY = 1 << 20;

async function main(start: ReceiverStart): Promise<void> {
  const seen = new Map<string, Set<string>>();
  /** `${activity id} ${inbox}` to verified POSTs, repeats included. */
  const counts = new Map<string, number>();
  let delivered = 0;
  let refused = 0;
  let keyUnreachable = 0;
  let repeats = 0;
  let keyFetches = 0;
  let bare = 0;
  /** Deliveries that only Fedify's verifier accepted (the synchronous one said no or did not know the form). */
  let fedifyVerified = 0;
  let firstAt: number | null = null;
  let lastAt: number | null = null;
  /** `${id} ${inbox}` to when its first POST arrived and how long it took to answer. */
  const firstSeen = new Map<string, { at: number; tookMs: number }>();
  const repeatGaps: { inbox: string; gapMs: number; firstTookMs: number }[] = [];
  // Fedify's own loaders, allowed to reach loopback, so the key is fetched and
  // parsed exactly as a Fedify-based member server would.
  const federation = createFederation<void>({ kv: new MemoryKvStore(), allowPrivateAddress: true });
  const ctx = federation.createContext(new URL(start.senderOrigin));
  // One key cache per simulated server, as each real server keeps its own:
  // the sender's actor document is fetched once by every server. Fetched and
  // read as Mastodon does (one GET of the key id, the PEM taken from the
  // JSON, kept), not through Fedify's JSON-LD processing of the whole actor,
  // which cost this process 3-17 ms per server on the machine the sender
  // shares: the figure was the swarm's, not Muster's. A cached key that does
  // not verify still sends Fedify to the documentLoader below.
  const keys = new Map<string, unknown>();
  const keyCacheOf = (host: string, fetchFailed: { yes: boolean }) => ({
    get: async (id: URL) => {
      const k = `${host} ${id.href}`;
      let key = keys.get(k);
      if (key === undefined && new URL(id).origin === new URL(start.senderOrigin).origin) {
        // Undefined: the server answered without the key; "unreachable": no answer or a 5xx.
        key = fetchKeyAsMastodon(id).catch(() => "unreachable" as const);
        keys.set(k, key);
      }
      let found = await key;
      if (found === "unreachable") {
        fetchFailed.yes = true;
        found = undefined;
      }
      // A failed fetch is not remembered: a server asks again on the next
      // delivery, as Mastodon does. A sender killed while a receiver fetched
      // its key (the crash tests) otherwise had every later delivery to that
      // server refused.
      if (found === undefined || found === null) keys.delete(k);
      return found as never;
    },
    set: async (id: URL, key: unknown) => {
      if (key === null || key === undefined) keys.delete(`${host} ${id.href}`);
      else keys.set(`${host} ${id.href}`, key);
    },
  } satisfies KeyCache);
  // Each simulated server GETs the key itself (a real request to Muster, as
  // every real server makes once), over this process's kept-alive
  // connections to the sender, with node:http rather than fetch (whose
  // Request/Response machinery cost more than the GET). What it got back is
  // turned into a key once per distinct (key id, owner, PEM) in this
  // process, not once per server: the same bytes make the same key, and every
  // delivery is still verified against the key its server fetched.
  const parsedKeys = new Map<string, Promise<CryptographicKey>>();
  const fetchKeyAsMastodon = async (id: URL): Promise<CryptographicKey | undefined> => {
    keyFetches++;
    const url = new URL(id);
    url.hash = "";
    const { status, body } = await getText(url);
    if (status >= 500) throw new Error(`the key GET answered ${status}`);
    if (status < 200 || status > 299) return undefined;
    const actor = JSON.parse(body) as { id?: string; publicKey?: { id?: string; publicKeyPem?: string } | { id?: string; publicKeyPem?: string }[] };
    const found = [actor.publicKey ?? []].flat().find((k) => k.id === id.href);
    if (found?.publicKeyPem === undefined || typeof actor.id !== "string") return undefined;
    const pem = found.publicKeyPem;
    const owner = actor.id;
    const cacheKey = `${id.href} ${owner} ${pem}`;
    let parsed = parsedKeys.get(cacheKey);
    if (parsed === undefined) {
      parsed = (async () => {
        const der = createPublicKey(pem).export({ format: "der", type: "spki" });
        const publicKey = await crypto.subtle.importKey("spki", der, { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, true, ["verify"]);
        return new CryptographicKey({ id, owner: new URL(owner), publicKey });
      })();
      parsed.catch(() => parsedKeys.delete(cacheKey));
      parsedKeys.set(cacheKey, parsed);
    }
    return await parsed;
  };
  const documentLoader: typeof ctx.documentLoader = async (url, options) => {
    if (new URL(url).origin !== new URL(start.senderOrigin).origin) throw new Error(`refusing to fetch ${url}: not the sender`);
    keyFetches++;
    return ctx.documentLoader(url, options);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const arrived = Date.now();
    if (req.method !== "POST") {
      res.writeHead(405).end();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY) {
        res.writeHead(413, { connection: "close" }).end();
        return;
      }
      chunks.push(chunk as Buffer);
    }
    const body = Buffer.concat(chunks);
    const url = `http://${req.headers.host}${req.url}`;
    const isBare = req.url === "/bare";
    // The baseline keeps its own key cache, so it does not save the fan-out a key fetch.
    // Set when the sender's key could not be fetched for this POST (Fedify's
    // verifier asks the same cache first, so its path sets it too).
    const fetchFailed = { yes: false };
    const keyCache = keyCacheOf(`${isBare ? "bare " : ""}${req.headers.host ?? ""}`, fetchFailed);
    // Every signature is verified. First with Muster's synchronous verifier
    // (federation/inbox-fast-verify.ts: node:crypto, no Request object, no
    // WebCrypto jobs; held to Fedify's verifier by 22 differential tests),
    // as a receiver that is not built on Fedify would: Fedify's verifyRequest
    // cost this process 0.5-0.8 ms a delivery on the 2 cores Muster shares.
    // Whatever it does not accept goes to Fedify's verifyRequest, which
    // decides: refused means Fedify refused it too.
    let verified = false;
    const claim = claimSignature(nodeRequest(req, url), body, Date.now(), 3_600_000);
    if (claim !== undefined) {
      const cached = await keyCache.get(claim.keyId) as CryptographicKey | undefined;
      verified = cached !== undefined && claim.check(cached);
    }
    if (!verified) {
      const headers = new Headers();
      for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
      const request = new Request(url, { method: "POST", headers, body });
      verified = await verifyRequest(request, {
        documentLoader,
        contextLoader: ctx.contextLoader,
        keyCache,
        spec: headers.has("signature-input") ? "rfc9421" : "draft-cavage-http-signatures-12",
      }).then((key) => key !== null, () => false);
      if (verified) fedifyVerified++;
    }
    if (!verified) {
      if (fetchFailed.yes) keyUnreachable++;
      else refused++;
      res.writeHead(401).end();
      return;
    }
    const id = String((JSON.parse(body.toString("utf8")) as { id?: unknown }).id);
    if (isBare) {
      bare++;
      res.writeHead(202).end();
      return;
    }
    let ids = seen.get(url);
    if (!ids) seen.set(url, (ids = new Set()));
    const first = firstSeen.get(`${id} ${url}`);
    if (ids.has(id)) {
      repeats++;
      if (first !== undefined && repeatGaps.length < 20) repeatGaps.push({ inbox: url, gapMs: arrived - first.at, firstTookMs: first.tookMs });
    } else firstSeen.set(`${id} ${url}`, { at: arrived, tookMs: Date.now() - arrived });
    counts.set(`${id} ${url}`, (counts.get(`${id} ${url}`) ?? 0) + 1);
    ids.add(id);
    delivered++;
    const now = Date.now();
    firstAt ??= now;
    lastAt = now;
    res.writeHead(202).end();
  };

  const servers: Server[] = [];
  const addresses = Array.from({ length: start.hosts }, (_, i) => hostAddress((start.offset ?? 0) + i));
  let port = 0;
  for (const address of addresses) {
    const server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
      handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(error));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, address, () => resolve());
    });
    port = (server.address() as { port: number }).port;
    servers.push(server);
  }
  const cpu0 = process.cpuUsage();
  const stats = (): ReceiverStats => {
    const cpu = process.cpuUsage(cpu0);
    return { delivered, refused, keyUnreachable, repeats, inboxes: seen.size, firstAt, lastAt, cpuMs: (cpu.user + cpu.system) / 1000, key_fetches: keyFetches, bare, fedifyVerified, repeatGaps };
  };
  process.on("message", (m: { kind: string; activityId?: string }) => {
    if (m.kind === "stats") process.send!({ kind: "stats", stats: stats() } satisfies ReceiverMessage);
    if (m.kind === "hits") {
      const prefix = `${m.activityId} `;
      const hits = [...counts].filter(([k]) => k.startsWith(prefix)).map(([k, n]) => [k.slice(prefix.length), n] as const);
      process.send!({ kind: "hits", hits } satisfies ReceiverMessage);
    }
    if (m.kind === "stop") {
      for (const s of servers) s.closeAllConnections();
      Promise.all(servers.map((s) => new Promise((r) => s.close(r)))).then(() => process.exit(0));
    }
  });
  process.send!({ kind: "listening", port, hosts: addresses } satisfies ReceiverMessage);
}

if (process.send) {
  process.once("message", (m: ReceiverStart) => {
    main(m).catch((error: unknown) => {
      process.stderr.write(`fanout receiver: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
      process.exit(1);
    });
  });
}

import "../../src/temporal.ts";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createFederation, type Federation, MemoryKvStore, signRequest } from "@fedify/fedify";
import { Activity, Endpoints, Person, type Recipient } from "@fedify/vocab";
import type { HttpMessageSignaturesSpec } from "@fedify/fedify";
import { generateRsa2048 } from "../../federation/keys.ts";

/**
 * A second, independent Fedify server on its own loopback port that serves
 * Person actors the way Mastodon does (/users/<name>, #main-key, shared
 * inbox) and signs what it sends with their RSA keys. It is the stand-in for
 * "some other fediverse server" in federation tests.
 */
export interface Peer {
  readonly origin: URL;
  readonly federation: Federation<void>;
  /** Activities this peer's inboxes received, newest last. */
  readonly received: Activity[];
  actorId(name: string): URL;
  keyId(name: string): URL;
  keys(name: string): Promise<CryptoKeyPair>;
  /** Delivers through Fedify's own sender (double-knock: RFC 9421 first, then draft-cavage). */
  send(from: string, to: Recipient, activity: Activity): Promise<void>;
  /** Signs a raw inbox POST exactly as given, for tests that tamper with it afterwards. */
  signedPost(inbox: URL, body: string, opts: { as: string; keyOf?: string; spec?: HttpMessageSignaturesSpec; date?: Date }): Promise<Request>;
  lookup(url: URL): Promise<unknown>;
  /** A GET signed by one of this peer's actors, as Mastodon's authorized fetch does. */
  signedGet(url: URL, opts: { as: string; spec?: HttpMessageSignaturesSpec }): Promise<Request>;
  /** Sets what an actor's document says about account migration (alsoKnownAs, movedTo). */
  setMigration(name: string, opts: { alsoKnownAs?: string[]; movedTo?: string }): void;
  /** Adds an actor (with a fresh key) after start. */
  addActor(name: string): Promise<void>;
  close(): Promise<void>;
}

export async function startPeer(names: readonly string[] = ["alice", "bob", "carol"]): Promise<Peer> {
  const server: Server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const origin = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const keyPairs = new Map<string, CryptoKeyPair>();
  for (const n of names) keyPairs.set(n, await generateRsa2048());
  const received: Activity[] = [];
  const migration = new Map<string, { alsoKnownAs?: string[]; movedTo?: string }>();

  const federation = createFederation<void>({ kv: new MemoryKvStore(), origin: origin.href, allowPrivateAddress: true });
  federation
    .setActorDispatcher("/users/{identifier}", async (ctx, identifier) => {
      if (!keyPairs.has(identifier)) return null;
      const keys = await ctx.getActorKeyPairs(identifier);
      return new Person({
        id: ctx.getActorUri(identifier),
        preferredUsername: identifier,
        name: identifier[0]!.toUpperCase() + identifier.slice(1),
        url: new URL(`/@${identifier}`, ctx.origin),
        inbox: ctx.getInboxUri(identifier),
        endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
        publicKey: keys[0]?.cryptographicKey,
        manuallyApprovesFollowers: false,
        aliases: (migration.get(identifier)?.alsoKnownAs ?? []).map((n) => ctx.getActorUri(n)),
        successor: migration.get(identifier)?.movedTo ? ctx.getActorUri(migration.get(identifier)!.movedTo!) : null,
      });
    })
    .setKeyPairsDispatcher((_ctx, identifier) => {
      const k = keyPairs.get(identifier);
      return k ? [k] : [];
    });
  federation.setInboxListeners("/users/{identifier}/inbox", "/inbox").on(Activity, (_ctx, activity) => {
    received.push(activity);
  });

  server.on("request", async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? Buffer.concat(chunks) : undefined;
    const request = new Request(new URL(req.url ?? "/", origin), {
      method: req.method,
      headers: req.headers as Record<string, string>,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
    });
    const response = await federation.fetch(request, { contextData: undefined });
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });

  const ctx = () => federation.createContext(origin, undefined);
  const keys = async (n: string) => {
    const k = keyPairs.get(n);
    if (!k) throw new Error(`peer has no actor ${n}`);
    return k;
  };
  return {
    origin,
    federation,
    received,
    actorId: (n) => new URL(`/users/${n}`, origin),
    keyId: (n) => new URL(`/users/${n}#main-key`, origin),
    keys,
    send: (from, to, activity) => ctx().sendActivity({ identifier: from }, to, activity, { immediate: true }),
    async signedPost(inbox, body, opts) {
      const signer = opts.keyOf ?? opts.as;
      const request = new Request(inbox, {
        method: "POST",
        headers: { "Content-Type": "application/activity+json", Accept: "application/activity+json" },
        body,
      });
      const currentTime = opts.date ? Temporal.Instant.fromEpochMilliseconds(opts.date.getTime()) : undefined;
      return signRequest(request, (await keys(signer)).privateKey, new URL(`/users/${signer}#main-key`, origin), {
        spec: opts.spec ?? "draft-cavage-http-signatures-12",
        currentTime,
      });
    },
    lookup: (url) => ctx().lookupObject(url.href),
    signedGet: async (url, opts) =>
      signRequest(new Request(url, { headers: { Accept: "application/activity+json" } }), (await keys(opts.as)).privateKey, new URL(`/users/${opts.as}#main-key`, origin), {
        spec: opts.spec ?? "draft-cavage-http-signatures-12",
      }),
    setMigration: (name, opts) => void migration.set(name, opts),
    addActor: async (name) => void keyPairs.set(name, await generateRsa2048()),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

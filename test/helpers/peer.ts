import { createServer, type Server } from "node:http";
import type { Federation, HttpMessageSignaturesSpec } from "@fedify/fedify";
import type { Activity, Recipient } from "@fedify/vocab";
import { listenOnLoopback, personActors } from "./person-actors.ts";

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
  /** Paths of the GET requests this peer answered, oldest first (to count fetches of an actor). */
  readonly gets: string[];
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
  const origin = await listenOnLoopback(server);
  const migration = new Map<string, { alsoKnownAs?: string[]; movedTo?: string }>();
  const actors = await personActors(origin, names, (ctx, identifier) => ({
    name: identifier[0]!.toUpperCase() + identifier.slice(1),
    aliases: (migration.get(identifier)?.alsoKnownAs ?? []).map((n) => ctx.getActorUri(n)),
    successor: migration.get(identifier)?.movedTo ? ctx.getActorUri(migration.get(identifier)!.movedTo!) : null,
  }));

  const gets: string[] = [];
  server.on("request", async (req, res) => {
    if (req.method === "GET") gets.push(new URL(req.url ?? "/", origin).pathname);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const response = await actors.answer(req, chunks.length ? Buffer.concat(chunks) : undefined);
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });

  return {
    origin,
    federation: actors.federation,
    received: actors.received,
    gets,
    actorId: (n) => new URL(`/users/${n}`, origin),
    keyId: (n) => new URL(`/users/${n}#main-key`, origin),
    keys: actors.keys,
    send: actors.send,
    signedPost: actors.signedPost,
    lookup: actors.lookup,
    signedGet: actors.signedGet,
    setMigration: (name, opts) => void migration.set(name, opts),
    addActor: actors.addActor,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

import "../../src/temporal.ts";
import type { IncomingMessage, Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type Context, createFederation, type Federation, type HttpMessageSignaturesSpec, MemoryKvStore, signRequest } from "@fedify/fedify";
import { Activity, Endpoints, Person, type Recipient } from "@fedify/vocab";
import { generateRsa2048 } from "../../federation/keys.ts";

// What the stand-in fediverse servers (peer.ts, counting-peer.ts) have in
// common, so that they differ only where a test needs them to.

/** Starts the server on a free loopback port; the origin every actor id is built on. */
export async function listenOnLoopback(server: Server): Promise<URL> {
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
}

type PersonValues = ConstructorParameters<typeof Person>[0];

export interface PersonActors {
  readonly federation: Federation<void>;
  /** Activities Fedify accepted at these actors' inboxes, newest last. */
  readonly received: Activity[];
  keys(name: string): Promise<CryptoKeyPair>;
  addActor(name: string): Promise<void>;
  /** Hands a request the HTTP server read to Fedify. */
  answer(req: IncomingMessage, body: Buffer<ArrayBuffer> | undefined): Promise<Response>;
  /** Delivers through Fedify's own sender (double-knock: RFC 9421 first, then draft-cavage). */
  send(from: string, to: Recipient, activity: Activity): Promise<void>;
  /** Signs a raw inbox POST exactly as given, for tests that tamper with it afterwards. */
  signedPost(inbox: URL, body: string, opts: { as: string; keyOf?: string; spec?: HttpMessageSignaturesSpec; date?: Date }): Promise<Request>;
  /** A GET signed by one of these actors, as Mastodon's authorized fetch does. */
  signedGet(url: URL, opts: { as: string; spec?: HttpMessageSignaturesSpec }): Promise<Request>;
  lookup(url: URL): Promise<unknown>;
}

/**
 * Person actors at /users/<name> the way Mastodon serves them (#main-key,
 * a shared inbox at /inbox), each with its own RSA key. `more` adds to or
 * overrides what an actor's document says.
 */
export async function personActors(
  origin: URL,
  names: readonly string[],
  more: (ctx: Context<void>, identifier: string) => Partial<PersonValues> = () => ({}),
): Promise<PersonActors> {
  const keyPairs = new Map<string, CryptoKeyPair>();
  for (const n of names) keyPairs.set(n, await generateRsa2048());
  const received: Activity[] = [];

  const federation = createFederation<void>({ kv: new MemoryKvStore(), origin: origin.href, allowPrivateAddress: true });
  federation
    .setActorDispatcher("/users/{identifier}", async (ctx, identifier) => {
      if (!keyPairs.has(identifier)) return null;
      const keys = await ctx.getActorKeyPairs(identifier);
      return new Person({
        id: ctx.getActorUri(identifier),
        preferredUsername: identifier,
        name: identifier,
        url: new URL(`/@${identifier}`, ctx.origin),
        inbox: ctx.getInboxUri(identifier),
        endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
        publicKey: keys[0]?.cryptographicKey,
        manuallyApprovesFollowers: false,
        ...more(ctx, identifier),
      });
    })
    .setKeyPairsDispatcher((_ctx, identifier) => {
      const k = keyPairs.get(identifier);
      return k ? [k] : [];
    });
  federation.setInboxListeners("/users/{identifier}/inbox", "/inbox").on(Activity, (_ctx, activity) => {
    received.push(activity);
  });

  const ctx = () => federation.createContext(origin, undefined);
  const keys = async (n: string) => {
    const k = keyPairs.get(n);
    if (!k) throw new Error(`peer has no actor ${n}`);
    return k;
  };
  return {
    federation,
    received,
    keys,
    addActor: async (name) => void keyPairs.set(name, await generateRsa2048()),
    answer: (req, body) => {
      const request = new Request(new URL(req.url ?? "/", origin), {
        method: req.method,
        headers: req.headers as Record<string, string>,
        body: req.method === "GET" || req.method === "HEAD" ? undefined : body,
      });
      return federation.fetch(request, { contextData: undefined });
    },
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
    signedGet: async (url, opts) =>
      signRequest(new Request(url, { headers: { Accept: "application/activity+json" } }), (await keys(opts.as)).privateKey, new URL(`/users/${opts.as}#main-key`, origin), {
        spec: opts.spec ?? "draft-cavage-http-signatures-12",
      }),
    lookup: (url) => ctx().lookupObject(url.href),
  };
}

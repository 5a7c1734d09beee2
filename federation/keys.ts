import { exportJwk, generateCryptoKeyPair, importJwk } from "@fedify/fedify";
import { type Kysely, sql } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { StoredKey } from "../src/unions/unions.ts";
import { openSecret, sealSecret } from "../src/secrets/stored-keys.ts";
import { HeldPromises } from "./held-promises.ts";

// RSA-2048 is what Mastodon verifies (and 6x faster to sign than 4096 here);
// Ed25519 backs FEP-8b32 object integrity proofs.
const ALGORITHMS = ["RSASSA-PKCS1-v1_5", "Ed25519"] as const;

export async function generateActorKeys(): Promise<StoredKey[]> {
  return Promise.all(ALGORITHMS.map(async (algorithm) => {
    const pair = algorithm === "Ed25519" ? await generateCryptoKeyPair(algorithm) : await generateRsa2048();
    return {
      algorithm,
      privateJwk: JSON.stringify(await exportJwk(pair.privateKey)),
      publicJwk: JSON.stringify(await exportJwk(pair.publicKey)),
    };
  }));
}

// Fedify's generateCryptoKeyPair makes RSA-4096, which signs at a sixth of the
// speed (609/s vs 3,760/s per core here) and buys nothing Mastodon checks.
export async function generateRsa2048(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(
    { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    true,
    ["sign", "verify"],
  ) as Promise<CryptoKeyPair>;
}

// Imported keys by the stored row's text: every Accept, DM, delivery and
// inbox POST to a union asks for its keys, and unsealing plus four JWK
// imports cost more than the row read. Keyed by the stored text itself, so a
// rotated or re-sealed key (from any process) is imported afresh.
// Per database, since unsealing depends on that database's secret key.
const importedBy = new WeakMap<Kysely<DB>, Map<string, Promise<CryptoKeyPair>>>();
const IMPORTED_MAX = 2000;

function importStored(db: Kysely<DB>, privateSealed: string, publicJwk: string): Promise<CryptoKeyPair> {
  let imported = importedBy.get(db);
  if (!imported) importedBy.set(db, imported = new Map());
  const key = `${privateSealed}\n${publicJwk}`;
  let pair = imported.get(key);
  if (pair) return pair;
  pair = (async () => ({
    privateKey: await importJwk(JSON.parse(openSecret(db, privateSealed)), "private"),
    publicKey: await importJwk(JSON.parse(publicJwk), "public"),
  }))();
  pair.catch(() => imported.delete(key));
  if (imported.size >= IMPORTED_MAX) imported.delete(imported.keys().next().value!);
  imported.set(key, pair);
  return pair;
}

/**
 * Imported key pairs by actor, held KEY_TTL_MS. Fedify asks for a union's
 * keys for every signed fetch and every delivery (three times a join), and a
 * claimed batch of 64 deliveries of one union asked 64 times at once: one
 * read now serves them all (the load in flight is shared) and every request
 * for the next seconds.
 *
 * Keys change rarely: nothing in Muster rotates them today. They are
 * written when a union or the instance actor is made (an actor with no keys
 * is never held, so a new one is seen at once), re-sealed at startup (the
 * same key under a new text: holding the old import is harmless), and
 * deleted only by hand. Whatever replaces or deletes them in this process
 * must call forgetActorKeys once its transaction commits, so no request
 * after that signs with the old key. A change from another process (the
 * CLI, a second worker) is seen within KEY_TTL_MS here, and by the queue's
 * deliveries within twice that (the queue holds the exported key as long
 * again, queue-payloads.ts); until then a remote server may refuse a
 * signature (the delivery is retried and signed with the new key), and a
 * deleted union's key may sign for at most that long. A process that
 * serves reads drops its held keys sooner, as soon as a GET sees the
 * documents version move (versionDroppingHeldKeys): the triggers of
 * migration 0018 bump it on every change to actor_keys, so the actor
 * document rebuilt for that version shows the stored public key.
 */
export const KEY_TTL_MS = 10_000;
const HELD_MAX = 1000;

const heldBy = new WeakMap<Kysely<DB>, HeldPromises<CryptoKeyPair[]>>();
const generations = new WeakMap<Kysely<DB>, number>();

/** The clock the held keys age by (tests move it). */
export const keyClock = { now: (): number => Date.now() };

/** Drops every held key of this database: call it after a transaction that replaces or deletes actor keys commits. */
export function forgetActorKeys(db: Kysely<DB>): void {
  heldBy.get(db)?.clear();
  generations.set(db, keysGeneration(db) + 1);
}

/**
 * Wraps the documents version read (src/db/document-versions.ts) so that a
 * move of it drops this database's held keys before anything is rendered
 * for the new version. Without it, a key replaced by the CLI, another
 * process or SQL was bumped into the version but the rebuilt actor
 * document still showed the held old key, and the read cache kept that
 * document until the next bump. Other bumps (a union's name, a bylaws
 * change) also drop the keys: they are rare and a reload is one read.
 */
export function versionDroppingHeldKeys(db: Kysely<DB>, read: () => Promise<string>): () => Promise<string> {
  let seen: string | undefined;
  return async () => {
    const version = await read();
    if (seen !== undefined && version !== seen) forgetActorKeys(db);
    seen = version;
    return version;
  };
}

/** Changes whenever forgetActorKeys is called, so caches built on these keys (the queue's private JWKs) drop theirs too. */
export function keysGeneration(db: Kysely<DB>): number {
  return generations.get(db) ?? 0;
}

function held(db: Kysely<DB>, name: string, load: () => Promise<CryptoKeyPair[]>): Promise<CryptoKeyPair[]> {
  let byName = heldBy.get(db);
  // An actor without keys is not held: a union made a moment later is seen at once.
  if (!byName) heldBy.set(db, byName = new HeldPromises({ ttlMs: KEY_TTL_MS, max: HELD_MAX, now: () => keyClock.now(), keep: (pairs) => pairs.length > 0 }));
  return byName.get(name, load);
}

/** Loads an owner's key pairs, RSA first (Fedify signs HTTP requests with the first RSA key). */
export function loadKeyPairs(db: Kysely<DB>, owner: string): Promise<CryptoKeyPair[]> {
  return held(db, `owner\n${owner}`, async () => {
    const rows = await db.selectFrom("actor_keys").selectAll().where("owner", "=", owner).execute();
    return importRows(db, rows);
  });
}

/**
 * The key pairs of the union with this slug (none when there is no such
 * union), in one statement: Fedify asks for a union's keys for every
 * activity it signs and every delivery it makes, and reading the union and
 * then its keys was two round trips each time (ten a join on PostgreSQL).
 */
export function loadUnionKeyPairs(db: Kysely<DB>, slug: string): Promise<CryptoKeyPair[]> {
  const lower = slug.toLowerCase();
  return held(db, `slug\n${lower}`, async () => {
    const rows = await db.selectFrom("unions as u")
      .innerJoin("actor_keys as k", (join) => join.on(sql<boolean>`k.owner = 'union:' || u.id`))
      .select(["k.algorithm", "k.private_jwk", "k.public_jwk"])
      .where("u.slug", "=", lower)
      .execute();
    return importRows(db, rows);
  });
}

function importRows(db: Kysely<DB>, rows: { algorithm: string; private_jwk: string; public_jwk: string }[]): Promise<CryptoKeyPair[]> {
  rows.sort((a, b) => ALGORITHMS.indexOf(a.algorithm as never) - ALGORITHMS.indexOf(b.algorithm as never));
  return Promise.all(rows.map((r) => importStored(db, r.private_jwk, r.public_jwk)));
}

/**
 * The instance actor's keys are made on first use; insert-or-ignore then
 * re-read, so two processes starting at once agree on one key set.
 */
export async function ensureInstanceKeys(db: Kysely<DB>): Promise<void> {
  const have = await db.selectFrom("actor_keys").select("algorithm").where("owner", "=", INSTANCE_KEY_OWNER).execute();
  if (have.length >= ALGORITHMS.length) return;
  const keys = await generateActorKeys();
  const now = Date.now();
  await db.insertInto("actor_keys")
    .values(keys.map((k) => ({ owner: INSTANCE_KEY_OWNER, algorithm: k.algorithm, private_jwk: sealSecret(db, k.privateJwk), public_jwk: k.publicJwk, created_at: now })))
    .onConflict((oc) => oc.columns(["owner", "algorithm"]).doNothing())
    .execute();
  // A partial set read before this insert may be held.
  forgetActorKeys(db);
}

export const INSTANCE_KEY_OWNER = "instance";

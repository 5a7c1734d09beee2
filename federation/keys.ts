import { exportJwk, generateCryptoKeyPair, importJwk } from "@fedify/fedify";
import { type Kysely, sql } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { StoredKey } from "../src/unions/unions.ts";
import { openSecret, sealSecret } from "../src/secrets/stored-keys.ts";

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

/** Loads an owner's key pairs, RSA first (Fedify signs HTTP requests with the first RSA key). */
export async function loadKeyPairs(db: Kysely<DB>, owner: string): Promise<CryptoKeyPair[]> {
  const rows = await db.selectFrom("actor_keys").selectAll().where("owner", "=", owner).execute();
  return importRows(db, rows);
}

/**
 * The key pairs of the union with this slug (none when there is no such
 * union), in one statement: Fedify asks for a union's keys for every
 * activity it signs and every delivery it makes, and reading the union and
 * then its keys was two round trips each time (ten a join on PostgreSQL).
 */
export async function loadUnionKeyPairs(db: Kysely<DB>, slug: string): Promise<CryptoKeyPair[]> {
  const rows = await db.selectFrom("unions as u")
    .innerJoin("actor_keys as k", (join) => join.on(sql<boolean>`k.owner = 'union:' || u.id`))
    .select(["k.algorithm", "k.private_jwk", "k.public_jwk"])
    .where("u.slug", "=", slug.toLowerCase())
    .execute();
  return importRows(db, rows);
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
}

export const INSTANCE_KEY_OWNER = "instance";

import type { Kysely } from "kysely";
import { ConfigError } from "../config.ts";
import type { DB } from "../db/schema.ts";
import { isSealed, type SecretBox, type SecretKeySource, WrongSecretKey } from "./secret-box.ts";

// Which secret box opens a database's keys. Bound once by createMuster; code
// that reads or writes a private key asks here with the database handle, so
// no key material is threaded through every dependency list. A database no
// box is bound to (a unit test's bare database) keeps new keys as they are;
// the next server start seals them.
const boxes = new WeakMap<object, SecretBox>();

export function bindSecrets(db: Kysely<DB>, box: SecretBox): void {
  boxes.set(db, box);
}

export function sealSecret(db: Kysely<DB>, plaintext: string): string {
  return boxes.get(db)?.seal(plaintext) ?? plaintext;
}

export function openSecret(db: Kysely<DB>, stored: string): string {
  if (!isSealed(stored)) return stored;
  const box = boxes.get(db);
  if (!box) throw new WrongSecretKey();
  return box.open(stored);
}

const CHECK_KEY = "secret_key_check";
const CHECK_TEXT = "muster secret key check";

/**
 * At start-up: refuses a key that is not the one the database's keys were
 * sealed with (one line, before anything is served), then seals any key still
 * stored in plaintext (rows from before encryption, or written by a process
 * without a box). Idempotent, and safe with two processes starting at once:
 * each row is rewritten only if it still holds the plaintext read.
 */
export async function secureStoredKeys(db: Kysely<DB>, source: SecretKeySource): Promise<{ sealed: number }> {
  const { box } = source;
  const wrong = () => new ConfigError(`the secret key from ${source.origin} does not open the keys in this database; start with the key they were sealed with (MUSTER_SECRET_KEY or DATA_DIR/secret.key)`);
  const verify = (value: string) => {
    try {
      if (box.open(value) !== CHECK_TEXT) throw wrong();
    } catch (e) {
      if (e instanceof WrongSecretKey) throw wrong();
      throw e;
    }
  };
  const check = await db.selectFrom("instance_settings").select("value").where("key", "=", CHECK_KEY).executeTakeFirst();
  if (check) {
    verify(check.value);
  } else {
    // No check value yet, but sealed rows (the check row lost): they decide.
    const sealedRow = await db.selectFrom("treasury_keys").select("secret_key as v").where("secret_key", "like", "enc:v1:%")
      .union(db.selectFrom("actor_keys").select("private_jwk as v").where("private_jwk", "like", "enc:v1:%")).limit(1).executeTakeFirst();
    if (sealedRow) {
      try {
        box.open(sealedRow.v);
      } catch {
        throw wrong();
      }
    }
    await db.insertInto("instance_settings").values({ key: CHECK_KEY, value: box.seal(CHECK_TEXT) })
      .onConflict((oc) => oc.column("key").doNothing()).execute();
    verify((await db.selectFrom("instance_settings").select("value").where("key", "=", CHECK_KEY).executeTakeFirstOrThrow()).value);
  }
  bindSecrets(db, box);
  let sealed = 0;
  const actorRows = await db.selectFrom("actor_keys").select(["owner", "algorithm", "private_jwk"]).where("private_jwk", "not like", "enc:v1:%").execute();
  for (const r of actorRows) {
    const res = await db.updateTable("actor_keys").set({ private_jwk: box.seal(r.private_jwk) })
      .where("owner", "=", r.owner).where("algorithm", "=", r.algorithm).where("private_jwk", "=", r.private_jwk).executeTakeFirst();
    sealed += Number(res.numUpdatedRows);
  }
  const treasuryRows = await db.selectFrom("treasury_keys").select(["union_id", "secret_key"]).where("secret_key", "not like", "enc:v1:%").execute();
  for (const r of treasuryRows) {
    const res = await db.updateTable("treasury_keys").set({ secret_key: box.seal(r.secret_key) })
      .where("union_id", "=", r.union_id).where("secret_key", "=", r.secret_key).executeTakeFirst();
    sealed += Number(res.numUpdatedRows);
  }
  return { sealed };
}

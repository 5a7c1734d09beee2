import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";

// The first-run setup is guarded the way Grafana and Jupyter do it: a random
// token printed on the console, so only whoever can read the server's output
// can create the first union. Only its hash is stored.

const KEY = "setup_token_sha256";

function sha256(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}

/** Issues a fresh token (replacing any earlier one) and returns it once. */
export async function issueSetupToken(db: Kysely<DB>): Promise<string> {
  const token = randomBytes(24).toString("base64url");
  const value = sha256(token).toString("hex");
  await db.insertInto("instance_settings").values({ key: KEY, value })
    .onConflict((oc) => oc.column("key").doUpdateSet({ value }))
    .execute();
  return token;
}

export async function setupTokenPending(db: Kysely<DB>): Promise<boolean> {
  return (await storedHash(db)) !== undefined;
}

async function storedHash(db: Kysely<DB>): Promise<string | undefined> {
  return (await db.selectFrom("instance_settings").select("value").where("key", "=", KEY).executeTakeFirst())?.value;
}

function matches(storedHex: string, token: string): boolean {
  const expected = Buffer.from(storedHex, "hex");
  const given = sha256(token);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/** Whether the token is the current one, without using it up. */
export async function checkSetupToken(db: Kysely<DB>, token: string): Promise<boolean> {
  const stored = await storedHash(db);
  return stored !== undefined && matches(stored, token);
}

/**
 * Consumes the token if it matches. The delete is conditional on the stored
 * hash, so two concurrent submissions cannot both succeed.
 */
export async function consumeSetupToken(db: Kysely<DB>, token: string): Promise<boolean> {
  const stored = await storedHash(db);
  if (stored === undefined || !matches(stored, token)) return false;
  const r = await db.deleteFrom("instance_settings").where("key", "=", KEY).where("value", "=", stored).executeTakeFirst();
  return Number(r.numDeletedRows) === 1;
}

export async function revokeSetupToken(db: Kysely<DB>): Promise<void> {
  await db.deleteFrom("instance_settings").where("key", "=", KEY).execute();
}

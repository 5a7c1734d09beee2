import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16): Fedify caches a public key per
// member who signed something this week, in fedify_kv, as its JSON key
// (`["_fedify","publicKey","https://host/users/name#main-key"]`, repeated in
// the primary key's index) and a base64 body: about 560 bytes a member on
// SQLite, 650 on PostgreSQL. fedify_public_keys holds them by key id with the
// key's bytes (an RSA-2048 key's modulus alone): about 375 on SQLite.
// SQLite's table is WITHOUT ROWID, so the key id is stored once; it is stored
// without "https://" and "#main-key" (a letter says which were there).
//
// Entries already cached in the compact text form (a value starting with
// "~", federation/kv-public-keys.ts) move across; anything else under the
// prefix (a cached null, a Multikey, JSON written before the text form)
// stays in fedify_kv, where the store still reads it. The conversion is
// spelled out here rather than imported, so that this migration keeps doing
// what it did when the codec changes.
const RSA2048_B64_HEAD = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA";
const RSA2048_B64_TAIL = "IDAQAB";
const RSA2048_DER_HEAD = Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex");
const RSA2048_DER_TAIL = Buffer.from("0203010001", "hex");
const PREFIX = '["_fedify","publicKey",';
/** The character after "," : keys in [PREFIX, UPPER) start with PREFIX. */
const UPPER = '["_fedify","publicKey"-';
const BATCH = 500;

/** federation/kv-public-keys.ts storedKeyId, as of this migration. */
function storedKeyId(keyId: string): string {
  if (!keyId.startsWith("https://")) return `c${keyId}`;
  return keyId.endsWith("#main-key") ? `a${keyId.slice(8, -9)}` : `b${keyId.slice(8)}`;
}

function keyIdOfStored(stored: string): string {
  if (stored.startsWith("a")) return `https://${stored.slice(1)}#main-key`;
  if (stored.startsWith("b")) return `https://${stored.slice(1)}`;
  return stored.slice(1);
}

function documentOf(keyId: string): string {
  const hash = keyId.indexOf("#");
  return hash < 0 ? keyId : keyId.slice(0, hash);
}

/** The base64 body of a "~" value: "!" and the middle of an RSA-2048 key, or the whole body. */
function bodyOf(stored: string): string {
  return stored.startsWith("!") ? `${RSA2048_B64_HEAD}${stored.slice(1)}${RSA2048_B64_TAIL}` : stored;
}

function keyIdOf(encoded: string): string | undefined {
  try {
    const key = JSON.parse(encoded) as unknown[];
    return key.length === 3 && typeof key[2] === "string" ? key[2] : undefined;
  } catch {
    return undefined;
  }
}

export async function up(db: Kysely<any>): Promise<void> {
  const pg = isPostgres(db);
  await sql`create table fedify_public_keys (
    key_id text primary key,
    owner text,
    key ${sql.raw(pg ? "bytea" : "blob")} not null,
    expires_at bigint not null
  )${sql.raw(pg ? "" : " without rowid")}`.execute(db);
  const bytewise = pg ? sql`key collate "C"` : sql`key`;
  let after = PREFIX;
  for (;;) {
    const rows = (await sql<{ key: string; value: string; expires_at: number | string | null }>`
      select key, value, expires_at from fedify_kv
      where ${bytewise} > ${after} and ${bytewise} < ${UPPER}
      order by ${bytewise} limit ${BATCH}`.execute(db)).rows;
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.key;
    const moved: { key_id: string; owner: string | null; key: Buffer; expires_at: number }[] = [];
    for (const row of rows) {
      const keyId = keyIdOf(row.key);
      if (keyId === undefined || !row.value.startsWith("~")) continue;
      const newline = row.value.indexOf("\n");
      if (newline < 0) continue;
      const owner = row.value.slice(1, newline);
      const der = Buffer.from(bodyOf(row.value.slice(newline + 1)), "base64");
      const rsa2048 = der.length === RSA2048_DER_HEAD.length + 256 + RSA2048_DER_TAIL.length &&
        der.subarray(0, RSA2048_DER_HEAD.length).equals(RSA2048_DER_HEAD) && der.subarray(-RSA2048_DER_TAIL.length).equals(RSA2048_DER_TAIL);
      const key = rsa2048 ? der.subarray(RSA2048_DER_HEAD.length, RSA2048_DER_HEAD.length + 256) : der;
      // A whole DER of a modulus' length would read back as one: left where it is.
      if (!rsa2048 && key.length === 256) continue;
      // Entries written before the week's expiry had none: they get it now.
      const expires = row.expires_at === null ? Date.now() + 7 * 24 * 3600_000 : Number(row.expires_at);
      moved.push({ key_id: storedKeyId(keyId), owner: owner === "" || owner === documentOf(keyId) ? null : owner, key, expires_at: expires });
    }
    if (moved.length === 0) continue;
    await db.insertInto("fedify_public_keys").values(moved).onConflict((oc) => oc.column("key_id").doNothing()).execute();
    await db.deleteFrom("fedify_kv").where("key", "in", moved.map((m) => `${PREFIX}${JSON.stringify(keyIdOfStored(m.key_id))}]`)).execute();
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  let after = "";
  for (;;) {
    const rows = await db.selectFrom("fedify_public_keys").selectAll().where("key_id", ">", after).orderBy("key_id").limit(BATCH).execute() as { key_id: string; owner: string | null; key: Uint8Array; expires_at: number | string }[];
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.key_id;
    const back = rows.map((r) => {
      const key = Buffer.from(r.key);
      const body = key.length === 256 ? `!${Buffer.concat([RSA2048_DER_HEAD, key, RSA2048_DER_TAIL]).toString("base64").slice(RSA2048_B64_HEAD.length, -RSA2048_B64_TAIL.length)}` : key.toString("base64");
      return { key: `${PREFIX}${JSON.stringify(keyIdOfStored(r.key_id))}]`, value: `~${r.owner ?? ""}\n${body}`, expires_at: Number(r.expires_at) };
    });
    await db.insertInto("fedify_kv").values(back).onConflict((oc) => oc.column("key").doNothing()).execute();
  }
  await db.schema.dropTable("fedify_public_keys").execute();
}

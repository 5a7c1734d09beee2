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
// Entries cached in the compact text form (a value starting with "~") and
// RSA keys cached as the key's node of the expanded actor document (what
// Fedify's verifier and the follow's fast path write: nearly all of them)
// move across, each only if it reads back as exactly the same JSON; anything
// else under the prefix (a cached null, a Multikey, another shape) stays in
// fedify_kv, where the store still reads it. The conversion is
// spelled out here rather than imported, so that this migration keeps doing
// what it did when the codec changes.
const RSA2048_B64_HEAD = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA";
const RSA2048_B64_TAIL = "IDAQAB";
const RSA2048_DER_HEAD = Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex");
const RSA2048_DER_TAIL = Buffer.from("0203010001", "hex");
const HEAD = "-----BEGIN PUBLIC KEY-----\n";
const TAIL = "\n-----END PUBLIC KEY-----\n";
const SEC = "https://w3id.org/security#";
const EXPANDED = 1;
const UNTYPED = 2;
const BARE_PEM = 4;
const PREFIX = '["_fedify","publicKey",';
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

/** federation/kv-public-keys.ts keyJson, as of this migration. */
function jsonOf(keyId: string, owner: string | null, key: Uint8Array, form: number): string {
  const der = key.length === 256 ? Buffer.concat([RSA2048_DER_HEAD, key, RSA2048_DER_TAIL]) : Buffer.from(key);
  const pem = `${HEAD}${(der.toString("base64").match(/.{1,64}/g) ?? []).join("\n")}${TAIL}`;
  const publicKeyPem = form & BARE_PEM ? pem.slice(0, -1) : pem;
  const by = owner ?? documentOf(keyId);
  if (!(form & EXPANDED)) return JSON.stringify({ owner: by, publicKeyPem, type: "CryptographicKey", id: keyId, "@context": "https://w3id.org/security/v1" });
  return JSON.stringify({ "@id": keyId, [`${SEC}owner`]: [{ "@id": by }], [`${SEC}publicKeyPem`]: [{ "@value": publicKeyPem }], ...(form & UNTYPED ? {} : { "@type": [`${SEC}Key`] }) });
}

function keyBytes(der: Buffer): Buffer {
  const rsa2048 = der.length === RSA2048_DER_HEAD.length + 256 + RSA2048_DER_TAIL.length &&
    der.subarray(0, RSA2048_DER_HEAD.length).equals(RSA2048_DER_HEAD) && der.subarray(-RSA2048_DER_TAIL.length).equals(RSA2048_DER_TAIL);
  return rsa2048 ? der.subarray(RSA2048_DER_HEAD.length, RSA2048_DER_HEAD.length + 256) : der;
}

/** An expanded key node (see above) as its row, or undefined when it would not read back the same. */
function fromExpanded(keyId: string, value: string): { owner: string | null; key: Buffer; form: number } | undefined {
  if (!value.startsWith('{"@id":')) return undefined;
  let node: Record<string, unknown>;
  try {
    node = JSON.parse(value) as typeof node;
  } catch {
    return undefined;
  }
  const first = (v: unknown, k: string): unknown => (Array.isArray(v) && v.length === 1 && typeof v[0] === "object" && v[0] !== null ? (v[0] as Record<string, unknown>)[k] : undefined);
  const owner = first(node[`${SEC}owner`], "@id");
  const pem = first(node[`${SEC}publicKeyPem`], "@value");
  if (typeof owner !== "string" || typeof pem !== "string" || !pem.startsWith(HEAD)) return undefined;
  const form = EXPANDED | ("@type" in node ? 0 : UNTYPED) | (pem.endsWith(TAIL) ? 0 : BARE_PEM);
  const end = pem.lastIndexOf(TAIL.trimEnd());
  if (end < 0) return undefined;
  const key = keyBytes(Buffer.from(pem.slice(HEAD.length, end).replaceAll("\n", ""), "base64"));
  const row = { owner: owner === documentOf(keyId) ? null : owner, key, form };
  return jsonOf(keyId, row.owner, key, form) === value ? row : undefined;
}

export async function up(db: Kysely<any>): Promise<void> {
  const pg = isPostgres(db);
  await sql`create table fedify_public_keys (
    key_id text primary key,
    owner text,
    key ${sql.raw(pg ? "bytea" : "blob")} not null,
    form smallint not null,
    expires_at bigint not null
  )${sql.raw(pg ? "" : " without rowid")}`.execute(db);
  // Walked in the primary key's own order (a byte-order range would not use
  // PostgreSQL's index under a non-C collation: a scan of the table per batch);
  // nearly every row is a cached key anyway.
  let after = "";
  for (;;) {
    const rows = await db.selectFrom("fedify_kv").select(["key", "value", "expires_at"])
      .where("key", ">", after).orderBy("key").limit(BATCH).execute() as { key: string; value: string; expires_at: number | string | null }[];
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.key;
    const moved: { key_id: string; owner: string | null; key: Buffer; form: number; expires_at: number }[] = [];
    for (const row of rows) {
      const keyId = row.key.startsWith(PREFIX) ? keyIdOf(row.key) : undefined;
      if (keyId === undefined) continue;
      // Entries written before the week's expiry had none: they get it now.
      const expires = row.expires_at === null ? Date.now() + 7 * 24 * 3600_000 : Number(row.expires_at);
      const expanded = fromExpanded(keyId, row.value);
      if (expanded) {
        moved.push({ key_id: storedKeyId(keyId), ...expanded, expires_at: expires });
        continue;
      }
      if (!row.value.startsWith("~")) continue;
      const newline = row.value.indexOf("\n");
      if (newline < 0) continue;
      const owner = row.value.slice(1, newline);
      const der = Buffer.from(bodyOf(row.value.slice(newline + 1)), "base64");
      const key = keyBytes(der);
      // A whole DER of a modulus' length would read back as one: left where it is.
      if (key === der && key.length === 256) continue;
      moved.push({ key_id: storedKeyId(keyId), owner: owner === "" || owner === documentOf(keyId) ? null : owner, key, form: 0, expires_at: expires });
    }
    if (moved.length === 0) continue;
    await db.insertInto("fedify_public_keys").values(moved).onConflict((oc) => oc.column("key_id").doNothing()).execute();
    await db.deleteFrom("fedify_kv").where("key", "in", moved.map((m) => `${PREFIX}${JSON.stringify(keyIdOfStored(m.key_id))}]`)).execute();
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  let after = "";
  for (;;) {
    const rows = await db.selectFrom("fedify_public_keys").selectAll().where("key_id", ">", after).orderBy("key_id").limit(BATCH).execute() as { key_id: string; owner: string | null; key: Uint8Array; form: number; expires_at: number | string }[];
    if (rows.length === 0) break;
    after = rows[rows.length - 1]!.key_id;
    const back = rows.map((r) => {
      const key = Buffer.from(r.key);
      const keyId = keyIdOfStored(r.key_id);
      if (Number(r.form) !== 0) return { key: `${PREFIX}${JSON.stringify(keyId)}]`, value: jsonOf(keyId, r.owner, key, Number(r.form)), expires_at: Number(r.expires_at) };
      const body = key.length === 256 ? `!${Buffer.concat([RSA2048_DER_HEAD, key, RSA2048_DER_TAIL]).toString("base64").slice(RSA2048_B64_HEAD.length, -RSA2048_B64_TAIL.length)}` : key.toString("base64");
      return { key: `${PREFIX}${JSON.stringify(keyIdOfStored(r.key_id))}]`, value: `~${r.owner ?? ""}\n${body}`, expires_at: Number(r.expires_at) };
    });
    await db.insertInto("fedify_kv").values(back).onConflict((oc) => oc.column("key").doNothing()).execute();
  }
  await db.schema.dropTable("fedify_public_keys").execute();
}

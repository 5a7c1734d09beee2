import type { KvKey } from "@fedify/fedify";

/**
 * Fedify caches every remote actor's public key in the KV store, one entry
 * per member who signed something in the last week (kysely-kv-store.ts).
 * Since migration 0064 such an entry lives in fedify_public_keys as a
 * CompactKey (below): the key's bytes, its owner only when it is not the key
 * id's document, and which of the JSON forms Fedify wrote (compactKey, keyJson).
 *
 * Before 0064 it was stored in fedify_kv as text: "~", the owner (empty when
 * it is the key id's document), a newline and the key's base64 body, an
 * RSA-2048 body as "!" and what lies between its fixed 44-character head and
 * 6-character exponent (storedText). Such rows are still read (jsonText):
 * 0064 moves them, and an older process may write one until it is replaced.
 * "~" never starts JSON text and base64 never holds "!", so none of these can
 * be confused.
 */
const MARK = "~";
const CONTEXT = "https://w3id.org/security/v1";
const HEAD = "-----BEGIN PUBLIC KEY-----\n";
const TAIL = "\n-----END PUBLIC KEY-----\n";
/** The base64 SubjectPublicKeyInfo of an RSA-2048 key up to its modulus, and its exponent 65537. */
const RSA2048_HEAD = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA";
const RSA2048_TAIL = "IDAQAB";
const RSA2048_LENGTH = 392;
const RSA2048_MARK = "!";

/** The key id of a Fedify public-key cache entry, or undefined for any other key. */
export function keyIdOf(key: KvKey): string | undefined {
  return key.length === 3 && key[0] === "_fedify" && key[1] === "publicKey" && typeof key[2] === "string" ? key[2] : undefined;
}

/** The text the code before 0064 stored in fedify_kv for `json` under `key` (tests and old rows). */
export function storedText(key: KvKey, json: string): string {
  const keyId = keyIdOf(key);
  if (keyId === undefined || !json.startsWith('{"owner":')) return json;
  let value: { owner?: unknown; publicKeyPem?: unknown };
  try {
    value = JSON.parse(json) as typeof value;
  } catch {
    return json;
  }
  const { owner, publicKeyPem } = value;
  if (typeof owner !== "string" || owner.includes("\n") || typeof publicKeyPem !== "string") return json;
  if (!publicKeyPem.startsWith(HEAD) || !publicKeyPem.endsWith(TAIL)) return json;
  const body = publicKeyPem.slice(HEAD.length, -TAIL.length).replaceAll("\n", "");
  const rsa2048 = body.length === RSA2048_LENGTH && body.startsWith(RSA2048_HEAD) && body.endsWith(RSA2048_TAIL);
  const text = `${MARK}${owner === documentOf(keyId) ? "" : owner}\n${rsa2048 ? `${RSA2048_MARK}${body.slice(RSA2048_HEAD.length, -RSA2048_TAIL.length)}` : body}`;
  return expand(keyId, text) === json ? text : json;
}

/** The JSON text of a stored value (see storedText). */
export function jsonText(key: KvKey, stored: string): string {
  if (!stored.startsWith(MARK)) return stored;
  const keyId = keyIdOf(key);
  if (keyId === undefined) throw new Error(`a compact value under a key that is not a public key: ${JSON.stringify(key)}`);
  return expand(keyId, stored);
}

function expand(keyId: string, text: string): string {
  const newline = text.indexOf("\n");
  const owner = text.slice(MARK.length, newline) || documentOf(keyId);
  const stored = text.slice(newline + 1);
  const body = stored.startsWith(RSA2048_MARK) ? `${RSA2048_HEAD}${stored.slice(RSA2048_MARK.length)}${RSA2048_TAIL}` : stored;
  const publicKeyPem = `${HEAD}${(body.match(/.{1,64}/g) ?? []).join("\n")}${TAIL}`;
  return JSON.stringify({ owner, publicKeyPem, type: "CryptographicKey", id: keyId, "@context": CONTEXT });
}

function documentOf(keyId: string): string {
  const hash = keyId.indexOf("#");
  return hash < 0 ? keyId : keyId.slice(0, hash);
}

/**
 * A cached key as the fedify_public_keys table holds it (migration 0064):
 * the key's DER bytes instead of base64 (a third less), and for RSA-2048
 * with exponent 65537 only the 256-byte modulus; the owner only when it is
 * not the key id's document. About 560 bytes per cached key in fedify_kv
 * (its JSON key, repeated in the primary key's index, and the base64 body)
 * become about 375 on SQLite (issue 16: the cache holds a key per member).
 */
export interface CompactKey {
  readonly owner: string | null;
  readonly key: Uint8Array;
  /** Which JSON it reads back as: FORM_* bits. */
  readonly form: number;
}

/**
 * The key's node of the expanded actor document, as Fedify's verifier caches
 * a key it found in a fetched actor (CryptographicKey#toJsonLd gives back the
 * JSON-LD it was parsed from), and as the follow's fast path writes it
 * (plain-actor.ts): `{"@id", "…security#owner": [{"@id"}],
 * "…security#publicKeyPem": [{"@value"}], "@type": ["…security#Key"]}`.
 * Without the bit: the compact form toJsonLd writes for a key built in code.
 */
export const FORM_EXPANDED = 1;
/** Expanded, without "@type" (the document did not name the key's type). */
export const FORM_UNTYPED = 2;
/** The PEM as sent ends without a newline. */
export const FORM_BARE_PEM = 4;
const SEC = "https://w3id.org/security#";

/** The DER SubjectPublicKeyInfo of an RSA-2048 key up to its modulus, and after it the exponent 65537. */
const RSA2048_DER_HEAD = Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex");
const RSA2048_DER_TAIL = Buffer.from("0203010001", "hex");
const MODULUS_BYTES = 256;

/**
 * `json` (a value Fedify writes under ["_fedify", "publicKey", keyId]) as a
 * CompactKey, or undefined when it cannot be read back as exactly the same
 * JSON (another shape, a Multikey, a cached null): such values stay in
 * fedify_kv as they are.
 */
export function compactKey(keyId: string, json: string): CompactKey | undefined {
  let form = 0;
  if (json.startsWith('{"@id":')) form = FORM_EXPANDED;
  else if (!json.startsWith('{"owner":')) return undefined;
  let value: Record<string, unknown>;
  try {
    value = JSON.parse(json) as typeof value;
  } catch {
    return undefined;
  }
  const first = (v: unknown, k: string): unknown => (Array.isArray(v) && v.length === 1 && typeof v[0] === "object" && v[0] !== null ? (v[0] as Record<string, unknown>)[k] : undefined);
  const owner = form ? first(value[`${SEC}owner`], "@id") : value.owner;
  const publicKeyPem = form ? first(value[`${SEC}publicKeyPem`], "@value") : value.publicKeyPem;
  if (form && !("@type" in value)) form |= FORM_UNTYPED;
  if (typeof owner !== "string" || typeof publicKeyPem !== "string" || !publicKeyPem.startsWith(HEAD)) return undefined;
  if (!publicKeyPem.endsWith(TAIL)) {
    if (!publicKeyPem.endsWith(TAIL.slice(0, -1))) return undefined;
    form |= FORM_BARE_PEM;
  }
  const der = Buffer.from(publicKeyPem.slice(HEAD.length, publicKeyPem.lastIndexOf(TAIL.trimEnd())).replaceAll("\n", ""), "base64");
  const rsa2048 = der.length === RSA2048_DER_HEAD.length + MODULUS_BYTES + RSA2048_DER_TAIL.length &&
    der.subarray(0, RSA2048_DER_HEAD.length).equals(RSA2048_DER_HEAD) && der.subarray(-RSA2048_DER_TAIL.length).equals(RSA2048_DER_TAIL);
  // A whole DER of exactly the modulus' length would read back as a modulus: the check below sends it to fedify_kv.
  const compact: CompactKey = {
    owner: owner === documentOf(keyId) ? null : owner,
    key: rsa2048 ? der.subarray(RSA2048_DER_HEAD.length, RSA2048_DER_HEAD.length + MODULUS_BYTES) : der,
    form,
  };
  return keyJson(keyId, compact) === json ? compact : undefined;
}

/** The JSON Fedify wrote for a CompactKey under `keyId` (see compactKey). */
export function keyJson(keyId: string, { owner, key, form }: CompactKey): string {
  const der = key.length === MODULUS_BYTES ? Buffer.concat([RSA2048_DER_HEAD, key, RSA2048_DER_TAIL]) : Buffer.from(key);
  const pem = `${HEAD}${(der.toString("base64").match(/.{1,64}/g) ?? []).join("\n")}${TAIL}`;
  const publicKeyPem = form & FORM_BARE_PEM ? pem.slice(0, -1) : pem;
  const by = owner ?? documentOf(keyId);
  if (!(form & FORM_EXPANDED)) return JSON.stringify({ owner: by, publicKeyPem, type: "CryptographicKey", id: keyId, "@context": CONTEXT });
  return JSON.stringify({
    "@id": keyId,
    [`${SEC}owner`]: [{ "@id": by }],
    [`${SEC}publicKeyPem`]: [{ "@value": publicKeyPem }],
    ...(form & FORM_UNTYPED ? {} : { "@type": [`${SEC}Key`] }),
  });
}

/**
 * The key id as fedify_public_keys.key_id holds it. Nearly every key id is
 * "https://…#main-key" (Mastodon, Misskey, Pleroma, Lemmy, Fedify): the
 * scheme and that fragment are 17 bytes a member, twice on PostgreSQL (heap
 * and primary key). Stored as "a" and what lies between them, "b" and what
 * follows "https://" for another https id, "c" and the whole id otherwise:
 * the letter says which, so each id has one spelling and reads back exactly.
 */
export function storedKeyId(keyId: string): string {
  if (!keyId.startsWith("https://")) return `c${keyId}`;
  return keyId.endsWith("#main-key") ? `a${keyId.slice(8, -9)}` : `b${keyId.slice(8)}`;
}

/** The key id that storedKeyId stored as `stored`. */
export function keyIdOfStored(stored: string): string {
  if (stored.startsWith("a")) return `https://${stored.slice(1)}#main-key`;
  if (stored.startsWith("b")) return `https://${stored.slice(1)}`;
  return stored.slice(1);
}

import type { KvKey } from "@fedify/fedify";

/**
 * Fedify caches every remote actor's public key in the KV store, one entry
 * per member who signed something in the last week (kysely-kv-store.ts):
 * about 720 bytes of JSON-LD, most of it what the entry's key already says
 * (the key id, its owner, the context and type) and the PEM armour. At a
 * million members that was 700 MB (issue 16). Such an entry is stored as
 * "~", the owner (empty when it is the key id's document), a newline and the
 * key's base64 body; it is read back as exactly the JSON Fedify wrote. Only a
 * value that reads back identically is stored this way; anything else (a
 * Multikey, another context, a cached null) is stored as JSON. "~" never
 * starts JSON text, so the two cannot be confused, and rows written before
 * read as they were.
 *
 * Nearly every key is RSA-2048 with exponent 65537, whose base64 body always
 * opens with the same 44 characters (the SubjectPublicKeyInfo header up to
 * the modulus) and ends with the same 6 (the exponent): such a body is stored
 * as "!" and what lies between, 50 bytes less per cached key (issue 16).
 * Base64 never holds "!", so a body stored whole (written before, or another
 * key size) cannot be mistaken for it.
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
function keyIdOf(key: KvKey): string | undefined {
  return key.length === 3 && key[0] === "_fedify" && key[1] === "publicKey" && typeof key[2] === "string" ? key[2] : undefined;
}

/** The text to store for `value` (already `JSON.stringify`d as `json`) under `key`. */
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

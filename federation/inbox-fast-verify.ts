import { createHash, KeyObject, verify } from "node:crypto";
import type { CryptographicKey } from "@fedify/vocab";
import type { SignedRequest } from "./inbox-request.ts";

/**
 * A synchronous HTTP-signature check for the inbox's fast path, with
 * node:crypto instead of WebCrypto jobs (Fedify's verifier costs a quarter of
 * a fast-path POST: async digest and RSA jobs, a request clone, the Temporal
 * polyfill for the date window).
 *
 * It only ever says yes for the common, plain forms (Mastodon's draft-cavage
 * signature over (request-target), host, date and digest with a single SHA-256
 * Digest; Fedify's RFC 9421 signature: one label, alg rsa-v1_5-sha256, keyid
 * and created, covering @method, @target-uri and content-digest with a single
 * sha-256 Content-Digest) and builds the signed string exactly as Fedify's
 * verifyRequestDetailed does (http-*.js in @fedify/fedify 2.3.6:
 * verifyRequestDraft and createRfc9421SignatureBase). Every other form, and
 * every failure, returns undefined: the caller then asks Fedify's verifier,
 * which decides. So its yes must imply Fedify's yes (test/inbox-fast-verify.test.ts
 * holds the two together on real signed requests).
 */

export interface SignatureClaim {
  readonly keyId: URL;
  /** Checks the signature with the key Fedify cached under keyId; true only when it verifies. */
  readonly check: (key: CryptographicKey) => boolean;
  /** The same check with an RSA public key node:crypto already holds (the follow's fast path reads keys as plain JSON). */
  readonly checkRsa: (key: KeyObject) => boolean;
}

const B64 = /^[A-Za-z0-9+/]+={0,2}$/;
const SHA256_B64 = /^[A-Za-z0-9+/]{43}=$/;
const HEADER_NAME = /^[a-z0-9-]+$/;
const CAVAGE_PAIR = /^\s*([A-Za-z]+)=(?:"([^"]*)"|(\d+))\s*$/;
const DERIVED: Record<string, (request: SignedRequest, url: URL) => string> = {
  "@method": (request) => request.method.toUpperCase(),
  "@target-uri": (_, url) => url.href,
  "@authority": (_, url) => url.host,
  "@scheme": (_, url) => url.protocol.slice(0, -1),
  "@request-target": (request, url) => `${request.method.toLowerCase()} ${url.pathname}${url.search}`,
  "@path": (_, url) => url.pathname,
  "@query": (_, { search }) => (search.startsWith("?") ? search.slice(1) : search),
};
// One label; components are plain quoted names; params alg, keyid, created, each once, in any order.
const RFC9421_INPUT = /^([a-z][a-z0-9_.*-]{0,31})=\(("[a-z0-9@-]+"(?: "[a-z0-9@-]+")*)\)((?:;(?:alg="rsa-v1_5-sha256"|keyid="[!#-\[\]-~]+"|created=[1-9][0-9]{0,14})){3})$/;
const RFC9421_SIG = /^([a-z][a-z0-9_.*-]{0,31})=:([A-Za-z0-9+/]+={0,2}):$/;

const keyObjects = new WeakMap<CryptoKey, KeyObject | null>();

/** The key as node:crypto's KeyObject when it is an RSA PKCS#1 v1.5 SHA-256 key (what both forms verify with), else null. */
function rsaSha256(key: CryptographicKey): KeyObject | null {
  const publicKey = key.publicKey;
  if (!publicKey) return null;
  let k = keyObjects.get(publicKey);
  if (k === undefined) {
    const alg = publicKey.algorithm as RsaHashedKeyAlgorithm;
    k = alg.name === "RSASSA-PKCS1-v1_5" && alg.hash?.name === "SHA-256" && publicKey.usages.includes("verify") ? KeyObject.from(publicKey) : null;
    keyObjects.set(publicKey, k);
  }
  return k;
}

const sha256b64 = (body: Uint8Array) => createHash("sha256").update(body).digest("base64");

function withinWindow(ms: number, now: number, windowMs: number): boolean {
  return Number.isFinite(ms) && ms <= now + windowMs && ms >= now - windowMs;
}

/**
 * What the request claims, if it is a plain form this checks; undefined hands
 * it to Fedify's verifier. `body` is exactly the bytes Fedify would read.
 */
export function claimSignature(request: SignedRequest, body: Uint8Array, now: number, windowMs: number): SignatureClaim | undefined {
  if (request.method !== "POST") return undefined;
  const headers = request.headers;
  return headers.has("Signature-Input") ? rfc9421(request, body, now, windowMs) : cavage(request, body, now, windowMs);
}

function cavage(request: SignedRequest, body: Uint8Array, now: number, windowMs: number): SignatureClaim | undefined {
  const h = request.headers;
  const sigHeader = h.get("Signature");
  const dateHeader = h.get("Date");
  const digestHeader = h.get("Digest");
  if (sigHeader === null || dateHeader === null || digestHeader === null) return undefined;
  // Parsed as Fedify parses it (the last of a repeated field wins there too).
  const values: Record<string, string> = {};
  for (const pair of sigHeader.split(",")) {
    const m = CAVAGE_PAIR.exec(pair);
    if (m) values[m[1]!] = m[2] ?? m[3]!;
  }
  const { keyId, headers, signature } = values;
  if (keyId === undefined || headers === undefined || signature === undefined) return undefined;
  // Fedify checks created/expires against the window; (created)/(expires) are left to it.
  if ("created" in values || "expires" in values) return undefined;
  const m = /^sha-256=(.*)$/i.exec(digestHeader);
  if (!m || !SHA256_B64.test(m[1]!) || m[1] !== sha256b64(body)) return undefined;
  if (!withinWindow(new Date(dateHeader).getTime(), now, windowMs)) return undefined;
  if (!B64.test(signature) || signature.length % 4 !== 0) return undefined;
  let keyUrl: URL;
  try {
    keyUrl = new URL(keyId);
  } catch {
    return undefined;
  }
  const names = headers.split(/\s+/g);
  for (const required of ["(request-target)", "host", "date", "digest"]) if (!names.includes(required)) return undefined;
  const url = new URL(request.url);
  const lines: string[] = [];
  for (const name of names) {
    if (name === "(request-target)") lines.push(`${name}: ${request.method.toLowerCase()} ${url.pathname}`);
    else if (name === "host") lines.push(`host: ${h.get("host") ?? url.host}`);
    else {
      if (!HEADER_NAME.test(name)) return undefined;
      const value = h.get(name);
      if (value === null) return undefined;
      lines.push(`${name}: ${value}`);
    }
  }
  const message = Buffer.from(lines.join("\n"), "utf8");
  const sig = Buffer.from(signature, "base64");
  return { keyId: keyUrl, check: (key) => verifies(key, message, sig), checkRsa: (key) => verifiesRsa(key, message, sig) };
}

function rfc9421(request: SignedRequest, body: Uint8Array, now: number, windowMs: number): SignatureClaim | undefined {
  const h = request.headers;
  const input = RFC9421_INPUT.exec(h.get("Signature-Input") ?? "");
  const sigm = RFC9421_SIG.exec(h.get("Signature") ?? "");
  if (!input || !sigm || input[1] !== sigm[1] || sigm[2]!.length % 4 !== 0) return undefined;
  const parameters = input[3]!.slice(1);
  const params = new Map(parameters.split(";").map((p) => [p.slice(0, p.indexOf("=")), p.slice(p.indexOf("=") + 1)]));
  if (params.size !== 3 || !params.has("alg") || !params.has("keyid") || !params.has("created")) return undefined;
  if (!withinWindow(Number(params.get("created")) * 1000, now, windowMs)) return undefined;
  const components = input[2]!.split(" ").map((c) => c.slice(1, -1));
  for (const required of ["@method", "@target-uri", "content-digest"]) if (!components.includes(required)) return undefined;
  const digest = /^sha-256=:([A-Za-z0-9+/=]*):$/.exec(h.get("Content-Digest") ?? "");
  if (!digest || !SHA256_B64.test(digest[1]!) || digest[1] !== sha256b64(body)) return undefined;
  let keyUrl: URL;
  try {
    keyUrl = new URL(params.get("keyid")!.slice(1, -1));
  } catch {
    return undefined;
  }
  const url = new URL(request.url);
  const lines: string[] = [];
  for (const c of components) {
    const derived = DERIVED[c];
    if (derived) lines.push(`"${c}": ${derived(request, url)}`);
    else {
      if (c.startsWith("@")) return undefined;
      const value = h.get(c);
      if (value === null) return undefined;
      lines.push(`"${c}": ${value}`);
    }
  }
  lines.push(`"@signature-params": (${input[2]});${parameters}`);
  const message = Buffer.from(lines.join("\n"), "utf8");
  const sig = Buffer.from(sigm[2]!, "base64");
  return { keyId: keyUrl, check: (key) => verifies(key, message, sig), checkRsa: (key) => verifiesRsa(key, message, sig) };
}

function verifies(key: CryptographicKey, message: Buffer, sig: Buffer): boolean {
  const k = rsaSha256(key);
  return k ? verifiesRsa(k, message, sig) : false;
}

function verifiesRsa(k: KeyObject, message: Buffer, sig: Buffer): boolean {
  if (k.type !== "public" || k.asymmetricKeyType !== "rsa") return false;
  try {
    return verify("sha256", message, k, sig);
  } catch {
    return false;
  }
}

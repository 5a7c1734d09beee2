import { createHash, type KeyObject, sign } from "node:crypto";

/*
 * The HTTP signature of a delivery, shared by the batch sender
 * (batch-delivery.ts) and its delivery threads (delivery-thread.ts): kept
 * apart from both so that a thread loads neither Fedify nor the database.
 * Its draft-cavage signer also signs the follow's fast path's actor GET
 * (follower-fetch.ts).
 */

export type Spec = "rfc9421" | "draft-cavage-http-signatures-12";
export const OTHER_SPEC: Record<Spec, Spec> = { "rfc9421": "draft-cavage-http-signatures-12", "draft-cavage-http-signatures-12": "rfc9421" };

export interface Body {
  readonly text: string;
  readonly bytes: Uint8Array<ArrayBuffer>;
  /** Base64 SHA-256 of the bytes: the same for every delivery of the activity. */
  readonly sha256: string;
}

const encoder = new TextEncoder();

/** A delivery body from its text: encoded and hashed once. */
export function bodyOf(text: string): Body {
  const bytes = encoder.encode(text) as Uint8Array<ArrayBuffer>;
  return { text, bytes, sha256: createHash("sha256").update(bytes).digest("base64") };
}

let dateSecond = -1;
let dateText = "";
/** The Date header, formatted once a second. */
function httpDate(now: number): string {
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(second * 1000).toUTCString();
  }
  return dateText;
}

/**
 * A private key as the signers take it: WebCrypto's, or node:crypto's
 * KeyObject, which the delivery threads sign with (RSA on libuv's pool as
 * WebCrypto does, without its job and promise wrappers and argument
 * checks: a few per cent of a delivery's CPU).
 */
export type SigningKey = CryptoKey | KeyObject;

/** RSASSA-PKCS1-v1_5 with SHA-256 over `data`. */
function rsaSha256(key: SigningKey, data: Uint8Array<ArrayBuffer>): Promise<Buffer> {
  if (key instanceof CryptoKey) return crypto.subtle.sign("RSASSA-PKCS1-v1_5", key, data).then((s) => Buffer.from(s));
  return new Promise((resolve, reject) => sign("sha256", data, key, (error, signature) => (error ? reject(error) : resolve(signature))));
}

/**
 * The headers of a signed delivery, byte for byte what Fedify 2.3's
 * signRequest makes of a POST with only a Content-Type (RFC 9421 with its
 * default components, or draft-cavage with every header), without its
 * Request and Headers objects and the body's digest per delivery.
 * test/batch-delivery.test.ts checks both against Fedify's verifyRequest.
 */
export async function signedHeaders(inbox: URL, privateKey: SigningKey, keyId: URL, body: Body, spec: Spec, now = Date.now()): Promise<Record<string, string>> {
  const date = httpDate(now);
  const host = inbox.host;
  const contentType = "application/activity+json";
  if (spec === "rfc9421") {
    const contentDigest = `sha-256=:${body.sha256}:`;
    const components = '("@method" "@target-uri" "@authority" "host" "date" "content-digest")';
    const params = `${components};alg="rsa-v1_5-sha256";keyid="${keyId.href}";created=${Math.floor(now / 1000)}`;
    const base = `"@method": POST\n"@target-uri": ${inbox.href}\n"@authority": ${host}\n"host": ${host}\n"date": ${date}\n"content-digest": ${contentDigest}\n"@signature-params": ${params}`;
    const signature = await rsaSha256(privateKey, encoder.encode(base));
    return {
      "content-type": contentType, host, "content-digest": contentDigest, date,
      "signature-input": `sig1=${params}`, signature: `sig1=:${signature.toString("base64")}:`,
    };
  }
  const digest = `SHA-256=${body.sha256}`;
  // Fedify signs every header, in the order Headers iterates them (sorted).
  const headers = { "content-type": contentType, date, digest, host };
  return { ...headers, signature: await cavageSignature(`post ${inbox.pathname}`, headers, privateKey, keyId.href) };
}

/**
 * A draft-cavage `Signature` header (rsa-sha256) over `(request-target)`
 * (the lower-case method, a space and the path as the caller gives it) and
 * then `headers`, in their order, by lower-case name.
 */
export async function cavageSignature(requestTarget: string, headers: Readonly<Record<string, string>>, privateKey: SigningKey, keyId: string): Promise<string> {
  const names = Object.keys(headers);
  const message = [`(request-target): ${requestTarget}`, ...names.map((n) => `${n}: ${headers[n]}`)].join("\n");
  const signature = await rsaSha256(privateKey, encoder.encode(message));
  return `keyId="${keyId}",algorithm="rsa-sha256",headers="${["(request-target)", ...names].join(" ")}",signature="${signature.toString("base64")}"`;
}

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { type HttpMessageSignaturesSpec, signRequest, verifyRequestDetailed } from "@fedify/fedify";
import { CryptographicKey } from "@fedify/vocab";
import { claimSignature } from "../federation/inbox-fast-verify.ts";
import { LazyInboxRequest } from "../federation/inbox-request.ts";
import { generateRsa2048 } from "../federation/keys.ts";
import { SIGNATURE_WINDOW_MS } from "../src/replay-window.ts";

/*
 * The node-level inbox hands the fast paths a LazyInboxRequest (its headers
 * read off Node's rawHeaders, the WHATWG Request built only when Fedify's
 * verifier is asked) instead of the Headers and Request it built for every
 * POST. A pure optimisation: on requests received over real HTTP, its
 * headers answer as the Headers built before, the signature check says
 * exactly what it said on that Request, and the Request it builds is that
 * Request (URL, method, headers, body), which Fedify verifies alike.
 */

const KEY_ID = new URL("https://peer.test/users/alice#main-key");
const OWNER = new URL("https://peer.test/users/alice");
const BODY = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: "https://peer.test/likes/1", type: "Like", actor: OWNER.href, object: "https://muster.test/u/riders/calls/1" });
const pair = await generateRsa2048();
const key = new CryptographicKey({ id: KEY_ID, owner: OWNER, publicKey: pair.publicKey });

/** The old node-level inbox's Request, built as src/http/inbox-fast.ts built it before. */
function oldRequest(url: string, req: IncomingMessage, body: Uint8Array): Request {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
  return new Request(url, { method: "POST", headers, body: body as Uint8Array<ArrayBuffer> });
}

type Received = { url: string; req: IncomingMessage; body: Uint8Array };

/** Sends raw header lines (as given: case, repeats, padding) over real HTTP and gives back what the server received. */
async function receive(path: string, rawHeaders: [string, string][], body: string): Promise<Received> {
  let resolveReceived!: (r: Received) => void;
  const received = new Promise<Received>((resolve) => { resolveReceived = resolve; });
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      resolveReceived({ url: `http://127.0.0.1:1${req.url}`, req, body: new Uint8Array(Buffer.concat(chunks)) });
      res.writeHead(202).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  try {
    await new Promise<void>((resolve, reject) => {
      const r = httpRequest({ host: "127.0.0.1", port, path, method: "POST", headers: rawHeaders.flat() as never, setHost: false }, (res) => { res.resume(); res.on("end", resolve); });
      r.on("error", reject);
      r.end(body);
    });
    return await received;
  } finally {
    server.close();
  }
}

/** A real signed POST's headers (Fedify's signRequest), to be sent to `host` with the given changes to their raw form. */
async function signedHeaders(spec: HttpMessageSignaturesSpec, url: string): Promise<[string, string][]> {
  const signed = await signRequest(new Request(url, { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: BODY }), pair.privateKey, KEY_ID, { spec });
  const headers = [...signed.headers];
  if (!signed.headers.has("host")) headers.push(["host", new URL(url).host]);
  return headers;
}

const NAMES = ["host", "Host", "date", "DATE", "digest", "content-digest", "signature", "Signature-Input", "content-type", "x-repeated", "X-Padded", "absent", "content-length"];

async function sameAsBefore(received: Received): Promise<void> {
  const lazy = new LazyInboxRequest(received.url, received.req.rawHeaders, received.body);
  const old = oldRequest(received.url, received.req, received.body);
  for (const name of NAMES) {
    assert.equal(lazy.headers.get(name), old.headers.get(name), `get(${name})`);
    assert.equal(lazy.headers.has(name), old.headers.has(name), `has(${name})`);
  }
  const now = Date.now();
  const a = claimSignature(lazy, received.body, now, SIGNATURE_WINDOW_MS);
  const b = claimSignature(old, received.body, now, SIGNATURE_WINDOW_MS);
  assert.equal(a?.keyId.href, b?.keyId.href);
  assert.equal(a?.check(key), b?.check(key));
  // The Request built when Fedify's verifier is asked is the one built before, and built once.
  const built = lazy.request();
  assert.equal(lazy.request(), built);
  assert.equal(built.url, old.url);
  assert.equal(built.method, old.method);
  assert.deepEqual([...built.headers], [...old.headers]);
  assert.deepEqual(new Uint8Array(await built.clone().arrayBuffer()), new Uint8Array(await old.clone().arrayBuffer()));
  const verify = (r: Request) => verifyRequestDetailed(r, {
    documentLoader: async (u: string) => { throw new Error(`no fetch: ${u}`); },
    timeWindow: { milliseconds: SIGNATURE_WINDOW_MS },
    keyCache: { get: async (id: URL) => (id.href === KEY_ID.href ? key : undefined), set: async () => {} },
  }).then((v) => v.verified, () => false);
  assert.equal(await verify(built), await verify(old));
}

for (const spec of ["draft-cavage-http-signatures-12", "rfc9421"] as const) {
  describe(`the node-level inbox's lazy request reads as the Request it built before (${spec}, real HTTP)`, () => {
    it("a plain signed POST: the same headers, the same yes from the signature check, the same Request", async () => {
      const host = "127.0.0.1:1";
      const url = `http://${host}/u/riders/inbox`;
      const headers = await signedHeaders(spec, url);
      const received = await receive("/u/riders/inbox", headers, BODY);
      await sameAsBefore(received);
      assert.equal(claimSignature(new LazyInboxRequest(received.url, received.req.rawHeaders, received.body), received.body, Date.now(), SIGNATURE_WINDOW_MS)?.check(key), true);
    });

    it("names in other cases, repeated fields and padded values: joined and trimmed as Headers joins and trims them", async () => {
      const host = "127.0.0.1:1";
      const url = `http://${host}/inbox`;
      const headers = (await signedHeaders(spec, url)).map(([n, v]): [string, string] => [n === "date" ? "DATE" : n === "signature" ? "Signature" : n, n === "digest" || n === "content-digest" ? ` ${v}\t` : v]);
      headers.push(["x-repeated", "one"], ["X-Repeated", " two "], ["x-padded", "\t padded \t"]);
      await sameAsBefore(await receive("/inbox", headers, BODY));
    });

    it("a repeated signature field (two Signature headers): what the check says on it is what it said before", async () => {
      const host = "127.0.0.1:1";
      const url = `http://${host}/inbox`;
      const headers = await signedHeaders(spec, url);
      const signature = headers.find(([n]) => n === "signature")!;
      headers.push(["Signature", signature[1]]);
      await sameAsBefore(await receive("/inbox", headers, BODY));
    });

    it("a body changed after signing: no from both, the same Request", async () => {
      const host = "127.0.0.1:1";
      const url = `http://${host}/inbox`;
      const headers = (await signedHeaders(spec, url)).filter(([n]) => n !== "content-length");
      const received = await receive("/inbox", headers, BODY.replace("likes/1", "likes/2"));
      await sameAsBefore(received);
      assert.notEqual(claimSignature(new LazyInboxRequest(received.url, received.req.rawHeaders, received.body), received.body, Date.now(), SIGNATURE_WINDOW_MS)?.check(key), true);
    });
  });
}

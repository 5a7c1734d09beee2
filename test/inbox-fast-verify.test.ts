import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type HttpMessageSignaturesSpec, signRequest, verifyRequestDetailed } from "@fedify/fedify";
import { Temporal } from "@js-temporal/polyfill";
import { CryptographicKey } from "@fedify/vocab";
import { claimSignature } from "../federation/inbox-fast-verify.ts";
import { generateRsa2048 } from "../federation/keys.ts";
import { SIGNATURE_WINDOW_MS } from "../src/replay-window.ts";

// The fast path's synchronous verifier must never say yes where Fedify's
// verifyRequestDetailed says no, on real signed requests of both specs; and
// it should say yes on the plain forms (else it saves nothing).

const INBOX = "https://muster.test/u/riders/inbox";
const KEY_ID = new URL("https://peer.test/users/alice#main-key");
const OWNER = new URL("https://peer.test/users/alice");
const BODY = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: "https://peer.test/likes/1", type: "Like", actor: OWNER.href, object: "https://muster.test/u/riders/calls/1" });

const pair = await generateRsa2048();
const other = await generateRsa2048();
const key = new CryptographicKey({ id: KEY_ID, owner: OWNER, publicKey: pair.publicKey });
const wrongKey = new CryptographicKey({ id: KEY_ID, owner: OWNER, publicKey: other.publicKey });

async function signed(spec: HttpMessageSignaturesSpec, opts: { body?: string; at?: number; url?: string } = {}): Promise<Request> {
  const request = new Request(opts.url ?? INBOX, { method: "POST", headers: { "Content-Type": "application/activity+json", Accept: "application/activity+json" }, body: opts.body ?? BODY });
  return signRequest(request, pair.privateKey, KEY_ID, { spec, currentTime: opts.at === undefined ? undefined : Temporal.Instant.fromEpochMilliseconds(opts.at) as never });
}

/** A copy of the request with headers changed and, optionally, another body. */
async function altered(request: Request, change: (h: Headers) => void, body?: string): Promise<Request> {
  const headers = new Headers(request.headers);
  change(headers);
  return new Request(request.url, { method: "POST", headers, body: body ?? await request.clone().text() });
}

async function both(request: Request, withKey = key): Promise<{ fedify: boolean; ours: boolean }> {
  const bytes = new Uint8Array(await request.clone().arrayBuffer());
  const fedify = await verifyRequestDetailed(request.clone(), {
    documentLoader: async (u: string) => { throw new Error(`no fetch: ${u}`); },
    timeWindow: { milliseconds: SIGNATURE_WINDOW_MS },
    keyCache: { get: async (id: URL) => (id.href === KEY_ID.href ? withKey : undefined), set: async () => {} },
  }).then((r) => r.verified, () => false);
  const claim = claimSignature(request, bytes, Date.now(), SIGNATURE_WINDOW_MS);
  const ours = claim !== undefined && claim.keyId.href === KEY_ID.href && claim.check(withKey);
  return { fedify, ours };
}

for (const spec of ["draft-cavage-http-signatures-12", "rfc9421"] as const) {
  describe(`inbox fast verifier agrees with Fedify (${spec})`, () => {
    it("accepts a real signed request that Fedify accepts", async () => {
      assert.deepEqual(await both(await signed(spec)), { fedify: true, ours: true });
    });

    it("rejects a body changed after signing (digest no longer matches)", async () => {
      const r = await signed(spec);
      assert.deepEqual(await both(await altered(r, () => {}, BODY.replace("likes/1", "likes/2"))), { fedify: false, ours: false });
    });

    it("rejects a tampered digest header over the tampered body", async () => {
      const r = await signed(spec);
      const body = BODY.replace("likes/1", "likes/2");
      const digest = Buffer.from(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body))).toString("base64");
      const req = await altered(r, (h) => (spec === "rfc9421" ? h.set("Content-Digest", `sha-256=:${digest}:`) : h.set("Digest", `SHA-256=${digest}`)), body);
      assert.deepEqual(await both(req), { fedify: false, ours: false });
    });

    it("rejects a tampered covered header", async () => {
      const r = await signed(spec);
      // Fedify signs Date under both specs (and the date window still holds for the new value).
      const later = new Date(Date.now() + 1000).toUTCString();
      const req = await altered(r, (h) => h.set("Date", later === h.get("Date") ? new Date(Date.now() + 2000).toUTCString() : later));
      const covered = spec === "rfc9421" ? r.headers.get("Signature-Input")!.includes('"date"') : true;
      assert.deepEqual(await both(req), covered ? { fedify: false, ours: false } : { fedify: true, ours: true });
    });

    it("rejects a request to another inbox than the one signed", async () => {
      const r = await signed(spec);
      const moved = new Request("https://muster.test/inbox", { method: "POST", headers: r.headers, body: await r.clone().text() });
      assert.deepEqual(await both(moved), { fedify: false, ours: false });
    });

    it("rejects a signature by another key", async () => {
      assert.deepEqual(await both(await signed(spec), wrongKey), { fedify: false, ours: false });
    });

    it("rejects a tampered signature", async () => {
      const r = await signed(spec);
      const req = await altered(r, (h) => {
        const s = h.get("Signature")!;
        const i = spec === "rfc9421" ? s.indexOf("=:") + 20 : s.indexOf('signature="') + 20; // inside the value, away from the padding bits
        h.set("Signature", s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1));
      });
      assert.deepEqual(await both(req), { fedify: false, ours: false });
    });

    it("rejects a signature older than the window", async () => {
      const r = await signed(spec, { at: Date.now() - SIGNATURE_WINDOW_MS - 60_000 });
      assert.deepEqual(await both(r), { fedify: false, ours: false });
    });

    it("rejects a signature from too far in the future", async () => {
      const r = await signed(spec, { at: Date.now() + SIGNATURE_WINDOW_MS + 60_000 });
      assert.deepEqual(await both(r), { fedify: false, ours: false });
    });

    it("does not accept when a covered header is missing", async () => {
      const r = await signed(spec);
      const drop = spec === "rfc9421" ? "Content-Digest" : "Date";
      assert.deepEqual(await both(await altered(r, (h) => h.delete(drop))), { fedify: false, ours: false });
      const h2 = await altered(r, (h) => h.delete("Content-Type"));
      const res = await both(h2);
      assert.ok(!res.ours || res.fedify, "ours accepts only what Fedify accepts");
    });
  });
}

describe("inbox fast verifier: forms it leaves to Fedify", () => {
  it("a draft-cavage signature that does not cover the digest is not claimed", async () => {
    const r = await signed("draft-cavage-http-signatures-12");
    const sig = r.headers.get("Signature")!.replace(/headers="([^"]*)"/, (_, hs: string) => `headers="${hs.split(" ").filter((x) => x !== "digest").join(" ")}"`);
    const req = await altered(r, (h) => h.set("Signature", sig));
    assert.equal(claimSignature(req, new TextEncoder().encode(BODY), Date.now(), SIGNATURE_WINDOW_MS), undefined);
    assert.deepEqual(await both(req), { fedify: false, ours: false });
  });

  it("an RFC 9421 signature that does not cover content-digest is not claimed", async () => {
    const r = await signed("rfc9421");
    const input = r.headers.get("Signature-Input")!.replace(' "content-digest"', "").replace('"content-digest" ', "");
    const req = await altered(r, (h) => h.set("Signature-Input", input));
    assert.equal(claimSignature(req, new TextEncoder().encode(BODY), Date.now(), SIGNATURE_WINDOW_MS), undefined);
  });
});

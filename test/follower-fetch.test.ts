import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { verify } from "node:crypto";
import { fetchFollowerPlain } from "../federation/follower-fetch.ts";
import { loadUnionKeyPairs } from "../federation/keys.ts";
import type { Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";

/*
 * The follow's fast path fetches the follower's actor with one plain signed
 * GET (federation/follower-fetch.ts). It must be signed so that an
 * authorized-fetch server (Mastodon's secure mode) can verify it with the
 * key the union's actor document publishes, and it must keep every rule of
 * the process's HTTP client: no private address when the Muster refuses
 * them, no redirect followed, nothing oversized read, only a JSON answer.
 * Whatever it does not take is undefined (the caller falls back to Fedify's
 * loader).
 */

interface Seen {
  path: string;
  headers: IncomingMessage["headers"];
}

for (const d of dialects.filter((x) => x.name === "sqlite")) {
  describe(`the follower's plain fetch, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let riders: Union;
    let server: Server;
    let base: URL;
    const seen: Seen[] = [];
    const actorDoc = (id: string) => ({
      "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
      id,
      type: "Person",
      inbox: `${id}/inbox`,
      publicKey: { id: `${id}#main-key`, owner: id, publicKeyPem: "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----" },
    });

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      riders = await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
      server = createServer((req, res) => {
        const path = req.url ?? "/";
        seen.push({ path, headers: req.headers });
        const id = new URL(path, base).href;
        if (path === "/users/moved") {
          res.writeHead(302, { location: new URL("/users/plain", base).href }).end();
        } else if (path === "/users/html") {
          res.writeHead(200, { "content-type": "text/html" }).end("<html></html>");
        } else if (path === "/users/huge") {
          res.writeHead(200, { "content-type": "application/activity+json" });
          // Over the 2 MiB the client reads from anyone.
          const pad = "x".repeat(64 * 1024);
          res.write(`{"id":"${id}","pad":[`);
          for (let i = 0; i < 48; i++) res.write(`${i ? "," : ""}"${pad}"`);
          res.end("]}");
        } else if (path === "/users/list") {
          res.writeHead(200, { "content-type": "application/activity+json" }).end("[1,2]");
        } else if (path === "/users/gone") {
          res.writeHead(410, { "content-type": "application/activity+json" }).end("{}");
        } else {
          res.writeHead(200, { "content-type": "application/activity+json; charset=utf-8" }).end(JSON.stringify(actorDoc(id)));
        }
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      base = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    });
    after(async () => {
      await new Promise<void>((r) => server?.close(() => r()));
      await m?.stop();
      await tdb?.destroy();
    });

    const fetchAs = (path: string, allowPrivateAddress = true, identifier = "riders") =>
      fetchFollowerPlain(m.muster.database.db, m.origin, identifier, "instance", new URL(path, base).href, allowPrivateAddress);
    const requestsFor = (path: string) => seen.filter((s) => s.path === path);

    it("one GET, draft-cavage-signed by the union's key as its actor document publishes it: verifiable by an authorized-fetch server", async () => {
      const doc = await fetchAs("/users/plain");
      assert.equal(doc?.id, new URL("/users/plain", base).href);
      const [req, ...more] = requestsFor("/users/plain");
      assert.ok(req);
      assert.equal(more.length, 0, "one request");
      assert.equal(req.headers["signature-input"], undefined, "no RFC 9421 first knock");
      const sig = String(req.headers.signature);
      const field = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(sig)?.[1];
      // The key id is the one the union's actor document shows, so a verifier finds the key there.
      const union = await (await fetch(new URL(`/u/${riders.slug}`, m.origin), { headers: { accept: "application/activity+json" } })).json() as { publicKey: { id: string } };
      assert.equal(field("keyId"), union.publicKey.id);
      assert.equal(field("algorithm"), "rsa-sha256");
      const headers = field("headers")!.split(" ");
      assert.deepEqual(headers, ["(request-target)", "accept", "date", "host"]);
      const signed = headers.map((h) => h === "(request-target)" ? `(request-target): get /users/plain` : `${h}: ${req.headers[h]}`).join("\n");
      const [pair] = await loadUnionKeyPairs(m.muster.database.db, riders.slug);
      const spki = Buffer.from(await crypto.subtle.exportKey("spki", pair!.publicKey));
      assert.ok(verify("sha256", Buffer.from(signed), { key: spki, format: "der", type: "spki" }, Buffer.from(field("signature")!, "base64")), "the signature verifies with the union's public key");
      // A forged copy (another path) does not.
      const forged = signed.replace("get /users/plain", "get /users/other");
      assert.ok(!verify("sha256", Buffer.from(forged), { key: spki, format: "der", type: "spki" }, Buffer.from(field("signature")!, "base64")));
      const date = Date.parse(String(req.headers.date));
      assert.ok(Math.abs(Date.now() - date) < 60_000, "a current Date header");
    });

    it("the shared inbox's fetch is signed by the instance actor's key", async () => {
      await fetchAs("/users/shared", true, "instance");
      const sig = String(requestsFor("/users/shared")[0]?.headers.signature);
      assert.equal(/keyId="([^"]*)"/.exec(sig)?.[1], new URL("/u/instance#main-key", m.origin).href);
    });

    it("hostile: a private address the Muster refuses is never connected to, whatever context the caller runs in", async () => {
      const before = requestsFor("/users/private").length;
      assert.equal(await fetchAs("/users/private", false), undefined);
      assert.equal(requestsFor("/users/private").length, before, "no request reached the private address");
    });

    it("hostile: a redirect is not followed, an oversized body is not read whole, HTML, a JSON array and an error status are not taken", async () => {
      assert.equal(await fetchAs("/users/moved"), undefined);
      assert.equal(requestsFor("/users/plain").length, 1, "the redirect's target was not fetched");
      assert.equal(await fetchAs("/users/huge"), undefined);
      assert.equal(await fetchAs("/users/html"), undefined);
      assert.equal(await fetchAs("/users/list"), undefined);
      assert.equal(await fetchAs("/users/gone"), undefined);
    });

    it("a union with no keys (no such union) signs nothing and fetches nothing", async () => {
      assert.equal(await fetchAs("/users/nokey", true, "nosuchunion"), undefined);
      assert.equal(requestsFor("/users/nokey").length, 0);
    });
  });
}

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync } from "node:crypto";
import path from "node:path";
import { preloadedContexts } from "@fedify/vocab-runtime";
import { ALIAS_KEYS, ALLOWED_CONTEXTS, READ_IRIS, readPlainActor, readThroughFedify } from "../federation/plain-actor.ts";
import { loadFixture } from "./helpers/fixtures.ts";
import { startPeer } from "./helpers/peer.ts";

/*
 * federation/plain-actor.ts reads a follower's actor as plain JSON for the
 * follow's fast path. Whenever it answers, its answer must be what reading
 * the same document through Fedify's vocabulary gives (the path it replaces);
 * whenever it cannot be sure, it must not answer. Real documents (Mastodon's,
 * a Fedify server's) are read plainly; every variant below either is not, or
 * is read exactly as Fedify reads it.
 */

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
type Json = Record<string, unknown>;
const clone = <T>(x: T): T => structuredClone(x);

function mastodon(): { doc: Json; actorId: string; keyId: string } {
  const doc = loadFixture(FIXTURES, "mastodon/person-actor.json") as Json;
  return { doc, actorId: doc.id as string, keyId: `${doc.id as string}#main-key` };
}

/** Plain and Fedify's readings agree, or plain declines: never a plain answer Fedify would not give. */
async function agreesOrDeclines(doc: Json, actorId: string, keyId: string): Promise<"plain" | "declined"> {
  const plain = await readPlainActor(doc, actorId, keyId, 1234);
  if (plain === undefined) return "declined";
  const fedify = await readThroughFedify(doc, keyId);
  assert.ok(fedify, `Fedify could not read what plain-actor read: ${JSON.stringify(doc).slice(0, 300)}`);
  assert.equal(fedify.aliases, 0);
  const { fetchedAt, ...actor } = plain.actor;
  assert.equal(fetchedAt, 1234);
  assert.deepEqual(actor, fedify.actor);
  // Byte for byte: the key cache row is this JSON's text.
  assert.equal(JSON.stringify(plain.keyJsonLd), JSON.stringify(fedify.keyJsonLd));
  const pem = (fedify.keyJsonLd as Record<string, { "@value": string }[]>)["https://w3id.org/security#publicKeyPem"]![0]!["@value"];
  assert.ok(plain.key.equals(createPublicKey(pem)));
  return "plain";
}

describe("plain-actor: a follower's actor read as JSON, only where Fedify reads it the same", () => {
  it("mastodon/person-actor.json and a Fedify server's Person are read plainly, exactly as through Fedify (actor fields, key, key cache entry)", async () => {
    const m = mastodon();
    assert.equal(await agreesOrDeclines(m.doc, m.actorId, m.keyId), "plain");
    const peer = await startPeer(["ann"]);
    try {
      const res = await fetch(peer.actorId("ann"), { headers: { Accept: "application/activity+json" } });
      const doc = await res.json() as Json;
      // What the joins benchmark's and the tests' peers serve: the follow's fast path takes it without Fedify's vocabulary.
      assert.equal(await agreesOrDeclines(doc, peer.actorId("ann").href, peer.keyId("ann").href), "plain");
    } finally {
      await peer.close();
    }
  });

  it("a PKCS#1 key (BEGIN RSA PUBLIC KEY), a key list, no shared inbox, no username: read as Fedify reads them", async () => {
    const m = mastodon();
    const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const pkcs1 = publicKey.export({ type: "pkcs1", format: "pem" }) as string;
    const a = clone(m.doc);
    (a.publicKey as Json).publicKeyPem = pkcs1;
    assert.equal(await agreesOrDeclines(a, m.actorId, m.keyId), "plain");
    const b = clone(m.doc);
    b.publicKey = [{ id: `${m.actorId}#other`, owner: m.actorId, publicKeyPem: publicKey.export({ type: "spki", format: "pem" }) }, b.publicKey];
    assert.equal(await agreesOrDeclines(b, m.actorId, m.keyId), "plain");
    const c = clone(m.doc);
    delete c.endpoints;
    delete c.preferredUsername;
    assert.equal(await agreesOrDeclines(c, m.actorId, m.keyId), "plain");
  });

  it("hostile or unusual documents are declined (Fedify's reading decides): redefined or aliased terms, keywords, IRIs as keys, other types, aliases, foreign keys", async () => {
    const m = mastodon();
    const ctx = (doc: Json) => doc["@context"] as unknown[];
    const inline = (doc: Json) => ctx(doc)[2] as Json;
    const { publicKey: ed } = generateKeyPairSync("ed25519");
    const variants: [string, (d: Json) => void][] = [
      ["inline context redefines inbox", (d) => void (inline(d).inbox = { "@id": "as:outbox", "@type": "@id" })],
      ["another term aliases ldp:inbox", (d) => { inline(d).box = { "@id": "ldp:inbox", "@type": "@id" }; d.box = "https://evil.example/inbox"; }],
      ["another term aliases the key property by full IRI", (d) => { inline(d).k = { "@id": "https://w3id.org/security#publicKey", "@type": "@id" }; d.k = { id: `${m.actorId}#k2`, owner: m.actorId, publicKeyPem: "x" }; }],
      ["a term aliases @id", (d) => void (inline(d).ident = "@id")],
      ["@vocab", (d) => void (inline(d)["@vocab"] = "https://evil.example/#")],
      ["@language", (d) => void (inline(d)["@language"] = "en")],
      ["the as prefix redefined", (d) => void (inline(d).as = "https://evil.example/#")],
      ["Person redefined", (d) => void (inline(d).Person = "https://evil.example/#Person")],
      ["a scoped context on a term", (d) => void (inline(d).featured = { "@id": "toot:featured", "@context": { inbox: "https://evil.example/#i" } })],
      ["an unknown prefix", (d) => void (inline(d).thing = "zz:thing")],
      ["a context not preloaded", (d) => void ctx(d).push("https://evil.example/context.jsonld")],
      ["ActivityStreams not first", (d) => void ctx(d).reverse()],
      ["a compact IRI as a key", (d) => void (d["as:inbox"] = "https://evil.example/inbox")],
      ["an absolute IRI as a key", (d) => void (d["http://www.w3.org/ns/ldp#inbox"] = "https://evil.example/inbox")],
      ["a keyword as a key", (d) => void (d["@id"] = m.actorId)],
      ["a nested @context", (d) => void ((d.publicKey as Json)["@context"] = "https://w3id.org/security/v1")],
      ["nameMap", (d) => void (d.nameMap = { en: "x" })],
      ["preferredUsernameMap", (d) => void (d.preferredUsernameMap = { en: "x" })],
      ["a Group", (d) => void (d.type = "Group")],
      ["a Service", (d) => void (d.type = "Service")],
      ["two types", (d) => void (d.type = ["Person", "Service"])],
      ["aliases (the migration check)", (d) => void (d.alsoKnownAs = ["https://old.example/users/x"])],
      ["the key owned by another actor", (d) => void ((d.publicKey as Json).owner = "https://evil.example/users/x")],
      ["the key by reference only", (d) => void (d.publicKey = m.keyId)],
      ["two keys with the signing key's id", (d) => void (d.publicKey = [d.publicKey, d.publicKey])],
      ["an Ed25519 key", (d) => void ((d.publicKey as Json).publicKeyPem = ed.export({ type: "spki", format: "pem" }))],
      ["a garbled PEM", (d) => void ((d.publicKey as Json).publicKeyPem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")],
      ["a key of another type", (d) => void ((d.publicKey as Json).type = "Multikey")],
      ["an extra field on the key", (d) => void ((d.publicKey as Json).controller = m.actorId)],
      ["a relative inbox", (d) => void (d.inbox = "/users/mastodon/inbox")],
      ["an inbox in another spelling", (d) => void (d.inbox = "HTTPS://masto.qa.urbanwildlife.biz/users/mastodon/inbox")],
      ["an embedded inbox", (d) => void (d.inbox = { id: "https://masto.qa.urbanwildlife.biz/users/mastodon/inbox", type: "OrderedCollection" })],
      ["endpoints by reference", (d) => void (d.endpoints = "https://masto.qa.urbanwildlife.biz/endpoints")],
      ["a username that is not a string", (d) => void (d.preferredUsername = ["a", "b"])],
      ["another id", (d) => void (d.id = "https://evil.example/users/x")],
    ];
    for (const [what, change] of variants) {
      const d = clone(m.doc);
      change(d);
      assert.equal(await agreesOrDeclines(d, m.actorId, m.keyId), "declined", what);
    }
    // Not the signing key: nothing to verify with.
    assert.equal(await readPlainActor(m.doc, m.actorId, `${m.actorId}#other-key`, 0), undefined);
  });

  it("harmless extensions keep the plain reading, and it is still Fedify's: extra fields, Misskey's and GoToSocial's terms, a typed key", async () => {
    const m = mastodon();
    const variants: ((d: Json) => void)[] = [
      (d) => void (d.summary = "<p>hi</p>"),
      (d) => void (d.attachment = [{ type: "PropertyValue", name: "site", value: "<a>x</a>" }]),
      (d) => { (d["@context"] as unknown[]).push({ misskey: "https://misskey-hub.net/ns#", isCat: "misskey:isCat" }); d.isCat = true; },
      (d) => void (d["@context"] as unknown[]).splice(2, 0, "https://gotosocial.org/ns"),
      (d) => void ((d.publicKey as Json).type = "CryptographicKey"),
      (d) => void (d.name = "A name"),
    ];
    for (const change of variants) {
      const d = clone(m.doc);
      change(d);
      assert.equal(await agreesOrDeclines(d, m.actorId, m.keyId), "plain", JSON.stringify(d).slice(0, 200));
    }
  });

  it("the allowed contexts name no property read here under another term than ALIAS_KEYS", () => {
    const prefixes: Record<string, string> = {};
    const found = new Set<string>();
    const canonical = new Set(["inbox", "sharedInbox", "endpoints", "preferredUsername", "name", "alsoKnownAs", "publicKey", "owner", "publicKeyPem"]);
    const visit = (context: Json) => {
      for (const [term, def] of Object.entries(context)) if (typeof def === "string" && /^https?:\/\/.*[#/]$/.test(def)) prefixes[term] = def;
      for (const [term, def] of Object.entries(context)) {
        if (def && typeof def === "object" && "@context" in (def as Json)) visit((def as Json)["@context"] as Json);
        const iri = typeof def === "string" ? def : (def as Json | null)?.["@id"];
        if (typeof iri !== "string") continue;
        const m = /^([A-Za-z][A-Za-z0-9+.-]*):(.*)$/.exec(iri);
        const base = m ? prefixes[m[1]!] : undefined;
        const full = m && base !== undefined ? base + m[2]! : iri;
        if (READ_IRIS.has(full) && !canonical.has(term)) found.add(term);
      }
    };
    for (const url of ALLOWED_CONTEXTS) {
      const doc = (preloadedContexts as Record<string, Json>)[url];
      assert.ok(doc, `${url} is preloaded`);
      const c = doc["@context"];
      for (const part of Array.isArray(c) ? c : [c]) if (part && typeof part === "object") visit(part as Json);
    }
    assert.deepEqual([...found].sort(), [...ALIAS_KEYS].filter((k) => found.has(k)).sort());
    for (const k of found) assert.ok(ALIAS_KEYS.has(k), k);
    // The scan itself sees ActivityStreams' own alias of name.
    assert.ok(found.has("nameMap"));
  });
});

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { signRequest } from "@fedify/fedify";
import { storedKeyId } from "../federation/kv-public-keys.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";

/*
 * A member's cached key (fedify_public_keys, migration 0064) through the real
 * inbox: Fedify's verifier caches it on first contact; after the member's
 * server rotates the key, a request signed with the new key still gets in
 * (the fast path's cached key fails, Fedify re-fetches), and the new key
 * replaces the old one in the compact table.
 */
for (const d of dialects) {
  describe(`a rotated member key, through the inbox, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let seq = 0;
    const db = () => m.muster.database.db;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(["kim"]);
      const union = await makeUnion(m, "riders", { joinPolicy: "open" });
      await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, "kim", new URL("/inbox", peer.origin));
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    /** A Like signed by kim's current key, POSTed to the union's inbox; resolves once recorded. */
    async function like(): Promise<number> {
      const id = `${peer.actorId("kim").href}#like/${++seq}`;
      const body = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id, type: "Like", actor: peer.actorId("kim").href, object: "https://elsewhere.example/notes/1" });
      const request = new Request(new URL("/u/riders/inbox", m.origin), { method: "POST", headers: { "Content-Type": "application/activity+json" }, body });
      const signed = await signRequest(request, (await peer.keys("kim")).privateKey, peer.keyId("kim"), { spec: "draft-cavage-http-signatures-12" });
      const res = await fetch(signed);
      if (res.status === 202) await eventually(async () => (await db().selectFrom("inbox_activities").select("id").where("id", "=", id).executeTakeFirst()) !== undefined, `${id} recorded`);
      return res.status;
    }
    const modulus = async () => Buffer.from(((await crypto.subtle.exportKey("jwk", (await peer.keys("kim")).publicKey)) as { n: string }).n, "base64url");
    const cached = () => db().selectFrom("fedify_public_keys").select(["key", "owner"]).where("key_id", "=", storedKeyId(peer.keyId("kim").href)).executeTakeFirst();
    const inKv = () => db().selectFrom("fedify_kv").select("key").where("key", "=", JSON.stringify(["_fedify", "publicKey", peer.keyId("kim").href])).executeTakeFirst();

    it("is cached compact on first contact, and replaced by the new key after the member's server rotates it", async () => {
      assert.equal(await like(), 202);
      const first = await cached();
      assert.ok(first, "cached in fedify_public_keys");
      assert.deepEqual(Buffer.from(first.key), await modulus(), "the modulus alone");
      assert.equal(first.owner, null);
      assert.equal(await inKv(), undefined);

      await peer.addActor("kim"); // a fresh key pair under the same actor and key id
      const fetchesBefore = peer.gets.length;
      assert.equal(await like(), 202, "signed with the new key: still let in");
      assert.ok(peer.gets.length > fetchesBefore, "the key was fetched again");
      const second = await cached();
      assert.deepEqual(Buffer.from(second!.key), await modulus(), "the new key replaced the old one");
      assert.notDeepEqual(Buffer.from(second!.key), Buffer.from(first.key));
      assert.equal(await inKv(), undefined);
      const fetchesAfter = peer.gets.length;
      assert.equal(await like(), 202);
      assert.equal(peer.gets.length, fetchesAfter, "the next request verifies with the cached new key, no fetch");
    });
  });
}

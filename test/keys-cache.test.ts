import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { exportJwk } from "@fedify/fedify";
import type { Kysely } from "kysely";
import { forgetActorKeys, generateActorKeys, loadKeyPairs, loadUnionKeyPairs } from "../federation/keys.ts";
import { migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { dialects } from "./helpers/databases.ts";

const publicJwks = async (pairs: CryptoKeyPair[]) => Promise.all(pairs.map(async (p) => JSON.stringify(await exportJwk(p.publicKey))));

for (const d of dialects) {
  describe(`imported actor keys are cached by their stored text, on ${d.name}`, { skip: d.skip }, () => {
    it("the same rows give the same imported keys; a replaced key is imported afresh", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        await migrateToLatest(db);
        const kdb = db as unknown as Kysely<DB>;
        const store = async (owner: string) => {
          const keys = await generateActorKeys();
          await kdb.deleteFrom("actor_keys").where("owner", "=", owner).execute();
          await kdb.insertInto("actor_keys").values(keys.map((k) => ({ owner, algorithm: k.algorithm, private_jwk: k.privateJwk, public_jwk: k.publicJwk, created_at: Date.now() }))).execute();
          // Held keys are dropped by whatever replaces them (federation/keys.ts; key-hold.test.ts covers the hold).
          forgetActorKeys(kdb);
          return keys.map((k) => JSON.stringify(JSON.parse(k.publicJwk)));
        };
        const first = await store("union:x");
        const a = await loadKeyPairs(kdb, "union:x");
        const b = await loadKeyPairs(kdb, "union:x");
        assert.equal(a.length, 2);
        assert.equal(a[0]!.privateKey, b[0]!.privateKey, "unchanged rows are not imported again");
        assert.equal(a[0]!.privateKey.algorithm.name, "RSASSA-PKCS1-v1_5", "RSA first, as Fedify signs HTTP with the first RSA key");
        assert.deepEqual((await publicJwks(a)).map((j) => JSON.parse(j).n ?? JSON.parse(j).x), first.map((j) => JSON.parse(j).n ?? JSON.parse(j).x));

        const second = await store("union:x");
        const c = await loadKeyPairs(kdb, "union:x");
        assert.notEqual(c[0]!.privateKey, a[0]!.privateKey);
        assert.deepEqual((await publicJwks(c)).map((j) => JSON.parse(j).n ?? JSON.parse(j).x), second.map((j) => JSON.parse(j).n ?? JSON.parse(j).x), "the replaced keys are what is used");
        assert.deepEqual(await loadKeyPairs(kdb, "union:none"), []);

        // By the union's slug, in one statement: the same keys, in the same order; none for no union.
        const now = Date.now();
        await kdb.insertInto("unions").values({ id: "x", slug: "ex", name: "X", purpose: "P", leader_handle: null, icon_url: null, manually_approves_followers: 0, created_at: now } as never).execute();
        const bySlug = await loadUnionKeyPairs(kdb, "EX");
        assert.deepEqual(bySlug.map((p) => p.privateKey), c.map((p) => p.privateKey), "the union's keys, RSA first, imported once");
        assert.deepEqual(await loadUnionKeyPairs(kdb, "nobody"), []);
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}

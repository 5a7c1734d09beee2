import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";

const AP = "application/activity+json";

for (const d of dialects) {
  describe(`a union's actor whose keys cannot be loaded, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      await makeUnion(m, "riders");
    });
    after(async () => {
      await m?.stop();
      await tdb?.destroy();
    });

    it("is refused with an error rather than served (and cached) without its public key, and is whole once they load", async () => {
      const db = m.muster.database.db;
      const union = await db.selectFrom("unions").select("id").where("slug", "=", "riders").executeTakeFirstOrThrow();
      const owner = `union:${union.id}`;
      const rsa = await db.selectFrom("actor_keys").select("private_jwk").where("owner", "=", owner).where("algorithm", "=", "RSASSA-PKCS1-v1_5").executeTakeFirstOrThrow();
      const actor = new URL("/u/riders", m.origin);
      // Loading fails (here an unreadable sealed key; on a busy PostgreSQL, a
      // refused connection): Fedify's getActorKeyPairs then answers no keys.
      await db.updateTable("actor_keys").set({ private_jwk: "not a sealed key" }).where("owner", "=", owner).where("algorithm", "=", "RSASSA-PKCS1-v1_5").execute();
      const during = await fetch(actor, { headers: { Accept: AP } });
      const body = await during.text();
      assert.ok(during.status !== 200 || JSON.parse(body).publicKey !== undefined, `served ${during.status} without a public key: ${body.slice(0, 120)}`);
      assert.notEqual(during.status, 200);
      // The fetch again, once the keys load, is the whole document (nothing keyless was kept).
      await db.updateTable("actor_keys").set({ private_jwk: rsa.private_jwk }).where("owner", "=", owner).where("algorithm", "=", "RSASSA-PKCS1-v1_5").execute();
      const later = await fetch(actor, { headers: { Accept: AP } });
      assert.equal(later.status, 200);
      const json = await later.json() as { publicKey?: { id?: string } };
      assert.equal(json.publicKey?.id, `${actor.href}#main-key`);
    });
  });
}

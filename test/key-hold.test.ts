import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { exportJwk } from "@fedify/fedify";
import type { Kysely, KyselyPlugin } from "kysely";
import { forgetActorKeys, generateActorKeys, KEY_TTL_MS, keyClock, loadUnionKeyPairs } from "../federation/keys.ts";
import { Rejoiner } from "../federation/queue-payloads.ts";
import { migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { dialects } from "./helpers/databases.ts";

/** Counts the statements that name actor_keys, on either dialect. */
function keyReads(): { plugin: KyselyPlugin; count: () => number } {
  let n = 0;
  return {
    plugin: {
      transformQuery(args) {
        if (args.node.kind === "SelectQueryNode" && JSON.stringify(args.node).includes("\"actor_keys\"")) n++;
        return args.node;
      },
      async transformResult(args) {
        return args.result;
      },
    },
    count: () => n,
  };
}

for (const d of dialects) {
  describe(`signing keys are read once for a batch and never after they are replaced, on ${d.name}`, { skip: d.skip }, () => {
    it("64 deliveries of one union claimed together read actor_keys once; a rotated or deleted key is not used after it commits", async () => {
      const tdb = await d.create();
      const { db: raw, close } = tdb.open();
      const clock = keyClock.now;
      try {
        await migrateToLatest(raw);
        const reads = keyReads();
        const db = (raw as unknown as Kysely<DB>).withPlugin(reads.plugin);
        const now = Date.now();
        await db.insertInto("unions").values({ id: "u1", slug: "riders", name: "Riders", purpose: "P", leader_handle: null, icon_url: null, manually_approves_followers: 0, created_at: now } as never).execute();
        const store = async () => {
          const keys = await generateActorKeys();
          // Replaced in one transaction, as a rotation would be.
          await db.transaction().execute(async (trx) => {
            await trx.deleteFrom("actor_keys").where("owner", "=", "union:u1").execute();
            await trx.insertInto("actor_keys").values(keys.map((k) => ({ owner: "union:u1", algorithm: k.algorithm, private_jwk: k.privateJwk, public_jwk: k.publicJwk, created_at: now }))).execute();
          });
          return (JSON.parse(keys[keys[0]!.algorithm === "RSASSA-PKCS1-v1_5" ? 0 : 1]!.privateJwk) as JsonWebKey).n;
        };
        const keyId = "https://muster.example/u/riders#main-key";
        // As main.ts resolves a delivery's key: the union's pairs through keys.ts, the RSA one exported.
        let resolves = 0;
        const rejoiner = new Rejoiner(db, async (id) => {
          resolves++;
          const pairs = await loadUnionKeyPairs(db, "riders");
          return id === keyId && pairs[0] ? await exportJwk(pairs[0].privateKey) : undefined;
        });
        const activity = JSON.stringify({ type: "Accept", id: "https://muster.example/a/1" });
        const payloadId = createHash("sha256").update(activity).digest("hex");
        await db.insertInto("fedify_mq_payloads").values({ id: payloadId, body: activity, created_at: now }).execute();
        const stored = JSON.stringify({ type: "outbox", inbox: "https://peer.example/inbox", keys: [{ keyId }], $payload: payloadId });
        const batch = async () => Promise.all(Array.from({ length: 64 }, () => rejoiner.rejoin(stored))) as Promise<{ keys: { privateKey: JsonWebKey }[] }[]>;

        const first = await store();
        const before = reads.count();
        const messages = await batch();
        assert.equal(reads.count() - before, 1, "one read of actor_keys for the 64 messages");
        assert.equal(resolves, 1, "one resolve for the 64 messages");
        for (const m of messages) assert.equal(m.keys[0]!.privateKey.n, first);
        // Fedify's signed fetch and the Accept ask again a moment later: held.
        await loadUnionKeyPairs(db, "riders");
        await batch();
        assert.equal(reads.count() - before, 1, "held for the next requests");

        // Rotated in this process: not used once the rotation has committed.
        const second = await store();
        assert.notEqual(second, first);
        forgetActorKeys(db);
        for (const m of await batch()) assert.equal(m.keys[0]!.privateKey.n, second, "the rotated key is used at once");
        assert.equal(reads.count() - before, 2);

        // Rotated by another process (no forget): the new key within KEY_TTL_MS.
        const third = await store();
        const t0 = Date.now();
        keyClock.now = () => t0 + KEY_TTL_MS + 1;
        const pairs = await loadUnionKeyPairs(db, "riders");
        assert.equal((await exportJwk(pairs[0]!.privateKey)).n, third, "keys.ts reads again after KEY_TTL_MS");

        // Deleted (the union's keys gone): no delivery is signed with them afterwards.
        await db.deleteFrom("actor_keys").where("owner", "=", "union:u1").execute();
        forgetActorKeys(db);
        assert.deepEqual(await loadUnionKeyPairs(db, "riders"), []);
        await assert.rejects(rejoiner.rejoin(stored), /signing key .* no longer exists/);
        // Not held as missing: keys written again are found by the next message.
        const fourth = await store();
        forgetActorKeys(db);
        const again = await rejoiner.rejoin(stored) as { keys: { privateKey: JsonWebKey }[] };
        assert.equal(again.keys[0]!.privateKey.n, fourth);
      } finally {
        keyClock.now = clock;
        await close();
        await tdb.destroy();
      }
    });
  });
}

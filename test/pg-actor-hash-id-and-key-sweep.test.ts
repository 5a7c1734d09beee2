import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { storedKeyId } from "../federation/kv-public-keys.ts";
import { getRemoteActor, upsertRemoteActor } from "../src/actors/remote-actors.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { dialects } from "./helpers/databases.ts";

// PostgreSQL, storage at 10^6 members (issue 16):
// - migration 0084: remote_actors' id is unique by an exclusion constraint
//   over a hash index instead of a b-tree primary key (110 bytes a member
//   grown by joins, about 40 as a hash); the cached actor's upsert works
//   without ON CONFLICT DO UPDATE, and an upgraded database keeps every actor
//   and key readable;
// - the KV store's purge no longer reads all of remote_actors and
//   fedify_public_keys every minute: a bounded slice of pages each time, by a
//   TID range scan, every page within a few purges.

const postgres = dialects.find((d) => d.name === "postgres")!;
const actorId = (i: number) => `https://social-${i % 97}.example.net/users/member_${i}`;
const actor = (i: number, fetchedAt = 1, sharedInbox = `https://social-${i % 97}.example.net/inbox`) =>
  ({ id: actorId(i), type: "Person" as const, handle: `@member_${i}@social-${i % 97}.example.net`, name: null, inbox: `${actorId(i)}/inbox`, sharedInbox, fetchedAt });
const SEC = "https://w3id.org/security#";
/** A key as Fedify's verifier caches it (see test/kv-public-keys-actor-rows.test.ts). */
function expandedKey(keyId: string): Record<string, unknown> {
  const modulus = randomBytes(256);
  modulus[0] = modulus[0]! | 0x80;
  const body = Buffer.concat([Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex"), modulus, Buffer.from("0203010001", "hex")]).toString("base64");
  const pem = `-----BEGIN PUBLIC KEY-----\n${body.replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----\n`;
  return { "@id": keyId, [`${SEC}owner`]: [{ "@id": keyId.replace(/#.*$/, "") }], [`${SEC}publicKeyPem`]: [{ "@value": pem }] };
}
const count = async (db: Kysely<DB>, query: ReturnType<typeof sql>) => (await (query as ReturnType<typeof sql<{ n: number }>>).execute(db)).rows[0]!.n;

describe("remote_actors' id by a hash exclusion constraint on postgres (0084)", { skip: postgres.skip }, () => {
  it("the id's only index is a hash; the upsert inserts, takes a newer fetch, keeps it against an older one, and a second row of one id is refused", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      const indexes = await sql<{ indexdef: string }>`select indexdef from pg_indexes where tablename = 'remote_actors'`.execute(db);
      assert.deepEqual(indexes.rows.map((r) => r.indexdef.replace(/^.* USING /, "")), ["hash (id)"]);
      await upsertRemoteActor(db, actor(1, 10));
      await upsertRemoteActor(db, actor(1, 20, "https://social-1.example.net/newer-inbox"));
      await upsertRemoteActor(db, actor(1, 15, "https://social-1.example.net/older-inbox"));
      assert.equal((await getRemoteActor(db, actorId(1)))?.sharedInbox, "https://social-1.example.net/newer-inbox");
      assert.equal((await getRemoteActor(db, actorId(1)))?.fetchedAt, 20);
      assert.equal(await count(db, sql`select count(*)::int as n from remote_actors`), 1);
      await assert.rejects(sql`insert into remote_actors (id, type, fetched_at) values (${actorId(1)}, 'Person', 1)`.execute(db), /remote_actors_id/);
      // Two transactions caching one new actor at once: both succeed, one row.
      const a = db.transaction().execute(async (trx) => {
        await upsertRemoteActor(trx, actor(2, 30));
        await new Promise((r) => setTimeout(r, 200));
      });
      await new Promise((r) => setTimeout(r, 50));
      await Promise.all([a, upsertRemoteActor(db, actor(2, 31))]);
      assert.equal(await count(db, sql`select count(*)::int as n from remote_actors where id = ${actorId(2)}`), 1);
      // The fan-out trigger still counts the actor's inbox once.
      assert.equal(await count(db, sql`select count(*)::int as n from remote_actors a where a.id = ${actorId(2)}`), 1);
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("the upgrade of a populated database keeps every actor and cached key readable; down and up again", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      await migrateTo(db, "0079_pg_queue_hot_lease");
      const kv = new KyselyKvStore(db);
      const N = 2000;
      for (let i = 0; i < N; i += 200) {
        await Promise.all(Array.from({ length: 200 }, (_, k) => upsertRemoteActor(db, actor(i + k))));
      }
      const values = new Map<number, Record<string, unknown>>();
      const value = (i: number) => values.get(i) ?? values.set(i, expandedKey(`${actorId(i)}#main-key`)).get(i)!;
      for (let i = 0; i < N; i += 7) await kv.set(["_fedify", "publicKey", `${actorId(i)}#main-key`], value(i));
      const held = await count(db, sql`select count(*)::int as n from remote_actors where key is not null`);
      assert.equal(held, Math.ceil(N / 7));
      await migrateToLatest(db);
      const constraint = await sql<{ def: string }>`select pg_get_constraintdef(oid) as def from pg_constraint where conrelid = 'remote_actors'::regclass`.execute(db);
      assert.deepEqual(constraint.rows.map((r) => r.def), ["EXCLUDE USING hash (id WITH =)"]);
      for (let i = 0; i < N; i++) assert.equal((await getRemoteActor(db, actorId(i)))?.handle, `@member_${i}@social-${i % 97}.example.net`);
      const fresh = new KyselyKvStore(db);
      for (let i = 0; i < N; i += 7) assert.deepEqual(await fresh.get(["_fedify", "publicKey", `${actorId(i)}#main-key`]), value(i));
      assert.equal(await count(db, sql`select count(*)::int as n from remote_actors where key is not null`), held);
      // Down restores the b-tree key; up again.
      await migrateTo(db, "0079_pg_queue_hot_lease");
      assert.match((await sql<{ d: string }>`select indexdef as d from pg_indexes where indexname = 'remote_actors_pkey'`.execute(db)).rows[0]!.d, /btree \(id\)/);
      await migrateToLatest(db);
      for (let i = 0; i < N; i += 7) assert.deepEqual(await fresh.get(["_fedify", "publicKey", `${actorId(i)}#main-key`]), value(i));
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

describe("the KV store's purge of expired keys on postgres: bounded slices, no sequential scan", { skip: postgres.skip }, () => {
  it("each purge reads a slice of remote_actors and fedify_public_keys by TID range; every expired key goes within a few purges, live ones stay", async (t) => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      const realNow = Date.now();
      // 30,000 actors with a 256-byte key each (about 1,400 pages, more than a purge's slice of 1,024): every other one expired.
      await sql`insert into remote_actors (id, type, handle, inbox, shared_inbox, fetched_at, key_expires_at, key_form, key)
        select 'https://social-' || (g % 97) || '.example.net/users/member_' || g, 'Person', '', '', '/inbox', 1,
          case when g % 2 = 0 then 1 else ${realNow + 10 * 86400_000}::bigint end, 2, decode(repeat(md5(g::text), 16), 'hex')
        from generate_series(0, 29999) g`.execute(db);
      // Keys of strangers without rows (fedify_public_keys), half expired.
      await sql`insert into fedify_public_keys (key_id, owner, key, form, expires_at)
        select 'astranger-' || g || '.example/users/x#main-key', null, decode(repeat(md5(g::text), 16), 'hex'), 2,
          case when g % 2 = 0 then 1 else ${realNow + 10 * 86400_000}::bigint end
        from generate_series(0, 5999) g`.execute(db);
      await sql`analyze remote_actors, fedify_public_keys`.execute(db);
      const pages = await count(db, sql`select (pg_relation_size('remote_actors') / 8192)::int as n`);
      assert.ok(pages > 1100, `remote_actors has ${pages} pages`);
      const expired = () => count(db, sql`select count(*)::int as n from remote_actors where key_expires_at <= ${realNow}`);
      const expiredStrangers = () => count(db, sql`select count(*)::int as n from fedify_public_keys where expires_at <= ${realNow}`);

      t.mock.timers.enable({ apis: ["Date"], now: realNow });
      const kv = new KyselyKvStore(db);
      // The first write purges (in a transaction, so that its scans are counted for it alone).
      const scans = await db.transaction().execute(async (trx) => {
        await new KyselyKvStore(trx).set(["test", "purge", "0"], 1);
        return (await sql<{ relname: string; seq_scan: string }>`select relname, seq_scan from pg_stat_xact_user_tables
          where relname in ('remote_actors', 'fedify_public_keys') order by relname`.execute(trx)).rows.map((r) => `${r.relname} ${r.seq_scan}`);
      });
      assert.deepEqual(scans, ["fedify_public_keys 0", "remote_actors 0"], "sequential scans by the purge");
      const left = await expired();
      assert.ok(left > 0 && left < 15_000, `a slice, not the whole table: ${left} of 15,000 expired keys left`);
      for (let purge = 1; purge <= 3; purge++) {
        t.mock.timers.tick(61_000);
        await kv.set(["test", "purge", String(purge)], 1);
      }
      assert.equal(await expired(), 0, "every expired key in an actor's row cleared within four purges");
      assert.equal(await expiredStrangers(), 0, "every expired stranger's key deleted");
      assert.equal(await count(db, sql`select count(*)::int as n from remote_actors where key is not null`), 15_000, "live keys kept");
      assert.equal(await count(db, sql`select count(*)::int as n from fedify_public_keys`), 3000, "live strangers' keys kept");
      assert.equal(await count(db, sql`select count(*)::int as n from remote_actors`), 30_000, "no actor row removed");
      // The plan of the purge's statement: a TID range scan.
      const plan = (await sql<{ "QUERY PLAN": string }>`explain update remote_actors set key = null where key_expires_at <= 1
        and ctid >= (select '(0,0)'::tid) and ctid < (select '(1024,0)'::tid)`.execute(db)).rows.map((r) => r["QUERY PLAN"]).join("\n");
      assert.match(plan, /Tid Range Scan on remote_actors/);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

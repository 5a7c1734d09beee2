import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import type { KvKey } from "@fedify/fedify";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { upsertRemoteActor } from "../src/actors/remote-actors.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { dialects } from "./helpers/databases.ts";

// Migration 0075 (PostgreSQL): an actor's cached "#main-key" lives in its
// remote_actors row, not in a fedify_public_keys row of its own (storage at
// 10^6 members, issue 16). Read, rotated, deleted, expired and listed through
// the KV store as before; a key cached before the actor's row exists is taken
// in by the row's insert; keys already cached move across on upgrade.

const postgres = dialects.find((d) => d.name === "postgres")!;
const SEC = "https://w3id.org/security#";
const HEAD = Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex");
const TAIL = Buffer.from("0203010001", "hex");

function expandedKey(keyId: string, owner = keyId.replace(/#.*$/, "")): Record<string, unknown> {
  const modulus = randomBytes(256);
  modulus[0] = modulus[0]! | 0x80;
  const body = Buffer.concat([HEAD, modulus, TAIL]).toString("base64");
  const pem = `-----BEGIN PUBLIC KEY-----\n${body.replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----\n`;
  return { "@id": keyId, [`${SEC}owner`]: [{ "@id": owner }], [`${SEC}publicKeyPem`]: [{ "@value": pem }] };
}
const actorId = (i: number) => `https://social-${i}.example.net/users/member_${i}`;
const keyOf = (i: number): KvKey => ["_fedify", "publicKey", `${actorId(i)}#main-key`];
const actor = (i: number, fetchedAt = 1) => ({ id: actorId(i), type: "Person" as const, handle: `@member_${i}@social-${i}.example.net`, name: null, inbox: `${actorId(i)}/inbox`, sharedInbox: `https://social-${i}.example.net/inbox`, fetchedAt });

async function inRow(db: Kysely<DB>, i: number): Promise<boolean> {
  return (await sql<{ n: number }>`select count(*)::int as n from remote_actors where id = ${actorId(i)} and key is not null`.execute(db)).rows[0]!.n === 1;
}
async function inTable(db: Kysely<DB>, i: number): Promise<boolean> {
  return (await sql<{ n: number }>`select count(*)::int as n from fedify_public_keys where key_id = ${`a${actorId(i).slice(8)}`}`.execute(db)).rows[0]!.n === 1;
}
const same = async (kv: KyselyKvStore, key: KvKey, value: unknown) => assert.equal(JSON.stringify(await kv.get(key)), JSON.stringify(value));

describe("cached keys in their actors' rows on postgres (0075)", { skip: postgres.skip }, () => {
  it("a key is stored in its actor's row, read back, rotated, taken in by a later insert, listed, expired and deleted", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      const kv = new KyselyKvStore(db);
      // The row exists: the key goes into it.
      await upsertRemoteActor(db, actor(1));
      const v1 = expandedKey(keyOf(1)[2] as string);
      await kv.set(keyOf(1), v1);
      assert.ok(await inRow(db, 1));
      assert.ok(!(await inTable(db, 1)));
      await same(kv, keyOf(1), v1);
      // Rotated: the new key replaces it, in the row.
      const v1b = expandedKey(keyOf(1)[2] as string);
      await kv.set(keyOf(1), v1b);
      await same(kv, keyOf(1), v1b);
      assert.equal((await sql<{ n: number }>`select count(*)::int as n from fedify_public_keys`.execute(db)).rows[0]!.n, 0);
      // A refetch of the actor (the upsert's update) keeps the key.
      await upsertRemoteActor(db, actor(1, 2));
      await same(kv, keyOf(1), v1b);

      // No row yet: the key waits in fedify_public_keys; the row's insert takes it in.
      const v2 = expandedKey(keyOf(2)[2] as string);
      await kv.set(keyOf(2), v2);
      assert.ok(await inTable(db, 2));
      await same(kv, keyOf(2), v2);
      await upsertRemoteActor(db, actor(2));
      assert.ok(await inRow(db, 2));
      assert.ok(!(await inTable(db, 2)));
      await same(kv, keyOf(2), v2);

      // A key another actor owns cannot live in the row: it goes to the table and the row's key is dropped.
      const other = expandedKey(keyOf(1)[2] as string, "https://social-1.example.net/actor");
      await kv.set(keyOf(1), other);
      assert.ok(!(await inRow(db, 1)));
      await same(kv, keyOf(1), other);
      await kv.set(keyOf(1), v1);
      assert.ok(await inRow(db, 1));
      assert.ok(!(await inTable(db, 1)));
      await same(kv, keyOf(1), v1);

      // Listed with the rest.
      const listed = new Map<string, unknown>();
      for await (const e of kv.list(["_fedify", "publicKey"])) listed.set(JSON.stringify(e.key), e.value);
      assert.equal(listed.size, 2);
      assert.equal(JSON.stringify(listed.get(JSON.stringify(keyOf(2)))), JSON.stringify(v2));
      const one = [];
      for await (const e of kv.list(keyOf(1))) one.push(e);
      assert.equal(one.length, 1);
      assert.equal(JSON.stringify(one[0]!.value), JSON.stringify(v1));

      // Deleted, and expired.
      await kv.delete(keyOf(1));
      assert.equal(await kv.get(keyOf(1)), undefined);
      assert.ok(!(await inRow(db, 1)));
      await sql`update remote_actors set key_expires_at = 1 where id = ${actorId(2)}`.execute(db);
      assert.equal(await kv.get(keyOf(2)), undefined);
      assert.ok(!(await inRow(db, 2)));
      // The actors' rows themselves are untouched.
      assert.equal((await sql<{ n: number }>`select count(*)::int as n from remote_actors`.execute(db)).rows[0]!.n, 2);
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("the upgrade leaves remote_actors as compact as a copy of its rows (no room kept for the versions the key move replaced)", async () => {
    // 0075's up updates every row that takes a key, then rewrites the table. A CLUSTER there (in the transaction that
    // updated the rows) copied the replaced versions too: a third more pages for good (16 rows a page instead of 21).
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      await migrateTo(db, "0074_pg_member_actor_hash");
      await sql`insert into remote_actors (id, type, handle, name, inbox, shared_inbox, fetched_at)
        select 'https://social-' || g || '.example.net/users/member_' || g, 'Person', '@member_' || g || '@social-' || g || '.example.net', null,
          'https://social-' || g || '.example.net/users/member_' || g || '/inbox', 'https://social-' || g || '.example.net/inbox', 1
        from generate_series(1, 3000) g`.execute(db);
      await sql`insert into fedify_public_keys (key_id, owner, key, form, expires_at)
        select 'asocial-' || g || '.example.net/users/member_' || g, null, decode(repeat(md5(g::text), 16), 'hex'), 1, 4102444800000
        from generate_series(1, 3000) g`.execute(db);
      await migrateToLatest(db);
      assert.equal((await sql<{ n: number }>`select count(*)::int as n from remote_actors where key is not null`.execute(db)).rows[0]!.n, 3000);
      // A copy holds the same rows without the dropped columns (0046's, all null: the rows' null bitmap, which a null
      // name needs as much, is the same size) packed as tightly as a fresh table holds them.
      await sql`create table remote_actors_copy as select * from remote_actors`.execute(db);
      const pages = (await sql<{ t: string; c: string }>`select pg_relation_size('remote_actors') / 8192 as t, pg_relation_size('remote_actors_copy') / 8192 as c`.execute(db)).rows[0]!;
      assert.ok(Number(pages.t) <= Number(pages.c) + 1, `remote_actors ${pages.t} pages, a copy of its rows ${pages.c}`);
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("the upgrade moves keys already cached into their actors' rows; every key still reads back; down moves them back", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      await migrateTo(db, "0074_pg_member_actor_hash");
      // At 0074 the store of today would write into rows: write as it did then, straight into fedify_public_keys.
      const values = new Map<number, Record<string, unknown>>();
      for (let i = 0; i < 6; i++) {
        if (i < 4) await upsertRemoteActor(db, actor(i));
        values.set(i, expandedKey(keyOf(i)[2] as string, i === 3 ? "https://social-3.example.net/actor" : undefined));
      }
      // Keys in the store's compact form, through a store on a database without the columns (its statements for
      // "#main-key" ids name them): written by hand as 0064/0067 laid them out.
      const { compactKey, storedKeyId } = await import("../federation/kv-public-keys.ts");
      for (const [i, v] of values) {
        const c = compactKey(keyOf(i)[2] as string, JSON.stringify(v))!;
        await db.insertInto("fedify_public_keys").values({ key_id: storedKeyId(keyOf(i)[2] as string), owner: c.owner, key: c.key, form: c.form, expires_at: Date.now() + 3600_000 }).execute();
      }
      await migrateToLatest(db);
      // fedify_public_keys was rebuilt with the keys left: the same hash constraint, under its name.
      const indexes = await sql<{ indexname: string; indexdef: string }>`select indexname, indexdef from pg_indexes where tablename = 'fedify_public_keys'`.execute(db);
      assert.deepEqual(indexes.rows.map((r) => r.indexname), ["fedify_public_keys_key_id"]);
      assert.match(indexes.rows[0]!.indexdef, /USING hash \(key_id\)/);
      const kv = new KyselyKvStore(db);
      for (const [i, v] of values) await same(kv, keyOf(i), v);
      for (const i of [0, 1, 2]) {
        assert.ok(await inRow(db, i), `key ${i} in its row`);
        assert.ok(!(await inTable(db, i)));
      }
      assert.ok(!(await inRow(db, 3)) && (await inTable(db, 3)), "owned by another: stays");
      assert.ok(await inTable(db, 4) && await inTable(db, 5), "no row: stays until one is inserted");
      await upsertRemoteActor(db, actor(4));
      assert.ok(await inRow(db, 4));
      await same(kv, keyOf(4), values.get(4));

      await migrateTo(db, "0074_pg_member_actor_hash");
      assert.equal((await sql<{ n: number }>`select count(*)::int as n from fedify_public_keys`.execute(db)).rows[0]!.n, 6);
      await migrateToLatest(db);
      for (const [i, v] of values) await same(kv, keyOf(i), v);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

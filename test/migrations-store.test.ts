import { randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import type { KvKey } from "@fedify/fedify";
import { seedMembers } from "../bench/storage.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { generateActorKeys } from "../federation/keys.ts";
import { getRemoteActor, upsertRemoteActor, deleteRemoteActor } from "../src/actors/remote-actors.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";

// Storage at a million members (issue 16), migration 0066: SQLite's
// remote_actors is a WITHOUT ROWID table, so the actor URL is stored once
// (the row lives in the primary key's b-tree) instead of in the row and again
// in sqlite_autoindex_remote_actors_1.

const sqlite = dialects.find((d) => d.name === "sqlite")!;

/** The migration before 0066, whichever it is (another branch may add 0065). */
const PREVIOUS = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < "0066").sort().at(-1)!.replace(/\.ts$/, "");

async function withoutRowid(db: Kysely<any>): Promise<boolean> {
  const r = await sql<{ sql: string }>`select sql from sqlite_schema where type = 'table' and name = 'remote_actors'`.execute(db);
  return /without rowid\s*$/i.test(r.rows[0]!.sql);
}

async function triggerNames(db: Kysely<any>): Promise<string[]> {
  const r = await sql<{ name: string }>`select name from sqlite_schema where type = 'trigger' order by name`.execute(db);
  return r.rows.map((t) => t.name);
}

async function targets(db: Kysely<DB>) {
  return (await db.selectFrom("fanout_targets").select(["union_id", "inbox", "members", "shared"]).orderBy("union_id").orderBy("inbox").execute())
    .map((t) => ({ ...t, members: Number(t.members), shared: Number(t.shared) }));
}

describe("remote_actors storage on sqlite (0066)", () => {
  it("the migration keeps every actor, the fan-out triggers and their effect, and down brings the rowid table back", async () => {
    const tdb = await sqlite.create();
    const { db, close } = tdb.open();
    try {
      await migrateTo(db, PREVIOUS);
      const before = await triggerNames(db);
      const union = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "m", name: "M", purpose: "p" });
      // Real rows: actors with the stored forms of their inboxes, and members whose triggers count fan-out targets.
      const actors = Array.from({ length: 50 }, (_, i) => ({
        id: `https://s${i % 7}.example/users/u${i}`, type: "Person" as const, handle: `@u${i}@s${i % 7}.example`, name: null,
        inbox: `https://s${i % 7}.example/users/u${i}/inbox`, sharedInbox: i % 3 === 0 ? null : `https://s${i % 7}.example/inbox`, fetchedAt: 1_000 + i,
      }));
      for (const a of actors) await upsertRemoteActor(db, a);
      // A Group with a name and an inbox on another origin, stored as it came.
      await upsertRemoteActor(db, { id: "https://g.example/groups/x", type: "Group", handle: null, name: "Allies", inbox: "https://other.example/in", sharedInbox: null, fetchedAt: 5 });
      for (const [i, a] of actors.entries()) {
        await db.insertInto("members").values({ id: `m${String(i).padStart(3, "0")}`, union_id: union.id, actor_id: a.id, handle: a.handle, state: "active", role: "member", subtree_size: 0, joined_at: i, created_at: i } as never).execute();
      }
      const rowsBefore = await db.selectFrom("remote_actors").selectAll().orderBy("id").execute();
      const targetsBefore = await targets(db);
      assert.ok(targetsBefore.length > 7);
      assert.equal(await withoutRowid(db), false);

      await migrateTo(db, "0066_remote_actors_without_rowid");
      assert.equal(await withoutRowid(db), true);
      assert.deepEqual(await db.selectFrom("remote_actors").selectAll().orderBy("id").execute(), rowsBefore);
      assert.deepEqual(await triggerNames(db), before);
      const indexes = await sql<{ name: string }>`select name from sqlite_schema where type = 'index' and tbl_name = 'remote_actors'`.execute(db);
      assert.deepEqual(indexes.rows.map((r) => r.name), [], "the primary key is the table itself: no autoindex");
      // A read by id is the table's own key.
      const plan = await sql<{ detail: string }>`explain query plan select * from remote_actors where id = ${actors[0]!.id}`.execute(db);
      assert.match(plan.rows.map((r) => r.detail).join("\n"), /SEARCH remote_actors USING PRIMARY KEY \(id=\?\)/);
      // So is the fan-out's join from each member to its actor (src/members/roster.ts deliveryRecipients).
      const joined = await sql<{ detail: string }>`explain query plan select m.id, m.actor_id, a.inbox, a.shared_inbox from members m left join remote_actors a on a.id = m.actor_id
        where m.union_id = ${union.id} and m.state = 'active' and m.actor_id is not null and m.id > ${"m010"} order by m.id limit 10`.execute(db);
      assert.match(joined.rows.map((r) => r.detail).join("\n"), /SEARCH a USING PRIMARY KEY \(id=\?\)/);
      assert.deepEqual(await targets(db), targetsBefore);

      // The triggers still keep fanout_targets: an actor whose shared inbox moves, one deleted, one added.
      await upsertRemoteActor(db, { ...actors[1]!, sharedInbox: "https://s1.example/inbox2", fetchedAt: 9_999 });
      assert.ok((await targets(db)).some((t) => t.inbox === "https://s1.example/inbox2" && t.members === 1));
      await deleteRemoteActor(db, actors[0]!.id);
      assert.ok(!(await targets(db)).some((t) => t.inbox === `${actors[0]!.id}/inbox`));
      await upsertRemoteActor(db, actors[0]!);
      assert.ok((await targets(db)).some((t) => t.inbox === `${actors[0]!.id}/inbox` && t.members === 1));
      assert.deepEqual(await getRemoteActor(db, actors[2]!.id), { ...actors[2]!, name: null });
      // The primary key still refuses a second row of an id.
      await assert.rejects(sql`insert into remote_actors (id, type, fetched_at) values (${actors[2]!.id}, 'Person', 1)`.execute(db), /UNIQUE/);
      const rowsAfter = await db.selectFrom("remote_actors").selectAll().orderBy("id").execute();
      const targetsAfter = await targets(db);

      await migrateTo(db, PREVIOUS);
      assert.equal(await withoutRowid(db), false);
      assert.deepEqual(await db.selectFrom("remote_actors").selectAll().orderBy("id").execute(), rowsAfter);
      assert.deepEqual(await triggerNames(db), before);
      assert.deepEqual(await targets(db), targetsAfter);
      await deleteRemoteActor(db, actors[3]!.id);
      assert.ok(!(await targets(db)).some((t) => t.inbox === `${actors[3]!.id}/inbox`));

      await migrateToLatest(db);
      assert.equal(await withoutRowid(db), true);
      assert.equal((await db.selectFrom("remote_actors").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n, 50);
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("a member's cached actor costs under 110 bytes (it was 145: the row and the primary key's index)", async () => {
    const tdb = await sqlite.create();
    const { db, close } = tdb.open();
    try {
      const union = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "b", name: "B", purpose: "p" });
      const n = 10_000;
      // What a join leaves per member, shaped from a real Mastodon actor (bench/storage.ts).
      await seedMembers(db, union.id, n, "test");
      await sql`pragma wal_checkpoint(TRUNCATE)`.execute(db);
      const bytes = Number((await sql<{ b: number }>`select coalesce(sum(pgsize), 0) as b from dbstat where name = 'remote_actors' or name like 'sqlite_autoindex_remote_actors%'`.execute(db)).rows[0]!.b);
      assert.ok(bytes / n < 110, `${(bytes / n).toFixed(1)} bytes per member in remote_actors`);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

// Migration 0067, PostgreSQL: fedify_public_keys keeps its key ids unique by
// an exclusion constraint over a hash index (4 bytes a key) instead of a
// btree primary key that repeated every key id, with its columns laid out for
// alignment.

const postgres = dialects.find((d) => d.name === "postgres")!;
const SEC = "https://w3id.org/security#";
const RSA2048_SPKI_HEAD = Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex");
const RSA2048_SPKI_TAIL = Buffer.from("0203010001", "hex");

/** What Fedify's verifier caches for a Mastodon actor's key (the key's node of the expanded document). */
function expandedKey(keyId: string): Record<string, unknown> {
  const modulus = randomBytes(256);
  modulus[0] = modulus[0]! | 0x80;
  const body = Buffer.concat([RSA2048_SPKI_HEAD, modulus, RSA2048_SPKI_TAIL]).toString("base64");
  const pem = `-----BEGIN PUBLIC KEY-----\n${body.replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----\n`;
  return { "@id": keyId, [`${SEC}owner`]: [{ "@id": keyId.replace(/#.*$/, "") }], [`${SEC}publicKeyPem`]: [{ "@value": pem }] };
}

const keyOf = (i: number): KvKey => ["_fedify", "publicKey", `https://social-${i % 50}.example.net/users/member_${i.toString(36)}#main-key`];
/**
 * For a test that runs today's store at 0066/0067: key ids not of the "…#main-key" shape, whose statements name
 * none of the columns 0075 adds to remote_actors (a "#main-key" key's do, on PostgreSQL).
 */
const oldKeyOf = (i: number): KvKey => ["_fedify", "publicKey", `https://social-${i % 50}.example.net/users/member_${i.toString(36)}#key`];

/** The plan PostgreSQL picks when a scan of the table costs more than it does with a few rows (as at a million). */
async function plan(db: Kysely<any>, query: ReturnType<typeof sql>): Promise<string> {
  return db.transaction().execute(async (trx) => {
    await sql`set local enable_seqscan = off`.execute(trx);
    const r = await sql<{ "QUERY PLAN": string }>`explain ${query}`.execute(trx);
    return r.rows.map((x) => x["QUERY PLAN"]).join("\n");
  });
}

describe("fedify_public_keys storage on postgres (0067)", { skip: postgres.skip }, () => {
  it("the migration keeps every key, reads and deletes by key id through the hash index, one row a key id; down brings the primary key back", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      await migrateTo(db, "0066_remote_actors_without_rowid");
      // Today's store purges expired keys from remote_actors too (0075): its columns, by hand, until 0075 runs.
      const keyColumns = (add: boolean) => add
        ? sql`alter table remote_actors add column key_expires_at bigint, add column key_form smallint, add column key bytea`.execute(db)
        : sql`alter table remote_actors drop column key_expires_at, drop column key_form, drop column key`.execute(db);
      await keyColumns(true);
      const kv = new KyselyKvStore(db);
      const values = Array.from({ length: 40 }, (_, i) => expandedKey(oldKeyOf(i)[2] as string));
      for (let i = 0; i < 40; i++) await kv.set(oldKeyOf(i), values[i]);
      const rows = async () => (await db.selectFrom("fedify_public_keys").selectAll().orderBy("key_id").execute()).map((r) => ({ ...r, key: Buffer.from(r.key).toString("hex"), expires_at: Number(r.expires_at), form: Number(r.form) }));
      const before = await rows();
      assert.equal(before.length, 40);

      await migrateTo(db, "0067_pg_public_keys_hash");
      assert.deepEqual(await rows(), before);
      const columns = await sql<{ attname: string }>`select attname from pg_attribute where attrelid = 'fedify_public_keys'::regclass and attnum > 0 and not attisdropped order by attnum`.execute(db);
      assert.deepEqual(columns.rows.map((c) => c.attname), ["expires_at", "form", "key_id", "owner", "key"]);
      const indexes = await sql<{ indexname: string; indexdef: string }>`select indexname, indexdef from pg_indexes where tablename = 'fedify_public_keys'`.execute(db);
      assert.deepEqual(indexes.rows.map((r) => r.indexname), ["fedify_public_keys_key_id"]);
      assert.match(indexes.rows[0]!.indexdef, /USING hash \(key_id\)/);
      // Every read and delete by key id (the store's statements) is served by the index.
      assert.match(await plan(db, sql`select owner, key, form, expires_at from fedify_public_keys where key_id = ${"bsocial-1.example.net/users/member_1#key"}`), /Index Scan (using|on) fedify_public_keys_key_id/);
      assert.match(await plan(db, sql`delete from fedify_public_keys where key_id = ${"bsocial-1.example.net/users/member_1#key"}`), /Index Scan (using|on) fedify_public_keys_key_id/);
      for (let i = 0; i < 40; i += 7) assert.equal(JSON.stringify(await kv.get(oldKeyOf(i))), JSON.stringify(values[i]));

      // Rewriting a key replaces its row (the delete-and-insert statement): the new value reads back, still one row.
      const rotated = expandedKey(oldKeyOf(3)[2] as string);
      await kv.set(oldKeyOf(3), rotated);
      await kv.set(oldKeyOf(3), rotated);
      assert.equal(JSON.stringify(await kv.get(oldKeyOf(3))), JSON.stringify(rotated));
      assert.equal((await db.selectFrom("fedify_public_keys").select("key_id").where("key_id", "=", "bsocial-3.example.net/users/member_3#key").execute()).length, 1);
      // Writers of one key at once, each in its own transaction: no error, one row, one of the values written.
      const again = Array.from({ length: 6 }, () => expandedKey(oldKeyOf(5)[2] as string));
      const second = tdb.open();
      try {
        await Promise.all(again.map((v, i) => (i % 2 ? second.db : db).transaction().execute((trx) => new KyselyKvStore(trx).set(oldKeyOf(5), v))));
      } finally {
        await second.close();
      }
      assert.equal((await db.selectFrom("fedify_public_keys").select("key_id").where("key_id", "=", "bsocial-5.example.net/users/member_5#key").execute()).length, 1);
      const read = JSON.stringify(await kv.get(oldKeyOf(5)));
      assert.ok(again.some((v) => JSON.stringify(v) === read), "one of the values written");
      // A second row of a key id is refused by the constraint.
      await assert.rejects(sql`insert into fedify_public_keys (key_id, key, form, expires_at) values (${"bsocial-1.example.net/users/member_1#key"}, ${Buffer.alloc(3)}, 1, 1)`.execute(db), /exclusion constraint/);
      await kv.delete(oldKeyOf(1));
      assert.equal(await kv.get(oldKeyOf(1)), undefined);
      const after = await rows();
      assert.equal(after.length, 39);

      await migrateTo(db, "0066_remote_actors_without_rowid");
      assert.deepEqual(await rows(), after);
      const pk = await sql<{ indexname: string; indexdef: string }>`select indexname, indexdef from pg_indexes where tablename = 'fedify_public_keys'`.execute(db);
      assert.deepEqual(pk.rows.map((r) => r.indexname), ["fedify_public_keys_pkey"]);
      // The old store's statement (ON CONFLICT (key_id)) works on the old table again.
      await sql`insert into fedify_public_keys (key_id, owner, key, form, expires_at) values (${"bsocial-2.example.net/users/member_2#key"}, null, ${Buffer.alloc(3)}, 1, 1)
        on conflict (key_id) do update set key = excluded.key`.execute(db);
      await keyColumns(false);
      await migrateToLatest(db);
      assert.equal((await rows()).length, 39);
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("a member's cached key costs under 425 bytes (it was 449: the row and the key id again in the primary key)", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      const n = 10_000;
      const size = async () => Number((await sql<{ b: string }>`select pg_total_relation_size('fedify_public_keys') as b`.execute(db)).rows[0]!.b);
      const before = await size();
      await db.transaction().execute(async (trx) => {
        const kv = new KyselyKvStore(trx);
        for (let i = 0; i < n; i++) {
          const key: KvKey = ["_fedify", "publicKey", `https://social-${i % 2000}.example.net/users/member_${i.toString(36)}#main-key`];
          await kv.set(key, expandedKey(key[2] as string));
        }
      });
      await sql`vacuum analyze fedify_public_keys`.execute(db);
      const perKey = (await size() - before) / n;
      assert.ok(perKey < 425, `${perKey.toFixed(1)} bytes per cached key`);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

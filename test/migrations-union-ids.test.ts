import { randomUUID } from "node:crypto";
import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { seedMembers } from "../bench/storage.ts";
import { generateActorKeys } from "../federation/keys.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { findMemberByActor } from "../src/members/members.ts";
import { deliveryRecipients } from "../src/members/roster.ts";
import { createUnion, getUnionBySlug } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";

// Storage at a million members (issue 16), migration 0069: a union made before
// 13-character union ids keeps a 36-character UUID that every member row and
// four of its indexes repeat. The migration gives it a 13-character id,
// everywhere the database names it, and down gives the UUID back.

const MIGRATION = readdirSync(new URL("../migrations/", import.meta.url)).find((f) => f.startsWith("0069_"))?.replace(/\.ts$/, "") ?? "0069_short_union_ids";
/** The migration before 0069, whichever it is (another branch may add 0068). */
const PREVIOUS = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < "0069").sort().at(-1)!.replace(/\.ts$/, "");

/** A union as one made before 13-character ids is: its row and key pair under a UUID, its leader, `n` members. */
async function oldUnion(db: Kysely<DB>, slug: string, n: number, origin: (i: number) => string): Promise<string> {
  const made = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: `${slug}-made`, name: slug, purpose: "p", leaderHandle: `@lead@${slug}.example` });
  const row = await db.selectFrom("unions").selectAll().where("id", "=", made.id).executeTakeFirstOrThrow();
  const id = randomUUID();
  await db.insertInto("unions").values({ ...row, id, slug }).execute();
  const key = await db.selectFrom("actor_keys").selectAll().where("owner", "=", `union:${made.id}`).executeTakeFirstOrThrow();
  await db.insertInto("actor_keys").values({ ...key, owner: `union:${id}` }).execute();
  const leader = await db.selectFrom("members").selectAll().where("union_id", "=", made.id).where("role", "=", "leader").executeTakeFirstOrThrow();
  await db.insertInto("members").values({ ...leader, id: `${leader.id.slice(0, -2)}zz`, union_id: id }).execute();
  await seedFollowers(db, id, n, (i) => ({ origin: origin(i), shared: i % 3 !== 0 }));
  return id;
}

/** Rows elsewhere that name a union: an invite, a session, a queued intent with its ordering key, a job and a rate-limit bucket. */
async function around(db: Kysely<DB>, unionId: string, tag: string): Promise<void> {
  const member = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "member").orderBy("id").limit(1).executeTakeFirstOrThrow();
  await db.insertInto("invites").values({ id: `inv-${tag}`, union_id: unionId, code: `code-${tag}`, created_by: member.id, max_uses: 3, uses: 0, expires_at: null, revoked_at: null, created_at: 1, welcome: 1 } as never).execute();
  await db.insertInto("sessions").values({ id: `ses-${tag}`, token_hash: `h-${tag}`, union_id: unionId, member_id: member.id, created_at: 1, expires_at: 9e12, revoked_at: null }).execute();
  await db.insertInto("fedify_mq").values({ queue: "outbox", message: JSON.stringify({ kind: "treasury.spend", unionId, proposalId: "p1" }), ordering_key: `treasury:${unionId}`, available_at: 1, attempts: 0, created_at: 1, dedupe_key: null, payload: null } as never).execute();
  await db.insertInto("job_leases").values({ name: `dues:${unionId}:Addr${tag}`, holder: "w1", expires_at: 5 } as never).execute();
  await db.insertInto("rate_limit_hits").values({ id: `rl-${tag}`, bucket: `partner-check:${unionId}`, at: 7 } as never).execute();
}

/** Everything in the tables above, with `unionId` written as "U" (so a union's rows compare across a change of id). */
async function snapshot(db: Kysely<DB>, unionId: string): Promise<unknown> {
  const norm = (v: unknown) => JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? Number(x) : x)).split(unionId).join("U"));
  const { id: _id, ...union } = await db.selectFrom("unions").selectAll().where("id", "=", unionId).executeTakeFirstOrThrow();
  return norm({
    union,
    members: await db.selectFrom("members").selectAll().where("union_id", "=", unionId).orderBy("id").execute(),
    targets: (await db.selectFrom("fanout_targets").select(["union_id", "inbox", "members", "shared"]).where("union_id", "=", unionId).orderBy("inbox").execute()).map((t) => ({ ...t, members: Number(t.members), shared: Number(t.shared) })),
    key: await db.selectFrom("actor_keys").selectAll().where("owner", "=", `union:${unionId}`).execute(),
    invites: await db.selectFrom("invites").selectAll().where("union_id", "=", unionId).execute(),
    sessions: await db.selectFrom("sessions").selectAll().where("union_id", "=", unionId).execute(),
    queue: (await db.selectFrom("fedify_mq").select(["message", "ordering_key"]).where("ordering_key", "=", `treasury:${unionId}`).execute()),
    jobs: await db.selectFrom("job_leases").selectAll().where("name", "like", `dues:${unionId}:%`).execute(),
    buckets: await db.selectFrom("rate_limit_hits").selectAll().where("bucket", "=", `partner-check:${unionId}`).execute(),
  });
}

/** Every table and text column where `text` occurs (from the catalog: a table added later is searched too). */
async function occurrences(db: Kysely<DB>, dialect: string, text: string): Promise<string[]> {
  const columns = dialect === "postgres"
    ? (await sql<{ t: string; c: string }>`select c.table_name as t, c.column_name as c from information_schema.columns c join information_schema.tables t using (table_schema, table_name)
        where c.table_schema = current_schema() and t.table_type = 'BASE TABLE' and c.data_type in ('text', 'character varying')`.execute(db)).rows
    : (await sql<{ t: string; c: string }>`select m.name as t, p.name as c from sqlite_schema m join pragma_table_info(m.name) p where m.type = 'table' and m.name not like 'sqlite_%'`.execute(db)).rows;
  const found: string[] = [];
  for (const { t, c } of columns) {
    if (t === "union_rekeys") continue;
    const r = await sql<{ n: number }>`select 1 as n from ${sql.id(t)} where cast(${sql.id(c)} as text) like ${`%${text}%`} limit 1`.execute(db);
    if (r.rows.length > 0) found.push(`${t}.${c}`);
  }
  return found;
}

/** Every trigger's definition, as the database gives it back. */
async function triggers(db: Kysely<DB>, dialect: string): Promise<string[]> {
  const r = dialect === "postgres"
    ? await sql<{ def: string }>`select pg_get_triggerdef(oid) || ' ' || tgenabled::text as def from pg_trigger where not tgisinternal order by 1`.execute(db)
    : await sql<{ def: string }>`select sql as def from sqlite_schema where type = 'trigger' order by 1`.execute(db);
  return r.rows.map((x) => x.def);
}

for (const d of dialects) {
  describe(`short union ids on ${d.name} (0069)`, { skip: d.skip }, () => {
    it("an old union gets a 13-character id everywhere the database names it, its members and fan-out keep working; a new union is untouched; down gives the UUID back", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        await migrateTo(db, PREVIOUS);
        const old = await oldUnion(db, "old", 120, (i) => `https://s${i % 9}.example`);
        await around(db, old, "o");
        const fresh = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "fresh", name: "Fresh", purpose: "p", leaderHandle: "@lead@fresh.example" });
        await seedFollowers(db, fresh.id, 30, (i) => ({ origin: `https://f${i % 4}.example`, shared: true }));
        await around(db, fresh.id, "f");
        const before = await snapshot(db, old);
        const freshBefore = await snapshot(db, fresh.id);
        const recipientsBefore = await deliveryRecipients(db, old, "", 500);
        const triggersBefore = await triggers(db, d.name);

        await migrateTo(db, MIGRATION);
        const moved = (await getUnionBySlug(db, "old"))!;
        assert.match(moved.id, /^[0-9a-hjkmnp-tv-z]{13}$/);
        assert.deepEqual(await snapshot(db, moved.id), before, "every row that named the union names its new id, nothing else changed");
        assert.deepEqual(await occurrences(db, d.name, old), [], "the old id is nowhere but union_rekeys");
        assert.deepEqual(await triggers(db, d.name), triggersBefore, "the triggers held off are back, word for word");
        assert.deepEqual((await sql<{ old_id: string; new_id: string }>`select old_id, new_id from union_rekeys`.execute(db)).rows, [{ old_id: old, new_id: moved.id }]);
        assert.equal((await getUnionBySlug(db, "fresh"))!.id, fresh.id);
        assert.deepEqual(await snapshot(db, fresh.id), freshBefore);
        // Reads and the fan-out see the same members under the new id; the triggers keep fanout_targets again.
        assert.deepEqual(await deliveryRecipients(db, moved.id, "", 500), recipientsBefore);
        const someone = await db.selectFrom("members").select(["id", "actor_id"]).where("union_id", "=", moved.id).where("role", "=", "member").limit(1).executeTakeFirstOrThrow();
        assert.equal((await findMemberByActor(db, moved.id, someone.actor_id!))?.id, someone.id);
        await seedFollowers(db, moved.id, 1, () => ({ origin: "https://newcomer.example", shared: true }));
        assert.equal(Number((await db.selectFrom("fanout_targets").select("members").where("union_id", "=", moved.id).where("inbox", "=", "https://newcomer.example/inbox").executeTakeFirstOrThrow()).members), 1);
        const after = await snapshot(db, moved.id);

        await migrateTo(db, PREVIOUS);
        assert.equal((await getUnionBySlug(db, "old"))!.id, old);
        assert.deepEqual(await snapshot(db, old), after);
        assert.deepEqual(await occurrences(db, d.name, moved.id), []);
        assert.deepEqual(await triggers(db, d.name), triggersBefore);
        assert.deepEqual(await snapshot(db, fresh.id), freshBefore);

        await migrateToLatest(db);
        const again = (await getUnionBySlug(db, "old"))!;
        assert.equal(again.id.length, 13);
        assert.deepEqual(await snapshot(db, again.id), after);
        assert.deepEqual(await occurrences(db, d.name, old), []);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("a union whose id occurs inside a URL keeps it", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        await migrateTo(db, PREVIOUS);
        const old = await oldUnion(db, "old", 5, () => "https://s.example");
        // An actor whose URL happens to carry the id (as a URL made of a union id would).
        await sql`insert into remote_actors (id, type, fetched_at) values (${`https://elsewhere.example/groups/${old}`}, 'Group', 1)`.execute(db);
        await migrateToLatest(db);
        assert.equal((await getUnionBySlug(db, "old"))!.id, old);
        assert.deepEqual((await sql`select * from union_rekeys`.execute(db)).rows, []);
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}

/** A union made with a UUID id and `n` members seeded as the storage bench does, then the upgrade run over it. */
async function upgradeOldUnion(db: Kysely<DB>, n: number): Promise<void> {
  await migrateTo(db, PREVIOUS);
  const made = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "made", name: "M", purpose: "p" });
  const row = await db.selectFrom("unions").selectAll().where("id", "=", made.id).executeTakeFirstOrThrow();
  await db.insertInto("unions").values({ ...row, id: randomUUID(), slug: "old" }).execute();
  const id = (await db.selectFrom("unions").select("id").where("slug", "=", "old").executeTakeFirstOrThrow()).id;
  // Without their cached keys: the KV store writes them as the latest schema has them (inside the actors'
  // rows on PostgreSQL, 0075), which this older schema has not; only members and their indexes are measured.
  await seedMembers(db, id, n, "test", { keys: false });
  await migrateToLatest(db);
}

describe("a member of an old union costs less on sqlite (0069)", () => {
  it("members and its indexes under 540 bytes a member of the file for a union made with a UUID id (605 before, 490 after): the upgrade's one VACUUM gives the slack back", async () => {
    const sqlite = dialects.find((x) => x.name === "sqlite")!;
    const tdb = await sqlite.create();
    const { db, close } = tdb.open();
    try {
      const n = 10_000;
      await upgradeOldUnion(db, n);
      await sql`pragma wal_checkpoint(TRUNCATE)`.execute(db);
      // The pages the file gives members and its indexes, slack included: rows shrunk in place keep
      // their pages part empty (and appends never fill them) until a VACUUM rebuilds the table.
      const bytes = Number((await sql<{ b: number }>`select coalesce(sum(pgsize), 0) as b from dbstat where name in (select name from sqlite_schema where tbl_name = 'members')`.execute(db)).rows[0]!.b);
      assert.ok(bytes / n < 540, `${(bytes / n).toFixed(1)} bytes per member in members and its indexes`);
      assert.equal(Number((await sql<{ n: number }>`select freelist_count as n from pragma_freelist_count()`.execute(db)).rows[0]!.n), 0, "no free pages left in the file");
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

describe("a member of an old union costs less on postgres (0069)", { skip: dialects.find((x) => x.name === "postgres")!.skip }, () => {
  it("members with its indexes under 680 bytes a member for a union made with a UUID id (751 before; an UPDATE of every member would leave about twice that)", async () => {
    const postgres = dialects.find((x) => x.name === "postgres")!;
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      const n = 10_000;
      await upgradeOldUnion(db, n);
      await sql`vacuum analyze members`.execute(db);
      const bytes = Number((await sql<{ b: string }>`select pg_total_relation_size('members') as b`.execute(db)).rows[0]!.b);
      assert.ok(bytes / n < 680, `${(bytes / n).toFixed(1)} bytes per member in members and its indexes`);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

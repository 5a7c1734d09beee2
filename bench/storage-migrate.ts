/**
 * First start on an existing database (issue 16 storage): seeds N members as
 * bench/storage.ts does on the schema of the migration before 0066 (the old
 * schema), measures the database, times migrateToLatest (0066 and later), and
 * measures it again; on SQLite also the freelist the rebuild leaves and what a
 * VACUUM would take. Not part of `npm run bench`; run through the bench lock:
 *
 *   flock /work/notes/bench.lock npx node bench/storage-migrate.ts sqlite|postgres 100000 [uuid|new] [0069]
 *
 * The last argument names the first migration timed (default 0066): the
 * database is seeded on the schema of the migration before it.
 *
 * (PostgreSQL with TEST_DATABASE_URL.) "at 10^6" extrapolates linearly (the
 * fan-out targets included: see bench/storage.ts for the exact figures).
 */

import { readdirSync, statSync } from "node:fs";
import { sql } from "kysely";
import { dialects } from "../test/helpers/databases.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import { seedMembers } from "../bench/storage.ts";
import { createUnion } from "../src/unions/unions.ts";
import { createEventBus } from "../src/events.ts";
import { generateActorKeys } from "../federation/keys.ts";
import { randomUUID } from "node:crypto";
const [dialectName, nArg, unionKind, fromArg] = process.argv.slice(2);
const FROM = fromArg ?? "0066";
const n = Number(nArg);
const d = dialects.find((x) => x.name === dialectName)!;
const PREVIOUS = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < FROM).sort().at(-1)!.replace(/\.ts$/, "");
const tdb = await d.create();
const { db, close } = tdb.open();
await migrateTo(db, PREVIOUS);
const file = tdb.url.replace(/^sqlite:/, "");
const size = async () => {
  if (d.name === "sqlite") { await sql`pragma wal_checkpoint(TRUNCATE)`.execute(db); return statSync(file).size; }
  await sql`vacuum analyze`.execute(db);
  return Number((await sql<{ s: string }>`select pg_database_size(current_database()) as s`.execute(db)).rows[0]!.s);
};
const created = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "s", name: "S", purpose: "p" });
let unionId = created.id;
if (unionKind === "uuid") {
  const row = await db.selectFrom("unions").selectAll().where("id", "=", created.id).executeTakeFirstOrThrow();
  unionId = randomUUID();
  await db.insertInto("unions").values({ ...row, id: unionId, slug: "s-uuid" }).execute();
}
const empty = await size();
await seedMembers(db, unionId, n, d.name);
const old = await size();
const t0 = performance.now();
const r = await migrateToLatest(db);
const ms = performance.now() - t0;
const nw = await size();
const per = (b: number) => ((b - empty) / n).toFixed(1);
console.log(`${d.name} ${unionKind ?? "new"} n=${n} from ${PREVIOUS}: ${r.results?.map((x) => x.migrationName).join(",")} in ${(ms / 1000).toFixed(2)} s; empty ${(empty / 2 ** 20).toFixed(1)} MiB; old ${per(old)} B/member (${((empty + (old - empty) / n * 1e6) / 2 ** 20).toFixed(1)} MiB at 10^6), new ${per(nw)} B/member (${((empty + (nw - empty) / n * 1e6) / 2 ** 20).toFixed(1)} MiB at 10^6)`);
if (d.name === "sqlite") {
  // On SQLite, migrateToLatest already ran 0069's VACUUM (in the time above): this one finds little to do.
  const free = (await sql<{ b: number }>`select freelist_count * page_size as b from pragma_freelist_count(), pragma_page_size()`.execute(db)).rows[0]!.b;
  const t1 = performance.now();
  await sql`vacuum`.execute(db);
  const vs = (performance.now() - t1) / 1000;
  const v = await size();
  console.log(`  freelist after the migration ${(free / 2 ** 20).toFixed(1)} MiB (in use: ${per(nw - free)} B/member); VACUUM ${vs.toFixed(1)} s -> ${per(v)} B/member (${((empty + (v - empty) / n * 1e6) / 2 ** 20).toFixed(1)} MiB at 10^6)`);
}
if (d.name === "postgres") {
  // The migration's updated rows leave their old versions as free space (reused by later writes); VACUUM FULL gives it back.
  const t1 = performance.now();
  await sql`vacuum full`.execute(db);
  const vs = (performance.now() - t1) / 1000;
  const v = await size();
  console.log(`  VACUUM FULL ${vs.toFixed(1)} s -> ${per(v)} B/member (${((empty + (v - empty) / n * 1e6) / 2 ** 20).toFixed(1)} MiB at 10^6)`);
}
await close(); await tdb.destroy();

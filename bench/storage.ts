import { randomBytes, randomUUID } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { type Kysely, SqliteAdapter, sql } from "kysely";
import { generateActorKeys } from "../federation/keys.ts";
import type { KvKey } from "@fedify/fedify";
import { Person } from "@fedify/vocab";
import { preloadedOnly } from "../federation/inbox-fast-keys.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { type RemoteActor, remoteActorRow } from "../src/actors/remote-actors.ts";
import { openDatabase } from "../src/db/database.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { newMemberId } from "../src/members/member-id.ts";
import { storedFollowId } from "../src/members/members.ts";
import { createUnion } from "../src/unions/unions.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { type Benchmark, loadAverage, progress, type Row } from "./lib.ts";

/**
 * Storage at a million members: seeds one union's members with the rows a
 * real join leaves behind, each shaped from a real Mastodon actor
 * (../shared/fixtures), then reports the database's size and what fills it.
 *
 * Per member, as a join through the inbox writes them:
 * - `members`: the active row (actor URL, handle, Follow id as storedFollowId stores it, sponsor);
 * - `remote_actors`: what upsertRemoteActor keeps of a Mastodon actor (migration 0046);
 * - no `inbox_activities` row: a current member's Follow record is pruned once past the
 *   replay window (federation/pruning.ts; members.follow_id holds the id), so a member who
 *   joined more than a week ago has none;
 * - Fedify's public-key cache entry for the member's key (kept a week), written through
 *   KyselyKvStore.set as Fedify's key cache writes it (fedify_public_keys since 0064).
 *
 * Size: SQLite's file plus its WAL after a checkpoint; PostgreSQL's
 * pg_database_size. Tables and indexes each, from dbstat / pg_total_relation_size.
 * BENCH_STORAGE_MEMBERS overrides the count (default 10^6; 10^5 with --quick).
 * BENCH_STORAGE_KEEP=1 keeps the seeded database and prints where it is.
 * BENCH_STORAGE_UNION=uuid seeds a union made before 13-character union ids
 * (src/unions/union-id.ts): the same union row under a 36-character UUID, as
 * every union created before that change still has.
 * BENCH_STORAGE_UNION=uuid-migrated: the same union after the upgrade to a
 * 13-character id (migration 0069, run over the seeded members), and on
 * SQLite the one VACUUM the upgrade runs after it.
 * BENCH_STORAGE_MEMBER_IDS=uuid gives the members the 36-character UUIDv7 ids
 * members got before 20-character member ids, as an older union's members
 * who joined before that change keep.
 */

const TARGET_BYTES = 1024 ** 3;
const FULL = 1_000_000;
const QUICK = 100_000;
/** 2·10^4 servers, as in the fan-out target. */
const SERVERS = 20_000;

const fixture = JSON.parse(readFileSync(fileURLToPath(new URL("../../shared/fixtures/activitypub/mastodon/update-person.json", import.meta.url)), "utf8")) as { object: { summary: string; name: string; icon: { url: string } } };
const mastodonActor = JSON.parse(readFileSync(fileURLToPath(new URL("../../shared/fixtures/activitypub/mastodon/person-actor.json", import.meta.url)), "utf8")) as { publicKey: { publicKeyPem: string } };
const PEM_LENGTH = mastodonActor.publicKey.publicKeyPem.length;

/** Bios vary: most a sentence or two of HTML, some empty, some near Mastodon's 500-character limit. */
function summaryFor(i: number): string {
  const words = ["organiser", "rider", "courier", "nurse", "teacher", "she/her", "he/him", "they/them", "#union", "#solidarity", "shop steward", "night shift", "cyclist", "parent", "Berlin", "Lagos", "São Paulo", "opinions my own"];
  const n = [0, 6, 10, 16, 24, 36, 60][i % 7]!;
  if (n === 0) return "";
  const parts: string[] = [];
  for (let k = 0; k < n; k++) parts.push(words[(i * 7 + k * 13) % words.length]!);
  return `${fixture.object.summary.replace("Some bio", parts.join(" "))}`.slice(0, 5000);
}

/** The DER SubjectPublicKeyInfo of an RSA-2048 key up to its modulus, and after it the exponent 65537. */
const RSA2048_SPKI_HEAD = Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex");
const RSA2048_SPKI_TAIL = Buffer.from("0203010001", "hex");

function pemFor(): string {
  // A fresh 2048-bit RSA key's PEM: its fixed header and exponent around a random 256-byte modulus (keys do not compress).
  const modulus = randomBytes(256);
  modulus[0] = modulus[0]! | 0x80;
  const body = Buffer.concat([RSA2048_SPKI_HEAD, modulus, RSA2048_SPKI_TAIL]).toString("base64");
  const pem = `-----BEGIN PUBLIC KEY-----\n${body.replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----\n`;
  if (pem.length !== PEM_LENGTH) throw new Error(`a seeded key's PEM is ${pem.length} characters, the Mastodon fixture's ${PEM_LENGTH}`);
  return pem;
}

/** BENCH_STORAGE_MEMBER_IDS=uuid: members who joined before 20-character member ids, with the UUIDv7 ids they got then. */
const OLD_MEMBER_IDS = process.env.BENCH_STORAGE_MEMBER_IDS === "uuid";

/** A UUIDv7 of `ms`, as src/members/member-id.ts made member ids before. */
function uuidV7(ms: number): string {
  const b = randomBytes(16);
  b.writeUIntBE(ms, 0, 6);
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

interface SeedRows {
  members: Record<string, unknown>[];
  remote_actors: Record<string, unknown>[];
  keys: { key: KvKey; value: unknown }[];
}

function rowsFor(unionId: string, sponsors: string[], from: number, to: number, firstJoin: number): SeedRows {
  const rows: SeedRows = { members: [], remote_actors: [], keys: [] };
  const now = Date.now();
  for (let i = from; i < to; i++) {
    const host = `social-${i % SERVERS}.example.net`;
    const user = `member_${i.toString(36)}`;
    const actor = `https://${host}/users/${user}`;
    const followId = `https://${host}/${randomUUID()}`;
    // One join a millisecond, as joins through the inbox arrive: equal timestamps would let PostgreSQL
    // deduplicate the join-order index's entries and understate it. (Counted from one start for the whole
    // seed: `now - (to - i)` per batch repeated each millisecond about five times across batches.)
    const joined = firstJoin + i;
    // As insertApplicant makes it: time-ordered (src/members/member-id.ts); BENCH_STORAGE_MEMBER_IDS=uuid as it did before (UUIDv7).
    const id = OLD_MEMBER_IDS ? uuidV7(joined) : newMemberId(joined);
    const sponsor = sponsors[Math.floor(Math.random() * sponsors.length)]!;
    sponsors.push(id);
    if (sponsors.length > 4096) sponsors.splice(0, 1024);
    rows.members.push({ id, union_id: unionId, actor_id: actor, handle: `@${user}@${host}`, state: "active", role: "member", sponsor_id: sponsor, subtree_size: 0, follow_id: storedFollowId(actor, followId), joined_at: joined, created_at: joined });
    // Parsed as a fetch would (bio, avatar and all), stored as upsertRemoteActor stores it.
    const parsed: RemoteActor = {
      id: actor, type: "Person", handle: `@${user}@${host}`, preferredUsername: user, name: `${fixture.object.name} ${i}`, summary: summaryFor(i),
      url: `https://${host}/@${user}`,
      avatarUrl: i % 5 === 0 ? null : fixture.object.icon.url.replace("cd.niu.moe", `files.${host}`).replace("033/323", `${String(i % 1000).padStart(3, "0")}/${String(i % 997).padStart(3, "0")}`).replace("fd7f8ae0b3ffedc9", randomBytes(8).toString("hex")),
      inbox: `${actor}/inbox`, sharedInbox: `https://${host}/inbox`, fetchedAt: now,
    };
    rows.remote_actors.push(remoteActorRow(parsed));
    // As Fedify's KvKeyCache.set writes a key its verifier found in the member's actor document (and the follow's
    // fast path, plain-actor.ts): the key's node of the expanded document, untyped as Mastodon's key is. Checked against
    // Fedify once, in seedMembers.
    const keyId = `${actor}#main-key`;
    rows.keys.push({ key: ["_fedify", "publicKey", keyId], value: { "@id": keyId, [`${SEC}owner`]: [{ "@id": actor }], [`${SEC}publicKeyPem`]: [{ "@value": pemFor() }] } });
  }
  return rows;
}

async function insertChunked(db: Kysely<DB>, table: "members" | "remote_actors", rows: Record<string, unknown>[]): Promise<void> {
  if (rows.length === 0) return;
  // Both dialects' bound-parameter limits (SQLite 32766, PostgreSQL 65535).
  const per = Math.floor(30_000 / Object.keys(rows[0]!).length);
  for (let i = 0; i < rows.length; i += per) await db.insertInto(table).values(rows.slice(i, i + per) as never).execute();
}

/**
 * Seeds `n` active members of a union with what a real join leaves (see above); also used by bench/memory.ts.
 * `keys: false` leaves out their cached keys: the KV store writes them as the latest schema has them (on
 * PostgreSQL inside the actors' rows, migration 0075), so a database migrated to an older one is seeded without.
 */
export async function seedMembers(db: Kysely<DB>, unionId: string, n: number, label: string, opts: { readonly keys?: boolean } = {}): Promise<void> {
  const sponsors: string[] = [];
  const firstJoin = Date.now() - n;
  // The first member has no sponsor in the tree; the rest hang off recent members.
  const BATCH = 10_000;
  for (let from = 0; from < n; from += BATCH) {
    const rows = rowsFor(unionId, sponsors.length ? sponsors : [null as unknown as string], from, Math.min(n, from + BATCH), firstJoin);
    if (from === 0) await sameAsFedify(rows.keys[0]!.value);
    await db.transaction().execute(async (trx) => {
      // Through the store Fedify is given (federation/federation.ts), one set per key as the verifier caches them:
      // before the actors' rows, as Fedify's inbox verifies a Follow's signature before its actor is fetched (on
      // PostgreSQL the row's insert then takes the key in, migration 0075; written after, each would update its
      // row, which a bulk insert leaves no room for on its page: a second copy of every row until VACUUM).
      const kv = new KyselyKvStore(trx);
      if (opts.keys !== false) for (const { key, value } of rows.keys) await kv.set(key, value);
      for (const table of ["remote_actors", "members"] as const) await insertChunked(trx, table, rows[table]);
    });
    // PostgreSQL: those keys' rows in fedify_public_keys are gone again, taken in by their actors' rows; autovacuum
    // clears such a table of dead rows within a minute (50 dead rows and a fifth of the live ones), so its hash
    // index is not grown by them. Seeding 10^4 a transaction, the bench does it itself.
    if (!(db.getExecutor().adapter instanceof SqliteAdapter)) await sql`vacuum fedify_public_keys`.execute(db);
    if ((from / BATCH) % 10 === 9) progress(`${label}: ${from + BATCH}/${n} members seeded`);
  }
}

const SEC = "https://w3id.org/security#";

/**
 * Throws unless `value` is what Fedify's key cache writes for the key of a
 * Mastodon actor document: the actor parsed by Fedify, its key's toJsonLd().
 */
async function sameAsFedify(value: unknown): Promise<void> {
  const node = value as Record<string, [Record<string, string>]>;
  const owner = node[`${SEC}owner`]![0]["@id"]!;
  const doc = {
    "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
    id: owner, type: "Person", preferredUsername: "m", inbox: `${owner}/inbox`,
    publicKey: { id: (value as { "@id": string })["@id"], owner, publicKeyPem: node[`${SEC}publicKeyPem`]![0]["@value"] },
  };
  const person = await Person.fromJsonLd(doc, { documentLoader: preloadedOnly, contextLoader: preloadedOnly });
  const key = await person.getPublicKey({ documentLoader: preloadedOnly, contextLoader: preloadedOnly });
  const fedify = await key?.toJsonLd({ contextLoader: preloadedOnly });
  if (JSON.stringify(fedify) !== JSON.stringify(value)) throw new Error(`a seeded key is not what Fedify caches: ${JSON.stringify(fedify).slice(0, 300)}`);
}

/** A copy of the union row under a UUID id, as unions created before src/unions/union-id.ts have (BENCH_STORAGE_UNION=uuid). */
async function existingUnion(db: Kysely<DB>, from: string): Promise<{ id: string }> {
  const row = await db.selectFrom("unions").selectAll().where("id", "=", from).executeTakeFirstOrThrow();
  const id = randomUUID();
  await db.insertInto("unions").values({ ...row, id, slug: "storage-uuid" }).execute();
  return { id };
}

interface Part {
  name: string;
  bytes: number;
  detail?: string;
}

async function sizes(db: Kysely<DB>, dialect: DialectCase["name"], file: string | undefined): Promise<{ total: number; parts: Part[]; tables?: Part[] }> {
  if (dialect === "sqlite") {
    await sql`pragma wal_checkpoint(TRUNCATE)`.execute(db);
    const size = (p: string) => {
      try {
        return statSync(p).size;
      } catch {
        return 0;
      }
    };
    const total = size(file!) + size(`${file}-wal`);
    let parts: Part[] = [];
    try {
      parts = (await sql<{ name: string; bytes: number }>`select name, sum(pgsize) as bytes from dbstat group by name order by bytes desc`.execute(db)).rows.map((r) => ({ name: r.name, bytes: Number(r.bytes) }));
    } catch {
      parts = [{ name: "(dbstat not compiled in)", bytes: 0 }];
    }
    return { total, parts };
  }
  await sql`vacuum analyze`.execute(db);
  const total = Number((await sql<{ s: string }>`select pg_database_size(current_database()) as s`.execute(db)).rows[0]!.s);
  // Each table whole (heap + TOAST + indexes, pg_total_relation_size), then each heap (with its TOAST) and each index alone.
  const tables = (await sql<{ name: string; total: string; heap: string; toast: string; indexes: string }>`
    select c.relname as name, pg_total_relation_size(c.oid) as total, pg_relation_size(c.oid) as heap,
      coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) as toast, pg_indexes_size(c.oid) as indexes
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind = 'r' order by pg_total_relation_size(c.oid) desc`.execute(db)).rows
    .map((r) => ({ name: `${r.name} (table, all)`, bytes: Number(r.total), detail: `heap ${mib(Number(r.heap))}, TOAST ${mib(Number(r.toast))}, indexes ${mib(Number(r.indexes))} MiB` }));
  const parts = (await sql<{ name: string; bytes: string; kind: string }>`
    select c.relname as name, c.relkind as kind, pg_relation_size(c.oid) + coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) as bytes
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'i') order by bytes desc`.execute(db)).rows.map((r) => ({ name: r.kind === "i" ? `${r.name} (index)` : `${r.name} (heap+TOAST)`, bytes: Number(r.bytes) }));
  return { total, parts, tables };
}

const mib = (b: number) => (b / 1024 ** 2).toFixed(1);

export const storage: Benchmark = {
  name: "storage",
  title: "Storage: members with their cached actors, database size against 1 GiB at 10^6",
  summary: "database size and bytes per member after seeding members with realistic cached actors (target: 10^6 in 1 GiB)",
  notes: [
    "per member: members row, remote_actors row (what upsertRemoteActor keeps of a Mastodon actor), no Follow record (pruned past the replay window while current, migration 0047), Fedify's public-key cache entry (fedify_kv; seeded as if every member signed something this week)",
    "SQLite: file + WAL after a checkpoint; PostgreSQL: pg_database_size after VACUUM ANALYZE; an empty migrated database is measured first and reported as the baseline",
    "the largest tables and indexes follow, each with its bytes per member; 'at 10^6' extrapolates bytes/member linearly when fewer were seeded (the two whole-database rows hold fanout_targets, a row per server, at its size once every server has a member)",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const n = Number(process.env.BENCH_STORAGE_MEMBERS ?? (quick ? QUICK : FULL));
    const tdb = await dialect.create();
    const database = openDatabase(tdb.url);
    const file = dialect.name === "sqlite" ? tdb.url.replace(/^sqlite:/, "") : undefined;
    let keep = false;
    try {
      const { db } = database;
      const created = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "storage", name: "Storage Bench", purpose: "Measuring bytes per member" });
      const kind = process.env.BENCH_STORAGE_UNION;
      const union = { id: (kind === "uuid" || kind === "uuid-migrated" ? await existingUnion(db, created.id) : created).id };
      const empty = await sizes(db, dialect.name, file);
      const started = performance.now();
      await seedMembers(db, union.id, n, dialect.name);
      const seedS = (performance.now() - started) / 1000;
      let migrated = "";
      if (kind === "uuid-migrated") {
        // The older union after the upgrade: 0069 run over the seeded members (down to the migration before it, which
        // has nothing to undo, then up); on SQLite migrateToLatest runs the one VACUUM 0069 asks for.
        const before0069 = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < "0069").sort().at(-1)!.replace(/\.ts$/, "");
        await migrateTo(db, before0069);
        const t0 = performance.now();
        await migrateToLatest(db);
        const ms = performance.now() - t0;
        const id = (await db.selectFrom("unions").select("id").where("slug", "=", "storage-uuid").executeTakeFirstOrThrow()).id;
        migrated = `; migrated to a ${id.length}-character id in ${(ms / 1000).toFixed(2)} s`;
        union.id = id;
        if (dialect.name === "sqlite") migrated += " (its one VACUUM included)";
      }
      const after = await sizes(db, dialect.name, file);
      const bytes = after.total - empty.total;
      const perMember = bytes / n;
      // fanout_targets (and member_origins, 0074) holds a row per server (2·10^4 of them once n reaches that), not per member: extrapolated
      // linearly from 10^5 it counted ten times over (about 70 MiB at 10^6 on PostgreSQL). Held at its size for n ≥ SERVERS.
      const beforeParts = new Map(empty.parts.map((p) => [p.name, p.bytes]));
      const fanout = after.parts.filter((p) => /fanout_targets|member_origins/.test(p.name)).reduce((sum, p) => sum + p.bytes - (beforeParts.get(p.name) ?? 0), 0);
      const at1e6 = (total: number) => empty.total + ((total - fanout) / n) * 1e6 + (n >= SERVERS ? fanout : (fanout / n) * 1e6);
      const rows: Row[] = [{
        dialect: dialect.name,
        what: "whole database",
        members: n,
        MiB: mib(after.total),
        "bytes/member": perMember,
        "MiB at 10^6": mib(at1e6(bytes)),
        "vs 1 GiB": at1e6(bytes) <= TARGET_BYTES ? "PASS" : "MISS",
        detail: `${union.id.length}-character union id${migrated}; ${OLD_MEMBER_IDS ? "36-character (UUIDv7) member ids" : "20-character member ids"}; empty database ${mib(empty.total)} MiB; seeded at ${(n / seedS).toFixed(0)} members/s; ${loadAverage()}`,
      }];
      const before = new Map(empty.parts.map((p) => [p.name, p.bytes]));
      // Fedify's key cache now expires after a week (federation/kysely-kv-store.ts): a union whose members did not all
      // sign something this week holds fewer keys. The figure without any of them bounds what that saves.
      const keyCache = after.parts.filter((p) => /fedify_kv|fedify_public_keys/.test(p.name)).reduce((sum, p) => sum + p.bytes - (before.get(p.name) ?? 0), 0);
      const withoutKeys = (bytes - keyCache) / n;
      rows.push({
        dialect: dialect.name,
        what: "without cached keys",
        members: n,
        MiB: mib(after.total - keyCache),
        "bytes/member": withoutKeys,
        "MiB at 10^6": mib(at1e6(bytes - keyCache)),
        "vs 1 GiB": at1e6(bytes - keyCache) <= TARGET_BYTES ? "PASS" : "MISS",
        detail: "the same, less fedify_kv, fedify_public_keys and their indexes: every member's key expired from Fedify's cache (no signed request in a week)",
      });
      rows.push({
        dialect: dialect.name,
        what: "cached keys alone",
        members: n,
        MiB: mib(keyCache),
        "bytes/member": keyCache / n,
        "MiB at 10^6": mib((keyCache / n) * 1e6),
        "vs 1 GiB": "-",
        detail: "fedify_kv and fedify_public_keys with their indexes, grown by the seed: one cached key per member",
      });
      const beforeTables = new Map((empty.tables ?? []).map((p) => [p.name, p.bytes]));
      for (const p of (after.tables ?? []).slice(0, 6)) {
        const grown = p.bytes - (beforeTables.get(p.name) ?? 0);
        rows.push({ dialect: dialect.name, what: p.name, members: n, MiB: mib(p.bytes), "bytes/member": grown / n, "MiB at 10^6": mib((grown / n) * 1e6), "vs 1 GiB": "-", detail: `${((100 * p.bytes) / after.total).toFixed(1)} % of the database; ${p.detail}` });
      }
      for (const p of after.parts.slice(0, 20)) {
        const grown = p.bytes - (before.get(p.name) ?? 0);
        rows.push({ dialect: dialect.name, what: p.name, members: n, MiB: mib(p.bytes), "bytes/member": grown / n, "MiB at 10^6": mib((grown / n) * 1e6), "vs 1 GiB": "-", detail: `${((100 * p.bytes) / after.total).toFixed(1)} % of the database` });
      }
      if (process.env.BENCH_STORAGE_KEEP === "1") {
        // For looking inside afterwards (pgstattuple, EXPLAIN); the caller drops it.
        progress(`kept the seeded database: ${tdb.url}`);
        keep = true;
      }
      return rows;
    } finally {
      await database.close();
      if (!keep) await tdb.destroy();
    }
  },
};

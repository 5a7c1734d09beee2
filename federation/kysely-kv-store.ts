import { sendWithNext } from "../src/db/pipeline.ts";
import { randomInt } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { KvKey, KvStore, KvStoreListEntry } from "@fedify/fedify";
import { type Expression, type Kysely, PostgresAdapter, type QueryCreator, type RawBuilder, sql } from "kysely";
import type { ExtraActorColumns } from "../src/actors/remote-actors.ts";
import type { DB } from "../src/db/schema.ts";
import { type CompactKey, compactKey, jsonText, keyIdOf, keyIdOfStored, keyJson, storedKeyId } from "./kv-public-keys.ts";
import { prepared } from "../src/db/prepared.ts";

/**
 * Fedify hands over @js-temporal/polyfill Durations while its types name the
 * global Temporal.Duration; the two are not assignable to each other, so we
 * accept anything that can report its length.
 */
export interface DurationLike {
  total(unit: "millisecond"): number;
}

export interface KyselyKvSetOptions {
  readonly ttl?: DurationLike;
}

// Expired rows are mostly removed when a reader trips over them; this sweep
// catches keys nobody reads again, without costing a write on every set().
const PURGE_INTERVAL_MS = 60_000;

/**
 * Fedify caches every remote public key it fetches under this prefix with no
 * expiry: one ~1 KB row per member, and one per stranger whose signed request
 * was ever checked, kept forever (issue 16: a million members' keys alone
 * filled a gigabyte). Kept a week instead; an expired key is fetched again on
 * its owner's next signed request, and Fedify already fetches afresh when a
 * cached key fails to verify, so nothing is refused for it.
 */
/** KyselyKvStore#joinedKeyWrite: a compact key's write for a caller's own statement. */
export interface JoinedKeyWrite {
  /** In the actor's remote_actors row (true) or in fedify_public_keys. */
  readonly actorRow: boolean;
  readonly key: Uint8Array;
  readonly form: number;
  readonly owner: string | null;
  readonly expiresAt: number;
  readonly encoded: string;
  readonly storedKeyId: string;
}

const FEDIFY_PUBLIC_KEY_PREFIX = '["_fedify","publicKey",';
export const PUBLIC_KEY_CACHE_TTL_MS = 7 * 24 * 3600_000;

/**
 * Fedify's key–value store (signature/document caches, circuit-breaker state,
 * nonces) in the `fedify_kv` table, on SQLite or PostgreSQL.
 *
 * Fedify's cached public keys (`["_fedify","publicKey",keyId]`) that read
 * back exactly from their compact form live in `fedify_public_keys` instead
 * (federation/kv-public-keys.ts, migration 0064): one row a member at scale.
 * A key id has a value in at most one of the two tables: every write to one
 * removes it from the other (the compact row first, so that a crash between
 * the two statements leaves the newer value or nothing, never the older).
 *
 * A key is stored as `JSON.stringify(key)`, e.g. `["a","b"]`.  JSON closes
 * every string element with an unescaped `"` followed by `,` or `]`, so the
 * keys under prefix `["a","b"]` are exactly `["a","b"]` itself plus those
 * starting with `["a","b",` — `["a","bc"]` cannot start with that.  The
 * "starts with" test is a byte-order range, never LIKE, so `%` and `_` in keys
 * need no escaping and SQLite's case-insensitive LIKE cannot blur `A` and `a`.
 */
export class KyselyKvStore implements KvStore {
  readonly #db: Kysely<DB>;
  readonly #postgres: boolean;
  #lastPurge = 0;
  /** Encoded key to what this process last read or wrote there, for the keys MEMO_MS names. */
  readonly #memo = new Map<string, { text: string | undefined; at: number }>();

  readonly #inboxQueued: boolean;
  /** Set once a receive-side idempotence key is written after all: from then on they are read. */
  #receiveKeysWritten = false;

  /**
   * `inboxQueued`: every Fedify federation on this database hands inbound
   * activities to a queue (as Muster's always does), so the receive-side
   * idempotence keys are never written and need not be read (see
   * isReceiveIdempotenceKey).
   */
  constructor(db: Kysely<DB>, options: { inboxQueued?: boolean } = {}) {
    this.#db = db;
    this.#postgres = db.getExecutor().adapter instanceof PostgresAdapter;
    this.#inboxQueued = options.inboxQueued === true;
  }

  async get<T = unknown>(key: KvKey): Promise<T | undefined> {
    if (this.#inboxQueued && !this.#receiveKeysWritten && isReceiveIdempotenceKey(key)) return undefined;
    const encoded = encodeKey(key);
    const memoMs = memoMsOf(key);
    const now = Date.now();
    const keyId = keyIdOf(key);
    if (keyId !== undefined) {
      const row = (await readPublicKey(this.#db, keyId)).rows[0];
      if (row !== undefined) {
        if (!isExpired(row.expires_at, now)) return JSON.parse(keyJson(keyId, row)) as T;
        // Expired: gone from both tables (an older value in fedify_kv must not come back).
        await deleteExpiredKey(this.#db, keyId, now);
        await this.#db.deleteFrom("fedify_kv").where("key", "=", encoded).execute();
        return undefined;
      }
    }
    if (memoMs > 0) {
      const m = this.#memo.get(encoded);
      if (m !== undefined && now - m.at < memoMs) return m.text === undefined ? undefined : JSON.parse(jsonText(key, m.text)) as T;
    }
    const row = await this.#db.selectFrom("fedify_kv")
      .select(["value", "expires_at"])
      .where("key", "=", encoded)
      .executeTakeFirst();
    // Fedify tells a cache miss from a cached value by `undefined`; a null
    // here would be taken for a stored null and silently poison its caches.
    if (row === undefined || isExpired(row.expires_at, now)) {
      if (row !== undefined) await this.#deleteIfExpired(encoded, now);
      if (memoMs > 0) this.#remember(encoded, undefined, now);
      return undefined;
    }
    // An entry that expires sooner than the memo would be kept past its time.
    if (memoMs > 0 && (row.expires_at === null || row.expires_at - now > memoMs)) this.#remember(encoded, row.value, now);
    return JSON.parse(jsonText(key, row.value)) as T;
  }

  #remember(encoded: string, text: string | undefined, now: number): void {
    if (this.#memo.size >= MEMO_ENTRIES) this.#memo.delete(this.#memo.keys().next().value!);
    this.#memo.delete(encoded);
    this.#memo.set(encoded, { text, at: now });
  }

  async set(key: KvKey, value: unknown, options?: KyselyKvSetOptions): Promise<void> {
    // `undefined` is what get() reports for an absent key, so storing it
    // means removing the key (JSON has no spelling for it anyway).
    if (value === undefined) return this.delete(key);
    if (isReceiveIdempotenceKey(key)) this.#receiveKeysWritten = true;
    const now = Date.now();
    const encoded = encodeKey(key);
    const row = { key: encoded, value: encodeValue(value), expires_at: options?.ttl === undefined && encoded.startsWith(FEDIFY_PUBLIC_KEY_PREFIX) ? now + PUBLIC_KEY_CACHE_TTL_MS : expiresAt(options, now) };
    const keyId = keyIdOf(key);
    if (keyId !== undefined) {
      const compact = compactKey(keyId, row.value);
      if (compact !== undefined) {
        await writePublicKey(this.#db, keyId, compact, row.expires_at ?? now + PUBLIC_KEY_CACHE_TTL_MS, encoded);
        await this.#maybePurge(now);
        return;
      }
      await deletePublicKey(this.#db, keyId);
    }
    const memoMs = memoMsOf(key);
    if (memoMs > 0) {
      // Fedify writes the signature spec an origin accepted after every
      // delivery to it: the same value, again and again.
      const m = this.#memo.get(row.key);
      if (options?.ttl === undefined && m !== undefined && m.text === row.value && now - m.at < memoMs) return;
      this.#memo.delete(row.key);
    }
    await this.#db.insertInto("fedify_kv")
      .values(row)
      .onConflict((oc) => oc.column("key").doUpdateSet({ value: row.value, expires_at: row.expires_at }))
      .execute();
    await this.#maybePurge(now);
  }

  /**
   * set() inside the caller's transaction (`executor`), so the entry commits
   * or rolls back with the caller's work and costs no commit of its own: the
   * follow's fast path caches the follower's key in the join's transaction.
   * No TTL option (the public-key default applies as in set()).
   */
  /** Whether this store keeps its entries in `db` (so setWith can join a transaction of it). */
  sharesDatabase(db: Kysely<DB>): boolean {
    return this.#db === db;
  }

  /** `kv` when it is a KyselyKvStore keeping its entries in `db` (its writes can join a transaction there), else undefined. */
  static on(kv: KvStore, db: Kysely<DB>): KyselyKvStore | undefined {
    return kv instanceof KyselyKvStore && kv.sharesDatabase(db) ? kv : undefined;
  }

  /**
   * `withNext`: on PostgreSQL a compact key's write is not waited for but
   * goes out with the transaction's next statement (src/db/pipeline.ts,
   * sendWithNext), whose failure it then is: the follow's fast path sends it
   * with the union's lock.
   */
  async setWith(executor: Kysely<DB>, key: KvKey, value: unknown, options?: { readonly withNext?: boolean }): Promise<void> {
    if (value === undefined) throw new TypeError("setWith stores a value; delete() removes one");
    const now = Date.now();
    const encoded = encodeKey(key);
    const row = { key: encoded, value: encodeValue(value), expires_at: encoded.startsWith(FEDIFY_PUBLIC_KEY_PREFIX) ? now + PUBLIC_KEY_CACHE_TTL_MS : expiresAt(undefined, now) };
    // Whether or not the transaction commits, the next get() reads the table.
    this.#memo.delete(encoded);
    const keyId = keyIdOf(key);
    if (keyId !== undefined) {
      const compact = compactKey(keyId, row.value);
      if (compact !== undefined) return writePublicKey(executor, keyId, compact, now + PUBLIC_KEY_CACHE_TTL_MS, encoded, options?.withNext === true);
      await deletePublicKey(executor, keyId);
    }
    await upsertWith(executor, row.key, row.value, row.expires_at);
  }

  /**
   * For the follow's fast path on PostgreSQL: what setWith would write for
   * `value` (a compact key), so the caller can write it within its own
   * statement (one statement less a join): `actorRow` when the key lives in
   * the remote_actors row of `actorId` (0075: "https://…#main-key" owned by
   * that actor), else in fedify_public_keys (a key id no actor row holds).
   * Either way the caller must also delete the key from fedify_kv
   * (`encoded`) and its old fedify_public_keys row (`storedKeyId`), as
   * writePublicKey does. Undefined for anything else (the caller uses
   * setWith). The memo forgets the key, as setWith's does.
   */
  joinedKeyWrite(executor: Kysely<DB>, key: KvKey, value: unknown, actorId: string): JoinedKeyWrite | undefined {
    if (!(executor.getExecutor().adapter instanceof PostgresAdapter)) return undefined;
    const keyId = keyIdOf(key);
    if (keyId === undefined) return undefined;
    const compact = compactKey(keyId, encodeValue(value));
    if (compact === undefined) return undefined;
    const holder = actorOfKey(keyId);
    const actorRow = holder !== undefined && holder === actorId && compact.owner === null;
    // A key its actor's row would hold, of another actor's row or another owner: setWith's own statement.
    if (holder !== undefined && !actorRow) return undefined;
    const encoded = encodeKey(key);
    this.#memo.delete(encoded);
    return { actorRow, key: compact.key, form: compact.form, owner: compact.owner, expiresAt: Date.now() + PUBLIC_KEY_CACHE_TTL_MS, encoded, storedKeyId: storedKeyId(keyId) };
  }

  async delete(key: KvKey): Promise<void> {
    this.#memo.delete(encodeKey(key));
    const keyId = keyIdOf(key);
    if (keyId !== undefined) await deletePublicKey(this.#db, keyId);
    await this.#db.deleteFrom("fedify_kv").where("key", "=", encodeKey(key)).execute();
  }

  /**
   * Atomic on both dialects without explicit locks: every write is a single
   * conditional statement that only succeeds if the row still holds exactly
   * the text we compared, so a concurrent writer makes it affect no row.
   * An expired entry counts as absent, as in get().
   */
  async cas(key: KvKey, expectedValue: unknown, newValue: unknown, options?: KyselyKvSetOptions): Promise<boolean> {
    const encoded = encodeKey(key);
    // Whatever the outcome, the next get() reads the table: a failed swap
    // means another writer changed the key.
    this.#memo.delete(encoded);
    const now = Date.now();
    // Fedify never swaps a public key; should anyone, the swap runs on fedify_kv alone.
    const keyId = keyIdOf(key);
    if (keyId !== undefined) await this.#demotePublicKey(keyId, encoded, now);
    if (expectedValue === undefined) {
      await this.#deleteIfExpired(encoded, now);
      if (newValue === undefined) {
        const row = await this.#db.selectFrom("fedify_kv").select("key").where("key", "=", encoded).executeTakeFirst();
        return row === undefined;
      }
      // Two callers racing to create the key both reach this insert; the
      // primary key lets exactly one of them in.
      const result = await this.#db.insertInto("fedify_kv")
        .values({ key: encoded, value: encodeValue(newValue), expires_at: expiresAt(options, now) })
        .onConflict((oc) => oc.column("key").doNothing())
        .executeTakeFirst();
      return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
    }

    const row = await this.#db.selectFrom("fedify_kv")
      .select(["value", "expires_at"])
      .where("key", "=", encoded)
      .executeTakeFirst();
    if (row === undefined || isExpired(row.expires_at, now)) return false;
    // Compare values, not spellings: callers pass back what get() parsed, and
    // a JSON round trip drops `undefined` members the same way storing did.
    if (!isDeepStrictEqual(JSON.parse(jsonText(key, row.value)), JSON.parse(encodeValue(expectedValue)))) return false;

    if (newValue === undefined) {
      // Fedify consumes single-use nonces with cas(key, true, undefined);
      // only one of two concurrent consumers may see true.
      const result = await this.#db.deleteFrom("fedify_kv")
        .where("key", "=", encoded)
        .where("value", "=", row.value)
        .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
        .executeTakeFirst();
      return Number(result.numDeletedRows) === 1;
    }
    const result = await this.#db.updateTable("fedify_kv")
      .set({ value: encodeValue(newValue), expires_at: expiresAt(options, now) })
      .where("key", "=", encoded)
      .where("value", "=", row.value)
      .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
      .executeTakeFirst();
    return Number(result.numUpdatedRows) === 1;
  }

  async *list(prefix?: KvKey): AsyncIterable<KvStoreListEntry> {
    const now = Date.now();
    let query = this.#db.selectFrom("fedify_kv")
      .select(["key", "value"])
      .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
      .orderBy("key");
    if (prefix !== undefined) {
      const exact = encodeKey(prefix);
      // `["a","b"]` → children start with `["a","b",`; `-` is the character
      // after `,`, so [lower, upper) holds exactly the strings with that start.
      const lower = `${exact.slice(0, -1)},`;
      const upper = `${exact.slice(0, -1)}-`;
      const k = this.#bytewiseKey();
      query = query.where((eb) =>
        eb.or([eb("key", "=", exact), eb.and([eb(k, ">=", lower), eb(k, "<", upper)])])
      );
    }
    const rows: { key: string; value: string }[] = await query.execute();
    const keyRows = await this.#listPublicKeys(prefix, now);
    if (keyRows.length > 0) {
      const held = new Set(keyRows.map((r) => r.key));
      rows.splice(0, rows.length, ...rows.filter((r) => !held.has(r.key)), ...keyRows);
      rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    }
    for (const row of rows) {
      const key = JSON.parse(row.key) as KvKey;
      yield { key, value: JSON.parse(jsonText(key, row.value)) };
    }
  }

  /** The live entries of fedify_public_keys under `prefix`, as fedify_kv rows of their JSON. */
  async #listPublicKeys(prefix: KvKey | undefined, now: number): Promise<{ key: string; value: string }[]> {
    const path = ["_fedify", "publicKey"] as const;
    if (prefix !== undefined && (prefix.length > 3 || prefix.some((p, i) => i < 2 && p !== path[i]))) return [];
    let query = this.#db.selectFrom("fedify_public_keys").select(["key_id", "owner", "key", "form"]).where("expires_at", ">", now);
    if (prefix?.length === 3) {
      if (typeof prefix[2] !== "string") return [];
      query = query.where("key_id", "=", storedKeyId(prefix[2]));
    }
    const listed = (await query.execute()).map((r) => {
      const keyId = keyIdOfStored(r.key_id);
      return { key: encodeKey([...path, keyId]), value: keyJson(keyId, r) };
    });
    if (!this.#postgres) return listed;
    // Keys held by their actors' rows (migration 0075).
    const actor = prefix?.length === 3 ? actorOfKey(prefix[2] as string) : undefined;
    if (prefix?.length === 3 && actor === undefined) return listed;
    const held = await sql<{ id: string; key: Uint8Array; form: number }>`select id, key, key_form as form from remote_actors
      where key is not null and key_expires_at > ${now}${actor === undefined ? sql`` : sql` and id = ${actor}`}`.execute(this.#db);
    for (const r of held.rows) {
      const keyId = `${r.id}#main-key`;
      listed.push({ key: encodeKey([...path, keyId]), value: keyJson(keyId, { owner: null, key: r.key, form: r.form }) });
    }
    return listed;
  }

  /** Moves a compact public key back to fedify_kv as its JSON, with its expiry (for cas). */
  async #demotePublicKey(keyId: string, encoded: string, now: number): Promise<void> {
    const row = (await readPublicKey(this.#db, keyId)).rows[0];
    if (row === undefined) return;
    await deletePublicKey(this.#db, keyId);
    if (isExpired(row.expires_at, now)) return;
    const value = keyJson(keyId, row);
    await this.#db.insertInto("fedify_kv").values({ key: encoded, value, expires_at: row.expires_at })
      .onConflict((oc) => oc.column("key").doUpdateSet({ value, expires_at: row.expires_at })).execute();
  }

  /**
   * The key column compared byte by byte.  SQLite's default collation already
   * does that; PostgreSQL's depends on the database locale, where the range
   * above would not mean "starts with", so force the C collation there.
   */
  #bytewiseKey(): Expression<string> {
    return this.#postgres ? sql<string>`key collate "C"` : sql<string>`key`;
  }

  async #deleteIfExpired(encodedKey: string, now: number): Promise<void> {
    await this.#db.deleteFrom("fedify_kv")
      .where("key", "=", encodedKey)
      .where("expires_at", "<=", now)
      .execute();
  }

  async #maybePurge(now: number): Promise<void> {
    if (now - this.#lastPurge < PURGE_INTERVAL_MS) return;
    this.#lastPurge = now;
    await this.#db.deleteFrom("fedify_kv").where("expires_at", "<=", now).execute();
    if (!this.#postgres) {
      this.#keySweep = await sweepExpiredKeysByKeyId(this.#db, this.#keySweep, now);
      return;
    }
    for (const table of ["fedify_public_keys", "remote_actors"] as const) this.#sweptTo[table] = await sweepExpiredKeys(this.#db, table, this.#sweptTo[table], now);
  }

  /** PostgreSQL: the page where each table's next sweep starts (see sweepExpiredKeys); processes start apart. */
  readonly #sweptTo = { fedify_public_keys: randomInt(2 ** 30), remote_actors: randomInt(2 ** 30) };
  /** SQLite: where fedify_public_keys' next sweep starts (see sweepExpiredKeysByKeyId). */
  #keySweep: KeySweep = { after: "", seen: 0, cycle: 0 };
}

/**
 * PostgreSQL: the pages a purge visits in each table, at least; and at least
 * this share of them (1/SWEEP_SHARE), so that each table is swept whole once
 * in SWEEP_SHARE purges (an hour at one a minute) however large it grows.
 */
const SWEEP_PAGES = 1024;
const SWEEP_SHARE = 60;

/**
 * PostgreSQL: clears the expired keys of one slice of `table`'s pages,
 * starting at page `from` (modulo the table's length), and returns where the
 * next slice starts. The purge used to read the whole of remote_actors (a
 * member's cached key lives in its actor's row, migration 0075) and of
 * fedify_public_keys every minute in every process: 4,762 pages at 10^5
 * members, about 48,000 at 10^6. An index on the expiry would cost bytes a
 * member and make every key's refresh a non-HOT update, for a sweep whose
 * only job is to free the bytes of keys nobody read again (a read finds an
 * expired key expired, and removes it, whether or not a sweep came by). So
 * each purge reads one slice by a TID range scan (no index: the pages are
 * read by their numbers), SWEEP_PAGES pages (8 MiB) or 1/SWEEP_SHARE of the
 * table, whichever is more, and the slice after it the next time (from the
 * first page again after the last): every page is visited once in at most
 * SWEEP_SHARE purges (an hour while keys are written). One statement: the
 * slice is taken from the table's size as it is then.
 */
async function sweepExpiredKeys(db: Kysely<DB>, table: "remote_actors" | "fedify_public_keys", from: number, now: number): Promise<number> {
  const clear = table === "remote_actors"
    ? sql`update remote_actors set ${NO_ROW_KEY} where key_expires_at <= ${now}`
    : sql`delete from fedify_public_keys where expires_at <= ${now}`;
  const { rows } = await sql<{ next: string }>`with size as (select pg_relation_size(${table}::regclass) / current_setting('block_size')::bigint as pages),
    span as (select lo, lo + greatest(${SWEEP_PAGES}::bigint, pages / ${SWEEP_SHARE}::bigint + 1) as hi from (select case when pages = 0 then 0 else ${from}::bigint % pages end as lo, pages from size) s),
    swept as (${clear}
      and ctid >= (select format('(%s,0)', lo)::tid from span) and ctid < (select format('(%s,0)', hi)::tid from span))
    select case when hi >= (select pages from size) then 0 else hi end as next from span`.execute(db);
  return Number(rows[0]!.next);
}

/** SQLite: the next slice of fedify_public_keys starts after key id `after`; `seen` keys in this cycle's slices so far, `cycle` in the last whole cycle's. */
interface KeySweep {
  readonly after: string;
  readonly seen: number;
  readonly cycle: number;
}

/** SQLite: the keys a purge visits, at least (about 4 MiB of fedify_public_keys at ~375 bytes a key). */
const SWEEP_KEYS = 10_000;

/**
 * SQLite's two statements of a sweep's slice, each a range of the primary
 * key (fedify_public_keys is WITHOUT ROWID: its rows are its key ids'
 * b-tree): `end`, how many of the next `limit` key ids after `after` there
 * are and the last of them; `clear`, the expired keys in (after, last].
 * Exported for the test of their query plans.
 */
export function keySweepSlice(db: Kysely<DB>, after: string, limit: number, last: string, now: number) {
  return {
    end: db.selectFrom((eb) => eb.selectFrom("fedify_public_keys").select("key_id").where("key_id", ">", after).orderBy("key_id").limit(limit).as("slice"))
      .select((eb) => [eb.fn.countAll<number>().as("n"), eb.fn.max("key_id").as("last")]),
    clear: db.deleteFrom("fedify_public_keys").where("key_id", ">", after).where("key_id", "<=", last).where("expires_at", "<=", now),
  };
}

/**
 * SQLite: the purge's sweep of fedify_public_keys, as PostgreSQL's
 * (sweepExpiredKeys) a slice at a time instead of the whole table every
 * minute (no index on the expiry, for the reasons given there): the next
 * SWEEP_KEYS key ids in the primary key's order, or 1/SWEEP_SHARE of the
 * keys the last whole cycle saw, whichever is more, and from the first key
 * again after the last. So every key is visited once in at most SWEEP_SHARE
 * purges once a cycle has counted the table (the first cycle, SWEEP_KEYS a
 * purge). A read still finds an expired key expired and removes it.
 */
async function sweepExpiredKeysByKeyId(db: Kysely<DB>, sweep: KeySweep, now: number): Promise<KeySweep> {
  const limit = Math.max(SWEEP_KEYS, Math.ceil(sweep.cycle / SWEEP_SHARE));
  const row = await keySweepSlice(db, sweep.after, limit, "", now).end.executeTakeFirstOrThrow();
  const n = Number(row.n);
  if (row.last !== null) await keySweepSlice(db, sweep.after, limit, row.last, now).clear.execute();
  const seen = sweep.seen + n;
  return n < limit || row.last === null ? { after: "", seen: 0, cycle: seen } : { after: row.last, seen, cycle: sweep.cycle };
}

/**
 * Keys Fedify reads on every delivery, kept in memory for a moment: the
 * circuit breaker's state for the inbox's host (read before and after each
 * send, nearly always absent) and the signature spec the host accepts (read
 * before and written after each send). Three reads and a write per delivery
 * were a fifth of a fan-out's database time. Another process's change is
 * seen at most this late: a few more deliveries to a host whose circuit just
 * opened, or a first knock with the other spec, which falls back anyway.
 * This process's own writes are seen at once.
 */
function memoMsOf(key: KvKey): number {
  if (key[0] !== "_fedify") return 0;
  if (key[1] === "circuit") return 1000;
  if (key[1] === "httpMessageSignaturesSpec") return 60_000;
  return 0;
}

const MEMO_ENTRIES = 10_000;

/**
 * The key Fedify 2.3's inbox handler checks when a POST arrives, before
 * queueing the activity: `["_fedify","activityIdempotence", origin + "\n" +
 * activity id (+ "\n" + which inbox)]`. Fedify writes that key only when it
 * processes an activity inline, without a queue; a queued activity is marked
 * under another key, `[…, origin, activity id]`, which the queue's handler
 * checks before running the listener and writes after it. With every inbox
 * queued, the receive-side read always missed: a round trip for each inbound
 * activity (on PostgreSQL, about 0.17 ms of driver CPU). A copy that arrives
 * again is still dropped by the handler's check, and by processOnce.
 */
function isReceiveIdempotenceKey(key: KvKey): boolean {
  return key.length === 3 && key[0] === "_fedify" && key[1] === "activityIdempotence" && typeof key[2] === "string" && key[2].includes("\n");
}

function encodeKey(key: KvKey): string {
  return JSON.stringify(key);
}

function encodeValue(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`KyselyKvStore cannot store a value of type ${typeof value}`);
  return text;
}

function expiresAt(options: KyselyKvSetOptions | undefined, now: number): number | null {
  return options?.ttl === undefined ? null : now + Math.max(0, Math.round(options.ttl.total("millisecond")));
}

function isExpired(expiresAt: number | null, now: number): boolean {
  return expiresAt !== null && expiresAt <= now;
}

/** set()'s statement for setWith, compiled once (src/db/prepared.ts): the update takes the new row's values. */
const upsertWith = prepared<[key: string, value: string, expiresAt: number | null], never>((db, key, value, expires_at) =>
  db.insertInto("fedify_kv")
    .values({ key, value, expires_at })
    .onConflict((oc) => oc.column("key").doUpdateSet((eb) => ({ value: eb.ref("excluded.value"), expires_at: eb.ref("excluded.expires_at") }))));

type StoredKeyRow = { owner: string | null; key: Uint8Array; form: number; expires_at: number };
const readStoredKey = prepared<[keyId: string], StoredKeyRow>((db, keyId) =>
  db.selectFrom("fedify_public_keys").select(["owner", "key", "form", "expires_at"]).where("key_id", "=", keyId));
/** PostgreSQL (migration 0075): the key in fedify_public_keys, or the one its actor's row holds; one statement. */
const readStoredOrActorKey = prepared<[keyId: string, actorId: string], StoredKeyRow>((db, keyId, actorId) =>
  db.selectFrom("fedify_public_keys").select(["owner", "key", "form", "expires_at"]).where("key_id", "=", keyId)
    .unionAll(db.selectFrom("remote_actors").select([sql<null>`null`.as("owner"), sql<Uint8Array>`key`.as("key"), sql<number>`key_form`.as("form"), sql<number>`key_expires_at`.as("expires_at")])
      .where("id", "=", actorId).where(sql<boolean>`key is not null`)));
async function readPublicKey(db: Kysely<DB>, keyId: string): Promise<{ rows: StoredKeyRow[] }> {
  const actor = rowHolderOf(db, keyId);
  return actor === undefined ? readStoredKey(db, storedKeyId(keyId)) : readStoredOrActorKey(db, storedKeyId(keyId), actor);
}

const deleteStoredKey = prepared<[keyId: string], never>((db, keyId) => db.deleteFrom("fedify_public_keys").where("key_id", "=", keyId));
async function deletePublicKey(db: Kysely<DB>, keyId: string): Promise<void> {
  const actor = rowHolderOf(db, keyId);
  if (actor === undefined) {
    await deleteStoredKey(db, storedKeyId(keyId));
    return;
  }
  await sql`with gone as (delete from fedify_public_keys where key_id = ${storedKeyId(keyId)})
    update remote_actors set ${NO_ROW_KEY} where id = ${actor} and key is not null`.execute(db);
}

/** An expired key out of both places (a fresher one written meanwhile stays). */
async function deleteExpiredKey(db: Kysely<DB>, keyId: string, now: number): Promise<void> {
  const actor = rowHolderOf(db, keyId);
  if (actor === undefined) {
    await db.deleteFrom("fedify_public_keys").where("key_id", "=", storedKeyId(keyId)).where("expires_at", "<=", now).execute();
    return;
  }
  await sql`with gone as (delete from fedify_public_keys where key_id = ${storedKeyId(keyId)} and expires_at <= ${now})
    update remote_actors set ${NO_ROW_KEY} where id = ${actor} and key_expires_at <= ${now}`.execute(db);
}

/** The actor whose remote_actors row may hold `keyId` on this database: on PostgreSQL, actorOfKey; SQLite keeps every key in fedify_public_keys. */
function rowHolderOf(db: Kysely<DB>, keyId: string): string | undefined {
  return db.getExecutor().adapter instanceof PostgresAdapter ? actorOfKey(keyId) : undefined;
}

/**
 * PostgreSQL (migration 0075): the actor whose remote_actors row can hold the
 * key `keyId`, when it is "https://…#main-key" (nearly every key: Mastodon,
 * Misskey, Pleroma, Lemmy, Fedify), stored there only when owned by that
 * actor (CompactKey.owner null). Such a key is held either by that row or,
 * while the actor has no row, by fedify_public_keys; the row's insert takes it
 * in (the migration's trigger), every write puts it in the row when there is
 * one, and every read and delete looks at both, each in one statement. About
 * 120 bytes a member less: no key id, tuple and hash index entry of its own.
 */
export function actorOfKey(keyId: string): string | undefined {
  return keyId.startsWith("https://") && keyId.endsWith("#main-key") && keyId.length > 17 ? keyId.slice(0, -9) : undefined;
}

const upsertPublicKey = prepared<[keyId: string, owner: string | null, key: Uint8Array, form: number, expiresAt: number], never>((db, key_id, owner, key, form, expires_at) =>
  db.insertInto("fedify_public_keys")
    .values({ key_id, owner, key, form, expires_at })
    .onConflict((oc) => oc.column("key_id").doUpdateSet((eb) => ({ owner: eb.ref("excluded.owner"), key: eb.ref("excluded.key"), form: eb.ref("excluded.form"), expires_at: eb.ref("excluded.expires_at") }))));

const deleteKv = prepared<[key: string], never>((db, key) => db.deleteFrom("fedify_kv").where("key", "=", key));

/**
 * The parts of writePublicKey's PostgreSQL statement, each written here
 * once: writePublicKey puts them together, and the follow's fast path puts
 * them into its own statement (JoinedKeyWrite: the actor, its key and the
 * Follow's record in one).
 *
 * `gone` takes the key id's value out of fedify_kv (a value cached there
 * before, or a cached null) and `old` its row out of fedify_public_keys;
 * `old` returns a row for each it deleted, so an insert that reads it
 * (tableKeyInsert) runs after the delete.
 */
export function withKeyCleared<D>(qc: QueryCreator<D>, encoded: string, stored: string) {
  return qc
    .with("gone", () => sql`(delete from fedify_kv where key = ${encoded})`)
    .with("old", () => sql`(delete from fedify_public_keys where key_id = ${stored} returning 1)`);
}

/**
 * The key's row into fedify_public_keys after withKeyCleared's `old`, where
 * `only` holds too. On PostgreSQL a key id is unique by an exclusion
 * constraint over a hash index (migration 0067: a 4-byte hash per key
 * instead of the key id again in a btree), which ON CONFLICT DO UPDATE
 * cannot take as its arbiter. So the old row is deleted (`old`) and the new
 * one inserted in the same statement: the insert reads `old` first, so the
 * delete has happened when it checks the constraint (a row this transaction
 * deleted conflicts with nothing). Two writers of one key at once: the
 * second's insert finds the first's row and does nothing (both wrote a key
 * just fetched; the cache keeps one).
 */
export function tableKeyInsert(qc: QueryCreator<DB>, stored: string, owner: string | null, key: Uint8Array, form: number, expiresAt: number, only?: RawBuilder<boolean>) {
  return qc.insertInto("fedify_public_keys").columns(["key_id", "owner", "key", "form", "expires_at"])
    .expression(sql`select ${stored}, ${owner}::text, ${key}::bytea, ${form}::smallint, ${expiresAt}::bigint where ${only === undefined ? sql`` : sql`${only} and `}(select count(*) from old) >= 0`)
    .onConflict((oc) => oc.doNothing());
}

/** The same columns emptied: the row holds no key. */
const NO_ROW_KEY = sql`key = null, key_form = null, key_expires_at = null`;

/** The columns of a remote_actors row that hold its actor's key (migration 0075), set to this key. */
export function actorRowKey(key: Uint8Array, form: number, expiresAt: number): ExtraActorColumns {
  return { key: sql`${key}::bytea`, key_form: sql`${form}::smallint`, key_expires_at: sql`${expiresAt}::bigint` };
}

/** `held`: the key into `actor`'s row, where `only` holds too; a row for the row it wrote. */
export function withRowKey<D>(qc: QueryCreator<D>, actor: string, key: Uint8Array, form: number, expiresAt: number, only?: RawBuilder<boolean>) {
  const set = sql.join(Object.entries(actorRowKey(key, form, expiresAt)).map(([column, value]) => sql`${sql.ref(column)} = ${value}`));
  return qc.with("held", () => sql`(update remote_actors set ${set} where id = ${actor}${only === undefined ? sql`` : sql` and ${only}`} returning 1)`);
}

/**
 * PostgreSQL, migration 0075: a key its actor owns goes into the actor's row
 * when there is one (else into fedify_public_keys, which the row's insert
 * empties); a key owned by another is taken out of the row. Compiled once
 * each (src/db/prepared.ts).
 */
const writeTableKey = prepared<[encoded: string, stored: string, owner: string | null, key: Uint8Array, form: number, expiresAt: number], never>(
  (db, encoded, stored, owner, key, form, expiresAt) => tableKeyInsert(withKeyCleared(db, encoded, stored), stored, owner, key, form, expiresAt), { shareParameters: true });
const writeOwnKey = prepared<[encoded: string, stored: string, actor: string, key: Uint8Array, form: number, expiresAt: number], never>(
  (db, encoded, stored, actor, key, form, expiresAt) =>
    tableKeyInsert(withRowKey(withKeyCleared(db, encoded, stored), actor, key, form, expiresAt), stored, null, key, form, expiresAt, sql<boolean>`not exists (select 1 from held)`), { shareParameters: true });
const writeOthersKey = prepared<[encoded: string, stored: string, actor: string, owner: string | null, key: Uint8Array, form: number, expiresAt: number], never>(
  (db, encoded, stored, actor, owner, key, form, expiresAt) =>
    tableKeyInsert(
      withKeyCleared(db, encoded, stored).with("held", () => sql`(update remote_actors set ${NO_ROW_KEY} where id = ${actor} and key is not null)`),
      stored, owner, key, form, expiresAt,
    ), { shareParameters: true });

/**
 * A compact key into fedify_public_keys, and out of fedify_kv (a value cached
 * there before, or a cached null). PostgreSQL: one statement, one round trip
 * (the join's fast path writes the follower's key inside its transaction),
 * of the parts above.
 */
async function writePublicKey(db: Kysely<DB>, keyId: string, { owner, key, form }: CompactKey, expiresAt: number, encoded: string, withNext = false): Promise<void> {
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    const stored = storedKeyId(keyId);
    const actor = actorOfKey(keyId);
    const write = actor === undefined
      ? writeTableKey.compiled(db, encoded, stored, owner, key, form, expiresAt)
      : owner === null
      ? writeOwnKey.compiled(db, encoded, stored, actor, key, form, expiresAt)
      : writeOthersKey.compiled(db, encoded, stored, actor, owner, key, form, expiresAt);
    if (withNext) await sendWithNext(db, write);
    else await db.executeQuery(write);
    return;
  }
  await upsertPublicKey(db, storedKeyId(keyId), owner, key, form, expiresAt);
  await deleteKv(db, encoded);
}

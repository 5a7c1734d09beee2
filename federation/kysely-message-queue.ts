import { createHash, randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { MessageQueue, MessageQueueDepth } from "@fedify/fedify";
import { type Compilable, type CompiledQuery, type Kysely, PostgresAdapter, type Selectable, type SelectQueryBuilder, sql } from "kysely";
import type { Database } from "../src/db/database.ts";
import type { WriteBatch } from "../src/db/batch.ts";
import { prepared } from "../src/db/prepared.ts";
import type { DB, FedifyMqTable } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { type KeyResolver, type Payload, prunePayloads, Rejoiner, split } from "./queue-payloads.ts";
import { executeGenericPlanned, executeNamed } from "../src/db/named-statement.ts";
import { HEARTBEAT_QUEUE, type Heard, listenShared, poolTag, type Subscription, type Wake } from "./shared-listen.ts";
import type { LaneRank } from "./queue-priority.ts";
import { LaneShare } from "./lane-share.ts";
import { type ClaimHints, claimHints, NO_HINTS } from "./claim-hints.ts";

/** The PostgreSQL channel every queue announces new messages on. */
export const NOTIFY_CHANNEL = "muster_mq";

/**
 * Fedify hands over @js-temporal/polyfill Durations while its types name the
 * global Temporal.Duration; the two are not assignable to each other, so we
 * accept anything that can report its length.
 */
export interface DurationLike {
  total(unit: "millisecond"): number;
}

export interface KyselyEnqueueOptions {
  readonly delay?: DurationLike;
  readonly orderingKey?: string;
  /**
   * A delivery whose activity goes to this one recipient only (a join's
   * Accept and welcome): the activity stays in the message's row (its keys
   * are still left out), with no payload row to write and read back.
   */
  readonly inlineActivity?: boolean;
  /**
   * The message's done key as stored (storedKey of its deliveryKey), when
   * the caller already computed it: a fan-out page computes its deliveries'
   * keys for its done check (fanout-pages.ts, notYetQueued) and hands each
   * to its enqueue, which then does not compute it again. enqueue() only:
   * enqueueMany's options are every message's.
   */
  readonly storedKey?: string;
}

export interface KyselyMessageQueueOptions {
  /** Logical queue in the shared `fedify_mq` table.  Default `"default"`. */
  readonly name?: string;
  /** Written to `lease_owner` so operators can see who holds a message.  Default `host:pid:random`. */
  readonly workerId?: string;
  /** Handlers run at once per listen() call.  Default 1. */
  readonly concurrency?: number;
  /**
   * How often an idle listener looks for work it was not woken for.  Default
   * 1000 ms; on PostgreSQL, while its LISTEN connection is up, 5000 ms
   * (LISTENING_POLL_MS) unless given.
   */
  readonly pollIntervalMs?: number;
  /** A handler still running after this is treated as failed.  Default 60 000 ms. */
  readonly handlerTimeoutMs?: number;
  /**
   * How long a claim is exclusive without renewal; renewed every third of it
   * while its handler runs.  Default 20 000 ms.
   */
  readonly leaseMs?: number;
  /** Deliveries (including ones whose worker died) before a message is dead-lettered.  Default 10. */
  readonly maxAttempts?: number;
  /** Delay after the first failed delivery, doubled each time.  Default 5000 ms. */
  readonly retryBaseDelayMs?: number;
  /** Cap on the retry delay.  Default 15 minutes. */
  readonly retryMaxDelayMs?: number;
  /**
   * Given, Fedify's deliveries are stored without their activity (kept once
   * in fedify_mq_payloads) and private keys (looked up again through this
   * when handled): see queue-payloads.ts.  Absent, messages are stored whole.
   */
  readonly resolveKey?: KeyResolver;
  /**
   * Given, claimed messages are first offered to it a batch at a time
   * (batch-delivery.ts); what it did not send goes to the listen() handler
   * as before, at most `concurrency` at once.
   */
  readonly batch?: BatchSender;
  /** Messages in flight (claimed, being sent) when `batch` is given.  Default 64. */
  readonly batchSize?: number;
  /**
   * This lane's place among the process's lanes (queue-priority.ts): an
   * interactive lane's claims and handlers make the bulk lanes wait.
   * Absent, the lane neither waits nor is waited for.
   */
  readonly rank?: LaneRank;
  /**
   * On PostgreSQL, a claim returns each message's activity body with it, so
   * handling it needs no read of fedify_mq_payloads: for a lane whose messages
   * each carry their own activity (a join's Accept and welcome). A fan-out's
   * deliveries share theirs, read once per process, so they leave it off.
   */
  readonly payloadsWithClaim?: boolean;
  /**
   * On PostgreSQL, a claim (and a settle's hand-over) also returns each
   * message's member gate with the member's state (gateHintSql), given to
   * `admit` with the message: a join's Accept and welcome are checked
   * without a query each. With payloadsWithClaim only.
   */
  readonly gatesWithClaim?: boolean;
  /**
   * On PostgreSQL, each listener holds at most its share of the lane's
   * messages in flight across the processes listening to it (lane-share.ts).
   * Default: for bulk lanes (rank.bulk), whose fan-outs have fewer ordering
   * keys than a worker has slots.
   */
  readonly share?: boolean;
}

/**
 * Asked for each claimed message before a batch sender is offered it: the
 * message to offer, or undefined to settle it as handled without sending
 * (what the handler's path does with a message its gate refuses).
 */
export type Admit = (message: unknown, hint?: GateHint) => Promise<unknown>;

/**
 * A message's member gate as the claim read it (gatesWithClaim): the ids
 * and state, quote-separated, or null/undefined when not read. Whoever
 * checks the gate uses it only when its ids are the message's own
 * (outbound.ts, memberGate).
 */
export type GateHint = string | null | undefined;

export interface ListenOptions {
  readonly signal?: AbortSignal;
  /** See Admit; without it every claimed message is offered as it is. */
  readonly admit?: Admit;
}

/** What became of a message of a claimed batch: sent, withheld by admit, or left to the handler. */
type Outcome3 = "sent" | "withheld" | "fallback";
const FALLBACK = Symbol("fallback");

/**
 * Sends what it can of a batch of messages; the rest ("fallback") go to the
 * handler. `each`, when given, is told each message's outcome as soon as it
 * is known (see STRAGGLER_MS).
 */
export interface BatchSender {
  /** `states`, when given, is each message's server state as its claim read it (null/undefined: not read). */
  deliver(messages: readonly unknown[], each?: (index: number, outcome: "sent" | "fallback") => void, states?: readonly ServerState[]): Promise<readonly ("sent" | "fallback")[]>;
}

/**
 * A delivery's server state as its claim read it (serverStateSql): the
 * circuit key and its value, the spec key and its value (null: none).
 */
export type ServerState = readonly (string | null)[] | null | undefined;

/**
 * A claimed batch's messages are settled together when the batch ends, so
 * their settle is one statement and the next messages of their keys go on
 * as one batch. A batch still running after this long waits on a slow
 * server (a POST may take the whole HTTP timeout, 10 s by default): what
 * has finished is settled then, and each message after it as it finishes,
 * rather than every slot of the batch and the next message of each of its
 * keys waiting for the slowest POST. Not sooner: the messages settled one by
 * one go on in batches of one for good (a settle hands their keys' next
 * messages over together), and on a loaded machine (load 10 on 2 cores) a
 * batch of 100 fast deliveries took over a second.
 */
const STRAGGLER_MS = 3000;

type Row = Pick<Selectable<FedifyMqTable>, "id" | "queue" | "message" | "ordering_key" | "attempts" | "last_error" | "created_at" | "dedupe_key" | "payload">;

/**
 * Fedify's per-inbox delivery messages are identified by activity, inbox and
 * attempt. When a fan-out is handled again after a crash it re-enqueues
 * deliveries it had already queued (or made): the key lets the queue drop
 * them, so each inbox gets each activity once. Other messages have no key.
 */
export function deliveryKey(message: unknown): string | null {
  const m = message as { type?: unknown; activityId?: unknown; inbox?: unknown; attempt?: unknown; circuitHeld?: unknown } | null;
  if (m?.type !== "outbox" || typeof m.activityId !== "string" || typeof m.inbox !== "string") return fanoutPageKey(message);
  // A copy Fedify's circuit breaker parks for later carries the same activity,
  // inbox and attempt as the message being handled; it is never a fan-out
  // re-run, and dropping it would lose the delivery.
  if (m.circuitHeld) return null;
  return deliveryKeyOf(m.activityId, m.inbox, typeof m.attempt === "number" ? m.attempt : 0);
}

/** deliveryKey's text for the delivery of `activityId` to `inbox`, try `attempt`. */
export function deliveryKeyOf(activityId: string, inbox: string, attempt: number): string {
  return `${activityId} ${inbox} ${attempt}`;
}

/**
 * A done key as PostgreSQL stores it (migration 0088): 16 bytes, a uuid,
 * where the key's text (activity id, inbox and attempt, 100-200 bytes) was
 * stored twice a delivery (fedify_mq.dedupe_key's unique index while it is
 * queued, then fedify_mq_done's primary key for 7 days), written and read
 * by the enqueue's insert and done check and by the settle. The first 4
 * bytes are SHA-256 of the key's first word (the activity id, or "fanout"
 * for a page), the other 12 SHA-256 of the whole key: a fan-out's keys sit
 * together in the indexes (as the texts, sharing their prefix, did) rather
 * than spread over every page of a week's keys; two keys of one activity
 * collide with odds of n²/2^97 (10^-17 for 10^6 inboxes). Migration 0088
 * turns stored text keys into these by the same formula, in SQL, so a fan-out
 * handled again after the upgrade still finds its deliveries done or queued.
 */
export function compactKey(key: string, head = keyHead(key)): string {
  const rest = createHash("sha256").update(key).digest("hex");
  return `${head}-${rest.slice(0, 4)}-${rest.slice(4, 8)}-${rest.slice(8, 12)}-${rest.slice(12, 24)}`;
}

/** A compact key's first 4 bytes (hex): SHA-256 of the key's first word. */
function keyHead(key: string): string {
  const space = key.indexOf(" ");
  return createHash("sha256").update(space < 0 ? key : key.slice(0, space)).digest("hex").slice(0, 8);
}

/** The done key as the database stores it: compact on PostgreSQL, the text itself on SQLite. */
export function storedKey(db: Kysely<DB>, key: string): string {
  return isPostgres(db) ? compactKey(key) : key;
}

/**
 * The stored done keys of the first tries of `activityId` to `inboxes` (a
 * fan-out page's deliveries), in order: on PostgreSQL the activity id, which
 * starts every one of them, is hashed once for all.
 */
export function storedDeliveryKeys(db: Kysely<DB>, activityId: string, inboxes: readonly string[]): string[] {
  const keys = inboxes.map((inbox) => deliveryKeyOf(activityId, inbox, 0));
  if (!isPostgres(db) || keys.length === 0) return keys;
  // Every key's first word is the same (the activity id's, up to a space): its hash is all of theirs.
  const head = keyHead(keys[0]!);
  return keys.map((key) => compactKey(key, head));
}

/**
 * Of these stored done keys, those queued (fedify_mq) or done
 * (fedify_mq_done): a fan-out page leaves their inboxes out
 * (fanout-pages.ts, notYetQueued).
 */
export async function queuedOrDone(db: Kysely<DB>, keys: readonly string[]): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < keys.length; i += 500) {
    const chunk = keys.slice(i, i + 500);
    const rows = isPostgres(db)
      ? (await sql<{ dedupe_key: string }>`select k.key as dedupe_key from unnest(${chunk}::uuid[]) k(key) cross join lateral (${doneOrQueuedSql(sql.ref("k.key"))}) x`.execute(db)).rows
      : await db.selectFrom("fedify_mq").select("dedupe_key").where("dedupe_key", "in", chunk)
        .unionAll(db.selectFrom("fedify_mq_done").select("dedupe_key").where("dedupe_key", "in", chunk))
        .execute();
    for (const r of rows) if (r.dedupe_key !== null) seen.add(r.dedupe_key);
  }
  return seen;
}

/**
 * Whether one done key is queued or done, as a lateral subquery per key
 * (LIMIT keeps PostgreSQL from flattening it into a join): so each key is a
 * probe of a unique index, whatever the statistics say. As `dedupe_key in
 * (500 keys)`, the planner costed 500 probes above a scan of fedify_mq_done
 * (random_page_cost 4) until that table held about 7·10^4 keys, and a
 * fan-out's pages each scanned the keys of every delivery made before them,
 * twice (this look-up, and the enqueue's own check after its insert): 7 % of
 * PostgreSQL's samples in a fan-out to 10^5 personal inboxes, growing with
 * the square of the fan-out.
 */
function doneOrQueuedSql(key: ReturnType<typeof sql.ref>) {
  return sql`select 1 from fedify_mq m where m.dedupe_key = ${key} union all select 1 from fedify_mq_done d where d.dedupe_key = ${key} limit 1`;
}

/**
 * Fedify puts the sender's private keys (as JWK) in every delivery message.
 * A queued message needs them; a dead letter is kept for an operator to
 * read, indefinitely, so it keeps which key (keyId) but not the key itself.
 */
export function withoutPrivateKeys(encoded: string): string {
  let message: unknown;
  try {
    message = JSON.parse(encoded);
  } catch {
    return encoded;
  }
  const keys = (message as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || !keys.some((k) => k && typeof k === "object" && "privateKey" in k)) return encoded;
  return JSON.stringify({
    ...(message as object),
    keys: keys.map((k) => (k && typeof k === "object" && "privateKey" in k ? { ...k, privateKey: "(removed from the dead letter)" } : k)),
  });
}

/**
 * A page of a streamed fan-out (federation/fanout-pages.ts) is keyed like a
 * delivery, so a page handled again after a crash does not queue its
 * successor twice.
 */
function fanoutPageKey(message: unknown): string | null {
  const m = message as { type?: unknown; activityId?: unknown; cursor?: unknown } | null;
  if (m?.type !== "muster.fanout" || typeof m.activityId !== "string") return null;
  return `fanout ${m.activityId} ${typeof m.cursor === "string" ? m.cursor : ""}`;
}

/** How long handled delivery keys are remembered for dropping re-enqueued duplicates. */
const DONE_RETENTION_MS = 7 * 24 * 3600_000;

interface Claimed extends Row {
  /**
   * The body of the activity the message names (its `payload`), when the
   * claim returned it (payloadsWithClaim on PostgreSQL): no read of its own.
   */
  readonly payload_body?: string | null;
  /** The message's gate and its member's state, when the claim read them (gatesWithClaim). */
  readonly gate_hint?: string | null;
  /** Its server's state for the batch sender, when the claim read it (gatesWithClaim, serverStateSql). */
  readonly server_state?: ServerState;
  /** The lease_owner value of this particular claim. */
  readonly token: string;
  /**
   * The listener that claimed it, which takes (on PostgreSQL) the message
   * behind it in its ordering key when settling it claims that one too
   * (#settlePostgres); undefined once that listener stops.
   */
  readonly handoff?: Handoff;
  /** MUSTER_QUEUE_TRACE: claimed by a settle's handoff rather than a claim. */
  readonly handedOff?: boolean;
  /** The listener that claimed it, asked (on SQLite) whether to claim more in the transaction that settles it (#flushCompletions). */
  readonly refill?: Refill;
}

/** A listener's side of a settle's hand-over (PostgreSQL). */
interface Handoff {
  /**
   * How many of `settling` of its messages with an ordering key may each
   * hand over the next message of their key to it (what its share allows,
   * lane-share.ts); the others' next messages are left to any listener.
   */
  room(settling: number): number;
  /** Starts handling messages a settle claimed for the listener; false when it has stopped. */
  take(claimed: Claimed[]): boolean;
}

/**
 * A listener's side of claiming in a settle's transaction (SQLite): how many
 * messages it would claim once `settling` of its own are settled (0: none),
 * and where the claimed ones start.
 */
interface Refill {
  want(settling: number): number;
  start(claimed: Claimed[], asked: number): void;
}

// In-process enqueue wakes listeners on the same connection pool at once;
// other pools and processes hear about it through NOTIFY (PostgreSQL) or
// their next poll (SQLite).
const localListeners = new WeakMap<Kysely<DB>, Set<Wake>>();

// A multi-row insert is one statement; SQLite caps bound parameters at 32766
// and each row binds 6, so fan-outs larger than this are split inside one
// transaction.
const INSERT_CHUNK = 1000;

/**
 * An idle lane's poll on PostgreSQL while its LISTEN connection is up: every
 * enqueue, retry and freed ordering key is announced by NOTIFY (a delayed
 * one with its time), so the poll only finds the messages of a worker that
 * died (whose leases run out after leaseMs anyway). At 1 s, each worker's
 * idle lanes claimed in vain six times a second, a third of the claims
 * PostgreSQL ran during the workers benchmark's joins.
 */
const LISTENING_POLL_MS = 5000;
/** SQLite: how soon a lane claims again while its claim window's cursor goes through it (CLAIM_WINDOW). */
const WINDOW_TURN_MS = 20;
/** SQLite: a whole-lane claim this slow moves the lane to windowed claims for WINDOWED_MS (CLAIM_WINDOW). */
const SLOW_CLAIM_MS = 20;
const WINDOWED_MS = 30_000;

/**
 * A bulk lane's heartbeat (lane-share.ts): checked this often, sent when its
 * messages in flight moved by an eighth (at least 4) or HEARTBEAT_EVERY_MS
 * passed, and only while it has messages in flight or was told of some
 * within HEARTBEAT_ACTIVE_MS: an idle deployment sends none.
 */
const HEARTBEAT_CHECK_MS = 100;
const HEARTBEAT_EVERY_MS = 1000;
const HEARTBEAT_ACTIVE_MS = 10_000;
/**
 * On PostgreSQL, a NOTIFY wakes every process's listener of the lane, and
 * for a join's Accept all but one claim in vain (0.9 empty claims a join
 * with two workers, a third of the workers' statements). A listener of an
 * interactive lane whose claim found nothing lost that race: for this long
 * it lets the others take what is announced, and claims once at the end if
 * anything was announced meanwhile. So a listener that keeps losing claims
 * about 1/LOSER_BACKOFF_MS times a second instead of once per message, the
 * one that keeps winning answers at once, and a message whose winner is
 * gone (or busy) waits at most this long more for the loser.
 */
const LOSER_BACKOFF_MS = 100;
/** After giving back keys above its share, a listener gives back no more for this long (its peers' counts are a heartbeat late). */
const SHARE_COOLDOWN_MS = 1000;

/** See #refreshStatistics; per database, shared by the queues (tables) on it. */
const ANALYZE_AFTER_ROWS = 1000;
const ANALYZE_EVERY_MS = 2000;
/**
 * Rows to add before the next ANALYZE doubles after each one, up to this:
 * once the statistics say the table is large the claim's plan is right, and
 * every 1000 rows a fan-out of 10^5 ran ANALYZE every 2 s in each process
 * that queues deliveries (a tenth of PostgreSQL's samples in the
 * under-fanout bench with two workers). After ANALYZE_RESET_MS without one,
 * a new burst starts again from ANALYZE_AFTER_ROWS.
 */
const ANALYZE_MAX_ROWS = 64_000;
const ANALYZE_RESET_MS = 60_000;
const statistics = new WeakMap<Kysely<DB>, { analyzedAt: number; rowsSince: number; after: number }>();
/**
 * See #reclaimDeadRows; per database, shared by the queues (tables) on it:
 * after this many rows settled (deleted) since the last VACUUM, and at most
 * every VACUUM_EVERY_MS, one VACUUM of fedify_mq, one at a time per process.
 */
const VACUUM_AFTER_ROWS = 10_000;
const VACUUM_EVERY_MS = 2000;
const vacuums = new WeakMap<Kysely<DB>, { at: number; rowsSince: number; running: Promise<void> | undefined }>();

/** A fedify_mq row as enqueued. */
interface NewRow {
  readonly queue: string;
  readonly message: string;
  readonly ordering_key: string | null;
  readonly available_at: number;
  readonly attempts: number;
  readonly created_at: number;
  readonly dedupe_key: string | null;
  readonly payload: string | null;
  /** Only on the rows of a lane whose claim reads them (gatesWithClaim): every row of an insert has them or none. */
  readonly gate_union_id?: string | null;
  readonly gate_member_id?: string | null;
  readonly inbox_origin?: string | null;
}

/** Rows to insert, and the payloads they name. */
interface NewRows {
  readonly rows: NewRow[];
  readonly payloads: Map<string, Payload>;
}
const MAX_ERROR_LENGTH = 8000;

/**
 * A lane's claimable messages, oldest ready first: `now` is the claim's
 * time, a message is claimable once available and not leased (or its lease
 * ran out).
 */
function candidates(db: Kysely<DB>, queue: string, now: number, limit: number, from?: number) {
  // SQLite's windows (CLAIM_WINDOW) drive the search, a row looked up by id
  // for each of theirs (CROSS JOIN keeps them the outer loop: SQLite would
  // otherwise walk the lane by fedify_mq_claim and test each row against them).
  const rows = from === undefined
    ? db.selectFrom("fedify_mq as m")
    : db.selectFrom(claimWindow(queue, now, from).as("w")).crossJoin("fedify_mq as m").whereRef("m.id", "=", "w.id") as unknown as SelectQueryBuilder<DB & { m: DB["fedify_mq"] }, "m", object>;
  return rows
    .select("m.id")
    .where("m.queue", "=", queue)
    .where("m.available_at", "<=", now)
    .where((eb) => eb.or([eb("m.lease_until", "is", null), eb("m.lease_until", "<=", now)]))
    // One message per ordering key at a time, in id order: a message waits
    // while an earlier one with its key is still queued (even if delayed
    // for a retry) or while any one with its key is being handled. On
    // SQLite only the first is asked (migration 0072): a leased message was
    // its key's first when claimed, and SQLite gives ids in commit order, so
    // no message of its key can come before it. On PostgreSQL a transaction
    // may commit a lower id after a higher one of its key was claimed, so
    // both are asked, in one probe of the key's rows: the key's oldest row
    // answers the first at once, and a message first of its key reads the
    // rest of them for a lease, as the second probe did alone. The second
    // probe was about a tenth of the outbox claim's planning (EXPLAIN's
    // planning time), paid whenever a connection planned it anew.
    .where((eb) => eb.or([
      eb("m.ordering_key", "is", null),
      eb.not(eb.exists(
        eb.selectFrom("fedify_mq as e")
          .select(sql.lit(1).as("one"))
          .whereRef("e.ordering_key", "=", "m.ordering_key")
          .where((e) => isPostgres(db) ? e.or([e("e.id", "<", e.ref("m.id")), e("e.lease_until", ">", now)]) : e("e.id", "<", e.ref("m.id")))
          .whereRef("e.queue", "=", "m.queue")
          // PostgreSQL: no index has lease_until (migration 0079: the lease
          // update is HOT); OFFSET 0 keeps this a probe of the key's few
          // rows by fedify_mq_key_order; without it PostgreSQL hashed the
          // lease check, a scan of the whole queue for each claim.
          .$if(isPostgres(db), (qb) => qb.offset(sql.lit(0) as never)),
      )),
    ]))
    // Oldest ready first: a retry that has come due goes before messages
    // that were queued after it was first tried.
    .orderBy("m.available_at")
    .orderBy("m.id")
    .limit(limit);
}

const isPostgres = (db: Kysely<DB>) => db.getExecutor().adapter instanceof PostgresAdapter;

/**
 * SQLite: the rows of a lane that one claim looks at
 * --------------------------------------------------
 * A lane's claim walks its ready rows oldest first and keeps those that are
 * not leased and first of their ordering key. During a personal fan-out to
 * 10^5 members on 100 servers, the delivery lane held 5·10^4 rows under 100
 * keys: once each key's first message was in flight, every claim (and the
 * probe before it) walked all 5·10^4 rows, each with a look-up of its key,
 * to find nothing: 150-730 ms each on the main thread, the event loop
 * stopped 300-800 ms at a time (a probe and a claim back to back), and
 * every Follow's Accept and reply waited behind it (issue 16, "never
 * waiting behind a fan-out"; /work/notes/sqlitetail.md).
 *
 * So on SQLite a claim looks at no more than two small windows of the lane:
 * its CLAIM_WINDOW oldest ready rows, where the first message of nearly
 * every key is (pages are queued in roster order, keys interleaved), and
 * the rows whose ids lie in the next CLAIM_SPAN ids after the lane's
 * cursor, which moves on after each claim that came back short and starts
 * over at the table's first id once past its last. A message first of its key further back
 * (a second fan-out's, behind the first's 10^5) is found within a turn of
 * the cursor. Ordering per key is unchanged (the claim still takes only a
 * key's first message), and a lane under CLAIM_WINDOW rows claims as before.
 */
export const CLAIM_WINDOW = 256;
/** Ids the cursor's window covers (SQLite; see CLAIM_WINDOW). */
export const CLAIM_SPAN = 1024;
// UNION, not UNION ALL: the two windows overlap while the cursor is near
// the lane's head, and a row twice in them would fill two of the claim's
// LIMIT slots. The cursor's window by id, along the table's own order (`+queue`: not by
// fedify_mq_claim, which has no order by id within a lane: SQLite walked
// and sorted the whole lane for it); a window whose rows are not yet
// available is only looked at.
function claimWindow(queue: string, now: number, from: number) {
  return sql<{ id: number }>`(select id from (select id from fedify_mq where queue = ${queue} and available_at <= ${now} order by available_at, id limit ${sql.lit(CLAIM_WINDOW)})
    union select id from fedify_mq where id > ${from} and id <= ${from} + ${sql.lit(CLAIM_SPAN)} and +queue = ${queue})`;
}
/**
 * The table's first and last ids (two look-ups at the ends of the rowid
 * tree): where the cursor's window starts over, and when. It starts over at
 * the first live id, not at 0: ids only grow, so after many fan-outs the live
 * rows sit millions of ids in, and a cursor from 0 would turn through
 * thousands of empty windows before reaching them.
 */
const idBoundsStatement = prepared<[], { first: number | null; last: number | null }>((db) => db.selectNoFrom([
  db.selectFrom("fedify_mq").select(sql<number | null>`min(id)`.as("first")).as("first"),
  db.selectFrom("fedify_mq").select(sql<number | null>`max(id)`.as("last")).as("last"),
]) as never);

// The claim, the probe and the settle are built and compiled once per
// dialect (src/db/prepared.ts): building the claim with Kysely, every time,
// cost more CPU than SQLite spent running it.

/** Whether a lane has anything to claim (SQLite's read before its claim). */
const wholeProbeStatement = prepared<[string, number], { id: number }>((db, queue, now) => candidates(db, queue, now, 1 as never));
/** wholeProbeStatement within the lane's windows (CLAIM_WINDOW). */
const probeStatement = prepared<[string, number, number], { id: number }>((db, queue, now, from) => candidates(db, queue, now, 1 as never, from));

/**
 * Leases up to `limit` ready messages in one statement, which is what makes
 * the claim atomic: on PostgreSQL the inner SELECT locks its rows and skips
 * rows another claimer has locked; on SQLite an UPDATE holds the database's
 * single write lock from start to end, across processes too.
 */
function claimQuery(db: Kysely<DB>, queue: never, now: never, limit: never, token: never, leaseUntil: never, from?: never) {
  return db.updateTable("fedify_mq")
    .set((eb) => ({
      lease_owner: token,
      lease_until: leaseUntil,
      attempts: eb("attempts", "+", 1),
      // A lease still set on a claimable row ran out: its holder died or stalled.
      last_error: eb.case()
        .when("lease_until", "is not", null)
        .then(sql.lit("lease expired: the worker holding the message died or stalled"))
        .else(eb.ref("last_error"))
        .end(),
    }))
    .where("id", "in", candidates(db, queue, now, limit, from).$if(isPostgres(db), (qb) => qb.forUpdate().skipLocked()))
    .returning(["id", "queue", "message", "ordering_key", "attempts", "last_error", "created_at", "dedupe_key", "payload"]);
}
const claimStatement = prepared<[string, number, number, string, number], Row>(claimQuery);
/** SQLite's claim: claimStatement within the lane's two windows (CLAIM_WINDOW), the cursor's from its last argument. */
const windowedClaimStatement = prepared<[string, number, number, string, number, number], Row>(claimQuery);
/** claimQuery, and the body of each message's activity (payloadsWithClaim, PostgreSQL's only; sizedClaim). */
function claimWithBodyQuery(db: Kysely<DB>, queue: never, now: never, limit: never, token: never, leaseUntil: never) {
  return claimQuery(db, queue, now, limit, token, leaseUntil).returning(payloadBodySql(sql.ref("fedify_mq.payload")).as("payload_body"));
}
/** A message's shared payload's body (fedify_mq_payloads), read with its claim or hand-over. */
function payloadBodySql(payload: ReturnType<typeof sql.ref>) {
  return sql<string | null>`(select p.body from fedify_mq_payloads p where p.id = ${payload})`;
}

/** A claimed row's hint columns (migration 0089, claim-hints.ts), by the name its statement gives the row. */
type HintRefs = { readonly union: ReturnType<typeof sql.ref>; readonly member: ReturnType<typeof sql.ref>; readonly origin: ReturnType<typeof sql.ref> };
const hintRefs = (row: string): HintRefs => ({ union: sql.ref(`${row}.gate_union_id`), member: sql.ref(`${row}.gate_member_id`), origin: sql.ref(`${row}.inbox_origin`) });

/**
 * The gate's ids and the member's state (empty when there is no such
 * member), separated by a quote (which neither id, a UUID, holds), or null
 * when the row names no gate: read with the claim, so the gate checked
 * before sending needs no query of its own (GateHint). From the row's
 * columns, written at enqueue from the message object (claim-hints.ts):
 * before migration 0089 two regexp_match calls over the message's whole
 * text found them, 13 % of PostgreSQL's samples of the lane's claim and
 * settle. A row without them (queued before) gets no hint: its gate asks.
 */
function gateHintSql(h: HintRefs) {
  return sql<string | null>`(case when ${h.union} is not null and ${h.member} is not null then ${h.union} || '"' || ${h.member} || '"' || coalesce((select gs.state from members gs where gs.union_id = ${h.union} and gs.id = ${h.member}), '') end)`;
}
/**
 * The delivery's server state that the batch sender reads before sending
 * (batch-delivery.ts: the circuit breaker's state for the inbox's host, the
 * signature spec its origin accepted), read with the claim: the two
 * fedify_kv keys as the row's inbox origin gives them, each with its value
 * (null: none, or expired at `now`), or null when the row has no origin.
 * The sender uses them only when the keys are the ones it derives from the
 * message (ServerState).
 */
function serverStateSql(h: HintRefs, now: unknown) {
  // The keys spelled inline (each twice): a FROM of two one-row subqueries
  // naming them was two more query levels to plan on every claim that was
  // planned anew, about 6 % of its planning.
  const circuit = sql<string>`'["_fedify","circuit","' || substr(${h.origin}, strpos(${h.origin}, '://') + 3) || '"]'`;
  const spec = sql<string>`'["_fedify","httpMessageSignaturesSpec","' || ${h.origin} || '"]'`;
  const value = (key: typeof circuit) => sql`(select v.value from fedify_kv v where v.key = ${key} and (v.expires_at is null or v.expires_at > ${now}::bigint))`;
  return sql<string[] | null>`(case when ${h.origin} is not null then array[${circuit}, ${value(circuit)}, ${spec}, ${value(spec)}] end)`;
}
/** claimWithBodyQuery, and each message's gate hint and server state (gatesWithClaim, PostgreSQL's only; sizedClaim). */
function claimWithGateQuery(db: Kysely<DB>, queue: never, now: never, limit: never, token: never, leaseUntil: never) {
  return claimQuery(db, queue, now, limit, token, leaseUntil)
    .returning(payloadBodySql(sql.ref("fedify_mq.payload")).as("payload_body"))
    .returning(gateHintSql(hintRefs("fedify_mq")).as("gate_hint"))
    .returning(serverStateSql(hintRefs("fedify_mq"), now).as("server_state"));
}

/**
 * The claim's sizes on PostgreSQL: a claim asks for the largest of these
 * that its free slots allow, written into its text as a constant. With the
 * LIMIT a parameter, PostgreSQL's generic plan of the named statement
 * assumes a tenth of the queue's ready rows are taken, so it looked dearer
 * than the first runs' custom plans (LIMIT 8 of a full queue) and every run
 * was planned again: 255 custom plans of 255 claims in bench/claim-cost.ts,
 * 0.5-0.9 ms of planning each (20 % of PostgreSQL's samples there). With a
 * constant, the generic plan costs what a custom one does and is kept. A
 * few texts per kind of claim, each prepared once per connection; steps of
 * an eighth or less, so a bulk lane's claim of its free half (up to 128)
 * leaves few of its slots empty until the next.
 */
const CLAIM_SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128] as const;
/** The largest claim size up to `free` slots (at least 1). */
export function claimSize(free: number): number {
  let size: number = CLAIM_SIZES[0];
  for (const s of CLAIM_SIZES) if (s <= free) size = s;
  return size;
}
type ClaimBuilder = (db: Kysely<DB>, queue: never, now: never, limit: never, token: never, leaseUntil: never) => Compilable<unknown>;
const sizedClaims = new Map<ClaimBuilder, Map<number, ReturnType<typeof prepared<[string, number, string, number], never>>>>();
/** `build`'s claim of exactly `size` rows, the size a constant of its text (CLAIM_SIZES). */
function sizedClaim(build: ClaimBuilder, size: number) {
  const bySize = sizedClaims.get(build) ?? new Map();
  sizedClaims.set(build, bySize);
  let statement = bySize.get(size);
  if (statement === undefined) {
    statement = prepared<[string, number, string, number], never>((db, queue, now, token, leaseUntil) => build(db, queue, now, sql.lit(size) as never, token, leaseUntil) as never);
    bySize.set(size, statement);
  }
  return statement;
}

/** enqueueWith's row (no dedupe key), in the caller's transaction: a join writes two. With its claim hints (claim-hints.ts), null where its lane reads none. */
type InsertArgs = [queue: string, message: string, orderingKey: string | null, availableAt: number, createdAt: number, payload: string | null, gateUnionId: string | null, gateMemberId: string | null, inboxOrigin: string | null];
function insertValues(db: Kysely<DB>, queue: never, message: never, ordering_key: never, available_at: never, created_at: never, payload: never, gate_union_id: never, gate_member_id: never, inbox_origin: never) {
  return db.insertInto("fedify_mq").values({ queue, message, ordering_key, available_at, attempts: 0, created_at, dedupe_key: null, payload, gate_union_id, gate_member_id, inbox_origin });
}
const insertStatement = prepared<InsertArgs, never>((db, q, m, k, a, c, p, gu, gm, o) => insertValues(db, q, m, k, a, c, p, gu, gm, o));
const insertNotifyingStatement = prepared<[...InsertArgs, notice: string], never>((db, q, m, k, a, c, p, gu, gm, o, notice) =>
  insertValues(db, q, m, k, a, c, p, gu, gm, o).returning(sql<string>`pg_notify(${NOTIFY_CHANNEL}, ${notice})`.as("notified")) as never);
/** Two such rows of one queue in one INSERT (enqueueAllWith), in this order; no payload row. */
type InsertPairArgs = [queue: string, message: string, orderingKey: string | null, availableAt: number, createdAt: number, gateUnionId: string | null, gateMemberId: string | null, inboxOrigin: string | null,
  message2: string, orderingKey2: string | null, availableAt2: number, createdAt2: number, gateUnionId2: string | null, gateMemberId2: string | null, inboxOrigin2: string | null];
function insertPairValues(db: Kysely<DB>, queue: never, message: never, ordering_key: never, available_at: never, created_at: never, gate_union_id: never, gate_member_id: never, inbox_origin: never,
  message2: never, ordering_key2: never, available_at2: never, created_at2: never, gate_union_id2: never, gate_member_id2: never, inbox_origin2: never) {
  return db.insertInto("fedify_mq").values([
    { queue, message, ordering_key, available_at, attempts: 0, created_at, dedupe_key: null, payload: null, gate_union_id, gate_member_id, inbox_origin },
    { queue, message: message2, ordering_key: ordering_key2, available_at: available_at2, attempts: 0, created_at: created_at2, dedupe_key: null, payload: null, gate_union_id: gate_union_id2, gate_member_id: gate_member_id2, inbox_origin: inbox_origin2 },
  ]);
}
const insertPairStatement = prepared<InsertPairArgs, never>((db, ...a) => insertPairValues(db, ...a));
const insertPairNotifyingStatement = prepared<[...InsertPairArgs, notice: string], never>((db, q, m, k, a, c, gu, gm, o, m2, k2, a2, c2, gu2, gm2, o2, notice) =>
  insertPairValues(db, q, m, k, a, c, gu, gm, o, m2, k2, a2, c2, gu2, gm2, o2).returning(sql<string>`pg_notify(${NOTIFY_CHANNEL}, ${notice})`.as("notified")) as never);
const insertPayloadStatement = prepared<[id: string, body: string, createdAt: number], never>((db, id, body, created_at) =>
  db.insertInto("fedify_mq_payloads").values({ id, body, created_at }).onConflict((oc) => oc.column("id").doNothing()));

/**
 * Deletes the handled messages (ids as a JSON array) that this claim still
 * holds: SQLite's settle, one statement per claim in the settled batch. A
 * statement per message was most of the main thread's database time in a
 * fan-out to personal inboxes (10^5 DELETEs, each through Kysely's
 * executor and the driver's write lock).
 */
const settleStatement = prepared<[string, string], { id: number }>((db, ids, token) =>
  db.deleteFrom("fedify_mq")
    .where("lease_owner", "=", token)
    .where("id", "in", (eb) => eb.selectFrom(sql<{ value: number }>`json_each(${ids})`.as("j")).select("j.value"))
    .returning("id") as never);

/**
 * The done keys of the handled messages (ids as a JSON array) that this
 * claim still holds, read from their rows just before settleStatement
 * deletes them, in the same transaction: one compiled statement whatever
 * the batch's size, where a multi-row INSERT built by Kysely for each
 * settle (a new SQL text for each batch size) cost more than SQLite's
 * running it.
 */
const doneStatement = prepared<[string, string, number], never>((db, ids, token, at) =>
  db.insertInto("fedify_mq_done")
    .columns(["dedupe_key", "done_at"])
    .expression((eb) => eb.selectFrom("fedify_mq")
      .select((sb) => [sb.ref("dedupe_key").as("dedupe_key"), sb.val(at).as("done_at")])
      .where("lease_owner", "=", token)
      .where("id", "in", (sb) => sb.selectFrom(sql<{ value: number }>`json_each(${ids})`.as("j")).select("j.value"))
      .where("dedupe_key", "is not", null) as never)
    .onConflict((oc) => oc.column("dedupe_key").doNothing()) as never);


const log = logger("queue");
// MUSTER_QUEUE_TRACE=1 (bench/under-fanout.ts reads it from the workers'
// stderr): each interactive message's wait to be claimed and time to settle,
// and every lane's claims, which no log level shows without a line per delivery.
const TRACE = process.env.MUSTER_QUEUE_TRACE === "1";
/** Per lane: claims, rows they claimed, rows settles handed over, hand-overs (batches), batch messages left to the handler, settled early (STRAGGLER_MS). */
const claimCounts: Record<string, [number, number, number, number, number, number]> = {};
function traceCount(lane: string, i: number, n = 1): void {
  const counts = (claimCounts[lane] ??= [0, 0, 0, 0, 0, 0]);
  counts[i] = counts[i]! + n;
}
if (TRACE) setInterval(() => process.stderr.write(`TRACECLAIMS ${process.pid} ${JSON.stringify(claimCounts)}\n`), 2000).unref();

/**
 * Fedify's durable message queue (inbox, outbox and fan-out) in the
 * `fedify_mq` table, on SQLite or PostgreSQL, shared by every process that
 * opens the same database.
 *
 * Delivery is at least once: a message is leased while its handler runs and
 * deleted only after the handler succeeds.  If the process dies, the lease
 * runs out and any listener takes the message again.
 */
export class KyselyMessageQueue implements MessageQueue {
  /**
   * Fedify retries deliveries itself (per-inbox backoff, Retry-After, the
   * circuit breaker, permanent-failure handling) and enqueues each retry as a
   * new message, which it can only do when this is false.  Our own retry is
   * the safety net for handlers that throw anyway.
   */
  readonly nativeRetrial = false;
  readonly name: string;
  readonly workerId: string;

  readonly #database: Database;
  readonly #concurrency: number;
  readonly #pollIntervalMs: number;
  /** The poll interval while NOTIFY is heard (PostgreSQL's LISTEN connection up). */
  readonly #listeningPollMs: number;
  readonly #handlerTimeoutMs: number;
  readonly #leaseMs: number;
  readonly #maxAttempts: number;
  readonly #retryBaseDelayMs: number;
  readonly #retryMaxDelayMs: number;
  readonly #splits: boolean;
  readonly #rejoiner: Rejoiner;
  readonly #batch: BatchSender | undefined;
  readonly #rank: LaneRank | undefined;
  readonly #payloadsWithClaim: boolean;
  readonly #gatesWithClaim: boolean;
  /** See KyselyMessageQueueOptions.share. */
  readonly #shares: boolean;
  #listens = 0;
  /** Claimed messages in flight at most: #concurrency, or the batch size with a batch sender. */
  readonly #inFlightLimit: number;
  /** Fallback handler slots free (a batch sender's rejects run through the handler, #concurrency at once). */
  #handlerSlots: number;
  readonly #slotWaiters: (() => void)[] = [];
  #claims = 0;
  /** SQLite: the id after which the claim's second window starts (CLAIM_SPAN), and whether it is on its way through the table. */
  #windowFrom = 0;
  #windowTurning = false;
  /** SQLite: until when this lane claims within windows (#timed). */
  #windowedUntil = 0;
  #settledHere = 0;
  /** enqueue() calls waiting for #flushPending. */
  readonly #pending: { message: unknown; options: KyselyEnqueueOptions | undefined; resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** Handled messages waiting for #flushCompletions. */
  readonly #completions: { claimed: Claimed; resolve: () => void; reject: (error: unknown) => void }[] = [];
  readonly #closing = new AbortController();
  readonly #listening = new Set<Promise<void>>();

  constructor(database: Database, options: KyselyMessageQueueOptions = {}) {
    this.#database = database;
    this.name = options.name ?? "default";
    this.workerId = options.workerId ?? `${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
    this.#concurrency = positiveInteger("concurrency", options.concurrency ?? 1);
    this.#pollIntervalMs = positive("pollIntervalMs", options.pollIntervalMs ?? 1000);
    this.#listeningPollMs = options.pollIntervalMs ?? Math.max(this.#pollIntervalMs, LISTENING_POLL_MS);
    this.#handlerTimeoutMs = positive("handlerTimeoutMs", options.handlerTimeoutMs ?? 60_000);
    // Short, and renewed every third of it while the handler runs: so it runs
    // out only when its holder is gone, and a crashed worker's messages are
    // taken again within leaseMs, not after the handler timeout.
    this.#leaseMs = positive("leaseMs", options.leaseMs ?? 20_000);
    this.#maxAttempts = positiveInteger("maxAttempts", options.maxAttempts ?? 10);
    this.#retryBaseDelayMs = nonNegative("retryBaseDelayMs", options.retryBaseDelayMs ?? 5000);
    this.#retryMaxDelayMs = nonNegative("retryMaxDelayMs", options.retryMaxDelayMs ?? 15 * 60_000);
    this.#splits = options.resolveKey !== undefined;
    this.#rejoiner = new Rejoiner(database.db, options.resolveKey);
    this.#batch = options.batch;
    this.#rank = options.rank;
    this.#payloadsWithClaim = options.payloadsWithClaim === true && database.dialect === "postgres";
    this.#gatesWithClaim = this.#payloadsWithClaim && options.gatesWithClaim === true;
    this.#shares = database.dialect === "postgres" && (options.share ?? options.rank?.bulk === true);
    this.#inFlightLimit = options.batch === undefined ? this.#concurrency : Math.max(this.#concurrency, positiveInteger("batchSize", options.batchSize ?? 64));
    this.#handlerSlots = this.#concurrency;
  }

  /**
   * Calls made in the same turn of the event loop are written together, a
   * transaction per INSERT_CHUNK rows (group commit). Fedify enqueues a
   * fan-out's deliveries with one concurrent enqueue() each whenever they
   * carry an ordering key: one transaction apiece kept 20,000 of them ahead
   * of every claim for 50 s before the first delivery went out.
   */
  enqueue(message: unknown, options?: KyselyEnqueueOptions): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ message, options, resolve, reject });
      if (this.#pending.length === 1) setImmediate(() => void this.#flushPending());
    });
  }

  async #flushPending(): Promise<void> {
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0, INSERT_CHUNK);
      // Encoded here, a chunk at a time, not when enqueued: a fan-out's
      // messages share one activity object, while their JSON texts (5 KB
      // each with the key) would all be alive at once.
      const rows: NewRows = { rows: [], payloads: new Map() };
      const accepted: typeof batch = [];
      for (const p of batch) {
        try {
          this.#row(rows, p.message, p.options, p.options?.storedKey ?? this.#storedKey(deliveryKey(p.message)));
          accepted.push(p);
        } catch (error) {
          p.reject(error);
        }
      }
      try {
        if (rows.rows.length > 0) await this.#insert(rows);
        for (const p of accepted) p.resolve();
      } catch (error) {
        for (const p of accepted) p.reject(error);
      }
      // better-sqlite3 answers synchronously, so without this the whole
      // backlog is written in one run of microtasks and no claim (a timer
      // away) starts until it is: the first of 10^5 deliveries waited 18.7 s.
      if (this.#pending.length > 0) await new Promise((resolve) => setImmediate(resolve));
    }
  }

  #storedKey(key: string | null): string | null {
    return key === null ? null : storedKey(this.#database.db, key);
  }

  /** Adds a new row for `message` to `into`, available after the options' delay. */
  #row(into: NewRows, message: unknown, options: KyselyEnqueueOptions | undefined, dedupeKey: string | null): NewRow {
    const now = Date.now();
    const delay = options?.delay === undefined ? 0 : Math.ceil(options.delay.total("millisecond"));
    if (!(delay >= 0)) throw new RangeError(`delay must not be negative, got ${delay} ms`);
    const stored = this.#splits ? split(message, options?.inlineActivity === true) : { text: encodeMessage(message), payload: null };
    if (stored.payload !== null) into.payloads.set(stored.payload.id, stored.payload);
    const row: NewRow = {
      queue: this.name,
      message: stored.text,
      ordering_key: options?.orderingKey ?? null,
      available_at: now + delay,
      attempts: 0,
      created_at: now,
      dedupe_key: dedupeKey,
      payload: stored.payload?.id ?? null,
      ...(this.#gatesWithClaim ? claimHints(message) : {}),
    };
    into.rows.push(row);
    return row;
  }

  async enqueueMany(messages: readonly unknown[], options?: KyselyEnqueueOptions): Promise<void> {
    if (messages.length === 0) return;
    const rows: NewRows = { rows: [], payloads: new Map() };
    for (const message of messages) this.#row(rows, message, options, this.#storedKey(deliveryKey(message)));
    await this.#insert(rows);
  }

  /**
   * Inserts rows in one transaction, leaving out deliveries already made: a
   * key still queued is dropped by the unique index, and a key already done
   * is deleted again before the commit. Checking for done keys after the
   * insert, not before, is what closes the race with a worker finishing that
   * very delivery meanwhile: on PostgreSQL the insert waits on the unique
   * index for the finishing transaction, and the check (a statement later,
   * so a fresh snapshot) sees its done key; on SQLite the transaction holds
   * the only write lock throughout.
   */
  async #insert({ rows, payloads }: NewRows): Promise<void> {
    const availableAt = rows.reduce((min, r) => Math.min(min, r.available_at), Infinity);
    const postgres = this.#database.dialect === "postgres";
    // On PostgreSQL the NOTIFY rides on the insert (sent at its commit), not
    // a statement of its own after it.
    const notify = postgres ? sql<string>`pg_notify(${NOTIFY_CHANNEL}, ${this.#notifyPayload(availableAt, true)})`.as("notified") : undefined;
    if (postgres && payloads.size === 0 && rows.length <= INSERT_CHUNK && rows.every((r) => r.dedupe_key === null)) {
      // Nothing to check against done keys: one statement, its own transaction.
      await this.#database.db.insertInto("fedify_mq").values(rows).returning(notify!).execute();
      await this.#announce(availableAt, true);
      await this.#refreshStatistics(rows.length);
      return;
    }
    const dropped = await this.#database.db.transaction().execute(async (trx) => {
      if (payloads.size > 0) {
        const now = Date.now();
        await trx.insertInto("fedify_mq_payloads")
          .values([...payloads.values()].map((p) => ({ id: p.id, body: p.body, created_at: now })))
          .onConflict((oc) => oc.column("id").doNothing())
          .execute();
      }
      const inserted: { id: number; dedupe_key: string | null }[] = [];
      for (let i = 0; i < rows.length; i += INSERT_CHUNK) {
        inserted.push(...await trx.insertInto("fedify_mq").values(rows.slice(i, i + INSERT_CHUNK))
          .onConflict((oc) => oc.column("dedupe_key").doNothing())
          .returning(["id", "dedupe_key"])
          .$if(notify !== undefined, (qb) => qb.returning(notify!))
          .execute());
      }
      const keyed = inserted.filter((r): r is { id: number; dedupe_key: string } => r.dedupe_key !== null);
      let n = 0;
      for (let i = 0; i < keyed.length; i += INSERT_CHUNK) {
        const chunk = keyed.slice(i, i + INSERT_CHUNK);
        if (postgres) {
          // Each key looked up on its own in fedify_mq_done's primary key (see doneOrQueuedSql).
          const r = await sql`delete from fedify_mq where id = any(array(
            select k.id from unnest(${chunk.map((k) => k.id)}::bigint[], ${chunk.map((k) => k.dedupe_key)}::uuid[]) k(id, key)
            cross join lateral (select 1 from fedify_mq_done d where d.dedupe_key = k.key limit 1) x))`.execute(trx);
          n += Number(r.numAffectedRows ?? 0);
          continue;
        }
        const r = await trx.deleteFrom("fedify_mq")
          .where("id", "in", chunk.map((k) => k.id))
          .where("dedupe_key", "in", (eb) => eb.selectFrom("fedify_mq_done").select("dedupe_key").where("dedupe_key", "in", chunk.map((k) => k.dedupe_key)))
          .executeTakeFirst();
        n += Number(r.numDeletedRows);
      }
      return n;
    });
    if (dropped > 0) log.info("Dropped {n} deliveries already made (a fan-out handled again)", { n: dropped });
    await this.#announce(availableAt, postgres);
    await this.#refreshStatistics(rows.length);
  }

  /**
   * A fan-out takes the queue from empty to 10^5 rows in seconds, while
   * autovacuum refreshes PostgreSQL's statistics about once a minute: until
   * then the planner believes the table nearly empty, and a claim sorts every
   * ready row and checks each one's ordering key (40 ms a claim at 20,000
   * messages, against 0.4 ms once analyzed). So the queue analyzes the table
   * itself once ANALYZE_AFTER_ROWS rows have been added since it last did,
   * twice as many after each time (ANALYZE_MAX_ROWS), at most every
   * ANALYZE_EVERY_MS.
   */
  async #refreshStatistics(added: number): Promise<void> {
    if (this.#database.dialect !== "postgres") return;
    const { db } = this.#database;
    const stats = statistics.get(db) ?? { analyzedAt: 0, rowsSince: 0, after: ANALYZE_AFTER_ROWS };
    statistics.set(db, stats);
    stats.rowsSince += added;
    if (Date.now() - stats.analyzedAt > ANALYZE_RESET_MS) stats.after = ANALYZE_AFTER_ROWS;
    if (stats.rowsSince < stats.after || Date.now() - stats.analyzedAt < ANALYZE_EVERY_MS) return;
    stats.analyzedAt = Date.now();
    stats.rowsSince = 0;
    stats.after = Math.min(ANALYZE_MAX_ROWS, stats.after * 2);
    await sql`analyze fedify_mq`.execute(this.#database.db).catch((error: unknown) => {
      log.warn("Could not analyze fedify_mq: {error}", { error: describeError(error) });
    });
  }

  /**
   * Every message leaves a dead row version on PostgreSQL when it is
   * settled, in the heap and in each of fedify_mq's indexes (and, before
   * migration 0079 made the lease a HOT update, another when it was leased);
   * the claim, the settle's look-ups of a key's next message and the
   * fan-out's dedupe checks walk past them until VACUUM removes them. A
   * fan-out of 10^5 leaves 10^5 (then 2·10^5) in a minute, while autovacuum looks at a table about once
   * a minute at best (and not at all where it is off, as on this project's
   * CI PostgreSQL): the 10^5 personal-inbox fan-out slowed from 800 to 450
   * deliveries a second as they piled up, the settle's statement busy in
   * PostgreSQL most of the time. So the queue vacuums the table itself once
   * VACUUM_AFTER_ROWS rows have been settled since it last did, at most every
   * VACUUM_EVERY_MS, without waiting for it (SKIP_LOCKED: a VACUUM another
   * process runs already is enough): that fan-out took 156 s instead of 239,
   * back to back on a loaded machine, its dead rows kept under 14,000.
   */
  #reclaimDeadRows(settled: number): void {
    const { db } = this.#database;
    const state = vacuums.get(db) ?? { at: Date.now(), rowsSince: 0, running: undefined };
    vacuums.set(db, state);
    state.rowsSince += settled;
    if (state.running !== undefined || state.rowsSince < VACUUM_AFTER_ROWS || Date.now() - state.at < VACUUM_EVERY_MS) return;
    state.rowsSince = 0;
    // Awaited by close(), so the database is not closed under it.
    state.running = sql`vacuum (skip_locked) fedify_mq`.execute(db).then(() => {}, (error: unknown) => {
      log.warn("Could not vacuum fedify_mq: {error}", { error: describeError(error) });
    }).finally(() => {
      state.running = undefined;
      state.at = Date.now();
    });
  }

  /**
   * Enqueues inside the caller's transaction, so a state change and the work
   * it causes commit or roll back together (the outbox pattern). On
   * PostgreSQL the NOTIFY is sent through the same transaction, so workers
   * hear of the message only once it is committed and visible.
   */
  async enqueueWith(executor: Kysely<DB>, message: unknown, options?: KyselyEnqueueOptions & { readonly batch?: WriteBatch }): Promise<void> {
    const rows: NewRows = { rows: [], payloads: new Map() };
    const row = this.#row(rows, message, options, null);
    const availableAt = row.available_at;
    // With a batch, the statements are only queued, in this order, and run when the caller flushes it (still in its transaction).
    const batch = options?.batch;
    for (const p of rows.payloads.values()) {
      if (batch) batch.push(insertPayloadStatement.compiled(executor, p.id, p.body, Date.now()));
      else await insertPayloadStatement(executor, p.id, p.body, Date.now());
    }
    const values = [row.queue, row.message, row.ordering_key, row.available_at, row.created_at, row.payload, ...hintsOf(row)] as const;
    if (this.#database.dialect === "postgres") {
      // Sent at the caller's commit, to every pool, this one included: its
      // lanes must not claim before the row is visible. Ready at once: "at"
      // 0, so a transaction's several messages for this lane send one
      // notification (PostgreSQL folds identical ones).
      const notice = this.#notifyPayload(availableAt <= Date.now() ? 0 : availableAt, false);
      if (batch) batch.push(insertNotifyingStatement.compiled(executor, ...values, notice));
      else await insertNotifyingStatement(executor, ...values, notice);
    } else {
      // SQLite has one connection: a listener woken now claims right after
      // the transaction releases it, and so sees the committed row.
      if (batch) {
        batch.push(insertStatement.compiled(executor, ...values));
        batch.after(() => wakeLocal(this.#database.db, this.name, availableAt));
      } else {
        await insertStatement(executor, ...values);
        wakeLocal(this.#database.db, this.name, availableAt);
      }
    }
  }

  /**
   * enqueueWith for several messages with the same options: their rows in
   * one INSERT when there are two and no payload row to write (a join's
   * Accept and welcome, inlineActivity), in the order given (so the first
   * has the lower id and leaves first under their ordering key); otherwise
   * one enqueueWith each. Same rows, same notification, one statement less.
   */
  async enqueueAllWith(executor: Kysely<DB>, messages: readonly unknown[], options?: KyselyEnqueueOptions & { readonly batch?: WriteBatch }): Promise<void> {
    const rows: NewRows = { rows: [], payloads: new Map() };
    for (const m of messages) this.#row(rows, m, options, null);
    if (rows.rows.length !== 2 || rows.payloads.size > 0) {
      for (const m of messages) await this.enqueueWith(executor, m, options);
      return;
    }
    const [a, b] = rows.rows as [NewRow, NewRow];
    const availableAt = Math.min(a.available_at, b.available_at);
    const values = [a.queue, a.message, a.ordering_key, a.available_at, a.created_at, ...hintsOf(a), b.message, b.ordering_key, b.available_at, b.created_at, ...hintsOf(b)] as const;
    const batch = options?.batch;
    if (this.#database.dialect === "postgres") {
      const notice = this.#notifyPayload(availableAt <= Date.now() ? 0 : availableAt, false);
      if (batch) batch.push(insertPairNotifyingStatement.compiled(executor, ...values, notice));
      else await insertPairNotifyingStatement(executor, ...values, notice);
    } else if (batch) {
      batch.push(insertPairStatement.compiled(executor, ...values));
      batch.after(() => wakeLocal(this.#database.db, this.name, availableAt));
    } else {
      await insertPairStatement(executor, ...values);
      wakeLocal(this.#database.db, this.name, availableAt);
    }
  }

  /**
   * Forgets handled delivery keys older than the retention window, and
   * activities no queued delivery names any more.
   */
  async pruneDone(now = Date.now()): Promise<number> {
    const r = await this.#database.db.deleteFrom("fedify_mq_done").where("done_at", "<", now - DONE_RETENTION_MS).executeTakeFirst();
    await prunePayloads(this.#database.db, now);
    return Number(r.numDeletedRows);
  }

  /**
   * Messages of this lane that this queue object has settled (handled and
   * deleted) since it was made: a fan-out page waiting for room reads it
   * between counts of the backlog (fanout-pages.ts, waitForRoom).
   */
  get settledHere(): number {
    return this.#settledHere;
  }

  /**
   * This lane's messages ready to be handled (available now, leased or not),
   * counted up to `limit`: a fan-out page asks before queueing more
   * deliveries (fanout-pages.ts, waitForRoom). Reads at most `limit` entries
   * of fedify_mq_claim.
   */
  async readyBacklog(limit: number): Promise<number> {
    const { db } = this.#database;
    const row = await db.selectFrom(
      db.selectFrom("fedify_mq").select(sql.lit(1).as("one"))
        .where("queue", "=", this.name)
        .where("available_at", "<=", Date.now())
        .limit(limit)
        .as("ready"),
    ).select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /**
   * Messages not currently leased.  Messages held back behind an earlier one
   * with the same ordering key count as ready.
   */
  async getDepth(): Promise<MessageQueueDepth> {
    const now = Date.now();
    const row = await this.#database.db.selectFrom("fedify_mq")
      .select((eb) => [
        eb.fn.countAll().as("queued"),
        eb.fn.count(eb.case().when("available_at", "<=", now).then(sql.lit(1)).end()).as("ready"),
      ])
      .where("queue", "=", this.name)
      .where((eb) => eb.or([eb("lease_until", "is", null), eb("lease_until", "<=", now)]))
      .executeTakeFirstOrThrow();
    const queued = Number(row.queued);
    const ready = Number(row.ready);
    return { queued, ready, delayed: queued - ready };
  }

  /**
   * Handles messages until `signal` aborts, then waits for the handlers
   * already running (each bounded by handlerTimeoutMs) before resolving, so
   * a graceful shutdown drains.  Never rejects.  On PostgreSQL each call
   * holds one pooled connection for LISTEN until it returns.
   */
  listen(handler: (message: any) => Promise<void> | void, options: ListenOptions = {}): Promise<void> {
    const signal = options.signal === undefined ? this.#closing.signal : AbortSignal.any([options.signal, this.#closing.signal]);
    const listening = this.#listen(handler, signal, options.admit);
    this.#listening.add(listening);
    void listening.finally(() => this.#listening.delete(listening));
    return listening;
  }

  /**
   * Stops every listen() on this queue and resolves once they have drained
   * and given back their connections, so the database can close cleanly.
   * Enqueueing keeps working.
   */
  async close(): Promise<void> {
    this.#closing.abort();
    while (this.#listening.size > 0) await Promise.allSettled([...this.#listening]);
    await vacuums.get(this.#database.db)?.running;
  }

  async #listen(handler: (message: any) => Promise<void> | void, signal: AbortSignal, admit: Admit | undefined): Promise<void> {
    if (signal.aborted) return;
    const alarm = new Alarm();
    const inFlight = new Set<Promise<void>>();
    const onAbort = () => alarm.ring();
    signal.addEventListener("abort", onAbort, { once: true });
    // This listener's share of the lane across processes (lane-share.ts):
    // undefined, no cap.
    const listenerId = `${this.workerId}/${++this.#listens}`;
    const share = this.#shares ? new LaneShare(listenerId) : undefined;
    /** When this listener was last told of messages for its lane (it heartbeats for a while after). */
    let woken = 0;
    // See LOSER_BACKOFF_MS: interactive lanes on PostgreSQL (a bulk lane claims in batches and shares its keys).
    const backsOff = this.#database.dialect === "postgres" && this.#rank !== undefined && !this.#rank.bulk && !this.#shares;
    let backoffUntil = 0;
    // Another process's NOTIFY waits out the back-off; this process's own wakes (a message its settle
    // left waiting behind an ordering key, its own enqueue) do not: no other process raced for those first.
    const waker = (afterBackoff: boolean): Wake => (queue, at) => {
      if (queue !== this.name) return;
      woken = Date.now();
      alarm.ringAt(afterBackoff ? Math.max(at, backoffUntil) : at);
    };
    const wake = waker(true);
    const wakeHere = waker(false);
    const limit = this.#inFlightLimit;
    // Whether the last claim filled every slot it asked for, so more may be
    // ready. When it did not, the lane was drained at that moment: anything
    // newer rings the alarm (an enqueue here, NOTIFY from elsewhere, a
    // finished message's ordering key), so a finished handler need not claim
    // again. That claim found nothing about twice per message handled.
    let more = false;
    // Messages this listener may claim now: its slots, or its share when less
    // (lane-share.ts) while the lane has fewer claimable messages than it
    // asked for. The share is there for a lane whose ordering keys are fewer
    // than the listeners' slots (a fan-out to personal inboxes on 10^2
    // servers), which one listener would otherwise keep to itself through
    // the settles' hand-overs. While claims come back full there is more work
    // than slots and nothing to share out: capped then, a fan-out through
    // shared inboxes (a key, so a message, per server, nothing handed over)
    // was held to what both workers held a heartbeat before plus a quarter,
    // each claim 3-5 messages instead of a batch (804 claims for 2,399
    // deliveries in one worker), each claim and settle a commit.
    const ceiling = () => (more ? limit : Math.min(limit, share?.cap(inFlight.size) ?? Infinity));
    // A busy bulk lane claims once this many of them are free.
    const claimBatchOf = (ceiling: number) => Math.max(1, Math.floor(ceiling / 2));
    const heard: Heard | undefined = share && ((queue, peer, n) => {
      if (queue !== this.name) return;
      const before = ceiling();
      share.heard(peer, n);
      // A peer's load went up, so this listener's share did: claim what it may now take.
      const now = ceiling();
      if (now > before && now > inFlight.size) alarm.ring();
    });
    const locals = localListeners.get(this.#database.db) ?? new Set();
    localListeners.set(this.#database.db, locals);
    locals.add(wakeHere);
    const subscription = await this.#subscribe(wake, signal, heard);
    /** Messages this listener is handling: id to the token of its claim. */
    const held = new Map<number, string>();
    const renewal = setInterval(() => void this.#renew(held), Math.max(1, Math.floor(this.#leaseMs / 3)));
    // The heartbeat: while this listener has work, or was told of some lately.
    let beatN = -1;
    let beatAt = 0;
    const heartbeat = share === undefined ? undefined : setInterval(() => {
      const now = Date.now();
      const n = inFlight.size;
      if (n === 0 && now - woken > HEARTBEAT_ACTIVE_MS) return;
      if (now - beatAt < HEARTBEAT_EVERY_MS && Math.abs(n - beatN) < Math.max(4, beatN / 8)) return;
      beatN = n;
      beatAt = now;
      void this.#heartbeat(listenerId, n);
    }, HEARTBEAT_CHECK_MS);
    // Given to each claim: on PostgreSQL the settle of a message with an
    // ordering key claims the next one of that key for this listener
    // (#settlePostgres), so a join's welcome follows its Accept here without
    // a NOTIFY that woke every worker to claim it (and all but one to find
    // nothing).
    // When this listener last came down to its share by giving keys back, for SHARE_COOLDOWN_MS.
    let gaveBack = Number.NEGATIVE_INFINITY;
    // While giving back: the fair share it is coming down to. A settle can give
    // back only its own messages' keys, and they settle a few at a time: the
    // first settle above the cap used to give back its one key and start the
    // cooldown, so a listener holding every key of a lane let one go a second
    // (a late peer got 40 of the 225 messages left; the share test's 37/363).
    let givingBackTo: number | undefined;
    const handoff: Handoff = {
      // Each settled message's key hands its next one over, in its slot;
      // above its cap (lane-share.ts) a listener keeps its fair share and
      // gives back the rest as they settle, then waits for its peers to report what they took.
      room: (settling) => {
        if (signal.aborted) return 0;
        if (share === undefined) return settling;
        const now = Date.now();
        // No peer heard any more (stopped, or idle): nobody would claim what is given back.
        if (share.peers(now) === 0) givingBackTo = undefined;
        if (givingBackTo === undefined) {
          const { fair, cap } = share.limits(inFlight.size, now);
          if (inFlight.size <= cap || now - gaveBack < SHARE_COOLDOWN_MS) return settling;
          givingBackTo = fair;
        }
        // inFlight still counts the settling messages.
        const kept = inFlight.size - settling;
        const room = Math.min(settling, Math.max(0, givingBackTo - kept));
        if (kept + room <= givingBackTo) {
          givingBackTo = undefined;
          gaveBack = now;
        }
        return room;
      },
      take: (rows) => {
        if (signal.aborted) return false;
        if (TRACE) {
          traceCount(this.name, 2, rows.length);
          traceCount(this.name, 3);
        }
        start(rows.map((row) => ({ ...row, handoff, refill, ...(TRACE ? { handedOff: true } : {}) })));
        return true;
      },
    };
    // An interactive lane's messages, from claim to settle, hold the
    // process's bulk lanes back (queue-priority.ts).
    const interactive = this.#rank !== undefined && !this.#rank.bulk ? this.#rank.priority : undefined;
    // On SQLite a busy lane claims in the transaction that settles its
    // finished messages, as the slots they free: one commit instead of two,
    // and the index pages both touch (the ordering key's, the claim
    // order's) written to the WAL once. In a fan-out to personal inboxes the
    // claim's own commit and page writes were the costliest statement of the
    // main thread after the settle's.
    const refill: Refill | undefined = this.#database.dialect !== "sqlite" ? undefined : {
      want: (settling) => {
        if (signal.aborted || !more) return 0;
        // A bulk lane yielding to interactive work claims through the loop
        // below, which waits for it (queue-priority.ts).
        if (this.#rank?.bulk && this.#rank.priority.busy) return 0;
        const free = limit - inFlight.size + settling;
        return free >= claimBatchOf(limit) ? free : 0;
      },
      start: (claimed, asked) => {
        more = claimed.length === asked;
        start(claimed);
      },
    };
    const start = (claimed: Claimed[]) => {
      interactive?.begin(claimed.length);
      const tasks = this.#batch !== undefined && claimed.length > 0 ? this.#deliverBatch(claimed, handler, admit, signal) : claimed.map((message) => this.#deliver(message, handler));
      for (const [i, message] of claimed.entries()) {
        held.set(message.id, message.token);
        const claimedAt = Date.now();
        const task: Promise<void> = tasks[i]!.finally(() => {
          if (TRACE && this.name !== "delivery" && this.name !== "fanout") process.stderr.write(`TRACE ${this.name}${message.handedOff ? "_next" : ""} wait ${claimedAt - Number(message.created_at)} handle ${Date.now() - claimedAt}\n`);
          interactive?.end();
          held.delete(message.id);
          inFlight.delete(task);
          // Free slots, and maybe a message that was waiting behind this
          // one's ordering key. Claimed a few slots at a time: during a
          // fan-out a claim per finished delivery was the costliest
          // statement of all (2.4 claims per delivery, most of the
          // database time), since each one walks past the messages held
          // back behind ordering keys.
          if (more) {
            const c = ceiling();
            if (c - inFlight.size >= claimBatchOf(c) || inFlight.size === 0) alarm.ring();
          }
        });
        inFlight.add(task);
      }
    };
    try {
      while (!signal.aborted) {
        // A bulk lane claims once the process's interactive work is done
        // (or has been waited for long enough): see queue-priority.ts.
        if (this.#rank?.bulk) await this.#rank.priority.yield(signal);
        if (signal.aborted) break;
        const c = ceiling();
        const free = c - inFlight.size;
        // A busy bulk lane claims a batch at a time, when enough of its slots
        // are free (a finished message rings then): woken meanwhile (another
        // worker's settle announces what waits behind its ordering keys, a
        // NOTIFY per settle), it would claim a few rows each time.
        const batchDue = !more || !this.#rank?.bulk || free >= claimBatchOf(c) || inFlight.size === 0;
        if (free > 0 && batchDue) {
          let claimed: Claimed[] = [];
          // On PostgreSQL one of a few sizes (claimSize); what it leaves is claimed next time round.
          const ask = this.#database.dialect === "postgres" ? claimSize(free) : free;
          // A claim that may find interactive work holds the bulk lanes from
          // now: their next claim would otherwise go first.
          interactive?.begin();
          try {
            claimed = await this.#claim(ask, !more, handoff, refill);
          } catch (error) {
            log.error("Could not claim messages from queue {queue}: {error}", { queue: this.name, error });
          } finally {
            interactive?.end();
          }
          more = claimed.length === ask;
          if (backsOff && claimed.length === 0) backoffUntil = Date.now() + LOSER_BACKOFF_MS;
          start(claimed);
          if (claimed.length === ask) continue;
        }
        if (signal.aborted) break;
        // A lane with messages in flight claims again as each one finishes;
        // one with none, whose cursor is on its way, soon (CLAIM_WINDOW).
        await alarm.wait(this.#windowTurning && inFlight.size === 0 ? Math.min(WINDOW_TURN_MS, this.#pollIntervalMs) : subscription?.live() ? this.#listeningPollMs : this.#pollIntervalMs);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      locals.delete(wakeHere);
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
      clearInterval(renewal);
      clearInterval(heartbeat);
      await subscription?.close();
    }
  }

  /** Extends the leases of the messages still being handled. */
  async #renew(held: ReadonlyMap<number, string>): Promise<void> {
    if (held.size === 0) return;
    const ids = [...held.keys()];
    const tokens = [...new Set(held.values())];
    const { db, dialect } = this.#database;
    try {
      await db.updateTable("fedify_mq")
        .set({ lease_until: Date.now() + this.#leaseMs })
        // On PostgreSQL, skipping rows locked meanwhile: those are being
        // settled (deleted) by this process. Waiting for them, the renewal
        // and a settle locking the same rows in another order deadlocked;
        // PostgreSQL aborted the settle, the leases ran out, and the batch's
        // messages were delivered a second time (seen as repeats at the
        // receivers in the workers benchmark and worker-deliveries.test.ts).
        .where("id", "in", dialect === "postgres"
          ? (eb) => eb.selectFrom("fedify_mq").select("id").where("id", "in", ids).where("lease_owner", "in", tokens).forUpdate().skipLocked()
          : ids)
        .where("lease_owner", "in", tokens)
        .execute();
    } catch (error) {
      // Tried again at the next tick; a lease that runs out meanwhile means
      // the message may be handled twice, which #complete reports.
      log.warn("Could not renew {n} leases in queue {queue}: {error}", { n: ids.length, queue: this.name, error: describeError(error) });
    }
  }

  /**
   * Leases up to `limit` ready messages in one statement, which is what makes
   * the claim atomic: on PostgreSQL the inner SELECT locks its rows and skips
   * rows another claimer has locked; on SQLite an UPDATE holds the database's
   * single write lock from start to end, across processes too.
   */
  async #claim(limit: number, probe: boolean, handoff?: Handoff, refill?: Refill): Promise<Claimed[]> {
    const { db, dialect } = this.#database;
    const now = Date.now();
    // On SQLite a lane with nothing ready is told by a read, which takes no
    // write lock and writes nothing: an UPDATE that leases nothing still
    // opened a write transaction, waited in line behind every other writer
    // of the process (sqlite-driver.ts) and committed. Idle lanes poll, and
    // a lane whose next message waits behind an ordering key claims in vain
    // after each message it finishes: most claims of a join found nothing.
    // Another process may lease the probed rows meanwhile; the UPDATE below
    // checks again, atomically, so that only makes the claim come back short.
    // Not when the last claim filled every slot: the lane is busy, and the
    // read would only repeat the UPDATE's search (a tenth of a busy lane's
    // database time).
    if (probe && dialect === "sqlite" && !(await this.#readySqlite(db, now))) return [];
    const token = `${this.workerId}#${++this.#claims}`;
    let rows: Row[];
    if (dialect === "postgres") {
      const build: ClaimBuilder = this.#gatesWithClaim ? claimWithGateQuery : this.#payloadsWithClaim ? claimWithBodyQuery : claimQuery;
      const compiled: CompiledQuery<Row> = sizedClaim(build, limit).compiled(db, this.name, now, token, now + this.#leaseMs);
      // On its generic plan: the same plan as for any values, which PostgreSQL otherwise made again on most runs.
      rows = (await executeGenericPlanned(db, compiled)).rows;
    } else {
      rows = await this.#claimRowsSqlite(db, now, limit, token);
    }
    if (TRACE) {
      traceCount(this.name, 0);
      traceCount(this.name, 1, rows.length);
    }
    return rows.sort((a, b) => a.id - b.id).map((row) => ({ ...row, token, handoff, refill }));
  }

  /** #claim's UPDATE on SQLite inside the caller's transaction (#flushCompletions). */
  async #claimSqlite(trx: Kysely<DB>, limit: number, refill: Refill): Promise<Claimed[]> {
    const now = Date.now();
    const token = `${this.workerId}#${++this.#claims}`;
    const rows = await this.#claimRowsSqlite(trx, now, limit, token);
    return rows.sort((a, b) => a.id - b.id).map((row) => ({ ...row, token, refill }));
  }

  /** SQLite's probe before a claim: whether the lane has a claimable message, over the whole lane or its windows (CLAIM_WINDOW). */
  async #readySqlite(db: Kysely<DB>, now: number): Promise<boolean> {
    if (now >= this.#windowedUntil) return (await this.#timed(() => wholeProbeStatement(db, this.name, now))).rows.length > 0;
    const from = this.#windowFrom;
    if ((await probeStatement(db, this.name, now, from)).rows.length > 0) return true;
    await this.#moveWindow(db, from);
    return false;
  }

  /** SQLite's claim (the payload, gate and server-state forms are PostgreSQL's), over the whole lane or its windows (CLAIM_WINDOW). */
  async #claimRowsSqlite(db: Kysely<DB>, now: number, limit: number, token: string): Promise<Row[]> {
    if (now >= this.#windowedUntil) return (await this.#timed(() => claimStatement(db, this.name, now, limit, token, now + this.#leaseMs))).rows;
    const from = this.#windowFrom;
    const { rows } = await windowedClaimStatement(db, this.name, now, limit, token, now + this.#leaseMs, from);
    if (rows.length < limit) await this.#moveWindow(db, from);
    return rows;
  }

  /**
   * SQLite: a whole-lane claim or probe that took SLOW_CLAIM_MS or more
   * switches the lane to the windowed claim (CLAIM_WINDOW) for WINDOWED_MS.
   * A short lane keeps the whole-lane claim, exactly as before: the windows
   * are for a lane long enough that walking it stops the event loop.
   */
  async #timed<T>(run: () => Promise<T>): Promise<T> {
    const started = performance.now();
    const result = await run();
    if (performance.now() - started >= SLOW_CLAIM_MS) this.#windowedUntil = Date.now() + WINDOWED_MS;
    return result;
  }

  /**
   * After a claim from `from` came back short: the cursor's window moves on
   * by CLAIM_SPAN ids, or starts over once past the table's last id.
   * Meanwhile a lane with nothing in flight claims again soon rather than
   * after its poll interval (#windowTurning), so that a message further back
   * waits a few short turns, not a poll interval per window.
   */
  async #moveWindow(db: Kysely<DB>, from: number): Promise<void> {
    if (this.#windowFrom !== from) return;
    const [row] = (await idBoundsStatement(db)).rows;
    const start = row?.first == null ? 0 : Number(row.first) - 1;
    const next = Math.max(from + CLAIM_SPAN, start);
    const turning = row?.last != null && next < Number(row.last);
    this.#windowFrom = turning ? next : start;
    this.#windowTurning = turning;
  }

  /**
   * A claimed batch through the batch sender: one promise per message,
   * settled once that message is completed, failed or dead-lettered. What
   * the sender sent is completed (group commit, as every other message);
   * the rest goes through #deliver, a handler slot at a time.
   */
  #deliverBatch(claimed: readonly Claimed[], handler: (message: any) => Promise<void> | void, admit: Admit | undefined, signal?: AbortSignal): Promise<void>[] {
    const batch = this.#batch!;
    // Each message's outcome, once the batch has run STRAGGLER_MS (see there).
    const early = new Map<number, (outcome: Outcome3) => void>();
    const known = new Map<number, Outcome3>();
    let straggling = false;
    const straggler = setTimeout(() => {
      straggling = true;
      if (TRACE) traceCount(this.name, 5, known.size);
      for (const [id, outcome] of known) early.get(id)?.(outcome);
    }, STRAGGLER_MS);
    const settled = (async () => {
      // A bulk batch claimed just before interactive work arrived waits for
      // it here, before its signatures and POSTs (queue-priority.ts).
      if (this.#rank?.bulk) await this.#rank.priority.yield(signal);
      const live = claimed.filter((c) => c.attempts <= this.#maxAttempts);
      let messages: unknown[];
      try {
        messages = await Promise.all(live.map((c) => this.#rejoiner.rejoin(c.message, c.payload_body)));
      } catch {
        // A message that cannot be rejoined fails in #deliver like any other.
        return new Map<number, Outcome3>();
      }
      // Asked here, just before sending, as the handler's path asks it: so a
      // join's gated Accept and welcome go out through the batch sender too.
      // A failed check leaves the message to the handler's path, which asks again.
      const admitted = admit === undefined ? messages : await Promise.all(messages.map((m, i) => admit(m, live[i]!.gate_hint).catch((): unknown => FALLBACK)));
      const offered: { index: number; message: unknown }[] = [];
      const outcomes: Outcome3[] = admitted.map((m, index) => {
        if (m === undefined) {
          known.set(live[index]!.id, "withheld");
          return "withheld";
        }
        if (m === FALLBACK) return "fallback";
        offered.push({ index, message: m });
        return "fallback";
      });
      if (offered.length > 0) {
        const sent = await batch.deliver(offered.map((o) => o.message), (i, outcome) => {
          const id = live[offered[i]!.index]!.id;
          known.set(id, outcome);
          if (straggling) {
            if (TRACE) traceCount(this.name, 5);
            early.get(id)?.(outcome);
          }
        }, this.#gatesWithClaim ? offered.map((o) => live[o.index]!.server_state) : undefined);
        offered.forEach((o, i) => (outcomes[o.index] = sent[i] ?? "fallback"));
      }
      return new Map(live.map((c, i) => [c.id, outcomes[i]!]));
    })().finally(() => clearTimeout(straggler));
    return claimed.map(async (c) => {
      const outcome = await Promise.race([
        settled.then((m) => m.get(c.id), () => undefined),
        new Promise<Outcome3>((resolve) => early.set(c.id, resolve)),
      ]);
      if (outcome === "sent" || outcome === "withheld") {
        try {
          await this.#complete(c);
        } catch (error) {
          log.error("Could not settle message {id} in queue {queue}: {error}", { id: c.id, queue: this.name, error });
        }
        return;
      }
      if (TRACE) traceCount(this.name, 4);
      await this.#handlerSlot();
      try {
        await this.#deliver(c, handler);
      } finally {
        this.#releaseHandlerSlot();
      }
    });
  }

  async #handlerSlot(): Promise<void> {
    if (this.#handlerSlots > 0) {
      this.#handlerSlots--;
      return;
    }
    await new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
  }

  #releaseHandlerSlot(): void {
    const next = this.#slotWaiters.shift();
    if (next !== undefined) next();
    else this.#handlerSlots++;
  }

  async #deliver(claimed: Claimed, handler: (message: any) => Promise<void> | void): Promise<void> {
    try {
      // A worker that died holding the last allowed attempt gets no further one.
      if (claimed.attempts > this.#maxAttempts) {
        await this.#bury(claimed, claimed.last_error ?? "lease expired");
        return;
      }
      const outcome = await runWithTimeout(async () => handler(await this.#rejoiner.rejoin(claimed.message, claimed.payload_body)), this.#handlerTimeoutMs);
      if (outcome.ok) await this.#complete(claimed);
      else await this.#fail(claimed, outcome.error);
    } catch (error) {
      // The database failed us; the lease will run out and the message
      // will be delivered again.
      log.error("Could not settle message {id} in queue {queue}: {error}", { id: claimed.id, queue: this.name, error });
    }
  }

  /**
   * Finished messages are settled together: those that finish in the same
   * turn of the event loop share one transaction (group commit). During a
   * fan-out a commit per delivery was, with the claims, most of the
   * database's time (0.55 ms each on SQLite, 6,000 commits for 6,000
   * deliveries). A message stays leased until its batch commits, so a crash
   * meanwhile re-sends only what was being handled, as before.
   */
  #complete(claimed: Claimed): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#completions.push({ claimed, resolve, reject });
      if (this.#completions.length === 1) setImmediate(() => void this.#flushCompletions());
    });
  }

  async #flushCompletions(): Promise<void> {
    while (this.#completions.length > 0) {
      const batch = this.#completions.splice(0, INSERT_CHUNK);
      let ordered = batch.some((c) => c.claimed.ordering_key !== null);
      const refills: [Refill, Claimed[], number][] = [];
      try {
        const lost = this.#database.dialect === "postgres" ? await this.#settlePostgres(batch.map((c) => c.claimed)).then((r) => {
          ordered = r.waiting;
          this.#reclaimDeadRows(batch.length - r.lost.length);
          return r.lost;
        }) : await this.#database.db.transaction().execute(async (trx) => {
          const notMine: Claimed[] = [];
          const byClaim = new Map<string, Claimed[]>();
          for (const { claimed } of batch) {
            const same = byClaim.get(claimed.token);
            if (same === undefined) byClaim.set(claimed.token, [claimed]);
            else same.push(claimed);
          }
          const at = Date.now();
          for (const [token, claims] of byClaim) {
            const ids = JSON.stringify(claims.map((c) => c.id));
            // The done keys of the rows this claim still holds, then those rows.
            if (claims.some((c) => c.dedupe_key !== null)) await doneStatement(trx, ids, token, at);
            const { rows } = await settleStatement(trx, ids, token);
            const deleted = new Set(rows.map((r) => Number(r.id)));
            for (const claimed of claims) if (!deleted.has(claimed.id)) notMine.push(claimed);
          }
          // Claimed after the deletes, so the messages behind these ones' ordering keys may be among them.
          const settling = new Map<Refill, number>();
          for (const { claimed } of batch) if (claimed.refill !== undefined) settling.set(claimed.refill, (settling.get(claimed.refill) ?? 0) + 1);
          for (const [refill, n] of settling) {
            const asked = refill.want(n);
            if (asked > 0) refills.push([refill, await this.#claimSqlite(trx, asked, refill), asked]);
          }
          return notMine;
        });
        // Started only once committed (a rolled-back claim leased nothing), before the settled ones leave their slots.
        for (const [refill, claimed, asked] of refills) refill.start(claimed, asked);
        for (const claimed of lost) {
          log.warn("Message {id} in queue {queue} was handled after its lease ran out; it may be handled twice.", { id: claimed.id, queue: this.name });
        }
        this.#settledHere += batch.length - lost.length;
        for (const c of batch) c.resolve();
      } catch (error) {
        for (const c of batch) c.reject(error);
      }
      // Messages waiting behind these ones' ordering keys may go now.
      if (ordered) await this.#announce(Date.now(), this.#database.dialect === "postgres");
    }
  }

  /**
   * #flushCompletions on PostgreSQL in one statement, its own transaction:
   * the batch's rows still leased by their claims deleted, their done keys
   * written, and a NOTIFY only if a message of this lane waits behind one of
   * their ordering keys. Was BEGIN, a DELETE per message, the done keys'
   * INSERT, COMMIT and a NOTIFY after every message with an ordering key
   * (which woke every listener to claim and, mostly, find nothing): five
   * round trips and an empty claim for a batch of one. Returns the claims
   * that were no longer ours, and whether anything waited.
   */
  async #settlePostgres(batch: readonly Claimed[]): Promise<{ lost: Claimed[]; waiting: boolean }> {
    // Idempotent (it deletes only rows still leased to these claims), so a
    // deadlock's victim is tried again rather than left to its leases running
    // out, which would send each of its messages a second time.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#settlePostgresOnce(batch);
      } catch (error) {
        if ((error as { code?: string }).code !== "40P01" || attempt >= 3) throw error;
        log.info("Settling {n} messages in queue {queue} deadlocked; trying again", { n: batch.length, queue: this.name });
      }
    }
  }

  async #settlePostgresOnce(batch: readonly Claimed[]): Promise<{ lost: Claimed[]; waiting: boolean }> {
    const ids = batch.map((c) => c.id);
    const now = Date.now();
    // Settled messages whose listener takes the message behind them (see
    // Handoff), as many as its share allows (lane-share.ts); the others'
    // next messages are announced, for any listener to claim.
    const keyed = new Map<Handoff, Claimed[]>();
    for (const c of batch) {
      if (c.ordering_key === null || c.handoff === undefined) continue;
      const list = keyed.get(c.handoff) ?? [];
      keyed.set(c.handoff, list);
      list.push(c);
    }
    const handing: number[] = [];
    for (const [to, list] of keyed) for (const c of list.slice(0, to.room(list.length))) handing.push(c.id);
    const token = `${this.workerId}#${++this.#claims}`;
    // The subqueries read the statement's snapshot, where the batch's own rows
    // are not yet deleted. "nxt": for each settled message of a listener,
    // the next message of its ordering key if it is the key's first, ready,
    // and no other message of the key is leased: what a claim would find
    // claimable once this commits. It is leased here, under this statement's
    // row lock (skipping a row another claimer holds), re-checked on the
    // row's newest version by the UPDATE. A waiting message not taken so is
    // announced by NOTIFY, as before. The lock and the lease carry the
    // settled message each claimed one follows ("after") instead of joining
    // their CTEs to "nxt" again: PostgreSQL has no row counts for a CTE and
    // joined them by nested loops, three times n² comparisons (3·10^4 for a
    // fan-out's settle of 100), a quarter of the statement's time.
    // Not on its generic plan (executeGenericPlanned, as the claim): PostgreSQL keeps that plan after a
    // connection's first six settles (planned for their values, 0.74-0.93 ms each in the workers benchmark),
    // and the setting's three more protocol messages cost about 35 us a settle for ever after, which
    // bench/claim-cost.ts's small settles showed (0.104 → 0.110 ms a message of PostgreSQL's CPU).
    const { rows } = await executeNamed(this.#database.db, sql<Row & { kind: "settled" | "claimed"; after: number | null; waiting: boolean | null; payload_body: string | null; gate_hint: string | null; server_state: string[] | null }>`
      with settled as (
        delete from fedify_mq
        where (id, lease_owner) in (select * from unnest(${ids}::bigint[], ${batch.map((c) => c.token)}::text[]))
        returning id, dedupe_key, ordering_key
      ), done as (
        insert into fedify_mq_done (dedupe_key, done_at)
        select distinct dedupe_key, ${now}::bigint from settled where dedupe_key is not null
        on conflict (dedupe_key) do nothing
      ), nxt as (
        select distinct on (e.id) e.id, s.id as after
        from settled s
        cross join lateral (
          select m.id, m.available_at from fedify_mq m
          where m.queue = ${this.name} and m.ordering_key = s.ordering_key and m.id <> all(${ids}::bigint[])
          order by m.id limit 1
        ) e
        where s.id = any(${handing}::bigint[]) and e.available_at <= ${now}::bigint
          and not exists (
            select 1 from fedify_mq l
            where l.queue = ${this.name} and l.ordering_key = s.ordering_key and l.lease_until > ${now}::bigint and l.id <> all(${ids}::bigint[])
          )
      ), locked as (
        select f.id, n.after from nxt n join fedify_mq f on f.id = n.id for update of f skip locked
      ), claimed as (
        update fedify_mq f set lease_owner = ${token}, lease_until = ${now + this.#leaseMs}::bigint, attempts = f.attempts + 1,
          last_error = case when f.lease_until is not null then 'lease expired: the worker holding the message died or stalled' else f.last_error end
        from locked k
        where f.id = k.id and (f.lease_until is null or f.lease_until <= ${now}::bigint)
        returning f.id, f.queue, f.message, f.ordering_key, f.attempts, f.last_error, f.created_at, f.dedupe_key, f.payload, k.after, f.gate_union_id, f.gate_member_id, f.inbox_origin
      ), behind as materialized (
        select s.id, s.ordering_key is not null and s.id not in (select c.after from claimed c) and exists (
          select 1 from fedify_mq m where m.queue = ${this.name} and m.ordering_key = s.ordering_key and m.id <> all(${ids}::bigint[])
        ) as waiting
        from settled s
      )
      select 'settled' as kind, id, waiting, null::bigint as after, null as queue, null as message, null as ordering_key, null::int as attempts,
        null as last_error, null::bigint as created_at, null as dedupe_key, null as payload, null as payload_body, null as gate_hint, null::text[] as server_state,
        case when waiting then pg_notify(${NOTIFY_CHANNEL}, ${this.#notifyPayload(now, true)}) end as notified
      from behind
      union all
      select 'claimed', c.id, null, c.after, c.queue, c.message, c.ordering_key, c.attempts, c.last_error, c.created_at, c.dedupe_key, c.payload,
        ${this.#payloadsWithClaim ? payloadBodySql(sql.ref("c.payload")) : sql`null`},
        ${this.#gatesWithClaim ? gateHintSql(hintRefs("c")) : sql`null`},
        ${this.#gatesWithClaim ? serverStateSql(hintRefs("c"), now) : sql`null`}, null
      from claimed c`.compile(this.#database.db));
    const settled = new Set(rows.filter((r) => r.kind === "settled").map((r) => Number(r.id)));
    const byId = new Map(batch.map((c) => [c.id, c]));
    let waiting = rows.some((r) => r.kind === "settled" && r.waiting);
    const returned: Claimed[] = [];
    // Handed to each listener together, as one batch: a fan-out's settle
    // takes the next delivery of each of its servers, and handed over one by
    // one each became a batch of its own (a circuit-state read and a trip
    // through the batch sender per delivery).
    const byListener = new Map<Handoff | undefined, Claimed[]>();
    for (const r of rows) {
      if (r.kind !== "claimed") continue;
      const claimed: Claimed = {
        id: Number(r.id), queue: r.queue, message: r.message, ordering_key: r.ordering_key, attempts: Number(r.attempts),
        last_error: r.last_error, created_at: Number(r.created_at), dedupe_key: r.dedupe_key, payload: r.payload, payload_body: r.payload_body, gate_hint: r.gate_hint, server_state: r.server_state, token,
      };
      const to = byId.get(Number(r.after))?.handoff;
      const list = byListener.get(to) ?? [];
      byListener.set(to, list);
      list.push(claimed);
    }
    // A listener that stopped meanwhile gives them back to be claimed by anyone.
    for (const [to, claimed] of byListener) if (to?.take(claimed) !== true) returned.push(...claimed);
    if (returned.length > 0) {
      await this.#release(returned);
      waiting = true;
    }
    return { lost: batch.filter((c) => !settled.has(c.id)), waiting };
  }

  /** Gives claimed messages back unhandled (the claim's attempt not counted), announcing them. */
  async #release(claimed: readonly Claimed[]): Promise<void> {
    await sql`update fedify_mq set lease_owner = null, lease_until = null, attempts = greatest(attempts - 1, 0)
      where (id, lease_owner) in (select * from unnest(${claimed.map((c) => c.id)}::bigint[], ${claimed.map((c) => c.token)}::text[]))
      returning pg_notify(${NOTIFY_CHANNEL}, ${this.#notifyPayload(Date.now(), true)})`.execute(this.#database.db);
  }

  async #fail(claimed: Claimed, error: unknown): Promise<void> {
    const reason = describeError(error);
    if (claimed.attempts >= this.#maxAttempts) {
      log.error("Message {id} in queue {queue} failed {attempts} times; dead-lettered: {error}", {
        id: claimed.id, queue: this.name, attempts: claimed.attempts, error,
      });
      await this.#bury(claimed, reason);
      return;
    }
    const availableAt = Date.now() + this.#retryDelay(claimed.attempts);
    log.warn("Message {id} in queue {queue} failed (attempt {attempts}); retrying at {at}: {error}", {
      id: claimed.id, queue: this.name, attempts: claimed.attempts, at: new Date(availableAt).toISOString(), error,
    });
    await this.#database.db.updateTable("fedify_mq")
      .set({ lease_owner: null, lease_until: null, available_at: availableAt, last_error: reason })
      .where("id", "=", claimed.id)
      .where("lease_owner", "=", claimed.token)
      .execute();
    wakeLocal(this.#database.db, this.name, availableAt);
  }

  /** Moves a message to fedify_mq_dead, keeping it for an operator to inspect. */
  async #bury(claimed: Claimed, reason: string): Promise<void> {
    // Delete first: on SQLite a transaction that starts with a write takes
    // the write lock at once instead of failing to upgrade a stale read.
    await this.#database.db.transaction().execute(async (trx) => {
      const row = await trx.deleteFrom("fedify_mq")
        .where("id", "=", claimed.id)
        .where("lease_owner", "=", claimed.token)
        .returning(["id", "queue", "message", "ordering_key", "attempts", "created_at"])
        .executeTakeFirst();
      if (row === undefined) return;
      await trx.insertInto("fedify_mq_dead")
        .values({ ...row, message: withoutPrivateKeys(await this.#rejoiner.withActivity(row.message)), last_error: reason, died_at: Date.now() })
        .execute();
    });
    if (claimed.ordering_key !== null) await this.#announce(Date.now());
  }

  #retryDelay(attempts: number): number {
    const exponential = Math.min(this.#retryMaxDelayMs, this.#retryBaseDelayMs * 2 ** (attempts - 1));
    // ±20 % so messages that failed together (say, while the database was
    // down) do not all come back in the same instant.
    return Math.round(exponential * (0.8 + Math.random() * 0.4));
  }

  /**
   * What NOTIFY says: the lane and when its new message is available, and
   * (`fromHere`) that this pool's lanes are woken directly, so its own
   * LISTEN ignores it (shared-listen.ts).
   */
  #notifyPayload(availableAt: number, fromHere: boolean): string {
    const pool = this.#database.pgPool;
    return JSON.stringify({ queue: this.name, at: availableAt, ...(fromHere && pool !== undefined ? { from: poolTag(pool) } : {}) });
  }

  /** Wakes this process's listeners, and on PostgreSQL the others' unless the statement already notified them. */
  async #announce(availableAt: number, notified = false): Promise<void> {
    wakeLocal(this.#database.db, this.name, availableAt);
    if (this.#database.dialect !== "postgres" || notified) return;
    try {
      await sql`select pg_notify(${NOTIFY_CHANNEL}, ${this.#notifyPayload(availableAt, true)})`.execute(this.#database.db);
    } catch (error) {
      // The message is stored; other processes will find it on their next poll.
      log.warn("Could not notify other workers about queue {queue}: {error}", { queue: this.name, error });
    }
  }

  /**
   * On PostgreSQL, the process's one shared LISTEN connection
   * (shared-listen.ts) wakes this lane as soon as another process enqueues
   * to it; if it drops, polling carries on and it is re-established.
   */
  async #subscribe(wake: Wake, _signal: AbortSignal | undefined, heard?: Heard): Promise<Subscription | undefined> {
    const pool = this.#database.pgPool;
    if (pool === undefined) return undefined;
    return listenShared(pool, NOTIFY_CHANNEL, this.name, wake, heard);
  }

  /**
   * Tells the lane's listeners in every process (this one's too: it ignores
   * its own) how many messages this one has in flight (lane-share.ts).
   */
  async #heartbeat(listener: string, inFlight: number): Promise<void> {
    const payload = JSON.stringify({ queue: HEARTBEAT_QUEUE, lane: this.name, hb: listener, n: inFlight });
    try {
      await sql`select pg_notify(${NOTIFY_CHANNEL}, ${payload})`.execute(this.#database.db);
    } catch (error) {
      // Peers forget this listener after a while, and take its share.
      log.warn("Could not send queue {queue}'s heartbeat: {error}", { queue: this.name, error: describeError(error) });
    }
  }
}

/** A row's claim hints as statement values, in the column order of insertValues. */
function hintsOf(row: NewRow): [string | null, string | null, string | null] {
  const h: ClaimHints = row.inbox_origin === undefined ? NO_HINTS : (row as NewRow & ClaimHints);
  return [h.gate_union_id, h.gate_member_id, h.inbox_origin];
}

function wakeLocal(db: Kysely<DB>, queue: string, availableAt: number): void {
  for (const wake of localListeners.get(db) ?? []) wake(queue, availableAt);
}

/**
 * Lets the listen loop sleep until the poll interval passes, a message it
 * was told about becomes available, or something rings.  A ring while the
 * loop is busy is remembered, so no wake-up is lost between claim and sleep.
 */
class Alarm {
  #pending = false;
  #hint = Number.POSITIVE_INFINITY;
  #wakeUp: (() => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #deadline = Number.POSITIVE_INFINITY;

  ring(): void {
    if (this.#wakeUp !== undefined) this.#fire();
    else this.#pending = true;
  }

  ringAt(at: number): void {
    const now = Date.now();
    if (at <= now) return this.ring();
    // Kept until its time has come, not only scheduled: a wait that ends
    // earlier for another reason (a ring, a claim that found nothing) would
    // otherwise forget it and sleep a whole poll interval past it.
    this.#hint = Math.min(this.#hint, at);
    if (this.#wakeUp !== undefined && at < this.#deadline) this.#schedule(at, now);
  }

  wait(pollIntervalMs: number): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return Promise.resolve();
    }
    const now = Date.now();
    const deadline = Math.min(now + pollIntervalMs, this.#hint);
    return new Promise((resolve) => {
      this.#wakeUp = resolve;
      this.#schedule(deadline, now);
    });
  }

  #schedule(deadline: number, now: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#deadline = deadline;
    // +1: a message available at t is claimable once Date.now() reaches t.
    this.#timer = setTimeout(() => this.#fire(), Math.max(0, deadline - now) + 1);
  }

  #fire(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    // The claim this wakes starts now, so it sees what the hint announced.
    if (Date.now() >= this.#hint) this.#hint = Number.POSITIVE_INFINITY;
    this.#timer = undefined;
    this.#deadline = Number.POSITIVE_INFINITY;
    const wakeUp = this.#wakeUp;
    this.#wakeUp = undefined;
    wakeUp?.();
  }
}

class HandlerTimeoutError extends Error {
  constructor(ms: number) {
    super(`message handler did not finish within ${ms} ms`);
    this.name = "HandlerTimeoutError";
  }
}

type Outcome = { ok: true } | { ok: false; error: unknown };

/**
 * A handler cannot be cancelled, so on timeout it is left running and its
 * eventual result ignored; the message is retried under a new lease, which
 * keeps delivery at least once.
 */
async function runWithTimeout(run: () => unknown, timeoutMs: number): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Outcome>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, error: new HandlerTimeoutError(timeoutMs) }), timeoutMs);
  });
  const handled = (async () => run())().then(
    (): Outcome => ({ ok: true }),
    (error: unknown): Outcome => ({ ok: false, error }),
  );
  try {
    return await Promise.race([handled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function encodeMessage(message: unknown): string {
  const text = JSON.stringify(message);
  if (text === undefined) throw new TypeError(`KyselyMessageQueue cannot enqueue a message of type ${typeof message}`);
  return text;
}

function describeError(error: unknown): string {
  const text = error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error);
  return text.length > MAX_ERROR_LENGTH ? `${text.slice(0, MAX_ERROR_LENGTH)}…` : text;
}

function positive(name: string, value: number): number {
  if (!(value > 0) || !Number.isFinite(value)) throw new RangeError(`${name} must be a positive number, got ${value}`);
  return value;
}

function nonNegative(name: string, value: number): number {
  if (!(value >= 0) || !Number.isFinite(value)) throw new RangeError(`${name} must not be negative, got ${value}`);
  return value;
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  return value;
}

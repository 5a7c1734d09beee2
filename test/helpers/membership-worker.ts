import type { WriteBatch } from "../../src/db/batch.ts";
/**
 * Membership test support: a recording Outbox that writes intents into the
 * real `fedify_mq` table through the caller's transaction (so an intent
 * commits or rolls back with the change that caused it), and a worker-thread
 * entry point that runs one membership operation on its own database
 * connection (contender-pool.ts).
 */
import type { Kysely } from "kysely";
import { openDatabase } from "../../src/db/database.ts";
import type { DB } from "../../src/db/schema.ts";
import { createEventBus } from "../../src/events.ts";
import { consumeInvite } from "../../src/members/invites.ts";
import { type Applicant, requestToJoin } from "../../src/members/membership.ts";
import type { Outbox, OutboxIntent } from "../../src/outbox.ts";
import { type Contender as PoolContender, contenderPool, serveContender } from "./contender-pool.ts";

/** The queue name recorded intents go to; nothing consumes it in these tests. */
export const INTENT_QUEUE = "membership-test";

export const recordingOutbox: Outbox = {
  async add(trx: Kysely<DB>, intent: OutboxIntent, options?: { readonly batch?: WriteBatch }): Promise<void> {
    const now = Date.now();
    const q = trx.insertInto("fedify_mq").values({ queue: INTENT_QUEUE, message: JSON.stringify(intent), available_at: now, attempts: 0, created_at: now });
    // As the server's outbox: with a batch, the insert runs when the caller flushes it.
    if (options?.batch) options.batch.push(q);
    else await q.execute();
  },
};

/** Every committed intent, oldest first. */
export async function recordedIntents(db: Kysely<DB>): Promise<OutboxIntent[]> {
  const rows = await db.selectFrom("fedify_mq").select("message").where("queue", "=", INTENT_QUEUE).orderBy("id").execute();
  return rows.map((r) => JSON.parse(r.message) as OutboxIntent);
}

export type RaceOp =
  | { readonly op: "consume"; readonly inviteId: string }
  | { readonly op: "join"; readonly unionId: string; readonly applicant: Applicant; readonly followId: string };

export type RaceResult = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: string };

/** A contender on its own thread, opening its own connection to `url` for each operation (contender-pool.ts). */
export type Contender = PoolContender<RaceOp, RaceResult>;

const pool = contenderPool<RaceOp, RaceResult>(new URL(import.meta.url), "membershipRace", (error) => ({ ok: false, error }));

/** The first `n` shared contenders, started on first use. */
export const contenders = (n: number): Promise<Contender[]> => pool.take(n);
export const closeContenders = (): Promise<void> => pool.close();

async function runOp(url: string, op: RaceOp): Promise<RaceResult> {
  const database = openDatabase(url, { poolSize: 2 });
  try {
    const value = op.op === "consume"
      ? await database.db.transaction().execute((trx) => consumeInvite(trx, op.inviteId, Date.now()))
      : (await requestToJoin({ db: database.db, events: createEventBus(), outbox: recordingOutbox }, op.unionId, op.applicant, op.followId)).outcome;
    return { ok: true, value };
  } catch (e) {
    return { ok: false, error: String(e) };
  } finally {
    await database.close();
  }
}

serveContender("membershipRace", runOp);

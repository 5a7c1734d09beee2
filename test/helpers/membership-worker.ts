/**
 * Membership test support: a recording Outbox that writes intents into the
 * real `fedify_mq` table through the caller's transaction (so an intent
 * commits or rolls back with the change that caused it), and a worker-thread
 * entry point that runs one membership operation on its own database
 * connection. SQLite's driver is synchronous: two connections in one thread
 * cannot wait for each other's locks, so a true race needs a second thread
 * (as a second process, `muster worker`, would have).
 */
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import type { Kysely } from "kysely";
import { openDatabase } from "../../src/db/database.ts";
import type { DB } from "../../src/db/schema.ts";
import { createEventBus } from "../../src/events.ts";
import { consumeInvite } from "../../src/members/invites.ts";
import { type Applicant, requestToJoin } from "../../src/members/membership.ts";
import type { Outbox, OutboxIntent } from "../../src/outbox.ts";

/** The queue name recorded intents go to; nothing consumes it in these tests. */
export const INTENT_QUEUE = "membership-test";

export const recordingOutbox: Outbox = {
  async add(trx: Kysely<DB>, intent: OutboxIntent): Promise<void> {
    const now = Date.now();
    await trx.insertInto("fedify_mq").values({ queue: INTENT_QUEUE, message: JSON.stringify(intent), available_at: now, attempts: 0, created_at: now }).execute();
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

/**
 * A contender on its own thread, opening its own connection to `url` for
 * each operation. Starting a thread costs seconds (module loading), so
 * contenders are long-lived and shared; `closeContenders` ends them.
 */
export interface Contender {
  run(url: string, op: RaceOp): Promise<RaceResult>;
}

const started: Worker[] = [];
const pool: Promise<Contender>[] = [];

/** The first `n` shared contenders, started on first use. */
export function contenders(n: number): Promise<Contender[]> {
  while (pool.length < n) pool.push(startContender());
  return Promise.all(pool.slice(0, n));
}

export async function closeContenders(): Promise<void> {
  pool.length = 0;
  await Promise.all(started.splice(0).map((w) => w.terminate()));
}

async function startContender(): Promise<Contender> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { membershipRace: true } });
  started.push(worker);
  await new Promise<void>((resolve, reject) => {
    worker.once("error", reject);
    worker.once("message", (m: { ready?: boolean }) => (m.ready ? resolve() : reject(new Error("worker did not start"))));
  });
  const waiting = new Map<number, (r: RaceResult) => void>();
  let next = 0;
  worker.on("message", (m: { id: number; result: RaceResult }) => {
    waiting.get(m.id)?.(m.result);
    waiting.delete(m.id);
  });
  worker.on("error", (e) => {
    for (const w of waiting.values()) w({ ok: false, error: String(e) });
    waiting.clear();
  });
  return {
    run: (url, op) => new Promise<RaceResult>((resolve) => {
      const id = next++;
      waiting.set(id, resolve);
      worker.postMessage({ id, url, op });
    }),
  };
}

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

if (!isMainThread && (workerData as { membershipRace?: boolean } | undefined)?.membershipRace) {
  parentPort!.on("message", async (m: { id: number; url: string; op: RaceOp }) => {
    parentPort!.postMessage({ id: m.id, result: await runOp(m.url, m.op) });
  });
  parentPort!.postMessage({ ready: true });
}

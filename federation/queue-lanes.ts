import { AsyncLocalStorage } from "node:async_hooks";
import type { MessageQueue, MessageQueueDepth } from "@fedify/fedify";
import type { Database } from "../src/db/database.ts";
import { type Admit, type BatchSender, type GateHint, type KyselyEnqueueOptions, KyselyMessageQueue, type KyselyMessageQueueOptions } from "./kysely-message-queue.ts";
import { LanePriority } from "./queue-priority.ts";
import { deliveryParts, PartsSent, thenOf } from "./direct-send.ts";

/**
 * One durable queue (the fedify_mq table), several lanes, each claimed by
 * its own listener with its own handler slots:
 *
 * - `inbox`: activities other servers POSTed to us (a Follow, a reply, a vote);
 * - `outbox`: single deliveries (a join's Accept, a welcome, a sign-in link);
 * - `fanout`: expanding a call-to-action to the roster, a page at a time;
 * - `delivery`: the per-inbox deliveries those pages queue, and their retries;
 * - `domain`: intents the domain wrote in its own transactions (federation/outbound.ts);
 * - `ledger`: chain work (badge mints and burns, solana/badge-sync.ts), taken
 *   only by a process that has a ledger; one handler, so a slow RPC holds up
 *   nothing else and a member's transactions are submitted one at a time.
 *
 * So while 10^5 deliveries of a call-to-action wait in `delivery`, a Follow
 * is claimed from `inbox` and its Accept from `outbox` at once, instead of
 * after all of them. And within a process, `fanout` and `delivery` (bulk)
 * yield to `inbox`, `outbox` and `domain` (interactive) work being claimed or
 * handled there (queue-priority.ts), so that work is not slowed behind a
 * fan-out's batches either; `ledger` neither waits nor is waited for.
 */
export const LANES = ["inbox", "outbox", "fanout", "delivery", "domain", "ledger"] as const;
export type Lane = (typeof LANES)[number];

// Set while a fan-out page or a bulk delivery is handled: what Fedify
// enqueues from there (deliveries, their retries, circuit-held copies)
// stays in the bulk lane.
const bulkWork = new AsyncLocalStorage<true>();
// Set while a fan-out page lets Fedify send its first deliveries: sees
// each message Fedify enqueues (fanout-pages.ts keeps the signed activity).
const tap = new AsyncLocalStorage<(message: unknown) => void>();

/** Runs `work`, calling `onMessage` with every message it enqueues through a RoutedQueue. */
export function tapEnqueued<T>(onMessage: (message: unknown) => void, work: () => T): T {
  return tap.run(onMessage, work);
}

export interface QueueLanes {
  readonly lanes: Readonly<Record<Lane, KyselyMessageQueue>>;
  /** What Fedify is given: inbox, outbox (routed between `outbox` and `delivery`) and fanout. */
  readonly fedify: { readonly inbox: MessageQueue; readonly outbox: RoutedQueue; readonly fanout: RoutedQueue };
  /** Handler slots across the lanes: what a process needs database connections for. */
  readonly handlers: number;
  /** Bulk lanes yield to interactive ones in this process (queue-priority.ts). */
  readonly priority: LanePriority;
  close(): Promise<void>;
}

export interface QueueLanesOptions extends Omit<KyselyMessageQueueOptions, "name" | "concurrency" | "rank" | "batch"> {
  /** Handler slots of the busy lanes (inbox, delivery); the others get a quarter, at least 2. */
  readonly concurrency?: number;
  /** Given, used instead of a new one (tests); `false`: no lane yields to another (as before). */
  readonly priority?: LanePriority | false;
  /**
   * The batch sender of the lanes of Fedify's deliveries (outbox, delivery),
   * made with the lanes' PartsSent: where it notes the parts of a joined
   * delivery it sent when the rest failed, which the handler's path then
   * skips (handleParts).
   */
  readonly batch?: (partsSent: PartsSent) => BatchSender;
}

/** Lanes whose work a person waits for (interactive), and the fan-out's (bulk); `ledger` is neither. */
const BULK: ReadonlySet<Lane> = new Set(["fanout", "delivery"]);
const INTERACTIVE: ReadonlySet<Lane> = new Set(["inbox", "outbox", "domain"]);

/** Handler slots per lane, from the slots of a busy lane (MUSTER_QUEUE_CONCURRENCY). */
export function laneConcurrency(busy: number): Record<Lane, number> {
  const light = Math.max(2, Math.ceil(busy / 4));
  return { inbox: busy, outbox: light, fanout: 2, delivery: busy, domain: light, ledger: 1 };
}

/**
 * Database connections a process running every lane may hold at once: one
 * per handler slot, and the one LISTEN the lanes share on PostgreSQL
 * (shared-listen.ts).
 */
export function queueConnections(busy: number): number {
  const c = laneConcurrency(busy);
  return LANES.reduce((n, lane) => n + c[lane], 0) + 1;
}

export function createQueueLanes(database: Database, options: QueueLanesOptions = {}): QueueLanes {
  const concurrency = laneConcurrency(options.concurrency ?? 16);
  // Only the lanes of Fedify's delivery messages send batches themselves.
  const batched = (name: Lane) => name === "outbox" || name === "delivery";
  const priority = options.priority instanceof LanePriority ? options.priority : new LanePriority();
  // The lanes' one PartsSent (one per Muster, as per process): their handler's path and their batch sender share it.
  const partsSent = new PartsSent();
  const { batch: makeBatch, ...queueOptions } = options;
  const batch = makeBatch?.(partsSent);
  const ranked = options.priority !== false;
  const rank = (name: Lane) => ranked && (BULK.has(name) || INTERACTIVE.has(name)) ? { priority, bulk: BULK.has(name) } : undefined;
  const lanes = Object.fromEntries(LANES.map((name) => [name, new KyselyMessageQueue(database, {
    ...queueOptions,
    name,
    concurrency: concurrency[name],
    batch: batched(name) ? batch : undefined,
    rank: rank(name),
    // A fan-out's deliveries: twice the default in flight. Each claimed batch
    // holds one delivery per server (their ordering key is activity and
    // origin), so what is in flight is what keeps both cores busy; at 64, a
    // fan-out to 10^5 personal inboxes left a quarter of the machine idle.
    ...(name === "delivery" && options.batchSize === undefined ? { batchSize: 128 } : {}),
    // Each single delivery has an activity of its own (a join's Accept, its welcome): read with its claim.
    payloadsWithClaim: name === "outbox",
    // And its member gate's state (a join's two), so the gate asks no query of its own.
    gatesWithClaim: name === "outbox",
  })])) as Record<Lane, KyselyMessageQueue>;
  return {
    lanes,
    fedify: {
      inbox: lanes.inbox,
      outbox: new RoutedQueue(lanes.outbox, lanes.delivery, partsSent),
      fanout: new RoutedQueue(lanes.fanout, lanes.fanout, partsSent),
    },
    handlers: LANES.reduce((n, lane) => n + concurrency[lane], 0),
    priority,
    async close() {
      await Promise.all(LANES.map((lane) => lanes[lane].close()));
    },
  };
}

/** Runs `work` as bulk work: what it enqueues through a RoutedQueue goes to the bulk lane. */
export function asBulkWork<T>(work: () => T): T {
  return bulkWork.run(true, work);
}

/**
 * A queue Fedify sees as one, made of two lanes: messages enqueued while
 * bulk work is being handled go to `bulk`, all others to `interactive`;
 * handling listens to both, each with its own slots.
 */
export class RoutedQueue implements MessageQueue {
  readonly nativeRetrial = false;
  readonly #interactive: KyselyMessageQueue;
  readonly #bulk: KyselyMessageQueue;
  /** Our own message types in these lanes, handled here rather than by Fedify. */
  readonly #own = new Map<string, (message: any) => Promise<void>>();
  readonly #partsSent: PartsSent;

  constructor(interactive: KyselyMessageQueue, bulk: KyselyMessageQueue, partsSent: PartsSent) {
    this.#interactive = interactive;
    this.#bulk = bulk;
    this.#partsSent = partsSent;
  }

  /** Checked before Fedify handles a message: false drops it (outbound.ts, memberGate). */
  #gate: ((message: unknown, hint?: GateHint) => Promise<boolean>) | undefined;

  /** Handles messages of `type` (which Fedify does not know) with `handler`. */
  handle(type: string, handler: (message: any) => Promise<void>): void {
    this.#own.set(type, handler);
  }

  /** Asks `gate` before Fedify handles each message; a message it refuses is dropped. */
  gate(gate: (message: unknown, hint?: GateHint) => Promise<boolean>): void {
    this.#gate = gate;
  }

  #lane(): KyselyMessageQueue {
    return bulkWork.getStore() ? this.#bulk : this.#interactive;
  }

  enqueue(message: unknown, options?: KyselyEnqueueOptions): Promise<void> {
    tap.getStore()?.(message);
    return this.#lane().enqueue(message, options);
  }

  enqueueMany(messages: readonly unknown[], options?: KyselyEnqueueOptions): Promise<void> {
    const onMessage = tap.getStore();
    if (onMessage) for (const m of messages) onMessage(m);
    return this.#lane().enqueueMany(messages, options);
  }

  async listen(handler: (message: any) => Promise<void> | void, options: { signal?: AbortSignal } = {}): Promise<void> {
    const dispatch = (message: unknown) => {
      const own = this.#own.get((message as { type?: unknown } | null)?.type as string);
      if (own) return own(message);
      const gate = this.#gate;
      const handle = thenOf(message) === undefined ? handler : (joined: unknown) => handleParts(joined as object, handler, this.#partsSent);
      return gate ? gate(message).then((ok) => (ok ? handle(message) : undefined)) : handle(message);
    };
    const bulk = (message: unknown) => asBulkWork(() => dispatch(message));
    const withAdmit = { ...options, admit: this.#admit() };
    if (this.#interactive === this.#bulk) return this.#bulk.listen(bulk, withAdmit);
    await Promise.all([this.#interactive.listen(dispatch, withAdmit), this.#bulk.listen(bulk, withAdmit)]);
  }

  /**
   * The gate, asked for a claimed batch's messages before the lane's batch
   * sender is offered them (kysely-message-queue.ts, Admit), as dispatch asks
   * it before the handler: so a join's gated Accept and welcome need not go
   * through Fedify's handler to be checked. A message that passed is offered
   * without its gate: the batch sender takes no gated message it was not
   * told was checked, and leaves it to the handler's path, which checks it.
   */
  #admit(): Admit {
    return async (message, hint) => {
      // Read when asked, as dispatch does: a gate set after listen() began applies.
      const gate = this.#gate;
      if (gate === undefined || this.#own.has((message as { type?: unknown } | null)?.type as string)) return message;
      if (!(await gate(message, hint))) return undefined;
      if (typeof message !== "object" || message === null || !("musterGate" in message)) return message;
      const { musterGate: _, ...checked } = message as Record<string, unknown>;
      return checked;
    };
  }

  async getDepth(): Promise<MessageQueueDepth> {
    const lanes = this.#interactive === this.#bulk ? [this.#bulk] : [this.#interactive, this.#bulk];
    const depths = await Promise.all(lanes.map((l) => l.getDepth()));
    return depths.reduce((a, d) => ({ queued: a.queued + d.queued, ready: (a.ready ?? 0) + (d.ready ?? 0), delayed: (a.delayed ?? 0) + (d.delayed ?? 0) }));
  }
}

/**
 * A joined delivery (direct-send.ts, joinedDelivery: a join's Accept and
 * welcome in one message) on the handler's path: each of its activities
 * handed to Fedify's handler as the message it would have been on its own,
 * in order, so each gets Fedify's retries, circuit breaker and permanent
 * failure handling apart; a part this Muster already sent (`partsSent`: the
 * batch sender's Accept, or this path's before a later part threw) is not
 * sent again. A part whose handler throws fails the message, which the
 * queue retries with what is left.
 */
async function handleParts(message: object, handler: (message: any) => Promise<void> | void, partsSent: PartsSent): Promise<void> {
  const parts = deliveryParts(message);
  const handled: object[] = [];
  for (const part of parts) {
    if (partsSent.take(part)) {
      handled.push(part);
      continue;
    }
    try {
      await handler(part);
      handled.push(part);
    } catch (error) {
      // The parts before this one are not sent again when the queue retries the message (by this Muster).
      for (const done of handled) partsSent.add(done);
      throw error;
    }
  }
}

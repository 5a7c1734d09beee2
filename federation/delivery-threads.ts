import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Body, SigningKey, Spec } from "./delivery-sign.ts";

/*
 * Worker threads that sign and POST the batch sender's deliveries
 * (delivery-thread.ts), so a fan-out uses more than the main thread's core.
 * The main thread keeps everything that touches the database: it claims a
 * batch, reads the circuit and spec state, resolves and imports the key,
 * hands the deliveries over, and settles (or gives Fedify) each by the
 * outcome it gets back. A thread is one more place a delivery can fail, not
 * one more place it can be lost: a delivery whose thread died, never
 * answered or could not send is handed to Fedify's handler like any other
 * failure, and a crash of the process leaves the leases to run out as
 * before.
 *
 * What crosses to a thread: a private key once per thread, as a node:crypto
 * KeyObject (the batch sender's; a CryptoKey works too), by structured clone,
 * never as a JWK and never in a delivery; an activity's body once per
 * thread; and per delivery only its
 * inbox, the handles of its key and body, the spec, and the private-address
 * rule of the Muster it belongs to.
 */

export interface ThreadInit {
  readonly timeoutMs: number;
}

/** [seq, inbox, key handle, body handle, spec, close the connection after, allowPrivateAddress] */
export type ThreadItem = [number, string, number, number, Spec, boolean, boolean];

export interface ToThread {
  readonly close?: true;
  readonly keys: [number, SigningKey, string][];
  readonly bodies: [number, string][];
  readonly items: ThreadItem[];
  readonly dropKeys: number[];
  readonly dropBodies: number[];
}

/** [seq, 1 sent (2xx) | 0 answered otherwise | -1 not sent, status, Accept-Signature present, spec of the last try, double-knocked, error] */
export type ThreadResult = [number, 1 | 0 | -1, number, boolean, Spec, boolean, string | null];

export interface ThreadJob {
  readonly inbox: URL;
  readonly key: SigningKey;
  readonly keyId: string;
  readonly body: Body;
  readonly spec: Spec;
  readonly reset: boolean;
  readonly allowPrivateAddress: boolean;
}

export interface ThreadOutcome {
  readonly ok: boolean;
  readonly status: number;
  readonly acceptSignature: boolean;
  /** The spec of the last POST: the one the server accepted when ok. */
  readonly spec: Spec;
  /** Whether the other spec was tried after a 400 or 401. */
  readonly knocked: boolean;
}

export interface DeliveryThreadsOptions {
  readonly threads: number;
  /** Headers and body timeout of a POST; a delivery not answered by a thread in four times this (plus 30 s) is given up here. */
  readonly timeoutMs: number;
}

/**
 * Delivery threads a process runs: the configured number when set
 * (MUSTER_DELIVERY_THREADS, validated by src/config.ts; 0 for none), else
 * one when the machine has a second core, none on one core (where a thread
 * would only add the cost of handing deliveries over).
 */
export function deliveryThreadCount(configured: number | undefined): number {
  return configured ?? (availableParallelism() >= 2 ? 1 : 0);
}

/** A delivery thread's V8 heap limits (see Thread's constructor). */
const THREAD_YOUNG_MB = 24;
const THREAD_OLD_MB = 64;

/** Keys and bodies a thread keeps at most; the main thread tells it which to drop. */
const KEYS_PER_THREAD = 64;
const BODIES_PER_THREAD = 16;

const THREAD_URL = new URL("./delivery-thread.ts", import.meta.url);

/** Deliveries sent by delivery threads in this process, and those a thread failed to answer (the benchmark and tests read them). */
export const threadStats = { sent: 0, lost: 0, failed: 0, lastError: "", started: 0, ready: 0 };

interface Pending {
  readonly resolve: (outcome: ThreadOutcome) => void;
  readonly reject: (error: Error) => void;
}

class Thread {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  /** Handles this thread holds, oldest first (insertion order). */
  readonly keys = new Set<number>();
  readonly bodies = new Set<number>();
  outgoing: { keys: ToThread["keys"]; bodies: ToThread["bodies"]; items: ThreadItem[]; dropKeys: Set<number>; dropBodies: Set<number> } | undefined;
  dead = false;
  /** Settles once the thread has loaded its modules (its "ready" message), or has died trying. */
  readonly ready: Promise<void>;

  constructor(init: ThreadInit, onGone: (thread: Thread, error: Error) => void) {
    // Most of what a thread allocates (headers, undici's request and
    // response objects) dies within a delivery, but what it keeps is not
    // small: undici holds a pool per server it keeps a connection to, each
    // with a 2,048-slot request queue (16 KiB) beside its socket and parser,
    // 37-47 MiB of live heap in a fan-out to 10^3 servers' personal inboxes.
    // Under a 64 MiB cap (and 24 MiB young generation) V8 runs a full
    // mark-compact every 1-2 s to stay under it, about a fifth of the
    // thread's time and most of the V8 helper threads' CPU in that fan-out
    // (and 4,000 servers' deliveries took the thread 57 s against 34 s with
    // 48/256 MiB, once each on a loaded machine). On an idle machine, back to
    // back, the 10^5 personal fan-out cost the same CPU with 24/64 and 32/128
    // (0.716 and 0.712 ms a delivery, 60.7 and 60.6 s) and peaked at 480 and
    // 501 MiB RSS (48/256: 504, loaded): the larger ceilings buy no CPU there
    // and take the peak to the 512 MiB target, so the thread keeps 24/64.
    this.worker = new Worker(THREAD_URL, { workerData: init, stdout: false, stderr: false, resourceLimits: { maxYoungGenerationSizeMb: THREAD_YOUNG_MB, maxOldGenerationSizeMb: THREAD_OLD_MB } });
    // A thread never keeps the process alive; the queue's listeners do while there is work.
    this.worker.unref();
    let loaded!: () => void;
    this.ready = new Promise<void>((resolve) => loaded = resolve);
    this.worker.on("message", (results: ThreadResult[] | "ready") => {
      if (results === "ready") {
        threadStats.ready++;
        loaded();
        return;
      }
      for (const [seq, code, status, acceptSignature, spec, knocked, error] of results) {
        const p = this.pending.get(seq);
        if (p === undefined) continue;
        this.pending.delete(seq);
        if (code === -1) {
          threadStats.failed++;
          threadStats.lastError = error ?? "";
          p.reject(new Error(error ?? "the delivery thread could not send it"));
        }
        else p.resolve({ ok: code === 1, status, acceptSignature, spec, knocked });
      }
    });
    this.worker.on("error", (error) => {
      loaded();
      onGone(this, error);
    });
    this.worker.on("exit", (code) => {
      loaded();
      onGone(this, new Error(`the delivery thread exited (${code})`));
    });
  }

  /** Fails everything it was given and not yet answered. */
  fail(error: Error): void {
    this.dead = true;
    threadStats.lastError = error.message;
    for (const p of this.pending.values()) p.reject(error);
    threadStats.lost += this.pending.size;
    this.pending.clear();
  }
}

/** How long start-up waits for the delivery threads to load (they take 0.3-0.5 s of CPU; far more under load). */
const THREAD_START_WAIT_MS = 30_000;

export class DeliveryThreads {
  readonly #init: ThreadInit;
  readonly #count: number;
  readonly #threads: Thread[] = [];
  readonly #keyHandles = new WeakMap<SigningKey, number>();
  readonly #bodyHandles = new WeakMap<Body, number>();
  #nextHandle = 0;
  #seq = 0;
  #flushScheduled = false;
  #closed = false;

  constructor(options: DeliveryThreadsOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1) throw new RangeError(`threads must be a positive integer, got ${options.threads}`);
    this.#count = options.threads;
    this.#init = { timeoutMs: options.timeoutMs };
  }

  /**
   * Starts every thread now and settles once each has loaded its modules
   * (undici, the signer) or died trying. A process that runs the queue calls
   * it at start-up: a thread otherwise started with the first delivery, and
   * loading it (a new V8 isolate, Node's bootstrap, undici compiled from
   * source: 250-370 ms of CPU) fell on the first joins' Accepts, competing
   * with them for the cores and holding them back until it was up. A thread
   * that dies later is replaced on the next delivery, as before.
   */
  start(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    while (this.#live().length < this.#count) this.#spawn();
    // Start-up waits for the threads, but never for ever: a thread that neither
    // loads nor dies (a hung import) must not keep the server from listening.
    // Deliveries given to it meanwhile wait in its port, as they did before.
    let timer: NodeJS.Timeout | undefined;
    const bounded = new Promise<void>((resolve) => { timer = setTimeout(resolve, THREAD_START_WAIT_MS); timer.unref(); });
    return Promise.race([Promise.all(this.#threads.map((t) => t.ready)).then(() => {}), bounded]).finally(() => clearTimeout(timer));
  }

  #live(): Thread[] {
    for (let i = this.#threads.length - 1; i >= 0; i--) if (this.#threads[i]!.dead) this.#threads.splice(i, 1);
    return this.#threads;
  }

  #spawn(): Thread {
    const thread = new Thread(this.#init, (t, error) => {
      if (t.dead) return;
      t.fail(error);
    });
    threadStats.started++;
    this.#threads.push(thread);
    return thread;
  }

  /**
   * Signs and POSTs one delivery on a thread. Rejects when it was not sent
   * (transport error, timeout, a thread that died): the caller hands it to
   * Fedify, as it would a failure of its own.
   */
  send(job: ThreadJob): Promise<ThreadOutcome> {
    if (this.#closed) return Promise.reject(new Error("the delivery threads are closed"));
    const thread = this.#pick();
    const out = thread.outgoing ??= { keys: [], bodies: [], items: [], dropKeys: new Set(), dropBodies: new Set() };
    const keyHandle = this.#handle(this.#keyHandles, job.key);
    if (!thread.keys.has(keyHandle)) {
      out.keys.push([keyHandle, job.key, job.keyId]);
      add(thread.keys, keyHandle, KEYS_PER_THREAD, out.dropKeys);
    }
    const bodyHandle = this.#handle(this.#bodyHandles, job.body);
    if (!thread.bodies.has(bodyHandle)) {
      out.bodies.push([bodyHandle, job.body.text]);
      add(thread.bodies, bodyHandle, BODIES_PER_THREAD, out.dropBodies);
    }
    const seq = ++this.#seq;
    out.items.push([seq, job.inbox.href, keyHandle, bodyHandle, job.spec, job.reset, job.allowPrivateAddress]);
    const answered = new Promise<ThreadOutcome>((resolve, reject) => thread.pending.set(seq, { resolve, reject }));
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      // Everything the batch sender hands over in this turn goes in one message per thread.
      setImmediate(() => this.#flush());
    }
    return answered.then((outcome) => {
      if (outcome.ok) threadStats.sent++;
      return outcome;
    });
  }

  #handle<T extends object>(handles: WeakMap<T, number>, of: T): number {
    let h = handles.get(of);
    if (h === undefined) handles.set(of, (h = ++this.#nextHandle));
    return h;
  }

  /** The live thread with the fewest deliveries in hand, starting one when there are fewer than asked for. */
  #pick(): Thread {
    if (this.#live().length < this.#count) return this.#spawn();
    let best = this.#threads[0]!;
    for (const t of this.#threads) if (t.pending.size < best.pending.size) best = t;
    return best;
  }

  #flush(): void {
    this.#flushScheduled = false;
    for (const thread of this.#threads) {
      const out = thread.outgoing;
      if (out === undefined) continue;
      thread.outgoing = undefined;
      if (thread.dead) continue; // its pending were failed with it
      const message: ToThread = { keys: out.keys, bodies: out.bodies, items: out.items, dropKeys: [...out.dropKeys], dropBodies: [...out.dropBodies] };
      try {
        thread.worker.postMessage(message);
      } catch (error) {
        thread.fail(error instanceof Error ? error : new Error(String(error)));
        continue;
      }
      // A thread answers every delivery (undici's connect, headers and body
      // timeouts bound each POST), so this only catches a thread that hangs:
      // generous, since a delivery given up here that the thread then makes
      // is made twice (on a loaded machine a POST may take well past its
      // timeouts to be answered). One timer per message, not per delivery.
      const seqs = out.items.map((i) => i[0]);
      const ms = this.#init.timeoutMs * 4 + 30_000;
      setTimeout(() => {
        for (const seq of seqs) {
          const p = thread.pending.get(seq);
          if (p === undefined) continue;
          thread.pending.delete(seq);
          threadStats.lost++;
          p.reject(new Error(`the delivery thread did not answer within ${ms} ms`));
        }
      }, ms).unref();
    }
  }

  /** Stops the threads; deliveries still in their hands are failed (and so handed to Fedify, or left to their leases). */
  async close(): Promise<void> {
    this.#closed = true;
    const threads = this.#threads.splice(0);
    await Promise.all(threads.map(async (t) => {
      t.fail(new Error("the delivery threads were closed"));
      await t.worker.terminate();
    }));
  }
}

/** Adds `handle` to a thread's set, evicting the oldest over `max` (told to the thread with this message). */
function add(set: Set<number>, handle: number, max: number, drops: Set<number>): void {
  // Re-added in the same message after being dropped in it: it stays.
  drops.delete(handle);
  set.add(handle);
  if (set.size > max) {
    const oldest = set.values().next().value!;
    set.delete(oldest);
    drops.add(oldest);
  }
}

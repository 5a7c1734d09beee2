import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";

/**
 * Race contenders on threads of their own, each opening its own database
 * connection per operation, as a second `muster worker` or web process
 * would. SQLite's driver is synchronous: two connections in one thread
 * cannot wait for each other's locks, so a true race needs a second thread.
 * Starting a thread costs seconds (module loading), so contenders are
 * long-lived and shared until `close()`.
 */
export interface Contender<Op, Result> {
  run(url: string, op: Op): Promise<Result>;
}

export interface ContenderPool<Op, Result> {
  /** The first `n` shared contenders, started on first use. */
  take(n: number): Promise<Contender<Op, Result>[]>;
  close(): Promise<void>;
}

/**
 * Contenders that load `module` on their thread with `flag` set in their
 * workerData; that module answers them with `serveContender(flag, …)`.
 * `failed` turns a thread's crash into the result its pending runs get.
 */
export function contenderPool<Op, Result>(module: URL, flag: string, failed: (error: string) => Result): ContenderPool<Op, Result> {
  const started: Worker[] = [];
  const pool: Promise<Contender<Op, Result>>[] = [];

  async function start(): Promise<Contender<Op, Result>> {
    const worker = new Worker(module, { workerData: { [flag]: true } });
    started.push(worker);
    await new Promise<void>((resolve, reject) => {
      worker.once("error", reject);
      worker.once("message", (m: { ready?: boolean }) => (m.ready ? resolve() : reject(new Error("worker did not start"))));
    });
    const waiting = new Map<number, (r: Result) => void>();
    let next = 0;
    worker.on("message", (m: { id?: number; result?: Result }) => {
      if (m.id === undefined || m.result === undefined) return;
      waiting.get(m.id)?.(m.result);
      waiting.delete(m.id);
    });
    worker.on("error", (e) => {
      for (const w of waiting.values()) w(failed(String(e)));
      waiting.clear();
    });
    return {
      run: (url, op) => new Promise<Result>((resolve) => {
        const id = next++;
        waiting.set(id, resolve);
        worker.postMessage({ id, url, op });
      }),
    };
  }

  return {
    take(n) {
      while (pool.length < n) pool.push(start());
      return Promise.all(pool.slice(0, n));
    },
    async close() {
      pool.length = 0;
      await Promise.all(started.splice(0).map((w) => w.terminate()));
    },
  };
}

/** The contender's side: on a thread started with `flag`, answers each operation with `runOp`. */
export function serveContender<Op, Result>(flag: string, runOp: (url: string, op: Op) => Promise<Result>): void {
  if (isMainThread || !(workerData as Record<string, unknown> | undefined)?.[flag]) return;
  parentPort!.on("message", async (m: { id: number; url: string; op: Op }) => {
    parentPort!.postMessage({ id: m.id, result: await runOp(m.url, m.op) });
  });
  parentPort!.postMessage({ ready: true });
}

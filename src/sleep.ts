/** Resolves after `ms`, or at once when the signal aborts (never rejects). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Runs `task` every `ms` until the signal aborts; a failing run is reported, not fatal. */
export async function every(ms: number, signal: AbortSignal, task: () => Promise<unknown>, onError: (e: unknown) => void): Promise<void> {
  while (!signal.aborted) {
    try {
      await task();
    } catch (e) {
      onError(e);
    }
    await sleep(ms, signal);
  }
}

/**
 * Resolves on the event loop's next turn. A job that runs many statements in
 * a row awaits it between pages: on SQLite each statement runs synchronously
 * and its promise settles as a microtask, so a loop of them never lets a
 * timer, a request or a claim in until the whole job is done.
 */
export function nextTurn(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}

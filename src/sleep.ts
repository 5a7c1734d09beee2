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

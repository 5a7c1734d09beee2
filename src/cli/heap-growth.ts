import { setFlagsFromString } from "node:v8";
import { ConfigError } from "../config.ts";

/**
 * How far V8 lets the old generation grow past what survived the last full
 * collection before it collects again, in percent. V8 picks up to 300 % on a
 * machine with a large heap limit when the program allocates fast, and a
 * server's allocation comes in bursts (a join's signatures, JSON-LD
 * documents, queue rows): 150 joins took `muster serve` from 220 to 515 MiB
 * RSS while its live heap stayed at about 60 MiB, and V8 keeps what it grew
 * to long after. At 50 % 300 joins peaked at 381-418 MiB instead of
 * 538-563 (400 joins at 10^6 members: 404-420 against 586), for 0-10 % more
 * CPU per join (bench/memory.ts, README "Sizing").
 */
export const HEAP_GROWING_PERCENT = 50;

/**
 * Bounds the heap's growth for a long-running process (serve, worker). V8
 * reads this flag at every full collection, so setting it after start takes
 * effect. MUSTER_HEAP_GROWING_PERCENT overrides the percentage (0: V8's own
 * choice, as before); a `--heap-growing-percent` given to node itself wins.
 */
export function boundHeapGrowth(env: Record<string, string | undefined> = process.env): void {
  if (process.execArgv.some((a) => /^--heap[-_]growing[-_]percent\b/.test(a))) return;
  const raw = env.MUSTER_HEAP_GROWING_PERCENT?.trim();
  const percent = raw === undefined || raw === "" ? HEAP_GROWING_PERCENT : Number(raw);
  if (!Number.isInteger(percent) || percent < 0 || percent > 1000) throw new ConfigError(`MUSTER_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000, not ${JSON.stringify(raw)}`);
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}

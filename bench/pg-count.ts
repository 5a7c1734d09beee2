/**
 * Loaded with `node --import` into a Muster process by bench/workers.ts
 * (BENCH_WORKERS_STATEMENTS=1): counts the statements (round trips) its pg
 * clients send (a pipeline's statements after its first share its round trip:
 * not counted), and on SIGUSR2 writes the count so far to
 * $BENCH_PG_COUNT_DIR/<pid>. Nothing else changes in the process.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { sharesRoundTrip } from "../src/db/pipeline.ts";

const dir = process.env.BENCH_PG_COUNT_DIR;
if (dir) {
  let count = 0;
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    if (!sharesRoundTrip(args[0])) count++;
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
  process.on("SIGUSR2", () => writeFileSync(join(dir, String(process.pid)), String(count)));
}

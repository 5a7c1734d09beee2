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
  // BENCH_PG_COUNT_TEXTS=<dir>: also each statement's text (its first 120 characters) and how often it was sent so far, in <dir>/<pid>.<signal>.texts.
  const textsDir = process.env.BENCH_PG_COUNT_TEXTS;
  const texts = textsDir ? new Map<string, number>() : undefined;
  let signals = 0;
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const own = !sharesRoundTrip(args[0]);
    if (own) count++;
    if (texts) {
      const q = args[0] as string | { text?: string; name?: string } | undefined;
      const text = `${own ? "RT " : "+  "}${(typeof q === "string" ? q : q?.text ?? "?").replace(/\s+/g, " ").slice(0, 120)}`;
      texts.set(text, (texts.get(text) ?? 0) + 1);
    }
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
  // Time each pooled connection took to be handed out (a wait for a free one of the pool's, or a new connection):
  // written beside the count as <pid>.pool, "acquires waits>1ms totalWaitMs".
  let acquires = 0;
  let waits = 0;
  let waitMs = 0;
  const connect = pg.Pool.prototype.connect as (...args: unknown[]) => unknown;
  pg.Pool.prototype.connect = function (this: pg.Pool, ...args: unknown[]) {
    if (args.length > 0) return connect.apply(this, args);
    const t = performance.now();
    return (connect.apply(this, args) as Promise<pg.PoolClient>).then((client) => {
      const d = performance.now() - t;
      acquires++;
      waitMs += d;
      if (d > 1) waits++;
      return client;
    });
  } as typeof pg.Pool.prototype.connect;
  process.on("SIGUSR2", () => {
    writeFileSync(join(dir, `${process.pid}.pool`), `${acquires} ${waits} ${waitMs.toFixed(1)}`);
    writeFileSync(join(dir, String(process.pid)), String(count));
    if (texts && textsDir) writeFileSync(join(textsDir, `${process.pid}.${++signals}.texts`), [...texts].sort((a, b) => b[1] - a[1]).map(([t, n]) => `${String(n).padStart(7)} ${t}`).join("\n") + "\n");
  });
}

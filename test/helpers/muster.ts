import { createServer } from "node:net";
import { loadConfig } from "../../src/config.ts";
import { createMuster, type Muster, type MusterOptions } from "../../src/main.ts";
import { type RunningServer, startServer } from "../../src/server.ts";
import { createUnion, type Union } from "../../src/unions/unions.ts";
import type { TestDatabase } from "./databases.ts";

export interface TestMuster {
  readonly muster: Muster;
  readonly server: RunningServer;
  readonly origin: URL;
  stop(): Promise<void>;
}

/** A free loopback port: the origin (and so every actor id) must be known before listening. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A real Muster server on loopback over the given database, as `muster serve` runs it. */
export async function startMuster(tdb: TestDatabase, opts: { worker?: boolean; port?: number; env?: Record<string, string>; schedulerIntervalMs?: number; muster?: MusterOptions } = {}): Promise<TestMuster> {
  const port = opts.port ?? await freePort();
  const config = loadConfig({
    PORT: String(port),
    ORIGIN: `http://127.0.0.1:${port}`,
    DATABASE_URL: tdb.url,
    MUSTER_ALLOW_PRIVATE_ADDRESS: "1",
    LOG_LEVEL: "error",
    ...opts.env,
  });
  const muster = await createMuster(config, { queue: { pollIntervalMs: 50 }, runLedger: true, schedulerIntervalMs: opts.schedulerIntervalMs, ...opts.muster });
  const server = await startServer(muster, { port, hostname: "127.0.0.1", worker: opts.worker ?? true });
  return { muster, server, origin: config.origin, stop: () => server.stop() };
}

export function makeUnion(m: TestMuster, slug = "riders", extra: Partial<Parameters<typeof createUnion>[1]> = {}): Promise<Union> {
  return createUnion(m.muster.unions, {
    slug,
    name: "Riders United",
    purpose: "Fair pay for delivery riders",
    leaderHandle: "@lead@example.org",
    ...extra,
  });
}

/** Polls until the check passes; federation work runs on the queue, after the HTTP response. */
export async function eventually<T>(check: () => Promise<T | undefined | false>, what: string, timeoutMs = 15_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import { openDatabase } from "../src/db/database.ts";
import { checkpointStats } from "../src/db/sqlite-checkpointer.ts";

/*
 * src/db/sqlite-checkpointer.ts: a process that runs the queue checkpoints
 * SQLite's WAL on a thread of its own, never inside a commit on the main
 * thread, and the WAL stays as small as with automatic checkpoints.
 */

const walSize = (file: string) => {
  try {
    return statSync(`${file}-wal`).size;
  } catch {
    return 0;
  }
};

async function write(d: ReturnType<typeof openDatabase>, transactions: number): Promise<void> {
  for (let i = 0; i < transactions; i++) {
    await d.db.transaction().execute(async (trx) => {
      for (let j = 0; j < 20; j++) await sql`insert into t (v) values (${"x".repeat(2000)})`.execute(trx);
    });
    // Room for the thread's ticks, as a server's event loop has between commits.
    if (i % 25 === 0) await new Promise((r) => setTimeout(r, 60));
  }
}

describe("SQLite checkpoints on a thread", () => {
  it("the connection never checkpoints itself, the thread copies the WAL back, and the WAL stays small", async () => {
    const dir = mkdtempSync(join(tmpdir(), "muster-ckpt-"));
    const file = join(dir, "muster.db");
    const d = openDatabase(`sqlite:${file}`, { checkpointThread: true });
    try {
      await sql`create table t (id integer primary key, v text)`.execute(d.db);
      const { rows } = await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(d.db);
      assert.equal(rows[0]!.wal_autocheckpoint, 0, "the main connection does not checkpoint in its commits");
      const before = { ...checkpointStats };
      // About 12 MB through the WAL: 3,000 pages, three automatic checkpoints' worth.
      await write(d, 300);
      await new Promise((r) => setTimeout(r, 600));
      assert.ok(checkpointStats.frames - before.frames >= 2000, `the thread checkpointed ${checkpointStats.frames - before.frames} frames`);
      assert.ok(statSync(file).size >= 10_000_000, "the rows reached the database file");
      // A steady stream of commits: without a restart the WAL would hold all
      // of it (another 24 MB); it is started over instead.
      await write(d, 600);
      await new Promise((r) => setTimeout(r, 600));
      assert.ok(walSize(file) < 20_000_000, `the WAL was started over, not grown: ${walSize(file)} bytes`);
    } finally {
      await d.close();
    }
    assert.equal(walSize(file), 0, "closing the last connection checkpointed the rest");
    rmSync(dir, { recursive: true, force: true });
  });

  it("without the thread (CLI commands) the connection checkpoints itself as before", async () => {
    const dir = mkdtempSync(join(tmpdir(), "muster-ckpt-"));
    const d = openDatabase(`sqlite:${join(dir, "muster.db")}`);
    try {
      const { rows } = await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(d.db);
      assert.equal(rows[0]!.wal_autocheckpoint, 1000);
    } finally {
      await d.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

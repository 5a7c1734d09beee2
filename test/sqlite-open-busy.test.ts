import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import SQLite from "better-sqlite3";
import { sql } from "kysely";
import { openDatabase } from "../src/db/database.ts";
import { DatabaseUnavailableError } from "../src/db/unavailable.ts";

/*
 * Opening a SQLite database that another process holds (one recovering the
 * WAL after a crash, or holding it exclusively) waits for it a few seconds:
 * the crowdfund crash test's reader opened the database while the restarted
 * `serve` recovered it and failed at once with "database is locked".
 */

const betterSqlite = createRequire(import.meta.url).resolve("better-sqlite3");

/** A child process that holds `file` exclusively for `ms`, resolved once it holds it. */
async function holdExclusively(file: string, ms: number): Promise<{ exited: Promise<unknown> }> {
  const child = spawn(process.execPath, ["-e", `
    const S = require(${JSON.stringify(betterSqlite)});
    const db = new S(${JSON.stringify(file)});
    db.pragma("locking_mode = EXCLUSIVE");
    db.exec("begin exclusive; insert into t values (1);");
    process.stdout.write("held\\n");
    setTimeout(() => { db.exec("commit"); db.close(); }, ${ms});
  `], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise((r) => child.once("exit", r));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`the holder exited with ${code}`)));
  });
  return { exited };
}

describe("opening a SQLite database another process holds", () => {
  function fresh(): { dir: string; file: string } {
    const dir = mkdtempSync(join(tmpdir(), "muster-open-busy-"));
    const file = join(dir, "muster.sqlite");
    const s = new SQLite(file);
    s.pragma("journal_mode = WAL");
    s.exec("create table t (n integer)");
    s.close();
    return { dir, file };
  }

  it("waits for the lock and then reads what the other process committed", async () => {
    const { dir, file } = fresh();
    try {
      const holder = await holdExclusively(file, 700);
      const database = openDatabase(`sqlite:${file}`);
      try {
        const { rows } = await sql<{ n: number }>`select n from t`.execute(database.db);
        assert.deepEqual(rows.map((r) => r.n), [1]);
      } finally {
        await database.close();
      }
      await holder.exited;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("held longer than it waits: a clear error naming the file, not a crash later", async () => {
    const { dir, file } = fresh();
    try {
      const holder = await holdExclusively(file, 8000);
      assert.throws(() => openDatabase(`sqlite:${file}`), (e: unknown) => e instanceof DatabaseUnavailableError && e.message.includes(file) && /locked/.test(e.message));
      await holder.exited;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { sqlitePath } from "../src/config.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";

// Another process (an operator's sqlite3, a second `muster` command) holding
// the SQLite write lock must not freeze the server: reads and /healthz keep
// answering while it is held, and a write waits for it without blocking the
// event loop, then succeeds. PostgreSQL has no such lock; SQLite only.

const sqlite = dialects.find((d) => d.name === "sqlite")!;

/** A second process that takes the write lock, says "locked", holds it until told to let go, then says "released". */
function holdWriteLock(file: string): { child: ChildProcess; locked: Promise<void>; release(): Promise<void> } {
  const child = spawn(process.execPath, ["-e", `
    const db = new (require("better-sqlite3"))(${JSON.stringify(file)});
    db.exec("BEGIN IMMEDIATE");
    db.prepare("INSERT INTO rate_limit_hits (id, bucket, at) VALUES ('other-process', 'held', ?)").run(Date.now());
    process.stdout.write("locked\\n");
    process.stdin.once("data", () => { db.exec("COMMIT"); process.stdout.write("released\\n"); process.exit(0); });
  `], { cwd: process.cwd(), stdio: ["pipe", "pipe", "inherit"] });
  let out = "";
  const saw = (word: string) => new Promise<void>((resolve, reject) => {
    const check = () => out.includes(word) && resolve();
    child.stdout!.on("data", (b: Buffer) => { out += b.toString(); check(); });
    child.once("exit", () => out.includes(word) ? resolve() : reject(new Error(`the lock holder exited before saying ${word}`)));
  });
  const locked = saw("locked");
  const released = saw("released");
  return { child, locked, release: async () => { child.stdin!.write("go\n"); await released; } };
}

describe("another process holding the SQLite write lock", { skip: sqlite.skip }, () => {
  let tdb: TestDatabase;
  let m: TestMuster;
  before(async () => {
    tdb = await sqlite.create();
    m = await startMuster(tdb);
    await makeUnion(m, "riders");
  });
  after(async () => {
    await m?.stop();
    await tdb?.destroy();
  });

  it("leaves /healthz and pages answering, and a sign-in request waits for the lock and then succeeds", async () => {
    const holder = holdWriteLock(sqlitePath(tdb.url));
    try {
      await holder.locked;
      // A write (the sign-in request records a rate-limit hit) starts while the lock is held.
      let signInDone = false;
      const signIn = fetch(new URL("/u/riders/login", m.origin), {
        method: "POST",
        headers: { Origin: m.origin.origin },
        body: new URLSearchParams({ handle: "@nobody@example.org" }),
      }).then((res) => {
        signInDone = true;
        return res;
      });
      // Reads keep answering meanwhile: each of these completes while the
      // other process still holds the lock and the write still waits.
      for (let i = 0; i < 3; i++) {
        const health = await fetch(new URL("/healthz", m.origin));
        assert.equal(health.status, 200);
        assert.equal((await fetch(new URL("/u/riders", m.origin), { headers: { Accept: "text/html" } })).status, 200);
        assert.equal(holder.child.exitCode, null, "the other process still holds the lock");
      }
      assert.equal(signInDone, false, "the write is waiting for the lock");
      await holder.release();
      const res = await signIn;
      assert.equal(res.status, 200, await res.clone().text());
      const hits = await m.muster.database.db.selectFrom("rate_limit_hits").select("bucket").execute();
      assert.ok(hits.some((h) => h.bucket === "held"), "the other process's write is kept");
      assert.ok(hits.some((h) => h.bucket.startsWith("login:handle:")), "the waiting write was made once the lock was free");
    } finally {
      if (holder.child.exitCode === null) holder.child.kill();
      await once(holder.child, "exit").catch(() => {});
    }
  });
});

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { sql } from "kysely";
import { Agent, fetch as undiciFetch } from "undici";
import { sqlitePath } from "../src/config.ts";
import { openDatabase } from "../src/db/database.ts";
import { DatabaseBusyError } from "../src/db/sqlite-driver.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";

// Another process (an operator's sqlite3, a second `muster` command) holding
// the SQLite write lock must not freeze the server: reads and /healthz keep
// answering while it is held, and a write waits for it without blocking the
// event loop, then succeeds. PostgreSQL has no such lock; SQLite only.

const sqlite = dialects.find((d) => d.name === "sqlite")!;

/** A second process that takes the write lock, says "locked", holds it until told to let go, then says "released". */
function holdWriteLock(file: string, id = "other-process"): { child: ChildProcess; locked: Promise<void>; release(): Promise<void> } {
  const child = spawn(process.execPath, ["-e", `
    const db = new (require("better-sqlite3"))(${JSON.stringify(file)});
    db.exec("BEGIN IMMEDIATE");
    db.prepare("INSERT INTO rate_limit_hits (id, bucket, at) VALUES (?, 'held', ?)").run(${JSON.stringify(id)}, Date.now());
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

/** Ends the lock holder if it still runs; `exit` already fired when it ended by itself. */
async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill();
  await exited;
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
      await stop(holder.child);
    }
  });

  it("answers a write that waits the lock out with 503 and Retry-After, saving nothing; the same request works after", async () => {
    // The server's outgoing-HTTP limit (the global dispatcher, shared with
    // this test process) would give up before the 10 s wait ends.
    const patient = new Agent({ headersTimeout: 120_000, bodyTimeout: 120_000 });
    const signIn = () => undiciFetch(new URL("/u/riders/login", m.origin), {
      dispatcher: patient,
      method: "POST",
      headers: { Origin: m.origin.origin },
      body: new URLSearchParams({ handle: "@later@example.org" }),
    });
    const loginHits = async () =>
      (await m.muster.database.db.selectFrom("rate_limit_hits").select("bucket").where("bucket", "like", "login:handle:%later%").execute()).length;
    const holder = holdWriteLock(sqlitePath(tdb.url), "other-process-2");
    try {
      await holder.locked;
      // Held until the answer comes, however long the server waits (BUSY_WAIT_MS).
      const res = await signIn();
      assert.equal(holder.child.exitCode, null, "the other process still holds the lock");
      assert.equal(res.status, 503, await res.clone().text());
      assert.ok(Number(res.headers.get("retry-after")) > 0, "Retry-After tells when to try again");
      assert.match(await res.text(), /Nothing was saved/);
      assert.equal(await loginHits(), 0, "nothing half-written");
      await holder.release();
      const again = await signIn();
      assert.equal(again.status, 200);
      assert.equal(await loginHits(), 1);
    } finally {
      await stop(holder.child);
    }
  });
});

describe("the SQLite connection shared by one process", { skip: sqlite.skip }, () => {
  let tdb: TestDatabase;
  before(async () => {
    tdb = await sqlite.create();
  });
  after(async () => {
    await tdb?.destroy();
  });

  const bucketsOf = async (database: ReturnType<typeof openDatabase>, prefix: string) =>
    (await database.db.selectFrom("rate_limit_hits").select("bucket").where("bucket", "like", `${prefix}%`).orderBy("at").orderBy("id").execute())
      .map((r) => r.bucket);

  it("reads while another process holds the lock, fails a write past its wait with a retryable error, and loses nothing", async () => {
    const database = openDatabase(tdb.url, { busyWaitMs: 300 });
    const holder = holdWriteLock(sqlitePath(tdb.url));
    try {
      await holder.locked;
      const insert = (id: string) => database.db.insertInto("rate_limit_hits").values({ id, bucket: "busy:1", at: 1 }).execute();
      await assert.rejects(insert("a"), (e: unknown) => e instanceof DatabaseBusyError && e.retryAfterSeconds > 0);
      await assert.rejects(
        database.db.transaction().execute(async (trx) => {
          await trx.insertInto("rate_limit_hits").values({ id: "b", bucket: "busy:2", at: 2 }).execute();
        }),
        DatabaseBusyError,
      );
      // A read meanwhile answers, from the last committed state.
      assert.deepEqual(await bucketsOf(database, "busy:"), []);
      assert.equal(holder.child.exitCode, null, "the other process still holds the lock");
      await holder.release();
      await insert("a");
      assert.deepEqual(await bucketsOf(database, "busy:"), ["busy:1"], "nothing half-written, the retried write landed once");
      assert.deepEqual(await bucketsOf(database, "held"), ["held"], "the other process's write is kept");
    } finally {
      await stop(holder.child);
      await database.close();
    }
  });

  it("writes waiting for the lock land in call order once it is free", async () => {
    const database = openDatabase(tdb.url);
    await database.db.deleteFrom("rate_limit_hits").execute();
    const holder = holdWriteLock(sqlitePath(tdb.url));
    try {
      await holder.locked;
      const writes = Array.from({ length: 20 }, (_, i) =>
        i % 2 === 0
          ? database.db.insertInto("rate_limit_hits").values({ id: `w${i}`, bucket: `order:${i}`, at: 5 }).execute()
          : database.db.transaction().execute((trx) =>
            trx.insertInto("rate_limit_hits").values({ id: `w${i}`, bucket: `order:${i}`, at: 5 }).execute()));
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(await bucketsOf(database, "order:"), [], "nothing written while the lock is held");
      await holder.release();
      await Promise.all(writes);
      const rows = await database.db.selectFrom("rate_limit_hits").select(["bucket"]).where("bucket", "like", "order:%")
        .orderBy(sql`rowid`).execute();
      assert.deepEqual(rows.map((r) => r.bucket), Array.from({ length: 20 }, (_, i) => `order:${i}`));
    } finally {
      await stop(holder.child);
      await database.close();
    }
  });

  it("a read from outside an open transaction neither waits for the lock nor sees the transaction's rows", async () => {
    const database = openDatabase(tdb.url);
    let commit!: () => void;
    const gate = new Promise<void>((r) => commit = r);
    let began!: () => void;
    const begun = new Promise<void>((r) => began = r);
    const transaction = database.db.transaction().execute(async (trx) => {
      await trx.insertInto("rate_limit_hits").values({ id: "tx", bucket: "isolated", at: 9 }).execute();
      began();
      await gate;
    });
    await begun;
    let read: string[] | undefined;
    const reading = bucketsOf(database, "isolated").then((r) => read = r);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(read, undefined, "the read waits for the transaction rather than reading its uncommitted row");
    commit();
    await transaction;
    await reading;
    assert.deepEqual(read, ["isolated"]);
    await database.close();
  });
});

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort } from "./helpers/muster.ts";

const ROOT = join(import.meta.dirname, "..");
const BIN = join(ROOT, "bin", "muster.js");

function muster(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: "error", ...env }, encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("muster CLI", () => {
  const env = { DATA_DIR: "", ORIGIN: "https://union.example" };
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "muster-cli-"));
    env.DATA_DIR = dir;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("has --help on every command", () => {
    const top = muster(["--help"], env);
    assert.equal(top.code, 0);
    for (const cmd of ["serve", "worker", "migrate", "union create", "union list", "union show"]) {
      assert.match(top.out, new RegExp(`muster ${cmd}`), `top-level help lists ${cmd}`);
      const r = muster([...cmd.split(" "), "--help"], env);
      assert.equal(r.code, 0, `${cmd} --help exits 0`);
      assert.match(r.out, new RegExp(`^Usage: muster ${cmd}`), `${cmd} --help prints its usage`);
    }
  });

  it("creates, lists and shows unions, for humans and as JSON", () => {
    const created = muster(["union", "create", "riders", "--name", "Riders United", "--purpose", "Fair pay", "--leader", "@Lead@Example.org", "--json"], env);
    assert.equal(created.code, 0, created.err);
    const u = JSON.parse(created.out);
    assert.equal(u.handle, "@riders@union.example");
    assert.equal(u.actor, "https://union.example/u/riders");
    assert.equal(u.leader, "@lead@example.org");
    assert.equal(u.treasury, "queued", "the treasury is queued with the union, for the ledger lane");
    const list = JSON.parse(muster(["union", "list", "--json"], env).out);
    assert.deepEqual(list.map((x: { slug: string }) => x.slug), ["riders"]);
    const human = muster(["union", "show", "riders"], env);
    assert.equal(human.code, 0);
    assert.match(human.out, /Handle:\s+@riders@union\.example/);
    assert.match(human.out, /Purpose:\s+Fair pay/);
    const second = muster(["union", "create", "couriers", "--name", "Couriers", "--purpose", "Fair pay"], env);
    assert.match(second.out, /Treasury:\s+queued: a running server \(muster serve\) creates it on the ledger lane/);
  });

  it("creates a union in a time zone given on the command line, and refuses a zone that does not exist", () => {
    const created = muster(["union", "create", "bakers", "--name", "Bakers", "--purpose", "Bread", "--time-zone", "Europe/Berlin", "--json"], env);
    assert.equal(created.code, 0, created.err);
    assert.equal(JSON.parse(created.out).timeZone, "Europe/Berlin");
    const shown = muster(["union", "show", "bakers"], env);
    assert.match(shown.out, /Publishes:\s+one queued call-to-action a day at \d\d:\d\d Europe\/Berlin/);
    const bylaws = muster(["bylaws", "show", "bakers", "--json"], env);
    assert.equal(bylaws.code, 0, bylaws.err);
    assert.match(bylaws.out, /"timeZone":\s*"Europe\/Berlin"/, "the zone is a founding bylaw");
    const bad = muster(["union", "create", "bakers2", "--name", "B", "--purpose", "P", "--time-zone", "Mars/Olympus"], env);
    assert.equal(bad.code, 1);
    assert.equal(bad.err.trim().split("\n").length, 1, bad.err);
    assert.match(bad.err, /Mars\/Olympus/);
    assert.equal(muster(["union", "show", "bakers2"], env).code, 1, "nothing was created");
  });

  it("fails with one clear line and a non-zero exit", () => {
    const dup = muster(["union", "create", "riders", "--name", "X", "--purpose", "Y"], env);
    assert.equal(dup.code, 1);
    assert.equal(dup.err.trim().split("\n").length, 1);
    assert.match(dup.err, /already exists/);
    const bad = muster(["union", "create", "Bad Slug!", "--name", "X", "--purpose", "Y"], env);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /slug must be/);
    const missing = muster(["union", "show", "ghosts"], env);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /no union with slug "ghosts"/);
    const usage = muster(["union", "create", "x", "--name", "X"], env);
    assert.equal(usage.code, 2);
    assert.match(usage.err, /--purpose is required/);
    const unknownFlag = muster(["union", "list", "--bogus"], env);
    assert.equal(unknownFlag.code, 2);
    const config = muster(["union", "list"], { ...env, PORT: "http" });
    assert.equal(config.code, 1);
    assert.match(config.err, /PORT must be/);
    const timeout = muster(["union", "list"], { ...env, MUSTER_HTTP_TIMEOUT_MS: "10s" });
    assert.equal(timeout.code, 1);
    assert.match(timeout.err, /MUSTER_HTTP_TIMEOUT_MS must be a positive integer; got "10s"/);
    // A pool smaller than the queue's handlers and LISTENs would leave handlers waiting for a connection.
    const pool = muster(["worker"], { ...env, MUSTER_DB_POOL: "5" });
    assert.equal(pool.code, 1);
    assert.equal(pool.err.trim().split("\n").length, 1, pool.err);
    assert.match(pool.err, /MUSTER_DB_POOL is 5, below the 44 connections the queue needs at MUSTER_QUEUE_CONCURRENCY=16/);
    const unknown = muster(["frobnicate"], env);
    assert.equal(unknown.code, 2);
  });

  it("migrate reports an up-to-date database", () => {
    const r = muster(["migrate", "--json"], env);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(r.out), { applied: [] });
  });
});

for (const d of dialects) {
  describe(`muster serve on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    before(async () => (tdb = await d.create()));
    after(async () => tdb?.destroy());

    it("prints a setup token, serves the home page, and exits cleanly on SIGTERM", async () => {
      const port = await freePort();
      const child = spawn(process.execPath, [BIN, "serve"], {
        cwd: ROOT,
        // With the secret key given, a clean start prints no warning at all (without it, serve warns that the
        // key is a file to back up, by design).
        env: { ...process.env, PORT: String(port), DATABASE_URL: tdb.url, LOG_LEVEL: "warning", ORIGIN: `http://127.0.0.1:${port}`, MUSTER_SECRET_KEY: "11".repeat(32) },
      });
      let out = "";
      child.stdout.on("data", (b) => (out += b));
      child.stderr.on("data", (b) => (out += b));
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      try {
        const token = await eventually(async () => /Setup token \(one use\): (\S+)/.exec(out)?.[1], "setup token printed");
        const home = await fetch(`http://127.0.0.1:${port}/`);
        assert.equal(home.status, 200);
        assert.match(await home.text(), /Set up your first union/);
        const res = await fetch(`http://127.0.0.1:${port}/setup`, {
          method: "POST",
          body: new URLSearchParams({ token, slug: "cooks", name: "Cooks", purpose: "Kitchens", leader: "" }),
          redirect: "manual",
        });
        assert.equal(res.status, 303);
        assert.equal(res.headers.get("location"), "/u/cooks/start", "setup leads on to the next steps");
        const again = await fetch(`http://127.0.0.1:${port}/setup`, {
          method: "POST",
          body: new URLSearchParams({ token, slug: "bakers", name: "Bakers", purpose: "Bread" }),
          redirect: "manual",
        });
        assert.equal(again.status, 403, "the token works once");
      } finally {
        child.kill("SIGTERM");
      }
      assert.equal(await exited, 0, out);
      assert.doesNotMatch(out, /logtape·meta/, "LogTape is fully configured: it warns about nothing of its own at start");
      assert.doesNotMatch(out, / WRN /, "an expected refusal (the reused setup token's 403) is not a warning");
    });

    it("holds only processes that run queue handlers to their MUSTER_DB_POOL minimum", async () => {
      const base = { DATABASE_URL: tdb.url, ORIGIN: "https://union.example", MUSTER_SECRET_KEY: "11".repeat(32) };
      // A one-shot command only enqueues: two connections are enough.
      const created = muster(["union", "create", "pool", "--name", "Pool", "--purpose", "Small pools", "--json"], { ...base, MUSTER_DB_POOL: "2" });
      assert.equal(created.code, 0, created.err);
      const below = muster(["union", "list"], { ...base, MUSTER_DB_POOL: "1" });
      assert.equal(below.code, 1);
      assert.equal(below.err.trim().split("\n").length, 1, below.err);
      assert.match(below.err, /MUSTER_DB_POOL is 1, below the 2 connections any process needs/);
      // A worker still needs one per handler and the shared LISTEN; so does serve with its workers.
      for (const args of [["worker"], ["serve"]]) {
        const r = muster(args, { ...base, MUSTER_DB_POOL: "43", PORT: String(await freePort()) });
        assert.equal(r.code, 1, `${args.join(" ")} started with a pool below its handlers`);
        assert.match(r.err, /MUSTER_DB_POOL is 43, below the 44 connections the queue needs/);
      }
      // The web process alone serves on a small pool.
      const port = await freePort();
      const child = spawn(process.execPath, [BIN, "serve", "--no-worker"], {
        cwd: ROOT,
        env: { ...process.env, ...base, PORT: String(port), LOG_LEVEL: "warning", ORIGIN: `http://127.0.0.1:${port}`, MUSTER_DB_POOL: "2" },
      });
      let out = "";
      child.stdout.on("data", (b) => (out += b));
      child.stderr.on("data", (b) => (out += b));
      const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
      try {
        await eventually(async () => /queue workers: none in this process/.test(out) || child.exitCode !== null, "serve --no-worker listening");
        assert.equal(child.exitCode, null, out);
        const pages = await Promise.all(Array.from({ length: 8 }, () => fetch(`http://127.0.0.1:${port}/u/pool`)));
        assert.deepEqual(pages.map((p) => p.status), Array(8).fill(200));
        await Promise.all(pages.map((p) => p.text()));
      } finally {
        child.kill("SIGTERM");
      }
      assert.equal(await exited, 0, out);
    });
  });
}

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./helpers/muster.ts";

const ROOT = join(import.meta.dirname, "..");
const BIN = join(ROOT, "bin", "muster.js");

interface Run { code: number | null; out: string; err: string; signal: string | null }

/** Asynchronous, so a listener in this process can answer the child. */
function muster(args: string[], env: Record<string, string>): Promise<Run> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: "error", PORT: "0", ...env } });
  let out = "";
  let err = "";
  child.stdout.on("data", (b) => (out += b));
  child.stderr.on("data", (b) => (err += b));
  // The timeout turns the old busy loop into a failure instead of a hung suite.
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  return new Promise((resolve) => child.on("exit", (code, signal) => {
    clearTimeout(timer);
    resolve({ code, out, err, signal });
  }));
}

function oneLine(r: Run): string {
  assert.equal(r.signal, null, "the process ended by itself");
  assert.equal(r.code, 1, r.err);
  const lines = r.err.trim().split("\n");
  assert.equal(lines.length, 1, r.err);
  return lines[0]!;
}

describe("start-up errors name the path or server and the reason, in one line", () => {
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), "muster-startup-"))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("a DATA_DIR that cannot be created stops serve at once", async () => {
    const line = oneLine(await muster(["serve"], { DATA_DIR: "/proc/muster-data" }));
    assert.match(line, /cannot create the database directory \/proc\/muster-data: \/proc does not allow new directories/);
  });

  it("a sqlite path under a missing directory is refused, nothing is created", async () => {
    const file = join(dir, "missing", "deeper", "muster.sqlite");
    const line = oneLine(await muster(["migrate"], { DATABASE_URL: `sqlite:${file}` }));
    assert.equal(line, `muster: error: cannot create the database directory ${join(dir, "missing", "deeper")}: its parent directory does not exist`);
    assert.equal(existsSync(join(dir, "missing")), false);
  });

  it("the default data directory is still created on first start", async () => {
    const r = await muster(["migrate", "--json"], { DATA_DIR: join(dir, "data") });
    assert.equal(r.code, 0, r.err);
    assert.ok(existsSync(join(dir, "data", "muster.sqlite")));
  });

  it("an unreachable PostgreSQL is named without its password", async () => {
    const port = await freePort();
    const line = oneLine(await muster(["migrate"], { DATABASE_URL: `postgres://muster:s3cret@127.0.0.1:${port}/muster` }));
    assert.equal(line, `muster: error: database postgres://muster@127.0.0.1:${port}/muster: cannot reach the server: connection refused`);
  });

  it("a PostgreSQL server that is not one says so", async () => {
    // A listener that closes every connection: reachable, but no PostgreSQL.
    const server = createServer((s) => s.destroy());
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    try {
      const line = oneLine(await muster(["serve"], { DATABASE_URL: `postgres://u:pw@127.0.0.1:${port}/db` }));
      assert.match(line, new RegExp(`^muster: error: database postgres://u@127\\.0\\.0\\.1:${port}/db: `));
      assert.doesNotMatch(line, /pw|migration/);
    } finally {
      server.close();
    }
  });

  it("a missing PostgreSQL database is called that", { skip: !process.env.TEST_DATABASE_URL && "TEST_DATABASE_URL not set" }, async () => {
    const url = new URL(process.env.TEST_DATABASE_URL!);
    url.pathname = "/muster_no_such_database";
    url.password = "hidden";
    const line = oneLine(await muster(["migrate"], { DATABASE_URL: url.href }));
    assert.match(line, /muster_no_such_database: the database does not exist/);
    assert.doesNotMatch(line, /hidden|migration/);
  });
});

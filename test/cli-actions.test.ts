/**
 * The first hour with the call-to-action CLI: numbers as ids, the truthful
 * time a queued call goes out, --now outside the daily rhythm, one-line
 * parse errors and command groups that list what is under them. Runs the
 * real bin/muster.js against a fresh database of each dialect.
 */
import { dirname } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { createMuster, type Muster } from "../src/main.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { cli, ok, ORIGIN } from "./helpers/cli-run.ts";


describe("muster CLI: parse errors and command groups", () => {
  const env = { DATABASE_URL: "sqlite::memory:" };

  it("a bad option value is one line, not Node's three", () => {
    for (const args of [["action", "post", "riders", "--title", "T", "--text", "x", "--goal", "-3"], ["action", "post", "riders", "--goal"]]) {
      const r = cli(args, env);
      assert.equal(r.code, 2);
      assert.equal(r.err.split("\n").filter(Boolean).length, 1, r.err);
      assert.match(r.err, /^muster action post: --goal needs a value.*; see muster action post --help\n$/);
    }
    const r = cli(["action", "post", "riders", "--title", "T", "--text", "x", "--goal=-3"], env);
    assert.equal(r.err, `muster action post: --goal takes a whole number; got "-3"; see muster action post --help\n`);
  });

  it("a command group alone lists its subcommands instead of calling itself unknown", () => {
    for (const group of ["member", "action"]) {
      const r = cli([group], env);
      assert.equal(r.code, 2, `${group} alone is not a command`);
      assert.doesNotMatch(r.out + r.err, /unknown command/);
      assert.match(r.out, new RegExp(`^Commands under "muster ${group}":`));
      assert.match(r.out, new RegExp(`muster ${group} list`));
    }
    const wrong = cli(["member", "frob"], env);
    assert.match(wrong.err, /unknown command "member frob"/);
  });
});

for (const d of dialects) {
  describe(`muster action on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: Muster;
    const env: Record<string, string> = {};
    const setClock = (publishTime: string) => m.database.db.updateTable("unions").set({ publish_time: publishTime, time_zone: "UTC" }).where("slug", "=", "riders").execute();

    before(async () => {
      tdb = await d.create();
      env.DATABASE_URL = tdb.url;
      if (d.name === "sqlite") env.DATA_DIR = dirname(tdb.url.slice("sqlite:".length));
      // The same DATA_DIR as the CLI runs, so both open the keys with the same secret key (DATA_DIR/secret.key).
      m = await createMuster(loadConfig({ DATABASE_URL: tdb.url, ORIGIN, LOG_LEVEL: "error", ...(env.DATA_DIR ? { DATA_DIR: env.DATA_DIR } : {}) }));
      ok(["union", "create", "riders", "--name", "Riders United", "--purpose", "Fair pay", "--leader", "@lead@remote.example"], env);
    });
    after(async () => {
      await m?.close();
      await tdb?.destroy();
    });

    it("says truthfully when queued calls go out, and that --now takes no day's slot", async () => {
      // 23:59 UTC has not come yet today (unless this runs in the last minute of a day).
      await setClock("23:59");
      const first = ok(["action", "post", "riders", "--title", "First", "--text", "a"], env);
      assert.match(first, /^Queued [0-9a-f-]{36} for riders' daily publication; it goes out today at 23:59 UTC\.\n$/);
      const second = ok(["action", "post", "riders", "--title", "Second", "--text", "b"], env);
      assert.match(second, /it goes out tomorrow at 23:59 UTC\.\n$/, "one a day: the second waits a day");
      const now = ok(["action", "post", "riders", "--title", "Urgent", "--text", "c", "--now"], env);
      assert.match(now, /^Published call-to-action #1 of riders at once: Urgent\n/);
      assert.match(now, /outside the daily rhythm: the next queued one still goes out today at 23:59 UTC\.\n$/);
      // The day's slot is still free, and its time has come: the next scheduler pass takes it.
      await setClock("00:00");
      const due = ok(["action", "post", "riders", "--title", "Third", "--text", "d"], env);
      assert.match(due, /it goes out on \d{4}-\d{2}-\d{2} at 00:00 UTC\.\n$/, "two are ahead of it");
      const firstId = /Queued (\S+)/.exec(first)![1]!;
      assert.match(ok(["action", "show", "riders", firstId], env), /State:\s+queued, goes out within a minute/);
      const help = ok(["action", "post", "--help"], env);
      assert.match(help, /does not use the day's slot/);
    });

    it("takes the number action list shows, with or without #, and the id", async () => {
      const list = ok(["action", "list", "riders"], env);
      assert.match(list, /^1\s+published\s+Urgent/m);
      for (const ref of ["1", "#1"]) assert.match(ok(["action", "show", "riders", ref], env), /Title:\s+Urgent\nState:\s+published \(#1\)/);
      const id = JSON.parse(ok(["action", "show", "riders", "1", "--json"], env)).id as string;
      assert.match(ok(["action", "show", "riders", id], env), /Title:\s+Urgent/);
      const missing = cli(["action", "show", "riders", "7"], env);
      assert.equal(missing.code, 1);
      assert.equal(missing.err, "muster: error: no call-to-action #7 in union riders; `muster action list riders` shows them\n");
    });
  });
}

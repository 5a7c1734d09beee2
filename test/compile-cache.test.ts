import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureStopped, type MusterProcess, spawnMuster } from "./helpers/muster-process.ts";

/** Files under a directory, recursively. */
function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe("Node's compile cache for serve and worker (src/cli/compile-cache.ts)", () => {
  for (const [args, ready] of [[["serve", "--port", "0"], /listening on/], [["worker"], /worker started/]] as const) {
    it(`muster ${args[0]} writes the modules it compiled to Node's compile cache (TMPDIR/node-compile-cache), unless NODE_DISABLE_COMPILE_CACHE`, async () => {
      const dir = mkdtempSync(join(tmpdir(), "muster-cc-"));
      let p: MusterProcess | undefined;
      try {
        for (const disabled of [true, false]) {
          const tmp = join(dir, disabled ? "off" : "on");
          const env: Record<string, string> = { DATABASE_URL: `sqlite:${join(dir, "db.sqlite")}`, DATA_DIR: dir, ORIGIN: "http://127.0.0.1:1", LOG_LEVEL: "error", TMPDIR: tmp, NODE_COMPILE_CACHE: "" };
          if (disabled) env.NODE_DISABLE_COMPILE_CACHE = "1";
          p = spawnMuster(args, env);
          await p.waitFor(ready, `muster ${args[0]} started`);
          assert.equal(await p.stop(), 0, p.output());
          const cached = files(join(tmp, "node-compile-cache"));
          if (disabled) assert.equal(cached.length, 0, "nothing cached when Node's switch is off");
          else assert.ok(cached.length > 0, `the modules it compiled were cached under ${tmp}`);
        }
      } finally {
        await ensureStopped(p);
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

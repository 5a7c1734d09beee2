import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnMuster } from "./helpers/muster-process.ts";

describe("heap growth bound (MUSTER_HEAP_GROWING_PERCENT)", () => {
  it("refuses a value that is not a whole percentage in one line, before touching the database", async () => {
    const dir = mkdtempSync(join(tmpdir(), "muster-heap-"));
    try {
      for (const args of [["worker"], ["serve", "--port", "0"]]) {
        const p = spawnMuster(args, { DATABASE_URL: `sqlite:${join(dir, "db.sqlite")}`, DATA_DIR: dir, ORIGIN: "http://127.0.0.1:1", MUSTER_HEAP_GROWING_PERCENT: "half" });
        assert.equal(await p.exited, 1, p.output());
        assert.match(p.output(), /^muster: error: MUSTER_HEAP_GROWING_PERCENT must be a whole number from 0 to 1000, not "half"\n$/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

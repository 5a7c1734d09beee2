import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";

const ROOT = join(import.meta.dirname, "..");

/** The npm a newcomer runs: the one on the PATH, with whatever Node runs it. */
function systemNpm(): { node: string; cli: string } | undefined {
  try {
    const bin = realpathSync(execFileSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).trim());
    return { node: "node", cli: join(dirname(bin), "npm-cli.js") };
  } catch {
    return undefined;
  }
}

const npm = systemNpm();

describe("npm install", { skip: !npm && "no npm on the PATH" }, () => {
  it("is quiet under the system Node: no EBADENGINE warnings", () => {
    // The system Node (20 on this machine) runs npm, as for anyone who clones the project.
    const r = spawnSync(npm!.node, [npm!.cli, "ci", "--dry-run"], { cwd: ROOT, encoding: "utf8", env: { ...process.env, PATH: process.env.PATH!.split(":").filter((p) => !p.includes("node_modules")).join(":") } });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /EBADENGINE|npm warn/);
  });

  it("every package accepts the Node the project runs on", () => {
    // npm's own engine check, run under the pinned Node 24 and made strict: a
    // dependency that needs a newer Node fails here instead of at run time.
    assert.equal(process.versions.node, JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).devDependencies.node, "the tests run on the pinned Node");
    const r = spawnSync(process.execPath, [npm!.cli, "ci", "--dry-run", "--engine-strict", "--loglevel=warn"], { cwd: ROOT, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /EBADENGINE/);
  });
});

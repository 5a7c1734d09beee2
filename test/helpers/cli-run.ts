import { spawnSync } from "node:child_process";
import { join } from "node:path";
import assert from "node:assert/strict";

// The real `bin/muster.js`, run as an operator would, for the CLI suites.

export const ROOT = join(import.meta.dirname, "..", "..");
export const BIN = join(ROOT, "bin", "muster.js");
export const ORIGIN = "https://union.example";

export interface Run {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

export function cli(args: string[], env: Record<string, string>): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: "error", ORIGIN, ...env }, encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A run that must succeed; its stdout. */
export function ok(args: string[], env: Record<string, string>): string {
  const r = cli(args, env);
  assert.equal(r.code, 0, `muster ${args.join(" ")} failed: ${r.err}`);
  return r.out;
}

/** A run that must fail with one line on stderr. */
export function fails(args: string[], env: Record<string, string>, code: number, message: RegExp): Run {
  const r = cli(args, env);
  assert.equal(r.code, code, `muster ${args.join(" ")} should exit ${code}; stdout ${r.out} stderr ${r.err}`);
  assert.match(r.err, message);
  if (code === 1) assert.equal(r.err.trim().split("\n").length, 1, `one line: ${r.err}`);
  return r;
}

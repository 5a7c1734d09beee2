import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { join } from "node:path";
import { eventually } from "./muster.ts";

export const ROOT = join(import.meta.dirname, "..", "..");
export const BIN = join(ROOT, "bin", "muster.js");

/** Muster's settings; the parent's values never leak into a child unless passed. */
const MUSTER_ENV = ["PORT", "ORIGIN", "DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "MUSTER_ALLOW_PRIVATE_ADDRESS", "MUSTER_MAX_BODY_BYTES"];

/** `bin/muster.js <args>` as a real child process, the way an operator runs it. */
export interface MusterProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly pid: number;
  /** Everything printed so far on stdout. */
  stdout(): string;
  /** stdout and stderr interleaved, for failure messages. */
  output(): string;
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** Waits until stdout+stderr match, failing early if the process exits first. */
  waitFor(pattern: RegExp, what: string, timeoutMs?: number): Promise<RegExpExecArray>;
  /** SIGTERM (once) and the exit code. */
  stop(): Promise<number | null>;
}

export function spawnMuster(args: readonly string[], env: Record<string, string>): MusterProcess {
  const base: Record<string, string | undefined> = { ...process.env };
  for (const k of MUSTER_ENV) delete base[k];
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...base, ...env } });
  let out = "";
  let all = "";
  child.stdout.on("data", (b: Buffer) => {
    out += b;
    all += b;
  });
  child.stderr.on("data", (b: Buffer) => (all += b));
  let exitCode: number | null | undefined;
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(exitCode = code)));
  let stopping: Promise<number | null> | undefined;
  return {
    child,
    pid: child.pid!,
    stdout: () => out,
    output: () => all,
    exited,
    async waitFor(pattern, what, timeoutMs = 60_000) {
      return eventually(async () => {
        const m = pattern.exec(all);
        if (m) return m;
        if (exitCode !== undefined) throw new Error(`muster ${args.join(" ")} exited (${exitCode}) before ${what}:\n${all}`);
        return undefined;
      }, what, timeoutMs);
    },
    stop() {
      if (exitCode !== undefined) return exited;
      stopping ??= (child.kill("SIGTERM"), exited);
      return stopping;
    },
  };
}

/** Makes sure a child is gone after a test, even one that failed midway. */
export async function ensureStopped(p: MusterProcess | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const timer = setTimeout(() => p.child.kill("SIGKILL"), 15_000);
  try {
    await p.stop();
  } finally {
    clearTimeout(timer);
  }
}

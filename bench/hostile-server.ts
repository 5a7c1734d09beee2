// A Muster server in its own process, so the hostile benchmark can measure the
// server's CPU apart from the client's. Prints {"origin"} once ready, then
// answers one JSON line per command line on stdin:
//   start <label>  begin a phase: note CPU, reset the event-loop delay histogram,
//                  start a CPU profile when HOSTILE_CPU_PROF names a directory
//   stop           end it: {cpuMs, loopP99Ms, loopMaxMs} (and write <dir>/<label>.cpuprofile)
// and exits when its stdin closes.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createInterface } from "node:readline";
import type { TestDatabase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster } from "../test/helpers/muster.ts";

const url = process.env.HOSTILE_DATABASE_URL;
if (!url) throw new Error("HOSTILE_DATABASE_URL is not set");
const profileDir = process.env.HOSTILE_CPU_PROF;
// startMuster reads only the URL of the database the parent created and will drop.
const m = await startMuster({ url } as TestDatabase, { env: { MUSTER_MAX_BODY_BYTES: String(2 * 1024 * 1024) } });
await makeUnion(m, "riders", { joinPolicy: "open" });

const loop = monitorEventLoopDelay({ resolution: 1 });
loop.enable();
const session = profileDir ? new Session() : undefined;
if (session) {
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.setSamplingInterval", { interval: 200 });
}
let phase: { label: string; cpu: NodeJS.CpuUsage } | undefined;
const reply = (value: unknown) => process.stdout.write(`${JSON.stringify(value)}\n`);

reply({ origin: m.origin.href });
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const [cmd, ...rest] = line.split(" ");
  if (cmd === "start") {
    phase = { label: rest.join(" "), cpu: process.cpuUsage() };
    if (session) await session.post("Profiler.start");
    loop.reset();
    reply({ ok: true });
  } else if (cmd === "stop" && phase) {
    const used = process.cpuUsage(phase.cpu);
    const stats = { cpuMs: (used.user + used.system) / 1000, loopP99Ms: loop.percentile(99) / 1e6, loopMaxMs: loop.max / 1e6 };
    if (session) {
      const { profile } = await session.post("Profiler.stop");
      writeFileSync(`${profileDir}/${phase.label.replace(/[^a-z0-9]+/gi, "-")}.cpuprofile`, JSON.stringify(profile));
    }
    phase = undefined;
    reply(stats);
  } else {
    reply({ error: `unknown command ${line}` });
  }
}
await m.stop();
process.exit(0);

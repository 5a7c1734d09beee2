// Loaded with `node --import` into a Muster child started by bench/memory.ts: answers each IPC message with
// process.memoryUsage() and V8's heap spaces, so the parent reads the child's own split (heap, external,
// array buffers) beside its RSS. Does nothing in a process without an IPC channel.
import { getHeapSpaceStatistics, getHeapStatistics, writeHeapSnapshot } from "node:v8";

if (process.send) {
  process.channel?.unref();
  process.on("message", (m: { probe?: string; snapshot?: string; gc?: boolean }) => {
    if (!m || typeof m !== "object" || !("probe" in m)) return;
    if (m.gc) (globalThis as { gc?: () => void }).gc?.();
    if (m.snapshot) writeHeapSnapshot(m.snapshot);
    const spaces = Object.fromEntries(getHeapSpaceStatistics().map((s) => [s.space_name, s.space_used_size]));
    process.send!({ probe: m.probe, usage: process.memoryUsage(), heap: getHeapStatistics(), spaces });
  });
}

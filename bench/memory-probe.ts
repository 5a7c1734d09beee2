// Loaded with `node --import` into a Muster child started by bench/memory.ts: answers each IPC message with
// process.memoryUsage() and the time V8 spent in garbage collection pauses so far, so the parent reads the
// child's own split (heap, external, array buffers) beside its RSS. Does nothing without an IPC channel.
import { PerformanceObserver } from "node:perf_hooks";
import { writeHeapSnapshot } from "node:v8";

if (process.send) {
  process.channel?.unref();
  let gcMs = 0;
  let gcs = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcMs += e.duration;
      gcs++;
    }
  }).observe({ type: "gc" });
  process.on("message", (m: { probe?: string; snapshot?: string; gc?: boolean }) => {
    if (!m || typeof m !== "object" || !("probe" in m)) return;
    if (m.gc) (globalThis as { gc?: () => void }).gc?.();
    if (m.snapshot) writeHeapSnapshot(m.snapshot);
    process.send!({ probe: m.probe, usage: process.memoryUsage(), gcMs, gcs });
  });
}

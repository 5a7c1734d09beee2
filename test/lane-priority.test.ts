import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { LanePriority } from "../federation/queue-lanes.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A task that records when it started and finishes when `release` is called. */
function gatedTask(started: string[], name: string) {
  let release!: () => void;
  const done = new Promise<void>((r) => release = r);
  return { run: async () => { started.push(name); await done; }, release: () => release() };
}

describe("lane priority: bulk work yields to interactive work in the same process", () => {
  it("while a join's work runs, at most two deliveries start; the rest start when it is over and the linger has passed", async () => {
    const p = new LanePriority(2);
    const started: string[] = [];
    const join = gatedTask(started, "join");
    const joining = p.interactive(join.run);
    const deliveries = Array.from({ length: 5 }, (_, i) => gatedTask(started, `d${i}`));
    const delivering = deliveries.map((d) => p.bulk(d.run));
    await sleep(20);
    assert.deepEqual(started, ["join", "d0", "d1"], "two deliveries run beside the join, three wait");
    join.release();
    await joining;
    await sleep(LanePriority.LINGER_MS / 5);
    assert.equal(started.length, 3, "within the linger (the gap before the Accept is claimed) the rest still wait");
    await sleep(LanePriority.LINGER_MS + 100);
    assert.deepEqual(started.sort(), ["d0", "d1", "d2", "d3", "d4", "join"], "after it, every delivery runs");
    for (const d of deliveries) d.release();
    await Promise.all(delivering);
  });

  it("with no interactive work, bulk work is not limited; a failing task frees its slot", async () => {
    const p = new LanePriority(1);
    const started: string[] = [];
    const tasks = Array.from({ length: 4 }, (_, i) => gatedTask(started, `d${i}`));
    const running = tasks.map((t) => p.bulk(t.run));
    await sleep(10);
    assert.equal(started.length, 4);
    for (const t of tasks) t.release();
    await Promise.all(running);
    await assert.rejects(p.interactive(() => Promise.reject(new Error("boom"))), /boom/);
    await assert.rejects(p.bulk(() => Promise.reject(new Error("bang"))), /bang/);
    await sleep(LanePriority.LINGER_MS + 50);
    assert.equal(p.busy, false, "a failed interactive task does not leave the process marked busy");
  });
});

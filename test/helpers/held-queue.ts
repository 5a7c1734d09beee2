import { type CountingPeer, startCountingPeer } from "./counting-peer.ts";
import type { DialectCase, TestDatabase } from "./databases.ts";
import { startMuster, type TestMuster } from "./muster.ts";

/**
 * A Muster on a fresh database whose queue nobody works until the test says
 * so (runQueue), beside a counting peer whose actors join it: for suites
 * that queue a join's deliveries, change something (a member leaves, a
 * worker "dies" holding one), and only then let the deliveries go out.
 */
export interface HeldQueue {
  readonly m: TestMuster;
  readonly peer: CountingPeer;
  /** Starts working the queue in this process, once. */
  runQueue(): void;
  /** Stops the queue's work, the Muster and the peer, and drops the database. */
  stop(): Promise<void>;
}

export async function startHeldQueue(d: DialectCase, actors: readonly string[]): Promise<HeldQueue> {
  const worker = new AbortController();
  let running: Promise<void> | undefined;
  let tdb: TestDatabase | undefined;
  let m: TestMuster | undefined;
  let peer: CountingPeer | undefined;
  const stop = async () => {
    worker.abort();
    await running;
    await m?.stop();
    await peer?.close();
    await tdb?.destroy();
  };
  try {
    tdb = await d.create();
    m = await startMuster(tdb, { worker: false });
    peer = await startCountingPeer([...actors]);
  } catch (error) {
    await stop();
    throw error;
  }
  const started = m;
  return {
    m,
    peer,
    runQueue() {
      running ??= started.muster.runQueue(worker.signal);
    },
    stop,
  };
}

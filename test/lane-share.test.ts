import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { LaneShare } from "../federation/lane-share.ts";

describe("LaneShare: a bulk lane listener's share of the messages in flight", () => {
  it("caps nothing while no other listener has been heard", () => {
    const share = new LaneShare("me");
    assert.equal(share.cap(100, 0), Number.POSITIVE_INFINITY);
    share.heard("me", 5, 0);
    assert.equal(share.cap(100, 0), Number.POSITIVE_INFINITY, "its own heartbeat is no peer");
  });

  it("holds a listener to the average across listeners, with a band above it", () => {
    const share = new LaneShare("me");
    share.heard("other", 0, 0);
    // One worker held all 100 keys of a fan-out, the other none: 50 each, a quarter more at most.
    assert.deepEqual(share.limits(100, 0), { fair: 50, cap: 63 });
    share.heard("other", 50, 0);
    assert.deepEqual(share.limits(50, 0), { fair: 50, cap: 63 }, "balanced: keeps what it holds");
    share.heard("third", 0, 0);
    assert.deepEqual(share.limits(50, 0), { fair: 34, cap: 43 });
    const small = new LaneShare("me");
    small.heard("other", 0, 0);
    assert.equal(small.cap(2, 0), 1 + 2, "at least 2 over");
  });

  it("forgets a listener not heard from within the TTL (stopped, or idle), and its share returns", () => {
    const share = new LaneShare("me", { ttlMs: 3000 });
    share.heard("other", 10, 0);
    assert.equal(share.peers(2999), 1);
    assert.equal(share.cap(100, 3001), Number.POSITIVE_INFINITY);
    assert.equal(share.peers(3001), 0);
  });

  it("ignores a malformed count", () => {
    const share = new LaneShare("me");
    share.heard("other", Number.NaN, 0);
    share.heard("other", -1, 0);
    assert.equal(share.peers(0), 0);
  });
});

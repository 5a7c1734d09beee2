import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { plainDeadline } from "../federation/action-note.ts";

describe("what a member reads in Mastodon", () => {
  it("a deadline is plain words in the union's time zone, not an ISO timestamp", () => {
    assert.equal(plainDeadline(new Date("2026-12-01T17:00:00Z"), "Europe/Berlin"), "Tuesday 1 December at 18:00 (Europe/Berlin)");
    assert.equal(plainDeadline(new Date("2026-12-01T23:30:00Z"), "UTC"), "Tuesday 1 December at 23:30 (UTC)");
    assert.equal(plainDeadline(new Date("2026-12-01T23:30:00Z"), "America/New_York"), "Tuesday 1 December at 18:30 (America/New_York)");
  });
});

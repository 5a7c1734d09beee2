import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { newMemberId } from "../src/members/member-id.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { newUnionId } from "../src/unions/union-id.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";

const V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("member ids", () => {
  it("are UUIDv7: the millisecond first, then random bits, in randomUUID's form", () => {
    const at = Date.UTC(2026, 11, 5, 3, 4, 5, 678);
    const id = newMemberId(at);
    assert.match(id, V7);
    assert.equal(Number.parseInt(id.replace(/-/g, "").slice(0, 12), 16), at);
    const many = new Set(Array.from({ length: 10_000 }, () => newMemberId(at)));
    assert.equal(many.size, 10_000, "ids of one millisecond differ");
    // Text order is time order, which keeps the b-trees ending in the id append-only.
    const times = [0, 1, 255, 256, 65_535, at, at + 1, 2 ** 48 - 1];
    const ids = times.map((t) => newMemberId(t));
    assert.deepEqual([...ids].sort(), ids);
    for (const odd of [-5, 1.5, Number.NaN, 2 ** 60]) assert.match(newMemberId(odd), V7, String(odd));
  });
});

describe("union ids", () => {
  it("are 13 random base-32 characters: nothing to escape in LIKE, JSON or a URL", () => {
    const ids = Array.from({ length: 10_000 }, () => newUnionId());
    for (const id of ids.slice(0, 100)) assert.match(id, /^[0-9a-hjkmnp-tv-z]{13}$/);
    assert.equal(new Set(ids).size, ids.length);
    // Every character is used: the bits are uniform, not a narrower alphabet.
    assert.equal(new Set(ids.join("")).size, 32);
  });
});

for (const d of dialects) {
  describe(`members joining on ${d.name}`, { skip: d.skip }, () => {
    it("get ids that sort in join order", () => withCtx(d, async (c) => {
      const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "ids", name: "ids", purpose: "testing", leaderHandle: LEADER.handle, joinPolicy: "open" });
      const joined: string[] = [];
      for (const who of [LEADER, ...["ann", "bob", "cat", "dan", "eve", "fay", "gus"].map((n) => person(n))]) {
        await new Promise((r) => setTimeout(r, 2));
        const r = await requestToJoin(c.deps, union.id, who, followId());
        joined.push(r.member.id);
      }
      for (const id of joined) assert.match(id, V7);
      assert.match(union.id, /^[0-9a-hjkmnp-tv-z]{13}$/, "a new union's id is the short form");
      const byId = (await c.db.selectFrom("members").select("id").where("union_id", "=", union.id).orderBy("id").execute()).map((r) => r.id);
      assert.deepEqual(byId, joined, "the database's order of ids is the order of joins");
    }));
  });
}

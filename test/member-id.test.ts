import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { isMemberIdForm, newMemberId } from "../src/members/member-id.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { newUnionId } from "../src/unions/union-id.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";

const ID = /^v[0-9a-hjkmnp-tv-z]{19}$/;
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
const timeOf = (id: string) => [...id.slice(1, 11)].reduce((t, c) => t * 32 + ALPHABET.indexOf(c), 0);

describe("member ids", () => {
  it("are 20 characters: \"v\", the millisecond in 10 base-32 characters, then 45 random bits; they sort in time order, after every UUID", () => {
    const at = Date.UTC(2026, 11, 5, 3, 4, 5, 678);
    const id = newMemberId(at);
    assert.match(id, ID);
    assert.equal(id.length, 20, "16 characters shorter than a UUID: 16 bytes in the row twice and in three indexes");
    assert.equal(timeOf(id), at);
    const many = new Set(Array.from({ length: 10_000 }, () => newMemberId(at)));
    assert.equal(many.size, 10_000, "ids of one millisecond differ");
    // Every character of the random part is used: the bits are uniform.
    assert.equal(new Set([...many].map((i) => i.slice(11)).join("")).size, 32);
    // Text order is time order, which keeps the b-trees ending in the id append-only.
    const times = [0, 1, 31, 32, 255, 256, 65_535, at, at + 1, 2 ** 48 - 1];
    const ids = times.map((t) => newMemberId(t));
    assert.deepEqual([...ids].sort(), ids);
    for (const odd of [-5, 1.5, Number.NaN, 2 ** 60]) assert.match(newMemberId(odd), ID, String(odd));
    // Ids made before (UUIDv4 and UUIDv7, upper or lower case) all sort before new ones, so new ids still append.
    const before = [randomUUID(), "ffffffff-ffff-7fff-bfff-ffffffffffff", "019aef00-0000-7000-8000-000000000000", randomUUID().toUpperCase()];
    for (const old of before) assert.ok(old < newMemberId(0), old);
    for (const form of [...before, id]) assert.ok(isMemberIdForm(form), form);
    for (const not of ["", "m1", `${id}x`, id.toUpperCase(), "v0000000000000000000i", "@kim@example.org"]) assert.ok(!isMemberIdForm(not), not);
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
      for (const id of joined) assert.match(id, ID);
      assert.match(union.id, /^[0-9a-hjkmnp-tv-z]{13}$/, "a new union's id is the short form");
      const byId = (await c.db.selectFrom("members").select("id").where("union_id", "=", union.id).orderBy("id").execute()).map((r) => r.id);
      assert.deepEqual(byId, joined, "the database's order of ids is the order of joins");
    }));
  });
}

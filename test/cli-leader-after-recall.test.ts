import { dirname } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { createMuster, type Muster } from "../src/main.ts";
import { castVote, closeProposal, createProposal } from "../src/bylaws/proposals.ts";
import { getMember, type Member, OPERATOR } from "../src/members/members.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { readModerators } from "../src/members/roster.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { followId, LEADER, person } from "./helpers/domain-context.ts";
import { fails, ok } from "./helpers/cli-run.ts";

/*
 * The operator's lever on leadership (issue 14): members recall the leader
 * by vote, and then `muster union set --leader` names one while the place is
 * empty. Naming a member makes them the leader at the root of the sponsor
 * tree, as an election would (the moves recorded as the operator's); naming
 * someone not yet a member reserves the place for them; a sitting leader is
 * not replaced by fiat.
 */

for (const d of dialects) {
  describe(`muster union set --leader after a recall on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: Muster;
    let union: Union;
    let lead: Member;
    let members: Member[];
    const env: Record<string, string> = {};
    const db = () => m.database.db;
    const h = (i: number) => person(`m${i}`).handle!;
    const handlesOf = async (handle: string) => (await db().selectFrom("members").select(["id", "state", "role"]).where("union_id", "=", union.id).where("handle", "=", handle).execute());

    before(async () => {
      tdb = await d.create();
      env.DATABASE_URL = tdb.url;
      if (d.name === "sqlite") env.DATA_DIR = dirname(tdb.url.slice("sqlite:".length));
      m = await createMuster(loadConfig({ DATABASE_URL: tdb.url, ORIGIN: "https://union.example", LOG_LEVEL: "error", ...(env.DATA_DIR ? { DATA_DIR: env.DATA_DIR } : {}) }));
      ok(["union", "create", "riders", "--name", "Riders", "--purpose", "Fair pay", "--leader", LEADER.handle!, "--join-policy", "open"], env);
      union = (await getUnionBySlug(db(), "riders"))!;
      lead = (await requestToJoin(m.membership, union.id, LEADER, followId())).member;
      members = [];
      for (let i = 0; i < 3; i++) members.push((await requestToJoin(m.membership, union.id, person(`m${i}`), followId())).member);
      await new Promise((r) => setTimeout(r, 5));
      const recall = await createProposal(m.membership, union.id, OPERATOR, { kind: "recall", title: "Recall the leader", memberId: lead.id, closesAt: new Date(Date.now() + 60_000) });
      for (const v of members) await castVote(m.membership, union.id, recall.id, { memberId: v.id }, ["Yes"], { kind: "web" });
      assert.equal((await closeProposal(m.membership, union.id, recall.id, { force: true }))?.state, "passed");
      assert.equal((await getMember(db(), union.id, lead.id))!.role, "member");
    });
    after(async () => {
      await m.close();
      await tdb.destroy();
    });

    it("names an active member leader: one member row, at the root, moves recorded as the operator's, moderating", async () => {
      const out = ok(["union", "set", "riders", "--leader", h(1)], env);
      assert.match(out, new RegExp(`Leader:\\s+${h(1)}`));
      // The member themselves leads: no second row for their handle (a reserved place nobody would claim).
      assert.deepEqual((await handlesOf(h(1))).map((r) => [r.id, r.state, r.role]), [[members[1]!.id, "active", "leader"]]);
      const u = (await getUnionBySlug(db(), "riders"))!;
      assert.equal(u.leaderHandle, h(1));
      const now = (await getMember(db(), union.id, members[1]!.id))!;
      assert.equal(now.sponsorId, null, "the leader is the tree's root");
      assert.equal((await getMember(db(), union.id, lead.id))!.sponsorId, members[1]!.id, "the recalled leader's place goes under them");
      const moves = await db().selectFrom("member_moves").select(["member_id", "reason"]).where("union_id", "=", union.id).orderBy("reason", "desc").execute();
      assert.deepEqual(moves.map((x) => [x.member_id, x.reason]), [[members[1]!.id, "operator_named_leader"], [lead.id, "leader_succeeded"]]);
      const mods = await readModerators(db(), u, { via: "web", member: now });
      assert.ok(mods.ok && mods.actorIds.includes(person("m1").actorId), "the moderators collection follows");
      assert.equal((await getMember(db(), union.id, lead.id))!.role, "member", "the recalled leader is not restored by it");
    });

    it("refuses to replace a sitting leader by fiat; nothing changes", async () => {
      fails(["union", "set", "riders", "--leader", h(2)], env, 1, /already has an active leader .*election/);
      assert.equal((await getUnionBySlug(db(), "riders"))!.leaderHandle, h(1));
      assert.deepEqual((await handlesOf(h(2))).map((r) => r.role), ["member"]);
      // Naming the sitting leader again changes nothing.
      ok(["union", "set", "riders", "--leader", h(1)], env);
      assert.deepEqual((await handlesOf(h(1))).map((r) => r.role), ["leader"]);
    });
  });
}

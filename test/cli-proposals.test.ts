import { dirname } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { createMuster, type Muster } from "../src/main.ts";
import { castVote, getProposal } from "../src/bylaws/proposals.ts";
import { getMember, type Member } from "../src/members/members.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { saveTreasury } from "../src/treasury/treasury.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { followId, LEADER, person } from "./helpers/domain-context.ts";
import { cli, fails, ok, ORIGIN } from "./helpers/cli-run.ts";

// `muster proposal create|show|list|close` as an operator runs them: every
// kind, the counts show prints (voters, eligible, quorum, state, outcome),
// --json, and one-line refusals that store nothing.

const MINT = "So11111111111111111111111111111111111111112";
const PAYEE = "BPFLoaderUpgradeab1e11111111111111111111111";

for (const d of dialects) {
  describe(`muster proposal commands on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: Muster;
    let union: Union;
    let members: Member[];
    let lead: Member;
    const env: Record<string, string> = {};
    const h = (i: number) => person(`m${i}`).handle!;
    const json = <T>(args: string[]): T => JSON.parse(ok([...args, "--json"], env)) as T;
    const count = async () => (await m.database.db.selectFrom("proposals").select("id").execute()).length;

    before(async () => {
      tdb = await d.create();
      env.DATABASE_URL = tdb.url;
      if (d.name === "sqlite") env.DATA_DIR = dirname(tdb.url.slice("sqlite:".length));
      // The same DATA_DIR as the CLI runs, so both open the keys with the same secret key (DATA_DIR/secret.key).
      m = await createMuster(loadConfig({ DATABASE_URL: tdb.url, ORIGIN, LOG_LEVEL: "error", ...(env.DATA_DIR ? { DATA_DIR: env.DATA_DIR } : {}) }));
      ok(["union", "create", "riders", "--name", "Riders", "--purpose", "Fair pay", "--leader", LEADER.handle!, "--join-policy", "open"], env);
      union = (await getUnionBySlug(m.database.db, "riders"))!;
      lead = (await requestToJoin(m.membership, union.id, LEADER, followId())).member;
      members = [];
      for (let i = 0; i < 3; i++) members.push((await requestToJoin(m.membership, union.id, person(`m${i}`), followId())).member);
      await setOfficer(m.membership, union.id, members[2]!.id, OPERATOR, "Secretary");
      ok(["bylaws", "set", "riders", "quorumPercent=50", `duesMint=${MINT}`, "--reason", "test setup"], env);
      await new Promise((r) => setTimeout(r, 5));
    });
    after(async () => {
      await m.close();
      await tdb.destroy();
    });

    it("has --help for each command", () => {
      for (const sub of ["create", "list", "show", "close"]) {
        const r = cli(["proposal", sub, "--help"], env);
        assert.equal(r.code, 0, r.err);
        assert.match(r.out, new RegExp(`muster proposal ${sub} <union>`));
      }
      assert.match(ok(["proposal", "create", "--help"], env), /--units 12\.5 \(whole units of the dues mint/);
    });

    it("opens an election, a recall and a spend; show prints voters, eligible, quorum, state and outcome; close applies it", async () => {
      const election = json<{ number: number; kind: string; options: { text: string }[]; change: unknown; state: string }>(
        ["proposal", "create", "riders", "--kind", "election", "--title", "Leader", "--leader", "--candidate", h(0), "--candidate", h(1), "--closes", "1h"]);
      assert.deepEqual([election.kind, election.state, election.options.map((o) => o.text)], ["election", "open", [h(0), h(1)]]);
      assert.deepEqual(election.change, { kind: "election", role: "leader", portfolio: null, candidates: [members[0]!.id, members[1]!.id] });

      const recall = json<{ number: number; change: unknown }>(["proposal", "create", "riders", "--kind", "recall", "--title", "Recall", "--member", h(2)]);
      assert.deepEqual(recall.change, { kind: "recall", memberId: members[2]!.id });

      // A spend in whole units needs the mint's decimals: refused in one line until the treasury records them.
      const before = await count();
      fails(["proposal", "create", "riders", "--kind", "spend", "--title", "Fund", "--units", "2.5", "--recipient", "Co-op"], env, 1, /--units needs the dues mint's decimals/);
      await saveTreasury(m.database.db, { unionId: union.id, mint: MINT, tokenProgram: "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", decimals: 9, authority: MINT, tokenAccount: MINT, threshold: 1, signers: [] });
      fails(["proposal", "create", "riders", "--kind", "spend", "--title", "Fund", "--units", "2.0000000001", "--recipient", "Co-op"], env, 1, /9 decimal places/);
      fails(["proposal", "create", "riders", "--kind", "spend", "--title", "Fund", "--units=-1", "--recipient", "Co-op"], env, 1, /cannot be negative/);
      fails(["proposal", "create", "riders", "--kind", "spend", "--title", "Fund", "--amount", "18446744073709551616", "--recipient", "Co-op"], env, 1, /positive whole number of base units/);
      fails(["proposal", "create", "riders", "--kind", "spend", "--title", "Fund", "--amount", "5", "--units", "5", "--recipient", "Co-op"], env, 2, /not both/);
      fails(["proposal", "create", "riders", "--kind", "recall", "--title", "x", "--member", h(0)], env, 1, /holds no office/);
      fails(["proposal", "create", "riders", "--kind", "election", "--title", "x", "--candidate", "@nobody@remote.example"], env, 1, /no member @nobody@remote\.example/);
      // With a treasury, a spend it could not send is refused when proposed, not after the vote.
      fails(["proposal", "create", "riders", "--kind", "spend", "--title", "Fund", "--units", "2.5", "--recipient", "Co-op"], env, 1, /recipient must be a Solana address/);
      assert.equal(await count(), before, "refusals store nothing");
      const spend = json<{ number: number; change: unknown }>(["proposal", "create", "riders", "--kind", "spend", "--title", "Fund", "--units", "2.5", "--recipient", PAYEE, "--purpose", "Strike fund"]);
      assert.deepEqual(spend.change, { kind: "spend", amount: "2500000000", mint: MINT, recipient: PAYEE, purpose: "Strike fund", amountUnits: "2.5" });

      // Votes: two members for m0 on the election.
      const p = (await getProposal(m.database.db, union.id, `#${election.number}`))!;
      for (const v of [members[0]!, members[1]!, lead]) {
        await castVote(m.membership, union.id, p.id, { memberId: v.id }, [h(0)], { kind: "web" });
        // Voters are listed in order of their first vote, by the millisecond.
        await new Promise((r) => setTimeout(r, 5));
      }
      const shown = json<{ voters: string[]; eligible: number; quorumPercent: number; quorumMet: boolean; state: string; outcome: null; ballots: null; votesPublic: boolean; options: { text: string; direct: number; delegated: number; total: number }[] }>(
        ["proposal", "show", "riders", String(election.number)]);
      assert.deepEqual([shown.voters, shown.eligible, shown.quorumPercent, shown.quorumMet, shown.state, shown.outcome, shown.ballots, shown.votesPublic],
        [[h(0), h(1), LEADER.handle], 4, 50, true, "open", null, null, false]);
      assert.deepEqual(shown.options.map((o) => [o.text, o.direct, o.delegated, o.total]), [[h(0), 3, 0, 3], [h(1), 0, 0, 0]]);
      const text = ok(["proposal", "show", "riders", `#${election.number}`], env);
      for (const line of [/^State:\s+open$/m, /^Eligible:\s+4$/m, /^Quorum:\s+50% \(met\)$/m, /^Turnout:\s+3 voted, 0 through a delegate \(3 of 4\)$/m,
        new RegExp(`^Voters:\\s+${h(0)}, ${h(1)}, ${LEADER.handle}$`, "m"), /^Votes:\s+secret: who voted, not how$/m, /^Outcome:\s+\(open\)$/m,
        new RegExp(`^Change:\\s+elects the leader from ${h(0)}, ${h(1)}$`, "m")]) assert.match(text, line);
      assert.doesNotMatch(text, /\(m0@|\(@m0/, "not how they voted");
      assert.match(ok(["proposal", "show", "riders", `#${spend.number}`], env), /^Change:\s+2500000000 base units \(2\.5\) of So1+2 to BPFLoaderUpgradeab1e1+, for Strike fund$/m);

      const closed = json<{ state: string; outcome: { passed: boolean; reason: string; winner: string } }>(["proposal", "close", "riders", `#${election.number}`]);
      assert.deepEqual([closed.state, closed.outcome.passed, closed.outcome.winner], ["passed", true, members[0]!.id]);
      assert.equal((await getMember(m.database.db, union.id, members[0]!.id))!.role, "leader");
      assert.match(ok(["proposal", "show", "riders", `#${election.number}`], env), /^Outcome:\s+passed: .* elected with 3 of 3 approvals$/m);
      fails(["proposal", "close", "riders", `#${election.number}`], env, 1, /already passed/);
      fails(["proposal", "show", "riders", "#99"], env, 1, /no proposal #99 in union riders/);

      const list = json<{ number: number; state: string }[]>(["proposal", "list", "riders"]);
      assert.deepEqual(list.map((x) => [x.number, x.state]), [[spend.number, "open"], [recall.number, "open"], [election.number, "passed"]]);
      assert.match(ok(["proposal", "list", "riders"], env), /^#\s+KIND\s+STATE/m);
    });

    it("with votes public at opening, show prints each ballot", async () => {
      ok(["bylaws", "set", "riders", "voteVisibility=public", "--reason", "test setup"], env);
      const r = json<{ number: number }>(["proposal", "create", "riders", "--kind", "resolution", "--title", "Open ballot"]);
      const p = (await getProposal(m.database.db, union.id, `#${r.number}`))!;
      await castVote(m.membership, union.id, p.id, { memberId: members[1]!.id }, ["No"], { kind: "web" });
      const shown = json<{ ballots: { voter: string; choices: string[] }[]; votesPublic: boolean }>(["proposal", "show", "riders", p.id]);
      assert.deepEqual([shown.votesPublic, shown.ballots], [true, [{ voter: h(1), choices: ["No"] }]]);
      assert.match(ok(["proposal", "show", "riders", p.id], env), new RegExp(`^Voters:\\s+${h(1)} \\(No\\)$`, "m"));
    });
  });
}

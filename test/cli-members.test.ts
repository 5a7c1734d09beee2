/**
 * The member-management CLI (union set, invite, member, officer), run as the
 * real `bin/muster.js` against a fresh database. Members normally join by
 * federation, so they are set up through the domain API in this process, on
 * the same database, with the real outbox (intents land in fedify_mq queue
 * "domain", which nothing consumes here).
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { createMuster, type Muster } from "../src/main.ts";
import { findMemberByHandle, getMember, type Member } from "../src/members/members.ts";
import { claimInviteForApplicant, requestToJoin, type JoinOutcome } from "../src/members/membership.ts";
import { movesOf } from "../src/members/tree.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { cli, fails, ok, ORIGIN } from "./helpers/cli-run.ts";


const NEW_COMMANDS = [
  "union set", "bylaws show", "bylaws history", "bylaws set", "invite create", "invite list", "invite revoke",
  "member list", "member show", "member approve", "member reject", "member remove", "member sponsor", "member tree",
  "officer add", "officer remove", "officer list",
];

describe("muster CLI: help for the member commands", () => {
  let dir: string;
  const env = { DATA_DIR: "" };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "muster-cli-help-"));
    env.DATA_DIR = dir;
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("lists every new command in the top-level help, and each has --help", () => {
    const top = ok(["--help"], env);
    for (const cmd of NEW_COMMANDS) {
      assert.match(top, new RegExp(`muster ${cmd} `), `top-level help lists ${cmd}`);
      const r = cli([...cmd.split(" "), "--help"], env);
      assert.equal(r.code, 0, `${cmd} --help exits 0`);
      assert.match(r.out, new RegExp(`^Usage: muster ${cmd} <`), `${cmd} --help prints its usage`);
    }
    const group = ok(["member", "--help"], env);
    assert.match(group, /Commands under "muster member"/);
    assert.doesNotMatch(group, /muster officer/);
  });
});

const LEAD = { actorId: "https://example.org/users/lead", handle: "@lead@example.org" };
const person = (name: string) => ({ actorId: `https://remote.example/users/${name}`, handle: `@${name}@remote.example` });
const h = (name: string) => `@${name}@remote.example`;
const followId = () => `https://remote.example/follows/${randomUUID()}`;

for (const d of dialects) {
  describe(`muster member commands on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: Muster;
    let union: Union;
    const env: Record<string, string> = {};

    const member = async (handle: string): Promise<Member> => {
      const found = await findMemberByHandle(m.database.db, union.id, handle);
      assert.ok(found, `${handle} exists`);
      return found;
    };
    const intents = async (): Promise<OutboxIntent[]> => {
      const rows = await m.database.db.selectFrom("fedify_mq").select("message").where("queue", "=", "domain").orderBy("id").execute();
      return rows.map((r) => (JSON.parse(r.message) as { intent: OutboxIntent }).intent);
    };
    /** The newcomer opens an invite URL the CLI printed, names their account, then follows. */
    const joinWith = async (url: string, name: string, expected: JoinOutcome = "accepted") => {
      const code = decodeURIComponent(url.trim().split("/").at(-1)!);
      const p = person(name);
      await claimInviteForApplicant(m.membership, union.id, code, p.handle);
      const r = await requestToJoin(m.membership, union.id, p, followId());
      assert.equal(r.outcome, expected, `${name} joins`);
      return r.member;
    };

    const ownInvite = (handle: string): string => {
      const mine = JSON.parse(ok(["invite", "list", "riders", "--by", handle, "--json"], env)) as { url: string; status: string; sponsor: { handle: string } }[];
      assert.equal(mine.length, 1, `${handle} holds one invite`);
      assert.deepEqual([mine[0]!.status, mine[0]!.sponsor.handle], ["valid", handle]);
      return mine[0]!.url;
    };

    before(async () => {
      tdb = await d.create();
      env.DATABASE_URL = tdb.url;
      if (d.name === "sqlite") env.DATA_DIR = dirname(tdb.url.slice("sqlite:".length));
      // The same DATA_DIR as the CLI runs, so both open the keys with the same secret key (DATA_DIR/secret.key).
      m = await createMuster(loadConfig({ DATABASE_URL: tdb.url, ORIGIN, LOG_LEVEL: "error", ...(env.DATA_DIR ? { DATA_DIR: env.DATA_DIR } : {}) }));
      ok(["union", "create", "riders", "--name", "Riders United", "--purpose", "Fair pay", "--leader", LEAD.handle, "--join-policy", "approval"], env);
      union = (await getUnionBySlug(m.database.db, "riders"))!;
      assert.equal((await requestToJoin(m.membership, union.id, LEAD, followId())).outcome, "accepted");
      // lead -> a -> b -> c, and lead -> d; three applicants wait for approval.
      await joinWith(ok(["invite", "create", "riders"], env), "a");
      // Every member is handed an invite of their own on joining, for all the places the union's limit allows.
      await joinWith(ownInvite(h("a")), "b");
      await joinWith(ownInvite(h("b")), "c");
      await joinWith(ok(["invite", "create", "riders", "--by", LEAD.handle], env), "d");
      for (const p of ["p1", "p2", "p3"]) {
        assert.equal((await requestToJoin(m.membership, union.id, person(p), followId())).outcome, "pending");
        // Listings are in arrival order to the millisecond; within one the order is not defined.
        await new Promise((r) => setTimeout(r, 3));
      }
    });
    after(async () => {
      await m?.close();
      await tdb?.destroy();
    });

    it("lists members as JSON with actor id, handle, sponsor, depth and state", async () => {
      const list = JSON.parse(ok(["member", "list", "riders", "--json"], env)) as {
        handle: string; actorId: string; sponsor: { handle: string; actorId: string } | null; depth: number; state: string; role: string;
      }[];
      const by = new Map(list.map((x) => [x.handle, x]));
      assert.deepEqual([...by.keys()].sort(), [LEAD.handle, h("a"), h("b"), h("c"), h("d")].sort());
      assert.deepEqual(by.get(LEAD.handle), { ...by.get(LEAD.handle), actorId: LEAD.actorId, sponsor: null, depth: 0, state: "active", role: "leader" });
      assert.equal(by.get(h("a"))!.depth, 1);
      assert.deepEqual(by.get(h("a"))!.sponsor, { handle: LEAD.handle, actorId: LEAD.actorId });
      assert.equal(by.get(h("b"))!.depth, 2);
      assert.deepEqual(by.get(h("b"))!.sponsor, { handle: h("a"), actorId: person("a").actorId });
      const c = by.get(h("c"))!;
      assert.deepEqual({ actorId: c.actorId, depth: c.depth, state: c.state, sponsor: c.sponsor },
        { actorId: person("c").actorId, depth: 3, state: "active", sponsor: { handle: h("b"), actorId: person("b").actorId } });
      assert.equal(by.get(h("d"))!.depth, 1);

      const pending = JSON.parse(ok(["member", "list", "riders", "--pending", "--json"], env)) as { handle: string; state: string; depth: number | null }[];
      assert.deepEqual(pending.map((x) => x.handle), [h("p1"), h("p2"), h("p3")]);
      assert.ok(pending.every((x) => x.state === "pending" && x.depth === null));
      const all = JSON.parse(ok(["member", "list", "riders", "--all", "--json"], env)) as unknown[];
      assert.equal(all.length, 8);
      fails(["member", "list", "riders", "--pending", "--all"], env, 2, /cannot be combined/);

      const human = ok(["member", "list", "riders"], env).trimEnd().split("\n");
      assert.match(human[0]!, /^HANDLE\s+STATE\s+ROLE\s+DEPTH\s+SPONSOR\s+JOINED\s+ACTOR$/);
      const col = human[0]!.indexOf("STATE");
      const row = human.find((l) => l.startsWith(h("c")))!;
      assert.equal(row.indexOf("active"), col, "columns are aligned");
      assert.match(row, new RegExp(`active\\s+member\\s+3\\s+${h("b")}`));
    });

    it("draws the tree with box-drawing characters, nested in order", async () => {
      assert.equal(ok(["member", "tree", "riders"], env), [
        `${LEAD.handle} (leader) [subtree 4]`,
        `├── ${h("a")} (member) [subtree 2]`,
        `│   └── ${h("b")} (member) [subtree 1]`,
        `│       └── ${h("c")} (member) [subtree 0]`,
        `└── ${h("d")} (member) [subtree 0]`,
        "",
      ].join("\n"));
      const fromA = ok(["member", "tree", "riders", h("a"), "--depth", "1"], env).split("\n");
      assert.equal(fromA[0], `${h("a")} (member) [subtree 2]`);
      assert.equal(fromA[1], `└── ${h("b")} (member) [subtree 1]`);
      assert.match(fromA[2]!, /Only 1 level/);
      const json = JSON.parse(ok(["member", "tree", "riders", "--json"], env));
      assert.equal(json.length, 1);
      assert.equal(json[0].handle, LEAD.handle);
      assert.deepEqual(json[0].recruits.map((r: { handle: string }) => r.handle), [h("a"), h("d")]);
      assert.equal(json[0].recruits[0].recruits[0].recruits[0].handle, h("c"));
      const shallow = JSON.parse(ok(["member", "tree", "riders", h("a"), "--depth", "0", "--json"], env));
      assert.deepEqual({ recruits: shallow.recruits, notShown: shallow.notShown }, { recruits: null, notShown: 2 });
      fails(["member", "tree", "riders", "--depth", "deep"], env, 2, /--depth takes a whole number/);
      fails(["member", "tree", "riders", h("p1")], env, 1, /is pending in union riders/);
      fails(["member", "tree", "riders", "a", "b"], env, 2, /unexpected argument "b"/);
    });

    it("shows one member with the chain up to the leader", async () => {
      const c = JSON.parse(ok(["member", "show", "riders", h("c"), "--json"], env));
      assert.deepEqual(c.chain.map((x: { handle: string }) => x.handle), [h("c"), h("b"), h("a"), LEAD.handle]);
      assert.equal(c.depth, 3);
      assert.equal(c.recruits, 0);
      const a = JSON.parse(ok(["member", "show", "riders", h("a"), "--json"], env));
      assert.deepEqual({ recruits: a.recruits, subtreeSize: a.subtreeSize, actorId: a.actorId }, { recruits: 1, subtreeSize: 2, actorId: person("a").actorId });
      const human = ok(["member", "show", "riders", h("c")], env);
      assert.match(human, new RegExp(`Chain:\\s+${h("c")} ← ${h("b")} ← ${h("a")} ← ${LEAD.handle}`));
      fails(["member", "show", "riders", "@x@y"], env, 1, /^muster: error: no member @x@y in union riders$/m);
      fails(["member", "show", "ghosts", h("a")], env, 1, /no union with slug "ghosts"/);
      fails(["member", "show", "riders", "not-a-handle"], env, 1, /handle looks like @user@host/);
      fails(["member", "show", "riders"], env, 2, /expected <union> <member>/);
    });

    it("refuses a re-sponsoring that would make a cycle, and changes nothing", async () => {
      const before = await Promise.all(["a", "b", "c"].map((n) => member(h(n))));
      const r = fails(["member", "sponsor", "riders", h("a"), h("c")], env, 1, /cycle/);
      assert.equal(r.out, "");
      const afterwards = await Promise.all(["a", "b", "c"].map((n) => member(h(n))));
      assert.deepEqual(afterwards.map((x) => [x.sponsorId, x.subtreeSize]), before.map((x) => [x.sponsorId, x.subtreeSize]));
      assert.deepEqual(await movesOf(m.database.db, union.id, before[0]!.id), []);
      fails(["member", "sponsor", "riders", h("a"), h("a")], env, 1, /cycle/);
      fails(["member", "sponsor", "riders", LEAD.handle, h("a")], env, 1, /leader/);
    });

    it("moves a member with its subtree under another sponsor", async () => {
      // lead -> a -> b -> c -> d
      assert.match(ok(["member", "sponsor", "riders", h("d"), h("c")], env), new RegExp(`Moved ${h("d")} under ${h("c")}`));
      const [lead, a, c, d] = await Promise.all([LEAD.handle, h("a"), h("c"), h("d")].map(member));
      assert.equal(d!.sponsorId, c!.id);
      assert.equal(a!.subtreeSize, 3);
      assert.equal(lead!.subtreeSize, 4);
      const moves = await movesOf(m.database.db, union.id, d!.id);
      assert.deepEqual(moves.map((x) => [x.fromSponsorId, x.toSponsorId, x.reason]), [[lead!.id, c!.id, "moved_by_officer"]]);
    });

    it("approves and rejects pending requests, sending Accept and Reject intents", async () => {
      assert.match(ok(["member", "approve", "riders", h("p1")], env), new RegExp(`Approved ${h("p1")}.*under ${LEAD.handle}`));
      const p1 = await member(h("p1"));
      assert.equal(p1.state, "active");
      assert.equal(p1.sponsorId, (await member(LEAD.handle)).id);
      assert.match(ok(["member", "reject", "riders", h("p2"), "--reason", "not a rider"], env), /Rejected/);
      const p2 = await member(h("p2"));
      assert.deepEqual([p2.state, p2.leftReason], ["rejected", "not a rider"]);
      const all = await intents();
      assert.ok(all.some((i) => i.kind === "member.join" && i.memberId === p1.id), "an Accept (and welcome) is queued for p1");
      assert.ok(all.some((i) => i.kind === "follow.reject" && i.memberId === p2.id), "a Reject is queued for p2");
      fails(["member", "reject", "riders", h("p2")], env, 1, /only pending requests can be rejected/);
      fails(["member", "approve", "riders", h("p2")], env, 1, /only pending requests can be approved/);
      fails(["member", "approve", "riders", h("p1"), "--reason", "x"], env, 2, /^muster member approve: unknown option --reason; see muster member approve --help\n$/);
      const before = (await intents()).length;
      fails(["member", "approve", "riders", h("p1")], env, 1, new RegExp(`^muster: error: ${h("p1")} is already a member of riders; nothing to approve\n$`));
      assert.equal((await intents()).length, before, "approving an active member queues nothing");
    });


    it("removes a member only with a reason; recruits move up and a Reject is queued", async () => {
      fails(["member", "remove", "riders", h("b")], env, 2, /--reason <text> is required/);
      fails(["member", "remove", "riders", h("b"), "--reason", "   "], env, 2, /--reason <text> is required/);
      assert.equal((await member(h("b"))).state, "active");
      const out = ok(["member", "remove", "riders", h("b"), "--reason", "broke the rules"], env);
      assert.match(out, new RegExp(`Removed ${h("b")} from riders \\(reason: broke the rules\\)`));
      assert.match(out, new RegExp(`1 recruit\\(s\\) moved up to ${h("a")}`));
      const [a, b, c] = await Promise.all([h("a"), h("b"), h("c")].map(member));
      assert.deepEqual([b!.state, b!.leftReason], ["removed", "broke the rules"]);
      assert.equal(c!.sponsorId, a!.id, "c (with d) moved up to a");
      assert.equal(a!.subtreeSize, 2);
      const moves = await movesOf(m.database.db, union.id, c!.id);
      assert.deepEqual(moves.at(-1)!.reason, "sponsor_removed");
      assert.ok((await intents()).some((i) => i.kind === "follow.reject" && i.memberId === b!.id), "a Reject is queued for b");
      const row = await m.database.db.selectFrom("members").select(["removed_by", "left_at"]).where("id", "=", b!.id).executeTakeFirstOrThrow();
      assert.equal(row.removed_by, "operator");
      assert.ok(row.left_at);

      const expelled = JSON.parse(ok(["member", "remove", "riders", h("p3"), "--reason", "spam", "--expel", "--json"], env));
      assert.deepEqual([expelled.state, expelled.leftReason], ["expelled", "spam"]);
      fails(["member", "remove", "riders", LEAD.handle, "--reason", "x"], env, 1, /the leader cannot be removed/);
      fails(["member", "remove", "riders", h("b"), "--reason", "again"], env, 1, /is removed in union riders/);
    });

    it("appoints, lists and dismisses officers", async () => {
      assert.match(ok(["officer", "add", "riders", h("a"), "--portfolio", "Treasurer"], env), new RegExp(`${h("a")} is an officer of riders \\(Treasurer\\)`));
      ok(["officer", "add", "riders", LEAD.handle, "--portfolio", "General Secretary"], env);
      const list = JSON.parse(ok(["officer", "list", "riders", "--json"], env)) as { handle: string; role: string; portfolio: string }[];
      assert.deepEqual(list.map((o) => [o.handle, o.role, o.portfolio]), [[LEAD.handle, "leader", "General Secretary"], [h("a"), "officer", "Treasurer"]]);
      assert.match(ok(["officer", "list", "riders"], env), new RegExp(`${h("a")}\\s+officer\\s+Treasurer`));
      assert.match(ok(["member", "tree", "riders", "--depth", "1"], env), new RegExp(`^├── ${h("a")} \\(officer/Treasurer\\) \\[subtree 2\\]$`, "m"));
      assert.match(ok(["member", "tree", "riders", "--depth", "1"], env), /^@lead@example.org \(leader\/General Secretary\) \[subtree 4\]$/m);
      assert.equal((await member(h("a"))).role, "officer");
      fails(["officer", "add", "riders", h("b")], env, 1, /is removed in union riders/);
      fails(["officer", "add", "riders", h("c"), "--portfolio", "x".repeat(121)], env, 1, /portfolio title is 1-120 characters/);
      assert.match(ok(["officer", "remove", "riders", h("a")], env), /no longer an officer/);
      const a = await member(h("a"));
      assert.deepEqual([a.role, a.portfolio], ["member", null]);
      fails(["officer", "remove", "riders", LEAD.handle], env, 1, /leader cannot be dismissed/);
      assert.deepEqual((JSON.parse(ok(["officer", "list", "riders", "--json"], env)) as unknown[]).length, 1);
    });

    it("creates, lists and revokes invites", async () => {
      const url = ok(["invite", "create", "riders"], env).trim();
      assert.match(url, /^https:\/\/union\.example\/u\/riders\/join\/[A-Za-z0-9_-]+$/);
      const made = JSON.parse(ok(["invite", "create", "riders", "--uses", "2", "--expires", "7d", "--json"], env));
      assert.equal(made.maxUses, 2);
      assert.equal(made.status, "valid");
      assert.deepEqual(made.sponsor, { handle: LEAD.handle, actorId: LEAD.actorId });
      const ttl = Date.parse(made.expiresAt) - Date.now();
      assert.ok(ttl > 6.9 * 86_400_000 && ttl <= 7 * 86_400_000, `expires in 7 days (${ttl} ms)`);
      const byLead = JSON.parse(ok(["invite", "create", "riders", "--by", LEAD.handle, "--uses", "1", "--json"], env));
      assert.deepEqual([byLead.sponsor.handle, byLead.maxUses], [LEAD.handle, 1]);
      // A member's own invites may take the places of the welcome invite they got on joining, up to the limit: then no more.
      ok(["invite", "create", "riders", "--by", h("c"), "--uses", "5"], env);
      fails(["invite", "create", "riders", "--by", h("c"), "--uses", "1"], env, 1, /^muster: error: members may .*5 .*@c@remote\.example has 5 open/);

      const list = JSON.parse(ok(["invite", "list", "riders", "--json"], env)) as { code: string; url: string; status: string; uses: number; maxUses: number | null; sponsor: { handle: string } | null }[];
      const listed = list.find((i) => i.code === made.code)!;
      assert.deepEqual({ url: listed.url, uses: listed.uses, maxUses: listed.maxUses, sponsor: listed.sponsor?.handle },
        { url: made.url, uses: 0, maxUses: 2, sponsor: LEAD.handle });
      assert.ok(list.some((i) => i.url === url));
      const human = ok(["invite", "list", "riders"], env);
      assert.match(human, /^CODE\s+SPONSOR\s+USES\s+STATUS\s+EXPIRES\s+URL$/m);
      assert.match(human, new RegExp(`${made.code.replace(/[-]/g, "\\-")}\\s+${LEAD.handle}\\s+0/2\\s+valid`));
      const mine = JSON.parse(ok(["invite", "list", "riders", "--by", h("c"), "--json"], env)) as { sponsor: { handle: string } }[];
      assert.ok(mine.length >= 1 && mine.every((i) => i.sponsor.handle === h("c")));

      assert.match(ok(["invite", "revoke", "riders", made.url], env), /Withdrew invite/);
      assert.match(ok(["invite", "revoke", "riders", "--", made.code], env), /already withdrawn/);
      const after = (JSON.parse(ok(["invite", "list", "riders", "--json"], env)) as { code: string; status: string }[]).find((i) => i.code === made.code)!;
      assert.equal(after.status, "revoked");

      fails(["invite", "revoke", "riders", "nosuchcode"], env, 1, /no invite "nosuchcode" in union riders/);
      fails(["invite", "create", "riders", "--uses", "0"], env, 1, /uses must be a whole number from 1/);
      fails(["invite", "create", "riders", "--uses", "many"], env, 2, /--uses takes a whole number/);
      fails(["invite", "create", "riders", "--expires", "7"], env, 2, /--expires takes a duration like 7d/);
      fails(["invite", "create", "riders", "--by", "@nobody@nowhere.example"], env, 1, /no member @nobody@nowhere.example in union riders/);
      fails(["invite", "create", "riders", "--by", h("b")], env, 1, /is removed in union riders/);
      fails(["invite", "create", "ghosts"], env, 1, /no union with slug "ghosts"/);
    });

    it("changes each union setting, and refuses bad values without changing anything", async () => {
      const set = (...args: string[]) => JSON.parse(ok(["union", "set", "riders", ...args, "--json"], env));
      const all = set("--name", "Riders Together", "--purpose", "Fair pay and safe roads", "--icon", "https://union.example/icon.png",
        "--welcome", "Welcome, rider!", "--relay", "approval");
      assert.deepEqual(
        [all.name, all.purpose, all.icon, all.welcomeText],
        ["Riders Together", "Fair pay and safe roads", "https://union.example/icon.png", "Welcome, rider!"],
      );
      assert.equal((await getUnionBySlug(m.database.db, "riders"))!.relayPolicy, "approval");
      const cleared = set("--welcome", "", "--icon", "");
      assert.deepEqual([cleared.welcomeText, cleared.icon], [null, null]);
      assert.equal(set("--leader", "@lead@Example.ORG").leader, LEAD.handle, "naming the same leader again is fine");

      // Enforced rules are bylaws: the operator changes them with a reason, recorded in the history.
      fails(["union", "set", "riders", "--join-policy", "open"], env, 2, /--join-policy is a bylaw now: .* muster bylaws set riders joinPolicy=open --reason/);
      fails(["union", "set", "riders", "--invite-limit", "7"], env, 2, /muster bylaws set riders memberInviteLimit=7/);
      const v = JSON.parse(ok(["bylaws", "set", "riders", "joinPolicy=open", "memberInviteLimit=7", "membersVisibility=public", "--reason", "members asked at the assembly", "--json"], env));
      assert.deepEqual([v.params.joinPolicy, v.params.memberInviteLimit, v.params.membersVisibility, v.source], ["open", 7, "public", { kind: "operator", reason: "members asked at the assembly" }]);
      const stored = (await getUnionBySlug(m.database.db, "riders"))!;
      assert.deepEqual([stored.joinPolicy, stored.memberInviteLimit, stored.membersVisibility], ["open", 7, "public"]);
      assert.match(ok(["union", "show", "riders"], env), /Joining:\s+open/);
      assert.match(ok(["bylaws", "show", "riders"], env), /memberInviteLimit:\s+7/);
      assert.match(ok(["bylaws", "history", "riders"], env), /operator override: members asked at the assembly\s+joinPolicy, memberInviteLimit, membersVisibility/);
      assert.match(ok(["bylaws", "set", "--help"], env), /quorumPercent\s+share of eligible members/);
      fails(["bylaws", "set", "riders", "joinPolicy=invite"], env, 2, /--reason is required/);
      fails(["bylaws", "set", "riders", "joinPolicy=bogus", "--reason", "x y z"], env, 1, /joinPolicy must be one of invite, approval, open/);
      fails(["bylaws", "set", "riders", "memberInviteLimit=20000", "--reason", "x y z"], env, 1, /from 0 to 10000/);
      fails(["bylaws", "set", "riders", "joinPolicy=open", "--reason", "x y z"], env, 1, /leave the bylaws as they are/);
      assert.equal(JSON.parse(ok(["bylaws", "history", "riders", "--json"], env)).length, 2);

      const before = await getUnionBySlug(m.database.db, "riders");
      fails(["union", "set", "riders", "--relay", "sometimes", "--name", "Changed"], env, 1, /relay policy must be off, approval or auto/);
      fails(["union", "set", "riders", "--icon", "ftp://x.example/i.png"], env, 1, /icon must be an http\(s\) URL/);
      fails(["union", "set", "riders", "--name", " "], env, 1, /name must be 1-100 characters/);
      fails(["union", "set", "riders", "--leader", "@other@example.org"], env, 1, /already has an active leader/);
      fails(["union", "set", "riders", "--leader", "nobody"], env, 1, /handle looks like @user@host/);
      fails(["union", "set", "riders"], env, 2, /nothing to change/);
      fails(["union", "set", "ghosts", "--name", "X"], env, 1, /no union with slug "ghosts"/);
      fails(["union", "set", "riders", "--colour", "red"], env, 2, /^muster union set: unknown option --colour; see muster union set --help\n$/);
      assert.deepEqual(await getUnionBySlug(m.database.db, "riders"), before, "refused settings change nothing");
      assert.equal((await getMember(m.database.db, union.id, (await member(LEAD.handle)).id))!.handle, LEAD.handle);
    });
  });
}

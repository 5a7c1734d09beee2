import { createHash, randomUUID } from "node:crypto";
import { after, describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from "kysely";
import {
  type Action,
  ActionError,
  type ActionDeps,
  type ActionDraft,
  composeAction,
  currentAction,
  editAction,
  getAction,
  hashesOf,
  listActions,
  publishAction,
  retractAction,
} from "../src/actions/actions.ts";
import { canonicalJson, chainOf, entryHash, GENESIS, verifyChain } from "../src/actions/chain.ts";
import { renderMarkdown } from "../src/actions/markdown.ts";
import { decideRelay, offerRelay, pendingRelays, type RelayOffer } from "../src/actions/relay.ts";
import { closeExpired, isCommitment, participationOf, progressOf, recordBoost, recordLike, recordReply, recordWebResponse, withdrawResponse } from "../src/actions/responses.ts";
import { localSchedule, publishDue } from "../src/actions/scheduler.ts";
import type { DomainEvents } from "../src/events.ts";
import { type By, type Member, MemberError, OPERATOR } from "../src/members/members.ts";
import { type Applicant, leaveUnion, requestToJoin, setOfficer } from "../src/members/membership.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { createUnion, DEFAULT_COMMITMENT_WORDS, type JoinPolicy, type Union, updateUnion } from "../src/unions/unions.ts";
import { type ActionRaceResult, actionContenders, closeActionContenders, rendezvous, touches } from "./helpers/actions-worker.ts";
import { dialects } from "./helpers/databases.ts";
import { type Ctx, failingOn, followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";

after(() => closeActionContenders());

const asMember = (m: Member): By => ({ kind: "member", memberId: m.id });
const HOUR = 3_600_000;
const tick = () => new Promise((r) => setTimeout(r, 3));

async function makeUnion(c: Ctx, slug: string, joinPolicy: JoinPolicy = "open"): Promise<Union> {
  return createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug, name: slug, purpose: "testing", leaderHandle: LEADER.handle, joinPolicy });
}

async function join(c: Ctx, union: Union, p: Applicant): Promise<Member> {
  const r = await requestToJoin(c.deps, union.id, p, followId());
  return r.member;
}

interface Staff {
  readonly union: Union;
  readonly leader: Member;
  readonly officer: Member;
  readonly member: Member;
}

/** A union with an active leader, one officer and one ordinary member. */
async function staffed(c: Ctx, slug = "riders"): Promise<Staff> {
  const union = await makeUnion(c, slug);
  const leader = await join(c, union, LEADER);
  assert.deepEqual([leader.state, leader.role], ["active", "leader"]);
  const o = await join(c, union, person(`officer-${slug}`));
  const officer = await setOfficer(c.deps, union.id, o.id, OPERATOR, "Actions");
  const member = await join(c, union, person(`member-${slug}`));
  assert.deepEqual([officer.role, member.state, member.role], ["officer", "active", "member"]);
  return { union, leader, officer, member };
}

const ask = (title = "Sign the petition", more: Partial<ActionDraft> = {}): ActionDraft => ({ title, text: "Please **sign** it today.", kind: "sign", ...more });

async function intents(c: Ctx): Promise<OutboxIntent[]> {
  return (await recordedIntents(c.db)).filter((i) => i.kind.startsWith("action.") || i.kind === "relay");
}

async function intentsOf(c: Ctx, actionId: string): Promise<string[]> {
  return (await intents(c)).filter((i) => "actionId" in i && i.actionId === actionId)
    .map((i) => (i.kind === "action.progress" ? `${i.kind}:${i.reason}` : i.kind));
}

async function entriesOf(c: Ctx, actionId: string) {
  return c.db.selectFrom("action_log").selectAll().where("action_id", "=", actionId).orderBy("n").execute();
}

async function refuses(p: Promise<unknown>, cls: abstract new (...args: never[]) => Error & { code: string }, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof cls, `expected a ${cls.name}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

/** Everything the actions domain stores; a refused operation must leave it as it was. */
async function snapshot(c: Ctx) {
  return {
    actions: await c.db.selectFrom("actions").selectAll().orderBy("id").execute(),
    log: await c.db.selectFrom("action_log").selectAll().orderBy("union_id").orderBy("n").execute(),
    responses: await c.db.selectFrom("action_responses").select(["action_id", "member_id", "kind", "source_id", "undone_at"]).orderBy("source_id").orderBy("kind").execute(),
    relays: await c.db.selectFrom("relay_requests").select(["note_id", "state", "decided_at"]).orderBy("id").execute(),
    days: await c.db.selectFrom("unions").select(["id", "last_published_on"]).orderBy("id").execute(),
    intents: await intents(c),
  };
}

const published = (c: Ctx) => c.log.filter((e) => e.type === "action.published").map((e) => (e as DomainEvents["action.published"]).actionId);

/** A Kysely plugin that runs `fn` once, after the first query matching `match` returns. */
function afterFirst(match: (node: RootOperationNode, json: string) => boolean, fn: () => Promise<void>): KyselyPlugin {
  let armed = true;
  const marked = new WeakSet<object>();
  return {
    transformQuery({ node, queryId }: PluginTransformQueryArgs): RootOperationNode {
      if (armed && match(node, JSON.stringify(node))) {
        armed = false;
        marked.add(queryId);
      }
      return node;
    },
    async transformResult({ result, queryId }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
      if (marked.has(queryId)) await fn();
      return result;
    },
  };
}

function outcome(r: ActionRaceResult): string {
  return r.ok ? `ok:${JSON.stringify(r.value)}` : `${r.name}:${r.code}`;
}

// ---------------------------------------------------------------------------
// Pure functions: the same on every dialect.

describe("call-to-action building blocks", () => {
  it("canonical JSON sorts keys, so the same payload always hashes the same", () => {
    const a = canonicalJson({ title: "T", actionId: "x", goal: null, seq: 3, bodyMd: "b" });
    const b = canonicalJson({ seq: 3, bodyMd: "b", goal: null, actionId: "x", title: "T" });
    assert.equal(a, b);
    assert.equal(a, '{"actionId":"x","bodyMd":"b","goal":null,"seq":3,"title":"T"}');
    assert.notEqual(canonicalJson({ title: "T " }), canonicalJson({ title: "T" }));
  });

  it("entry hashes are SHA-256 over the previous hash, the event and the payload, and depend on each", () => {
    const json = canonicalJson({ actionId: "x", seq: 1, title: "T" });
    const h = entryHash(GENESIS, "publish", json);
    assert.match(h, /^[0-9a-f]{64}$/);
    assert.equal(GENESIS, "0".repeat(64));
    // The documented recomputation a member can do by hand.
    assert.equal(h, createHash("sha256").update(`${GENESIS}\npublish\n${json}`).digest("hex"));
    assert.equal(entryHash(GENESIS, "publish", json), h, "stable");
    assert.notEqual(entryHash(GENESIS, "update", json), h);
    assert.notEqual(entryHash("1".repeat(64), "publish", json), h);
    assert.notEqual(entryHash(GENESIS, "publish", canonicalJson({ actionId: "x", seq: 1, title: "T2" })), h);
  });

  it("Markdown renders to safe HTML: raw HTML escaped, script links refused, bare URLs linked", () => {
    const html = renderMarkdown([
      "Hello <script>alert(1)</script>",
      "",
      "[x](javascript:alert(1)) [y](JAVASCRIPT:alert(2)) [z](data:text/html;base64,PHNjcmlwdD4=) [v](vbscript:msgbox(1))",
      "",
      "<img src=x onerror=alert(3)> <a href=\"javascript:alert(4)\">a</a>",
      "",
      "See https://example.org/petition now, and [the site](https://example.org/site).",
      "",
      "**bold**",
    ].join("\n"));
    assert.doesNotMatch(html, /<script/i);
    assert.match(html, /&lt;script&gt;alert\(1\)&lt;\/script&gt;/);
    assert.doesNotMatch(html, /href="(javascript|data|vbscript):/i);
    assert.doesNotMatch(html, /<a [^>]*>[xyzv]<\/a>/);
    assert.doesNotMatch(html, /<img/i);
    assert.doesNotMatch(html, /<[a-z][^>]*\son\w+=/i, "no live event-handler attribute");
    assert.match(html, /&lt;img src=x onerror=alert\(3\)&gt;/);
    assert.match(html, /<a href="https:\/\/example\.org\/petition">https:\/\/example\.org\/petition<\/a>/);
    assert.match(html, /<a href="https:\/\/example\.org\/site">the site<\/a>/);
    assert.match(html, /<strong>bold<\/strong>/);
  });

  it("a reply commits when it contains one of the union's words as a whole word", () => {
    const words = DEFAULT_COMMITMENT_WORDS;
    assert.deepEqual([...words], ["in", "done", "committed"]);
    const yes = ["I'm in!", "in", "IN", "Count me In.", "done", "Done ✅", "<p>Totally <strong>committed</strong></p>", "<p>I&#39;m in</p>", "ok, in.", "(in)"];
    const no = ["inside", "I'm in-person only", "undone", "uncommitted", "doneness", "@in@host.example hello", "hi @in", "<span class=\"in\">hello</span>", "<a href=\"https://x.example/in\">link</a>", "", "maybe later"];
    for (const t of yes) assert.equal(isCommitment(t, words), true, `${JSON.stringify(t)} commits`);
    for (const t of no) assert.equal(isCommitment(t, words), false, `${JSON.stringify(t)} does not commit`);
    assert.equal(isCommitment("ich bin dabei", ["dabei"]), true);
    assert.equal(isCommitment("I'm in", ["dabei"]), false);
  });

  it("a mention in Mastodon's HTML (@<span>in</span>) is addressing, not a commitment", () => {
    // Mastodon wraps the user name of a mention in its own span; a reply
    // mentioning an account called "in" (or "done") says nothing about committing.
    const mastodon = '<p><span class="h-card" translate="no"><a href="https://host.example/@in" class="u-url mention">@<span>in</span></a></span> see you there</p>';
    assert.equal(isCommitment(mastodon, DEFAULT_COMMITMENT_WORDS), false);
    const union = '<p><span class="h-card" translate="no"><a href="https://muster.example/u/done" class="u-url mention">@<span>done</span></a></span> what time?</p>';
    assert.equal(isCommitment(union, DEFAULT_COMMITMENT_WORDS), false);
    // …while the member's own word after the mention still counts.
    assert.equal(isCommitment('<p><span class="h-card"><a href="https://muster.example/u/riders" class="u-url mention">@<span>riders</span></a></span> I&#39;m in</p>', DEFAULT_COMMITMENT_WORDS), true);
  });

  it("localSchedule: the union's local date and whether its time has come, across zones, DST and midnight", () => {
    const at = (iso: string) => Date.parse(iso);
    const cases: [string, string, string, string, boolean][] = [
      // instant, zone, publish time, expected local date, due
      ["2025-06-01T08:59:59.999Z", "UTC", "09:00", "2025-06-01", false],
      ["2025-06-01T09:00:00.000Z", "UTC", "09:00", "2025-06-01", true],
      ["2025-06-01T23:58:59.999Z", "UTC", "23:59", "2025-06-01", false],
      ["2025-06-01T23:59:00.000Z", "UTC", "23:59", "2025-06-01", true],
      ["2025-06-01T23:59:59.999Z", "UTC", "23:59", "2025-06-01", true],
      ["2025-06-02T00:00:00.000Z", "UTC", "23:59", "2025-06-02", false],
      ["2025-06-02T00:00:00.000Z", "UTC", "00:00", "2025-06-02", true],
      // Tokyo is UTC+9 all year: its day starts at 15:00Z the day before.
      ["2025-01-15T23:59:59.000Z", "Asia/Tokyo", "09:00", "2025-01-16", false],
      ["2025-01-16T00:00:00.000Z", "Asia/Tokyo", "09:00", "2025-01-16", true],
      ["2025-01-15T14:59:59.000Z", "Asia/Tokyo", "23:59", "2025-01-15", true],
      ["2025-01-15T15:00:00.000Z", "Asia/Tokyo", "23:59", "2025-01-16", false],
      // Berlin, the day before spring-forward (CET, UTC+1) and the day itself (CEST from 01:00Z).
      ["2025-03-29T07:59:59.000Z", "Europe/Berlin", "09:00", "2025-03-29", false],
      ["2025-03-29T08:00:00.000Z", "Europe/Berlin", "09:00", "2025-03-29", true],
      ["2025-03-30T06:59:59.000Z", "Europe/Berlin", "09:00", "2025-03-30", false],
      ["2025-03-30T07:00:00.000Z", "Europe/Berlin", "09:00", "2025-03-30", true],
      // 02:30 does not exist on 2025-03-30 in Berlin: 01:59:59 CET is before it, 03:00 CEST after.
      ["2025-03-30T00:59:59.000Z", "Europe/Berlin", "02:30", "2025-03-30", false],
      ["2025-03-30T01:00:00.000Z", "Europe/Berlin", "02:30", "2025-03-30", true],
      // Fall-back (2025-10-26): 02:30 happens twice, at 00:30Z (CEST) and 01:30Z (CET).
      ["2025-10-26T00:29:59.000Z", "Europe/Berlin", "02:30", "2025-10-26", false],
      ["2025-10-26T00:30:00.000Z", "Europe/Berlin", "02:30", "2025-10-26", true],
      ["2025-10-26T01:30:00.000Z", "Europe/Berlin", "02:30", "2025-10-26", true],
      ["2025-10-26T07:59:59.000Z", "Europe/Berlin", "09:00", "2025-10-26", false],
      ["2025-10-26T08:00:00.000Z", "Europe/Berlin", "09:00", "2025-10-26", true],
      ["2025-10-26T22:59:59.000Z", "Europe/Berlin", "23:59", "2025-10-26", true],
      ["2025-10-26T23:00:00.000Z", "Europe/Berlin", "23:59", "2025-10-27", false],
      // Half-hour offset (St. John's, UTC-3:30 in winter) and the two ends of the date line.
      ["2025-01-15T12:29:59.000Z", "America/St_Johns", "09:00", "2025-01-15", false],
      ["2025-01-15T12:30:00.000Z", "America/St_Johns", "09:00", "2025-01-15", true],
      ["2025-01-15T10:00:00.000Z", "Pacific/Kiritimati", "00:00", "2025-01-16", true],
      ["2025-01-15T10:00:00.000Z", "Pacific/Pago_Pago", "23:00", "2025-01-14", true],
      ["2025-01-15T10:00:00.000Z", "Pacific/Pago_Pago", "23:01", "2025-01-14", false],
    ];
    for (const [iso, zone, time, today, due] of cases) {
      assert.deepEqual(localSchedule(at(iso), zone, time), { today, due }, `${iso} in ${zone} with ${time}`);
    }
  });
});

// ---------------------------------------------------------------------------

for (const d of dialects) {
  describe(`calls-to-action on ${d.name}`, { skip: d.skip }, () => {
    // 1. Composing.

    it("composeAction refuses an invalid draft as invalid and stores nothing", () => withCtx(d, async (c) => {
      const { union, officer } = await staffed(c);
      const before = await snapshot(c);
      const bad: [string, Partial<ActionDraft>][] = [
        ["blank title", { title: "   " }],
        ["title of 201 characters", { title: "x".repeat(201) }],
        ["blank text", { text: " \n\t " }],
        ["text of 10001 characters", { text: "x".repeat(10_001) }],
        ["unknown kind", { kind: "riot" }],
        ["blank kind", { kind: " " }],
        ["javascript: link", { link: "javascript:alert(1)" }],
        ["data: link", { link: "data:text/html,<script>alert(1)</script>" }],
        ["ftp: link", { link: "ftp://example.org/file" }],
        ["relative link", { link: "/petition" }],
        ["not a URL", { link: "sign here" }],
        ["goal 0", { goal: 0 }],
        ["negative goal", { goal: -3 }],
        ["fractional goal", { goal: 1.5 }],
        ["goal over 10^8", { goal: 100_000_001 }],
        ["NaN goal", { goal: Number.NaN }],
        ["past deadline", { deadline: new Date(Date.now() - 60_000) }],
        ["invalid deadline", { deadline: new Date("not a date") }],
      ];
      for (const [why, more] of bad) {
        for (const publishNow of [false, true]) {
          await assert.rejects(composeAction(c.deps, union.id, asMember(officer), { ...ask(), ...more }, { publishNow }), (e: unknown) => {
            assert.ok(e instanceof ActionError, `${why}: expected an ActionError, got ${String(e)}`);
            assert.equal(e.code, "invalid", `${why}: ${e.message}`);
            return true;
          }, why);
        }
      }
      assert.deepEqual(await snapshot(c), before, "nothing stored, nothing chained, nothing sent");
      assert.deepEqual(published(c), []);

      // The edges of each rule are accepted, and values are normalised.
      const edge = await composeAction(c.deps, union.id, asMember(officer), {
        title: `  ${"t".repeat(200)}  `,
        text: "  Go.  ",
        kind: " Show-Up ",
        link: "https://EXAMPLE.org/p?q=1",
        goal: 100_000_000,
        deadline: new Date(Date.now() + HOUR),
      });
      assert.deepEqual([edge.title.length, edge.bodyMd, edge.kind, edge.link, edge.goal, edge.state, edge.seq], [200, "Go.", "show-up", "https://example.org/p?q=1", 100_000_000, "queued", null]);
      const minimal = await composeAction(c.deps, union.id, asMember(officer), { title: "x", text: "y" });
      assert.deepEqual([minimal.kind, minimal.link, minimal.goal, minimal.deadline], ["other", null, null, null]);
      assert.equal((await composeAction(c.deps, union.id, OPERATOR, { ...ask(), goal: 1, link: "" })).goal, 1);
      assert.equal((await c.db.selectFrom("actions").select("id").execute()).length, 3);
    }));

    it("only the leader, officers and the operator may compose", () => withCtx(d, async (c) => {
      const { union, leader, officer, member } = await staffed(c);
      const other = await staffed(c, "couriers");
      await overrideBylaws(c.deps, union.slug, { joinPolicy: "approval" });
      const pending = await join(c, union, person("waiting"));
      assert.equal(pending.state, "pending");
      const before = await snapshot(c);
      for (const by of [asMember(member), asMember(pending), asMember(other.officer), asMember(other.leader), { kind: "member", memberId: randomUUID() } as By]) {
        await refuses(composeAction(c.deps, union.id, by, ask()), MemberError, "forbidden");
        await refuses(composeAction(c.deps, union.id, by, ask(), { publishNow: true }), MemberError, "forbidden");
      }
      await refuses(composeAction(c.deps, randomUUID(), OPERATOR, ask()), ActionError, "not_found");
      assert.deepEqual(await snapshot(c), before);

      const byLeader = await composeAction(c.deps, union.id, asMember(leader), ask("From the leader"));
      const byOfficer = await composeAction(c.deps, union.id, asMember(officer), ask("From the officer"));
      const byOperator = await composeAction(c.deps, union.id, OPERATOR, ask("From the operator"));
      const rows = await c.db.selectFrom("actions").select(["id", "created_by", "state"]).where("union_id", "=", union.id).execute();
      const author = new Map(rows.map((r) => [r.id, r.created_by]));
      assert.deepEqual([author.get(byLeader.id), author.get(byOfficer.id), author.get(byOperator.id)], [leader.id, officer.id, null]);
      assert.ok(rows.every((r) => r.state === "queued"));
      assert.deepEqual(await intents(c), [], "queued drafts send nothing");

      // An officer who leaves loses the right with the office.
      await leaveUnion(c.deps, union.id, person(`officer-${union.slug}`).actorId, "left");
      await refuses(composeAction(c.deps, union.id, asMember(officer), ask()), MemberError, "forbidden");
    }));

    // 2. Markdown, as stored.

    it("the stored ask is rendered safely, and re-rendered on edit", () => withCtx(d, async (c) => {
      const { union, officer } = await staffed(c);
      const text = "Call <script>alert(1)</script> today.\n\n[x](javascript:alert(1))\n\nDetails: https://example.org/rally";
      const a = await composeAction(c.deps, union.id, asMember(officer), { ...ask(), text });
      assert.equal(a.bodyMd, text);
      assert.equal(a.bodyHtml, renderMarkdown(text));
      assert.doesNotMatch(a.bodyHtml, /<script|href="javascript:/i);
      assert.match(a.bodyHtml, /&lt;script&gt;/);
      assert.match(a.bodyHtml, /\[x\]\(javascript:alert\(1\)\)/, "the refused link stays as plain text");
      assert.match(a.bodyHtml, /<a href="https:\/\/example\.org\/rally">https:\/\/example\.org\/rally<\/a>/);
      assert.equal((await getAction(c.db, union.id, a.id))?.bodyHtml, a.bodyHtml);
      const e = await editAction(c.deps, union.id, a.id, OPERATOR, { text: "Now <b>bold</b> and **strong**" });
      assert.equal(e.bodyHtml, "<p>Now &lt;b&gt;bold&lt;/b&gt; and <strong>strong</strong></p>");
    }));

    // 3. Publishing.

    it("publishing numbers each union's calls 1, 2, 3, chains each and records its delivery intent", () => withCtx(d, async (c) => {
      const s1 = await staffed(c, "riders");
      const s2 = await staffed(c, "couriers");
      const order: Action[] = [];
      const q = await composeAction(c.deps, s1.union.id, asMember(s1.officer), ask("queued first"));
      assert.deepEqual([q.state, q.seq, q.publishedAt], ["queued", null, null]);
      assert.equal((await chainOf(c.db, s1.union.id)).length, 0);
      assert.deepEqual(await intents(c), []);
      assert.deepEqual(published(c), []);

      order.push(await composeAction(c.deps, s1.union.id, asMember(s1.leader), ask("r1"), { publishNow: true }));
      order.push(await composeAction(c.deps, s2.union.id, OPERATOR, ask("c1"), { publishNow: true }));
      order.push(await publishAction(c.deps, s1.union.id, q.id, asMember(s1.officer)));
      order.push(await composeAction(c.deps, s2.union.id, asMember(s2.officer), ask("c2"), { publishNow: true }));
      order.push(await composeAction(c.deps, s1.union.id, OPERATOR, ask("r3"), { publishNow: true }));
      order.push(await composeAction(c.deps, s2.union.id, OPERATOR, ask("c3"), { publishNow: true }));
      assert.deepEqual(order.map((a) => [a.unionId === s1.union.id ? "r" : "c", a.seq, a.state]), [
        ["r", 1, "published"], ["c", 1, "published"], ["r", 2, "published"], ["c", 2, "published"], ["r", 3, "published"], ["c", 3, "published"],
      ]);
      assert.ok(order.every((a) => a.publishedAt instanceof Date));
      assert.equal(order[2]!.id, q.id);

      for (const s of [s1, s2]) {
        const mine = order.filter((a) => a.unionId === s.union.id);
        const chain = await chainOf(c.db, s.union.id);
        assert.deepEqual(chain.map((e) => [e.n, e.event, e.actionId]), mine.map((a, i) => [i + 1, "publish", a.id]));
        chain.forEach((e, i) => assert.equal(e.prevHash, i === 0 ? GENESIS : chain[i - 1]!.hash));
        const payloads = chain.map((e) => JSON.parse(e.payload) as { seq: number; title: string; bodyMd: string; kind: string });
        assert.deepEqual(payloads.map((p) => [p.seq, p.title, p.bodyMd, p.kind]), mine.map((a) => [a.seq, a.title, a.bodyMd, a.kind]));
        assert.equal((await verifyChain(c.db, s.union.id)).ok, true);
        assert.equal((await currentAction(c.db, s.union.id))?.id, mine[2]!.id);
      }
      assert.deepEqual(await intents(c), order.map((a) => ({ kind: "action.publish", unionId: a.unionId, actionId: a.id })));
      assert.deepEqual(published(c), order.map((a) => a.id));
      assert.deepEqual((await listActions(c.db, s1.union.id, { states: ["published"] })).map((a) => a.seq).sort(), [1, 2, 3]);
    }));

    it("a refused or failed publication leaves no number, no chain entry and no intent", () => withCtx(d, async (c) => {
      const { union, officer, member } = await staffed(c);
      const other = await staffed(c, "couriers");
      const live = await composeAction(c.deps, union.id, OPERATOR, ask("live"), { publishNow: true });
      const q = await composeAction(c.deps, union.id, OPERATOR, ask("queued"));
      const elsewhere = await composeAction(c.deps, other.union.id, OPERATOR, ask("elsewhere"));
      const before = await snapshot(c);
      const events = c.log.length;
      await refuses(publishAction(c.deps, union.id, live.id, OPERATOR), ActionError, "conflict", /already published/);
      await refuses(publishAction(c.deps, union.id, randomUUID(), OPERATOR), ActionError, "not_found");
      await refuses(publishAction(c.deps, union.id, elsewhere.id, OPERATOR), ActionError, "not_found", undefined);
      await refuses(publishAction(c.deps, union.id, q.id, asMember(member)), MemberError, "forbidden");
      await refuses(publishAction(c.deps, union.id, q.id, asMember(other.officer)), MemberError, "forbidden");

      // The delivery store fails after the number and the chain entry were written: all of it rolls back.
      const failing = failingOn(c, "action.publish");
      await assert.rejects(publishAction(failing, union.id, q.id, asMember(officer)), /delivery store unavailable/);
      await assert.rejects(composeAction(failing, union.id, OPERATOR, ask("never"), { publishNow: true }), /delivery store unavailable/);
      assert.deepEqual(await snapshot(c), before, "not a row, entry or intent left behind");
      assert.equal(c.log.length, events, "no event for a publication that did not happen");

      const retried = await publishAction(c.deps, union.id, q.id, asMember(officer));
      assert.equal(retried.seq, 2, "the failed attempt used no number");
      assert.deepEqual(await intentsOf(c, q.id), ["action.publish"]);
      assert.equal((await entriesOf(c, q.id)).length, 1);
      assert.equal((await verifyChain(c.db, union.id)).ok, true);
    }));

    it("two connections publishing the same queued call at once: one wins, the other gets a conflict", () => withCtx(d, async (c) => {
      const { union, officer } = await staffed(c);
      const racers = await actionContenders(2);
      for (let round = 1; round <= 3; round++) {
        const q = await composeAction(c.deps, union.id, OPERATOR, ask(`race ${round}`));
        const op = { op: "publish", unionId: union.id, actionId: q.id, by: asMember(officer) } as const;
        const results = await Promise.all(racers.map((r) => r.run(c.tdb.url, op)));
        assert.deepEqual(results.map(outcome).sort(), ["ActionError:conflict", 'ok:"published"'], JSON.stringify(results));
        assert.equal((await getAction(c.db, union.id, q.id))?.seq, round);
        assert.equal((await entriesOf(c, q.id)).length, 1, "one chain entry");
        assert.deepEqual(await intentsOf(c, q.id), ["action.publish"], "one delivery");
      }
      const report = await verifyChain(c.db, union.id);
      assert.deepEqual([report.ok, report.entries], [true, 3]);
    }));

    it("two different calls of one union published at the same moment both get numbers, and the chain does not fork", (t: TestContext) => withCtx(d, async (c) => {
      // An officer's "publish now" while the scheduler publishes the day's call.
      const { union } = await staffed(c);
      const q1 = await composeAction(c.deps, union.id, OPERATOR, ask("one"));
      const q2 = await composeAction(c.deps, union.id, OPERATOR, ask("two"));
      // Both publishers read the union's highest number before either writes.
      const meet = rendezvous((n, json) => n.kind === "SelectQueryNode" && touches(json, "actions") && json.includes('"func":"max"'));
      const deps: ActionDeps = { ...c.deps, db: c.db.withPlugin(meet.plugin) };
      const results = await Promise.allSettled([publishAction(deps, union.id, q1.id, OPERATOR), publishAction(deps, union.id, q2.id, OPERATOR)]);
      t.diagnostic(`publishers met before writing: ${meet.met()}`);
      assert.deepEqual(results.map((r) => (r.status === "fulfilled" ? r.value.state : String(r.reason))), ["published", "published"]);
      const seqs = await Promise.all([q1, q2].map(async (q) => (await getAction(c.db, union.id, q.id))?.seq));
      assert.deepEqual(seqs.sort(), [1, 2]);
      const report = await verifyChain(c.db, union.id);
      assert.deepEqual([report.ok, report.entries, report.breaks], [true, 2, []]);
      assert.equal((await intents(c)).length, 2);
    }));

    // 4. The hash chain.

    it("the chain verifies after publish, edit and retract, and each publication links to the entry before it", () => withCtx(d, async (c) => {
      const { union, officer } = await staffed(c);
      const by = asMember(officer);
      const a1 = await composeAction(c.deps, union.id, by, ask("one", { goal: 3, deadline: new Date(Date.now() + 5 * HOUR) }), { publishNow: true });
      const a2 = await composeAction(c.deps, union.id, by, ask("two"), { publishNow: true });
      await editAction(c.deps, union.id, a1.id, by, { title: "one, corrected", goal: 4 });
      const a3 = await composeAction(c.deps, union.id, by, ask("three", { link: "https://example.org/3" }), { publishNow: true });
      await retractAction(c.deps, union.id, a2.id, by);
      const q = await composeAction(c.deps, union.id, by, ask("draft"));

      const chain = await chainOf(c.db, union.id);
      assert.deepEqual(chain.map((e) => [e.n, e.event, e.actionId]), [
        [1, "publish", a1.id], [2, "publish", a2.id], [3, "update", a1.id], [4, "publish", a3.id], [5, "retract", a2.id],
      ]);
      const report = await verifyChain(c.db, union.id);
      assert.deepEqual(report, { entries: 5, head: chain[4]!.hash, ok: true, breaks: [] });

      const update = JSON.parse(chain[2]!.payload) as Record<string, unknown>;
      assert.deepEqual([update.title, update.goal, update.seq, update.deadline], ["one, corrected", 4, 1, a1.deadline!.toISOString()]);
      for (const a of [a1, a2, a3]) {
        const h = await hashesOf(c.db, a.id);
        const mine = chain.filter((e) => e.actionId === a.id);
        const first = chain.indexOf(mine[0]!);
        assert.deepEqual(h, { prevHash: first === 0 ? GENESIS : chain[first - 1]!.hash, hash: mine.at(-1)!.hash }, `hashes of ${a.title}`);
      }
      assert.equal((await hashesOf(c.db, a1.id))?.prevHash, GENESIS);
      assert.equal((await hashesOf(c.db, a3.id))?.prevHash, chain[2]!.hash);
      assert.equal(await hashesOf(c.db, q.id), undefined, "a draft is not in the chain");
    }));

    it("verifyChain names a call whose stored content was changed behind the chain, and which fields", () => withCtx(d, async (c) => {
      const { union } = await staffed(c);
      const a1 = await composeAction(c.deps, union.id, OPERATOR, ask("one", { goal: 5 }), { publishNow: true });
      const a2 = await composeAction(c.deps, union.id, OPERATOR, ask("two"), { publishNow: true });
      await c.db.updateTable("actions").set({ title: "one, quietly rewritten", body_md: "Something else entirely." }).where("id", "=", a1.id).execute();
      let report = await verifyChain(c.db, union.id);
      assert.equal(report.ok, false);
      assert.equal(report.breaks.length, 1, JSON.stringify(report.breaks));
      const br = report.breaks[0]!;
      assert.equal(br.actionId, a1.id);
      assert.equal(br.n, 1);
      assert.match(br.problem, /title/);
      assert.match(br.problem, /text/);
      assert.doesNotMatch(br.problem, /kind|link|goal|deadline/);

      await c.db.updateTable("actions").set({ title: "one", body_md: a1.bodyMd }).where("id", "=", a1.id).execute();
      assert.equal((await verifyChain(c.db, union.id)).ok, true, "putting it back restores the chain");
      await c.db.updateTable("actions").set({ goal: 1 }).where("id", "=", a1.id).execute();
      await c.db.updateTable("actions").set({ kind: "boycott", link: "https://evil.example/" }).where("id", "=", a2.id).execute();
      report = await verifyChain(c.db, union.id);
      assert.deepEqual(report.breaks.map((b) => [b.actionId, /goal/.test(b.problem), /kind/.test(b.problem) && /link/.test(b.problem)]).sort(), [[a1.id, true, false], [a2.id, false, true]].sort());
    }));

    it("verifyChain detects a rewritten entry, even one whose own hash was recomputed", () => withCtx(d, async (c) => {
      const { union } = await staffed(c);
      const a1 = await composeAction(c.deps, union.id, OPERATOR, ask("one"), { publishNow: true });
      await composeAction(c.deps, union.id, OPERATOR, ask("two"), { publishNow: true });
      await composeAction(c.deps, union.id, OPERATOR, ask("three"), { publishNow: true });
      const original = (await chainOf(c.db, union.id))[0]!;
      const forged = canonicalJson({ ...(JSON.parse(original.payload) as object), title: "one (as we always said)" });
      await c.db.updateTable("action_log").set({ payload: forged }).where("union_id", "=", union.id).where("n", "=", 1).execute();
      let report = await verifyChain(c.db, union.id);
      assert.equal(report.ok, false);
      assert.ok(report.breaks.some((b) => b.n === 1 && b.actionId === a1.id && /no longer matches its hash/.test(b.problem)), JSON.stringify(report.breaks));

      // A forger who also recomputes the entry's hash breaks the next entry's link instead.
      await c.db.updateTable("action_log").set({ hash: entryHash(original.prevHash, original.event, forged) }).where("union_id", "=", union.id).where("n", "=", 1).execute();
      report = await verifyChain(c.db, union.id);
      assert.equal(report.ok, false);
      assert.ok(!report.breaks.some((b) => /no longer matches its hash/.test(b.problem)));
      assert.ok(report.breaks.some((b) => b.n === 2 && /links to/.test(b.problem)), JSON.stringify(report.breaks));
    }));

    it("verifyChain says where a deleted middle entry was, once", () => withCtx(d, async (c) => {
      const { union } = await staffed(c);
      const as: Action[] = [];
      for (const t of ["one", "two", "three", "four"]) as.push(await composeAction(c.deps, union.id, OPERATOR, ask(t), { publishNow: true }));
      await c.db.deleteFrom("action_log").where("union_id", "=", union.id).where("n", "=", 2).execute();
      const report = await verifyChain(c.db, union.id);
      assert.equal(report.ok, false);
      assert.equal(report.entries, 3);
      assert.ok(report.breaks.some((b) => b.n === 3 && /links to/.test(b.problem)), "the entry after the gap no longer links");
      assert.ok(report.breaks.some((b) => b.actionId === as[1]!.id && /absent from the chain/.test(b.problem)), "the call it recorded is named");
      const missing = report.breaks.filter((b) => /missing/.test(b.problem));
      assert.deepEqual(missing.map((b) => b.problem), ["entry 2 is missing"], `only entry 2 is missing, entries 3 and 4 are there: ${JSON.stringify(report.breaks)}`);
    }));

    it("verifyChain reports a published call that is absent from the chain", () => withCtx(d, async (c) => {
      const { union } = await staffed(c);
      await composeAction(c.deps, union.id, OPERATOR, ask("one"), { publishNow: true });
      const ghost = randomUUID();
      const now = Date.now();
      await c.db.insertInto("actions").values({
        id: ghost, union_id: union.id, seq: 2, title: "slipped in", body_md: "x", body_html: "<p>x</p>", kind: "other", link: null, goal: null, deadline: null,
        state: "published", created_by: null, created_at: now, published_at: now, updated_at: null, retracted_at: null, goal_reached_at: null, closed_at: null,
      }).execute();
      const report = await verifyChain(c.db, union.id);
      assert.equal(report.ok, false);
      assert.deepEqual(report.breaks.map((b) => [b.actionId, /absent from the chain/.test(b.problem)]), [[ghost, true]]);
    }));

    it("verifyChain reports a published call deleted, or put back in the queue, behind the chain's back", () => withCtx(d, async (c) => {
      // "A leader cannot quietly rewrite yesterday's ask": making it vanish is the quietest rewrite.
      const { union } = await staffed(c);
      const a1 = await composeAction(c.deps, union.id, OPERATOR, ask("one"), { publishNow: true });
      const a2 = await composeAction(c.deps, union.id, OPERATOR, ask("two"), { publishNow: true });
      await c.db.deleteFrom("actions").where("id", "=", a1.id).execute();
      await c.db.updateTable("actions").set({ state: "queued", seq: null, published_at: null }).where("id", "=", a2.id).execute();
      const report = await verifyChain(c.db, union.id);
      assert.equal(report.ok, false, "the chain records two publications the database no longer shows");
      assert.ok(report.breaks.some((b) => b.actionId === a1.id), `names the deleted call: ${JSON.stringify(report.breaks)}`);
      assert.ok(report.breaks.some((b) => b.actionId === a2.id), `names the unpublished call: ${JSON.stringify(report.breaks)}`);
    }));

    // 5. Editing and retracting.

    it("editing: a draft changes quietly; a published call chains an update and sends it; a retracted one is final", () => withCtx(d, async (c) => {
      const { union, officer, member } = await staffed(c);
      const by = asMember(officer);
      const deadline = new Date(Date.now() + 3 * HOUR);
      const q = await composeAction(c.deps, union.id, by, ask("draft"));
      const q2 = await editAction(c.deps, union.id, q.id, by, { title: "draft v2", text: "New *ask*", kind: "Boycott", goal: 7, link: "https://example.org/b", deadline });
      assert.deepEqual([q2.title, q2.bodyMd, q2.bodyHtml, q2.kind, q2.goal, q2.link, q2.deadline?.getTime(), q2.state, q2.seq, q2.updatedAt],
        ["draft v2", "New *ask*", "<p>New <em>ask</em></p>", "boycott", 7, "https://example.org/b", deadline.getTime(), "queued", null, null]);
      const cleared = await editAction(c.deps, union.id, q.id, by, { link: null, goal: null, deadline: null });
      assert.deepEqual([cleared.link, cleared.goal, cleared.deadline, cleared.title], [null, null, null, "draft v2"]);
      assert.equal((await chainOf(c.db, union.id)).length, 0);
      assert.deepEqual(await intents(c), []);

      const p = await composeAction(c.deps, union.id, by, ask("live", { deadline }), { publishNow: true });
      const before = await snapshot(c);
      await refuses(editAction(c.deps, union.id, p.id, by, { title: "" }), ActionError, "invalid");
      await refuses(editAction(c.deps, union.id, p.id, by, { deadline: new Date(Date.now() - 1000) }), ActionError, "invalid");
      await refuses(editAction(c.deps, union.id, p.id, by, { kind: "riot" }), ActionError, "invalid");
      await refuses(editAction(c.deps, union.id, p.id, asMember(member), { title: "mine now" }), MemberError, "forbidden");
      await refuses(editAction(c.deps, union.id, randomUUID(), by, { title: "who" }), ActionError, "not_found");
      assert.deepEqual(await snapshot(c), before);

      const e = await editAction(c.deps, union.id, p.id, by, { title: "live, corrected" });
      assert.deepEqual([e.title, e.seq, e.state, e.deadline?.getTime(), e.bodyMd], ["live, corrected", 1, "published", deadline.getTime(), p.bodyMd]);
      assert.ok(e.updatedAt instanceof Date);
      assert.deepEqual((await entriesOf(c, p.id)).map((x) => x.event), ["publish", "update"]);
      assert.equal((JSON.parse((await entriesOf(c, p.id))[1]!.payload) as { title: string }).title, "live, corrected");
      assert.deepEqual(await intentsOf(c, p.id), ["action.publish", "action.update"]);
      assert.equal((await verifyChain(c.db, union.id)).ok, true);

      // Retracting: a draft is simply dropped; a published call is chained and deleted remotely, once.
      assert.equal(await retractAction(c.deps, union.id, q.id, by), undefined);
      assert.equal(await getAction(c.db, union.id, q.id), undefined);
      await refuses(retractAction(c.deps, union.id, p.id, asMember(member)), MemberError, "forbidden");
      await refuses(retractAction(c.deps, union.id, randomUUID(), by), ActionError, "not_found");
      const r = await retractAction(c.deps, union.id, p.id, by);
      assert.deepEqual([r?.state, r?.seq, r?.retractedAt instanceof Date], ["retracted", 1, true]);
      assert.deepEqual((await entriesOf(c, p.id)).map((x) => x.event), ["publish", "update", "retract"]);
      assert.deepEqual(await intentsOf(c, p.id), ["action.publish", "action.update", "action.retract"]);
      const afterRetract = await snapshot(c);
      const again = await retractAction(c.deps, union.id, p.id, by);
      assert.equal(again?.state, "retracted");
      await refuses(editAction(c.deps, union.id, p.id, by, { title: "back from the dead" }), ActionError, "conflict");
      await refuses(publishAction(c.deps, union.id, p.id, by), ActionError, "conflict");
      assert.deepEqual(await snapshot(c), afterRetract, "retracting twice, editing or republishing a retracted call changes nothing");
      assert.equal((await verifyChain(c.db, union.id)).ok, true);
      assert.equal(await currentAction(c.db, union.id), undefined, "nothing left to pin");
    }));

    it("retracting the newest call pins the one before it", () => withCtx(d, async (c) => {
      const { union } = await staffed(c);
      const a1 = await composeAction(c.deps, union.id, OPERATOR, ask("one"), { publishNow: true });
      const a2 = await composeAction(c.deps, union.id, OPERATOR, ask("two"), { publishNow: true });
      assert.equal((await currentAction(c.db, union.id))?.id, a2.id);
      await retractAction(c.deps, union.id, a2.id, OPERATOR);
      assert.equal((await currentAction(c.db, union.id))?.id, a1.id);
    }));

    // 6. Responses.

    it("responses: members' likes, replies, boosts and web clicks are counted exactly, once each", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders");
      await join(c, union, LEADER);
      const [pa, pb, pc, pd, pe] = ["a", "b", "c", "d", "e"].map((n) => person(n));
      const a = await join(c, union, pa!);
      const b = await join(c, union, pb!);
      await join(c, union, pc!);
      const dd = await join(c, union, pd!);
      await join(c, union, pe!);
      await leaveUnion(c.deps, union.id, pe!.actorId, "left");
      await overrideBylaws(c.deps, union.slug, { joinPolicy: "approval" });
      const pending = person("p");
      assert.equal((await join(c, union, pending)).state, "pending");
      const outsider = person("x", "elsewhere.example");
      const act = await composeAction(c.deps, union.id, OPERATOR, ask("respond"), { publishNow: true });

      assert.equal(await recordLike(c.deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/1"), true);
      assert.equal(await recordLike(c.deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/1"), false, "the same Like twice counts once");
      for (const p of [outsider, pending, pe!]) {
        assert.equal(await recordLike(c.deps, union.id, act.id, p.actorId, `https://remote.example/likes/${p.handle}`), false, `${p.handle} is not counted`);
        assert.deepEqual(await recordReply(c.deps, union.id, act.id, p.actorId, `https://remote.example/notes/${p.handle}`, "I'm in"), { comment: false, commit: false });
        assert.equal(await recordBoost(c.deps, union.id, act.id, p.actorId, `https://remote.example/boosts/${p.handle}`), false);
      }
      assert.deepEqual(await recordReply(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/notes/b1", "<p>I&#39;m in!</p>"), { comment: true, commit: true });
      assert.deepEqual(await recordReply(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/notes/b1", "<p>I&#39;m in!</p>"), { comment: false, commit: false });
      assert.deepEqual(await recordReply(c.deps, union.id, act.id, pc!.actorId, "https://remote.example/notes/c1", "<p>I will be inside the building</p>"), { comment: true, commit: false });
      assert.equal(await recordBoost(c.deps, union.id, act.id, pc!.actorId, "https://remote.example/boosts/c1"), true);
      assert.equal(await recordBoost(c.deps, union.id, act.id, pc!.actorId, "https://remote.example/boosts/c1"), false);
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, dd.id, "commit"), true);
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, dd.id, "commit"), false, "the button twice counts once");
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, dd.id, "done"), true);

      const p1 = await progressOf(c.db, (await getAction(c.db, union.id, act.id))!);
      // Active: the leader, a, b, c, d (e left, p is pending).
      assert.deepEqual(p1, { commitments: 3, done: 1, comments: 2, boosts: 1, goal: null, activeMembers: 5, participation: 3 / 5 });
      assert.equal(c.log.filter((e) => e.type === "action.response").length, 7);

      // Undo: only the member who liked can withdraw the like.
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/1", pb!.actorId), 0);
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/1", outsider.actorId), 0);
      assert.equal((await progressOf(c.db, act)).commitments, 3);
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/1", pa!.actorId), 1);
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/1", pa!.actorId), 0, "twice withdraws once");
      assert.deepEqual(await progressOf(c.db, act), { commitments: 2, done: 1, comments: 2, boosts: 1, goal: null, activeMembers: 5, participation: 2 / 5 });
      // Deleting the reply withdraws both what it said and that it committed.
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/notes/b1", pb!.actorId), 2);
      assert.deepEqual(await progressOf(c.db, act), { commitments: 1, done: 1, comments: 1, boosts: 1, goal: null, activeMembers: 5, participation: 1 / 5 });
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/boosts/c1", pc!.actorId), 1);
      assert.equal((await progressOf(c.db, act)).boosts, 0);

      // Queued and retracted calls take no responses.
      const q = await composeAction(c.deps, union.id, OPERATOR, ask("later"));
      assert.equal(await recordLike(c.deps, union.id, q.id, pa!.actorId, "https://remote.example/likes/q"), false);
      assert.equal(await recordWebResponse(c.deps, union.id, q.id, a.id, "commit"), false);
      // A response to one union's call through another union's id is refused.
      const other = await makeUnion(c, "couriers");
      assert.equal(await recordLike(c.deps, other.id, act.id, pa!.actorId, "https://remote.example/likes/cross"), false);
      await retractAction(c.deps, union.id, act.id, OPERATOR);
      assert.equal(await recordLike(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/likes/late"), false);
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, b.id, "done"), false);
    }));

    it("replies commit on the union's commitment words, whole words only, and the words can be changed", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders");
      await join(c, union, LEADER);
      const people = Array.from({ length: 8 }, (_, i) => person(`r${i}`));
      for (const p of people) await join(c, union, p);
      const act = await composeAction(c.deps, union.id, OPERATOR, ask("reply"), { publishNow: true });
      const reply = (i: number, html: string) => recordReply(c.deps, union.id, act.id, people[i]!.actorId, `https://remote.example/notes/${randomUUID()}`, html);
      assert.deepEqual(await reply(0, "<p>I&#39;m IN!</p>"), { comment: true, commit: true });
      assert.deepEqual(await reply(1, "<p>inside</p>"), { comment: true, commit: false });
      assert.deepEqual(await reply(2, "<p>@in@host.example see you</p>"), { comment: true, commit: false });
      assert.deepEqual(await reply(3, '<p class="in"><a href="https://x.example/done">committed-ish</a></p>'), { comment: true, commit: false });
      assert.deepEqual(await reply(4, "<p>Done.</p>"), { comment: true, commit: true });

      const updated = await overrideBylaws(c.deps, union.slug, { commitmentWords: [" Dabei ", "JA", "dabei"] });
      assert.deepEqual(updated.commitmentWords, ["dabei", "ja"]);
      await assert.rejects(overrideBylaws(c.deps, union.slug, { commitmentWords: ["two words"] }));
      await assert.rejects(overrideBylaws(c.deps, union.slug, { commitmentWords: [" "] }));
      assert.deepEqual(await reply(5, "<p>Ich bin DABEI</p>"), { comment: true, commit: true });
      assert.deepEqual(await reply(6, "<p>I&#39;m in</p>"), { comment: true, commit: false }, "the old words no longer commit");
      assert.deepEqual(await reply(7, "<p>Ja!</p>"), { comment: true, commit: true });
      const p = await progressOf(c.db, act);
      assert.deepEqual([p.commitments, p.comments, p.activeMembers], [4, 8, 9]);
    }));

    it("the web buttons count only active members of the call's union", () => withCtx(d, async (c) => {
      const { union, member } = await staffed(c);
      const other = await staffed(c, "couriers");
      const leaver = await join(c, union, person("leaver"));
      await leaveUnion(c.deps, union.id, person("leaver").actorId, "left");
      const act = await composeAction(c.deps, union.id, OPERATOR, ask("click"), { publishNow: true });
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, member.id, "commit"), true);
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, leaver.id, "commit"), false, "a member who left");
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, other.member.id, "commit"), false, "a member of another union");
      assert.equal(await recordWebResponse(c.deps, union.id, act.id, randomUUID(), "done"), false, "no member at all");
      assert.equal((await progressOf(c.db, act)).commitments, 1);
    }));

    // 7. Goal and deadline.

    it("reaching the goal marks it and posts one progress reply; more commitments post nothing more", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders");
      await join(c, union, LEADER);
      const [pa, pb, pc] = ["a", "b", "c"].map((n) => person(n));
      const a = await join(c, union, pa!);
      await join(c, union, pb!);
      await join(c, union, pc!);
      const act = await composeAction(c.deps, union.id, OPERATOR, ask("goal", { goal: 2 }), { publishNow: true });
      await recordLike(c.deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/a");
      await recordWebResponse(c.deps, union.id, act.id, a.id, "done");
      assert.equal((await getAction(c.db, union.id, act.id))?.goalReachedAt, null, "one member, however many ways, is one");
      assert.deepEqual(await intentsOf(c, act.id), ["action.publish"]);
      await recordBoost(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/boosts/b");
      await recordReply(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/notes/b0", "<p>what time?</p>");
      assert.equal((await getAction(c.db, union.id, act.id))?.goalReachedAt, null, "boosts and comments are not commitments");

      await recordReply(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/notes/b", "<p>done</p>");
      const reached = (await getAction(c.db, union.id, act.id))!.goalReachedAt;
      assert.ok(reached instanceof Date);
      assert.deepEqual(await intents(c), [
        { kind: "action.publish", unionId: union.id, actionId: act.id },
        { kind: "action.progress", unionId: union.id, actionId: act.id, reason: "goal" },
      ]);
      await recordLike(c.deps, union.id, act.id, pc!.actorId, "https://remote.example/likes/c");
      await withdrawResponse(c.deps, "https://remote.example/likes/a", pa!.actorId);
      await recordLike(c.deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/a2");
      assert.deepEqual(await intentsOf(c, act.id), ["action.publish", "action.progress:goal"]);
      assert.equal((await getAction(c.db, union.id, act.id))?.goalReachedAt?.getTime(), reached.getTime());
    }));

    it("a withdrawn commitment does not count towards the goal", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders");
      await join(c, union, LEADER);
      const [pa, pb, pc] = ["a", "b", "c"].map((n) => person(n));
      for (const p of [pa!, pb!, pc!]) await join(c, union, p);
      const act = await composeAction(c.deps, union.id, OPERATOR, ask("goal", { goal: 2 }), { publishNow: true });
      await recordLike(c.deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/a");
      await withdrawResponse(c.deps, "https://remote.example/likes/a", pa!.actorId);
      await recordLike(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/likes/b");
      assert.equal((await getAction(c.db, union.id, act.id))?.goalReachedAt, null);
      assert.deepEqual(await intentsOf(c, act.id), ["action.publish"]);
      await recordLike(c.deps, union.id, act.id, pc!.actorId, "https://remote.example/likes/c");
      assert.deepEqual(await intentsOf(c, act.id), ["action.publish", "action.progress:goal"]);
    }));

    it("the committers counter follows every commitment and withdrawal, and a repeated Undo changes nothing", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders");
      await join(c, union, LEADER);
      const [pa, pb, pc] = ["a", "b", "c"].map((n) => person(n));
      const a = await join(c, union, pa!);
      for (const p of [pb!, pc!]) await join(c, union, p);
      const act = await composeAction(c.deps, union.id, OPERATOR, ask("goal", { goal: 3 }), { publishNow: true });
      const committers = async () => Number((await c.db.selectFrom("actions").select("committers").where("id", "=", act.id).executeTakeFirstOrThrow()).committers);
      await recordLike(c.deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/a");
      await recordWebResponse(c.deps, union.id, act.id, a.id, "done");
      await recordLike(c.deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/a");
      await recordLike(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/likes/b");
      assert.equal(await committers(), 2, "a's like (twice) and done are one committer");
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/a", pa!.actorId), 1);
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/a", pa!.actorId), 0);
      assert.equal(await committers(), 2, "a still stands by the done");
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/b", pb!.actorId), 1);
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/b", pb!.actorId), 0);
      assert.equal(await committers(), 1, "b withdrew once, however often the Undo came");
      assert.equal(await withdrawResponse(c.deps, "https://remote.example/likes/a", pb!.actorId), 0, "only the member who made it can withdraw it");
      await recordLike(c.deps, union.id, act.id, pb!.actorId, "https://remote.example/likes/b2");
      await recordReply(c.deps, union.id, act.id, pc!.actorId, "https://remote.example/notes/c", "<p>I'm in</p>");
      assert.equal(await committers(), 3);
      assert.equal(await committers(), (await progressOf(c.db, act)).commitments, "the counter agrees with a full count");
      assert.deepEqual(await intentsOf(c, act.id), ["action.publish", "action.progress:goal"]);
    }));

    it("two members reaching the goal at the same moment: the goal is still noticed, once", (t: TestContext) => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders");
      await join(c, union, LEADER);
      const [pa, pb] = ["a", "b"].map((n) => person(n));
      for (const p of [pa!, pb!]) await join(c, union, p);
      const act = await composeAction(c.deps, union.id, OPERATOR, ask("goal", { goal: 2 }), { publishNow: true });
      // Each commitment is written before either transaction counts (two inbox workers at once).
      const meet = rendezvous((n, json) => n.kind === "InsertQueryNode" && touches(json, "action_responses"));
      const deps: ActionDeps = { ...c.deps, db: c.db.withPlugin(meet.plugin) };
      const results = await Promise.all([
        recordLike(deps, union.id, act.id, pa!.actorId, "https://remote.example/likes/a"),
        recordLike(deps, union.id, act.id, pb!.actorId, "https://remote.example/likes/b"),
      ]);
      t.diagnostic(`commitments met before counting: ${meet.met()}`);
      assert.deepEqual(results, [true, true]);
      assert.equal((await progressOf(c.db, act)).commitments, 2);
      assert.ok((await getAction(c.db, union.id, act.id))?.goalReachedAt instanceof Date, "two of two committed: the goal is reached");
      assert.deepEqual(await intentsOf(c, act.id), ["action.publish", "action.progress:goal"]);
    }));

    it("closeExpired closes each call whose deadline passed with one progress reply, and only once", () => withCtx(d, async (c) => {
      const s1 = await staffed(c, "riders");
      const s2 = await staffed(c, "couriers");
      const t0 = Date.now();
      const soon = await composeAction(c.deps, s1.union.id, OPERATOR, ask("soon", { deadline: new Date(t0 + HOUR) }), { publishNow: true });
      const later = await composeAction(c.deps, s1.union.id, OPERATOR, ask("later", { deadline: new Date(t0 + 2 * HOUR) }), { publishNow: true });
      const never = await composeAction(c.deps, s1.union.id, OPERATOR, ask("no deadline"), { publishNow: true });
      const gone = await composeAction(c.deps, s1.union.id, OPERATOR, ask("retracted", { deadline: new Date(t0 + HOUR) }), { publishNow: true });
      await retractAction(c.deps, s1.union.id, gone.id, OPERATOR);
      const draft = await composeAction(c.deps, s1.union.id, OPERATOR, ask("draft", { deadline: new Date(t0 + HOUR) }));
      const there = await composeAction(c.deps, s2.union.id, OPERATOR, ask("elsewhere", { deadline: new Date(t0 + HOUR) }), { publishNow: true });
      const progress = async () => (await intents(c)).filter((i): i is Extract<OutboxIntent, { kind: "action.progress" }> => i.kind === "action.progress");

      assert.equal(await closeExpired(c.deps, t0 + HOUR / 2), 0);
      assert.deepEqual(await progress(), []);
      assert.equal(await closeExpired(c.deps, t0 + 1.5 * HOUR), 2);
      assert.equal(await closeExpired(c.deps, t0 + 1.5 * HOUR), 0, "a second run closes nothing");
      assert.deepEqual((await progress()).map((i) => [i.actionId, i.reason]).sort(), [[soon.id, "deadline"], [there.id, "deadline"]].sort());
      assert.equal((await getAction(c.db, s1.union.id, soon.id))?.closedAt?.getTime(), t0 + 1.5 * HOUR);
      assert.equal(await closeExpired(c.deps, t0 + 3 * HOUR), 1);
      assert.equal(await closeExpired(c.deps, t0 + 3 * HOUR), 0);
      assert.deepEqual((await progress()).map((i) => i.actionId).sort(), [soon.id, there.id, later.id].sort());
      for (const a of [never, gone, draft]) assert.equal((await c.db.selectFrom("actions").select("closed_at").where("id", "=", a.id).executeTakeFirst())?.closed_at ?? null, null);
    }));

    // 8. The scheduler.

    it("publishDue publishes the oldest queued call once per local day, at the union's time", () => withCtx(d, async (c) => {
      const tokyo = await staffed(c, "tokyo");
      await overrideBylaws(c.deps, tokyo.union.slug, { timeZone: "Asia/Tokyo", publishTime: "09:00" });
      const utc = await staffed(c, "utc");
      const day = async () => (await c.db.selectFrom("unions").select("last_published_on").where("id", "=", tokyo.union.id).executeTakeFirstOrThrow()).last_published_on;
      const at = (iso: string) => publishDue(c.deps, Date.parse(iso));

      // Due, but nothing queued: nothing published and the day not claimed.
      assert.deepEqual(await at("2025-01-16T00:30:00Z"), []);
      assert.equal(await day(), null);
      const q1 = await composeAction(c.deps, tokyo.union.id, OPERATOR, ask("first"));
      await tick();
      const q2 = await composeAction(c.deps, tokyo.union.id, OPERATOR, ask("second"));
      await tick();
      const q3 = await composeAction(c.deps, tokyo.union.id, OPERATOR, ask("third"));
      const u1 = await composeAction(c.deps, utc.union.id, OPERATOR, ask("utc first"));
      // A draft queued later the same day still goes out that day.
      assert.deepEqual(await at("2025-01-16T01:00:00Z"), [q1.id]);
      assert.equal(await day(), "2025-01-16");
      const p1 = (await getAction(c.db, tokyo.union.id, q1.id))!;
      assert.deepEqual([p1.state, p1.seq, p1.publishedAt?.toISOString()], ["published", 1, "2025-01-16T01:00:00.000Z"]);
      assert.deepEqual(await at("2025-01-16T05:00:00Z"), [], "one a day");
      assert.deepEqual(await at("2025-01-16T08:59:59Z"), [], "UTC union: not yet 09:00");
      assert.deepEqual(await at("2025-01-16T09:00:00Z"), [u1.id], "UTC union: its own time, its own queue");
      assert.deepEqual(await at("2025-01-16T14:59:59Z"), [], "23:59:59 in Tokyo: still the same day");
      assert.deepEqual(await at("2025-01-16T15:00:00Z"), [], "midnight in Tokyo: a new day, but before 09:00");
      assert.deepEqual(await at("2025-01-16T23:59:59Z"), [], "08:59:59 in Tokyo");
      assert.deepEqual(await at("2025-01-17T00:00:00Z"), [q2.id], "09:00 in Tokyo");
      assert.deepEqual(await at("2025-01-17T00:00:01Z"), []);
      assert.deepEqual(await at("2025-01-18T03:00:00Z"), [q3.id]);
      assert.deepEqual(await at("2025-01-19T03:00:00Z"), [], "the queue is empty");
      assert.equal(await day(), "2025-01-18");
      assert.deepEqual((await chainOf(c.db, tokyo.union.id)).map((e) => [e.actionId, JSON.parse(e.payload).seq]), [[q1.id, 1], [q2.id, 2], [q3.id, 3]]);
      assert.deepEqual(await intents(c), [q1, u1, q2, q3].map((a) => ({ kind: "action.publish", unionId: a.unionId, actionId: a.id })));
      assert.deepEqual(published(c), [q1.id, u1.id, q2.id, q3.id]);
    }));

    it("publishDue around Berlin's DST changes: 02:30 on spring-forward day, and only once when 02:30 happens twice", () => withCtx(d, async (c) => {
      const { union } = await staffed(c, "berlin");
      await overrideBylaws(c.deps, union.slug, { timeZone: "Europe/Berlin", publishTime: "02:30" });
      const qs: Action[] = [];
      for (const t of ["one", "two", "three", "four"]) {
        qs.push(await composeAction(c.deps, union.id, OPERATOR, ask(t)));
        await tick();
      }
      const at = (iso: string) => publishDue(c.deps, Date.parse(iso));
      assert.deepEqual(await at("2025-03-30T00:59:59Z"), [], "01:59:59 CET");
      assert.deepEqual(await at("2025-03-30T01:00:00Z"), [qs[0]!.id], "03:00 CEST: 02:30 was skipped over, and has passed");
      assert.deepEqual(await at("2025-10-26T00:29:59Z"), [], "02:29:59 CEST");
      assert.deepEqual(await at("2025-10-26T00:30:00Z"), [qs[1]!.id], "the first 02:30");
      assert.deepEqual(await at("2025-10-26T01:30:00Z"), [], "the second 02:30 is the same day");
      assert.deepEqual(await at("2025-10-26T22:59:59Z"), [], "23:59:59 CET, same day");
      assert.deepEqual(await at("2025-10-26T23:00:00Z"), [], "midnight: a new day, before 02:30");
      assert.deepEqual(await at("2025-10-27T01:30:00Z"), [qs[2]!.id], "02:30 CET");
    }));

    it("two schedulers running at once publish the day's call once", () => withCtx(d, async (c) => {
      const { union } = await staffed(c);
      const q1 = await composeAction(c.deps, union.id, OPERATOR, ask("one"));
      await tick();
      const q2 = await composeAction(c.deps, union.id, OPERATOR, ask("two"));
      const racers = await actionContenders(2);
      for (const [i, [now, expected]] of ([["2025-05-01T10:00:00Z", q1], ["2025-05-02T10:00:00Z", q2]] as const).entries()) {
        const results = await Promise.all(racers.map((r) => r.run(c.tdb.url, { op: "publishDue", now: Date.parse(now) })));
        assert.deepEqual(results.map(outcome).sort(), ["ok:[]", `ok:${JSON.stringify([expected.id])}`].sort(), JSON.stringify(results));
        assert.equal((await chainOf(c.db, union.id)).length, i + 1);
        assert.deepEqual(await intentsOf(c, expected.id), ["action.publish"]);
      }
      const third = await Promise.all(racers.map((r) => r.run(c.tdb.url, { op: "publishDue", now: Date.parse("2025-05-03T10:00:00Z") })));
      assert.deepEqual(third.map(outcome), ["ok:[]", "ok:[]"]);
      assert.equal((await verifyChain(c.db, union.id)).ok, true);
    }));

    it("a call published by hand while the scheduler picks it does not stop the scheduler, nor other unions' calls", () => withCtx(d, async (c) => {
      const a = await staffed(c, "alpha");
      const b = await staffed(c, "bravo");
      const x = await composeAction(c.deps, a.union.id, OPERATOR, ask("alpha's"));
      await tick();
      const y = await composeAction(c.deps, b.union.id, OPERATOR, ask("bravo's"));
      // Right after the scheduler chose alpha's call, an officer publishes it from the console
      // (another process: a worker thread with its own connection). If the scheduler holds a
      // lock that makes the officer wait, the scheduler goes on after a second.
      const [officer] = await actionContenders(1);
      let fromConsole: Promise<ActionRaceResult> | undefined;
      const hook = afterFirst((n, json) => n.kind === "SelectQueryNode" && touches(json, "actions") && json.includes('"value":"queued"') && json.includes(a.union.id), async () => {
        fromConsole = officer!.run(c.tdb.url, { op: "publish", unionId: a.union.id, actionId: x.id, by: OPERATOR });
        await Promise.race([fromConsole, new Promise((r) => setTimeout(r, 1000))]);
      });
      const scheduler: ActionDeps = { ...c.deps, db: c.db.withPlugin(hook) };
      const unionsOrder = (await c.db.selectFrom("unions").select("id").execute()).map((u) => u.id);
      const result = await publishDue(scheduler, Date.parse("2025-05-01T10:00:00Z")).then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e: String(e) }));
      assert.ok(fromConsole, "the officer acted while the scheduler was choosing");
      const officerOutcome = outcome(await fromConsole);
      assert.ok(['ok:"published"', "ActionError:conflict"].includes(officerOutcome), officerOutcome);
      assert.equal((await getAction(c.db, a.union.id, x.id))?.state, "published");
      assert.deepEqual(await intentsOf(c, x.id), ["action.publish"], "published once, by one of them");
      assert.deepEqual(result.ok ? "resolved" : result.e, "resolved", `publishDue must not fail the whole pass (unions in order ${unionsOrder.join(", ")})`);
      assert.equal((await getAction(c.db, b.union.id, y.id))?.state, "published", "bravo's call still goes out");
      assert.equal((await verifyChain(c.db, a.union.id)).ok, true);
    }));

    // 9. Relaying members' posts.

    it("relay: ignored when off, held under approval, relayed under auto; only members' public non-reply posts; each note once", () => withCtx(d, async (c) => {
      const { union, officer, member } = await staffed(c);
      const memberActor = person(`member-${union.slug}`).actorId;
      const offer = (n: string, more: Partial<RelayOffer> = {}): RelayOffer => ({
        noteId: `https://remote.example/notes/${n}`, createId: `https://remote.example/notes/${n}/activity`, authorActorId: memberActor, contentHtml: `post ${n}`,
        isPublic: true, isReplyToAction: false, ...more,
      });
      assert.equal(await offerRelay(c.deps, union.id, offer("off")), "ignored", "relaying is off by default");
      assert.equal(await offerRelay(c.deps, randomUUID(), offer("nowhere")), "ignored");

      await updateUnion(c.deps, union.slug, OPERATOR, { relayPolicy: "approval" });
      await overrideBylaws(c.deps, union.slug, { joinPolicy: "approval" });
      const pendingActor = person("pending");
      await join(c, union, pendingActor);
      assert.equal(await offerRelay(c.deps, union.id, offer("stranger", { authorActorId: "https://elsewhere.example/users/x" })), "ignored");
      assert.equal(await offerRelay(c.deps, union.id, offer("pending", { authorActorId: pendingActor.actorId })), "ignored");
      assert.equal(await offerRelay(c.deps, union.id, offer("private", { isPublic: false })), "ignored");
      assert.equal(await offerRelay(c.deps, union.id, offer("reply", { isReplyToAction: true })), "ignored");
      assert.equal((await pendingRelays(c.db, union.id)).length, 0);
      assert.equal(await offerRelay(c.deps, union.id, offer("held")), "pending");
      assert.equal(await offerRelay(c.deps, union.id, offer("held")), "ignored", "the same note twice is decided once");
      await tick();
      assert.equal(await offerRelay(c.deps, union.id, offer("held2", { contentHtml: "y".repeat(2000) })), "pending");
      const held = await pendingRelays(c.db, union.id);
      assert.deepEqual(held.map((r) => [r.note_id, r.state, r.author_id]), [[offer("held").noteId, "pending", memberActor], [offer("held2").noteId, "pending", memberActor]]);
      assert.equal(held[1]!.excerpt?.length, 500);
      assert.deepEqual(await intents(c), [], "nothing relayed while held");

      const before = await snapshot(c);
      await refuses(decideRelay(c.deps, union.id, held[0]!.id, asMember(member), true), MemberError, "forbidden");
      await refuses(decideRelay(c.deps, union.id, 999_999, asMember(officer), true), ActionError, "not_found");
      const other = await staffed(c, "couriers");
      await refuses(decideRelay(c.deps, other.union.id, held[0]!.id, OPERATOR, true), ActionError, "not_found", undefined);
      await refuses(decideRelay(c.deps, union.id, held[0]!.id, asMember(other.officer), true), MemberError, "forbidden");
      assert.deepEqual({ ...(await snapshot(c)), days: before.days }, before);

      await decideRelay(c.deps, union.id, held[0]!.id, asMember(officer), true);
      assert.deepEqual(await intents(c), [{ kind: "relay", unionId: union.id, noteId: offer("held").noteId, createId: offer("held").createId }]);
      await decideRelay(c.deps, union.id, held[1]!.id, OPERATOR, false);
      assert.equal((await intents(c)).length, 1, "declined: nothing relayed");
      await refuses(decideRelay(c.deps, union.id, held[0]!.id, asMember(officer), true), ActionError, "conflict");
      await refuses(decideRelay(c.deps, union.id, held[1]!.id, asMember(officer), true), ActionError, "conflict");
      assert.equal((await intents(c)).length, 1);
      const states = await c.db.selectFrom("relay_requests").select(["note_id", "state"]).where("union_id", "=", union.id).orderBy("id").execute();
      assert.deepEqual(states.map((r) => r.state), ["relayed", "declined"]);
      assert.deepEqual(await pendingRelays(c.db, union.id), []);

      await updateUnion(c.deps, union.slug, OPERATOR, { relayPolicy: "auto" });
      assert.equal(await offerRelay(c.deps, union.id, offer("auto", { createId: null })), "relayed");
      assert.equal(await offerRelay(c.deps, union.id, offer("auto", { createId: null })), "ignored");
      assert.equal(await offerRelay(c.deps, union.id, offer("held")), "ignored", "already decided");
      assert.equal(await offerRelay(c.deps, union.id, offer("auto-reply", { isReplyToAction: true })), "ignored", "a reply to a call is never relayed");
      assert.equal(await offerRelay(c.deps, union.id, offer("auto-private", { isPublic: false })), "ignored");
      assert.deepEqual((await intents(c)).map((i) => i.kind === "relay" && [i.noteId, i.createId]), [[offer("held").noteId, offer("held").createId], [offer("auto").noteId, null]]);
      assert.deepEqual(await pendingRelays(c.db, union.id), [], "auto-relayed posts are not held");
      await updateUnion(c.deps, union.slug, OPERATOR, { relayPolicy: "off" });
      assert.equal(await offerRelay(c.deps, union.id, offer("off-again")), "ignored");
    }));

    it("two officers deciding the same held post at once relay it once", (t: TestContext) => withCtx(d, async (c) => {
      const { union, officer, leader } = await staffed(c);
      await updateUnion(c.deps, union.slug, OPERATOR, { relayPolicy: "approval" });
      assert.equal(await offerRelay(c.deps, union.id, {
        noteId: "https://remote.example/notes/1", createId: null, authorActorId: person(`member-${union.slug}`).actorId, contentHtml: "x", isPublic: true, isReplyToAction: false,
      }), "pending");
      const [req] = await pendingRelays(c.db, union.id);
      const meet = rendezvous((n, json) => n.kind === "SelectQueryNode" && touches(json, "relay_requests"));
      const deps: ActionDeps = { ...c.deps, db: c.db.withPlugin(meet.plugin) };
      const results = await Promise.allSettled([
        decideRelay(deps, union.id, req!.id, asMember(officer), true),
        decideRelay(deps, union.id, req!.id, asMember(leader), true),
      ]);
      t.diagnostic(`deciders met before writing: ${meet.met()}`);
      assert.deepEqual((await intents(c)).filter((i) => i.kind === "relay").length, 1, "one Announce, not two");
      const outcomes = results.map((r) => (r.status === "fulfilled" ? "ok" : r.reason instanceof ActionError ? r.reason.code : String(r.reason)));
      assert.deepEqual(outcomes.sort(), ["conflict", "ok"]);
    }));

    // 10. Participation per member.

    it("participationOf counts, per member, the calls they committed to, did, commented on and boosted", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders");
      const leader = await join(c, union, LEADER);
      const pa = person("a");
      const pb = person("b");
      const a = await join(c, union, pa);
      const b = await join(c, union, pb);
      const x = await composeAction(c.deps, union.id, OPERATOR, ask("x"), { publishNow: true });
      const y = await composeAction(c.deps, union.id, OPERATOR, ask("y"), { publishNow: true });
      const z = await composeAction(c.deps, union.id, OPERATOR, ask("z"), { publishNow: true });
      // a: commits to x twice over (like and button), to y by reply, marks y done, boosts z, likes z then undoes it.
      await recordLike(c.deps, union.id, x.id, pa.actorId, "https://remote.example/likes/ax");
      await recordWebResponse(c.deps, union.id, x.id, a.id, "commit");
      await recordReply(c.deps, union.id, y.id, pa.actorId, "https://remote.example/notes/ay", "<p>in</p>");
      await recordWebResponse(c.deps, union.id, y.id, a.id, "done");
      await recordBoost(c.deps, union.id, z.id, pa.actorId, "https://remote.example/boosts/az");
      await recordLike(c.deps, union.id, z.id, pa.actorId, "https://remote.example/likes/az");
      await withdrawResponse(c.deps, "https://remote.example/likes/az", pa.actorId);
      // b: comments on x and z, commits to nothing.
      await recordReply(c.deps, union.id, x.id, pb.actorId, "https://remote.example/notes/bx", "<p>where?</p>");
      await recordReply(c.deps, union.id, z.id, pb.actorId, "https://remote.example/notes/bz", "<p>when?</p>");
      // The same account in another union: counted there, not here.
      const other = await makeUnion(c, "couriers");
      await join(c, other, LEADER);
      const a2 = await join(c, other, pa);
      const w = await composeAction(c.deps, other.id, OPERATOR, ask("w"), { publishNow: true });
      await recordLike(c.deps, other.id, w.id, pa.actorId, "https://remote.example/likes/aw");

      assert.deepEqual(await participationOf(c.db, union.id, a.id), { committed: 2, done: 1, comments: 1, boosts: 1 });
      assert.deepEqual(await participationOf(c.db, union.id, b.id), { committed: 0, done: 0, comments: 2, boosts: 0 });
      assert.deepEqual(await participationOf(c.db, union.id, leader.id), { committed: 0, done: 0, comments: 0, boosts: 0 });
      assert.deepEqual(await participationOf(c.db, other.id, a2.id), { committed: 1, done: 0, comments: 0, boosts: 0 });
      assert.deepEqual(await participationOf(c.db, union.id, a2.id), { committed: 0, done: 0, comments: 0, boosts: 0 });
      const px = await progressOf(c.db, x);
      assert.deepEqual([px.commitments, px.comments, px.activeMembers, px.participation], [1, 1, 3, 1 / 3]);
    }));
  });
}

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import type { Kysely, KyselyPlugin } from "kysely";
import { dialects } from "./helpers/databases.ts";
import { sharedKeys } from "./helpers/domain-context.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { memberStanding } from "../src/treasury/dues.ts";
import { recomputeStandings } from "../src/treasury/standing.ts";

// Three roster pages (recomputeStandings reads 1,000 members at a time).
const MEMBERS = 2_500;
const PAGES = 3;
const DAY = 86_400_000;
const DUES = 5_000_000n;

/** Counts the statements a Kysely instance runs and the transactions it opens, through a plugin and a proxy. */
function counted(db: Kysely<DB>) {
  const n = { statements: 0, transactions: 0 };
  const plugin: KyselyPlugin = {
    transformQuery: (args) => { n.statements++; return args.node; },
    transformResult: async (args) => args.result,
  };
  const inner = db.withPlugin(plugin);
  const proxy = new Proxy(inner, {
    get(target, prop) {
      if (prop === "transaction") return () => { n.transactions++; return target.transaction(); };
      const v = Reflect.get(target, prop, target) as unknown;
      return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  return { db: proxy, n, reset: () => { n.statements = 0; n.transactions = 0; } };
}

for (const d of dialects) {
  describe(`standing scan over ${MEMBERS} members, set-based, on ${d.name}`, { skip: d.skip }, () => {
    it("records what memberStanding computes for each member, in a bounded number of statements and one transaction per page", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      try {
        const events = createEventBus();
        let emitted = 0;
        events.on("member.standing", () => { emitted++; });
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        await overrideBylaws({ db, events }, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
        const now = Date.now();
        const ids = Array.from({ length: MEMBERS }, () => randomUUID());
        // A mix: new members (grace), members who joined long ago and never paid (lapsed), payers of one or two periods (good).
        const joined = (i: number) => (i % 4 === 1 ? now - 60 * DAY : now - (i % 5) * DAY);
        for (let i = 0; i < ids.length; i += 500) {
          await db.insertInto("members").values(ids.slice(i, i + 500).map((id, k) => ({
            id, union_id: union.id, actor_id: `https://s${(i + k) % 7}.example/users/m${i + k}`, handle: null, state: "active", role: "member", portfolio: null,
            sponsor_id: null, subtree_size: 0, follow_id: `https://s.example/follows/${id}`, invite_id: null, joined_at: joined(i + k), left_at: null, left_reason: null, removed_by: null, created_at: now,
          }))).execute();
        }
        const payments = ids.flatMap((id, i) => (i % 4 === 2 ? [1] : i % 4 === 3 ? [1, 2] : []).map((n) => ({
          signature: `sig-${i}-${n}`, union_id: union.id, member_id: id, payer: "payer", mint: "mint", amount: (DUES * BigInt(n)).toString(), reference: null,
          status: "credited", reason: null, paid_at: now - (n * 10 + (i % 3)) * DAY, recorded_at: now,
        })));
        for (let i = 0; i < payments.length; i += 500) await db.insertInto("dues_payments").values(payments.slice(i, i + 500)).execute();
        // An unmatched payment does not count.
        await db.insertInto("dues_payments").values({ ...payments[0]!, signature: "sig-unmatched", member_id: ids[0]!, status: "unmatched", reason: "underpaid", amount: (DUES * 10n).toString() }).execute();

        const c = counted(db);
        const deps = { db: c.db, events, duesParams: duesParamsFromBylaws };
        const plain = { db, duesParams: duesParamsFromBylaws };
        const agree = async (at: number) => {
          const recorded = new Map((await db.selectFrom("member_standing").select(["member_id", "standing"]).where("union_id", "=", union.id).execute()).map((r) => [r.member_id, r.standing]));
          const kinds = new Set<string>();
          for (const id of ids) {
            const expected = (await memberStanding(plain, union.id, id, at)).standing;
            kinds.add(expected);
            assert.equal(recorded.get(id), expected, `member ${id}`);
          }
          return kinds;
        };
        const bounded = (label: string) => {
          assert.ok(c.n.transactions <= PAGES, `${label}: ${c.n.transactions} transactions, at most one per page`);
          assert.ok(c.n.statements <= 10 * (PAGES + 1) + 10, `${label}: ${c.n.statements} statements, a few per page, not per member`);
        };

        await recomputeStandings(deps, union.id, now);
        bounded("first scan");
        assert.deepEqual([...await agree(now)].sort(), ["good", "grace", "lapsed"], "the seed covers every standing");
        assert.equal(emitted, MEMBERS);
        const history = await db.selectFrom("standing_changes").select((eb) => eb.fn.countAll<number>().as("n")).where("union_id", "=", union.id).executeTakeFirstOrThrow();
        assert.equal(Number(history.n), MEMBERS, "one history row per first standing");

        // Time moves on: payers' cover ends, new members' grace ends.
        c.reset(); emitted = 0;
        const later = now + 25 * DAY;
        const moved = await recomputeStandings(deps, union.id, later);
        bounded("scan with changes");
        assert.ok(moved.length > 0 && moved.every((m) => m.reason === "time"));
        await agree(later);

        c.reset(); emitted = 0;
        assert.deepEqual(await recomputeStandings(deps, union.id, later), [], "nothing changes twice");
        assert.equal(c.n.transactions, 0, "a scan without changes writes nothing");
        assert.equal(emitted, 0);

        // No dues: everyone is good, and a scan after that computes only those recorded otherwise (none),
        // reading the roster and the standings a page at a time: a statement that filtered them walked
        // the whole union to find nothing, with SQLite's event loop stopped (src/treasury/standing.ts).
        await overrideBylaws({ db, events }, "riders", { duesAmount: 0n });
        c.reset();
        await recomputeStandings(deps, union.id, later);
        bounded("scan to no dues");
        assert.deepEqual([...await agree(later)], ["good"]);
        c.reset();
        await recomputeStandings(deps, union.id, later);
        assert.equal(c.n.transactions, 0);
        assert.ok(c.n.statements <= 2 * PAGES + 3, `no-dues scan without changes: ${c.n.statements} statements, a page of members and one of standings at a time`);
      } finally {
        await database.close();
        await tdb.destroy();
      }
    });

    it("does not overwrite a standing another worker recorded between the page's read and its write, and records history only for its own writes", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const other = tdb.open();
      const db = database.db;
      try {
        const events = createEventBus();
        const seen: string[] = [];
        events.on("member.standing", (e) => seen.push(`${e.memberId}:${e.from}->${e.to}`));
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        await overrideBylaws({ db, events }, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
        const now = Date.now();
        const [a, b] = [randomUUID(), randomUUID()].sort();
        await db.insertInto("members").values([a!, b!].map((id, k) => ({
          id, union_id: union.id, actor_id: `https://s.example/users/r${k}`, handle: null, state: "active", role: "member", portfolio: null,
          sponsor_id: null, subtree_size: 0, follow_id: `https://s.example/follows/${id}`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
        }))).execute();
        // Runs the other worker's write once, when the scan has read the page's payments and not yet written.
        let meanwhile: (() => Promise<void>) | undefined;
        const paymentReads = new Set<unknown>();
        const hooked = db.withPlugin({
          transformQuery: (args) => {
            if (args.node.kind === "SelectQueryNode" && JSON.stringify(args.node).includes("\"dues_payments\"")) paymentReads.add(args.queryId);
            return args.node;
          },
          transformResult: async (args) => {
            if (paymentReads.has(args.queryId) && meanwhile) { const run = meanwhile; meanwhile = undefined; await run(); }
            return args.result;
          },
        });
        const deps = { db: hooked, events, duesParams: duesParamsFromBylaws };
        const history = async (id: string) => (await db.selectFrom("standing_changes").select(["from_standing", "to_standing", "reason"]).where("member_id", "=", id).orderBy("id").execute())
          .map((r) => `${r.from_standing}->${r.to_standing}:${r.reason}`);

        // First scan: another worker records a's first standing (a payment) meanwhile.
        meanwhile = async () => {
          await other.db.insertInto("member_standing").values({ union_id: union.id, member_id: a!, standing: "good", paid_through: now + 30 * DAY, changed_at: now }).execute();
          await other.db.insertInto("standing_changes").values({ union_id: union.id, member_id: a!, from_standing: null, to_standing: "good", reason: "payment", at: now }).execute();
        };
        const first = await recomputeStandings(deps, union.id, now);
        assert.equal(meanwhile, undefined, "the other worker ran");
        assert.deepEqual(first.map((c) => `${c.memberId}:${c.from}->${c.to}`), [`${b}:null->grace`]);
        assert.deepEqual(seen, [`${b}:null->grace`]);
        assert.deepEqual(await history(a!), ["null->good:payment"], "a's standing is the other worker's, with its history only");
        assert.deepEqual(await history(b!), ["null->grace:first"]);

        // Later: the scan computes a good->lapsed and b grace->lapsed; another worker moves b to good meanwhile.
        seen.length = 0;
        meanwhile = async () => {
          await other.db.updateTable("member_standing").set({ standing: "good", changed_at: now }).where("member_id", "=", b!).where("standing", "=", "grace").execute();
          await other.db.insertInto("standing_changes").values({ union_id: union.id, member_id: b!, from_standing: "grace", to_standing: "good", reason: "payment", at: now }).execute();
        };
        const second = await recomputeStandings(deps, union.id, now + 40 * DAY);
        assert.equal(meanwhile, undefined, "the other worker ran");
        assert.deepEqual(second.map((c) => `${c.memberId}:${c.from}->${c.to}`), [`${a}:good->lapsed`]);
        assert.deepEqual(seen, [`${a}:good->lapsed`]);
        assert.deepEqual(await history(a!), ["null->good:payment", "good->lapsed:time"]);
        assert.deepEqual(await history(b!), ["null->grace:first", "grace->good:payment"], "b's newer standing is kept");
        const bNow = await db.selectFrom("member_standing").select("standing").where("member_id", "=", b!).executeTakeFirstOrThrow();
        assert.equal(bNow.standing, "good");
      } finally {
        await other.close();
        await database.close();
        await tdb.destroy();
      }
    });
  });
}

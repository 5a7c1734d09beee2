import { randomUUID } from "node:crypto";
import { type Kysely, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import { prepared } from "../db/prepared.ts";
import { htmlToText } from "../html-text.ts";
import { countMembers } from "../members/members.ts";
import { getUnionById, type Union } from "../unions/unions.ts";
import { type Action, type ActionDeps, getAction, toAction } from "./actions.ts";

export type ResponseKind = "commit" | "done" | "comment" | "boost";
export type ResponseSource = "like" | "reply" | "announce" | "web";

export interface Progress {
  /** Members who committed (like, commitment reply or the web button), or marked done. */
  readonly commitments: number;
  readonly done: number;
  readonly comments: number;
  readonly boosts: number;
  readonly goal: number | null;
  readonly activeMembers: number;
  /** commitments / active members, 0..1. */
  readonly participation: number;
}

const NEGATIONS = new Set(["not", "no", "never", "nope", "can't", "cannot", "won't", "don't", "isn't", "aren't", "wasn't", "couldn't", "wouldn't"]);

/**
 * Whether a reply says the member is in. The reply is read clause by clause
 * (split at , . ; : ! ? and line breaks): a clause pledges when it holds one
 * of the union's words as a whole word and is short ("I'm in", "count me
 * in") or starts or ends with it ("done, see you there"; "I'm in, see you
 * there" pledges through its first clause). A question ("are you in?") does
 * not pledge, nor does a word in passing ("what is this in reference to"),
 * and any negation anywhere ("I'm not in this time") makes the whole reply a
 * comment: a false "no" costs less than counting someone who declined.
 */
export function isCommitment(text: string, words: readonly string[]): boolean {
  // A mention link (Mastodon splits the name: @<span>in</span>) is addressing;
  // paragraphs and line breaks end a clause.
  const plain = htmlToText(text, { tagGap: " ", dropMentions: true, skipScripts: true })
    .replace(/\u2019/g, "'")
    .replace(/&[a-z]+;|&#\d+;/gi, " ")
    // Mentions (@union@host) are addressing, not content.
    .replace(/@[\w.-]+(@[\w.:-]+)?/g, " ")
    .toLowerCase();
  const tokensOf = (clause: string) => clause.split(/[^\p{L}\p{N}'-]+/u).filter(Boolean);
  if (tokensOf(plain).some((t) => NEGATIONS.has(t) || t.endsWith("n't"))) return false;
  const isWord = (t: string | undefined) => t !== undefined && words.includes(t);
  return (plain.match(/[^,.;:!?\n]+[,.;:!?\n]*/g) ?? []).some((clause) => {
    if (clause.includes("?")) return false;
    const tokens = tokensOf(clause);
    if (!tokens.some(isWord)) return false;
    return tokens.length <= 4 || isWord(tokens[0]) || isWord(tokens[tokens.length - 1]);
  });
}

/** One response a member makes to a call (a reply is a comment, and a commitment too when it says so). */
interface NewResponse {
  readonly kind: ResponseKind;
  readonly source: ResponseSource;
  readonly sourceId: string;
  readonly content: string | null;
}

/**
 * Records a member's responses to one call in one transaction, the call's
 * row written once (settleCommitters), and says of each whether it was new:
 * the same source activity twice records once. "action.response" is emitted
 * after the commit for each new one, in order.
 */
async function recordAll(deps: ActionDeps, action: Action, memberId: string, responses: readonly NewResponse[]): Promise<boolean[]> {
  const inserted = await deps.db.transaction().execute(async (trx) => {
    const news: boolean[] = [];
    for (const r of responses) news.push(await insertResponse(trx, deps, action, memberId, r.kind, r.source, r.sourceId, r.content));
    await settleCommitters(deps, trx);
    return news;
  });
  responses.forEach((r, i) => {
    if (inserted[i]) deps.events.emit("action.response", { unionId: action.unionId, actionId: action.id, memberId, kind: r.kind });
  });
  return inserted;
}

/** recordAll of one response. */
async function record(deps: ActionDeps, action: Action, memberId: string, kind: ResponseKind, source: ResponseSource, sourceId: string, content: string | null): Promise<boolean> {
  const [inserted] = await recordAll(deps, action, memberId, [{ kind, source, sourceId, content }]);
  return inserted!;
}

// Compiled once: every inbox response runs these (src/db/prepared.ts).
const insertResponseRow = prepared<[id: string, actionId: string, unionId: string, memberId: string, kind: string, source: string, sourceId: string, content: string | null, at: number], unknown>(
  (db, id, actionId, unionId, memberId, kind, source, sourceId, content, at) => db.insertInto("action_responses").values({
    id, action_id: actionId, union_id: unionId, member_id: memberId, kind, source, source_id: sourceId, content, created_at: at, undone_at: null,
  }).onConflict((oc) => oc.columns(["source_id", "kind"]).doNothing()));

const addStanding = prepared<[actionId: string, memberId: string], { standing: number }>((db, actionId, memberId) =>
  db.insertInto("action_committers").values({ action_id: actionId, member_id: memberId, standing: 1 })
    .onConflict((oc) => oc.columns(["action_id", "member_id"]).doUpdateSet((eb) => ({ standing: eb("action_committers.standing", "+", 1) })))
    .returning("standing"));

/**
 * Writes one response and counts it, inside the caller's transaction; true
 * when it was new. The caller emits "action.response" once it commits, and
 * calls settleCommitters(trx) last before committing: the call's committer
 * count and goal check are written then.
 */
export async function insertResponse(trx: Kysely<DB>, deps: Pick<ActionDeps, "outbox">, action: Pick<Action, "id" | "unionId">, memberId: string, kind: ResponseKind, source: ResponseSource, sourceId: string, content: string | null): Promise<boolean> {
  const r = await insertResponseRow(trx, randomUUID(), action.id, action.unionId, memberId, kind, source, sourceId, content, Date.now());
  const inserted = Number(r.numAffectedRows ?? 0n) === 1;
  if (inserted && COMMITTING.has(kind)) await countCommitment(trx, action.unionId, action.id, memberId);
  return inserted;
}

/**
 * The published call and the actor's active membership of its union, in one
 * statement (a read each before): undefined when either is missing.
 */
async function respondableBy(db: Kysely<DB>, unionId: string, actionId: string, actorId: string): Promise<{ action: Action; memberId: string } | undefined> {
  const r = await db.selectFrom("actions").selectAll("actions")
    .select((eb) => eb.selectFrom("members").select("members.id").where("members.union_id", "=", unionId).where("members.actor_id", "=", actorId)
      .where("members.state", "=", "active").limit(1).as("responder_member_id"))
    .where("actions.union_id", "=", unionId).where("actions.id", "=", actionId).where("actions.state", "=", "published").executeTakeFirst();
  if (!r?.responder_member_id) return undefined;
  const { responder_member_id: memberId, ...row } = r;
  return { action: toAction(row), memberId };
}

async function respondable(db: Kysely<DB>, unionId: string, actionId: string): Promise<Action | undefined> {
  const a = await getAction(db, unionId, actionId);
  return a?.state === "published" ? a : undefined;
}

/** A Like of the call-to-action: the member commits. */
export async function recordLike(deps: ActionDeps, unionId: string, actionId: string, actorId: string, likeId: string): Promise<boolean> {
  const r = await respondableBy(deps.db, unionId, actionId, actorId);
  return !!r && record(deps, r.action, r.memberId, "commit", "like", likeId, null);
}

/** A boost: amplification, counted apart from commitments. */
export async function recordBoost(deps: ActionDeps, unionId: string, actionId: string, actorId: string, announceId: string): Promise<boolean> {
  const r = await respondableBy(deps.db, unionId, actionId, actorId);
  return !!r && record(deps, r.action, r.memberId, "boost", "announce", announceId, null);
}

/** A reply: always kept as a comment for officers; a commitment too when it says so. */
export async function recordReply(deps: ActionDeps, unionId: string, actionId: string, actorId: string, noteId: string, html: string, union?: Pick<Union, "id" | "commitmentWords">): Promise<{ comment: boolean; commit: boolean }> {
  const r = await respondableBy(deps.db, unionId, actionId, actorId);
  if (!r) return { comment: false, commit: false };
  const { action, memberId } = r;
  // The caller may already hold the union (the inbox read it to find the call).
  const words = (union?.id === unionId ? union : (await getUnionById(deps.db, unionId))!).commitmentWords;
  // The comment and the commitment in one transaction: a reply through a
  // worker beside a fan-out paid a wait for the CPU on each round trip of a
  // second transaction.
  const responses: NewResponse[] = [{ kind: "comment", source: "reply", sourceId: noteId, content: html.slice(0, 20_000) }];
  if (isCommitment(html, words)) responses.push({ kind: "commit", source: "reply", sourceId: noteId, content: null });
  const [comment = false, commit = false] = await recordAll(deps, action, memberId, responses);
  return { comment, commit };
}

/** The member's own button on the web page: "I'm in" or "Done". */
export async function recordWebResponse(deps: ActionDeps, unionId: string, actionId: string, memberId: string, kind: "commit" | "done"): Promise<boolean> {
  const action = await respondable(deps.db, unionId, actionId);
  const m = action && await deps.db.selectFrom("members").select("id").where("union_id", "=", unionId).where("id", "=", memberId).where("state", "=", "active").executeTakeFirst();
  return !!(action && m) && record(deps, action, memberId, kind, "web", `web:${actionId}:${memberId}`, null);
}

/**
 * Undo of a Like or Announce, or Delete of a reply: withdraws what that
 * activity counted. Only the member who made it can withdraw it.
 */
export async function withdrawResponse(deps: ActionDeps, sourceId: string, actorId: string): Promise<number> {
  const rows = await withdrawable(deps.db, sourceId, actorId);
  if (rows.length === 0) return 0;
  return deps.db.transaction().execute(async (trx) => {
    const n = await withdrawRows(trx, rows);
    await settleCommitters(deps, trx);
    return n;
  });
}

export type WithdrawableRow = Awaited<ReturnType<typeof withdrawable>>[number];

/** The standing responses an activity counted for the member who sent it. */
export function withdrawable(db: Kysely<DB>, sourceId: string, actorId: string) {
  return db.selectFrom("action_responses as r").innerJoin("members as m", "m.id", "r.member_id")
    .select(["r.id", "r.union_id", "r.action_id", "r.member_id", "r.kind"]).where("r.source_id", "=", sourceId).where("m.actor_id", "=", actorId)
    .where("r.undone_at", "is", null).execute();
}

/** Withdraws the rows (inside the caller's transaction, which calls settleCommitters last); returns how many this call withdrew. */
export async function withdrawRows(trx: Kysely<DB>, rows: readonly WithdrawableRow[]): Promise<number> {
  let withdrawn = 0;
  const now = Date.now();
  for (const row of rows) {
    // Only the delivery that actually withdraws a row uncounts it: the same Undo twice changes nothing.
    const r = await trx.updateTable("action_responses").set({ undone_at: now }).where("id", "=", row.id).where("undone_at", "is", null).executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) continue;
    withdrawn++;
    if (!COMMITTING.has(row.kind)) continue;
    const left = await trx.updateTable("action_committers").set((eb) => ({ standing: eb("standing", "-", 1) }))
      .where("action_id", "=", row.action_id).where("member_id", "=", row.member_id).where("standing", ">", 0)
      .returning("standing").executeTakeFirst();
    if (left?.standing === 0) pendingOf(trx, row.union_id, row.action_id).delta--;
  }
  return withdrawn;
}

export async function progressOf(db: Kysely<DB>, action: Action): Promise<Progress> {
  const counts = await db.selectFrom("action_responses").select(["kind", (eb) => eb.fn.count<number>("member_id").distinct().as("members"), (eb) => eb.fn.countAll<number>().as("n")])
    .where("action_id", "=", action.id).where("undone_at", "is", null).groupBy("kind").execute();
  const by = new Map(counts.map((c) => [c.kind, { members: Number(c.members), n: Number(c.n) }]));
  const committed = await db.selectFrom("action_responses").select((eb) => eb.fn.count<number>("member_id").distinct().as("n"))
    .where("action_id", "=", action.id).where("undone_at", "is", null).where("kind", "in", ["commit", "done"]).executeTakeFirstOrThrow();
  const activeMembers = await countMembers(db, action.unionId);
  const commitments = Number(committed.n);
  return {
    commitments,
    done: by.get("done")?.members ?? 0,
    comments: by.get("comment")?.n ?? 0,
    boosts: by.get("boost")?.members ?? 0,
    goal: action.goal,
    activeMembers,
    participation: activeMembers === 0 ? 0 : commitments / activeMembers,
  };
}

const COMMITTING: ReadonlySet<string> = new Set(["commit", "done"]);

/**
 * Counts one new commitment (inside its response's transaction): the member's
 * first standing one adds a committer to the call, written by
 * settleCommitters at the end of the transaction.
 */
async function countCommitment(trx: Kysely<DB>, unionId: string, actionId: string, memberId: string): Promise<void> {
  const c = (await addStanding(trx, actionId, memberId)).rows[0]!;
  if (Number(c.standing) === 1) pendingOf(trx, unionId, actionId).delta++;
}

/**
 * Committers gained or lost per call in each open transaction, not yet
 * written to the call's row. The call's row is the one row every response to
 * it shares: updated in the middle of a transaction, it stayed locked while
 * the rest ran (in a group commit, other members' responses), and a
 * transaction in another process that held one of those members' counters
 * and then wanted the call's row waited for it, or deadlocked with it (issue
 * 16, replies under a fan-out on PostgreSQL). Written last, the row is held
 * only from that update to the commit, after every per-member lock.
 */
const pending = new WeakMap<Kysely<DB>, Map<string, { unionId: string; delta: number }>>();

function pendingOf(trx: Kysely<DB>, unionId: string, actionId: string): { unionId: string; delta: number } {
  let byAction = pending.get(trx);
  if (!byAction) pending.set(trx, byAction = new Map());
  let p = byAction.get(actionId);
  if (!p) byAction.set(actionId, p = { unionId, delta: 0 });
  return p;
}

/**
 * Writes what this transaction's responses and withdrawals changed in each
 * call's committer count, and checks the goal: the first time the
 * committers reach it the union posts a progress reply (once; the
 * conditional update is the check, so it costs the same at the millionth
 * response as at the first). Call it last in any transaction that ran
 * insertResponse or withdrawRows, before it commits; calls in id order, so
 * two transactions lock call rows in the same order. Running it again in
 * the same transaction writes nothing twice.
 */
export async function settleCommitters(deps: Pick<ActionDeps, "outbox">, trx: Kysely<DB>): Promise<void> {
  const byAction = pending.get(trx);
  if (!byAction) return;
  pending.delete(trx);
  for (const [actionId, { unionId, delta }] of [...byAction].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (delta < 0) {
      // As each withdrawal did: never below zero.
      await trx.updateTable("actions").set((eb) => ({ committers: sql<number>`case when ${eb.ref("committers")} + ${delta} < 0 then 0 else ${eb.ref("committers")} + ${delta} end` }))
        .where("id", "=", actionId).execute();
      continue;
    }
    if (delta === 0) continue;
    await trx.updateTable("actions").set((eb) => ({ committers: eb("committers", "+", delta) })).where("id", "=", actionId).execute();
    const r = await trx.updateTable("actions").set({ goal_reached_at: Date.now() }).where("id", "=", actionId)
      .where("goal", "is not", null).where("goal_reached_at", "is", null).where((eb) => eb("committers", ">=", eb.ref("goal")))
      .executeTakeFirst();
    if (Number(r.numUpdatedRows) === 1) await deps.outbox.add(trx, { kind: "action.progress", unionId, actionId, reason: "goal" });
  }
}

/** Closes published actions whose deadline passed, each with one progress reply. */
export async function closeExpired(deps: ActionDeps, now = Date.now()): Promise<number> {
  const due = await deps.db.selectFrom("actions").selectAll().where("state", "=", "published").where("closed_at", "is", null)
    .where("deadline", "is not", null).where("deadline", "<=", now).limit(100).execute();
  let closed = 0;
  for (const row of due.map(toAction)) {
    await deps.db.transaction().execute(async (trx) => {
      const r = await trx.updateTable("actions").set({ closed_at: now }).where("id", "=", row.id).where("closed_at", "is", null).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return;
      await deps.outbox.add(trx, { kind: "action.progress", unionId: row.unionId, actionId: row.id, reason: "deadline" });
      closed++;
    });
  }
  return closed;
}

/** Per-member participation across a union's calls-to-action, for standing and social capital. */
export async function participationOf(db: Kysely<DB>, unionId: string, memberId: string): Promise<{ committed: number; done: number; comments: number; boosts: number }> {
  const rows = await db.selectFrom("action_responses").select(["kind", (eb) => eb.fn.count<number>("action_id").distinct().as("n")])
    .where("union_id", "=", unionId).where("member_id", "=", memberId).where("undone_at", "is", null).groupBy("kind").execute();
  const n = (k: string) => Number(rows.find((r) => r.kind === k)?.n ?? 0);
  // Marking an action done is committing to it too, as progressOf counts it.
  const committed = await db.selectFrom("action_responses").select((eb) => eb.fn.count<number>("action_id").distinct().as("n"))
    .where("union_id", "=", unionId).where("member_id", "=", memberId).where("undone_at", "is", null).where("kind", "in", ["commit", "done"])
    .executeTakeFirstOrThrow();
  return { committed: Number(committed.n), done: n("done"), comments: n("comment"), boosts: n("boost") };
}

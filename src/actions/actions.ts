import { randomUUID } from "node:crypto";
import { type Kysely, type Selectable, sql } from "kysely";
import type { ActionsTable, DB } from "../db/schema.ts";
import type { EventBus } from "../events.ts";
import { type By, lockUnion, MemberError, requireOfficer } from "../members/members.ts";
import type { Outbox } from "../outbox.ts";
import { getUnionById } from "../unions/unions.ts";
import { appendEntry, type ChainEvent, type ChainPayload, entriesOfAction, GENESIS } from "./chain.ts";
import { renderMarkdown } from "./markdown.ts";
import { DomainError } from "../domain-error.ts";

export const ACTION_KINDS = ["sign", "show-up", "buy", "boycott", "donate", "contact", "vote", "build", "other"] as const;
export type ActionKind = (typeof ACTION_KINDS)[number];
export type ActionState = "queued" | "published" | "retracted";

export interface Action {
  readonly id: string;
  readonly unionId: string;
  readonly seq: number | null;
  readonly title: string;
  readonly bodyMd: string;
  /** Rendered from bodyMd; safe to embed. */
  readonly bodyHtml: string;
  readonly kind: ActionKind;
  readonly link: string | null;
  readonly goal: number | null;
  readonly deadline: Date | null;
  readonly state: ActionState;
  readonly createdAt: Date;
  readonly publishedAt: Date | null;
  readonly updatedAt: Date | null;
  readonly retractedAt: Date | null;
  readonly goalReachedAt: Date | null;
  readonly closedAt: Date | null;
}

export interface ActionDraft {
  readonly title: string;
  readonly text: string;
  readonly kind?: string;
  readonly link?: string | null;
  readonly goal?: number | null;
  readonly deadline?: Date | null;
}

export interface ActionDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
}

export class ActionError extends DomainError<"invalid" | "not_found" | "conflict"> {
  override name = "ActionError";
}

const ms = (d: Date | null | undefined) => (d ? d.getTime() : null);

/** What a draft or an edit writes of the ask itself; the HTML is rendered once, here. */
function contentColumns(v: ReturnType<typeof validate>) {
  return { title: v.title, body_md: v.text, body_html: renderMarkdown(v.text), kind: v.kind, link: v.link, goal: v.goal };
}
const date = (n: number | null) => (n === null ? null : new Date(Number(n)));

export function toAction(r: Selectable<ActionsTable>): Action {
  return {
    id: r.id,
    unionId: r.union_id,
    seq: r.seq === null ? null : Number(r.seq),
    title: r.title,
    bodyMd: r.body_md,
    bodyHtml: r.body_html,
    kind: r.kind as ActionKind,
    link: r.link,
    goal: r.goal === null ? null : Number(r.goal),
    deadline: date(r.deadline),
    state: r.state as ActionState,
    createdAt: new Date(Number(r.created_at)),
    publishedAt: date(r.published_at),
    updatedAt: date(r.updated_at),
    retractedAt: date(r.retracted_at),
    goalReachedAt: date(r.goal_reached_at),
    closedAt: date(r.closed_at),
  };
}

function validate(d: ActionDraft, now: number) {
  const title = d.title.trim();
  if (title.length < 1 || title.length > 200) throw new ActionError("invalid", "a title is 1-200 characters");
  const text = d.text.trim();
  if (text.length < 1 || text.length > 10_000) throw new ActionError("invalid", "the ask is 1-10000 characters of Markdown");
  const kind = (d.kind ?? "other").trim().toLowerCase();
  if (!(ACTION_KINDS as readonly string[]).includes(kind)) throw new ActionError("invalid", `kind must be one of ${ACTION_KINDS.join(", ")}; got ${JSON.stringify(d.kind)}`);
  let link: string | null = null;
  if (d.link) {
    let u: URL;
    try {
      u = new URL(d.link);
    } catch {
      throw new ActionError("invalid", `the link must be an absolute http(s) URL; got ${JSON.stringify(d.link)}`);
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new ActionError("invalid", "the link must be an http(s) URL");
    link = u.href;
  }
  const goal = d.goal ?? null;
  if (goal !== null && (!Number.isInteger(goal) || goal < 1 || goal > 100_000_000)) throw new ActionError("invalid", `the goal is a whole number of members from 1; got ${goal}`);
  const deadline = d.deadline ?? null;
  if (deadline !== null && (Number.isNaN(deadline.getTime()) || deadline.getTime() <= now)) throw new ActionError("invalid", "the deadline must be a valid time in the future");
  return { title, text, kind: kind as ActionKind, link, goal, deadline };
}

/** Queues a call-to-action; it is published at the union's daily time, or now with `publishNow`. */
export async function composeAction(deps: ActionDeps, unionId: string, by: By, draft: ActionDraft, opts: { publishNow?: boolean } = {}): Promise<Action> {
  const action = await deps.db.transaction().execute((trx) => composeActionIn(deps, trx, unionId, by, draft, opts));
  if (action.state === "published") deps.events.emit("action.published", { unionId, actionId: action.id });
  return action;
}

/**
 * composeAction inside the caller's transaction, so a caller can tie the
 * action to its own record (a crowdfund's announcement) all or nothing. The
 * caller emits `action.published` after its commit.
 */
export async function composeActionIn(deps: Pick<ActionDeps, "outbox">, trx: Kysely<DB>, unionId: string, by: By, draft: ActionDraft, opts: { publishNow?: boolean } = {}): Promise<Action> {
  const now = Date.now();
  const v = validate(draft, now);
  const id = randomUUID();
  {
    const officer = await requireOfficer(trx, unionId, by);
    if (!(await getUnionById(trx, unionId))) throw new ActionError("not_found", "no such union");
    await trx.insertInto("actions").values({
      id,
      union_id: unionId,
      seq: null,
      ...contentColumns(v),
      deadline: ms(v.deadline),
      state: "queued",
      created_by: officer?.id ?? null,
      created_at: now,
      published_at: null,
      updated_at: null,
      retracted_at: null,
      goal_reached_at: null,
      closed_at: null,
    }).execute();
    if (opts.publishNow) await publishIn(deps, trx, unionId, id, now);
    return (await getActionIn(trx, unionId, id))!;
  }
}

/** Publishes a queued action now (the console's "publish now"). */
export async function publishAction(deps: ActionDeps, unionId: string, actionId: string, by: By): Promise<Action> {
  const action = await deps.db.transaction().execute(async (trx) => {
    await requireOfficer(trx, unionId, by);
    await publishIn(deps, trx, unionId, actionId, Date.now());
    return (await getActionIn(trx, unionId, actionId))!;
  });
  deps.events.emit("action.published", { unionId, actionId });
  return action;
}

/**
 * Publishes inside the caller's transaction: numbers it, appends it to the
 * hash chain and records the intent to deliver it, all or nothing. The
 * conditional update makes a second publisher (another worker, a double
 * click) fail instead of publishing twice.
 */
export async function publishIn(deps: Pick<ActionDeps, "outbox">, trx: Kysely<DB>, unionId: string, actionId: string, now: number): Promise<void> {
  await lockUnion(trx, unionId);
  const seqRow = await trx.selectFrom("actions").select((eb) => eb.fn.max("seq").as("max")).where("union_id", "=", unionId).executeTakeFirst();
  const seq = Number(seqRow?.max ?? 0) + 1;
  const r = await trx.updateTable("actions").set({ state: "published", seq, published_at: now })
    .where("union_id", "=", unionId).where("id", "=", actionId).where("state", "=", "queued").executeTakeFirst();
  if (Number(r.numUpdatedRows) !== 1) {
    const a = await getActionIn(trx, unionId, actionId);
    throw new ActionError(a ? "conflict" : "not_found", a ? `this call-to-action is already ${a.state}` : "no such call-to-action");
  }
  await chain(trx, unionId, actionId, "publish", now);
  await deps.outbox.add(trx, { kind: "action.publish", unionId, actionId });
}

export interface ActionEdit {
  readonly title?: string;
  readonly text?: string;
  readonly kind?: string;
  readonly link?: string | null;
  readonly goal?: number | null;
  readonly deadline?: Date | null;
}

/** Edits a call-to-action; once published, the edit is chained and sent as an Update. */
export async function editAction(deps: ActionDeps, unionId: string, actionId: string, by: By, edit: ActionEdit): Promise<Action> {
  const action = await deps.db.transaction().execute(async (trx) => {
    // The union lock also keeps the hash chain linear when entries are appended at once.
    await lockUnion(trx, unionId);
    await requireOfficer(trx, unionId, by);
    const cur = await getActionIn(trx, unionId, actionId);
    if (!cur) throw new ActionError("not_found", "no such call-to-action");
    if (cur.state === "retracted") throw new ActionError("conflict", "a retracted call-to-action cannot be edited");
    const now = Date.now();
    const v = validate({
      title: edit.title ?? cur.title,
      text: edit.text ?? cur.bodyMd,
      kind: edit.kind ?? cur.kind,
      link: edit.link === undefined ? cur.link : edit.link,
      goal: edit.goal === undefined ? cur.goal : edit.goal,
      // An unchanged deadline may already be past; only a new one must be in the future.
      deadline: edit.deadline === undefined ? null : edit.deadline,
    }, now);
    await trx.updateTable("actions").set({
      ...contentColumns(v),
      deadline: edit.deadline === undefined ? ms(cur.deadline) : ms(v.deadline),
      updated_at: cur.state === "published" ? now : null,
    }).where("id", "=", cur.id).execute();
    if (cur.state === "published") {
      await chain(trx, unionId, actionId, "update", now);
      await deps.outbox.add(trx, { kind: "action.update", unionId, actionId });
    }
    return (await getActionIn(trx, unionId, actionId))!;
  });
  return action;
}

/** Withdraws a call-to-action: a queued one is simply dropped; a published one is chained and deleted remotely. */
export async function retractAction(deps: ActionDeps, unionId: string, actionId: string, by: By): Promise<Action | undefined> {
  return deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    await requireOfficer(trx, unionId, by);
    const cur = await getActionIn(trx, unionId, actionId);
    if (!cur) throw new ActionError("not_found", "no such call-to-action");
    if (cur.state === "queued") {
      await trx.deleteFrom("actions").where("id", "=", cur.id).execute();
      return undefined;
    }
    if (cur.state === "retracted") return cur;
    const now = Date.now();
    await trx.updateTable("actions").set({ state: "retracted", retracted_at: now }).where("id", "=", cur.id).execute();
    await chain(trx, unionId, actionId, "retract", now);
    await deps.outbox.add(trx, { kind: "action.retract", unionId, actionId });
    return (await getActionIn(trx, unionId, actionId))!;
  });
}

async function chain(trx: Kysely<DB>, unionId: string, actionId: string, event: ChainEvent, now: number): Promise<void> {
  const a = (await getActionIn(trx, unionId, actionId))!;
  const payload: ChainPayload = {
    actionId: a.id,
    seq: a.seq!,
    title: a.title,
    bodyMd: a.bodyMd,
    kind: a.kind,
    link: a.link,
    goal: a.goal,
    deadline: a.deadline?.toISOString() ?? null,
    at: new Date(now).toISOString(),
  };
  await appendEntry(trx, unionId, actionId, event, payload, now);
}

async function getActionIn(db: Kysely<DB>, unionId: string, id: string): Promise<Action | undefined> {
  const r = await db.selectFrom("actions").selectAll().where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  return r && toAction(r);
}

export const getAction = getActionIn;

/** A call-to-action by its number in the union (`3` or `#3`, as lists show it) or by its id. */
export async function findAction(db: Kysely<DB>, unionId: string, ref: string): Promise<Action | undefined> {
  const number = /^#?(\d{1,15})$/.exec(ref.trim());
  if (number) {
    const r = await db.selectFrom("actions").selectAll().where("union_id", "=", unionId).where("seq", "=", Number(number[1])).executeTakeFirst();
    return r && toAction(r);
  }
  return getActionIn(db, unionId, ref.trim().toLowerCase());
}

export async function listActions(db: Kysely<DB>, unionId: string, opts: { states?: readonly ActionState[]; limit?: number } = {}): Promise<Action[]> {
  const rows = await db.selectFrom("actions").selectAll().where("union_id", "=", unionId)
    .$if(opts.states !== undefined, (q) => q.where("state", "in", opts.states!))
    .orderBy(sql`coalesce(published_at, created_at)`, "desc")
    .limit(opts.limit ?? 500)
    .execute();
  return rows.map(toAction);
}

/** The latest published (not retracted) action: the one pinned in the union's featured collection. */
export async function currentAction(db: Kysely<DB>, unionId: string): Promise<Action | undefined> {
  const r = await db.selectFrom("actions").selectAll().where("union_id", "=", unionId).where("state", "=", "published")
    .orderBy("seq", "desc").limit(1).executeTakeFirst();
  return r && toAction(r);
}

/** The hash this action's publication links to, and its own (latest) hash, for display. */
export async function hashesOf(db: Kysely<DB>, actionId: string): Promise<{ prevHash: string; hash: string } | undefined> {
  const entries = await entriesOfAction(db, actionId);
  const first = entries[0];
  const last = entries[entries.length - 1];
  if (!first || !last) return undefined;
  return { prevHash: first.prevHash ?? GENESIS, hash: last.hash };
}

export { MemberError };

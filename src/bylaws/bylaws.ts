import type { Kysely, Selectable } from "kysely";
import type { BylawsVersionsTable, DB, UnionsTable } from "../db/schema.ts";
import type { EventBus } from "../events.ts";
import { getMember, lockUnion } from "../members/members.ts";
import { type BylawParams, BylawsError, changedKeys, DEFAULT_PARAMS, type ParamKey, paramsFromJson, paramsToJson, parsePatch } from "./params.ts";

// A union's bylaws: Markdown text plus typed parameters, every version kept.
// The highest version is in force. Only two things make a new version: a
// passed proposal (applied by src/bylaws' proposals, inside the transaction
// that closes it) and the operator's override with a reason. A member, even
// the leader, cannot change them directly.

export type BylawsSource =
  | { readonly kind: "founding" }
  | { readonly kind: "migration" }
  | { readonly kind: "proposal"; readonly proposalId: string }
  | { readonly kind: "operator"; readonly reason: string };

export interface Bylaws {
  readonly unionId: string;
  readonly version: number;
  readonly text: string;
  readonly params: BylawParams;
  readonly source: BylawsSource;
  readonly createdAt: Date;
}

/**
 * Who asks to change the bylaws. The operator (CLI) must give a reason, which
 * the history shows; a member is always refused: members change bylaws by
 * voting on an amendment.
 */
export type BylawsBy = { readonly kind: "operator"; readonly reason: string } | { readonly kind: "member"; readonly memberId: string };

export interface BylawsChange {
  readonly text?: string;
  /** Values in any accepted form (typed, JSON, or strings from a form); validated whole before anything is written. */
  readonly params?: Readonly<Record<string, unknown>>;
}

export interface BylawsDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
}

export const MAX_TEXT = 100_000;

export function defaultBylawsText(unionName: string, purpose: string): string {
  return [
    `# Bylaws of ${unionName}`,
    "",
    purpose,
    "",
    "1. Members join as the parameters below say, and each member's sponsor is recorded in the union's tree.",
    "2. The parameters below are rules the server enforces. They change only when members pass an amendment by vote, or when the server's operator overrides them in an emergency; every change is kept in the history below.",
    "3. Members allowed to propose may open proposals; each is a poll members answer from their fediverse account or on the web.",
  ].join("\n");
}

function toBylaws(r: Selectable<BylawsVersionsTable>): Bylaws {
  const source: BylawsSource = r.source === "proposal" ? { kind: "proposal", proposalId: r.proposal_id ?? "" }
    : r.source === "operator" ? { kind: "operator", reason: r.reason ?? "" }
    : r.source === "migration" ? { kind: "migration" } : { kind: "founding" };
  return {
    unionId: r.union_id,
    version: Number(r.version),
    text: r.text_md,
    params: paramsFromJson(r.params),
    source,
    createdAt: new Date(Number(r.created_at)),
  };
}

/** The version in force. Every union has one from its creation (or from migration 0011). */
export async function readBylaws(db: Kysely<DB>, unionId: string): Promise<Bylaws> {
  const row = await db.selectFrom("bylaws_versions").selectAll().where("union_id", "=", unionId)
    .orderBy("version", "desc").limit(1).executeTakeFirst();
  if (!row) throw new BylawsError("not_found", "this union has no bylaws");
  return toBylaws(row);
}

export async function bylawsVersion(db: Kysely<DB>, unionId: string, version: number): Promise<Bylaws | undefined> {
  const row = await db.selectFrom("bylaws_versions").selectAll().where("union_id", "=", unionId).where("version", "=", version).executeTakeFirst();
  return row && toBylaws(row);
}

/** Every version, newest first. */
export async function bylawsHistory(db: Kysely<DB>, unionId: string): Promise<Bylaws[]> {
  const rows = await db.selectFrom("bylaws_versions").selectAll().where("union_id", "=", unionId).orderBy("version", "desc").execute();
  return rows.map(toBylaws);
}

/** Validates a change against the version in force: the full parameter set it would produce, and whether anything differs. */
export function applyChange(current: Bylaws, change: BylawsChange): { text: string; params: BylawParams; changed: ParamKey[]; textChanged: boolean } {
  const patch = parsePatch(change.params ?? {});
  const params = { ...current.params, ...patch } as BylawParams;
  let text = current.text;
  if (change.text !== undefined) {
    text = change.text.replace(/\r\n/g, "\n").trim();
    if (text.length > MAX_TEXT) throw new BylawsError("invalid", `bylaws text must be at most ${MAX_TEXT} characters`);
  }
  return { text, params, changed: changedKeys(current.params, params), textChanged: text !== current.text };
}

/**
 * The operator's override (CLI), recorded in the history with its reason. A
 * member is refused: the bylaws change only by a passed amendment.
 */
export async function changeBylaws(deps: BylawsDeps, unionId: string, by: BylawsBy, change: BylawsChange): Promise<Bylaws> {
  if (by.kind === "member") {
    const m = await getMember(deps.db, unionId, by.memberId);
    throw new BylawsError("forbidden", `${m?.role === "leader" ? "the leader" : m?.role === "officer" ? "officers" : "members"} cannot change the bylaws directly: open an amendment proposal and let the members vote`);
  }
  const reason = by.reason.trim();
  if (reason.length < 3 || reason.length > 1000) throw new BylawsError("invalid", "an operator override needs a reason (3-1000 characters), recorded in the bylaws history");
  const written = await deps.db.transaction().execute((trx) => writeVersionIn(trx, unionId, { kind: "operator", reason }, change));
  deps.events.emit("bylaws.changed", { unionId, version: written.version, source: "operator" });
  return written;
}

/**
 * Writes the next version inside the caller's transaction. Callers are the
 * operator override above, union creation (founding) and a passed amendment
 * (the proposal module, which has checked the vote). Refuses a change that
 * changes nothing.
 */
export async function writeVersionIn(trx: Kysely<DB>, unionId: string, source: BylawsSource, change: BylawsChange, now = Date.now()): Promise<Bylaws> {
  await lockUnion(trx, unionId);
  const current = await trx.selectFrom("bylaws_versions").selectAll().where("union_id", "=", unionId)
    .orderBy("version", "desc").limit(1).executeTakeFirst();
  let version = 1;
  let text: string;
  let params: BylawParams;
  if (current) {
    const next = applyChange(toBylaws(current), change);
    if (next.changed.length === 0 && !next.textChanged) throw new BylawsError("invalid", "this change would leave the bylaws as they are");
    ({ text, params } = next);
    version = Number(current.version) + 1;
  } else {
    params = { ...DEFAULT_PARAMS, ...parsePatch(change.params ?? {}) } as BylawParams;
    text = (change.text ?? "").trim();
  }
  await trx.insertInto("bylaws_versions").values({
    union_id: unionId,
    version,
    text_md: text,
    params: paramsToJson(params),
    source: source.kind,
    proposal_id: source.kind === "proposal" ? source.proposalId : null,
    reason: source.kind === "operator" ? source.reason : null,
    created_at: now,
  }).execute();
  await trx.updateTable("unions").set(projection(params)).where("id", "=", unionId).execute();
  return { unionId, version, text, params, source, createdAt: new Date(now) };
}

/** The union columns that mirror parameters in force, read with the union row on hot paths (inbox, scheduler). */
function projection(p: BylawParams): Partial<UnionsTable> {
  return {
    join_policy: p.joinPolicy,
    manually_approves_followers: p.joinPolicy === "open" ? 0 : 1,
    member_invite_limit: p.memberInviteLimit,
    members_visibility: p.membersVisibility,
    actions_visibility: p.actionsVisibility,
    commitment_words: p.commitmentWords.join(","),
    time_zone: p.timeZone,
    publish_time: p.publishTime,
  };
}

/** How a version came about, in words (history, CLI). */
export function describeSource(s: BylawsSource): string {
  switch (s.kind) {
    case "founding": return "founding bylaws";
    case "migration": return "settings in force when bylaws were introduced";
    case "proposal": return `passed proposal ${s.proposalId}`;
    case "operator": return `operator override: ${s.reason}`;
  }
}

/** A version as plain JSON (API, CLI --json): amounts as decimal strings. */
export function bylawsJson(b: Bylaws) {
  return {
    version: b.version,
    text: b.text,
    params: JSON.parse(paramsToJson(b.params)) as Record<string, unknown>,
    source: b.source,
    changedAt: b.createdAt.toISOString(),
  };
}

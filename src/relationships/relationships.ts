import { randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import type { DB, UnionRelationshipsTable } from "../db/schema.ts";
import { type By, lockUnion, requireOfficer } from "../members/members.ts";
import { readBylaws } from "../bylaws/bylaws.ts";
import { getProposal } from "../bylaws/proposals.ts";
import { DomainError } from "../domain-error.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { isBlockedUrl } from "../servers/blocklist.ts";

/**
 * Union-to-union relationships. Other unions are never members (DESIGN.md):
 * a Follow from a Group is an offer of a relationship, which the receiving
 * union's officers accept or reject, and either side ends.
 *
 * `kind` is what the peer is to this union: an `ally`, this union's
 * `parent`, or one of its `chapter`s.
 */
export type RelationshipKind = "ally" | "parent" | "chapter";
export const RELATIONSHIP_KINDS: readonly RelationshipKind[] = ["ally", "parent", "chapter"];
export type Direction = "outbound" | "inbound";
export type RelationshipState = "offered" | "received" | "active" | "rejected" | "ended";
/** Whose calls-to-action are relayed, seen from this union: `theirs` means we relay the peer's to our members. */
export type Relay = "both" | "theirs" | "ours" | "none";
export const RELAYS: readonly Relay[] = ["both", "theirs", "ours", "none"];

/** States in which a relationship is still alive: a second one with the same peer is refused. */
const OPEN: readonly RelationshipState[] = ["offered", "received", "active"];

export interface Relationship {
  readonly id: string;
  readonly unionId: string;
  readonly peerActorId: string;
  readonly peerHandle: string | null;
  readonly kind: RelationshipKind;
  readonly direction: Direction;
  readonly state: RelationshipState;
  readonly relay: Relay;
  readonly followId: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export type RelationshipDeps = DomainDeps;

export class RelationshipError extends DomainError<"invalid" | "not_found" | "conflict" | "forbidden"> {
  override name = "RelationshipError";
}

function toRelationship(r: Selectable<UnionRelationshipsTable>): Relationship {
  return {
    id: r.id,
    unionId: r.union_id,
    peerActorId: r.peer_actor_id,
    peerHandle: r.peer_handle,
    kind: r.kind as RelationshipKind,
    direction: r.direction as Direction,
    state: r.state as RelationshipState,
    relay: r.relay as Relay,
    followId: r.follow_id,
    createdAt: new Date(Number(r.created_at)),
    updatedAt: new Date(Number(r.updated_at)),
  };
}

/** The same relationship seen from the other side. */
export function mirrorKind(kind: RelationshipKind): RelationshipKind {
  return kind === "parent" ? "chapter" : kind === "chapter" ? "parent" : "ally";
}
export function mirrorRelay(relay: Relay): Relay {
  return relay === "theirs" ? "ours" : relay === "ours" ? "theirs" : relay;
}

/**
 * Who may commit the union to a relationship, per its bylaws: the officers
 * (the default), or, under `allianceRatification: member_vote`, the members
 * by a passed proposal that an officer then carries out. The proposal must
 * be a resolution that names this very peer (its handle or actor URL, in the
 * title or text), and it ratifies one step only: a vote to ally with B is
 * not a vote to ally with C, nor a second time with B. The operator's CLI is
 * an explicit override, unless it names the proposal (then it is checked).
 */
async function requireRatification(trx: Kysely<DB>, unionId: string, by: By, proposalId: string | undefined, peer: { actorId: string; handle: string | null }): Promise<string | null> {
  await requireOfficer(trx, unionId, by);
  // A proposal named is always checked and recorded, the operator's too; without one the operator overrides.
  if (by.kind === "operator" && !proposalId) return null;
  const rules = await readBylaws(trx, unionId);
  if (rules.params.allianceRatification !== "member_vote" && !proposalId) return null;
  if (!proposalId) throw new RelationshipError("forbidden", "this union's bylaws say alliances are ratified by member vote: pass the number of the proposal that passed");
  const proposal = await getProposal(trx, unionId, proposalId);
  if (!proposal) throw new RelationshipError("not_found", `no proposal ${proposalId} in this union`);
  if (proposal.state !== "passed") throw new RelationshipError("forbidden", `proposal ${proposalId} is ${proposal.state}, not passed`);
  if (proposal.kind !== "resolution") throw new RelationshipError("forbidden", `proposal ${proposal.number} is an ${proposal.kind}, not a resolution about this union`);
  if (!namesPeer(`${proposal.title}\n${proposal.text}`, peer)) {
    throw new RelationshipError("forbidden", `proposal ${proposal.number} does not name ${peer.handle ?? peer.actorId}: the members voted on something else`);
  }
  const used = await trx.selectFrom("relationship_events").select("relationship_id").where("union_id", "=", unionId).where("proposal_id", "=", proposal.id).executeTakeFirst();
  if (used) throw new RelationshipError("conflict", `proposal ${proposal.number} already ratified a relationship; each vote ratifies one`);
  return proposal.id;
}

/** Whether a proposal's words name the peer: its actor URL, or its full handle (`@slug@host`, any case). */
export function namesPeer(words: string, peer: { actorId: string; handle: string | null }): boolean {
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  // Not followed by more of a URL or handle: /u/b must not match /u/bakers.
  const whole = (s: string) => new RegExp(`(^|[^\\w@/.-])${escape(s)}(?![\\w/.-]*[\\w/-])`, "i").test(words);
  if (whole(peer.actorId)) return true;
  const handle = peer.handle?.replace(/^@?/, "@");
  return !!handle && whole(handle);
}

function byText(by: By | string): string {
  if (typeof by === "string") return by;
  return by.kind === "operator" ? "operator" : `member:${by.memberId}`;
}

async function logEvent(trx: Kysely<DB>, rel: { id: string; unionId: string }, event: string, state: RelationshipState, by: By | string, proposalId: string | null = null): Promise<void> {
  await trx.insertInto("relationship_events").values({ relationship_id: rel.id, union_id: rel.unionId, event, state, by: byText(by), at: Date.now(), proposal_id: proposalId }).execute();
}

async function openWith(trx: Kysely<DB>, unionId: string, peerActorId: string): Promise<Relationship | undefined> {
  const r = await trx.selectFrom("union_relationships").selectAll().where("union_id", "=", unionId)
    .where("peer_actor_id", "=", peerActorId).where("state", "in", OPEN).executeTakeFirst();
  return r ? toRelationship(r) : undefined;
}

export interface Proposal {
  readonly peerActorId: string;
  readonly peerHandle: string | null;
  /** What the peer would be to us: an ally, or our parent (we ask to be its chapter). */
  readonly kind: "ally" | "parent";
  readonly relay: Relay;
  /** This union's own id for the Follow, made from the relationship's id (a URL on this server). */
  readonly followIdFor: (relationshipId: string) => string;
  /** This union's own actor id: a union cannot ally with itself. */
  readonly selfActorId: string;
  /** The passed proposal that ratified it, when the bylaws ask for a member vote. */
  readonly proposalId?: string;
}

/**
 * An officer proposes a relationship; the Follow carrying the offer leaves
 * in the same transaction. (Ratification by member vote, when the bylaws
 * ask for it, happens before this is called.)
 */
export async function proposeRelationship(deps: RelationshipDeps, unionId: string, by: By, p: Proposal): Promise<Relationship> {
  if (!RELAYS.includes(p.relay)) throw new RelationshipError("invalid", `relay must be one of ${RELAYS.join(", ")}`);
  if (p.peerActorId === p.selfActorId) throw new RelationshipError("invalid", "a union cannot ally with itself");
  if (await isBlockedUrl(deps.db, p.peerActorId)) throw new RelationshipError("forbidden", `the server of ${p.peerHandle ?? p.peerActorId} is blocked here`);
  return deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const ratifiedBy = await requireRatification(trx, unionId, by, p.proposalId, { actorId: p.peerActorId, handle: p.peerHandle });
    const existing = await openWith(trx, unionId, p.peerActorId);
    if (existing) throw new RelationshipError("conflict", `there is already a relationship with ${p.peerHandle ?? p.peerActorId} (${existing.kind}, ${existing.state})`);
    if (p.kind === "parent") {
      const parent = await trx.selectFrom("union_relationships").select("id").where("union_id", "=", unionId).where("kind", "=", "parent").where("state", "in", OPEN).executeTakeFirst();
      if (parent) throw new RelationshipError("conflict", "this union already has a parent union");
    }
    const id = randomUUID();
    const now = Date.now();
    const row = {
      id, union_id: unionId, peer_actor_id: p.peerActorId, peer_handle: p.peerHandle, kind: p.kind, direction: "outbound",
      state: "offered", relay: p.relay, follow_id: p.followIdFor(id), created_at: now, updated_at: now,
    } as const;
    await trx.insertInto("union_relationships").values(row).execute();
    const rel = toRelationship(row);
    await logEvent(trx, rel, "proposed", "offered", by, ratifiedBy);
    await deps.outbox.add(trx, { kind: "relationship.follow", unionId, relationshipId: id });
    return rel;
  });
}

export interface Offer {
  readonly peerActorId: string;
  readonly peerHandle: string | null;
  readonly followId: string;
  /** What the peer would be to us (already mirrored from the peer's words). */
  readonly kind: RelationshipKind;
  /** Seen from us (already mirrored). */
  readonly relay: Relay;
}

export type OfferOutcome = "received" | "duplicate" | "conflict" | "blocked";

/**
 * Another union's Follow carrying an offer. Held for this union's officers;
 * the same Follow delivered twice is one offer.
 */
export async function receiveOffer(deps: RelationshipDeps, unionId: string, o: Offer): Promise<OfferOutcome> {
  if (await isBlockedUrl(deps.db, o.peerActorId)) return "blocked";
  const outcome = await deps.db.transaction().execute(async (trx): Promise<OfferOutcome> => {
    await lockUnion(trx, unionId);
    const same = await trx.selectFrom("union_relationships").select("id").where("union_id", "=", unionId).where("follow_id", "=", o.followId).executeTakeFirst();
    if (same) return "duplicate";
    if (await openWith(trx, unionId, o.peerActorId)) return "conflict";
    const id = randomUUID();
    const now = Date.now();
    const row = {
      id, union_id: unionId, peer_actor_id: o.peerActorId, peer_handle: o.peerHandle, kind: o.kind, direction: "inbound",
      state: "received", relay: o.relay, follow_id: o.followId, created_at: now, updated_at: now,
    } as const;
    await trx.insertInto("union_relationships").values(row).execute();
    await logEvent(trx, toRelationship(row), "received", "received", o.peerActorId);
    return "received";
  });
  if (outcome === "received") deps.events.emit("relationship.changed", { unionId, peerActorId: o.peerActorId, state: "received" });
  return outcome;
}

/** This union's officers accept or reject an offer they received. */
export async function answerOffer(deps: RelationshipDeps, unionId: string, relationshipId: string, by: By, accept: boolean, proposalId?: string): Promise<Relationship> {
  const rel = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const rel = await getRelationship(trx, unionId, relationshipId);
    // Declining needs no vote; committing the union does.
    const ratifiedBy = accept && rel ? await requireRatification(trx, unionId, by, proposalId, { actorId: rel.peerActorId, handle: rel.peerHandle }) : null;
    if (!accept || !rel) await requireOfficer(trx, unionId, by);
    if (!rel) throw new RelationshipError("not_found", "no such relationship");
    if (rel.state !== "received") throw new RelationshipError("conflict", `this relationship is ${rel.state}, not an offer waiting for an answer`);
    if (accept && await isBlockedUrl(trx, rel.peerActorId)) throw new RelationshipError("forbidden", `the server of ${rel.peerHandle ?? rel.peerActorId} is blocked here`);
    const state: RelationshipState = accept ? "active" : "rejected";
    if (accept && rel.kind === "parent") {
      const parent = await trx.selectFrom("union_relationships").select("id").where("union_id", "=", unionId).where("kind", "=", "parent").where("state", "=", "active").executeTakeFirst();
      if (parent) throw new RelationshipError("conflict", "this union already has a parent union");
    }
    await setState(trx, rel, state, accept ? "accepted" : "rejected", by, ratifiedBy);
    await deps.outbox.add(trx, { kind: accept ? "relationship.accept" : "relationship.reject", unionId, relationshipId });
    if (accept) await deps.outbox.add(trx, { kind: "relationship.notice", unionId, relationshipId, event: "started" });
    return { ...rel, state };
  });
  deps.events.emit("relationship.changed", { unionId, peerActorId: rel.peerActorId, state: rel.state });
  return rel;
}

export type AnswerOutcome = "applied" | "duplicate" | "unknown";

/**
 * The peer's Accept or Reject of a Follow this union sent. Only an offer we
 * made, to that very peer, and still waiting, is changed: an Accept of a
 * Follow never sent changes nothing.
 */
export async function offerAnswered(deps: RelationshipDeps, unionId: string, followId: string, peerActorId: string, accepted: boolean): Promise<AnswerOutcome> {
  const out = await deps.db.transaction().execute(async (trx): Promise<AnswerOutcome> => {
    await lockUnion(trx, unionId);
    const r = await trx.selectFrom("union_relationships").selectAll().where("union_id", "=", unionId).where("follow_id", "=", followId)
      .where("direction", "=", "outbound").where("peer_actor_id", "=", peerActorId).executeTakeFirst();
    if (!r) return "unknown";
    const rel = toRelationship(r);
    const state: RelationshipState = accepted ? "active" : "rejected";
    if (rel.state === state) return "duplicate";
    if (rel.state !== "offered") return "unknown";
    await setState(trx, rel, state, accepted ? "accepted" : "rejected", peerActorId);
    if (accepted) await deps.outbox.add(trx, { kind: "relationship.notice", unionId, relationshipId: rel.id, event: "started" });
    return "applied";
  });
  if (out === "applied") deps.events.emit("relationship.changed", { unionId, peerActorId, state: accepted ? "active" : "rejected" });
  return out;
}

/** An officer ends a relationship (or withdraws an offer); the peer is sent an Undo and members are told. */
export async function endRelationship(deps: RelationshipDeps, unionId: string, relationshipId: string, by: By): Promise<Relationship> {
  const rel = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    await requireOfficer(trx, unionId, by);
    const rel = await getRelationship(trx, unionId, relationshipId);
    if (!rel) throw new RelationshipError("not_found", "no such relationship");
    if (!OPEN.includes(rel.state)) throw new RelationshipError("conflict", `this relationship is already ${rel.state}`);
    await setState(trx, rel, "ended", "ended", by);
    // An offer we received and never answered is declined, not undone.
    await deps.outbox.add(trx, { kind: rel.state === "received" ? "relationship.reject" : "relationship.undo", unionId, relationshipId });
    if (rel.state === "active") await deps.outbox.add(trx, { kind: "relationship.notice", unionId, relationshipId, event: "ended" });
    return { ...rel, state: "ended" as const };
  });
  deps.events.emit("relationship.changed", { unionId, peerActorId: rel.peerActorId, state: "ended" });
  return rel;
}

/**
 * The peer's Undo. It must come from the peer itself and name the Follow
 * that made the relationship: a stranger's Undo changes nothing.
 */
export async function peerEnded(deps: RelationshipDeps, unionId: string, followId: string, peerActorId: string): Promise<AnswerOutcome> {
  const out = await deps.db.transaction().execute(async (trx): Promise<AnswerOutcome> => {
    await lockUnion(trx, unionId);
    const r = await trx.selectFrom("union_relationships").selectAll().where("union_id", "=", unionId).where("follow_id", "=", followId)
      .where("peer_actor_id", "=", peerActorId).executeTakeFirst();
    if (!r) return "unknown";
    const rel = toRelationship(r);
    if (!OPEN.includes(rel.state)) return "duplicate";
    await setState(trx, rel, "ended", "ended", peerActorId);
    if (rel.state === "active") await deps.outbox.add(trx, { kind: "relationship.notice", unionId, relationshipId: rel.id, event: "ended" });
    return "applied";
  });
  if (out === "applied") deps.events.emit("relationship.changed", { unionId, peerActorId, state: "ended" });
  return out;
}

async function setState(trx: Kysely<DB>, rel: Relationship, state: RelationshipState, event: string, by: By | string, proposalId: string | null = null): Promise<void> {
  const r = await trx.updateTable("union_relationships").set({ state, updated_at: Date.now() })
    .where("id", "=", rel.id).where("state", "=", rel.state).executeTakeFirst();
  if (Number(r.numUpdatedRows) !== 1) throw new RelationshipError("conflict", "the relationship changed meanwhile; try again");
  await logEvent(trx, rel, event, state, by, proposalId);
}

export async function getRelationship(db: Kysely<DB>, unionId: string, id: string): Promise<Relationship | undefined> {
  const r = await db.selectFrom("union_relationships").selectAll().where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  return r ? toRelationship(r) : undefined;
}

export async function findRelationshipWith(db: Kysely<DB>, unionId: string, peerActorId: string): Promise<Relationship | undefined> {
  return openWith(db, unionId, peerActorId);
}

export async function listRelationships(db: Kysely<DB>, unionId: string, opts: { states?: readonly RelationshipState[]; kinds?: readonly RelationshipKind[] } = {}): Promise<Relationship[]> {
  const rows = await db.selectFrom("union_relationships").selectAll().where("union_id", "=", unionId)
    .$if(opts.states !== undefined, (q) => q.where("state", "in", opts.states!))
    .$if(opts.kinds !== undefined, (q) => q.where("kind", "in", opts.kinds!))
    .orderBy("created_at").orderBy("id").execute();
  return rows.map(toRelationship);
}

export interface RelationshipEvent {
  readonly event: string;
  /** The passed proposal that ratified this step, if the bylaws asked for a vote. */
  readonly proposalId: string | null;
  readonly state: RelationshipState;
  readonly by: string | null;
  readonly at: Date;
}

export async function relationshipHistory(db: Kysely<DB>, unionId: string, relationshipId: string): Promise<RelationshipEvent[]> {
  const rows = await db.selectFrom("relationship_events").selectAll().where("union_id", "=", unionId).where("relationship_id", "=", relationshipId).orderBy("id").execute();
  return rows.map((r) => ({ event: r.event, proposalId: r.proposal_id, state: r.state as RelationshipState, by: r.by, at: new Date(Number(r.at)) }));
}

/** Whether this union relays the peer's calls-to-action to its members now. */
export function relaysTheirs(rel: Relationship): boolean {
  if (rel.state !== "active") return false;
  // A parent's calls-to-action always cascade to its chapters.
  if (rel.kind === "parent") return true;
  return rel.kind === "ally" && (rel.relay === "both" || rel.relay === "theirs");
}

/** Whether the peer relays this union's calls-to-action, so they must be sent to it. */
export function relaysOurs(rel: Relationship): boolean {
  if (rel.state !== "active") return false;
  if (rel.kind === "chapter") return true;
  return rel.kind === "ally" && (rel.relay === "both" || rel.relay === "ours");
}

/** The active relationships a union shows publicly: its parent, allies and chapters. */
export async function unionLinks(db: Kysely<DB>, unionId: string): Promise<Record<"parent" | "allies" | "chapters", { actorId: string; handle: string | null }[]>> {
  const rels = await listRelationships(db, unionId, { states: ["active"] });
  const of = (kind: RelationshipKind) => rels.filter((r) => r.kind === kind).map((r) => ({ actorId: r.peerActorId, handle: r.peerHandle }));
  return { parent: of("parent"), allies: of("ally"), chapters: of("chapter") };
}

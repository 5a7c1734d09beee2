import mittModule, { type Emitter } from "mitt";

// mitt's typings describe a CommonJS module, but Node loads its ESM build,
// whose default export is the factory itself.
const mitt = mittModule as unknown as typeof mittModule.default;

/**
 * Everything the domain announces. In-process notifications only: work that
 * must not be lost is committed to the database queue, never carried by mitt.
 */
export type DomainEvents = {
  "union.created": { unionId: string; slug: string };
  "activity.received": { activityId: string; type: string; actor: string; unionId: string | null };
  "member.joined": { unionId: string; memberId: string; sponsorId: string | null; via: "invite" | "approval" | "open" | "leader" };
  "member.pending": { unionId: string; memberId: string };
  "member.left": { unionId: string; memberId: string; state: string; reason: string | null; recruitsMoved: number };
  "member.rejected": { unionId: string; memberId: string };
  "member.moved": { unionId: string; memberId: string; sponsorId: string };
  "member.migrated": { unionId: string; memberId: string; from: string; to: string };
  "action.published": { unionId: string; actionId: string };
  "action.response": { unionId: string; actionId: string; memberId: string; kind: string };
  "relationship.changed": { unionId: string; peerActorId: string; state: string };
  "bylaws.changed": { unionId: string; version: number; source: "operator" | "proposal" };
  "proposal.opened": { unionId: string; proposalId: string };
  "proposal.vote": { unionId: string; proposalId: string; memberId: string };
  "proposal.closed": { unionId: string; proposalId: string; state: "passed" | "failed" };
  "officer.changed": { unionId: string; memberId: string; role: string; portfolio: string | null };
  /** A member's dues standing changed (recorded in standing_changes; `from` is null the first time it is computed). */
  "member.standing": { unionId: string; memberId: string; from: "good" | "grace" | "lapsed" | null; to: "good" | "grace" | "lapsed"; reason: string };
};

export type EventBus = Emitter<DomainEvents>;

export function createEventBus(): EventBus {
  return mitt<DomainEvents>();
}

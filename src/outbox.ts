import type { Kysely } from "kysely";
import type { CachedActor } from "./actors/remote-actors.ts";
import type { WriteBatch } from "./db/batch.ts";
import type { DB } from "./db/schema.ts";
import type { Member } from "./members/members.ts";
import type { Union } from "./unions/unions.ts";

/**
 * Work a domain change causes outside this server, described in domain terms.
 * federation/ turns each intent into activities; the domain never builds one.
 */
export type OutboxIntent =
  | { readonly kind: "follow.accept"; readonly unionId: string; readonly memberId: string }
  | { readonly kind: "follow.reject"; readonly unionId: string; readonly memberId: string }
  | { readonly kind: "member.welcome"; readonly unionId: string; readonly memberId: string; readonly inviteCode: string | null }
  /** A member admitted on their Follow: the Accept, then the welcome (the two above in one intent). */
  | { readonly kind: "member.join"; readonly unionId: string; readonly memberId: string; readonly inviteCode: string | null }
  | { readonly kind: "action.publish"; readonly unionId: string; readonly actionId: string }
  | { readonly kind: "action.update"; readonly unionId: string; readonly actionId: string }
  | { readonly kind: "action.retract"; readonly unionId: string; readonly actionId: string }
  | { readonly kind: "action.progress"; readonly unionId: string; readonly actionId: string; readonly reason: "goal" | "deadline" }
  | { readonly kind: "relay"; readonly unionId: string; readonly noteId: string; readonly createId: string | null; readonly cascade?: boolean }
  | { readonly kind: "relationship.follow" | "relationship.accept" | "relationship.reject" | "relationship.undo"; readonly unionId: string; readonly relationshipId: string }
  | { readonly kind: "relationship.notice"; readonly unionId: string; readonly relationshipId: string; readonly event: "started" | "ended" }
  /** This union's totals for a call it relayed, reported to the union whose call it is. */
  | { readonly kind: "relationship.tally"; readonly unionId: string; readonly noteId: string }
  /** This chapter's totals (and its subtree's), reported to its parent. */
  | { readonly kind: "relationship.report"; readonly unionId: string }
  | { readonly kind: "proposal.publish"; readonly unionId: string; readonly proposalId: string }
  | { readonly kind: "proposal.closed"; readonly unionId: string; readonly proposalId: string }
  /** The running tally of an open vote, sent once for the batch window ending at `dueAt` (ms). */
  | { readonly kind: "proposal.tally"; readonly unionId: string; readonly proposalId: string; readonly dueAt: number }
  | { readonly kind: "badge.sync"; readonly unionId: string; readonly memberId: string }
  | { readonly kind: "featured.request"; readonly unionId: string; readonly itemId: string }
  /** An item of the allies collection gained or lost consent: an `Add` or `Remove` to the union's followers (FEP-7aa9). */
  | { readonly kind: "featured.add"; readonly unionId: string; readonly itemId: string }
  | { readonly kind: "featured.remove"; readonly unionId: string; readonly itemId: string }
  | { readonly kind: "featured.answer" | "featured.withdraw"; readonly unionId: string; readonly stampId: string }
  | { readonly kind: "treasury.transfer"; readonly unionId: string; readonly transferId: number }
  /** A new union's treasury (dues mint, multisig authority, token account), made by the ledger lane. */
  | { readonly kind: "treasury.create"; readonly unionId: string }
  /** A passed spend proposal, paid by one treasury transfer (or refused with its reason) by the ledger lane. */
  | { readonly kind: "treasury.spend"; readonly unionId: string; readonly proposalId: string }
  | { readonly kind: "login.link"; readonly unionId: string; readonly actorId: string; readonly url: string; readonly expiresAt: number };

/**
 * Records intents inside the caller's transaction, so a state change and the
 * deliveries it causes are committed together or not at all (DESIGN.md,
 * "Durable side effects").
 */
export interface Outbox {
  /**
   * `notBefore` (ms since the epoch) holds the intent back until then.
   * `batch`: the intent's writes are queued there (in order) instead of
   * run, and run when the caller flushes it, in the same transaction.
   * `known`: for a `member.join`, what the join's transaction read and
   * wrote already, so it is not read again.
   */
  add(trx: Kysely<DB>, intent: OutboxIntent, options?: { readonly notBefore?: number; readonly batch?: WriteBatch; readonly known?: JoinKnown }): Promise<void>;
  /**
   * A member is leaving: what was queued to welcome them (a join's Accept and
   * welcome, not yet being sent) is dropped in the same transaction.
   */
  withdrawWelcome?(trx: Kysely<DB>, unionId: string, memberId: string): Promise<void>;
}

/**
 * A join's state as its transaction left it, under the union's lock: the
 * union, the admitted member, the follower's cached account (as stored,
 * after the join's own upsert) and the version of the bylaws in force.
 */
export interface JoinKnown {
  readonly union: Union;
  readonly member: Member;
  readonly actor: CachedActor | undefined;
  /** Undefined when the union has no bylaws (the welcome then reads them, and fails, as before). */
  readonly bylawsVersion: number | undefined;
}

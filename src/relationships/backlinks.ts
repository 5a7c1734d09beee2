import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { createInviteWith, type Invite } from "../members/invites.ts";
import { type By, requireOfficer } from "../members/members.ts";
import { findRelationshipWith, RelationshipError } from "./relationships.ts";

/**
 * Cross-union backlinks. A member of an allied union sponsors someone into
 * this one: this union's officers give that member an invite of this union
 * (an "ally invite"); whoever joins with it records the sponsor's actor id
 * and home union. The recruit's place in this union's own tree is under the
 * officer who issued the invite, so the tree stays acyclic; the backlink to
 * the other union is an edge beside it, shown where the tree is shown and
 * under the same visibility rule.
 */
export interface AllySponsor {
  /** The sponsoring member's actor id (a Person on any server). */
  readonly actorId: string;
  /** The ally's Group actor id: must be an active ally of this union. */
  readonly unionActorId: string;
}

export async function createAllyInvite(deps: DomainDeps, unionId: string, by: By, sponsor: AllySponsor, opts: { maxUses?: number | null; expiresInMs?: number | null } = {}): Promise<Invite> {
  let url: URL;
  try {
    url = new URL(sponsor.actorId);
  } catch {
    throw new RelationshipError("invalid", `the sponsor must be an actor URL; got ${JSON.stringify(sponsor.actorId)}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new RelationshipError("invalid", "the sponsor must be an http(s) actor URL");
  return deps.db.transaction().execute(async (trx) => {
    await requireOfficer(trx, unionId, by);
    const rel = await findRelationshipWith(trx, unionId, sponsor.unionActorId);
    if (!rel || rel.kind !== "ally" || rel.state !== "active") {
      throw new RelationshipError("forbidden", `${sponsor.unionActorId} is not an active ally of this union: only allies' members sponsor across unions`);
    }
    const invite = await createInviteWith(trx, unionId, { by, maxUses: opts.maxUses ?? 1, expiresInMs: opts.expiresInMs ?? null });
    await trx.updateTable("invites").set({ ally_sponsor_actor_id: url.href, ally_sponsor_union: rel.peerActorId }).where("id", "=", invite.id).execute();
    return invite;
  });
}

/** Copies an ally invite's backlink onto the member who joined with it (inside the join's transaction). */
export async function recordAllySponsor(trx: Kysely<DB>, memberId: string, inviteId: string): Promise<void> {
  const inv = await trx.selectFrom("invites").select(["ally_sponsor_actor_id", "ally_sponsor_union"]).where("id", "=", inviteId).executeTakeFirst();
  if (!inv?.ally_sponsor_actor_id) return;
  await trx.updateTable("members").set({ ally_sponsor_actor_id: inv.ally_sponsor_actor_id, ally_sponsor_union: inv.ally_sponsor_union }).where("id", "=", memberId).execute();
}

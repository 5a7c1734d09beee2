import { type Kysely, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import { getMember, type Member, MemberError } from "./members.ts";
import { makeRoot } from "./tree.ts";

// Who leads a union, as members' votes decide it. The sponsor tree has one
// root and it is the leader: joins without a sponsor go under the leader, the
// leader's place outlives the leader's account, and officers move members
// anywhere below it. So a new leader takes the root (see makeRoot): the
// elected member leaves their sponsor with their whole branch, the old root
// goes under them, everyone else keeps their sponsor, and both moves are
// recorded. A recalled leader keeps their place at the root as a plain
// member until members elect a leader: the place carries no power (roles
// do), and moving the root without a successor would have to invent one.
// Meanwhile joins with no sponsor start roots of their own, as in a union
// that never had a leader; the next elected leader gathers every root under
// them. Both run inside the transaction that closes the proposal.

export interface Succession {
  readonly leader: Member;
  /** The leader before, now an officer (or a plain member when their place was unclaimed). */
  readonly previous: Member | undefined;
  /** Former roots now under the new leader. */
  readonly reparented: readonly string[];
}

/** An election for leader passed (or the operator named one to an empty place): `winnerId` leads from now, at the root of the tree. */
export async function installLeader(trx: Kysely<DB>, unionId: string, winnerId: string, now: number, rootReason = "elected_leader"): Promise<Succession> {
  const w = await getMember(trx, unionId, winnerId);
  if (!w || w.state !== "active") throw new MemberError("not_found", "the elected member is no longer an active member");
  const old = await trx.selectFrom("members").selectAll().where("union_id", "=", unionId).where("role", "=", "leader").where("role", "<>", sql.lit("member"))
    .where("state", "in", ["active", "reserved"]).where("id", "!=", w.id).executeTakeFirst();
  if (old) {
    // A sitting leader stays on as an officer; an unclaimed place (no account behind it) holds no office.
    await trx.updateTable("members").set(old.state === "active" ? { role: "officer" } : { role: "member", portfolio: null }).where("id", "=", old.id).execute();
  }
  await trx.updateTable("members").set({ role: "leader" }).where("id", "=", w.id).execute();
  await trx.updateTable("unions").set({ leader_handle: w.handle }).where("id", "=", unionId).execute();
  const reparented = await makeRoot(trx, unionId, w.id, { root: rootReason, oldRoot: "leader_succeeded" }, now);
  return { leader: (await getMember(trx, unionId, w.id))!, previous: old ? await getMember(trx, unionId, old.id) : undefined, reparented };
}

/** A recall passed: the leader or officer holds no office from now; returns false when they no longer held one. */
export async function removeFromOffice(trx: Kysely<DB>, unionId: string, memberId: string): Promise<boolean> {
  const m = await getMember(trx, unionId, memberId);
  if (!m || m.state !== "active" || (m.role !== "officer" && m.role !== "leader")) return false;
  await trx.updateTable("members").set({ role: "member", portfolio: null }).where("id", "=", m.id).execute();
  if (m.role === "leader") await trx.updateTable("unions").set({ leader_handle: null }).where("id", "=", unionId).execute();
  return true;
}

import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { canSeeMembers, type Viewer } from "../members/visibility.ts";
import type { Union } from "../unions/unions.ts";
import { bylawsVersion, readBylaws } from "./bylaws.ts";
import type { Proposal } from "./proposals.ts";

// Who voted on a proposal, for members: the audit the issue asks for ("who
// voted, not how"). Names of voters reveal membership, so the union's roster
// rule gates them like every other member list; how each voted is shown only
// when the bylaws in force when the vote opened made votes public (members
// voted under that rule, so a later amendment does not expose old ballots).

export interface VoterEntry {
  readonly memberId: string;
  readonly handle: string | null;
  /** When they first voted. */
  readonly at: Date;
  /** What they chose: only when votes are public; otherwise undefined. */
  readonly choices?: readonly string[];
}

export type VotersRead =
  | { readonly ok: true; readonly public: boolean; readonly voters: readonly VoterEntry[] }
  | { readonly ok: false; readonly refused: "not_member" | "roster_hidden" };

/**
 * The members who voted themselves (not those counted through a delegate),
 * in order of their first vote. `operator` (the CLI) sees them all; a viewer
 * must be a current member of the union who may see its member list.
 */
export async function readVoters(db: Kysely<DB>, union: Union, p: Proposal, viewer: Viewer | "operator"): Promise<VotersRead> {
  if (viewer !== "operator") {
    const member = viewer.via === "web" ? viewer.member : undefined;
    if (viewer.via === "web" && (!member || member.unionId !== union.id || member.state !== "active")) return { ok: false, refused: "not_member" };
    if (!await canSeeMembers(db, union, viewer)) return { ok: false, refused: "roster_hidden" };
  }
  const atOpening = await bylawsVersion(db, union.id, p.bylawsVersion) ?? await readBylaws(db, union.id);
  const isPublic = atOpening.params.voteVisibility === "public";
  const rows = await db.selectFrom("ballots as b").innerJoin("members as m", "m.id", "b.member_id")
    .select(["b.member_id", "m.handle", "b.option", "b.cast_at"])
    .where("b.proposal_id", "=", p.id).orderBy("b.cast_at").orderBy("b.option").execute();
  const byMember = new Map<string, { handle: string | null; at: number; options: number[] }>();
  for (const r of rows) {
    const e = byMember.get(r.member_id) ?? { handle: r.handle, at: Number(r.cast_at), options: [] };
    e.options.push(Number(r.option));
    byMember.set(r.member_id, e);
  }
  const voters = [...byMember].map(([memberId, e]) => ({
    memberId,
    handle: e.handle,
    at: new Date(e.at),
    ...(isPublic ? { choices: e.options.sort((a, b) => a - b).map((i) => p.options[i]!) } : {}),
  }));
  return { ok: true, public: isPublic, voters };
}

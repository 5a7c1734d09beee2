import { possessive } from "../../english.ts";
import type { Muster } from "../../main.ts";
import { listInvites, inviteStatus } from "../../members/invites.ts";
import { getMember, IN_TREE, listMembers, type Member, type MemberListing, type MemberState, OPERATOR, toMember } from "../../members/members.ts";
import { approveMember, rejectMember, removeMember } from "../../members/membership.ts";
import { linkWallet } from "../../treasury/badges.ts";
import { memberStanding, TreasuryError } from "../../treasury/dues.ts";
import { duesParamsFromBylaws } from "../../treasury/dues-params.ts";
import { walletOf } from "../../treasury/wallet-proof.ts";
import { moveMember, movesOf, recruitsOf, sponsorChain } from "../../members/tree.ts";
import type { Union } from "../../unions/unions.ts";
import {
  CliError,
  type Command,
  fields,
  iso,
  JSON_OPT,
  label,
  memberJson,
  out,
  parseCount,
  print,
  requireMember,
  requireUnion,
  roleText,
  shortDate,
  type SponsorRef,
  str,
  table,
  UsageError,
  withMember,
  withMuster,
} from "../command.ts";
import { inviteUrl } from "./invite.ts";

const ALL_STATES: readonly MemberState[] = ["reserved", "pending", "active", "left", "removed", "expelled", "rejected", "deleted"];
const PAGE = 5000;

async function sponsorRef(m: Muster, unionId: string, sponsorId: string | null): Promise<SponsorRef | null> {
  if (sponsorId === null) return null;
  const s = await getMember(m.database.db, unionId, sponsorId);
  return s ? { handle: s.handle, actorId: s.actorId } : { handle: null, actorId: null };
}

/** Every member in the given states, oldest first, however many there are. */
async function allMembers(m: Muster, unionId: string, states: readonly MemberState[]): Promise<MemberListing[]> {
  const all: MemberListing[] = [];
  for (let offset = 0; ; offset += PAGE) {
    const page = await listMembers(m.database.db, unionId, { states, limit: PAGE, offset });
    all.push(...page);
    if (page.length < PAGE) return all;
  }
}

async function countRecruits(m: Muster, unionId: string, memberId: string): Promise<number> {
  let n = 0;
  let after: string | undefined;
  for (;;) {
    const page = await recruitsOf(m.database.db, unionId, memberId, { limit: 1000, after });
    n += page.length;
    if (page.length < 1000) return n;
    after = page.at(-1)!.id;
  }
}

// ---- member tree ----------------------------------------------------------

interface TreeNode {
  readonly member: Member;
  /** null: not expanded (deeper than --depth, or the output budget ran out). */
  recruits: TreeNode[] | null;
  /** Members beneath this one that the output leaves out. */
  notShown: number;
}

/** The most members one tree prints, whatever --depth and --breadth allow. */
const TREE_BUDGET = 2000;

/** The tops of the tree: the leader, and anyone admitted while the union had none. */
async function roots(m: Muster, unionId: string): Promise<Member[]> {
  const rows = await m.database.db.selectFrom("members").selectAll()
    .where("union_id", "=", unionId).where("sponsor_id", "is", null).where("state", "in", IN_TREE)
    .orderBy("created_at").orderBy("id").execute();
  return rows.map(toMember).sort((a, b) => Number(b.role === "leader") - Number(a.role === "leader"));
}

/** Expands level by level, so a budget cut leaves the upper levels whole. */
async function growTree(m: Muster, unionId: string, tops: Member[], maxDepth: number, breadth: number) {
  const nodes: TreeNode[] = tops.map((member) => ({ member, recruits: null, notShown: member.subtreeSize }));
  let shown = nodes.length;
  let depthCut = false;
  let budgetCut = false;
  let level = nodes;
  for (let depth = 0; level.length > 0; depth++) {
    const next: TreeNode[] = [];
    for (const node of level) {
      if (node.member.subtreeSize === 0) {
        node.recruits = [];
        continue;
      }
      if (depth >= maxDepth) {
        depthCut = true;
        continue;
      }
      if (shown >= TREE_BUDGET) {
        budgetCut = true;
        continue;
      }
      const fetched = await recruitsOf(m.database.db, unionId, node.member.id, { limit: breadth + 1 });
      const take = fetched.slice(0, Math.min(breadth, TREE_BUDGET - shown))
        .sort((a, b) => (a.joinedAt?.getTime() ?? 0) - (b.joinedAt?.getTime() ?? 0) || a.id.localeCompare(b.id));
      if (TREE_BUDGET - shown < Math.min(breadth, fetched.length)) budgetCut = true;
      node.recruits = take.map((r) => ({ member: r, recruits: null, notShown: r.subtreeSize }));
      node.notShown = node.member.subtreeSize - take.reduce((n, r) => n + r.subtreeSize + 1, 0);
      shown += take.length;
      next.push(...node.recruits);
    }
    level = next;
  }
  return { nodes, depthCut, budgetCut };
}

function nodeLine(n: TreeNode): string {
  const mem = n.member;
  const state = mem.state === "active" ? "" : `, ${mem.state}`;
  return `${label(mem)} (${roleText(mem)}${state}) [subtree ${mem.subtreeSize}]`;
}

function renderTree(n: TreeNode, prefix: string, lines: string[]): void {
  const kids = n.recruits ?? [];
  const more = n.recruits !== null && n.notShown > 0;
  kids.forEach((k, i) => {
    const last = i === kids.length - 1 && !more;
    lines.push(`${prefix}${last ? "└── " : "├── "}${nodeLine(k)}`);
    renderTree(k, prefix + (last ? "    " : "│   "), lines);
  });
  if (more) lines.push(`${prefix}└── … ${n.notShown} more member(s) under recruits not shown (see --breadth)`);
}

function treeJson(n: TreeNode): unknown {
  const mem = n.member;
  return {
    handle: mem.handle,
    actorId: mem.actorId,
    state: mem.state,
    role: mem.role,
    portfolio: mem.portfolio,
    subtreeSize: mem.subtreeSize,
    recruits: n.recruits === null ? null : n.recruits.map(treeJson),
    notShown: n.notShown,
  };
}

// ---- commands -------------------------------------------------------------

export const memberCommands: Command[] = [
  {
    path: ["member", "list"],
    usage: "muster member list <union> [--pending] [--all] [--json]",
    summary: "List members with their sponsor and depth in the tree (default: current members; --pending: requests awaiting approval; --all: every state).",
    options: { pending: { type: "boolean", default: false }, all: { type: "boolean", default: false }, ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      if (values.pending && values.all) throw new UsageError("--pending and --all cannot be combined");
      const states = values.pending ? ["pending" as const] : values.all ? ALL_STATES : IN_TREE;
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const members = await allMembers(m, union.id, states);
        if (values.json) return print(members.map((x) => memberJson(x)));
        if (members.length === 0) return out(values.pending ? `No requests are waiting in union ${union.slug}.\n` : `No members in union ${union.slug}.\n`);
        out(table(
          ["HANDLE", "STATE", "ROLE", "DEPTH", "SPONSOR", "JOINED", "ACTOR"],
          members.map((x) => [x.handle, x.state, roleText(x), x.depth, x.sponsorId ? x.sponsorHandle ?? x.sponsorActorId : null, shortDate(x.joinedAt), x.actorId]),
        ));
      });
    },
  },
  {
    path: ["member", "show"],
    usage: "muster member show <union> <@user@host> [--json]",
    summary: "Show one member: sponsor chain up to the leader, recruits, subtree size, moves and invites.",
    options: { ...JSON_OPT },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      await withMember(positionals, async (m, union, member) => {
        const db = m.database.db;
        const inTree = IN_TREE.includes(member.state);
        const chain = inTree ? await sponsorChain(db, member.id) : [];
        const recruits = inTree ? await countRecruits(m, union.id, member.id) : 0;
        const names = new Map<string, SponsorRef | null>();
        const ref = async (id: string | null) => {
          if (id === null) return null;
          if (!names.has(id)) names.set(id, await sponsorRef(m, union.id, id));
          return names.get(id)!;
        };
        const moves = await Promise.all((await movesOf(db, union.id, member.id)).map(async (mv) => ({
          from: await ref(mv.fromSponsorId), to: await ref(mv.toSponsorId), reason: mv.reason, at: iso(mv.at),
        })));
        const invites = (await listInvites(db, union.id, { createdBy: member.id })).map((i) => ({
          code: i.code, url: inviteUrl(m, union, i.code), uses: i.uses, maxUses: i.maxUses, status: inviteStatus(i),
        }));
        const sponsor = await ref(member.sponsorId);
        // The treasury's view: standing from dues, the wallet (and its proof), badges as recorded by the ledger lane.
        const standing = await memberStanding({ db, duesParams: duesParamsFromBylaws }, union.id, member.id);
        const wallet = await walletOf(db, union.id, member.id);
        const badges = (await db.selectFrom("badges").innerJoin("badge_mints", "badge_mints.union_id", "badges.union_id")
          .select(["badge_mints.mint", "badges.wallet", "badges.state", "badges.signature"]).where("badges.union_id", "=", union.id).where("badges.member_id", "=", member.id).execute())
          .map((b) => ({ kind: "member", mint: b.mint, wallet: b.wallet, state: b.state, signature: b.signature }));
        // The leader's and officers' badges (solana/role-badges.ts), minted and burned with the role.
        badges.push(...(await db.selectFrom("role_badges").innerJoin("role_badge_mints", (j) => j.onRef("role_badge_mints.union_id", "=", "role_badges.union_id").onRef("role_badge_mints.role", "=", "role_badges.role"))
          .select(["role_badges.role", "role_badge_mints.mint", "role_badges.wallet", "role_badges.state", "role_badges.signature"])
          .where("role_badges.union_id", "=", union.id).where("role_badges.member_id", "=", member.id).orderBy("role_badges.role").execute())
          .map((b) => ({ kind: b.role, mint: b.mint, wallet: b.wallet, state: b.state, signature: b.signature })));
        if (values.json) {
          return print({
            ...memberJson(member, { sponsor, depth: inTree ? chain.length - 1 : null }),
            chain: chain.map((c) => ({ handle: c.handle, actorId: c.actorId, role: c.role })),
            recruits,
            moves,
            invites,
            standing: standing.standing,
            paidThrough: standing.paidThrough === null ? null : iso(new Date(Number(standing.paidThrough))),
            wallet: wallet?.wallet ?? null,
            walletProof: wallet?.proof ?? null,
            badges,
          });
        }
        const refText = (r: SponsorRef | null) => (r === null ? "(top of the tree)" : r.handle ?? r.actorId ?? "(unknown)");
        const rows: [string, string][] = [
          ["Handle", member.handle ?? "(unknown)"],
          ["Actor", member.actorId ?? "(not yet joined)"],
          ["State", member.state],
          ["Role", roleText(member)],
          ["Joined", iso(member.joinedAt) ?? "-"],
        ];
        if (inTree) {
          rows.push(
            ["Sponsor", refText(sponsor)],
            ["Chain", chain.map((c) => label(c)).join(" ← ")],
            ["Depth", String(chain.length - 1)],
            ["Recruits", `${recruits} direct, ${member.subtreeSize} in subtree`],
          );
        } else {
          rows.push(["Left", `${iso(member.leftAt) ?? "-"}${member.leftReason ? ` (${member.leftReason})` : ""}`]);
        }
        rows.push(["Invites", invites.length ? invites.map((i) => `${i.code} ${i.uses}/${i.maxUses ?? "∞"} ${i.status}`).join("; ") : "none"]);
        rows.push(
          ["Standing", `${standing.standing}${standing.paidThrough !== null ? ` (paid through ${iso(new Date(Number(standing.paidThrough)))})` : ""}`],
          ["Wallet", wallet ? `${wallet.wallet} (${wallet.proof ? "proven: signed challenge" : "linked by the operator, no proof"})` : "none"],
          ["Badges", badges.length ? badges.map((b) => `${b.kind} ${b.state} in ${b.wallet} (mint ${b.mint})`).join("; ") : "none"],
        );
        out(fields(rows));
        if (moves.length) {
          out("Moves:\n");
          for (const mv of moves) out(`  ${mv.at}  ${refText(mv.from)} → ${refText(mv.to)}  (${mv.reason})\n`);
        }
      });
    },
  },
  {
    path: ["member", "approve"],
    usage: "muster member approve <union> <@user@host> [--json]",
    summary: "Admit a pending request to join; the newcomer joins under the leader and is sent an Accept.",
    options: { ...JSON_OPT },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      await withMember(positionals, async (m, union, member) => {
        // The domain treats a repeated approval as done (a double click); here nothing happened, so say so.
        if (member.state === "active") throw new CliError(`${label(member)} is already a member of ${union.slug}; nothing to approve`);
        const approved = await approveMember(m.membership, union.id, member.id, OPERATOR);
        const sponsor = await sponsorRef(m, union.id, approved.sponsorId);
        if (values.json) return print(memberJson(approved, { sponsor }));
        out(`Approved ${label(approved)}: now a member of ${union.slug}${sponsor ? ` under ${sponsor.handle ?? sponsor.actorId}` : ""}.\n`);
      });
    },
  },
  {
    path: ["member", "reject"],
    usage: "muster member reject <union> <@user@host> [--reason <text>] [--json]",
    summary: "Refuse a pending request to join; their server is sent a Reject.",
    options: { reason: { type: "string" }, ...JSON_OPT },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      await withMember(positionals, async (m, union, member) => {
        const rejected = await rejectMember(m.membership, union.id, member.id, OPERATOR, str(values, "reason")?.trim() || null);
        if (values.json) return print(memberJson(rejected, { sponsor: null }));
        out(`Rejected ${possessive(label(rejected))} request to join ${union.slug}.\n`);
      });
    },
  },
  {
    path: ["member", "remove"],
    usage: "muster member remove <union> <@user@host> --reason <text> [--expel] [--json]",
    summary: "Remove a member (their recruits move up to their sponsor); --expel also bars rejoining by a plain follow.",
    details: "  --reason is required and recorded with the removal.",
    options: { reason: { type: "string" }, expel: { type: "boolean", default: false }, ...JSON_OPT },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      const reason = str(values, "reason")?.trim();
      if (!reason) throw new UsageError("--reason <text> is required: every removal is recorded with its reason");
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const member = await requireMember(m, union, positionals[1]!, ["active", "pending"]);
        const recruits = member.state === "active" ? await countRecruits(m, union.id, member.id) : 0;
        const sponsor = await sponsorRef(m, union.id, member.sponsorId);
        const removed = await removeMember(m.membership, union.id, member.id, OPERATOR, { reason, expel: Boolean(values.expel) });
        if (values.json) return print({ ...memberJson(removed, { sponsor, depth: null }), recruitsMoved: recruits });
        out(`${removed.state === "expelled" ? "Expelled" : "Removed"} ${label(removed)} from ${union.slug} (reason: ${reason}).\n`);
        if (recruits > 0) out(`${recruits} recruit(s) moved up to ${sponsor ? sponsor.handle ?? sponsor.actorId : "the top of the tree"}.\n`);
      });
    },
  },
  {
    path: ["member", "wallet"],
    usage: "muster member wallet <union> <@user@host> <address> [--json]",
    summary: "Link a member's Solana wallet on their word, without proof: an active member's soulbound badge is minted there.",
    details: "  The badge is minted by the serving process's ledger lane; a badge in an earlier wallet is burned.\n  A link without proof never makes a treasury signer; `muster wallet link` links with a signed challenge.",
    options: { ...JSON_OPT },
    positionals: ["union", "member", "address"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const member = await requireMember(m, union, positionals[1]!, ["active", "pending"]);
        try {
          await linkWallet({ db: m.database.db, outbox: m.membership.outbox }, union.id, member.id, positionals[2]!, OPERATOR);
        } catch (e) {
          if (e instanceof TreasuryError) throw new CliError(e.message);
          throw e;
        }
        if (values.json) return print({ member: memberJson(member, { sponsor: null, depth: null }), wallet: positionals[2]!.trim() });
        out(`Linked wallet ${positionals[2]!.trim()} to ${label(member)} in ${union.slug}; the badge follows once the server's ledger lane runs.\n`);
      });
    },
  },
  {
    path: ["member", "sponsor"],
    usage: "muster member sponsor <union> <@user@host> <@new-sponsor@host> [--json]",
    summary: "Move a member, with their whole subtree, under another sponsor (refused if it would make a cycle).",
    options: { ...JSON_OPT },
    positionals: ["union", "member", "sponsor"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const member = await requireMember(m, union, positionals[1]!, ["active"]);
        const sponsor = await requireMember(m, union, positionals[2]!, IN_TREE);
        const moved = await moveMember(m.membership, union.id, member.id, sponsor.id, OPERATOR);
        if (values.json) return print(memberJson(moved, { sponsor: { handle: sponsor.handle, actorId: sponsor.actorId } }));
        const others = moved.subtreeSize ? ` with the ${moved.subtreeSize} member(s) of their subtree` : "";
        out(member.sponsorId === sponsor.id ? `${label(moved)} is already sponsored by ${label(sponsor)}.\n` : `Moved ${label(moved)}${others} under ${label(sponsor)}.\n`);
      });
    },
  },
  {
    path: ["member", "tree"],
    usage: "muster member tree <union> [<@user@host>] [--depth N] [--breadth N] [--json]",
    summary: "Draw the sponsor tree from the leader (or from one member): each line is handle (role/portfolio) [subtree N].",
    details: [
      "  --depth N     levels of recruits to show below the top (default 3)",
      "  --breadth N   recruits to show under any one member (default 50)",
      `  At most ${TREE_BUDGET} members are drawn; start from a member to see deeper. --json nests recruits;`,
      "  \"recruits\": null marks a member whose recruits were not expanded, \"notShown\" counts what is left out.",
    ].join("\n"),
    options: { depth: { type: "string" }, breadth: { type: "string" }, ...JSON_OPT },
    positionals: ["union"],
    optional: ["member"],
    async run({ values, positionals }) {
      const depthOpt = str(values, "depth");
      const breadthOpt = str(values, "breadth");
      const maxDepth = depthOpt === undefined ? 3 : parseCount("--depth", depthOpt);
      const breadth = breadthOpt === undefined ? 50 : parseCount("--breadth", breadthOpt, 1);
      await withMuster(async (m) => {
        const union: Union = await requireUnion(m, positionals[0]!);
        const from = positionals[1] === undefined ? undefined : await requireMember(m, union, positionals[1], IN_TREE);
        const tops = from ? [from] : await roots(m, union.id);
        const { nodes, depthCut, budgetCut } = await growTree(m, union.id, tops, maxDepth, breadth);
        if (values.json) return print(from ? treeJson(nodes[0]!) : nodes.map(treeJson));
        if (nodes.length === 0) return out(`Union ${union.slug} has nobody in its tree yet.\n`);
        const lines: string[] = [];
        for (const n of nodes) {
          lines.push(nodeLine(n));
          renderTree(n, "", lines);
        }
        if (depthCut) lines.push(`(Only ${maxDepth} level(s) below the top are shown; use --depth N or start from a member.)`);
        if (budgetCut) lines.push(`(Output stops at ${TREE_BUDGET} members; start from a member to see the rest.)`);
        out(lines.join("\n") + "\n");
      });
    },
  },
];

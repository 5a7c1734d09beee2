import { createAllyInvite } from "../../relationships/backlinks.ts";
import { type ChapterNode, chapterSnapshot, treeTotals } from "../../relationships/chapters.ts";
import type { Muster } from "../../main.ts";
import { OPERATOR } from "../../members/members.ts";
import {
  answerOffer, endRelationship, listRelationships, type Relationship, RELAYS, type Relay,
} from "../../relationships/relationships.ts";
import { createUnion, type Union } from "../../unions/unions.ts";
import { CliError, type Command, JSON_OPT, out, print, requireUnion, shortDate, str, table, UsageError, withMuster } from "../command.ts";

// The federation layer resolves handles and URLs; loaded on demand like the rest of the composition root.
async function propose(m: Muster, union: Union, target: string, kind: "ally" | "parent", relay: Relay, proposalId?: string): Promise<Relationship> {
  const { proposeTo } = await import("../../../federation/relationships.ts");
  return proposeTo({ ...m.membership, federation: m.federation, origin: m.config.origin }, union, OPERATOR, target, kind, relay, { proposalId });
}

const PROPOSAL_OPT = { proposal: { type: "string" } } as const;
const PROPOSAL_HELP = "--proposal <number> names the passed resolution that ratified this step: it is checked (passed, names that union, not used before) and recorded, as for an officer under member_vote bylaws. Without it the operator's command is an override.";

function relayOption(raw: string | undefined, fallback: Relay): Relay {
  if (raw === undefined) return fallback;
  if (!(RELAYS as readonly string[]).includes(raw)) throw new UsageError(`--relay takes ${RELAYS.join("|")}; got ${JSON.stringify(raw)}`);
  return raw as Relay;
}

function json(r: Relationship) {
  return {
    id: r.id, peer: r.peerActorId, handle: r.peerHandle, kind: r.kind, direction: r.direction, state: r.state, relay: r.relay,
    follow: r.followId, createdAt: r.createdAt.toISOString(), updatedAt: r.updatedAt.toISOString(),
  };
}

/** The open relationship with the peer named by handle or actor URL. */
async function requireRelationship(m: Muster, union: Union, peer: string): Promise<Relationship> {
  const wanted = peer.trim().replace(/^@?/, "@").toLowerCase();
  const rels = await listRelationships(m.database.db, union.id, { states: ["offered", "received", "active"] });
  const rel = rels.find((r) => r.peerActorId === peer.trim() || r.peerHandle?.toLowerCase() === wanted);
  if (!rel) throw new CliError(`union ${union.slug} has no open relationship with ${peer}`);
  return rel;
}

function describeRel(r: Relationship): string {
  return `${r.peerHandle ?? r.peerActorId} (${r.kind}, ${r.state}, relaying ${r.relay})`;
}

const answer = (verb: "accept" | "reject" | "end"): Command => ({
  path: ["ally", verb],
  usage: `muster ally ${verb} <union> <@union@host or URL>${verb === "end" ? "" : " [--proposal <number>]"} [--json]`,
  summary: verb === "accept" ? "Accept an alliance or chapter offer another union sent (as the operator)."
    : verb === "reject" ? "Reject an offer another union sent."
    : "End a relationship (or withdraw an offer): the other union is sent an Undo and members are told.",
  ...(verb === "end" ? {} : { details: PROPOSAL_HELP }),
  options: verb === "end" ? { ...JSON_OPT } : { ...PROPOSAL_OPT, ...JSON_OPT },
  positionals: ["union", "peer"],
  async run({ values, positionals }) {
    await withMuster(async (m) => {
      const union = await requireUnion(m, positionals[0]!);
      const rel = await requireRelationship(m, union, positionals[1]!);
      const updated = verb === "end"
        ? await endRelationship(m.membership, union.id, rel.id, OPERATOR)
        : await answerOffer(m.membership, union.id, rel.id, OPERATOR, verb === "accept", str(values, "proposal"));
      if (values.json) return print(json(updated));
      out(`${union.slug}: ${describeRel(updated)}\n`);
    });
  },
});

export const allyCommands: Command[] = [
  {
    path: ["ally", "propose"],
    usage: "muster ally propose <union> <@union@host or URL> [--relay both|theirs|ours|none] [--proposal <number>] [--json]",
    summary: "Offer an alliance to another Muster union (same or another server); its officers accept or reject it.",
    details: `--relay says whose calls-to-action are relayed, seen from <union>: both (default), theirs (we relay theirs), ours, none.\n${PROPOSAL_HELP}`,
    options: { relay: { type: "string" }, ...PROPOSAL_OPT, ...JSON_OPT },
    positionals: ["union", "target"],
    async run({ values, positionals }) {
      const relay = relayOption(str(values, "relay"), "both");
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const rel = await propose(m, union, positionals[1]!, "ally", relay, str(values, "proposal"));
        if (values.json) return print(json(rel));
        out(`${union.slug} offered an alliance to ${describeRel(rel)}; waiting for their answer.\n`);
      });
    },
  },
  {
    path: ["ally", "list"],
    usage: "muster ally list <union> [--all] [--json]",
    summary: "List the union's allies, parent, chapters and pending offers (--all adds ended and rejected ones).",
    options: { all: { type: "boolean", default: false }, ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const rels = await listRelationships(m.database.db, union.id, values.all ? {} : { states: ["offered", "received", "active"] });
        if (values.json) return print(rels.map(json));
        if (rels.length === 0) return out(`Union ${union.slug} has no relationships with other unions.\n`);
        out(table(["UNION", "KIND", "STATE", "DIRECTION", "RELAY", "SINCE", "ACTOR"], rels.map((r) => [r.peerHandle, r.kind, r.state, r.direction, r.relay, shortDate(r.updatedAt), r.peerActorId])));
      });
    },
  },
  answer("accept"),
  answer("reject"),
  answer("end"),
  {
    path: ["chapter", "create"],
    usage: "muster chapter create <slug> --parent <@union@host or URL> --name <text> [--purpose <text>] [--leader <@user@host>] [--json]",
    summary: "Found a union as a chapter of a parent union (same or another server); it is a chapter once the parent accepts.",
    options: { parent: { type: "string" }, name: { type: "string" }, purpose: { type: "string" }, leader: { type: "string" }, ...JSON_OPT },
    positionals: ["slug"],
    async run({ values, positionals }) {
      const parent = str(values, "parent");
      const name = str(values, "name");
      if (!parent) throw new UsageError("--parent is required");
      if (!name) throw new UsageError("--name is required");
      await withMuster(async (m) => {
        const union = await createUnion(m.unions, {
          slug: positionals[0]!, name, purpose: str(values, "purpose") ?? `A chapter of ${parent}`, leaderHandle: str(values, "leader") ?? null,
        });
        const rel = await propose(m, union, parent, "parent", "theirs");
        if (values.json) return print({ union: union.slug, parent: json(rel) });
        out(`Created union ${union.name} (@${union.slug}@${m.config.origin.host}) and asked ${describeRel(rel)} to confirm it as a chapter.\n`);
      });
    },
  },
  {
    path: ["chapter", "list"],
    usage: "muster chapter list <union> [--json]",
    summary: "Show the union's parent and its tree of chapters (grand-chapters too), with the members and commitments each reported.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const parent = (await listRelationships(m.database.db, union.id, { states: ["active"], kinds: ["parent"] }))[0];
        const tree = await chapterSnapshot(m.database.db, union.id, new URL(`/u/${union.slug}`, m.config.origin).href);
        const totals = treeTotals(tree);
        if (values.json) return print({ parent: parent ? json(parent) : null, tree, totals });
        if (parent) out(`Parent: ${parent.peerHandle ?? parent.peerActorId}\n`);
        if (tree.chapters.length === 0) return out(`Union ${union.slug} has ${parent ? "" : "no parent and "}no chapters.\n`);
        const lines: string[] = [];
        const line = (n: ChapterNode, prefix: string, branch: string) => {
          const lead = n.leads.length ? `  lead ${n.leads.map((l) => l.handle).join(", ")}` : "";
          lines.push(`${prefix}${branch}${n.name}  ${n.members} members, ${n.commitments} commitments${lead}  ${n.actorId}`);
          const childPrefix = prefix + (branch === "" ? "" : branch === "└─ " ? "   " : "│  ");
          n.chapters.forEach((c, i) => line(c, childPrefix, i === n.chapters.length - 1 ? "└─ " : "├─ "));
        };
        line(tree, "", "");
        out(`${lines.join("\n")}\nWhole tree: ${totals.members} members, ${totals.commitments} commitments, ${totals.chapters} chapter${totals.chapters === 1 ? "" : "s"}.\n`);
      });
    },
  },
  {
    path: ["ally", "invite"],
    usage: "muster ally invite <union> <@ally@host or URL> <sponsor actor URL> [--uses N] [--json]",
    summary: "Give a member of an allied union an invite of <union>: whoever joins with it records that member and union as their sponsor.",
    options: { uses: { type: "string" }, ...JSON_OPT },
    positionals: ["union", "ally", "sponsor"],
    async run({ values, positionals }) {
      const usesRaw = str(values, "uses");
      const uses = usesRaw === undefined ? 1 : Number(usesRaw);
      if (!Number.isInteger(uses) || uses < 1) throw new UsageError(`--uses takes a whole number from 1; got ${JSON.stringify(usesRaw)}`);
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const rel = await requireRelationship(m, union, positionals[1]!);
        const invite = await createAllyInvite(m.membership, union.id, OPERATOR, { actorId: positionals[2]!, unionActorId: rel.peerActorId }, { maxUses: uses });
        const url = new URL(`/u/${union.slug}/join/${invite.code}`, m.config.origin).href;
        if (values.json) return print({ code: invite.code, url, sponsor: positionals[2], ally: rel.peerActorId, uses });
        out(`Invite for ${positionals[2]} of ${rel.peerHandle ?? rel.peerActorId}: ${url}\n`);
      });
    },
  },
];

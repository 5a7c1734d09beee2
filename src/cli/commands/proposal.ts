import { parseAssignments, PROPOSAL_KINDS, type ProposalKind } from "../../bylaws/params.ts";
import { closeProposal, createProposal, getProposal, listProposals, type Proposal, tallyOf, votersOf } from "../../bylaws/proposals.ts";
import { getMember, OPERATOR } from "../../members/members.ts";
import type { Muster } from "../../main.ts";
import type { Union } from "../../unions/unions.ts";
import { CliError, type Command, fields, JSON_OPT, out, parseDuration, print, requireMember, requireUnion, shortDate, str, table, UsageError, withMuster } from "../command.ts";

function parseCloses(raw: string): Date {
  if (/^\d+[smhdw]/.test(raw.trim())) return new Date(Date.now() + parseDuration("--closes", raw));
  const t = Date.parse(raw);
  if (Number.isNaN(t)) throw new UsageError(`--closes takes an ISO time or a duration such as 30s or 2d; got ${JSON.stringify(raw)}`);
  return new Date(t);
}

async function requireProposal(m: Muster, union: Union, ref: string): Promise<Proposal> {
  const p = await getProposal(m.database.db, union.id, ref);
  if (!p) throw new CliError(`no proposal ${ref} in union ${union.slug}`);
  return p;
}

async function proposalJson(m: Muster, p: Proposal) {
  const tally = await tallyOf(m.database.db, p);
  const voters = await votersOf(m.database.db, p.id);
  const handles = await Promise.all(voters.map(async (id) => (await getMember(m.database.db, p.unionId, id))?.handle ?? id));
  return {
    id: p.id, number: p.number, kind: p.kind, title: p.title, text: p.text, state: p.state, multiple: p.multiple,
    options: tally.options, voters: handles, eligible: tally.eligible, quorumPercent: tally.quorumPercent, quorumMet: tally.quorumMet,
    openedAt: p.openedAt.toISOString(), closesAt: p.closesAt.toISOString(), closedAt: p.closedAt?.toISOString() ?? null,
    change: p.change, outcome: p.outcome ? { passed: p.outcome.passed, reason: p.outcome.reason, winner: p.outcome.winner ?? null, bylawsVersion: p.outcome.bylawsVersion ?? null } : null,
  };
}

export const proposalCommands: Command[] = [
  {
    path: ["proposal", "create"],
    usage: "muster proposal create <union> --kind resolution|amendment|election|recall|spend --title <text> [--text <markdown>] [--closes <ISO or 30s, 2d>] [--set key=value]... [--candidate <@user@host>]... [--portfolio <text>] [--leader] [--member <@user@host>] [--amount N --recipient <text> [--mint <address>]] [--json]",
    summary: "Open a proposal as the operator; members vote from their fediverse client (a poll) or on the web.",
    details: [
      "  amendment: --set key=value (see muster bylaws show --help for the parameters)",
      "  election:  --candidate (repeat, 1-20) for an officer's --portfolio, or --leader; members approve any number (anyOf)",
      "  recall:    --member, an officer; spend: --amount (base units) --recipient [--mint]",
      "  --closes   end of the vote (default: the bylaws' voting period)",
    ].join("\n"),
    options: {
      kind: { type: "string" }, title: { type: "string" }, text: { type: "string" }, closes: { type: "string" },
      set: { type: "string", multiple: true }, candidate: { type: "string", multiple: true }, portfolio: { type: "string" },
      leader: { type: "boolean", default: false }, member: { type: "string" }, amount: { type: "string" }, recipient: { type: "string" }, mint: { type: "string" },
      ...JSON_OPT,
    },
    positionals: ["union"],
    async run({ values, positionals }) {
      const kind = str(values, "kind") as ProposalKind | undefined;
      if (!kind || !PROPOSAL_KINDS.includes(kind)) throw new UsageError(`--kind is one of ${PROPOSAL_KINDS.join(", ")}`);
      const title = str(values, "title");
      if (!title) throw new UsageError("--title is required");
      const list = (k: string) => (values as Record<string, unknown>)[k] as string[] | undefined ?? [];
      const closes = str(values, "closes");
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const candidates = await Promise.all(list("candidate").map(async (h) => (await requireMember(m, union, h, ["active"])).id));
        const target = str(values, "member");
        const p = await createProposal(m.membership, union.id, OPERATOR, {
          kind, title, text: str(values, "text"),
          closesAt: closes ? parseCloses(closes) : undefined,
          params: kind === "amendment" ? parseAssignments(list("set")) : undefined,
          role: values.leader ? "leader" : "officer", portfolio: str(values, "portfolio") ?? null, candidates,
          memberId: target ? (await requireMember(m, union, target, ["active"])).id : undefined,
          amount: str(values, "amount"), recipient: str(values, "recipient"), mint: str(values, "mint") ?? null,
        });
        if (values.json) return print(await proposalJson(m, p));
        out(`Opened proposal #${p.number} (${p.kind}) in ${union.slug}: ${p.title}; voting closes ${p.closesAt.toISOString()}.\n`);
      });
    },
  },
  {
    path: ["proposal", "list"],
    usage: "muster proposal list <union> [--json]",
    summary: "List a union's proposals, newest first.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const ps = await listProposals(m.database.db, union.id);
        if (values.json) return print(await Promise.all(ps.map((p) => proposalJson(m, p))));
        if (ps.length === 0) return out("No proposals yet.\n");
        out(table(["#", "KIND", "STATE", "CLOSES", "TITLE"], ps.map((p) => [p.number, p.kind, p.state, shortDate(p.closesAt), p.title])));
      });
    },
  },
  {
    path: ["proposal", "show"],
    usage: "muster proposal show <union> <id or #number> [--json]",
    summary: "Show a proposal: per-option tallies (direct and delegated), voters, eligible, quorum, state and outcome.",
    options: { ...JSON_OPT },
    positionals: ["union", "proposal"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const j = await proposalJson(m, await requireProposal(m, union, positionals[1]!));
        if (values.json) return print(j);
        out(fields([["Proposal", `#${j.number} ${j.title}`], ["Kind", j.kind], ["State", j.state], ["Closes", j.closesAt],
          ["Eligible", String(j.eligible)], ["Quorum", `${j.quorumPercent}% (${j.quorumMet ? "met" : "not met"})`], ["Voters", j.voters.join(", ") || "(none)"],
          ["Outcome", j.outcome ? `${j.outcome.passed ? "passed" : "failed"}: ${j.outcome.reason}` : "(open)"]]));
        out(table(["OPTION", "DIRECT", "DELEGATED"], j.options.map((o) => [o.text, o.direct, o.delegated])));
      });
    },
  },
  {
    path: ["proposal", "close"],
    usage: "muster proposal close <union> <id or #number> [--json]",
    summary: "Close a proposal now (operator; logged): count, decide under the bylaws and apply the outcome.",
    options: { ...JSON_OPT },
    positionals: ["union", "proposal"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const p = await requireProposal(m, union, positionals[1]!);
        const closed = await closeProposal(m.membership, union.id, p.id, { force: true });
        if (!closed) throw new CliError(`proposal #${p.number} is already ${p.state}`);
        if (values.json) return print(await proposalJson(m, closed));
        out(`Closed proposal #${closed.number}: ${closed.state} (${closed.outcome?.reason}).\n`);
      });
    },
  },
];

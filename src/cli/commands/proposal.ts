import { parseAssignments, PROPOSAL_KINDS, type ProposalKind } from "../../bylaws/params.ts";
import { closeProposal, createProposal, describeOutcome, getProposal, listProposals, type Proposal, tallyOf } from "../../bylaws/proposals.ts";
import { getMember, OPERATOR } from "../../members/members.ts";
import type { Muster } from "../../main.ts";
import type { Union } from "../../unions/unions.ts";
import { CliError, type Command, fields, JSON_OPT, out, parseDuration, print, requireMember, requireUnion, shortDate, str, table, UsageError, type Values, withMuster } from "../command.ts";
import { formatUnits } from "../../bylaws/amounts.ts";
import { spendAmount, spendUnit } from "../../bylaws/proposing.ts";
import { readVoters } from "../../bylaws/turnout.ts";
import { spendExecution } from "../../treasury/spends.ts";

function parseCloses(raw: string): Date {
  if (/^\d+[smhdw]/.test(raw.trim())) return new Date(Date.now() + parseDuration("--closes", raw));
  const t = Date.parse(raw);
  if (Number.isNaN(t)) throw new UsageError(`--closes takes an ISO time or a duration such as 30s or 2d; got ${JSON.stringify(raw)}`);
  return new Date(t);
}

/** --amount in base units, or --units in whole units of the dues mint (exact); not both. */
async function amountOf(m: Muster, union: Union, values: Values): Promise<string | bigint | undefined> {
  const amount = str(values, "amount");
  const units = str(values, "units");
  if (amount !== undefined && units !== undefined) throw new UsageError("give --amount (base units) or --units (whole units), not both");
  if (units === undefined) return amount;
  const unit = await spendUnit(m.database.db, union.id);
  if (!unit.known) throw new CliError(`--units needs the dues mint's decimals, which the union's treasury does not record${unit.mint ? ` for ${unit.mint}` : " (the bylaws name no dues mint)"}; give --amount in base units`);
  return spendAmount(unit, units);
}

async function requireProposal(m: Muster, union: Union, ref: string): Promise<Proposal> {
  const p = await getProposal(m.database.db, union.id, ref);
  if (!p) throw new CliError(`no proposal ${ref} in union ${union.slug}`);
  return p;
}

async function proposalJson(m: Muster, union: Union, p: Proposal) {
  const db = m.database.db;
  const tally = await tallyOf(db, p);
  // The operator sees who voted; how, only when the bylaws at opening made votes public.
  const read = await readVoters(db, union, p, "operator");
  const voters = read.ok ? read.voters : [];
  const unit = await spendUnit(db, union.id);
  const change = p.change.kind === "spend" ? { ...p.change, amountUnits: unit.known && p.change.mint === unit.mint ? formatUnits(BigInt(p.change.amount), unit.decimals) : null } : p.change;
  // A passed spend: what the treasury did with it (src/treasury/spends.ts).
  const spent = p.change.kind === "spend" && p.state === "passed" ? await spendExecution(db, union.id, p.id) : undefined;
  const outcomeLines = p.change.kind === "spend" && p.state === "passed" ? await describeOutcome(db, p) : undefined;
  return {
    id: p.id, number: p.number, kind: p.kind, title: p.title, text: p.text, state: p.state, multiple: p.multiple,
    options: tally.options.map((o) => ({ ...o, total: o.direct + o.delegated })),
    voters: voters.map((v) => v.handle ?? v.memberId), delegatedVoters: tally.delegatedVoters,
    votesPublic: read.ok && read.public, ballots: read.ok && read.public ? voters.map((v) => ({ voter: v.handle ?? v.memberId, choices: v.choices ?? [] })) : null,
    eligible: tally.eligible, quorumPercent: tally.quorumPercent, quorumMet: tally.quorumMet,
    openedAt: p.openedAt.toISOString(), closesAt: p.closesAt.toISOString(), closedAt: p.closedAt?.toISOString() ?? null,
    change, outcome: p.outcome ? { passed: p.outcome.passed, reason: p.outcome.reason, winner: p.outcome.winner ?? null, bylawsVersion: p.outcome.bylawsVersion ?? null } : null,
    spend: spent || outcomeLines ? {
      state: spent?.state ?? "queued", reason: spent?.reason ?? null, transferId: spent?.transfer?.id ?? null, signature: spent?.transfer?.signature ?? null,
      signed: spent?.transfer ? spent.transfer.signed.length : null, required: spent?.transfer ? spent.transfer.required.length : null,
      text: outcomeLines?.at(-1) ?? null,
    } : null,
  };
}

/** What passing does, in one line, for `proposal show`. */
async function describeChange(m: Muster, union: Union, j: Awaited<ReturnType<typeof proposalJson>>): Promise<string> {
  const c = j.change;
  const handle = async (id: string) => (await getMember(m.database.db, union.id, id))?.handle ?? id;
  switch (c.kind) {
    case "resolution": return "none (a resolution)";
    case "amendment": return [...Object.entries(c.params).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(",") : String(v)}`), ...(c.text !== undefined ? ["new text"] : [])].join(" ");
    case "election": return `elects ${c.role === "leader" ? "the leader" : `an officer${c.portfolio ? ` (${c.portfolio})` : ""}`} from ${(await Promise.all(c.candidates.map(handle))).join(", ")}`;
    case "recall": return `removes ${await handle(c.memberId)} from office`;
    case "spend": return `${c.amount} base units${"amountUnits" in c && c.amountUnits ? ` (${c.amountUnits})` : ""}${c.mint ? ` of ${c.mint}` : ""} to ${c.recipient}${c.purpose ? `, for ${c.purpose}` : ""}`;
  }
}

export const proposalCommands: Command[] = [
  {
    path: ["proposal", "create"],
    usage: "muster proposal create <union> --kind resolution|amendment|election|recall|spend --title <text> [--text <markdown>] [--closes <ISO or 30s, 2d>] [--set key=value]... [--candidate <@user@host>]... [--portfolio <text>] [--leader] [--member <@user@host>] [--amount N | --units D] [--recipient <text>] [--purpose <text>] [--mint <address>] [--json]",
    summary: "Open a proposal as the operator; members vote from their fediverse client (a poll) or on the web.",
    details: [
      "  amendment: --set key=value (see muster bylaws show --help for the parameters)",
      "  election:  --candidate (repeat, 1-20) for an officer's --portfolio, or --leader; members approve any number (anyOf)",
      "  recall:    --member, the leader or an officer",
      "  spend:     --amount N (base units) or --units 12.5 (whole units of the dues mint, converted exactly;",
      "             needs the union's treasury to hold that mint), --recipient <text> [--purpose <text>] [--mint]",
      "  --closes   end of the vote (default: the bylaws' voting period)",
    ].join("\n"),
    options: {
      kind: { type: "string" }, title: { type: "string" }, text: { type: "string" }, closes: { type: "string" },
      set: { type: "string", multiple: true }, candidate: { type: "string", multiple: true }, portfolio: { type: "string" },
      leader: { type: "boolean", default: false }, member: { type: "string" }, amount: { type: "string" }, units: { type: "string" }, recipient: { type: "string" }, purpose: { type: "string" }, mint: { type: "string" },
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
          amount: await amountOf(m, union, values), recipient: str(values, "recipient"), purpose: str(values, "purpose"), mint: str(values, "mint") ?? null,
        });
        if (values.json) return print(await proposalJson(m, union, p));
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
        if (values.json) return print(await Promise.all(ps.map((p) => proposalJson(m, union, p))));
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
        const j = await proposalJson(m, union, await requireProposal(m, union, positionals[1]!));
        if (values.json) return print(j);
        const voted = j.voters.length + j.delegatedVoters;
        out(fields([["Proposal", `#${j.number} ${j.title}`], ["Kind", j.kind], ["State", j.state], ["Change", await describeChange(m, union, j)],
          [j.closedAt ? "Closed" : "Closes", j.closedAt ?? j.closesAt],
          ["Eligible", String(j.eligible)], ["Turnout", `${j.voters.length} voted, ${j.delegatedVoters} through a delegate (${voted} of ${j.eligible})`],
          ["Quorum", `${j.quorumPercent}% (${j.quorumMet ? "met" : "not met"})`],
          ["Voters", (j.ballots ? j.ballots.map((b) => `${b.voter} (${b.choices.join(", ")})`) : j.voters).join(", ") || "(none)"],
          ["Votes", j.votesPublic ? "public: each ballot is shown" : "secret: who voted, not how"],
          ["Outcome", j.outcome ? `${j.outcome.passed ? "passed" : "failed"}: ${j.outcome.reason}` : "(open)"],
          ...(j.spend ? [["Treasury", `${j.spend.state}${j.spend.reason ? `: ${j.spend.reason}` : ""}${j.spend.transferId !== null ? ` (transfer #${j.spend.transferId}${j.spend.signature ? `, ${j.spend.signature}` : `, ${j.spend.signed} of ${j.spend.required} signed`})` : ""}`] as [string, string]] : [])]));
        out(table(["OPTION", "DIRECT", "DELEGATED", "TOTAL"], j.options.map((o) => [o.text, o.direct, o.delegated, o.total])));
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
        if (values.json) return print(await proposalJson(m, union, closed));
        out(`Closed proposal #${closed.number}: ${closed.state} (${closed.outcome?.reason}).\n`);
      });
    },
  },
];

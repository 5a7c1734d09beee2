import "../temporal.ts";
import { DomainError } from "../domain-error.ts";

// The typed parameters of a union's bylaws: what the server enforces. Each
// has a documented default, a parser that refuses bad values with a message a
// member can act on, and a one-line statement of what enforcing it means.
// Nothing here touches the database.

/**
 * - `invite`: only follows matched to an invite join; others are refused.
 * - `approval`: follows without an invite wait for an officer's decision.
 * - `open`: follows without an invite join at once, under the leader.
 */
export type JoinPolicy = "invite" | "approval" | "open";
export const JOIN_POLICIES: readonly JoinPolicy[] = ["invite", "approval", "open"];
/** Who sees the roster and the tree: see src/members/visibility.ts for what each shows to whom. */
export type MembersVisibility = "public" | "members" | "signed-in" | "officers";
export const MEMBERS_VISIBILITIES: readonly MembersVisibility[] = ["public", "members", "signed-in", "officers"];
export type ActionsVisibility = "members" | "public";
export const ACTIONS_VISIBILITIES: readonly ActionsVisibility[] = ["members", "public"];
export const DEFAULT_COMMITMENT_WORDS = ["in", "done", "committed"];

export type ProposalKind = "resolution" | "amendment" | "election" | "recall" | "spend";
export const PROPOSAL_KINDS: readonly ProposalKind[] = ["resolution", "amendment", "election", "recall", "spend"];
/** Share of yes among yes + no (abstentions count toward quorum only) needed to pass; a tie never passes. */
export type Threshold = "majority" | "two_thirds" | "three_quarters" | "unanimous";
export const THRESHOLDS: readonly Threshold[] = ["majority", "two_thirds", "three_quarters", "unanimous"];
export type CrowdfundEligibility = "members" | "good_standing" | "officers";
export type Proposers = "members" | "officers";
export type Delegation = "off" | "opt_in";
export type AllianceRatification = "officers" | "member_vote";
export type CrowdfundApproval = "officers" | "member_vote";
export type VoteVisibility = "turnout" | "public";

export interface BylawParams {
  readonly joinPolicy: JoinPolicy;
  readonly memberInviteLimit: number;
  readonly membersVisibility: MembersVisibility;
  readonly actionsVisibility: ActionsVisibility;
  readonly commitmentWords: readonly string[];
  readonly timeZone: string;
  readonly publishTime: string;
  /** Base units of the dues mint per period; 0 means no dues. */
  readonly duesAmount: bigint;
  readonly duesMint: string | null;
  readonly duesPeriodDays: number;
  readonly duesGraceDays: number;
  /** Signatures the treasury's multisig needs: the server's key counts as one, officers' wallets make up the rest. */
  readonly treasuryThreshold: number;
  /** The union's cut of a member's crowdfund, in basis points (500 = 5 %). */
  readonly crowdfundCutBps: number;
  readonly crowdfundEligibility: CrowdfundEligibility;
  readonly proposers: Proposers;
  readonly quorumPercent: number;
  readonly thresholdResolution: Threshold;
  readonly thresholdAmendment: Threshold;
  readonly thresholdElection: Threshold;
  readonly thresholdRecall: Threshold;
  readonly thresholdSpend: Threshold;
  readonly votingPeriodHours: number;
  readonly delegation: Delegation;
  readonly allianceRatification: AllianceRatification;
  readonly crowdfundApproval: CrowdfundApproval;
  readonly voteVisibility: VoteVisibility;
}

export type ParamKey = keyof BylawParams;

export class BylawsError extends DomainError<"invalid" | "forbidden" | "not_found" | "conflict"> {
  override name = "BylawsError";
}

export interface ParamSpec<K extends ParamKey = ParamKey> {
  readonly key: K;
  readonly label: string;
  /** What the value means and what the server does with it. */
  readonly help: string;
  readonly default: BylawParams[K];
  /** Allowed values, for enums (forms render a select). */
  readonly choices?: readonly string[];
  /** Accepts the stored JSON form or a string typed on a form or the CLI. */
  parse(raw: unknown): BylawParams[K];
  /** The value as text (CLI, forms, diffs). */
  format(v: BylawParams[K]): string;
  /** The value as stored in JSON. */
  toJson(v: BylawParams[K]): string | number | readonly string[] | null;
}

function bad(key: string, want: string, raw: unknown): BylawsError {
  return new BylawsError("invalid", `${key} must be ${want}; got ${JSON.stringify(typeof raw === "bigint" ? String(raw) : raw)}`);
}

function enumOf<K extends ParamKey>(key: K, label: string, help: string, choices: readonly string[], dflt: BylawParams[K]): ParamSpec<K> {
  return {
    key, label, help, default: dflt, choices,
    parse(raw) {
      const t = typeof raw === "string" ? raw.trim().toLowerCase() : raw;
      const s = typeof t === "string" && !choices.includes(t) ? t.replace(/[-_]/g, (c) => (c === "-" ? "_" : "-")) : t;
      if (typeof s !== "string" || !choices.includes(s)) throw bad(key, `one of ${choices.join(", ")}`, raw);
      return s as BylawParams[K];
    },
    format: (v) => String(v),
    toJson: (v) => v as string,
  };
}

function intOf<K extends ParamKey>(key: K, label: string, help: string, min: number, max: number, dflt: BylawParams[K]): ParamSpec<K> {
  return {
    key, label, help, default: dflt,
    parse(raw) {
      const n = typeof raw === "string" && /^\s*-?\d+\s*$/.test(raw) ? Number(raw) : raw;
      if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max) throw bad(key, `a whole number from ${min} to ${max}`, raw);
      return n as BylawParams[K];
    },
    format: (v) => String(v),
    toJson: (v) => v as number,
  };
}

const threshold = (kind: ProposalKind, dflt: Threshold): ParamSpec =>
  enumOf(`threshold${kind[0]!.toUpperCase()}${kind.slice(1)}` as ParamKey, `Threshold: ${kind}`,
    `share of yes among yes and no votes a ${kind} needs to pass (a tie fails)`, THRESHOLDS, dflt as never);

// Solana addresses are base58 public keys, 32 to 44 characters.
const BASE58 = /^[1-9A-HJ-NP-Za-km-z]{32,44}$/;

/** Every parameter, in the order pages and the CLI list them. */
export const PARAMS: readonly ParamSpec[] = [
  enumOf("joinPolicy", "Joining", "invite: only invited follows join; approval: other follows wait for an officer; open: any follow joins under the leader", JOIN_POLICIES, "approval"),
  intOf("memberInviteLimit", "Invite limit", "people an ordinary member may have invites open for at once (officers have no limit)", 0, 10_000, 5),
  enumOf("membersVisibility", "Roster visible to", "who may see the member list and tree: public; members (a signed fetch from a server hosting members); signed-in (members signed in here); officers", MEMBERS_VISIBILITIES, "signed-in"),
  enumOf("actionsVisibility", "Calls-to-action visible to", "members: sent to followers only; public: to everyone", ACTIONS_VISIBILITIES, "members"),
  {
    key: "commitmentWords", label: "Commitment words", help: "a reply to a call-to-action pledging with one of these words counts as committing",
    default: DEFAULT_COMMITMENT_WORDS,
    parse(raw) {
      const list = Array.isArray(raw) ? raw : typeof raw === "string" ? raw.split(/[\s,]+/) : null;
      if (!list || list.some((w) => typeof w !== "string")) throw bad("commitmentWords", "a list of words", raw);
      const words = [...new Set((list as string[]).map((w) => w.trim().toLowerCase()).filter(Boolean))];
      if (words.length === 0 || words.length > 20 || words.some((w) => !/^[\p{L}\p{N}'-]{1,40}$/u.test(w))) {
        throw new BylawsError("invalid", "commitment words are one to twenty single words (letters, digits, ' or -)");
      }
      return words;
    },
    format: (v) => (v as readonly string[]).join(", "),
    toJson: (v) => v as readonly string[],
  } satisfies ParamSpec<"commitmentWords">,
  {
    key: "timeZone", label: "Time zone", help: "IANA time zone of the daily publication hour", default: "UTC",
    parse(raw) {
      if (typeof raw !== "string" || !raw.trim()) throw bad("timeZone", "an IANA time zone such as Europe/Berlin", raw);
      try {
        Temporal.Now.zonedDateTimeISO(raw.trim());
      } catch {
        throw new BylawsError("invalid", `unknown time zone ${JSON.stringify(raw)}; use an IANA name such as Europe/Berlin`);
      }
      return raw.trim();
    },
    format: (v) => v as string,
    toJson: (v) => v as string,
  } satisfies ParamSpec<"timeZone">,
  {
    key: "publishTime", label: "Publication time", help: "local HH:MM at which the day's queued call-to-action is published", default: "09:00",
    parse(raw) {
      if (typeof raw !== "string" || !/^([01]\d|2[0-3]):([0-5]\d)$/.test(raw.trim())) throw bad("publishTime", "HH:MM (24-hour)", raw);
      return raw.trim();
    },
    format: (v) => v as string,
    toJson: (v) => v as string,
  } satisfies ParamSpec<"publishTime">,
  {
    key: "duesAmount", label: "Dues amount", help: "base units of the dues mint owed each period; 0 means no dues (read by the treasury)", default: 0n,
    parse(raw) {
      const s = typeof raw === "bigint" ? String(raw) : typeof raw === "number" && Number.isSafeInteger(raw) ? String(raw) : typeof raw === "string" ? raw.trim() : "";
      // u64: amounts are base units on chain.
      if (!/^\d{1,20}$/.test(s) || BigInt(s) > 18_446_744_073_709_551_615n) throw bad("duesAmount", "a whole number of base units from 0 to 2^64-1", raw);
      return BigInt(s);
    },
    format: (v) => String(v),
    toJson: (v) => String(v),
  } satisfies ParamSpec<"duesAmount">,
  {
    key: "duesMint", label: "Dues mint", help: "the SPL token mint dues are paid in (a base58 address), or none", default: null,
    parse(raw) {
      if (raw === null || (typeof raw === "string" && ["", "none", "null"].includes(raw.trim().toLowerCase()))) return null;
      if (typeof raw !== "string" || !BASE58.test(raw.trim())) throw bad("duesMint", "a base58 Solana address or none", raw);
      return raw.trim();
    },
    format: (v) => (v as string | null) ?? "none",
    toJson: (v) => v as string | null,
  } satisfies ParamSpec<"duesMint">,
  intOf("duesPeriodDays", "Dues period (days)", "days each dues payment covers", 1, 366, 30),
  intOf("duesGraceDays", "Dues grace (days)", "days after a period ends before a member is no longer in good standing", 0, 365, 7),
  intOf("treasuryThreshold", "Treasury signatures", "signatures needed to move the treasury: 1 means the server's key alone (custodial); 2 or more means officers co-sign from their own wallets (the server's key counts as one)", 1, 11, 1),
  intOf("crowdfundCutBps", "Crowdfund cut (basis points)", "the union's share of a member's crowdfund, 100 = 1 %", 0, 10_000, 500),
  enumOf("crowdfundEligibility", "Crowdfund eligibility", "who may raise a crowdfund through the union: members, good_standing (dues paid), or officers", ["members", "good_standing", "officers"], "good_standing"),
  enumOf("proposers", "Who may propose", "members: any active member may open a proposal; officers: only the leader and officers", ["members", "officers"], "members"),
  intOf("quorumPercent", "Quorum (%)", "share of eligible members who must vote (abstaining counts) for a result to stand", 0, 100, 20),
  threshold("resolution", "majority"),
  threshold("amendment", "two_thirds"),
  threshold("election", "majority"),
  threshold("recall", "two_thirds"),
  threshold("spend", "majority"),
  intOf("votingPeriodHours", "Voting period (hours)", "how long a proposal's poll stays open unless its proposer sets otherwise", 1, 24 * 31, 72),
  enumOf("delegation", "Delegation", "off: every member votes for themselves; opt_in: a member may delegate their vote to another member", ["off", "opt_in"], "off"),
  enumOf("allianceRatification", "Alliance ratification", "officers: officers accept alliances with other unions; member_vote: an alliance needs a passed proposal", ["officers", "member_vote"], "officers"),
  enumOf("crowdfundApproval", "Crowdfund approval", "officers: officers approve crowdfunds; member_vote: approving one needs a passed resolution naming it (crowdfund #N)", ["officers", "member_vote"], "officers"),
  enumOf("voteVisibility", "Votes visible", "turnout: members see who voted, not how; public: members see each ballot", ["turnout", "public"], "turnout"),
];

const BY_KEY = new Map<string, ParamSpec>(PARAMS.map((p) => [p.key.toLowerCase(), p]));

/** Finds a parameter by key, ignoring case, hyphens and underscores (`invite-limit` is not a key; `member-invite-limit` is). */
export function paramSpec(key: string): ParamSpec {
  const spec = BY_KEY.get(key.replace(/[-_\s]/g, "").toLowerCase());
  if (!spec) throw new BylawsError("invalid", `unknown bylaw parameter ${JSON.stringify(key)}; known: ${PARAMS.map((p) => p.key).join(", ")}`);
  return spec;
}

export const DEFAULT_PARAMS: BylawParams = Object.freeze(Object.fromEntries(PARAMS.map((p) => [p.key, p.default])) as unknown as BylawParams);

/**
 * Reads stored parameters. A key missing from an older version takes its
 * documented default, so adding a parameter needs no data migration; a key no
 * longer known is ignored.
 */
export function paramsFromJson(json: string): BylawParams {
  const stored = JSON.parse(json) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const p of PARAMS) out[p.key] = p.key in stored ? p.parse(stored[p.key]) : p.default;
  return out as unknown as BylawParams;
}

export function paramsToJson(params: BylawParams): string {
  return JSON.stringify(Object.fromEntries(PARAMS.map((p) => [p.key, p.toJson(params[p.key] as never)])));
}

/** Parses `key=value` assignments (CLI, proposal forms) into a validated patch; a repeated key is refused. */
export function parseAssignments(assignments: readonly string[]): Partial<BylawParams> {
  const out: Record<string, unknown> = {};
  for (const a of assignments) {
    const eq = a.indexOf("=");
    if (eq < 1) throw new BylawsError("invalid", `a bylaw change is key=value; got ${JSON.stringify(a)}`);
    const spec = paramSpec(a.slice(0, eq).trim());
    if (spec.key in out) throw new BylawsError("invalid", `${spec.key} is given twice`);
    out[spec.key] = spec.parse(a.slice(eq + 1));
  }
  return out as Partial<BylawParams>;
}

/** Validates a patch given as values of any accepted form (JSON, strings). */
export function parsePatch(patch: Readonly<Record<string, unknown>>): Partial<BylawParams> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    const spec = paramSpec(k);
    out[spec.key] = spec.parse(v);
  }
  return out as Partial<BylawParams>;
}

export function formatParam<K extends ParamKey>(key: K, v: BylawParams[K]): string {
  return paramSpec(key).format(v as never);
}

/** The keys whose values differ between two parameter sets, in PARAMS order. */
export function changedKeys(a: BylawParams, b: BylawParams): ParamKey[] {
  return PARAMS.filter((p) => p.format(a[p.key] as never) !== p.format(b[p.key] as never)).map((p) => p.key);
}

/** The fraction of yes among yes + no a threshold requires, as [numerator, denominator]; passing needs strictly more than a tie. */
export function thresholdRatio(t: Threshold): readonly [number, number] {
  return t === "majority" ? [1, 2] : t === "two_thirds" ? [2, 3] : t === "three_quarters" ? [3, 4] : [1, 1];
}

export function thresholdFor(params: BylawParams, kind: ProposalKind): Threshold {
  switch (kind) {
    case "resolution": return params.thresholdResolution;
    case "amendment": return params.thresholdAmendment;
    case "election": return params.thresholdElection;
    case "recall": return params.thresholdRecall;
    case "spend": return params.thresholdSpend;
  }
}

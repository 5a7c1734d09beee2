/**
 * What every CLI command module shares: the Command shape, the two kinds of
 * user-facing failure, the composition root, and small formatting helpers.
 */
import type { ParseArgsOptionsConfig } from "node:util";
import { type Config, loadConfig } from "../config.ts";
import { setupLogging } from "../logging.ts";
import type { Muster } from "../main.ts";
import { findMemberByHandle, type Member, type MemberListing } from "../members/members.ts";
import { getUnionBySlug, normaliseHandle, type Union } from "../unions/unions.ts";

/** A failure the user caused: printed as one line, exit status 1. */
export class CliError extends Error {}
/** Wrong arguments: printed with the command's usage, exit status 2. */
export class UsageError extends Error {}

export type Values = Record<string, string | boolean | undefined>;

export interface Command {
  /** The words that select the command, e.g. ["member", "list"]. */
  readonly path: readonly string[];
  readonly usage: string;
  readonly summary: string;
  /** Extra lines for `--help`: option meanings, defaults, examples. */
  readonly details?: string;
  readonly options: ParseArgsOptionsConfig;
  /** Required positional arguments, by name. */
  readonly positionals: readonly string[];
  /** Positional arguments that may follow the required ones. */
  readonly optional?: readonly string[];
  /** Name of a list of further positional arguments (e.g. key=value...), if any. */
  readonly rest?: string;
  run(args: { values: Values; positionals: string[] }): Promise<void>;
}

export const JSON_OPT = { json: { type: "boolean", default: false } } as const satisfies ParseArgsOptionsConfig;

export function out(text: string): void {
  process.stdout.write(text);
}

export function print(value: unknown): void {
  out(JSON.stringify(value, null, 2) + "\n");
}

/** A string option's value, or undefined when it was not given. */
export function str(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}

/**
 * Rows as aligned columns under a header, two spaces apart; null and empty
 * cells show as "-" so every row has the same number of fields.
 */
export function table(headers: readonly string[], rows: readonly (readonly (string | number | null | undefined)[])[]): string {
  const cells = [headers.map(String), ...rows.map((r) => headers.map((_, i) => {
    const v = r[i];
    return v === null || v === undefined || v === "" ? "-" : String(v);
  }))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd() + "\n").join("");
}

/** "Key:  value" lines with the values aligned. */
export function fields(rows: readonly (readonly [string, string])[]): string {
  const width = Math.max(...rows.map(([k]) => k.length)) + 1;
  return rows.map(([k, v]) => `${(k + ":").padEnd(width)} ${v}\n`).join("");
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** Parses "7d", "12h", "30m", "90s", "2w" or combinations like "1d12h" into milliseconds. */
export function parseDuration(option: string, raw: string): number {
  const text = raw.trim().toLowerCase();
  if (!/^(?:\d+[smhdw])+$/.test(text)) {
    throw new UsageError(`${option} takes a duration like 7d, 12h, 30m or 1d12h; got ${JSON.stringify(raw)}`);
  }
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/(\d+)([smhdw])/g)) ms += Number(n) * UNIT_MS[unit!]!;
  if (!(ms > 0) || !Number.isSafeInteger(ms)) throw new UsageError(`${option} must be a positive duration; got ${JSON.stringify(raw)}`);
  return ms;
}

/** Parses a whole number option; the range is the domain's to judge unless `min` is given. */
export function parseCount(option: string, raw: string, min = 0): number {
  if (!/^\d+$/.test(raw.trim())) throw new UsageError(`${option} takes a whole number; got ${JSON.stringify(raw)}`);
  const n = Number(raw.trim());
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${option} must be at least ${min}; got ${JSON.stringify(raw)}`);
  return n;
}

export async function configWith(overrides: Record<string, string>): Promise<Config> {
  const config = loadConfig({ ...process.env, ...overrides });
  await setupLogging(config.logLevel);
  return config;
}

/**
 * Opens the composition root for one command. Loaded on demand, so --help and
 * argument errors answer without loading the federation stack.
 */
export async function withMuster(fn: (m: Muster) => Promise<void>): Promise<void> {
  const { createMuster } = await import("../main.ts");
  const { withOutgoingPolicy } = await import("../../federation/http-client.ts");
  // A command only enqueues: its pool is not held to the queue handlers' minimum.
  const muster = await createMuster(await configWith({}), { runsQueue: false });
  try {
    // A command's own fetches (WebFinger, actors) follow the server's private-address rule.
    await withOutgoingPolicy({ allowPrivateAddress: muster.config.allowPrivateAddress }, () => fn(muster));
  } finally {
    await muster.close();
  }
}

/** For the commands that take <union> <@user@host>: finds both, or fails with one line. */
export function withMember(positionals: readonly string[], fn: (m: Muster, union: Union, member: Member) => Promise<void>): Promise<void> {
  return withMuster(async (m) => {
    const union = await requireUnion(m, positionals[0]!);
    await fn(m, union, await requireMember(m, union, positionals[1]!));
  });
}

export async function requireUnion(m: Muster, slug: string): Promise<Union> {
  const union = await getUnionBySlug(m.database.db, slug);
  if (!union) throw new CliError(`no union with slug ${JSON.stringify(slug)}`);
  return union;
}

/**
 * The member with this handle (current members win over past ones with the
 * same handle). `states`, when given, lists the states the command accepts.
 */
export async function requireMember(m: Muster, union: Union, rawHandle: string, states?: readonly Member["state"][]): Promise<Member> {
  const handle = normaliseHandle(rawHandle);
  const member = await findMemberByHandle(m.database.db, union.id, handle);
  if (!member) throw new CliError(`no member ${handle} in union ${union.slug}`);
  if (states && !states.includes(member.state)) {
    throw new CliError(`${handle} is ${member.state} in union ${union.slug}; this needs a member who is ${states.join(" or ")}`);
  }
  return member;
}

/** How a member is named in output: the handle, else the actor id, else the row id. */
export function label(m: Pick<Member, "handle" | "actorId" | "id">): string {
  return m.handle ?? m.actorId ?? m.id;
}

export function iso(d: Date | null): string | null {
  return d === null ? null : d.toISOString();
}

/** A date for tables: minutes are enough for a human. */
export function shortDate(d: Date | null): string | null {
  return d === null ? null : d.toISOString().slice(0, 16).replace("T", " ");
}

export function roleText(m: Pick<Member, "role" | "portfolio">): string {
  return m.portfolio ? `${m.role}/${m.portfolio}` : m.role;
}

export interface SponsorRef {
  readonly handle: string | null;
  readonly actorId: string | null;
}

/** A member as --json prints it everywhere. */
export function memberJson(m: Member, extra: { sponsor?: SponsorRef | null; depth?: number | null } = {}) {
  const listing = m as Partial<MemberListing>;
  const sponsor = extra.sponsor !== undefined
    ? extra.sponsor
    : m.sponsorId === null ? null : { handle: listing.sponsorHandle ?? null, actorId: listing.sponsorActorId ?? null };
  return {
    id: m.id,
    actorId: m.actorId,
    handle: m.handle,
    state: m.state,
    role: m.role,
    portfolio: m.portfolio,
    sponsor,
    depth: extra.depth !== undefined ? extra.depth : listing.depth ?? null,
    subtreeSize: m.subtreeSize,
    joinedAt: iso(m.joinedAt),
    leftAt: iso(m.leftAt),
    leftReason: m.leftReason,
  };
}

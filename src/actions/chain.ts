import { createHash } from "node:crypto";
import { type Kysely, PostgresAdapter, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import { prepared } from "../db/prepared.ts";
import { PROPOSAL_EVENTS, proposalBreaks } from "../bylaws/proposal-chain.ts";

/** The hash that precedes a union's first entry. */
export const GENESIS = "0".repeat(64);

/** Calls-to-action: publish, update, retract; proposals (src/bylaws/proposal-chain.ts): proposal, ballot, outcome. */
export type ChainEvent = "publish" | "update" | "retract" | "proposal" | "ballot" | "outcome";

/** What an entry commits to: everything a member was asked, as published. */
export interface ChainPayload {
  readonly actionId: string;
  readonly seq: number;
  readonly title: string;
  readonly bodyMd: string;
  readonly kind: string;
  readonly link: string | null;
  readonly goal: number | null;
  readonly deadline: string | null;
  readonly at: string;
}

/**
 * JSON with keys sorted, so the same payload always hashes the same. The
 * payloads are flat records of strings, numbers, nulls and arrays of those,
 * for which this is the whole of canonical JSON (RFC 8785 adds number
 * formatting we never need).
 */
export function canonicalJson(payload: object): string {
  const sorted = Object.fromEntries(Object.entries(payload).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  return JSON.stringify(sorted);
}

export function entryHash(prevHash: string, event: ChainEvent, payloadJson: string): string {
  return createHash("sha256").update(`${prevHash}\n${event}\n${payloadJson}`).digest("hex");
}

export interface ChainEntry {
  readonly n: number;
  readonly actionId: string;
  readonly event: ChainEvent;
  readonly payload: string;
  readonly prevHash: string;
  readonly hash: string;
  readonly at: Date;
}

/**
 * Makes the caller's transaction the union's only chain writer until it
 * ends, so two appends cannot both read the same head. On PostgreSQL a row
 * lock on the union taken FOR NO KEY UPDATE: it queues behind lockUnion (the
 * same lock, which every other chain writer takes) and other chain writers, but
 * not behind the FOR KEY SHARE locks that inserting any row referencing the
 * union takes, so it waits only for writers of the chain or of the union's
 * rules. SQLite needs nothing: each write transaction is BEGIN IMMEDIATE,
 * one writer at a time, across processes too.
 */
export async function lockChain(trx: Kysely<DB>, unionId: string): Promise<void> {
  if (trx.getExecutor().adapter instanceof PostgresAdapter) {
    await sql`select id from unions where id = ${unionId} for no key update`.execute(trx);
  }
}

/**
 * Waits, inside the caller's transaction, until no chain writer is in
 * flight, so what it reads next includes every vote that had begun. FOR
 * SHARE conflicts with lockChain's lock on PostgreSQL; on SQLite the
 * transaction's BEGIN IMMEDIATE already waits for the writer.
 */
export async function awaitChainWriters(trx: Kysely<DB>, unionId: string): Promise<void> {
  if (trx.getExecutor().adapter instanceof PostgresAdapter) {
    await sql`select id from unions where id = ${unionId} for share`.execute(trx);
  }
}

/**
 * Appends an entry inside the caller's transaction. The (union, n) primary
 * key makes two concurrent appends collide rather than fork the chain.
 */
export async function appendEntry(trx: Kysely<DB>, unionId: string, actionId: string, event: ChainEvent, payload: ChainPayload | Readonly<Record<string, unknown>>, now: number, heads?: ChainHeads): Promise<ChainEntry> {
  const known = heads?.get(unionId);
  const head = known ?? (await readHead(trx, unionId)).rows[0];
  const n = head ? Number(head.n) + 1 : 1;
  const prevHash = head?.hash ?? GENESIS;
  const json = canonicalJson(payload);
  const hash = entryHash(prevHash, event, json);
  await insertEntry(trx, unionId, n, actionId, event, json, prevHash, hash, now);
  heads?.set(unionId, { n, hash });
  return { n, actionId, event, payload: json, prevHash, hash, at: new Date(now) };
}

/**
 * Each union's head as appended so far in one transaction, for a caller that
 * appends many entries in it (the inbox's batch of ballots): the head is read
 * once, then carried from entry to entry. Only valid for one transaction that
 * holds the chain (lockChain) and in which every append passes the same map;
 * were an entry appended behind its back, the next append would collide on
 * (union, n) and fail rather than fork the chain.
 */
export type ChainHeads = Map<string, { readonly n: number | string; readonly hash: string }>;

const readHead = prepared<[unionId: string], { n: number; hash: string }>((db, unionId) =>
  db.selectFrom("action_log").select(["n", "hash"]).where("union_id", "=", unionId).orderBy("n", "desc").limit(1));

const insertEntry = prepared<[unionId: string, n: number, actionId: string, event: string, payload: string, prevHash: string, hash: string, at: number], unknown>((db, unionId, n, actionId, event, payload, prevHash, hash, at) =>
  db.insertInto("action_log").values({ union_id: unionId, n, action_id: actionId, event, payload, prev_hash: prevHash, hash, at }));

export async function chainOf(db: Kysely<DB>, unionId: string): Promise<ChainEntry[]> {
  const rows = await db.selectFrom("action_log").selectAll().where("union_id", "=", unionId).orderBy("n").execute();
  return rows.map((r) => ({ n: Number(r.n), actionId: r.action_id, event: r.event as ChainEvent, payload: r.payload, prevHash: r.prev_hash, hash: r.hash, at: new Date(Number(r.at)) }));
}

export async function entriesOfAction(db: Kysely<DB>, actionId: string): Promise<ChainEntry[]> {
  const rows = await db.selectFrom("action_log").selectAll().where("action_id", "=", actionId).orderBy("n").execute();
  return rows.map((r) => ({ n: Number(r.n), actionId: r.action_id, event: r.event as ChainEvent, payload: r.payload, prevHash: r.prev_hash, hash: r.hash, at: new Date(Number(r.at)) }));
}

export interface ChainBreak {
  readonly n: number;
  readonly actionId: string;
  readonly problem: string;
}

export interface ChainReport {
  readonly entries: number;
  readonly head: string;
  readonly ok: boolean;
  readonly breaks: readonly ChainBreak[];
}

/**
 * Recomputes every hash and link, then checks that each action, and each
 * proposal with its ballots and outcome, as stored now says what its latest
 * entry says: an edit made behind the chain's back (straight in the
 * database) shows up as a break, as does a rewritten entry.
 */
export async function verifyChain(db: Kysely<DB>, unionId: string): Promise<ChainReport> {
  const entries = await chainOf(db, unionId);
  const breaks: ChainBreak[] = [];
  let prev = GENESIS;
  const latest = new Map<string, ChainEntry>();
  for (const [i, e] of entries.entries()) {
    const expected = i === 0 ? 1 : entries[i - 1]!.n + 1;
    if (e.n !== expected) breaks.push({ n: e.n, actionId: e.actionId, problem: e.n === expected + 1 ? `entry ${expected} is missing` : `entries ${expected}-${e.n - 1} are missing` });
    if (e.prevHash !== prev) breaks.push({ n: e.n, actionId: e.actionId, problem: `links to ${e.prevHash.slice(0, 12)} but the previous entry's hash is ${prev.slice(0, 12)}` });
    const recomputed = entryHash(e.prevHash, e.event, e.payload);
    if (recomputed !== e.hash) breaks.push({ n: e.n, actionId: e.actionId, problem: `its content no longer matches its hash (stored ${e.hash.slice(0, 12)}, recomputed ${recomputed.slice(0, 12)})` });
    prev = e.hash;
    if (!PROPOSAL_EVENTS.has(e.event)) latest.set(e.actionId, e);
  }
  const rows = await db.selectFrom("actions").selectAll().where("union_id", "=", unionId).where("state", "in", ["published", "retracted"]).execute();
  for (const a of rows) {
    const e = latest.get(a.id);
    if (!e) {
      breaks.push({ n: 0, actionId: a.id, problem: "published, but absent from the chain" });
      continue;
    }
    const p = JSON.parse(e.payload) as ChainPayload;
    const differs = ([
      ["title", p.title, a.title],
      ["text", p.bodyMd, a.body_md],
      ["kind", p.kind, a.kind],
      ["link", p.link, a.link],
      ["goal", p.goal, a.goal === null ? null : Number(a.goal)],
      ["deadline", p.deadline, a.deadline === null ? null : new Date(Number(a.deadline)).toISOString()],
    ] as const).filter(([, x, y]) => x !== y).map(([k]) => k);
    if (differs.length) breaks.push({ n: e.n, actionId: a.id, problem: `the stored ${differs.join(", ")} differ from what entry ${e.n} recorded` });
    if (a.state === "retracted" && e.event !== "retract") breaks.push({ n: e.n, actionId: a.id, problem: "retracted without a retract entry" });
  }
  const present = new Set(rows.map((a) => a.id));
  for (const [id, e] of latest) if (!present.has(id)) breaks.push({ n: e.n, actionId: id, problem: `entry ${e.n} records it, but it is no longer published here` });
  breaks.push(...await proposalBreaks(db, unionId, entries));
  return { entries: entries.length, head: prev, ok: breaks.length === 0, breaks };
}

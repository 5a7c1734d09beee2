import { prepared } from "../db/prepared.ts";
import { type Kysely, PostgresAdapter, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { DomainError } from "../domain-error.ts";
import { OPERATOR } from "../members/members.ts";
import { endRelationship, listRelationships } from "../relationships/relationships.ts";

/**
 * The server block list: the operator's refusal of a whole server. Its
 * unions cannot ally with or be chapters of unions here, and what it sends
 * to our inboxes is dropped. An entry is a host name (`example.org`, which
 * covers every port) or a host with its port (`example.org:8443`).
 */
export class BlocklistError extends DomainError<"invalid" | "not_found"> {
  override name = "BlocklistError";
}

export interface BlockedServer {
  readonly host: string;
  readonly reason: string | null;
  readonly createdAt: Date;
}

/** `Example.org`, `https://example.org/u/x` and `@x@example.org` all name `example.org`. */
export function normalizeHost(input: string): string {
  const raw = input.trim();
  let host = raw;
  const handle = /^@?[^@\s/]+@([^@\s/]+)$/.exec(raw);
  if (handle) host = handle[1]!;
  else if (/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) {
    try {
      host = new URL(raw).host;
    } catch {
      throw new BlocklistError("invalid", `${JSON.stringify(raw)} is not a URL`);
    }
  }
  host = host.toLowerCase().replace(/\.$/, "");
  if (!/^(\[[0-9a-f:.]+\]|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)(:\d{1,5})?$/.test(host)) {
    throw new BlocklistError("invalid", `${JSON.stringify(raw)} is not a server host name (example.org or example.org:8443)`);
  }
  return host;
}

/**
 * Blocks a server. Relationships still open with its unions end (each peer
 * is sent an Undo or Reject, and members are told), because the block
 * says no union there may be an ally or a chapter. Blocking twice is one block.
 */
export async function blockServer(deps: DomainDeps, input: string, reason: string | null): Promise<{ host: string; ended: number }> {
  const host = normalizeHost(input);
  await deps.db.insertInto("blocked_servers").values({ host, reason: reason?.trim() || null, created_at: Date.now() })
    .onConflict((oc) => oc.column("host").doNothing()).execute();
  let ended = 0;
  const unions = await deps.db.selectFrom("unions").select("id").execute();
  for (const u of unions) {
    for (const rel of await listRelationships(deps.db, u.id, { states: ["offered", "received", "active"] })) {
      if (!hostMatches(host, new URL(rel.peerActorId))) continue;
      await endRelationship(deps, u.id, rel.id, OPERATOR);
      ended++;
    }
  }
  return { host, ended };
}

export async function unblockServer(db: Kysely<DB>, input: string): Promise<string> {
  const host = normalizeHost(input);
  const r = await db.deleteFrom("blocked_servers").where("host", "=", host).executeTakeFirst();
  if (Number(r.numDeletedRows) === 0) throw new BlocklistError("not_found", `${host} is not blocked`);
  return host;
}

export async function listBlockedServers(db: Kysely<DB>): Promise<BlockedServer[]> {
  const rows = await db.selectFrom("blocked_servers").selectAll().orderBy("host").execute();
  return rows.map((r) => ({ host: r.host, reason: r.reason, createdAt: new Date(Number(r.created_at)) }));
}

function hostMatches(entry: string, url: URL): boolean {
  return entry === url.host.toLowerCase() || entry === url.hostname.toLowerCase();
}

/** Whether the server a URL lives on is blocked (by host name, or by host and port). */
export async function isBlockedUrl(db: Kysely<DB>, url: string | URL): Promise<boolean> {
  return (await blockedAmong(db, [url])) !== undefined;
}

/** The first of these URLs whose server is blocked, in one query (an inbox POST asks for its key's and its actor's). */
export async function blockedAmong(db: Kysely<DB>, urls: readonly (string | URL)[]): Promise<string | undefined> {
  const hosts = hostsOf(urls);
  if (hosts.size === 0) return undefined;
  const list = [...hosts.keys()];
  // An inbox POST asks for one host (its key's and actor's, without a port) or two: compiled once (prepared.ts).
  const rows = list.length === 1 ? (await blockedOne(db, list[0]!)).rows
    : list.length === 2 ? (await blockedTwo(db, list[0]!, list[1]!)).rows
    : await db.selectFrom("blocked_servers").select("host").where("host", "in", list).execute();
  const blocked = new Set(rows.map((r) => r.host));
  return [...hosts].find(([h]) => blocked.has(h))?.[1];
}

/**
 * blockedAmong for requests (not inside a transaction): on PostgreSQL the
 * checks asked in one turn of the event loop share one query, sent at the
 * turn's end (setImmediate), instead of a round trip each: under a burst of
 * inbox POSTs (joins) that round trip was one of the three a join cost the
 * web process. Each request still waits for its own answer, read after it
 * asked, before it goes on (nothing is cached: a server blocked by any
 * process is refused by every check sent after the block committed).
 */
export async function blockedAmongShared(db: Kysely<DB>, urls: readonly (string | URL)[]): Promise<string | undefined> {
  if (db.isTransaction || !(db.getExecutor().adapter instanceof PostgresAdapter)) return blockedAmong(db, urls);
  const hosts = hostsOf(urls);
  if (hosts.size === 0) return undefined;
  let turn = turns.get(db);
  if (turn === undefined) {
    const asked = new Set<string>();
    let settle!: { resolve(b: Set<string>): void; reject(e: unknown): void };
    const blocked = new Promise<Set<string>>((resolve, reject) => (settle = { resolve, reject }));
    turn = { asked, blocked };
    turns.set(db, turn);
    setImmediate(() => {
      turns.delete(db);
      blockedOfMany(db, [...asked]).then((r) => settle.resolve(new Set(r.rows.map((x) => x.host))), settle.reject);
    });
  }
  for (const h of hosts.keys()) turn.asked.add(h);
  const blocked = await turn.blocked;
  return [...hosts].find(([h]) => blocked.has(h))?.[1];
}

/** Each URL's host with its port and without (an entry names either), mapped to the first URL that has it. */
function hostsOf(urls: readonly (string | URL)[]): Map<string, string> {
  const hosts = new Map<string, string>();
  for (const url of urls) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      continue;
    }
    for (const h of [u.host.toLowerCase(), u.hostname.toLowerCase()]) if (!hosts.has(h)) hosts.set(h, String(url));
  }
  return hosts;
}

const turns = new WeakMap<Kysely<DB>, { asked: Set<string>; blocked: Promise<Set<string>> }>();
const blockedOfMany = prepared<[hosts: string[]], { host: string }>((db, hosts) => db.selectFrom("blocked_servers").select("host").where("host", "=", sql<string>`any(${hosts})`));

const blockedOne = prepared<[host: string], { host: string }>((db, host) => db.selectFrom("blocked_servers").select("host").where("host", "in", [host]));
const blockedTwo = prepared<[a: string, b: string], { host: string }>((db, a, b) => db.selectFrom("blocked_servers").select("host").where("host", "in", [a, b]));

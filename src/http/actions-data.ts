import "../temporal.ts";
import type { Kysely } from "kysely";
import { htmlToText as plainText } from "../html-text.ts";
import type { DB } from "../db/schema.ts";

// Read-only shapes the call-to-action pages need that the actions domain
// does not offer as functions, and the time-zone arithmetic of the forms.

/** A reply to a call-to-action, kept for officers, as plain text. */
export interface Comment {
  readonly handle: string | null;
  readonly actorId: string | null;
  readonly text: string;
  readonly sourceId: string;
  readonly at: Date;
  /** The same reply also counted as a commitment. */
  readonly committed: boolean;
}

/** Replies to one call-to-action, oldest first; withdrawn (deleted) replies are left out. */
export async function commentsOf(db: Kysely<DB>, actionId: string, limit = 500): Promise<Comment[]> {
  const rows = await db.selectFrom("action_responses as r").innerJoin("members as m", "m.id", "r.member_id")
    .select(["r.source_id", "r.content", "r.created_at", "m.handle", "m.actor_id"])
    .where("r.action_id", "=", actionId).where("r.kind", "=", "comment").where("r.undone_at", "is", null)
    .orderBy("r.created_at").limit(limit).execute();
  const commits = rows.length === 0 ? new Set<string>() : new Set((await db.selectFrom("action_responses").select("source_id")
    .where("action_id", "=", actionId).where("kind", "=", "commit").where("undone_at", "is", null)
    .where("source_id", "in", rows.map((r) => r.source_id)).execute()).map((r) => r.source_id));
  return rows.map((r) => ({
    handle: r.handle,
    actorId: r.actor_id,
    text: htmlToText(r.content ?? ""),
    sourceId: r.source_id,
    at: new Date(Number(r.created_at)),
    committed: commits.has(r.source_id),
  }));
}

/** What one member has counted towards a call-to-action, by any route (web, like, reply). */
export async function responseStateOf(db: Kysely<DB>, actionId: string, memberId: string): Promise<{ committed: boolean; done: boolean }> {
  const rows = await db.selectFrom("action_responses").select("kind").distinct()
    .where("action_id", "=", actionId).where("member_id", "=", memberId).where("undone_at", "is", null)
    .where("kind", "in", ["commit", "done"]).execute();
  const kinds = new Set(rows.map((r) => r.kind));
  return { committed: kinds.has("commit") || kinds.has("done"), done: kinds.has("done") };
}

/** The local date (YYYY-MM-DD) the scheduler last published on, which the Union record does not carry. */
export async function lastPublishedOn(db: Kysely<DB>, unionId: string): Promise<string | null> {
  const r = await db.selectFrom("unions").select("last_published_on").where("id", "=", unionId).executeTakeFirst();
  return r?.last_published_on ?? null;
}

/** Relay requests of any state, newest first, for the history under the pending ones. */
export async function recentRelays(db: Kysely<DB>, unionId: string, limit = 20) {
  return db.selectFrom("relay_requests").selectAll().where("union_id", "=", unionId).where("state", "!=", "pending")
    .orderBy("decided_at", "desc").limit(limit).execute();
}

/** Handles for actor ids (relay request authors). */
export async function handlesByActor(db: Kysely<DB>, unionId: string, actorIds: readonly string[]): Promise<Map<string, string | null>> {
  const unique = [...new Set(actorIds)];
  if (unique.length === 0) return new Map();
  const rows = await db.selectFrom("members").select(["actor_id", "handle"]).where("union_id", "=", unionId).where("actor_id", "in", unique).execute();
  return new Map(rows.map((r) => [r.actor_id!, r.handle]));
}

/** `YYYY-MM-DD HH:MM` on the union's wall clock. */
export function localDateTime(d: Date, timeZone: string): string {
  return datetimeLocalValue(d, timeZone).replace("T", " ");
}

/** The value of an `<input type="datetime-local">` showing `d` in the union's time zone. */
export function datetimeLocalValue(d: Date, timeZone: string): string {
  return Temporal.Instant.fromEpochMilliseconds(d.getTime()).toZonedDateTimeISO(timeZone).toPlainDateTime()
    .toString({ smallestUnit: "minute" });
}

/** Reads a datetime-local value as a time on the union's wall clock; undefined when it is not one. */
export function parseDatetimeLocal(value: string, timeZone: string): Date | undefined {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$/.test(value)) return undefined;
  try {
    const zoned = Temporal.PlainDateTime.from(value).toZonedDateTime(timeZone, { disambiguation: "compatible" });
    return new Date(zoned.epochMilliseconds);
  } catch {
    return undefined;
  }
}

/** IANA time zones for the settings form, with the union's own first if the runtime does not list it. */
export function timeZones(current: string): string[] {
  let zones: string[];
  try {
    zones = Intl.supportedValuesOf("timeZone");
  } catch {
    zones = [];
  }
  const all = new Set(["UTC", ...zones]);
  if (!all.has(current)) return [current, ...all];
  return [...all];
}

/**
 * Remote reply HTML as plain text, to be shown escaped: block ends become
 * line breaks, tags are dropped, the common entities decoded. Never embedded
 * as HTML.
 */
export function htmlToText(html: string): string {
  return plainText(html).replace(/\n{3,}/g, "\n\n").trim();
}

/** A URL from another server, as a link target only if it is http(s). */
export function safeHref(url: string | null | undefined): string {
  if (!url) return "#";
  try {
    const u = new URL(url);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : "#";
  } catch {
    return "#";
  }
}

import { createHash } from "node:crypto";
import type { Context, InboxContext } from "@fedify/fedify";
import { Collection, Link, Mention, Update } from "@fedify/vocab";
import type { Kysely } from "kysely";
import { logger } from "../src/logging.ts";
import type { DB } from "../src/db/schema.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { acceptChapterReport, type ChapterNode, chapterSnapshot, MAX_DEPTH, MAX_NODES } from "../src/relationships/chapters.ts";
import { listRelationships } from "../src/relationships/relationships.ts";
import { acceptTally, relayedTotals, tallyRecipient } from "../src/relationships/tallies.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { processOnce } from "./inbox-record.ts";
import { type OutboundDeps, recipientFor } from "./outbound.ts";
import type { RelationshipInboxDeps } from "./relationships.ts";

const log = logger("federation", "relationship-reports");

/*
 * Reports between unions (README, "Commitments counted back" and "Chapter
 * totals"): an `Update` by the reporting Group of a `Collection` it owns,
 * whose `context` says what it is about and whose `items` are named
 * `Collection`s carrying `totalItems`:
 *   - context = a call-to-action's Note: this union's members' responses to
 *     it (items: commitments, replies, likes);
 *   - context = the parent union's Group: this chapter's totals (items:
 *     members, commitments, leads, chapters), its own chapters nested the
 *     same way inside `chapters`.
 * The object's `updated` orders reports: the receiver keeps the newest.
 */

function named(name: string, totalItems: number): Collection {
  return new Collection({ name, totalItems });
}

function nodeCollection(node: ChapterNode, extra: { id?: URL; context?: URL; updated?: Temporal.Instant } = {}): Collection {
  return new Collection({
    ...(extra.id ? { id: extra.id } : {}),
    ...(extra.context ? { contexts: [extra.context] } : {}),
    ...(extra.updated ? { updated: extra.updated } : {}),
    attribution: new URL(node.actorId),
    name: node.name,
    items: [
      named("members", node.members),
      named("commitments", node.commitments),
      new Collection({ name: "leads", totalItems: node.leads.length, items: node.leads.map((l) => new Mention({ name: l.handle, ...(l.actorId ? { href: new URL(l.actorId) } : {}) })) }),
      new Collection({ name: "chapters", totalItems: node.chapters.length, items: node.chapters.map((c) => nodeCollection(c)) }),
    ],
  });
}

type ReportIntent = Extract<OutboxIntent, { kind: "relationship.tally" | "relationship.report" }>;

/** Sends this union's current totals: for a relayed call to its author, or its chapter report to its parent. */
export async function handleReportIntent(deps: OutboundDeps, ctx: Context<void>, union: Union, intent: ReportIntent): Promise<void> {
  const groupId = ctx.getActorUri(union.slug);
  const now = Date.now();
  const updated = Temporal.Instant.fromEpochMilliseconds(now);
  let to: string | undefined;
  let object: Collection;
  if (intent.kind === "relationship.tally") {
    to = await tallyRecipient(deps.db, union.id, intent.noteId);
    if (!to) return void log.info("Not reporting totals for {note}: no longer relaying it for its author", { note: intent.noteId });
    const t = await relayedTotals(deps.db, union.id, intent.noteId);
    const key = createHash("sha256").update(intent.noteId).digest("hex").slice(0, 32);
    object = new Collection({
      id: new URL(`/u/${union.slug}/relays/${key}/tally`, deps.origin), attribution: groupId, contexts: [new URL(intent.noteId)], name: union.name, updated,
      items: [named("commitments", t.commitments), named("replies", t.replies), named("likes", t.likes)],
    });
  } else {
    to = (await listRelationships(deps.db, union.id, { states: ["active"], kinds: ["parent"] }))[0]?.peerActorId;
    if (!to) return void log.info("Not reporting chapter totals of {union}: it has no parent", { union: union.slug });
    object = nodeCollection(await chapterSnapshot(deps.db, union.id, groupId.href), { id: new URL(`/u/${union.slug}/chapter-report`, deps.origin), context: new URL(to), updated });
  }
  const recipient = await recipientFor(deps, ctx, union, to);
  if (!recipient) return;
  await ctx.sendActivity({ identifier: union.slug }, recipient, new Update({ id: new URL(`${object.id!.href}/${now}`), actor: groupId, object, to: new URL(to), updated }), {
    orderingKey: `${intent.kind}:${union.id}`,
  });
}

async function noFetch(url: string): Promise<never> {
  throw new Error(`not fetching ${url}: a report must be embedded`);
}

/** The named parts of a report: name → the item. */
async function parts(c: Collection): Promise<Map<string, Collection>> {
  const out = new Map<string, Collection>();
  for await (const item of c.getItems({ documentLoader: noFetch, contextLoader: noFetch })) {
    if (item instanceof Collection && item.name) out.set(String(item.name), item);
  }
  return out;
}

const count = (m: Map<string, Collection>, name: string) => m.get(name)?.totalItems ?? 0;

async function parseNode(c: Collection, depth: number, seen: { n: number }): Promise<ChapterNode> {
  if (depth > MAX_DEPTH || ++seen.n > MAX_NODES) throw new Error("the chapter tree is too large");
  if (!c.attributionId) throw new Error("a chapter without attributedTo");
  const p = await parts(c);
  const leads: { actorId: string | null; handle: string }[] = [];
  for await (const l of p.get("leads")?.getItems({ documentLoader: noFetch, contextLoader: noFetch }) ?? []) {
    if (l instanceof Link && l.name) leads.push({ actorId: l.href?.href ?? null, handle: String(l.name) });
  }
  const chapters: ChapterNode[] = [];
  for await (const sub of p.get("chapters")?.getItems({ documentLoader: noFetch, contextLoader: noFetch }) ?? []) {
    if (sub instanceof Collection) chapters.push(await parseNode(sub, depth + 1, seen));
  }
  return { actorId: c.attributionId.href, name: String(c.name ?? c.attributionId.href), members: count(p, "members"), commitments: count(p, "commitments"), leads, chapters };
}

/**
 * An Update whose object is a union's report (see above). Returns false for
 * any other Update, which the caller handles as before. A report from a
 * union with no relationship that entitles it, about something else than
 * its own totals, or not embedded, is refused and logged.
 */
export async function onReport(deps: RelationshipInboxDeps, ctx: InboxContext<void>, update: Update): Promise<boolean> {
  let object: unknown;
  try {
    object = await update.getObject({ documentLoader: noFetch, contextLoader: ctx.contextLoader });
  } catch {
    return false;
  }
  if (!(object instanceof Collection) || !update.actorId || !object.contextIds[0]) return false;
  const actor = update.actorId.href;
  const about = object.contextIds[0];
  const refuse = (why: string) => log.warn("Refused a report by {actor} about {about}: {why}", { actor, about: about.href, why });
  await processOnce({ ...deps, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader }, update, null, async () => {
    // The report is the sender's own, about its own members.
    if (object.attributionId?.href !== actor || !object.id || object.id.origin !== update.actorId!.origin) return refuse("not the sender's own report");
    const reportedAt = object.updated?.epochMilliseconds;
    if (reportedAt === undefined) return refuse("no `updated` time");
    try {
      const parsedActor = ctx.parseUri(about);
      if (parsedActor?.type === "actor") {
        const union = await getUnionBySlug(deps.db, parsedActor.identifier);
        if (!union) return refuse("no such union here");
        const node = await parseNode(object, 0, { n: 0 });
        const outcome = await acceptChapterReport(deps, union.id, node, reportedAt);
        if (outcome === "refused") return refuse(`${actor} is not an active chapter of ${union.slug}`);
        return void log.info("Chapter report from {actor} to {union}: {outcome}", { actor, union: union.slug, outcome });
      }
      const p = await parts(object);
      const report = { reporterActorId: actor, reporterName: object.name ? String(object.name) : null, reportedAt, commitments: count(p, "commitments"), replies: count(p, "replies"), likes: count(p, "likes") };
      const parsedNote = ctx.parseUri(about);
      const own = parsedNote?.type === "object" && parsedNote.values.identifier && parsedNote.values.id ? await getUnionBySlug(deps.db, parsedNote.values.identifier) : undefined;
      if (own && parsedNote?.type === "object") {
        const outcome = await acceptTally(deps, own.id, { actionId: parsedNote.values.id! }, report);
        if (outcome === "refused") return refuse(`no relationship with ${own.slug} entitles it to report on that call`);
        return void log.info("Totals from {actor} for {about}: {outcome}", { actor, about: about.href, outcome });
      }
      // A call we relayed ourselves: a chapter reports the parent's call through us.
      const unions = await unionsRelaying(deps.db, about.href);
      let applied = false;
      for (const unionId of unions) applied = (await acceptTally(deps, unionId, { noteId: about.href }, report)) !== "refused" || applied;
      if (!applied) refuse("no relationship entitles it to report on that call");
    } catch (error) {
      refuse(`malformed: ${(error as Error).message}`);
    }
  });
  return true;
}

async function unionsRelaying(db: Kysely<DB>, noteId: string): Promise<string[]> {
  return (await db.selectFrom("relay_requests").select("union_id").where("note_id", "=", noteId).where("state", "=", "relayed").execute()).map((r) => r.union_id);
}

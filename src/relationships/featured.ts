import { randomUUID } from "node:crypto";
import { type Kysely, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { DomainError } from "../domain-error.ts";
import { type By, requireOfficer } from "../members/members.ts";

// A union's allies and its cabinet, published as lists Mastodon 4.6 shows
// natively (FEP-7aa9 "featured collections"). Nobody is listed without their
// own consent: the union asks each actor (a FeatureRequest), and an item is
// shown only once the actor's server answered with a stamp that checks out.
// The other way round, this union answers other collections' requests:
// allies at once, anyone else when an officer decides.

export type FeaturedCollection = "allies" | "cabinet";
export const FEATURED_COLLECTIONS: readonly FeaturedCollection[] = ["allies", "cabinet"];
/** FEP-7aa9 proposes 150 as the most a collection holds; a receiver may refuse longer ones. */
export const FEATURED_LIMIT = 150;

export class FeaturedError extends DomainError<"not_found" | "forbidden" | "conflict"> {}

export interface FeaturedItem {
  readonly unionId: string;
  readonly id: string;
  readonly collection: FeaturedCollection;
  readonly actorId: string;
  readonly state: "requested" | "accepted" | "rejected" | "withdrawn";
  readonly stamp: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export interface FeatureStamp {
  readonly id: string;
  readonly requestId: string;
  readonly requester: string;
  readonly collection: string;
  readonly state: "pending" | "accepted" | "rejected" | "withdrawn";
  readonly decidedBy: string | null;
  readonly createdAt: Date;
}

const LIVE = ["requested", "accepted"] as const;

/** Who belongs in each collection now: active allies; the leader and officers with a Fediverse account. */
async function wanted(db: Kysely<DB>, unionId: string): Promise<Record<FeaturedCollection, string[]>> {
  const allies = await db.selectFrom("union_relationships").select("peer_actor_id").where("union_id", "=", unionId)
    .where("kind", "=", "ally").where("state", "=", "active").orderBy("created_at").limit(FEATURED_LIMIT).execute();
  const cabinet = await db.selectFrom("members").select("actor_id").where("union_id", "=", unionId).where("state", "=", "active")
    .where("role", "in", ["leader", "officer"]).where("role", "<>", sql.lit("member")).where("actor_id", "is not", null).orderBy("joined_at").limit(FEATURED_LIMIT).execute();
  return { allies: allies.map((r) => r.peer_actor_id), cabinet: cabinet.map((r) => r.actor_id!) };
}

/**
 * Brings the collections in line with the union: asks each new ally and
 * officer for consent (a `featured.request` intent, once per actor), drops
 * those who are no longer allies or officers, and withdraws the stamps this
 * union gave automatically to a union that is no longer an ally. Safe to run
 * any number of times, from any number of workers: each change is a
 * conditional write.
 */
export async function syncFeatured(deps: DomainDeps, unionId: string, now = Date.now()): Promise<{ requested: number; dropped: number; withdrawn: number }> {
  const want = await wanted(deps.db, unionId);
  let requested = 0, dropped = 0, withdrawn = 0;
  await deps.db.transaction().execute(async (trx) => {
    const items = await trx.selectFrom("featured_items").select(["id", "collection", "actor_id", "state"]).where("union_id", "=", unionId).execute();
    for (const collection of FEATURED_COLLECTIONS) {
      const have = items.filter((i) => i.collection === collection);
      for (const actorId of want[collection]) {
        // An actor who refused once is not asked again; a withdrawn consent neither, until they are re-added.
        if (have.some((i) => i.actor_id === actorId && i.state !== "withdrawn")) continue;
        const id = randomUUID();
        await trx.insertInto("featured_items").values({ id, union_id: unionId, collection, actor_id: actorId, state: "requested", stamp: null, created_at: now, updated_at: now }).execute();
        await deps.outbox.add(trx, { kind: "featured.request", unionId, itemId: id });
        requested++;
      }
      for (const item of have) {
        if (want[collection].includes(item.actor_id) || !(LIVE as readonly string[]).includes(item.state)) continue;
        const r = await trx.updateTable("featured_items").set({ state: "withdrawn", updated_at: now }).where("id", "=", item.id).where("state", "in", LIVE).executeTakeFirst();
        dropped += Number(r.numUpdatedRows);
        // Only an item that was listed is taken back from followers.
        if (Number(r.numUpdatedRows) === 1 && item.state === "accepted") await announceItem(deps, trx, { id: item.id, union_id: unionId, collection }, "featured.remove");
      }
    }
    const allies = new Set(want.allies);
    const automatic = await trx.selectFrom("feature_stamps").select(["id", "requester"]).where("union_id", "=", unionId)
      .where("state", "=", "accepted").where("decided_by", "is", null).execute();
    for (const s of automatic) {
      if (allies.has(s.requester)) continue;
      const r = await trx.updateTable("feature_stamps").set({ state: "withdrawn", updated_at: now }).where("id", "=", s.id).where("state", "=", "accepted").executeTakeFirst();
      if (Number(r.numUpdatedRows) === 1) {
        await deps.outbox.add(trx, { kind: "featured.withdraw", unionId, stampId: s.id });
        withdrawn++;
      }
    }
  });
  return { requested, dropped, withdrawn };
}

export type FeatureAnswerOutcome = "applied" | "duplicate" | "unknown";

/**
 * The featured actor's answer to our request. Only that actor can answer,
 * and only a request still waiting; the stamp was checked by the caller
 * (federation/ fetches it from the actor's server).
 */
export async function featureAnswered(deps: DomainDeps, itemId: string, actorId: string, answer: { accepted: true; stamp: string } | { accepted: false }): Promise<FeatureAnswerOutcome> {
  const item = await deps.db.selectFrom("featured_items").selectAll().where("id", "=", itemId).executeTakeFirst();
  if (!item || item.actor_id !== actorId) return "unknown";
  if (item.state !== "requested") return item.state === (answer.accepted ? "accepted" : "rejected") ? "duplicate" : "unknown";
  return deps.db.transaction().execute(async (trx) => {
    const r = await trx.updateTable("featured_items")
      .set(answer.accepted ? { state: "accepted", stamp: answer.stamp, updated_at: Date.now() } : { state: "rejected", updated_at: Date.now() })
      .where("id", "=", itemId).where("state", "=", "requested").executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return "duplicate";
    if (answer.accepted) await announceItem(deps, trx, item, "featured.add");
    return "applied";
  });
}

/**
 * Followers hear of a change to the allies list (FEP-7aa9 says a collection
 * "can" send Add and Remove; Mastodon does, to followers). The cabinet is
 * not announced: who may see it follows the roster's visibility rule, which
 * not every follower meets.
 */
async function announceItem(deps: DomainDeps, trx: Kysely<DB>, item: { id: string; union_id: string; collection: string }, kind: "featured.add" | "featured.remove"): Promise<void> {
  if (item.collection !== "allies") return;
  await deps.outbox.add(trx, { kind, unionId: item.union_id, itemId: item.id });
}

/** The featured actor withdrew its consent (a Delete of its stamp): the item leaves the collection. */
export async function stampRevoked(deps: DomainDeps, stamp: string, actorId: string): Promise<number> {
  return deps.db.transaction().execute(async (trx) => {
    const items = await trx.selectFrom("featured_items").select(["id", "union_id", "collection"]).where("stamp", "=", stamp).where("actor_id", "=", actorId).where("state", "=", "accepted").execute();
    let n = 0;
    for (const item of items) {
      const r = await trx.updateTable("featured_items").set({ state: "withdrawn", updated_at: Date.now() }).where("id", "=", item.id).where("state", "=", "accepted").executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) continue;
      n++;
      await announceItem(deps, trx, item, "featured.remove");
    }
    return n;
  });
}

export async function featuredItem(db: Kysely<DB>, itemId: string): Promise<FeaturedItem | undefined> {
  const r = await db.selectFrom("featured_items").selectAll().where("id", "=", itemId).executeTakeFirst();
  return r ? toItem(r) : undefined;
}

/** What a collection shows: the items whose actor consented, in the order they were added. */
export async function consentedItems(db: Kysely<DB>, unionId: string, collection: FeaturedCollection): Promise<FeaturedItem[]> {
  const rows = await db.selectFrom("featured_items").selectAll().where("union_id", "=", unionId).where("collection", "=", collection)
    .where("state", "=", "accepted").orderBy("created_at").orderBy("id").limit(FEATURED_LIMIT).execute();
  return rows.map(toItem);
}

export async function listFeaturedItems(db: Kysely<DB>, unionId: string): Promise<FeaturedItem[]> {
  const rows = await db.selectFrom("featured_items").selectAll().where("union_id", "=", unionId).orderBy("created_at").orderBy("id").execute();
  return rows.map(toItem);
}

export interface FeatureRequestIn {
  readonly requestId: string;
  readonly requester: string;
  readonly collection: string;
  /** The requester is a union this one is allied with: consent is automatic. */
  readonly fromAlly: boolean;
}

/**
 * Another actor asks to list this union in one of its collections. An ally
 * is answered at once (the union's bylaws make allies public partners);
 * anyone else waits for an officer. A repeated request finds its stamp.
 */
export async function receiveFeatureRequest(deps: DomainDeps, unionId: string, req: FeatureRequestIn, now = Date.now()): Promise<FeatureStamp> {
  return deps.db.transaction().execute(async (trx) => {
    const existing = await trx.selectFrom("feature_stamps").selectAll().where("union_id", "=", unionId).where("request_id", "=", req.requestId).executeTakeFirst();
    if (existing) {
      if (existing.requester !== req.requester) throw new FeaturedError("conflict", "that request id belongs to another actor");
      return toStamp(existing);
    }
    const row = {
      id: randomUUID(), union_id: unionId, request_id: req.requestId, requester: req.requester, collection: req.collection,
      state: req.fromAlly ? "accepted" : "pending", decided_by: null, created_at: now, updated_at: now,
    };
    await trx.insertInto("feature_stamps").values(row).execute();
    if (req.fromAlly) await deps.outbox.add(trx, { kind: "featured.answer", unionId, stampId: row.id });
    return toStamp(row);
  });
}

/** An officer answers a request that was waiting (accept issues the stamp; reject sends a Reject). */
export async function decideFeatureRequest(deps: DomainDeps, unionId: string, stampId: string, by: By, accept: boolean): Promise<FeatureStamp> {
  const officer = await requireOfficer(deps.db, unionId, by);
  return deps.db.transaction().execute(async (trx) => {
    const s = await trx.selectFrom("feature_stamps").selectAll().where("union_id", "=", unionId).where("id", "=", stampId).executeTakeFirst();
    if (!s) throw new FeaturedError("not_found", `no feature request ${stampId}`);
    if (s.state !== "pending") throw new FeaturedError("conflict", `that request was already ${s.state}`);
    const decidedBy = by.kind === "operator" ? "operator" : officer?.id ?? by.memberId;
    await trx.updateTable("feature_stamps").set({ state: accept ? "accepted" : "rejected", decided_by: decidedBy, updated_at: Date.now() }).where("id", "=", stampId).execute();
    await deps.outbox.add(trx, { kind: "featured.answer", unionId, stampId });
    return toStamp({ ...s, state: accept ? "accepted" : "rejected", decided_by: decidedBy });
  });
}

/** An officer withdraws consent given earlier: the stamp stops resolving and its holder is told. */
export async function withdrawStamp(deps: DomainDeps, unionId: string, stampId: string, by: By): Promise<void> {
  await requireOfficer(deps.db, unionId, by);
  await deps.db.transaction().execute(async (trx) => {
    const r = await trx.updateTable("feature_stamps").set({ state: "withdrawn", updated_at: Date.now() })
      .where("union_id", "=", unionId).where("id", "=", stampId).where("state", "=", "accepted").executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) throw new FeaturedError("not_found", "no consent to withdraw with that id");
    await deps.outbox.add(trx, { kind: "featured.withdraw", unionId, stampId });
  });
}

export async function getStamp(db: Kysely<DB>, unionId: string, stampId: string): Promise<FeatureStamp | undefined> {
  const r = await db.selectFrom("feature_stamps").selectAll().where("union_id", "=", unionId).where("id", "=", stampId).executeTakeFirst();
  return r ? toStamp(r) : undefined;
}

export async function listStamps(db: Kysely<DB>, unionId: string): Promise<FeatureStamp[]> {
  const rows = await db.selectFrom("feature_stamps").selectAll().where("union_id", "=", unionId).orderBy("created_at").orderBy("id").execute();
  return rows.map(toStamp);
}

type ItemRow = { id: string; union_id: string; collection: string; actor_id: string; state: string; stamp: string | null; created_at: number | string; updated_at: number | string };
function toItem(r: ItemRow): FeaturedItem {
  return {
    id: r.id, unionId: r.union_id, collection: r.collection as FeaturedCollection, actorId: r.actor_id, state: r.state as FeaturedItem["state"], stamp: r.stamp,
    createdAt: new Date(Number(r.created_at)), updatedAt: new Date(Number(r.updated_at)),
  };
}

type StampRow = { id: string; request_id: string; requester: string; collection: string; state: string; decided_by: string | null; created_at: number | string };
function toStamp(r: StampRow): FeatureStamp {
  return {
    id: r.id, requestId: r.request_id, requester: r.requester, collection: r.collection, state: r.state as FeatureStamp["state"],
    decidedBy: r.decided_by, createdAt: new Date(Number(r.created_at)),
  };
}

/**
 * syncFeatured for every union whose collections are out of line (the
 * worker's periodic pass, every 30 s in every worker). Four plain reads
 * across all unions find them; when nothing changed, no transaction is
 * opened and nothing is written.
 */
export async function syncAllFeatured(deps: DomainDeps): Promise<number> {
  const stale = await unionsOutOfLine(deps.db);
  for (const unionId of stale) await syncFeatured(deps, unionId);
  return stale.length;
}

/** The unions for which syncFeatured would change something, by the same rules it applies. */
export async function unionsOutOfLine(db: Kysely<DB>): Promise<string[]> {
  const allies = await db.selectFrom("union_relationships").select(["union_id", "peer_actor_id as actor"]).where("kind", "=", "ally").where("state", "=", "active").execute();
  // Union by union (`union_id in unions`), so that the officers' partial index
  // (members_union_officers) serves it: without a union SQLite walked every
  // member by members_actor_union for `actor_id is not null`, 130-330 ms of
  // the main thread at 10^5 members, every 30 s.
  const cabinet = await db.selectFrom("members").select(["union_id", "actor_id as actor"])
    .where("union_id", "in", db.selectFrom("unions").select("id")).where("state", "=", "active")
    .where("role", "in", ["leader", "officer"]).where("role", "<>", sql.lit("member")).where("actor_id", "is not", null).execute();
  const items = await db.selectFrom("featured_items").select(["union_id", "collection", "actor_id", "state"]).where("state", "!=", "withdrawn").execute();
  const automatic = await db.selectFrom("feature_stamps").select(["union_id", "requester"]).where("state", "=", "accepted").where("decided_by", "is", null).execute();
  const want = new Map<string, Set<string>>();
  const add = (u: string, c: FeaturedCollection, a: string) => (want.get(`${u}\n${c}`) ?? want.set(`${u}\n${c}`, new Set()).get(`${u}\n${c}`)!).add(a);
  for (const r of allies) add(r.union_id, "allies", r.actor);
  for (const r of cabinet) add(r.union_id, "cabinet", r.actor!);
  const out = new Set<string>();
  const have = new Map<string, Set<string>>();
  for (const i of items) {
    const key = `${i.union_id}\n${i.collection}`;
    (have.get(key) ?? have.set(key, new Set()).get(key)!).add(i.actor_id);
    // Someone listed (or asked) who no longer belongs there.
    if ((LIVE as readonly string[]).includes(i.state) && !want.get(key)?.has(i.actor_id)) out.add(i.union_id);
  }
  for (const [key, actors] of want) {
    const unionId = key.split("\n")[0]!;
    // Past the limit syncFeatured decides who is in; let it.
    if (actors.size > FEATURED_LIMIT) out.add(unionId);
    // Someone who belongs there and was never asked.
    for (const a of actors) if (!have.get(key)?.has(a)) out.add(unionId);
  }
  // Automatic consent given to a union that is no longer an ally.
  for (const s of automatic) if (!want.get(`${s.union_id}\nallies`)?.has(s.requester)) out.add(s.union_id);
  return [...out];
}

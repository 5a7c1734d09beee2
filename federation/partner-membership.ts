import { type Context, type Federation, signRequest } from "@fedify/fedify";
import type { MiddlewareHandler } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { findRelationshipWith, listRelationships } from "../src/relationships/relationships.ts";
import { partnersRelayingOurs } from "../src/relationships/partner-counted.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { hitLimits, type Limit } from "../src/sessions/rate-limit.ts";
import { LOGIN_WINDOW_MS } from "../src/sessions/sessions.ts";
import { MUSTER_NS } from "./relationship-vocab.ts";
import { signedKeyOwner } from "./signed-key-owner.ts";

const log = logger("federation", "partner-membership");

/**
 * The membership question between partner unions (README, "Counting back
 * with stock Mastodon"). Union A asks its partner B, by a GET signed with
 * A's Group key:
 *
 *   GET <B's actor id>/membership-check?actor=<actor URL>
 *
 * and B answers, only to a union it has an active relationship with, only
 * about that one actor:
 *
 *   { "@context": { "muster": "<MUSTER_NS>" }, "type": "muster:MembershipAnswer",
 *     "muster:union": "<B's actor id>", "muster:actor": "<actor URL>", "muster:member": true }
 *
 * No roster leaves B: a partner learns one yes or no for an actor that has
 * already shown itself to it by responding to its call.
 */
export const MEMBERSHIP_CHECK_PATH = "membership-check";
const ANSWER_TYPE = "muster:MembershipAnswer";
const JSON_TYPE = "application/activity+json";

export function membershipAnswerJson(unionActorId: string, actorId: string, member: boolean): Record<string, unknown> {
  return { "@context": { muster: MUSTER_NS }, type: ANSWER_TYPE, "muster:union": unionActorId, "muster:actor": actorId, "muster:member": member };
}

/** B's side: answers a partner's signed question. Unsigned 401; signed by anyone but an active partner 403. */
export function membershipCheckRoute(db: Kysely<DB>, origin: URL, federation: Federation<void>): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "GET") return next();
    const m = new RegExp(`^/u/([^/]+)/${MEMBERSHIP_CHECK_PATH}$`).exec(c.req.path);
    if (!m) return next();
    const union = await getUnionBySlug(db, decodeURIComponent(m[1]!));
    if (!union) return c.json({ error: "no such union" }, 404);
    const actor = c.req.query("actor");
    if (!actor || !URL.canParse(actor) || actor.length > 2048) return c.json({ error: "actor must be an actor URL" }, 400);
    const asker = await signedKeyOwner(federation.createContext(c.req.raw, undefined));
    if (!asker) return c.json({ error: "sign this request with your union's key" }, 401);
    const rel = await findRelationshipWith(db, union.id, asker.href);
    if (rel?.state !== "active") {
      log.warn("Refused a membership question about {actor} to {union} from {asker}: no active relationship", { actor, union: union.slug, asker: asker.href });
      return c.json({ error: "only an active ally, parent or chapter may ask" }, 403);
    }
    const hops = Math.max(0, Math.min(MAX_HOPS, Number.parseInt(c.req.query("hops") ?? "0", 10) || 0));
    let member = (await db.selectFrom("members").select("id").where("union_id", "=", union.id).where("actor_id", "=", actor).where("state", "=", "active").executeTakeFirst()) !== undefined;
    // Asked by our parent: a member of one of our chapters is ours too, as
    // far as the tree is concerned (a grand-chapter's member responding at
    // the top). We ask our own chapters, bounded and cached like any
    // question; `hops` (signed with the URL) stops a cycle of consents.
    if (!member && rel.kind === "parent" && hops < MAX_HOPS) {
      try {
        member = (await chapterVouching(db, federation.createContext(c.req.raw, undefined), union, actor, hops + 1)) !== undefined;
      } catch (error) {
        log.warn("Could not ask the chapters of {union} about {actor}: {error}", { union: union.slug, actor, error: (error as Error).message });
        return c.json({ error: "a chapter could not be asked; try again later" }, 503);
      }
    }
    const self = new URL(`/u/${union.slug}`, origin).href;
    return c.body(JSON.stringify(membershipAnswerJson(self, actor, member)), 200, {
      "Content-Type": JSON_TYPE, "Cache-Control": "private, no-store", Vary: "Signature, Signature-Input",
    });
  };
}

/** Answers kept briefly, per asking union, partner and actor: a burst of likes asks once. */
const CACHE_MS = 120_000;
const CACHE_MAX = 10_000;
const answers = new Map<string, { member: boolean; until: number }>();

/** Forgets cached answers (tests, and a relationship that changed). */
export function forgetMembershipAnswers(): void {
  answers.clear();
  refusalLogged.clear();
}

/**
 * Every question not answered from the cache costs a signed GET, and any
 * server can mint actors: a flood of likes from made-up accounts must not
 * become a flood of questions. Each question counts against its union's
 * limit per responder's server and its union's limit overall (kept in the
 * database, so the bound holds across processes; the window is the one
 * pruneExpired keeps). A question refused is not asked: that response is
 * not counted for any partner, as if nobody had vouched.
 */
export const CHECKS_PER_SERVER = 30;
export const CHECKS_PER_UNION = 300;
export const CHECK_WINDOW_MS = LOGIN_WINDOW_MS;
export function checkLimitsFor(unionId: string, actorId: string): Limit[] {
  return [
    { bucket: `partner-check:${unionId}:server:${new URL(actorId).host}`, max: CHECKS_PER_SERVER, windowMs: CHECK_WINDOW_MS },
    { bucket: `partner-check:${unionId}`, max: CHECKS_PER_UNION, windowMs: CHECK_WINDOW_MS },
  ];
}

/** Buckets whose refusal was logged in this window: a flood logs once, not once per like. */
const refusalLogged = new Map<string, number>();

function logRefusalOnce(union: Union, actorId: string, bucket: string): void {
  const now = Date.now();
  if ((refusalLogged.get(bucket) ?? 0) > now) return;
  if (refusalLogged.size >= 1_000) refusalLogged.clear();
  refusalLogged.set(bucket, now + CHECK_WINDOW_MS);
  log.warn("Not asking partners of {union} whether {actor} (and others like it) is their member: limit {bucket} reached; such responses are not counted for a partner", { union: union.slug, actor: actorId, bucket });
}

/**
 * A's side: which of the partners relaying A's calls says this actor is its
 * member, if any. A partner that cannot be reached makes the whole question
 * throw (the inbox retries the activity later) unless another vouches.
 */
export async function partnerVouching(db: Kysely<DB>, ctx: Context<void>, union: Union, actorId: string): Promise<string | undefined> {
  return vouching(db, ctx, union, actorId, await partnersRelayingOurs(db, union.id), 0);
}

/** How deep below the asking union a question may travel (chapter, grand-chapter, ...). */
const MAX_HOPS = 4;

/** Which of our active chapters says this actor is its member (or its chapters' member). */
async function chapterVouching(db: Kysely<DB>, ctx: Context<void>, union: Union, actorId: string, hops: number): Promise<string | undefined> {
  const chapters = (await listRelationships(db, union.id, { states: ["active"] })).filter((r) => r.kind === "chapter").map((r) => r.peerActorId);
  return vouching(db, ctx, union, actorId, chapters, hops);
}

async function vouching(db: Kysely<DB>, ctx: Context<void>, union: Union, actorId: string, partners: readonly string[], hops: number): Promise<string | undefined> {
  let failure: Error | undefined;
  for (const partner of partners) {
    const key = `${union.id}\n${partner}\n${actorId}\n${hops}`;
    const hit = answers.get(key);
    let member: boolean;
    if (hit && hit.until > Date.now()) member = hit.member;
    else {
      const limited = await hitLimits(db, checkLimitsFor(union.id, actorId));
      if (!limited.ok) {
        logRefusalOnce(union, actorId, limited.limit.bucket);
        continue;
      }
      try {
        member = await ask(ctx, union, partner, actorId, hops);
      } catch (error) {
        failure = error as Error;
        continue;
      }
      if (answers.size >= CACHE_MAX) answers.clear();
      answers.set(key, { member, until: Date.now() + CACHE_MS });
    }
    if (member) return partner;
  }
  if (failure) throw new Error(`could not ask every partner of ${union.slug} about ${actorId}; will retry: ${failure.message}`);
  return undefined;
}

async function ask(ctx: Context<void>, union: Union, partner: string, actorId: string, hops: number): Promise<boolean> {
  const keys = await ctx.getActorKeyPairs(union.slug);
  const rsa = keys.find((k) => k.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5") ?? keys[0];
  if (!rsa) throw new Error(`union ${union.slug} has no signing key`);
  const url = new URL(`${partner.replace(/\/$/, "")}/${MEMBERSHIP_CHECK_PATH}`);
  url.searchParams.set("actor", actorId);
  if (hops > 0) url.searchParams.set("hops", String(hops));
  const signed = await signRequest(new Request(url, { headers: { Accept: JSON_TYPE } }), rsa.privateKey, rsa.keyId);
  // No redirects: the answer must come from the partner's own server.
  const res = await fetch(signed, { redirect: "manual", signal: AbortSignal.timeout(10_000) });
  if (res.status >= 500 || res.status === 429) {
    await res.body?.cancel();
    throw new Error(`${url.origin} answered ${res.status}`);
  }
  if (!res.ok) {
    await res.body?.cancel();
    log.info("{partner} would not say whether {actor} is its member ({status})", { partner, actor: actorId, status: res.status });
    return false;
  }
  const text = await res.text();
  let doc: Record<string, unknown>;
  try {
    doc = text.length <= 16_384 ? JSON.parse(text) : {};
  } catch {
    doc = {};
  }
  // The answer must be about the very actor asked, from the very partner asked.
  const ok = doc.type === ANSWER_TYPE && doc["muster:union"] === partner && doc["muster:actor"] === actorId && typeof doc["muster:member"] === "boolean";
  if (!ok) {
    log.warn("Ignored a malformed or misdirected membership answer from {partner} about {actor}", { partner, actor: actorId });
    return false;
  }
  return doc["muster:member"] === true;
}

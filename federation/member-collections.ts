import { type Federation, getKeyOwner, verifyRequest } from "@fedify/fedify";
import type { Context, Hono } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { canSeeMembers } from "../src/members/visibility.ts";
import { getUnionBySlug } from "../src/unions/unions.ts";

const log = logger("federation", "members");
const AS = "https://www.w3.org/ns/activitystreams";
const PAGE = 100;
const JSON_LD = "application/activity+json";

/**
 * Muster's JSON-LD extension, served at /ns: a `Membership` ties a `member`
 * actor to their `sponsor` actor (the backlink of the member tree), with the
 * member's `role`, `portfolio` title and `joined` time.
 */
export function musterContext(origin: URL) {
  return {
    "@context": {
      muster: new URL("/ns#", origin).href,
      xsd: "http://www.w3.org/2001/XMLSchema#",
      Membership: "muster:Membership",
      member: { "@id": "muster:member", "@type": "@id" },
      sponsor: { "@id": "muster:sponsor", "@type": "@id" },
      role: "muster:role",
      portfolio: "muster:portfolio",
      joined: { "@id": "muster:joined", "@type": "xsd:dateTime" },
    },
  };
}

export interface MemberCollectionDeps {
  readonly db: Kysely<DB>;
  readonly federation: Federation<void>;
  readonly origin: URL;
}

/**
 * The federated member list and the moderators collection. Plain routes,
 * not Fedify collections: their items carry properties (sponsor, role) that
 * Fedify's vocabulary has no place for.
 */
export function mountMemberCollections(app: Hono, deps: MemberCollectionDeps): void {
  const { db, origin } = deps;

  app.get("/ns", (c) => c.json(musterContext(origin), 200, { "Content-Type": "application/ld+json" }));

  app.get("/u/:slug/members", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.json({ error: { code: "not_found", message: "no such union" } }, 404);
    const viewer = await signer(deps, c);
    if (!(await canSeeMembers(db, union, { actorId: viewer }))) {
      return viewer
        ? c.json({ error: { code: "forbidden", message: `this union shows its members to ${union.membersVisibility} only` } }, 403)
        : c.json({ error: { code: "unauthorized", message: "sign the request (HTTP Signatures) as an account on a member's server" } }, 401, { Vary: "Signature, Signature-Input" });
    }
    const base = new URL(`/u/${union.slug}/members`, origin);
    const context = [AS, new URL("/ns", origin).href];
    const total = await db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
      .where("union_id", "=", union.id).where("state", "=", "active").executeTakeFirstOrThrow();
    const page = c.req.query("page");
    if (page === undefined) {
      return c.json({ "@context": context, id: base.href, type: "OrderedCollection", totalItems: Number(total.n), first: `${base.href}?page=` }, 200, headers(union.membersVisibility));
    }
    const rows = await db.selectFrom("members as m")
      .leftJoin("members as s", "s.id", "m.sponsor_id")
      .select(["m.id", "m.actor_id", "m.role", "m.portfolio", "m.joined_at", "s.actor_id as sponsor_actor_id"])
      .where("m.union_id", "=", union.id).where("m.state", "=", "active")
      .$if(page !== "", (q) => q.where("m.id", ">", page))
      .orderBy("m.id").limit(PAGE).execute();
    const last = rows.length === PAGE ? rows[rows.length - 1]!.id : undefined;
    return c.json({
      "@context": context,
      id: `${base.href}?page=${encodeURIComponent(page)}`,
      type: "OrderedCollectionPage",
      partOf: base.href,
      ...(last ? { next: `${base.href}?page=${encodeURIComponent(last)}` } : {}),
      orderedItems: rows.map((r) => ({
        type: "Membership",
        member: r.actor_id,
        sponsor: r.sponsor_actor_id,
        role: r.role,
        ...(r.portfolio ? { portfolio: r.portfolio } : {}),
        ...(r.joined_at ? { joined: new Date(Number(r.joined_at)).toISOString() } : {}),
      })),
    }, 200, headers(union.membersVisibility));
  });

  // Lemmy's convention: the group's attributedTo points here, and the items
  // are the moderators' actor ids; for us, the leader and the officers.
  app.get("/u/:slug/moderators", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.json({ error: { code: "not_found", message: "no such union" } }, 404);
    const rows = await db.selectFrom("members").select(["actor_id", "role"])
      .where("union_id", "=", union.id).where("state", "=", "active").where("role", "in", ["leader", "officer"])
      .where("actor_id", "is not", null).orderBy("joined_at").execute();
    rows.sort((a, b) => Number(b.role === "leader") - Number(a.role === "leader"));
    const id = new URL(`/u/${union.slug}/moderators`, origin).href;
    return c.json({ "@context": AS, id, type: "OrderedCollection", totalItems: rows.length, orderedItems: rows.map((r) => r.actor_id) }, 200, { "Content-Type": JSON_LD });
  });
}

function headers(visibility: string): Record<string, string> {
  // A list shown only to some must not be served to others from a shared cache.
  return visibility === "public"
    ? { "Content-Type": JSON_LD }
    : { "Content-Type": JSON_LD, "Cache-Control": "private, no-store", Vary: "Signature, Signature-Input" };
}

/** The actor whose key signed the request (draft-cavage or RFC 9421), if it verifies. */
async function signer(deps: MemberCollectionDeps, c: Context): Promise<string | undefined> {
  const req = c.req.raw;
  if (!req.headers.has("signature") && !req.headers.has("signature-input")) return undefined;
  try {
    const ctx = deps.federation.createContext(req, undefined);
    const opts = { documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader };
    const key = await verifyRequest(req.clone(), opts);
    if (!key) return undefined;
    // The owner must claim the key back: a key document alone could name anyone as its owner.
    const owner = await getKeyOwner(key, opts);
    return owner?.id?.href;
  } catch (error) {
    log.info("Signature check of a members fetch failed: {error}", { error });
    return undefined;
  }
}

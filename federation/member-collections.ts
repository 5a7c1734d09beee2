import { type Federation, getKeyOwner, verifyRequest } from "@fedify/fedify";
import type { Context, Hono } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { readModerators, readRoster } from "../src/members/roster.ts";
import { membersVisibility, VISIBILITY_TEXT } from "../src/members/visibility.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";

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
      // A wallet the member proved is theirs: the challenge text they signed
      // with it and the Ed25519 signature (base58), checkable by anyone.
      WalletProof: "muster:WalletProof",
      wallet: "muster:wallet",
      address: "muster:address",
      signedMessage: "muster:signedMessage",
      signature: "muster:signature",
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
    const base = new URL(`/u/${union.slug}/members`, origin);
    const context = [AS, new URL("/ns", origin).href];
    const page = c.req.query("page");
    const roster = await readRoster(db, union, { via: "federation", actorId: viewer }, { after: page || undefined, limit: PAGE });
    if (!roster.ok) return refusal(c, union, roster.refused);
    if (page === undefined) {
      return c.json({ "@context": context, id: base.href, type: "OrderedCollection", totalItems: roster.total, first: `${base.href}?page=` }, 200, headers(union));
    }
    const proofs = new Map((roster.items.length === 0 ? [] : await db.selectFrom("member_wallets")
      .select(["member_id", "address", "proof_message", "proof_signature"]).where("union_id", "=", union.id)
      .where("member_id", "in", roster.items.map((r) => r.memberId)).where("proof_signature", "is not", null).execute())
      .map((w) => [w.member_id, { type: "WalletProof", address: w.address, signedMessage: w.proof_message, signature: w.proof_signature }]));
    return c.json({
      "@context": context,
      id: `${base.href}?page=${encodeURIComponent(page)}`,
      type: "OrderedCollectionPage",
      partOf: base.href,
      ...(roster.next ? { next: `${base.href}?page=${encodeURIComponent(roster.next)}` } : {}),
      orderedItems: roster.items.map((r) => ({
        type: "Membership",
        member: r.actorId,
        sponsor: r.sponsorActorId,
        // A sponsor from an allied union: the backlink across unions.
        ...(r.allySponsor ? { allySponsor: r.allySponsor.actorId, allySponsorUnion: r.allySponsor.unionActorId } : {}),
        role: r.role,
        ...(r.portfolio ? { portfolio: r.portfolio } : {}),
        ...(r.joinedAt ? { joined: r.joinedAt.toISOString() } : {}),
        ...(proofs.has(r.memberId) ? { wallet: proofs.get(r.memberId) } : {}),
      })),
    }, 200, headers(union));
  });

  // Lemmy's convention: the group's attributedTo points here, and the items
  // are the moderators' actor ids; for us, the leader and the officers. Who
  // holds office is part of the roster, so the same rule applies.
  app.get("/u/:slug/moderators", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.json({ error: { code: "not_found", message: "no such union" } }, 404);
    const mods = await readModerators(db, union, { via: "federation", actorId: await signer(deps, c) });
    if (!mods.ok) return refusal(c, union, mods.refused);
    const id = new URL(`/u/${union.slug}/moderators`, origin).href;
    return c.json({ "@context": AS, id, type: "OrderedCollection", totalItems: mods.actorIds.length, orderedItems: mods.actorIds }, 200, headers(union));
  });
}

function refusal(c: Context, union: Union, refused: "unidentified" | "forbidden") {
  const vary = { Vary: "Signature, Signature-Input", "Cache-Control": "private, no-store" };
  return refused === "forbidden"
    ? c.json({ error: { code: "forbidden", message: `this union shows its members to: ${VISIBILITY_TEXT[membersVisibility(union)]}` } }, 403, vary)
    : c.json({ error: { code: "unauthorized", message: "sign the request (HTTP Signatures) as an account this union shows its members to" } }, 401, vary);
}

function headers(union: Union): Record<string, string> {
  // A list shown only to some must not be served to others from a shared cache.
  return membersVisibility(union) === "public"
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

import { type Follow, Relationship } from "@fedify/vocab";
import type { Relay, RelationshipKind } from "../src/relationships/relationships.ts";

/**
 * The small vocabulary unions use to offer each other a relationship
 * (README, "Union-to-union relationships"). The offer rides in the Follow's
 * `instrument` as an ActivityStreams `Relationship` whose `subject` is the
 * offering Group, whose `object` is the Group followed, and whose
 * `relationship` names say what is offered, from the offering side:
 *
 *   muster:allyOf      the two unions are allies
 *   muster:chapterOf   the offering union asks to be a chapter of the other
 *   muster:relay-both | relay-theirs | relay-ours | relay-none
 *                      whose calls-to-action are relayed, seen from the
 *                      offering union (`theirs` = it relays the other's)
 */
export const MUSTER_NS = "https://github.com/muster-union/muster/ns#";

const KIND_TERM: Record<"ally" | "parent", string> = { ally: "allyOf", parent: "chapterOf" };

export function offerInstrument(subject: URL, object: URL, kind: "ally" | "parent", relay: Relay): Relationship {
  return new Relationship({
    subject,
    object,
    relationships: [new URL(MUSTER_NS + KIND_TERM[kind]), new URL(`${MUSTER_NS}relay-${relay}`)],
  });
}

/** An offer as the offering union put it: `kind` is what the receiver would be to the sender. */
export interface ParsedOffer {
  /** What the sender is to the receiver. */
  readonly kindForReceiver: RelationshipKind;
  /** Seen from the sender. */
  readonly relay: Relay;
}

/**
 * The offer a Follow carries, or null when it carries none (or one that
 * does not name the sender as its subject and the followed Group as its
 * object: an offer cannot speak for anyone else).
 */
export async function parseOffer(follow: Follow): Promise<ParsedOffer | null> {
  let instrument: unknown;
  try {
    // Only an embedded offer counts: fetching one by id would let a third party's document speak.
    instrument = await follow.getInstrument({ crossOrigin: "ignore", documentLoader: noFetch });
  } catch {
    return null;
  }
  if (!(instrument instanceof Relationship)) return null;
  if (instrument.subjectId?.href !== follow.actorId?.href || instrument.objectId?.href !== follow.objectId?.href) return null;
  const terms = instrument.relationshipIds.map((u) => u.href.startsWith(MUSTER_NS) ? u.href.slice(MUSTER_NS.length) : null);
  const kind = terms.includes("allyOf") ? "ally" : terms.includes("chapterOf") ? "chapter" : null;
  if (!kind) return null;
  const relayTerm = terms.find((t) => t?.startsWith("relay-"))?.slice("relay-".length);
  const relay = (["both", "theirs", "ours", "none"] as const).find((r) => r === relayTerm) ?? (kind === "chapter" ? "theirs" : "none");
  return { kindForReceiver: kind, relay };
}

async function noFetch(url: string): Promise<never> {
  throw new Error(`not fetching ${url}: only an embedded offer counts`);
}

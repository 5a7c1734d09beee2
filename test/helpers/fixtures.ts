import { readFileSync } from "node:fs";
import path from "node:path";

/**
 * Real ActivityPub payloads from other servers (shared/fixtures/activitypub,
 * see its SOURCES.md), re-addressed so that they come from a test peer's
 * actors and go to a Muster union, and otherwise keep their shape: extra
 * fields, @context and embedded objects stay as the original server wrote them.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** Reads a fixture from the shared corpus on disk (never copied into this repository). */
export function loadFixture(root: string, rel: string): JsonObject {
  const json = JSON.parse(readFileSync(path.join(root, rel), "utf8")) as Json;
  if (!json || typeof json !== "object" || Array.isArray(json)) throw new Error(`${rel} is not a JSON object`);
  return json;
}

/**
 * What Lemmy puts around every activity it sends (its `WithContext` wrapper);
 * the activities in Lemmy's test assets are stored without it. Fedify ships
 * this context preloaded.
 */
export const LEMMY_CONTEXT: Json = ["https://join-lemmy.org/context.json", "https://www.w3.org/ns/activitystreams"];

export interface Readdress {
  /** Exact URL → replacement: actors, the group, embedded objects' ids, context URLs. */
  readonly exact?: Record<string, string>;
  /**
   * Original actor id → new actor id; URLs under it (`…/followers`,
   * `…#main-key`, `…/statuses/1`, `…#follows/449/undo`) move with it.
   */
  readonly actors?: Record<string, string>;
  /** The new top-level `id`. */
  readonly id: string;
  /** Used only when the payload has no @context of its own. */
  readonly defaultContext?: Json;
}

/** Linked-data signatures (and FEP-8b32 proofs) sign the original bytes; ours is the HTTP signature. */
const SIGNATURE_KEYS = new Set(["signature", "proof"]);

export function readdress(fixture: JsonObject, how: Readdress): JsonObject {
  const exact = new Map(Object.entries(how.exact ?? {}));
  for (const [from, to] of Object.entries(how.actors ?? {})) exact.set(from, to);
  const prefixes = Object.entries(how.actors ?? {});

  const str = (s: string): string => {
    const hit = exact.get(s);
    if (hit !== undefined) return hit;
    for (const [from, to] of prefixes) {
      if (s.startsWith(from) && "/#?".includes(s.charAt(from.length))) return to + s.slice(from.length);
    }
    return s;
  };
  const walk = (v: Json): Json => {
    if (typeof v === "string") return str(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v && typeof v === "object") {
      const out: JsonObject = {};
      for (const [k, x] of Object.entries(v)) if (!SIGNATURE_KEYS.has(k)) out[k] = walk(x);
      return out;
    }
    return v;
  };
  const out = walk(fixture) as JsonObject;
  out.id = how.id;
  if (out["@context"] === undefined && how.defaultContext !== undefined) {
    // Put it first, where a sender puts it.
    return { "@context": how.defaultContext, ...out };
  }
  return out;
}

let seq = 0;

/**
 * A fresh id in the shape of the original one (same path, or same fragment
 * under the actor), on the new origin, unique across tests and runs so no
 * delivery is taken for a retry of another.
 */
export function freshId(original: string, how: Pick<Readdress, "actors" | "exact">, origin: URL): string {
  const moved = readdress({ x: original }, { ...how, id: "" }).x as string;
  const u = new URL(moved);
  const rehomed = new URL(u.pathname + u.search + u.hash, origin);
  const tag = `${Date.now().toString(36)}${(++seq).toString(36)}`;
  return rehomed.hash ? `${rehomed.href}-${tag}` : `${rehomed.href.replace(/\/$/, "")}-${tag}`;
}

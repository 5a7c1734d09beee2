import { preloadedContexts } from "@fedify/vocab-runtime";
import { canonicalHttpUrl } from "./canonical-url.ts";

/**
 * The inbox's common shapes, read from the JSON as sent instead of through
 * JSON-LD expansion: a Like of a call-to-action, the Undo of one, and a reply
 * (Create of an embedded Note) to one. A document is only read this way when
 * its meaning cannot differ from what Fedify's expansion would make of it:
 * the ActivityStreams context first, then only contexts Fedify ships or
 * inline term maps that redefine nothing read here (and no keyword), every
 * value read a plain string of the expected kind. Anything else is undefined,
 * and goes the whole way through Fedify.
 */
export type FastShape =
  | { readonly kind: "like"; readonly id: string; readonly actor: string; readonly target: CallRef }
  | { readonly kind: "undo-like"; readonly id: string; readonly actor: string; readonly likeId: string; readonly target: CallRef }
  | { readonly kind: "reply"; readonly id: string; readonly actor: string; readonly noteId: string; readonly content: string; readonly target: CallRef }
  | { readonly kind: "vote"; readonly id: string; readonly actor: string; readonly answers: readonly VoteAnswer[]; readonly proposal: ProposalRef };

/** One chosen option of a poll answer: the Note that carries it (its id is the ballot's source). */
export interface VoteAnswer {
  readonly noteId: string;
  readonly choice: string;
}

/** One of this server's proposals (a Question), as its id names it. */
export interface ProposalRef {
  readonly slug: string;
  readonly proposalId: string;
}

/** A call-to-action's note on this server, as its id names it. */
export interface CallRef {
  readonly slug: string;
  readonly actionId: string;
}

const AS = "https://www.w3.org/ns/activitystreams";
// Terms and types read below: a context after ActivityStreams' may not define them otherwise than it does.
const READ_TERMS = new Set(["id", "type", "actor", "object", "attributedTo", "inReplyTo", "content", "contentMap", "name", "nameMap", "Like", "Undo", "Create", "Note", "as"]);
const CALL_PATH = /^\/u\/([^/]+)\/actions\/([^/]+)$/;
// As federation/inbox-votes.ts reads a poll answer's target.
const PROPOSAL_PATH = /^\/u\/([^/]+)\/proposals\/([0-9a-f-]{36})$/;

export function fastShape(doc: Record<string, unknown>, origin: URL): FastShape | undefined {
  if (!plainContext(doc["@context"])) return undefined;
  // Keywords anywhere in the body but its top @context (an "@type" beside "type", a "@graph", a nested
  // @context, an invalid @id that would fail Fedify's expansion) take another path.
  if (hasKeyword(doc, true)) return undefined;
  const id = httpUrl(doc.id);
  const actor = httpUrl(doc.actor);
  if (!id || !actor) return undefined;
  switch (doc.type) {
    case "Like": {
      const target = callOf(doc.object, origin);
      return target && { kind: "like", id, actor, target };
    }
    case "Undo": {
      const like = embedded(doc.object);
      if (!like || like.type !== "Like" || httpUrl(like.actor) !== actor) return undefined;
      const likeId = httpUrl(like.id);
      const target = callOf(like.object, origin);
      return likeId && target ? { kind: "undo-like", id, actor, likeId, target } : undefined;
    }
    case "Create": {
      // GoToSocial answers a multiple-choice poll with one Create of several vote Notes.
      if (Array.isArray(doc.object)) return multiVote(doc.object, id, actor, origin);
      const note = embedded(doc.object);
      if (!note || note.type !== "Note") return undefined;
      const noteId = httpUrl(note.id);
      // Fedify re-fetches an embedded object from another origin than the activity's instead of trusting it.
      if (!noteId || new URL(noteId).origin !== new URL(id).origin) return undefined;
      // The note must be the sender's own: a Create cannot put words in another's mouth.
      if (httpUrl(note.attributedTo) !== actor) return undefined;
      if ("nameMap" in note) return undefined;
      if ("name" in note) {
        const answer = voteAnswer(note, id, actor, origin);
        return answer && { kind: "vote", id, actor, answers: [answer.answer], proposal: answer.proposal };
      }
      if (typeof note.content !== "string") return undefined;
      // Fedify reads the first of content's values, which is contentMap's when that comes first: taken only when they agree (Mastodon repeats content under its language).
      if ("contentMap" in note && !sameText(note.contentMap, note.content)) return undefined;
      const target = callOf(note.inReplyTo, origin);
      return target && { kind: "reply", id, actor, noteId, content: note.content, target };
    }
    default:
      return undefined;
  }
}

/** At most this many Notes in one answer are read here (Muster's polls have at most 20 options). */
const MAX_ANSWERS = 20;

/**
 * GoToSocial's answer to a multiple-choice poll: every element an embedded
 * vote Note of the sender's, to the same proposal (onVote reads the same
 * Notes; a mixed or longer array goes through it).
 */
function multiVote(objects: unknown[], id: string, actor: string, origin: URL): FastShape | undefined {
  if (objects.length === 0 || objects.length > MAX_ANSWERS) return undefined;
  const answers: VoteAnswer[] = [];
  let proposal: ProposalRef | undefined;
  for (const o of objects) {
    const note = embedded(o);
    if (!note || note.type !== "Note" || !("name" in note) || "nameMap" in note) return undefined;
    const answer = voteAnswer(note, id, actor, origin);
    if (!answer || (proposal && (answer.proposal.slug !== proposal.slug || answer.proposal.proposalId !== proposal.proposalId))) return undefined;
    proposal = answer.proposal;
    answers.push(answer.answer);
  }
  return { kind: "vote", id, actor, answers, proposal: proposal! };
}

/**
 * A poll answer (Mastodon, Misskey, GoToSocial; Pleroma's may carry empty
 * content): the option's text as name, in reply to one of our proposals, the
 * sender's own Note from the sender's own server.
 */
function voteAnswer(note: Record<string, unknown>, id: string, actor: string, origin: URL): { answer: VoteAnswer; proposal: ProposalRef } | undefined {
  const noteId = httpUrl(note.id);
  // Fedify re-fetches an embedded object from another origin than the activity's instead of trusting it.
  if (!noteId || new URL(noteId).origin !== new URL(id).origin || new URL(noteId).origin !== new URL(actor).origin) return undefined;
  if (httpUrl(note.attributedTo) !== actor || "contentMap" in note) return undefined;
  const blank = note.content === undefined || note.content === null || (typeof note.content === "string" && note.content.trim() === "");
  if (typeof note.name !== "string" || !blank) return undefined;
  const proposal = proposalOf(note.inReplyTo, origin);
  return proposal && { answer: { noteId, choice: note.name }, proposal };
}

/**
 * Contexts are applied in order, later terms replacing earlier ones. So any
 * context Fedify ships may come before ActivityStreams' (which then defines
 * every term read here), unless it protects its terms (a redefinition would
 * then be an error that Fedify refuses); after it, only contexts that define
 * none of the terms read here differently, shipped or inline.
 */
function plainContext(context: unknown): boolean {
  if (context === AS) return true;
  if (!Array.isArray(context)) return false;
  const at = context.indexOf(AS);
  if (at < 0) return false;
  for (const [i, c] of context.entries()) {
    if (i === at) continue;
    if (typeof c === "string") {
      const shipped = SHIPPED.get(c);
      if (!shipped || (i < at ? shipped.protects : !shipped.harmlessAfter)) return false;
    } else if (i < at || !harmlessTerms(c)) return false;
  }
  return true;
}

const asTerms = termsOf(AS);

/** The term definitions of a shipped context (its @context objects merged; a context it names is not followed). */
function termsOf(url: string): Record<string, unknown> | undefined {
  const c = (preloadedContexts[url] as { "@context"?: unknown } | undefined)?.["@context"];
  if (c === undefined) return undefined;
  const terms: Record<string, unknown> = {};
  for (const part of Array.isArray(c) ? c : [c]) {
    if (typeof part !== "object" || part === null) return undefined; // imports another: not judged here
    Object.assign(terms, part);
  }
  return terms;
}

const SHIPPED = new Map<string, { protects: boolean; harmlessAfter: boolean }>();
for (const url of Object.keys(preloadedContexts)) {
  const terms = termsOf(url);
  if (!terms || url === AS) continue;
  const protects = terms["@protected"] === true || Object.values(terms).some((d) => typeof d === "object" && d !== null && (d as Record<string, unknown>)["@protected"] === true);
  SHIPPED.set(url, { protects, harmlessAfter: harmlessTerms(terms) });
}

/** A term map that changes nothing read here: a term read here only as ActivityStreams defines it, no keyword alias, no default vocabulary or base. */
function harmlessTerms(c: unknown): boolean {
  if (typeof c !== "object" || c === null || Array.isArray(c)) return false;
  for (const [term, def] of Object.entries(c)) {
    if (term === "@protected" || term === "@version") continue;
    if (term.startsWith("@")) return false;
    if (READ_TERMS.has(term) || (term.includes(":") && READ_TERMS.has(term.slice(0, term.indexOf(":"))))) {
      if (JSON.stringify(def) !== JSON.stringify(asTerms?.[term])) return false;
      continue;
    }
    if (typeof def === "string") {
      if (def.startsWith("@")) return false;
    } else if (typeof def === "object" && def !== null && !Array.isArray(def)) {
      const target = (def as Record<string, unknown>)["@id"];
      if ("@reverse" in def || (typeof target === "string" && target.startsWith("@"))) return false;
    } else if (def !== null) return false;
  }
  return true;
}

function hasKeyword(v: unknown, root = false): boolean {
  if (Array.isArray(v)) return v.some((x) => hasKeyword(x));
  if (typeof v !== "object" || v === null) return false;
  for (const [k, x] of Object.entries(v)) {
    if (root && k === "@context") continue;
    if (k.startsWith("@") || hasKeyword(x)) return true;
  }
  return false;
}

function embedded(v: unknown): Record<string, unknown> | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k.startsWith("@")) return undefined;
  return o;
}

/**
 * An absolute http(s) URL in its canonical spelling without credentials
 * (canonical-url.ts, as the Follow's fast path reads them): an id Fedify
 * would read differently, or one carrying user:pass@, is not taken here.
 */
function httpUrl(v: unknown): string | undefined {
  return canonicalHttpUrl(v)?.href;
}

function callOf(v: unknown, origin: URL): CallRef | undefined {
  const href = httpUrl(v);
  if (!href) return undefined;
  const u = new URL(href);
  if (u.origin !== origin.origin || u.search || u.hash) return undefined;
  const m = CALL_PATH.exec(u.pathname);
  if (!m) return undefined;
  try {
    return { slug: decodeURIComponent(m[1]!).toLowerCase(), actionId: decodeURIComponent(m[2]!) };
  } catch {
    return undefined;
  }
}

function proposalOf(v: unknown, origin: URL): ProposalRef | undefined {
  const href = httpUrl(v);
  if (!href) return undefined;
  const u = new URL(href);
  if (u.origin !== origin.origin || u.search || u.hash) return undefined;
  const m = PROPOSAL_PATH.exec(u.pathname);
  if (!m) return undefined;
  try {
    return { slug: decodeURIComponent(m[1]!).toLowerCase(), proposalId: m[2]! };
  } catch {
    return undefined;
  }
}

function sameText(map: unknown, content: string): boolean {
  return typeof map === "object" && map !== null && !Array.isArray(map) && Object.values(map).every((v) => v === content);
}

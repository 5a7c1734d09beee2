import type { InboxContext } from "@fedify/fedify";
import { type Create, Note } from "@fedify/vocab";
import type { Kysely } from "kysely";
import { castVote } from "../src/bylaws/proposals.ts";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import type { Outbox } from "../src/outbox.ts";
import { logger } from "../src/logging.ts";
import { getUnionBySlug } from "../src/unions/unions.ts";
import { processOnce } from "./inbox-record.ts";

const log = logger("federation", "votes");
const PROPOSAL_PATH = /^\/u\/([^/]+)\/proposals\/([0-9a-f-]{36})$/;

export interface VoteInboxDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
  readonly tallyBatchMs?: number;
}

/**
 * A poll answer: a Create of Notes that each carry an option's text as
 * `name` and answer one of our proposals' Questions (Mastodon and Misskey
 * send one Create per chosen option, GoToSocial several Notes in one;
 * Pleroma's has its own object id and addresses the poll's author in cc).
 * Counts claimed in the answer (Misskey's `_misskey_votes`) are never read:
 * a ballot is one member's. Returns false
 * when the Create is not a vote, so it goes on to be handled as a post; a
 * vote is never counted as a reply or a commitment.
 */
export async function onVote(deps: VoteInboxDeps, ctx: InboxContext<void>, create: Create): Promise<boolean> {
  const notes: Note[] = [];
  // Vote Notes are embedded and not fetchable (Mastodon's ids are fragments
  // of the voter's actor URL), so only embedded objects are considered: a
  // loader that refuses keeps a Create that names its object by URL (any
  // post, a stranger's included) from costing a fetch here.
  const embeddedOnly = (url: string) => Promise.reject(new Error(`not fetched: poll answers are embedded (${url})`));
  try {
    for await (const o of create.getObjects({ documentLoader: embeddedOnly, contextLoader: ctx.contextLoader, crossOrigin: "ignore" })) {
      if (o instanceof Note) notes.push(o);
    }
  } catch {
    return false;
  }
  // Mastodon, GoToSocial and Misskey send no content; Pleroma and its forks
  // (their internal Answer, sent as a Note) may carry an empty one.
  const votes = notes.filter((n) => n.name !== null && (n.content === null || String(n.content).trim() === "") && n.replyTargetId !== null);
  const targets = votes.map((n) => {
    const t = n.replyTargetId!;
    return t.origin === ctx.origin ? PROPOSAL_PATH.exec(t.pathname) : null;
  });
  if (votes.length === 0 || targets.every((t) => t === null)) return false;
  const actor = create.actorId;
  if (!actor || !create.id) return true;
  const first = targets.find((t) => t !== null)!;
  const union = await getUnionBySlug(deps.db, decodeURIComponent(first[1]!));
  await processOnce({ ...deps, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader }, create, union?.id ?? null, async () => {
    for (const [i, note] of votes.entries()) {
      const t = targets[i];
      if (!t) continue;
      const why = (reason: string) => log.info("Vote {note} by {actor} not counted: {reason}", { note: note.id?.href ?? "(no id)", actor: actor.href, reason });
      // The voter's own answer, from their own server: a Create cannot cast another's vote.
      if (note.attributionId?.href !== actor.href || !note.id || note.id.origin !== actor.origin) {
        why("the answer is not the sender's own");
        continue;
      }
      const u = await getUnionBySlug(deps.db, decodeURIComponent(t[1]!));
      if (!u) {
        why("no such union");
        continue;
      }
      const r = await castVote(deps, u.id, t[2]!, { actorId: actor.href }, [String(note.name)], { kind: "activity", id: note.id.href });
      if (!r.counted) why(r.reason);
    }
  });
  return true;
}

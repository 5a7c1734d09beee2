import { type KvStore, verifyRequestDetailed } from "@fedify/fedify";
import type { Kysely } from "kysely";
import { upsertRemoteActor } from "../src/actors/remote-actors.ts";
import { castVoteIn, type VoteBatch, voteBatch, type VoteResult } from "../src/bylaws/proposals.ts";
import { insertResponse, isCommitment, settleCommitters, withdrawable, withdrawRows } from "../src/actions/responses.ts";
import type { DB } from "../src/db/schema.ts";
import { prepared } from "../src/db/prepared.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import type { Outbox } from "../src/outbox.ts";
import { withdrawPartnerResponse } from "../src/relationships/partner-counted.ts";
import { withdrawRelayedResponse } from "../src/relationships/tallies.ts";
import { SIGNATURE_WINDOW_MS } from "../src/replay-window.ts";
import { claimSignature, type SignatureClaim } from "./inbox-fast-verify.ts";
import { type FastRequest, whatwgRequest } from "./inbox-request.ts";
import { FastKeyCache, preloadedOnly, publicKeyEntry, refuseFetch } from "./inbox-fast-keys.ts";
import { type FastShape, fastShape } from "./inbox-fast-shape.ts";
import { KyselyKvStore } from "./kysely-kv-store.ts";
import { type FetchedSigner, keyOfActorDocument, type SignerEntry, type SignerFetch } from "./signer-fetch.ts";
// The same freshness rule as processOnce: a staler sender goes through Fedify, which refreshes it.
import { ACTOR_CACHE_MS } from "./inbox-record.ts";

const log = logger("federation", "inbox-fast");


export interface FastInboxDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
  /** Fedify's KV store: the public keys it fetched are read from it. */
  readonly kv: KvStore;
  readonly origin: URL;
  /** How often, at most, an open vote's running tally goes out (as castVote is given it elsewhere). */
  readonly tallyBatchMs?: number;
  /**
   * Fetches a member's actor when its key is not cached or its cached actor
   * is stale (signer-fetch.ts, as the follow's fast path fetches a
   * follower's); without it, such a request goes through Fedify.
   */
  readonly signers?: SignerFetch;
}

/** How long a signer's fetch (or its failure) answers the same actor's key again, instead of a new fetch. */
const SIGNER_REUSE_MS = 30_000;
const SIGNERS_HELD = 4096;

/**
 * The inbox's fast path for members' responses to a call-to-action: a Like,
 * its Undo, a reply. It does what Fedify's inbox, the queue and the
 * listeners (onLike, onUndo, onCreate with processOnce) do for them, in one
 * transaction and without JSON-LD, and answers 202 once it is committed.
 *
 * It only ever accepts; it never refuses. Whatever it does not fully
 * recognise or verify (another shape, a context it cannot read without
 * expansion, a signature that does not verify or whose key is not the
 * actor's, a sender who is not an active member, a call that is not
 * published, an inbox other than the call's union's or the shared one)
 * returns undefined and goes through Fedify as before, which refuses what is
 * wrong. So the guarantees are Fedify's: the same verifier
 * (verifyRequestDetailed: Digest or Content-Digest, the date window, the key
 * from Fedify's cache) and the same key-owner rule; the inbox guard has
 * already run.
 *
 * A member whose key Fedify has not cached (its first activity here, or the
 * key expired or rotated) or whose cached actor is older than a day (the
 * common case: a member who has not posted for a day replies to the day's
 * call) is fetched here, once the facts read say it is an active member of
 * the call's union (nothing is fetched for anyone else), as the follow's
 * fast path fetches a follower (signer-fetch.ts: the key must be in the
 * actor's own document and name the actor as owner; a signed GET under the
 * private-address rule, the size limit and the timeouts, no redirect off the
 * actor's host): the signature must verify with the fetched key, which is
 * then cached as Fedify's verifier caches a key it fetched, and the actor
 * as cacheActorObject caches it, in the transaction that counts. A fetch
 * that fails, and a plain form inbox-fast-verify does not check, go through
 * Fedify. Requests needing the same key share one fetch. The same
 * activity twice counts once: the activity id is recorded in inbox_activities
 * in the transaction that counts it, as processOnce records it.
 */
export function createFastInbox(deps: FastInboxDeps) {
  const keys = new FastKeyCache(deps.kv);
  const { db } = deps;
  // Each shared transaction ends by writing its calls' committer counts (after every member's own rows).
  const commit = groupCommit(db, (trx) => settleCommitters(deps, trx));
  /** What castVoteIn has read and written in each open transaction (a transaction's own; a re-run alone gets a new one). */
  const batches = new WeakMap<Kysely<DB>, VoteBatch>();

  /** The request's signer, when it verifies with a key Fedify has cached and that key is the actor's. */
  async function signedBy(request: FastRequest, body: Uint8Array, actor: string, claim: SignatureClaim | undefined): Promise<boolean> {
    // The plain forms, checked synchronously with the same key; anything else, or a no, is Fedify's to decide.
    if (claim) {
      const key = await keys.get(claim.keyId);
      // Not cached: Fedify's verifier below would find no key either (it fetches nothing here).
      if (!key) return false;
      if (claim.check(key)) return key.ownerId?.href === actor;
    }
    const verification = await verifyRequestDetailed(whatwgRequest(request), {
      documentLoader: refuseFetch,
      contextLoader: preloadedOnly,
      timeWindow: { milliseconds: SIGNATURE_WINDOW_MS },
      keyCache: keys,
    });
    if (!verification.verified) {
      const keyId = "keyId" in verification.reason ? verification.reason.keyId?.href : undefined;
      if (keyId) keys.forget(keyId);
      return false;
    }
    // Fedify's doesActorOwnKey, for a key that names its owner.
    return verification.key.ownerId?.href === actor;
  }

  /**
   * The call, the sender's active membership of its union, and whether the
   * sender's cached actor is fresh (younger than ACTOR_CACHE_MS): one read.
   * Undefined when the call is not published or the sender is no active member.
   */
  async function facts(shape: Exclude<FastShape, { kind: "vote" }>) {
    const row = (await readFacts(db, shape.actor, shape.target.slug, shape.target.actionId)).rows[0];
    if (!row || row.state !== "published" || !row.memberId) return undefined;
    // The action is the one named (state is null when the union has no such action).
    return { unionId: row.unionId, actionId: shape.target.actionId, memberId: row.memberId, words: row.words.split(",").filter(Boolean), fresh: isFresh(row.fetchedAt) };
  }

  /**
   * Fetches of signers (signer-fetch.ts) by key id: one at a time per key
   * (requests that need the same signer meanwhile wait for the same fetch),
   * and each answer, a no too, kept for SIGNER_REUSE_MS, so that requests
   * in the name of a member whose signatures do not verify cost at most one
   * fetch of its actor in that time (Fedify's path still fetches for them).
   */
  const held = new Map<string, { until: number; signer: Promise<FetchedSigner | undefined> }>();
  function heldSigner(signers: SignerFetch, recipient: string | null, actor: string, keyId: string): Promise<FetchedSigner | undefined> {
    const now = Date.now();
    const h = held.get(keyId);
    if (h && h.until > now) return h.signer;
    if (h) held.delete(keyId);
    if (held.size >= SIGNERS_HELD) held.delete(held.keys().next().value!);
    const entry = { until: Infinity, signer: Promise.resolve<FetchedSigner | undefined>(undefined) };
    entry.signer = signers.fetchSigner(recipient, actor, keyId)
      .catch((error: unknown) => {
        log.debug("Could not read the signer {actor} on the inbox's fast path: {error}", { actor, error });
        return undefined;
      })
      .finally(() => {
        entry.until = Date.now() + SIGNER_REUSE_MS;
      });
    held.set(keyId, entry);
    return entry.signer;
  }

  /**
   * The sender's actor and key as its own document says now, when the
   * request's signature verifies with that key: for a member whose key is
   * not cached (its first activity here, or the cached one expired or
   * rotated) or whose cached actor is stale. The same rules as the follow's
   * fast path (signer-fetch.ts): the key is in the actor's own document and
   * names the actor as owner; fetched signed under the private-address rule,
   * the size limit and the timeouts. Undefined hands the request to Fedify.
   */
  async function fetchedSigner(request: { recipient: string | null; actor: string; claim: SignatureClaim | undefined }): Promise<SignerEntry | undefined> {
    const { recipient, actor, claim } = request;
    if (!deps.signers || !claim || !keyOfActorDocument(claim.keyId.href, actor)) return undefined;
    const signer = await heldSigner(deps.signers, recipient, actor, claim.keyId.href);
    if (!signer || !signer.verifies(claim)) return undefined;
    try {
      return await signer.entry();
    } catch (error) {
      log.debug("Could not read the signer {actor} on the inbox's fast path: {error}", { actor, error });
      return undefined;
    }
  }

  // The key's write in the counting transaction when Fedify's KV store is on the same database.
  const kvWith = KyselyKvStore.on(deps.kv, db);

  /** Before the counting transaction: the key's write when the KV store is elsewhere. */
  async function cacheSignerOutside(signer: { keyId: string; entry: SignerEntry } | undefined): Promise<void> {
    if (signer && !kvWith) await deps.kv.set(publicKeyEntry(signer.keyId), signer.entry.keyJsonLd);
  }

  /**
   * In the counting transaction: the fetched actor as cacheActorObject
   * stores it (fetched_at now) and its key as Fedify's KvKeyCache.set
   * stores a key its verifier fetched, so the member's next activities are
   * verified from the cache.
   */
  async function cacheSigner(trx: Kysely<DB>, signer: { keyId: string; entry: SignerEntry } | undefined): Promise<void> {
    if (!signer) return;
    await upsertRemoteActor(trx, signer.entry.actor);
    await kvWith?.setWith(trx, publicKeyEntry(signer.keyId), signer.entry.keyJsonLd);
  }

  /**
   * A poll answer, as onVote counts it: each chosen option's Note through
   * castVote's checks (membership at opening, the vote open, the option,
   * repeats and one-choice polls), recorded as processOnce records the
   * activity. Unlike castVote alone, in the group commit: a burst of answers
   * shares one transaction, in which each proposal, voter and chain head is
   * read once (VoteBatch), instead of two transactions each.
   */
  async function vote(shape: Extract<FastShape, { kind: "vote" }>, verified: boolean, request: { recipient: string | null; claim: SignatureClaim | undefined }): Promise<"counted" | "repeat" | undefined> {
    const row = (await readVoteFacts(db, shape.actor, shape.proposal.slug)).rows[0];
    if (!row) return undefined;
    let signer: { keyId: string; entry: SignerEntry } | undefined;
    if (!verified || !isFresh(row.fetchedAt)) {
      // Only an active member of the proposal's union is fetched (castVote then checks the membership at opening).
      if (!row.memberId) return undefined;
      const entry = await fetchedSigner({ ...request, actor: shape.actor });
      if (!entry) return undefined;
      signer = { keyId: request.claim!.keyId.href, entry };
    }
    const { unionId } = row;
    const results: (VoteResult & { memberId?: string })[] = [];
    await cacheSignerOutside(signer);
    const fresh = await commit(async (trx) => {
      results.length = 0; // run again alone if a shared transaction failed
      await cacheSigner(trx, signer);
      const recorded = await recordActivity(trx, shape.id, "Create", shape.actor, unionId, Date.now());
      if (Number(recorded.numAffectedRows ?? 0n) !== 1) return false;
      // One batch per transaction: the answers sharing it read the proposal, the voter and the chain's head once.
      let batch = batches.get(trx);
      if (!batch) batches.set(trx, batch = voteBatch());
      for (const a of shape.answers) {
        results.push(await castVoteIn(deps, trx, unionId, shape.proposal.proposalId, { actorId: shape.actor }, [a.choice], { kind: "activity", id: a.noteId }, Date.now(), batch));
      }
      return true;
    });
    if (signer) keys.forget(signer.keyId);
    if (!fresh) {
      log.debug("Skipped {id}: already processed", { id: shape.id });
      return "repeat";
    }
    for (const [i, r] of results.entries()) {
      if (!r.counted) log.info("Vote {note} by {actor} not counted: {reason}", { note: shape.answers[i]!.noteId, actor: shape.actor, reason: r.reason });
      else if (r.memberId) deps.events.emit("proposal.vote", { unionId, proposalId: shape.proposal.proposalId, memberId: r.memberId });
    }
    deps.events.emit("activity.received", { activityId: shape.id, type: "Create", actor: shape.actor, unionId });
    return "counted";
  }

  /**
   * Handles the request if it is one of the common shapes, verified; undefined
   * hands it to Fedify. `recipient` is the union slug of a union inbox, null
   * for the shared inbox.
   */
  return async function handle(request: FastRequest, body: Uint8Array, doc: Record<string, unknown>, recipient: string | null): Promise<"counted" | "repeat" | undefined> {
    const shape = fastShape(doc, deps.origin);
    if (!shape) return undefined;
    // A union's inbox takes only its own calls' responses here (another inbox's 404 and records are Fedify's).
    const slug = shape.kind === "vote" ? shape.proposal.slug : shape.target.slug;
    if (recipient !== null && recipient.toLowerCase() !== slug) return undefined;
    const claim = claimSignature(request, body, Date.now(), SIGNATURE_WINDOW_MS);
    const verified = await signedBy(request, body, shape.actor, claim);
    if (shape.kind === "vote") return vote(shape, verified, { recipient, claim });
    // Read before anything is fetched: only an active member's actor is.
    const f = await facts(shape);
    if (!f) return undefined;
    let signer: { keyId: string; entry: SignerEntry } | undefined;
    if (!verified || !f.fresh) {
      const entry = await fetchedSigner({ recipient, actor: shape.actor, claim });
      if (!entry) return undefined;
      signer = { keyId: claim!.keyId.href, entry };
    }
    const action = { id: f.actionId, unionId: f.unionId };
    const type = shape.kind === "like" ? "Like" : shape.kind === "undo-like" ? "Undo" : "Create";
    // onUndo records an Undo under the inbox's union; a Like or reply under the call's.
    const unionId = shape.kind === "undo-like" && recipient === null ? null : f.unionId;
    if (shape.kind === "undo-like") {
      // As withdraw() does, before the Undo is recorded (both are idempotent):
      // a Like counted for a partner or relayed before this actor joined.
      await withdrawRelayedResponse(deps, shape.likeId, shape.actor);
      await withdrawPartnerResponse(deps, shape.likeId, shape.actor);
    }
    const rows = shape.kind === "undo-like" ? await withdrawable(db, shape.likeId, shape.actor) : [];
    const counted: string[] = [];
    await cacheSignerOutside(signer);
    const fresh = await commit(async (trx) => {
      counted.length = 0; // run again alone if a shared transaction failed
      await cacheSigner(trx, signer);
      const r = await recordActivity(trx, shape.id, type, shape.actor, unionId, Date.now());
      if (Number(r.numAffectedRows ?? 0n) !== 1) return false;
      if (shape.kind === "like") {
        if (await insertResponse(trx, deps, action, f.memberId, "commit", "like", shape.id, null)) counted.push("commit");
      } else if (shape.kind === "reply") {
        if (await insertResponse(trx, deps, action, f.memberId, "comment", "reply", shape.noteId, shape.content.slice(0, 20_000))) counted.push("comment");
        if (isCommitment(shape.content, f.words) && await insertResponse(trx, deps, action, f.memberId, "commit", "reply", shape.noteId, null)) counted.push("commit");
      } else {
        await withdrawRows(trx, rows);
      }
      return true;
    });
    // The key just written replaces whatever the memory held for its id (nothing, or a rotated key).
    if (signer) keys.forget(signer.keyId);
    if (!fresh) {
      log.debug("Skipped {id}: already processed", { id: shape.id });
      return "repeat";
    }
    for (const kind of counted) deps.events.emit("action.response", { unionId: f.unionId, actionId: f.actionId, memberId: f.memberId, kind });
    deps.events.emit("activity.received", { activityId: shape.id, type, actor: shape.actor, unionId });
    return "counted";
  };
}

export type FastInbox = ReturnType<typeof createFastInbox>;

/*
 * The reads below look up everything by unique keys, as scalar subqueries of
 * the union's row: as one join with a value bound on each side, SQLite
 * (better-sqlite3, STAT4) re-prepares the statement on every run with new
 * values (its plan depends on the values bound), which cost about two thirds
 * of the read.
 */
const readFacts = prepared<[actor: string, slug: string, actionId: string], { unionId: string; words: string; state: string | null; memberId: string | null; fetchedAt: number | null }>((db, actor, slug, actionId) =>
  db.selectFrom("unions as u")
    .select((eb) => [
      "u.id as unionId",
      "u.commitment_words as words",
      eb.selectFrom("actions as a").select("a.state").where("a.id", "=", actionId).whereRef("a.union_id", "=", "u.id").as("state"),
      eb.selectFrom("members as m").select("m.id").whereRef("m.union_id", "=", "u.id").where("m.actor_id", "=", actor).where("m.state", "=", "active").as("memberId"),
      eb.selectFrom("remote_actors as r").select("r.fetched_at").where("r.id", "=", actor).as("fetchedAt"),
    ])
    .where("u.slug", "=", slug));

/** As processOnce records a processed activity; nothing when it already was. */
const recordActivity = prepared<[id: string, type: string, actor: string, unionId: string | null, at: number], unknown>((db, id, type, actor, unionId, at) =>
  db.insertInto("inbox_activities").values({ id, type, actor, union_id: unionId, received_at: at }).onConflict((oc) => oc.column("id").doNothing()));

const readVoteFacts = prepared<[actor: string, slug: string], { unionId: string; memberId: string | null; fetchedAt: number | null }>((db, actor, slug) =>
  db.selectFrom("unions as u")
    .select((eb) => [
      "u.id as unionId",
      eb.selectFrom("members as m").select("m.id").whereRef("m.union_id", "=", "u.id").where("m.actor_id", "=", actor).where("m.state", "=", "active").as("memberId"),
      eb.selectFrom("remote_actors as r").select("r.fetched_at").where("r.id", "=", actor).as("fetchedAt"),
    ])
    .where("u.slug", "=", slug));

/** The same freshness rule as processOnce: a cached actor younger than ACTOR_CACHE_MS. */
function isFresh(fetchedAt: number | null): boolean {
  return fetchedAt !== null && Date.now() - Number(fetchedAt) < ACTOR_CACHE_MS;
}


const MAX_BATCH = 64;

/**
 * Runs each piece of work in a transaction, sharing one transaction among
 * the pieces that arrive while another commits (group commit): a burst of
 * responses costs one BEGIN and COMMIT, and one write of the pages they
 * share, instead of one per response. A transaction begins one turn of
 * the event loop after its first piece arrived, so that the pieces of the
 * requests read in that turn share it (without the wait, each piece began
 * its own: 1.24 commits per activity in the bench). A piece resolves only
 * after its transaction committed. If a shared transaction fails, each of its pieces
 * is run again alone, so one piece's failure is its own.
 */
function groupCommit(db: Kysely<DB>, beforeCommit: (trx: Kysely<DB>) => Promise<void>) {
  type Work = (trx: Kysely<DB>) => Promise<unknown>;
  const waiting: { work: Work; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  let draining = false;
  const drain = async () => {
    draining = true;
    try {
      while (waiting.length > 0) {
        // One turn of the event loop first: the other requests read in this turn (their reads wait
        // for no transaction) join this one, instead of each taking a transaction of its own.
        if (waiting.length < MAX_BATCH) await new Promise<void>((resolve) => setImmediate(resolve));
        const batch = waiting.splice(0, MAX_BATCH);
        let results: unknown[];
        try {
          results = await db.transaction().execute(async (trx) => {
            const out: unknown[] = [];
            for (const p of batch) out.push(await p.work(trx));
            await beforeCommit(trx);
            return out;
          });
        } catch (error) {
          if (batch.length === 1) {
            batch[0]!.reject(error);
            continue;
          }
          for (const p of batch) {
            try {
              p.resolve(await db.transaction().execute(async (trx) => {
                const out = await p.work(trx);
                await beforeCommit(trx);
                return out;
              }));
            } catch (alone) {
              p.reject(alone);
            }
          }
          continue;
        }
        batch.forEach((p, i) => p.resolve(results[i]));
      }
    } finally {
      draining = false;
    }
  };
  return <T>(work: (trx: Kysely<DB>) => Promise<T>): Promise<T> => new Promise<T>((resolve, reject) => {
    waiting.push({ work, resolve: resolve as (v: unknown) => void, reject });
    if (!draining) void drain();
  });
}

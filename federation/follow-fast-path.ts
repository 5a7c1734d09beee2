import type { KvStore } from "@fedify/fedify";
import { type Kysely, type QueryCreator, sql } from "kysely";
import { type CachedActor, isRemoteActorType, type RemoteActorArgs, remoteActorRow, upsertRemoteActor, withRemoteActorUpsert } from "../src/actors/remote-actors.ts";
import { batches } from "../src/db/batch.ts";
import { canonicalHttpUrl } from "./canonical-url.ts";
import type { DB } from "../src/db/schema.ts";
import { sendWithNext } from "../src/db/pipeline.ts";
import { prepared } from "../src/db/prepared.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { UnionError } from "../src/unions/unions.ts";
import type { Outbox } from "../src/outbox.ts";
import { SIGNATURE_WINDOW_MS } from "../src/replay-window.ts";
import { claimSignature } from "./inbox-fast-verify.ts";
import type { FastRequest } from "./inbox-request.ts";
import { publicKeyEntry } from "./inbox-fast-keys.ts";
import { joinCommit } from "./join-commit.ts";
import { actorRowKey, type JoinedKeyWrite, KyselyKvStore, tableKeyInsert, withKeyCleared, withRowKey } from "./kysely-kv-store.ts";
import { keyOfActorDocument, type SignerFetch } from "./signer-fetch.ts";

const log = logger("federation", "follow-fast");

export interface FastFollowDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
  /** Fedify's KV store: the follower's key is cached there as Fedify's verifier caches it. */
  readonly kv: KvStore;
  readonly origin: URL;
  /** Fetches and reads the follower's actor and key (the same one as the inbox's fast path: one per Muster). */
  readonly signers: SignerFetch;
}

/** A plain Follow of one of this server's unions, read from the JSON as sent. */
export interface FollowShape {
  readonly id: string;
  readonly actor: string;
  readonly object: string;
  readonly slug: string;
}

const AS = "https://www.w3.org/ns/activitystreams";
// Exactly what Mastodon sends (and Fedify's compact form of a bare Follow): nothing else whose meaning JSON-LD could change.
const FOLLOW_KEYS = new Set(["@context", "id", "type", "actor", "object"]);
const UNION_PATH = /^\/u\/([a-z0-9][a-z0-9_-]{0,63})$/;
/**
 * The Follow, if the body is nothing but one: the ActivityStreams context as
 * a single string (so no term can be redefined), an id on the follower's own
 * origin, and a union actor of this server as object. Undefined otherwise.
 */
export function followShape(doc: Record<string, unknown>, origin: URL): FollowShape | undefined {
  if (doc["@context"] !== AS || doc.type !== "Follow") return undefined;
  for (const k of Object.keys(doc)) if (!FOLLOW_KEYS.has(k)) return undefined;
  const id = canonicalHttpUrl(doc.id);
  const actor = canonicalHttpUrl(doc.actor);
  const object = canonicalHttpUrl(doc.object);
  if (!id || !actor || !object || id.origin !== actor.origin || actor.hash) return undefined;
  if (object.origin !== origin.origin || object.search || object.hash) return undefined;
  const m = UNION_PATH.exec(object.pathname);
  if (!m) return undefined;
  return { id: id.href, actor: actor.href, object: object.href, slug: m[1]! };
}

/** Why the join did not run in the request: the id was processed, or Fedify's path holds it now. */
class Skip extends Error {
  readonly outcome: "repeat" | "busy";
  constructor(outcome: "repeat" | "busy") {
    super(outcome);
    this.outcome = outcome;
  }
}

/**
 * The follow's fast path: a plain Follow of a union, HTTP-signed by the
 * follower's own key, is verified and joined inside the request, and
 * answered 202 once the join (with its Accept and welcome deliveries,
 * written by requestToJoin) is committed. It skips what Fedify's inbox and
 * the inbox queue do for the same Follow: JSON-LD on the activity, the
 * queue's hop, the union's actor dispatcher, a second parse of the actor.
 *
 * It never refuses. Whatever it does not fully recognise or verify returns
 * undefined and goes through Fedify as before, which decides: another shape
 * or context, an Undo, a signature form inbox-fast-verify does not check, a
 * key on another document than the actor's, a key that does not verify or
 * whose owner is not the actor, an actor that fails to fetch or parse, is
 * collective (a union's relationship offer), or names aliases (the account
 * migration check, which needs the old account fetched), a Follow of no
 * union here, or one that Fedify's path is processing now.
 *
 * The follower's actor is fetched every time, as onFollow asks for it fresh
 * (freshActor): with Fedify's signed document loader for the receiving inbox
 * (the union's key, or the instance's for the shared inbox), which goes
 * through the process-wide dispatcher (private-address rule after DNS, size
 * limit, timeouts; federation/http-client.ts). It is stored in the remote
 * actor cache as cacheActorObject stores it, and its key in Fedify's key
 * cache as Fedify's verifier stores it, so the member's later likes and
 * replies take the inbox's fast path.
 *
 * The same Follow twice is one join: its id goes into inbox_activities in
 * the join's own transaction, the record processOnce keeps on Fedify's path.
 */
export function createFastFollow(deps: FastFollowDeps) {
  const { db } = deps;

  // Joins arriving together share a transaction and its COMMIT (join-commit.ts): on SQLite a savepoint each;
  // on PostgreSQL none, so that a join's writes go out with the next join's reads (one round trip a join).
  const inTransaction = joinCommit(db, undefined, { savepoints: !batches(db) });

  // The follower's actor and key, fetched and read as every fast path does (signer-fetch.ts).
  const { fetchSigner } = deps.signers;
  // The key's write in the join's transaction when Fedify's KV store is on the same database.
  const kvWith = KyselyKvStore.on(deps.kv, db);

  /** Handles the request if it is a plain, verified Follow of a union; undefined hands it to Fedify. */
  return async function handle(request: FastRequest, body: Uint8Array, doc: Record<string, unknown>, recipient: string | null): Promise<"joined" | "repeat" | undefined> {
    const shape = followShape(doc, deps.origin);
    if (!shape) return undefined;
    // A union's inbox takes only Follows of itself here; the shared inbox any union's.
    if (recipient !== null && recipient !== shape.slug) return undefined;
    const claim = claimSignature(request, body, Date.now(), SIGNATURE_WINDOW_MS);
    // The key must be in the actor's own document (Mastodon's #main-key): that is the document fetched.
    if (!claim || !keyOfActorDocument(claim.keyId.href, shape.actor)) return undefined;
    const union = await unionIdOf(db, shape.slug);
    if (!union) return undefined;
    const signer = await fetchSigner(recipient, shape.actor, claim.keyId.href);
    if (!signer || !signer.verifies(claim)) return undefined;
    const { actor: cached, keyJsonLd } = await signer.entry();
    const now = cached.fetchedAt;
    // As Fedify's KvKeyCache.set writes a key its verifier found (the key's JSON-LD as parsed: its node of the expanded document).
    // In the join's transaction when the store is on the same database: no commit of its own.
    const keyEntry = publicKeyEntry(claim.keyId.href);
    if (!kvWith) await deps.kv.set(keyEntry, keyJsonLd);
    try {
      const r = await requestToJoin(deps, union.id, { actorId: shape.actor, handle: cached.handle }, shape.id, {
        inTransaction,
        applicantActor: cached,
        first: async (trx) => {
          if (batches(trx)) {
            // PostgreSQL: the three steps below in one statement, and the key's write, both sent with
            // the union's lock and the join's read (src/db/pipeline.ts): one round trip for the four.
            // The key's write in the same statement (one less a join): into the actor's row by the row's own
            // upsert when it lives there (0075: no second version of the row just inserted), else into
            // fedify_public_keys; any other key as setWith writes it.
            const rowKey = kvWith?.joinedKeyWrite(trx, keyEntry, keyJsonLd, shape.actor);
            const recorded = await recordFollowAndActor(trx, shape.id, shape.actor, union.id, now, cached, rowKey);
            if (rowKey === undefined) await kvWith?.setWith(trx, keyEntry, keyJsonLd, { withNext: true });
            return async () => {
              const r = await recorded.answer;
              if (!r.recorded) throw new Skip("repeat");
              if (r.busy) throw new Skip("busy");
            };
          }
          // Recorded unless already processed or claimed by Fedify's path (one statement; which of the two, only when it was not recorded).
          const recorded = await recordUnclaimedFollow(trx, shape.id, shape.actor, union.id, now);
          if (Number(recorded.numAffectedRows ?? 0n) !== 1) {
            if ((await readRecorded(trx, shape.id)).rows.length > 0) throw new Skip("repeat");
            // Fedify's path claimed this id and is joining it now: it finishes, and records it.
            throw new Skip("busy");
          }
          await upsertRemoteActor(trx, cached);
          await kvWith?.setWith(trx, keyEntry, keyJsonLd);
        },
      });
      log.info("Follow of {union} by {actor}: {outcome}", { union: shape.slug, actor: shape.actor, outcome: r.outcome });
    } catch (error) {
      // Only by hand (Muster never deletes a union): gone since its id was held. Fedify's path answers it.
      if (error instanceof UnionError && error.code === "not_found") {
        unionIds.get(db)?.delete(shape.slug);
        return undefined;
      }
      if (!(error instanceof Skip)) throw error;
      if (error.outcome === "busy") return undefined;
      log.debug("Skipped {id}: already processed", { id: shape.id });
      return "repeat";
    }
    deps.events.emit("activity.received", { activityId: shape.id, type: "Follow", actor: shape.actor, unionId: union.id });
    return "joined";
  };
}

export type FastFollow = ReturnType<typeof createFastFollow>;


const readUnion = prepared<[slug: string], { id: string }>((db, slug) => db.selectFrom("unions").select("id").where("slug", "=", slug));

/**
 * A union's id by slug, held once read: Muster never changes a union's slug
 * nor deletes a union (src/unions/unions.ts), so the pair cannot go stale;
 * a slug with no union is read every time (one may be made any moment). A
 * round trip less per Follow.
 */
const unionIds = new WeakMap<Kysely<DB>, Map<string, { id: string }>>();
const UNION_IDS_MAX = 1024;
async function unionIdOf(db: Kysely<DB>, slug: string): Promise<{ id: string } | undefined> {
  let held = unionIds.get(db);
  if (held === undefined) unionIds.set(db, held = new Map());
  const known = held.get(slug);
  if (known !== undefined) return known;
  const row = (await readUnion(db, slug)).rows[0];
  if (row === undefined) return undefined;
  if (held.size >= UNION_IDS_MAX) held.delete(held.keys().next().value!);
  held.set(slug, { id: row.id });
  return row;
}

type Recorded = { recorded: boolean; busy: boolean; cached: boolean };
type Upserted = DB & { actor_updated: { id: string }; actor_inserted: { id: string } };

/**
 * The Follow's record (nothing when it already was), the check for Fedify's
 * live claim on it and whether the actor's upsert (withRemoteActorUpsert's
 * CTEs, in `upserted`) wrote its row, as the end of one statement.
 */
function recordFollowAfter(upserted: QueryCreator<Upserted>, id: string, actor: string, unionId: string, at: number) {
  return upserted
    .with("rec", (db) => db.insertInto("inbox_activities").values({ id, type: "Follow", actor, union_id: unionId, received_at: at }).onConflict((oc) => oc.column("id").doNothing()).returning("id"))
    .selectNoFrom((eb) => [
      eb.exists(eb.selectFrom("rec").select("id")).as("recorded"),
      eb.exists(eb.selectFrom("inbox_claims").select("id").where("id", "=", id).where("claimed_until", ">=", at)).as("busy"),
      eb.or([eb.exists(eb.selectFrom("actor_updated").select("id")), eb.exists(eb.selectFrom("actor_inserted").select("id"))]).as("cached"),
    ]);
}

type FollowArgs = [id: string, actor: string, unionId: string, at: number];
type KeyArgs = [encoded: string, storedKeyId: string, key: Uint8Array, form: number, expiresAt: number];

const recordFollowAndActorStatement = prepared<[...FollowArgs, ...RemoteActorArgs], Recorded>(
  (trx, id, actor, unionId, at, ...actorRow) => recordFollowAfter(withRemoteActorUpsert(trx, actorRow), id, actor, unionId, at), { shareParameters: true });

/**
 * recordFollowAndActorStatement with the follower's key written by the
 * actor's upsert (PostgreSQL, migration 0075: the key of "<actor>#main-key"
 * owned by the actor lives in its remote_actors row), as the KV store's
 * writePublicKey would have written it in a second statement after it: out
 * of fedify_kv and fedify_public_keys (withKeyCleared), into the row. The
 * upsert replaces a stored row only when fetched no later (its fetched_at
 * guard); when it leaves the row, `held` still puts the key in it, as the
 * key's own write did. `held` and the upsert never touch the same row (held
 * only when neither actor_updated nor actor_inserted returned a row; the
 * upsert is two CTEs because 0084's exclusion constraint cannot arbitrate ON
 * CONFLICT DO UPDATE, as withRemoteActorUpsert). The insert's key is set, so
 * 0075's insert trigger (which takes a waiting key in) does not run: `old`
 * deletes that key. Before, the key's write updated the row the upsert had
 * just inserted: a second version of it every join, and one statement more.
 */
const recordFollowActorAndRowKey = prepared<[...FollowArgs, ...KeyArgs, ...RemoteActorArgs], Recorded>(
  (trx, id, actor, unionId, at, encoded, stored, key, form, expiresAt, ...actorRow) => {
    const upserted = withKeyCleared(withRemoteActorUpsert(trx, actorRow, actorRowKey(key, form, expiresAt)), encoded, stored);
    const held = withRowKey(upserted, actorRow[0], key, form, expiresAt, sql<boolean>`not exists (select 1 from "actor_updated") and not exists (select 1 from "actor_inserted")`);
    return recordFollowAfter(held, id, actor, unionId, at);
  }, { shareParameters: true });

/**
 * recordFollowAndActorStatement with the follower's key written to
 * fedify_public_keys in the same statement, as writePublicKey writes a key
 * no actor's row holds (a key id that is not "https://…#main-key"): out of
 * fedify_kv, the old row deleted and the new one inserted (tableKeyInsert).
 * Before, a statement of its own sent after it.
 */
const recordFollowActorAndTableKey = prepared<[...FollowArgs, ...KeyArgs, owner: string | null, ...RemoteActorArgs], Recorded>(
  (trx, id, actor, unionId, at, encoded, stored, key, form, expiresAt, owner, ...actorRow) => {
    const cleared = withKeyCleared(withRemoteActorUpsert(trx, actorRow), encoded, stored);
    return recordFollowAfter(cleared.with("ins", (db) => tableKeyInsert(db, stored, owner, key, form, expiresAt)), id, actor, unionId, at);
  }, { shareParameters: true });

type ActorRowKey = JoinedKeyWrite;

/**
 * The Follow's record (as processOnce records a processed activity; nothing
 * when it already was), the check for Fedify's live claim on it and
 * upsertRemoteActor as one PostgreSQL statement (data-modifying CTEs), with
 * the follower's key when `rowKey` says how. The upsert runs even for a
 * repeat or a busy id, whose join is then rolled back with it.
 */
export async function recordFollowAndActor(trx: Kysely<DB>, id: string, actor: string, unionId: string, at: number, cached: CachedActor, rowKey?: ActorRowKey): Promise<{ readonly answer: Promise<{ recorded: boolean; busy: boolean }> }> {
  if (!isRemoteActorType(cached.type)) throw new TypeError(`Not an actor type: ${String(cached.type)}`);
  const r = remoteActorRow(cached);
  const actorRow: RemoteActorArgs = [r.id, r.type, r.handle, r.name, r.inbox, r.shared_inbox, r.fetched_at];
  // Built and compiled once (src/db/prepared.ts): Kysely building it per join was a tenth of the web process's CPU.
  // Named (sendWithNext): parsed once per connection.
  const query = rowKey === undefined
    ? recordFollowAndActorStatement.compiled(trx, id, actor, unionId, at, ...actorRow)
    : rowKey.actorRow
    ? recordFollowActorAndRowKey.compiled(trx, id, actor, unionId, at, rowKey.encoded, rowKey.storedKeyId, rowKey.key, rowKey.form, rowKey.expiresAt, ...actorRow)
    : recordFollowActorAndTableKey.compiled(trx, id, actor, unionId, at, rowKey.encoded, rowKey.storedKeyId, rowKey.key, rowKey.form, rowKey.expiresAt, rowKey.owner, ...actorRow);
  // Sent with the transaction's next statement (the union's lock): its answer once that ran.
  const { result } = await sendWithNext(trx, query);
  const answer = result.then(({ rows }) => ({ recorded: Boolean(rows[0]!.recorded), busy: Boolean(rows[0]!.busy) }));
  // Its failure is the lock's (the transaction rolls back); unread then, it is no unhandled rejection.
  answer.catch(() => {});
  // Wrapped: an async function returning the promise itself would wait for it, and the lock is not sent yet.
  return { answer };
}

/**
 * The Follow's record (as processOnce records a processed activity) unless
 * Fedify's path holds a live claim on the id (SQLite's
 * join: the record and the claim check in one statement). Nothing is
 * written when the id was processed already or is claimed.
 */
export const recordUnclaimedFollow = prepared<[id: string, actor: string, unionId: string, at: number], unknown>((db, id, actor, unionId, at) =>
  db.insertInto("inbox_activities").columns(["id", "type", "actor", "union_id", "received_at"])
    .expression(db.selectNoFrom((eb) => [eb.val(id).as("id"), sql.lit("Follow").as("type"), eb.val(actor).as("actor"), eb.val(unionId).as("union_id"), eb.val(at).as("received_at")])
      .where((eb) => eb.not(eb.exists(db.selectFrom("inbox_claims").select("id").where("id", "=", id).where("claimed_until", ">=", at)))))
    .onConflict((oc) => oc.column("id").doNothing()));

const readRecorded = prepared<[id: string], { id: string }>((db, id) => db.selectFrom("inbox_activities").select("id").where("id", "=", id));

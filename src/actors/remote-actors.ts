import { type Kysely, PostgresAdapter, type QueryCreator, type RawBuilder, type Selectable, sql } from "kysely";
import type { DB, RemoteActorsTable } from "../db/schema.ts";
import { prepared } from "../db/prepared.ts";

export const REMOTE_ACTOR_TYPES = ["Person", "Group", "Service", "Application", "Organization"] as const;
export type RemoteActorType = (typeof REMOTE_ACTOR_TYPES)[number];

export function isRemoteActorType(value: unknown): value is RemoteActorType {
  return typeof value === "string" && (REMOTE_ACTOR_TYPES as readonly string[]).includes(value);
}

/** What Muster remembers about an actor on another server. URLs are absolute hrefs. */
export interface RemoteActor {
  id: string;
  type: RemoteActorType;
  /**
   * `@username@host`, built from `preferredUsername` and the host of `id`
   * (no WebFinger round-trip), so it can differ from the handle the server
   * advertises when its WebFinger domain is not its ActivityPub domain.
   */
  handle: string | null;
  preferredUsername: string | null;
  name: string | null;
  /** As sent by the remote server: HTML that must be sanitised before display. */
  summary: string | null;
  url: string | null;
  avatarUrl: string | null;
  inbox: string | null;
  sharedInbox: string | null;
  /** Epoch milliseconds of the fetch these fields came from. */
  fetchedAt: number;
}

/**
 * The part of a remote actor that is cached: what Muster reads back (the
 * handle for mentions and the roster, a partner union's name, the inboxes
 * to deliver to). The bio, profile and avatar URLs and the username are
 * parsed and checked but not kept: at a million members they were about 350
 * bytes each (migration 0046). Nor is a person's display name: only the
 * names of groups and other non-person actors (partner unions, relays) are
 * shown anywhere.
 */
export type CachedActor = Pick<RemoteActor, "id" | "type" | "handle" | "name" | "inbox" | "sharedInbox" | "fetchedAt">;

/** The fields of `actor` that the cache keeps, as getRemoteActor returns them. */
export function cachedPart(actor: CachedActor): CachedActor {
  const { id, type, handle, name, inbox, sharedInbox, fetchedAt } = actor;
  return { id, type, handle, name: type === "Person" ? null : name, inbox, sharedInbox, fetchedAt };
}

/**
 * Inserts or replaces the cached actor. A write carrying an older `fetchedAt`
 * than the stored row is ignored, so a slow refresh finishing after a newer
 * one cannot roll the cache back.
 */
export async function upsertRemoteActor(db: Kysely<DB>, actor: CachedActor): Promise<void> {
  if (!isRemoteActorType(actor.type)) throw new TypeError(`Not an actor type: ${String(actor.type)}`);
  const r = remoteActorRow(actor);
  await upsertStatement(db, r.id, r.type, r.handle, r.name, r.inbox, r.shared_inbox, r.fetched_at);
}

type Row = Selectable<RemoteActorsTable>;
/** A cached actor's row, field by field (remoteActorRow's), as the upsert binds it. */
export type RemoteActorArgs = [id: string, type: string, handle: Row["handle"], name: Row["name"], inbox: Row["inbox"], shared_inbox: Row["shared_inbox"], fetched_at: number];

/**
 * The upsert of a cached actor's row, not run: a stored row is replaced
 * only by one fetched no earlier (the update takes the new row's values,
 * excluded.*). Run by upsertRemoteActor on SQLite; PostgreSQL's form is
 * withRemoteActorUpsert (migration 0084).
 */
export function upsertRemoteActorQuery(db: QueryCreator<DB>, ...[id, type, handle, name, inbox, shared_inbox, fetched_at]: RemoteActorArgs) {
  return db.insertInto("remote_actors")
    .values({ id, type, handle, name, inbox, shared_inbox, fetched_at })
    .onConflict((oc) =>
      oc.column("id")
        .doUpdateSet((eb) => ({
          type: eb.ref("excluded.type"),
          handle: eb.ref("excluded.handle"),
          name: eb.ref("excluded.name"),
          inbox: eb.ref("excluded.inbox"),
          shared_inbox: eb.ref("excluded.shared_inbox"),
          fetched_at: eb.ref("excluded.fetched_at"),
        }))
        .where("remote_actors.fetched_at", "<=", (eb) => eb.ref("excluded.fetched_at"))
    );
}

/**
 * Columns of a remote_actors row outside the schema's type (PostgreSQL's
 * cached key, migration 0075: federation/kysely-kv-store.ts actorRowKey),
 * each with its value: withRemoteActorUpsert writes them with the actor.
 */
export type ExtraActorColumns = Readonly<Record<string, RawBuilder<unknown>>>;

/**
 * PostgreSQL (migration 0084: the id is unique by an exclusion constraint
 * over a hash index, which ON CONFLICT DO UPDATE cannot take as its arbiter):
 * upsertRemoteActorQuery as two data-modifying CTEs of `qc`'s statement.
 * `actor_updated` replaces the stored row if it was fetched no later;
 * `actor_inserted` inserts the row when the statement's snapshot has none
 * (DO NOTHING if another transaction inserted it meanwhile: its copy, fetched
 * at about the same moment, stays). Each returns the id it wrote, and both
 * write `extra` too (the follow's fast path: the follower's key in the same
 * statement).
 */
export function withRemoteActorUpsert(qc: QueryCreator<DB>, [id, type, handle, name, inbox, shared_inbox, fetched_at]: RemoteActorArgs, extra: ExtraActorColumns = {}) {
  const extraNames = Object.keys(extra);
  // The extra columns are not in the schema's type (see ExtraActorColumns): hence the casts.
  return qc
    .with("actor_updated", (db) => db.updateTable("remote_actors").set({ type, handle, name, inbox, shared_inbox, fetched_at, ...extra } as never)
      .where("id", "=", id).where("fetched_at", "<=", fetched_at).returning("id"))
    .with("actor_inserted", (db) => db.insertInto("remote_actors").columns(["id", "type", "handle", "name", "inbox", "shared_inbox", "fetched_at", ...extraNames] as never)
      .expression(db.selectNoFrom((eb) => [
        eb.val(id).as("id"), eb.val(type).as("type"), sql<string | null>`${handle}::text`.as("handle"), sql<string | null>`${name}::text`.as("name"),
        sql<string | null>`${inbox}::text`.as("inbox"), sql<string | null>`${shared_inbox}::text`.as("shared_inbox"), sql<number>`${fetched_at}::bigint`.as("fetched_at"),
        ...extraNames.map((column) => extra[column]!.as(column)),
      ]).where((eb) => eb.not(eb.exists(eb.selectFrom("remote_actors").select("id").where("id", "=", id)))))
      .onConflict((oc) => oc.doNothing())
      .returning("id"));
}

// Compiled once (src/db/prepared.ts): every join writes its member's actor.
const upsertStatement = prepared<RemoteActorArgs, never>((db, ...args) =>
  (db.getExecutor().adapter instanceof PostgresAdapter
    ? withRemoteActorUpsert(db, args).selectNoFrom(sql<number>`1`.as("done"))
    : upsertRemoteActorQuery(db, ...args)) as never);

/** The columns of a cached actor (on PostgreSQL the row also holds the actor's cached key, migration 0075: not read here). */
export const REMOTE_ACTOR_COLUMNS = ["id", "type", "handle", "name", "inbox", "shared_inbox", "fetched_at"] as const;

export async function getRemoteActor(db: Kysely<DB>, id: string): Promise<CachedActor | undefined> {
  const row = await db.selectFrom("remote_actors").select(REMOTE_ACTOR_COLUMNS).where("id", "=", id).executeTakeFirst();
  return row && fromRow(row);
}

/** Returns whether a row was removed. */
export async function deleteRemoteActor(db: Kysely<DB>, id: string): Promise<boolean> {
  const result = await db.deleteFrom("remote_actors").where("id", "=", id).executeTakeFirst();
  return Number(result.numDeletedRows) > 0;
}

/**
 * Builds the stored handle form. A username containing `@`, `/` or whitespace
 * gets no handle at all: it could be rendered to look like an account on a
 * different server.
 */
export function buildHandle(preferredUsername: string | null, actorId: URL): string | null {
  if (preferredUsername == null || preferredUsername === "" || preferredUsername.length > LIMITS.preferredUsername) return null;
  // Invisible and bidi characters would let a handle display as another's.
  if (/[@\s/\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Z}]/u.test(preferredUsername)) return null;
  return `@${preferredUsername}@${actorId.host}`;
}

/**
 * What is kept of a remote actor, in characters: a server may send a name of
 * 100,000 characters or a summary of megabytes, and whatever is stored is
 * shown on officers' pages and copied into every read. Mastodon's own limits
 * are 30 (name) and 500 (bio); these leave room for other servers.
 */
export const LIMITS = { name: 200, summary: 5000, preferredUsername: 100, url: 2048 } as const;

/** Display text: no controls or bidi overrides (they reorder what follows), trimmed to `max` characters. */
export function boundedText(value: string | null, max: number): string | null {
  if (value == null) return null;
  const clean = value.replace(BIDI_AND_CONTROLS, "");
  const chars = Array.from(clean);
  return chars.length <= max ? clean : `${chars.slice(0, max - 1).join("")}…`;
}

// C0/C1 controls except tab and newline, bidi embeddings, overrides,
// isolates and marks, zero-width space and word joiner, BOM.
const BIDI_AND_CONTROLS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200B\u200E\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]/g;

/**
 * Inboxes are stored relative to the actor id, which the row already holds
 * (about 55 bytes a member; migration 0049): "" is `${id}/inbox`, the usual
 * form (Mastodon, Misskey, Pleroma), and a value starting with "/" follows
 * the id's origin. Anything else is stored as it came. A parsed inbox is an
 * absolute URL, so neither form can be mistaken for one; rows written before
 * read as they were.
 */
function storedUrl(id: string, url: string | null, usual?: string): string | null {
  if (url === null) return null;
  if (url === usual) return "";
  const origin = originOf(id);
  return origin !== null && url.startsWith(`${origin}/`) ? url.slice(origin.length) : url;
}

/** The absolute inbox URL of a stored `inbox` or `shared_inbox` value (see storedUrl). */
export function inboxUrl(actorId: string, stored: string | null): string | null {
  if (stored === null || !(stored === "" || stored.startsWith("/"))) return stored;
  if (stored === "") return `${actorId}/inbox`;
  return `${originOf(actorId) ?? ""}${stored}`;
}

/**
 * `@${last path segment}@${host}` of an id, by string: the handle most
 * servers' actors have (Mastodon, Pleroma, GoToSocial: `/users/<name>` and
 * preferredUsername `<name>`). A cached handle equal to it is stored as ""
 * (about 36 bytes a member; migration 0057); buildHandle never makes "", so
 * "" can mean nothing else. Misskey's ids (`/users/<opaque id>`) and anything
 * else keep their handle as it came. Computed the same way when storing and
 * reading, so a stored "" reads back exactly the handle that was written;
 * migration 0057 computes it in SQL, held to this by test/migrations.test.ts.
 */
export function usualHandle(id: string): string | null {
  const start = id.indexOf("://");
  if (start < 0) return null;
  const end = id.indexOf("/", start + 3);
  if (end < 0) return null;
  return `@${id.slice(id.lastIndexOf("/") + 1)}@${id.slice(start + 3, end)}`;
}

/** The stored form of a cached handle (see usualHandle). */
function storedHandle(id: string, handle: string | null): string | null {
  return handle !== null && handle === usualHandle(id) ? "" : handle;
}

/** The handle of a stored `handle` value (see usualHandle). */
export function handleOf(id: string, stored: string | null): string | null {
  return stored === "" ? usualHandle(id) : stored;
}

/** "https://host:port" of an absolute id, by string so that storing and reading agree exactly. */
export function originOf(id: string): string | null {
  const start = id.indexOf("://");
  if (start < 0) return null;
  const end = id.indexOf("/", start + 3);
  return end < 0 ? id : id.slice(0, end);
}

/** The stored row of a cached actor (exported for seeding benchmarks with what a fetch stores). */
export function remoteActorRow(a: CachedActor): Selectable<RemoteActorsTable> {
  return {
    id: a.id,
    type: a.type,
    handle: storedHandle(a.id, a.handle != null && a.handle.length <= LIMITS.preferredUsername + 300 ? a.handle : null),
    name: a.type === "Person" ? null : boundedText(a.name, LIMITS.name),
    inbox: storedUrl(a.id, a.inbox, `${a.id}/inbox`),
    shared_inbox: storedUrl(a.id, a.sharedInbox),
    fetched_at: a.fetchedAt,
  };
}

/** A remote_actors row as getRemoteActor returns it. */
export function remoteActorFromRow(r: Selectable<RemoteActorsTable>): CachedActor {
  return fromRow(r);
}

function fromRow(r: Selectable<RemoteActorsTable>): CachedActor {
  return {
    id: r.id,
    // Only upsertRemoteActor writes this table and it rejects other types.
    type: r.type as RemoteActorType,
    handle: handleOf(r.id, r.handle),
    name: r.name,
    inbox: inboxUrl(r.id, r.inbox),
    sharedInbox: inboxUrl(r.id, r.shared_inbox),
    fetchedAt: r.fetched_at,
  };
}

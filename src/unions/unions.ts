import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { DB, UnionsTable } from "../db/schema.ts";
import type { EventBus } from "../events.ts";

export interface Union {
  readonly id: string;
  readonly slug: string;
  readonly name: string;
  readonly purpose: string;
  /** The leader's fediverse handle, `@user@host`, if known. */
  readonly leaderHandle: string | null;
  readonly iconUrl: string | null;
  readonly manuallyApprovesFollowers: boolean;
  readonly createdAt: Date;
}

export interface NewUnion {
  readonly slug: string;
  readonly name: string;
  readonly purpose: string;
  readonly leaderHandle?: string | null;
  readonly iconUrl?: string | null;
  readonly manuallyApprovesFollowers?: boolean;
}

/** A stored signing key, opaque to the domain: federation/ decides what it is. */
export interface StoredKey {
  readonly algorithm: string;
  readonly privateJwk: string;
  readonly publicJwk: string;
}

export class UnionError extends Error {
  override name = "UnionError";
  readonly code: "invalid" | "conflict" | "not_found";
  constructor(code: "invalid" | "conflict" | "not_found", message: string) {
    super(message);
    this.code = code;
  }
}

// Slugs become WebFinger usernames and URL segments, so keep them to what every
// fediverse server accepts in a handle (Mastodon: [a-z0-9_]); hyphens are
// allowed too because Lemmy and others accept them.
const SLUG = /^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$/;
const RESERVED = new Set(["admin", "api", "inbox", "instance", "setup", "u", "well-known", "nodeinfo", "healthz", "public", "static", "login", "logout"]);
const HANDLE = /^@?([^@\s]+)@([a-z0-9.-]+(?::\d+)?)$/i;

export function normaliseHandle(raw: string): string {
  const m = HANDLE.exec(raw.trim());
  if (!m) throw new UnionError("invalid", `a fediverse handle looks like @user@host; got ${JSON.stringify(raw)}`);
  return `@${m[1]}@${m[2]!.toLowerCase()}`;
}

export function validateNewUnion(input: NewUnion): NewUnion {
  const slug = input.slug.trim().toLowerCase();
  if (!SLUG.test(slug)) {
    throw new UnionError("invalid", `slug must be 1-64 characters of a-z, 0-9, "_" or "-", starting and ending with a letter or digit; got ${JSON.stringify(input.slug)}`);
  }
  if (RESERVED.has(slug)) throw new UnionError("invalid", `slug ${JSON.stringify(slug)} is reserved`);
  const name = input.name.trim();
  if (name.length < 1 || name.length > 100) throw new UnionError("invalid", "name must be 1-100 characters");
  const purpose = input.purpose.trim();
  if (purpose.length < 1 || purpose.length > 2000) throw new UnionError("invalid", "purpose must be 1-2000 characters");
  const leaderHandle = input.leaderHandle ? normaliseHandle(input.leaderHandle) : null;
  let iconUrl: string | null = null;
  if (input.iconUrl) {
    let u: URL;
    try {
      u = new URL(input.iconUrl);
    } catch {
      throw new UnionError("invalid", `icon must be an absolute https URL; got ${JSON.stringify(input.iconUrl)}`);
    }
    if (u.protocol !== "https:" && u.protocol !== "http:") throw new UnionError("invalid", "icon must be an http(s) URL");
    iconUrl = u.href;
  }
  return { slug, name, purpose, leaderHandle, iconUrl, manuallyApprovesFollowers: input.manuallyApprovesFollowers ?? true };
}

export interface UnionDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  /** Makes the union actor's signing keys; supplied by federation/. */
  readonly generateKeys: () => Promise<StoredKey[]>;
}

/** Creates a union and its keys in one transaction: a union never exists keyless. */
export async function createUnion(deps: UnionDeps, input: NewUnion): Promise<Union> {
  const v = validateNewUnion(input);
  const keys = await deps.generateKeys();
  const id = randomUUID();
  const now = Date.now();
  try {
    await deps.db.transaction().execute(async (trx) => {
      const taken = await trx.selectFrom("unions").select("id").where("slug", "=", v.slug).executeTakeFirst();
      if (taken) throw new UnionError("conflict", `a union with slug ${JSON.stringify(v.slug)} already exists`);
      await trx.insertInto("unions").values({
        id,
        slug: v.slug,
        name: v.name,
        purpose: v.purpose,
        leader_handle: v.leaderHandle ?? null,
        icon_url: v.iconUrl ?? null,
        manually_approves_followers: v.manuallyApprovesFollowers ? 1 : 0,
        created_at: now,
      }).execute();
      await trx.insertInto("actor_keys").values(keys.map((k) => ({
        owner: unionKeyOwner(id),
        algorithm: k.algorithm,
        private_jwk: k.privateJwk,
        public_jwk: k.publicJwk,
        created_at: now,
      }))).execute();
    });
  } catch (e) {
    if (e instanceof UnionError) throw e;
    // Two concurrent creates can both pass the check; the unique index decides.
    if (/unique|duplicate/i.test(String(e))) throw new UnionError("conflict", `a union with slug ${JSON.stringify(v.slug)} already exists`);
    throw e;
  }
  const union = await getUnionBySlug(deps.db, v.slug);
  if (!union) throw new Error("union vanished after insert");
  deps.events.emit("union.created", { unionId: union.id, slug: union.slug });
  return union;
}

export function unionKeyOwner(unionId: string): string {
  return `union:${unionId}`;
}

export async function getUnionBySlug(db: Kysely<DB>, slug: string): Promise<Union | undefined> {
  const row = await db.selectFrom("unions").selectAll().where("slug", "=", slug.toLowerCase()).executeTakeFirst();
  return row && toUnion(row);
}

export async function getUnionById(db: Kysely<DB>, id: string): Promise<Union | undefined> {
  const row = await db.selectFrom("unions").selectAll().where("id", "=", id).executeTakeFirst();
  return row && toUnion(row);
}

export async function listUnions(db: Kysely<DB>): Promise<Union[]> {
  const rows = await db.selectFrom("unions").selectAll().orderBy("created_at").orderBy("slug").execute();
  return rows.map(toUnion);
}

export async function countUnions(db: Kysely<DB>): Promise<number> {
  const r = await db.selectFrom("unions").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
  return Number(r.n);
}

function toUnion(row: UnionsTable): Union {
  return {
    id: row.id,
    slug: row.slug,
    name: row.name,
    purpose: row.purpose,
    leaderHandle: row.leader_handle,
    iconUrl: row.icon_url,
    manuallyApprovesFollowers: row.manually_approves_followers === 1,
    createdAt: new Date(Number(row.created_at)),
  };
}

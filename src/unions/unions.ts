import "../temporal.ts";
import { type Kysely, sql } from "kysely";
import type { DB, UnionsTable } from "../db/schema.ts";
import type { EventBus } from "../events.ts";
import type { Outbox } from "../outbox.ts";
import { defaultBylawsText, writeVersionIn } from "../bylaws/bylaws.ts";
import { type ActionsVisibility, BylawsError, JOIN_POLICIES, type JoinPolicy, MEMBERS_VISIBILITIES, type MembersVisibility, paramSpec } from "../bylaws/params.ts";
import { type By, requireOfficer } from "../members/members.ts";
import { installLeader } from "../members/leadership.ts";
import { DomainError } from "../domain-error.ts";
import { newMemberId } from "../members/member-id.ts";
import { newUnionId } from "./union-id.ts";

export { type ActionsVisibility, DEFAULT_COMMITMENT_WORDS, JOIN_POLICIES, type JoinPolicy, MEMBERS_VISIBILITIES, type MembersVisibility } from "../bylaws/params.ts";

export interface Union {
  readonly id: string;
  readonly slug: string;
  readonly name: string;
  readonly purpose: string;
  /** The leader's fediverse handle, `@user@host`, if known. */
  readonly leaderHandle: string | null;
  readonly iconUrl: string | null;
  /** Derived from the join policy: only `open` unions accept follows unreviewed. */
  readonly manuallyApprovesFollowers: boolean;
  readonly joinPolicy: JoinPolicy;
  /** Invites an ordinary member may have outstanding; officers have no limit. */
  readonly memberInviteLimit: number;
  readonly membersVisibility: MembersVisibility;
  readonly welcomeText: string | null;
  /** `members`: calls-to-action go to followers only; `public`: to everyone. */
  readonly actionsVisibility: ActionsVisibility;
  /** Local `HH:MM` at which the day's queued call-to-action is published. */
  readonly publishTime: string;
  readonly timeZone: string;
  /** Reply words that count as committing, lower case. */
  readonly commitmentWords: readonly string[];
  readonly relayPolicy: RelayPolicy;
  readonly createdAt: Date;
}

export type RelayPolicy = "off" | "approval" | "auto";
/** New unions start strict; the column default (migration 0007) and the bylaw default say the same. */
export const DEFAULT_MEMBERS_VISIBILITY: MembersVisibility = "signed-in";

export interface NewUnion {
  readonly slug: string;
  readonly name: string;
  readonly purpose: string;
  readonly leaderHandle?: string | null;
  readonly iconUrl?: string | null;
  /** A founding bylaw; every other parameter starts at its documented default. */
  readonly joinPolicy?: JoinPolicy;
  readonly membersVisibility?: MembersVisibility;
  /** A founding bylaw: the IANA zone of the daily publication hour (UTC when absent or blank). */
  readonly timeZone?: string | undefined;
}

/** A stored signing key, opaque to the domain: federation/ decides what it is. */
export interface StoredKey {
  readonly algorithm: string;
  readonly privateJwk: string;
  readonly publicJwk: string;
}

export class UnionError extends DomainError<"invalid" | "conflict" | "not_found"> {
  override name = "UnionError";
}

// Slugs become WebFinger usernames and URL segments, so keep them to what every
// fediverse server accepts in a handle (Mastodon: [a-z0-9_]); hyphens are
// allowed too because Lemmy and others accept them.
const SLUG = /^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$/;
const RESERVED = new Set(["admin", "api", "inbox", "instance", "setup", "u", "well-known", "nodeinfo", "healthz", "public", "static", "login", "logout"]);
// The user part: no spaces and nothing invisible (bidi overrides, zero-width
// characters, controls), so one handle cannot be made to look like another.
const HANDLE = /^@?([^@\s\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Z}]{1,100})@([a-z0-9.-]{1,253}(?::\d{1,5})?)$/iu;

/**
 * `@user@host`, lower-cased whole: Mastodon and most servers resolve user
 * names case-insensitively, and a handle typed on an invite page must match
 * the one a Follow arrives with.
 */
export function normaliseHandle(raw: string): string {
  const m = HANDLE.exec(raw.trim());
  if (!m) throw new UnionError("invalid", `a fediverse handle looks like @user@host; got ${JSON.stringify(raw)}`);
  return `@${m[1]!.toLowerCase()}@${m[2]!.toLowerCase()}`;
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
  const joinPolicy = input.joinPolicy ?? "approval";
  if (!JOIN_POLICIES.includes(joinPolicy)) throw new UnionError("invalid", `join policy must be one of ${JOIN_POLICIES.join(", ")}`);
  const membersVisibility = input.membersVisibility ?? DEFAULT_MEMBERS_VISIBILITY;
  if (!MEMBERS_VISIBILITIES.includes(membersVisibility)) {
    throw new UnionError("invalid", `members visibility must be one of ${MEMBERS_VISIBILITIES.join(", ")}; got ${JSON.stringify(membersVisibility)}`);
  }
  let timeZone: string | undefined;
  if (input.timeZone?.trim()) {
    try {
      timeZone = paramSpec("timeZone").parse(input.timeZone) as string;
    } catch (e) {
      if (e instanceof BylawsError) throw new UnionError("invalid", e.message);
      throw e;
    }
  }
  return { slug, name, purpose, leaderHandle, iconUrl, joinPolicy, membersVisibility, timeZone };
}

export interface UnionDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  /** Makes the union actor's signing keys; supplied by federation/. */
  readonly generateKeys: () => Promise<StoredKey[]>;
  /**
   * Where the union's treasury creation is queued (the ledger lane), in the
   * union's own transaction: the chain may be slow or down, so the union is
   * created at once and its treasury follows, retried until it exists.
   * Without one (domain tests) the treasury is made on first use.
   */
  readonly outbox?: Outbox;
}

/** Creates a union and its keys in one transaction: a union never exists keyless. */
export async function createUnion(deps: UnionDeps, input: NewUnion): Promise<Union> {
  const v = validateNewUnion(input);
  const keys = await deps.generateKeys();
  const id = newUnionId();
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
        manually_approves_followers: v.joinPolicy === "open" ? 0 : 1,
        join_policy: v.joinPolicy!,
        member_invite_limit: 5,
        members_visibility: v.membersVisibility ?? DEFAULT_MEMBERS_VISIBILITY,
        welcome_text: null,
        actions_visibility: "members",
        publish_time: "09:00",
        time_zone: "UTC",
        commitment_words: "in,done,committed",
        relay_policy: "off",
        last_published_on: null,
        created_at: now,
      }).execute();
      // The leader's place at the root of the tree exists from the start, so
      // invites made before the leader's account follows already have a sponsor.
      if (v.leaderHandle) await insertReservedLeader(trx, id, v.leaderHandle, now);
      // A union never exists without bylaws in force; writing them also sets
      // the union's setting columns from the founding parameters.
      await writeVersionIn(trx, id, { kind: "founding" }, { text: defaultBylawsText(v.name, v.purpose), params: { joinPolicy: v.joinPolicy, membersVisibility: v.membersVisibility, timeZone: v.timeZone } }, now);
      await trx.insertInto("actor_keys").values(keys.map((k) => ({
        owner: unionKeyOwner(id),
        algorithm: k.algorithm,
        private_jwk: k.privateJwk,
        public_jwk: k.publicJwk,
        created_at: now,
      }))).execute();
      await deps.outbox?.add(trx, { kind: "treasury.create", unionId: id });
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

async function insertReservedLeader(trx: Kysely<DB>, unionId: string, handle: string, now: number): Promise<void> {
  await trx.insertInto("members").values({
    id: newMemberId(now),
    union_id: unionId,
    actor_id: null,
    handle,
    state: "reserved",
    role: "leader",
    subtree_size: 0,
    created_at: now,
  }).execute();
}

/**
 * What officers may change on a union: its presentation. Everything the
 * server enforces is a bylaw parameter (src/bylaws) and changes only by a
 * member vote or an operator override.
 */
export interface UnionSettings {
  readonly name?: string;
  readonly purpose?: string;
  readonly iconUrl?: string | null;
  readonly welcomeText?: string | null;
  /** Operator only: names the leader while the leader's place is unclaimed. */
  readonly leaderHandle?: string;
  readonly relayPolicy?: RelayPolicy;
}

const SETTING_KEYS = new Set(["name", "purpose", "iconUrl", "welcomeText", "leaderHandle", "relayPolicy"]);

/**
 * Changes a union's settings; unknown or invalid values are refused whole.
 * `by` must be the operator or an active officer; a bylaw parameter given
 * here is refused with a pointer to how bylaws change.
 */
export async function updateUnion(deps: Pick<UnionDeps, "db" | "events">, slug: string, by: By, settings: UnionSettings): Promise<Union> {
  const union = await getUnionBySlug(deps.db, slug);
  if (!union) throw new UnionError("not_found", `no union with slug ${JSON.stringify(slug)}`);
  for (const [k, v] of Object.entries(settings)) {
    if (v === undefined || SETTING_KEYS.has(k)) continue;
    let bylaw: string | undefined;
    try {
      bylaw = paramSpec(k).key;
    } catch {
      throw new UnionError("invalid", `unknown union setting ${JSON.stringify(k)}`);
    }
    throw new BylawsError("forbidden", `${bylaw} is a bylaw: it changes by a member vote on an amendment, or by the operator with \`muster bylaws set ${union.slug} ${bylaw}=... --reason "..."\``);
  }
  await requireOfficer(deps.db, union.id, by);
  if (settings.leaderHandle !== undefined && by.kind !== "operator") {
    throw new UnionError("invalid", "only the operator names the leader; a sitting leader changes by election");
  }
  const patch: Partial<UnionsTable> = {};
  if (settings.name !== undefined || settings.purpose !== undefined || settings.iconUrl !== undefined) {
    const v = validateNewUnion({
      slug: union.slug,
      name: settings.name ?? union.name,
      purpose: settings.purpose ?? union.purpose,
      iconUrl: settings.iconUrl === undefined ? union.iconUrl : settings.iconUrl,
    });
    Object.assign(patch, { name: v.name, purpose: v.purpose, icon_url: v.iconUrl ?? null });
  }
  if (settings.welcomeText !== undefined) {
    if (settings.welcomeText !== null && settings.welcomeText.length > 5000) throw new UnionError("invalid", "welcome text must be at most 5000 characters");
    patch.welcome_text = settings.welcomeText?.trim() || null;
  }
  if (settings.relayPolicy !== undefined) {
    if (!["off", "approval", "auto"].includes(settings.relayPolicy)) throw new UnionError("invalid", `relay policy must be off, approval or auto; got ${JSON.stringify(settings.relayPolicy)}`);
    patch.relay_policy = settings.relayPolicy;
  }
  await deps.db.transaction().execute(async (trx) => {
    if (Object.keys(patch).length > 0) await trx.updateTable("unions").set(patch).where("id", "=", union.id).execute();
    if (settings.leaderHandle !== undefined) await setLeader(trx, union.id, normaliseHandle(settings.leaderHandle));
  });
  return (await getUnionById(deps.db, union.id))!;
}

/**
 * Names the leader while the leader's place is empty: never claimed, or
 * emptied by a recall (the operator's lever, for a union left without one).
 * An active member named takes office as an elected leader would, at the
 * root of the sponsor tree, the moves recorded as "operator_named_leader";
 * anyone else gets a reserved place they claim by following. Handing over a
 * leadership that is held is a succession, which only an election does.
 */
async function setLeader(trx: Kysely<DB>, unionId: string, handle: string): Promise<void> {
  const current = await trx.selectFrom("members").selectAll().where("union_id", "=", unionId).where("role", "=", "leader").where("role", "<>", sql.lit("member"))
    .where("state", "in", ["reserved", "active"]).executeTakeFirst();
  if (current?.state === "active") {
    if (current.handle === handle) return;
    throw new UnionError("conflict", `the union already has an active leader (${current.handle}); members change a sitting leader by election (muster proposal create <union> --kind election --leader ...)`);
  }
  const member = await trx.selectFrom("members").select(["id", "state"]).where("union_id", "=", unionId).where("handle", "=", handle)
    .where("state", "in", ["active", "pending"]).executeTakeFirst();
  if (member?.state === "pending") throw new UnionError("conflict", `${handle} is waiting for approval to join; approve them first`);
  if (member) {
    await installLeader(trx, unionId, member.id, Date.now(), "operator_named_leader");
    return;
  }
  if (current) {
    await trx.updateTable("members").set({ handle }).where("id", "=", current.id).execute();
  } else {
    await insertReservedLeader(trx, unionId, handle, Date.now());
  }
  await trx.updateTable("unions").set({ leader_handle: handle }).where("id", "=", unionId).execute();
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

export function toUnion(row: UnionsTable): Union {
  return {
    id: row.id,
    slug: row.slug,
    name: row.name,
    purpose: row.purpose,
    leaderHandle: row.leader_handle,
    iconUrl: row.icon_url,
    manuallyApprovesFollowers: row.join_policy !== "open",
    joinPolicy: row.join_policy as JoinPolicy,
    memberInviteLimit: row.member_invite_limit,
    membersVisibility: row.members_visibility as MembersVisibility,
    welcomeText: row.welcome_text,
    actionsVisibility: row.actions_visibility as ActionsVisibility,
    publishTime: row.publish_time,
    timeZone: row.time_zone,
    commitmentWords: row.commitment_words.split(",").filter(Boolean),
    relayPolicy: row.relay_policy as RelayPolicy,
    createdAt: new Date(Number(row.created_at)),
  };
}

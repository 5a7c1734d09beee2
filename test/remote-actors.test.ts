import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { Endpoints, Image, LanguageString, Link, Object as APObject, Person, Service } from "@fedify/vocab";
import type { RemoteDocument } from "@fedify/vocab";
import {
  cachedPart,
  deleteRemoteActor,
  getRemoteActor,
  type RemoteActor,
  upsertRemoteActor,
} from "../src/actors/remote-actors.ts";
import { cacheActorObject, refreshRemoteActor } from "../federation/remote-actor-cache.ts";
import {
  createOfflineContextLoader,
  parseRemoteActor,
  preloadedContext,
  RemoteActorError,
} from "../federation/remote-actor-parse.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
const ACTOR_TYPES = ["Person", "Group", "Service", "Application", "Organization"];

type Json = Record<string, unknown>;

interface Fixture {
  /** Relative to FIXTURES, e.g. "lemmy/person-actor.json". */
  readonly file: string;
  /** The folder, i.e. the software that emitted it. */
  readonly server: string;
  readonly json: Json;
}

function loadFixture(file: string): Json {
  return JSON.parse(readFileSync(path.join(FIXTURES, file), "utf8")) as Json;
}

function findActorFixtures(): Fixture[] {
  const found: Fixture[] = [];
  for (const entry of readdirSync(FIXTURES, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith(".json")) continue;
    const file = path.relative(FIXTURES, path.join(entry.parentPath, entry.name));
    const json = loadFixture(file);
    const types = ([] as unknown[]).concat(json.type);
    if (types.some((t) => typeof t === "string" && ACTOR_TYPES.includes(t))) {
      found.push({ file, server: file.split(path.sep)[0]!, json });
    }
  }
  return found.sort((a, b) => a.file.localeCompare(b.file));
}

/**
 * Fixtures Fedify rightly refuses, with the reason. Listed rather than skipped
 * so the test notices if one starts parsing (or fails for another reason).
 */
const UNPARSEABLE: Record<string, { code: string; message: RegExp }> = {
  // A Pleroma test-suite copy whose publicKeyPem was hand-edited ("AA0CA08"
  // for "AAOCAQ8"): not valid DER, and Fedify rejects the whole actor for it.
  [path.join("mastodon", "application-instance-actor.json")]: { code: "invalid-document", message: /PublicKeyInfo/ },
};

function str(v: unknown): string | null {
  return typeof v === "string" ? v : null;
}

/** A raw `url`/`href` value (string, Link or array) as an absolute href. */
function rawHref(v: unknown): string | null {
  const first = Array.isArray(v) ? v[0] : v;
  if (typeof first === "string") return new URL(first).href;
  if (first != null && typeof first === "object" && "href" in first) return rawHref((first as Json).href);
  return null;
}

/** The raw icon Muster should pick: the largest by width x height, the first on ties. */
function rawAvatar(json: Json): string | null {
  const icons = ([] as unknown[]).concat(json.icon ?? []).filter((i): i is Json => i != null && typeof i === "object");
  let best: { url: string; area: number } | null = null;
  for (const icon of icons) {
    const url = rawHref(icon.url);
    if (url == null) continue;
    const area = (Number(icon.width) || 0) * (Number(icon.height) || 0);
    if (best == null || area > best.area) best = { url, area };
  }
  return best?.url ?? null;
}

async function rejects(promise: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof RemoteActorError, `expected RemoteActorError, got ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  });
}

// Parsing must work with no network at all; any fetch is a bug.
const realFetch = globalThis.fetch;
const fetched: string[] = [];
before(() => {
  globalThis.fetch = (async (input: RequestInfo | URL) => {
    fetched.push(input instanceof Request ? input.url : String(input));
    throw new Error("network access in a remote-actor test");
  }) as typeof fetch;
});
after(() => {
  globalThis.fetch = realFetch;
  assert.deepEqual(fetched, [], "nothing may be fetched");
});

const actorFixtures = findActorFixtures();

describe("parseRemoteActor on every actor fixture", () => {
  it("finds the actor documents of each server that has one", () => {
    const servers = new Set(actorFixtures.map((f) => f.server));
    // The corpus has no GoToSocial actor document (only Create, Flag, Move);
    // one added later is picked up by the scan and checked like the rest.
    for (const s of ["mastodon", "lemmy", "misskey", "pleroma"]) assert.ok(servers.has(s), `no ${s} actor fixture found`);
    assert.ok(actorFixtures.length >= 12, `only ${actorFixtures.length} actor fixtures found`);
  });

  for (const { file, json } of actorFixtures) {
    it(file, async () => {
      const id = str(json.id);
      assert.ok(id, "fixture has an id");
      const known = UNPARSEABLE[file];
      if (known) {
        await rejects(parseRemoteActor(json, { fetchedFrom: new URL(id) }), known.code, known.message);
        return;
      }
      const actor = await parseRemoteActor(json, { fetchedFrom: new URL(id), fetchedAt: 1234 });
      const endpoints = (json.endpoints ?? {}) as Json;
      const preferredUsername = str(json.preferredUsername);
      assert.deepEqual(actor, {
        id,
        type: json.type as RemoteActor["type"],
        handle: preferredUsername == null ? null : `@${preferredUsername}@${new URL(id).host}`,
        preferredUsername,
        name: str(json.name),
        summary: str(json.summary),
        url: rawHref(json.url),
        avatarUrl: rawAvatar(json),
        inbox: str(json.inbox),
        sharedInbox: str(endpoints.sharedInbox) ?? str(json.sharedInbox),
        fetchedAt: 1234,
      } satisfies RemoteActor);
      // Guards against a parser that returns nulls for everything.
      assert.ok(actor.inbox, "an inbox");
      assert.ok(actor.preferredUsername, "a preferredUsername");
    });
  }

  it("parses all but the listed unparseable fixtures", async () => {
    let parsed = 0;
    for (const { file, json } of actorFixtures) {
      if (UNPARSEABLE[file]) continue;
      await parseRemoteActor(json);
      parsed++;
    }
    assert.equal(parsed, actorFixtures.length - Object.keys(UNPARSEABLE).length);
    assert.ok(parsed >= 11);
  });
});

describe("parseRemoteActor refusals", () => {
  const mastodon = loadFixture("mastodon/person-actor.json");

  it("refuses a Note", async () => {
    await rejects(parseRemoteActor(loadFixture("mastodon/create-note-direct.json")), "not-an-actor", /is a Note, not an actor/);
    await rejects(parseRemoteActor(loadFixture("lemmy/comment-note-object.json")), "not-an-actor", /is a Note, not an actor/);
  });

  it("refuses an actor served by another host than its id's (forged actor)", async () => {
    await rejects(
      parseRemoteActor(mastodon, { fetchedFrom: new URL("https://evil.example/users/mastodon") }),
      "origin-mismatch",
      /served by evil\.example/,
    );
    await rejects(
      parseRemoteActor(mastodon, { fetchedFrom: new URL("https://qa.urbanwildlife.biz/users/mastodon") }),
      "origin-mismatch",
    );
    // Same host, another path (e.g. after a redirect to /@user): fine.
    const ok = await parseRemoteActor(mastodon, { fetchedFrom: new URL("https://masto.qa.urbanwildlife.biz/@mastodon") });
    assert.equal(ok.id, mastodon.id);
  });

  it("refuses missing, relative and non-http ids, and non-objects", async () => {
    const { id: _id, ...noId } = mastodon;
    await rejects(parseRemoteActor(noId), "invalid-id");
    await rejects(parseRemoteActor({ ...mastodon, id: "/users/mastodon" }), "invalid-id");
    await rejects(parseRemoteActor({ ...mastodon, id: "acct:mastodon@masto.qa.urbanwildlife.biz" }), "invalid-id");
    await rejects(parseRemoteActor([mastodon]), "invalid-document");
    await rejects(parseRemoteActor("https://masto.qa.urbanwildlife.biz/users/mastodon"), "invalid-document");
    await rejects(parseRemoteActor(null), "invalid-document");
  });

  it("refuses an unknown remote context by default, and reads it as empty when told to", async () => {
    const guppe = loadFixture("guppe/group-actor.json");
    const odd = { ...guppe, "@context": [...(guppe["@context"] as unknown[]), "https://contexts.example/ns.jsonld"] };
    await rejects(parseRemoteActor(odd), "unknown-context", /https:\/\/contexts\.example\/ns\.jsonld is not preloaded/);
    const lenient = await parseRemoteActor(odd, { unknownContexts: "ignore", fetchedAt: 1 });
    assert.deepEqual(lenient, await parseRemoteActor(guppe, { fetchedAt: 1 }));
  });

  it("serves LitePub's per-instance context path from any host, and nothing else unknown", () => {
    assert.ok(preloadedContext("https://pleroma.example/schemas/litepub-0.1.jsonld"));
    assert.ok(preloadedContext("http://www.w3.org/ns/activitystreams"));
    assert.equal(preloadedContext("https://pleroma.example/schemas/litepub-0.1.jsonld?v=2"), undefined);
    assert.equal(preloadedContext("https://pleroma.example/schemas/other.jsonld"), undefined);
  });
});

function actor(overrides: Partial<RemoteActor> = {}): RemoteActor {
  return {
    id: "https://social.example/users/alice",
    type: "Person",
    handle: "@alice@social.example",
    preferredUsername: "alice",
    name: "Alice",
    summary: "<p>Organiser</p>",
    url: "https://social.example/@alice",
    avatarUrl: "https://cdn.social.example/alice.png",
    inbox: "https://social.example/users/alice/inbox",
    sharedInbox: "https://social.example/inbox",
    fetchedAt: 1_700_000_000_000,
    ...overrides,
  };
}

for (const d of dialects) {
  describe(`remote actor cache on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let database: ReturnType<TestDatabase["open"]>;
    before(async () => {
      tdb = await d.create();
      database = tdb.open();
    });
    after(async () => {
      await database?.close();
      await tdb?.destroy();
    });

    it("stores and reads back the fields Muster reads, and keeps nothing else", async () => {
      const a = actor();
      await upsertRemoteActor(database.db, a);
      const read = await getRemoteActor(database.db, a.id);
      assert.deepEqual(read, { id: a.id, type: "Person", handle: a.handle, name: null, inbox: a.inbox, sharedInbox: a.sharedInbox, fetchedAt: a.fetchedAt });
      const group = actor({ id: "https://social.example/groups/riders", type: "Group", name: "Riders" });
      await upsertRemoteActor(database.db, group);
      assert.equal((await getRemoteActor(database.db, group.id))?.name, "Riders", "a group's name is kept (a partner union's, shown in tallies)");
      const row = await database.db.selectFrom("remote_actors").selectAll().where("id", "=", a.id).executeTakeFirstOrThrow();
      assert.equal(JSON.stringify(row).includes("Organiser") || JSON.stringify(row).includes("alice.png"), false, "no bio or avatar stored (migration 0046)");
      assert.deepEqual([row.inbox, row.shared_inbox], ["", "/inbox"], "inboxes stored relative to the id (migration 0049)");
      assert.equal(row.handle, "", "the usual handle, @<last segment of the id>@<host>, stored as \"\" (migration 0057)");
      // A handle that is not the id's usual one (a WebFinger domain apart, Misskey's opaque ids) is stored whole.
      for (const other of [actor({ id: "https://social.example/users/9f3k2", handle: "@frank@social.example" }), actor({ id: "https://ap.example/users/gus", handle: "@gus@example" })]) {
        await upsertRemoteActor(database.db, other);
        const stored = await database.db.selectFrom("remote_actors").select("handle").where("id", "=", other.id).executeTakeFirstOrThrow();
        assert.equal(stored.handle, other.handle);
        assert.equal((await getRemoteActor(database.db, other.id))?.handle, other.handle);
      }
      const elsewhere = actor({ id: "https://social.example/users/erin", inbox: "https://mail.example/erin", sharedInbox: "https://social.example:8443/inbox", fetchedAt: 1 });
      await upsertRemoteActor(database.db, elsewhere);
      assert.deepEqual(await getRemoteActor(database.db, elsewhere.id), cachedPart(elsewhere), "another origin's inboxes read back whole");
      assert.equal(await getRemoteActor(database.db, "https://social.example/users/nobody"), undefined);
    });

    it("keeps one row on repeated upserts and takes the newer fields", async () => {
      const id = "https://social.example/users/bob";
      await upsertRemoteActor(database.db, actor({ id, type: "Group", handle: "@bob@social.example", name: "Bob", fetchedAt: 1000 }));
      const newer = actor({ id, type: "Group", handle: "@bob@social.example", name: "Robert", summary: null, avatarUrl: null, fetchedAt: 2000 });
      await upsertRemoteActor(database.db, newer);
      await upsertRemoteActor(database.db, newer);
      const rows = await database.db.selectFrom("remote_actors").select("id").where("id", "=", id).execute();
      assert.equal(rows.length, 1);
      assert.deepEqual(await getRemoteActor(database.db, id), cachedPart(newer));
      // A slow fetch finishing late must not roll the cache back.
      await upsertRemoteActor(database.db, actor({ id, type: "Group", name: "Stale", fetchedAt: 1500 }));
      assert.deepEqual(await getRemoteActor(database.db, id), cachedPart(newer));
    });

    it("deletes", async () => {
      const a = actor({ id: "https://social.example/users/dave", handle: "@dave@social.example" });
      await upsertRemoteActor(database.db, a);
      assert.equal(await deleteRemoteActor(database.db, a.id), true);
      assert.equal(await getRemoteActor(database.db, a.id), undefined);
      assert.equal(await deleteRemoteActor(database.db, a.id), false);
    });

    it("refuses to store a non-actor type", async () => {
      await assert.rejects(upsertRemoteActor(database.db, { ...actor(), type: "Note" as never }), /Not an actor type: Note/);
    });

    it("round-trips every parsed fixture actor", async () => {
      for (const { file, json } of actorFixtures) {
        if (UNPARSEABLE[file]) continue;
        const parsed = await parseRemoteActor(json, { fetchedAt: 42 });
        await upsertRemoteActor(database.db, parsed);
        assert.deepEqual(await getRemoteActor(database.db, parsed.id), cachedPart(parsed), file);
      }
    });

    it("caches an actor object Fedify already holds, with the same mapping as the parse path", async () => {
      const json = loadFixture("misskey/person-actor.json");
      const object = await APObject.fromJsonLd(json, { contextLoader: createOfflineContextLoader(), documentLoader: createOfflineContextLoader() });
      assert.ok(object instanceof Person);
      // Later than the fixture round-trip above, which stored this actor too.
      const cached = await cacheActorObject(database.db, object, { fetchedAt: 100 });
      assert.deepEqual(cached, await parseRemoteActor(json, { fetchedAt: 100 }));
      assert.deepEqual(await getRemoteActor(database.db, cached.id), cachedPart(cached));
    });

    it("maps Link urls, several icons, language-tagged names and Service bots", async () => {
      const bot = new Service({
        id: new URL("https://bots.example/users/weather"),
        preferredUsername: "weather",
        name: new LanguageString("Weather bot", "en"),
        urls: [
          new Link({ href: new URL("https://bots.example/users/weather.atom"), mediaType: "application/atom+xml" }),
          new Link({ href: new URL("https://bots.example/@weather"), mediaType: "text/html" }),
        ],
        icons: [
          new Image({ url: new URL("https://bots.example/small.png"), width: 48, height: 48 }),
          new Image({ url: new Link({ href: new URL("https://media.example/large.png") }), width: 400, height: 400 }),
        ],
        inbox: new URL("https://bots.example/users/weather/inbox"),
        endpoints: new Endpoints({ sharedInbox: new URL("https://bots.example/inbox") }),
      });
      const cached = await cacheActorObject(database.db, bot, { fetchedAt: 9 });
      assert.deepEqual(cached, {
        id: "https://bots.example/users/weather",
        type: "Service",
        handle: "@weather@bots.example",
        preferredUsername: "weather",
        name: "Weather bot",
        summary: null,
        url: "https://bots.example/@weather",
        avatarUrl: "https://media.example/large.png",
        inbox: "https://bots.example/users/weather/inbox",
        sharedInbox: "https://bots.example/inbox",
        fetchedAt: 9,
      });
    });

    it("does not fetch a linked icon or give a handle to a username that names another server", async () => {
      const p = new Person({
        id: new URL("https://evil.example/users/x"),
        preferredUsername: "alice@social.example",
        icon: new URL("https://evil.example/icon.json"),
        inbox: new URL("https://evil.example/users/x/inbox"),
      });
      const cached = await cacheActorObject(database.db, p);
      assert.equal(cached.avatarUrl, null);
      assert.equal(cached.handle, null);
      assert.equal(cached.sharedInbox, null);
    });

    it("refreshes by id through the caller's document loader", async () => {
      const json = loadFixture("lemmy/group-actor-community.json");
      const id = json.id as string;
      const requested: string[] = [];
      const documentLoader = async (url: string): Promise<RemoteDocument> => {
        requested.push(url);
        return { contextUrl: null, documentUrl: url, document: json };
      };
      const fromLoader = await refreshRemoteActor(documentLoader, database.db, new URL(id), { fetchedAt: 200 });
      const fromCtx = await refreshRemoteActor({ documentLoader }, database.db, id, { fetchedAt: 201 });
      assert.deepEqual(requested, [id, id]);
      assert.deepEqual({ ...fromLoader, fetchedAt: 201 }, fromCtx);
      assert.equal(fromCtx.handle, "@tenforward@enterprise.lemmy.ml");
      assert.deepEqual(await getRemoteActor(database.db, id), cachedPart(fromCtx));
    });

    it("refuses and stores nothing when a redirect lands on another host", async () => {
      const json = { ...loadFixture("pleroma/person-actor.json"), id: "https://victim.example/users/lanodan" };
      const documentLoader = async (): Promise<RemoteDocument> => ({
        contextUrl: null,
        documentUrl: "https://attacker.example/users/lanodan",
        document: json,
      });
      await rejects(refreshRemoteActor(documentLoader, database.db, "https://victim.example/users/lanodan"), "origin-mismatch");
      assert.equal(await getRemoteActor(database.db, "https://victim.example/users/lanodan"), undefined);
    });
  });
}

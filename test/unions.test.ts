import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects } from "./helpers/databases.ts";
import { createEventBus } from "../src/events.ts";
import { generateActorKeys, loadKeyPairs } from "../federation/keys.ts";
import { createUnion, getUnionBySlug, listUnions, normaliseHandle, UnionError, unionKeyOwner, validateNewUnion } from "../src/unions/unions.ts";
import { loadConfig } from "../src/config.ts";

describe("union validation", () => {
  const ok = { slug: "riders", name: "Riders", purpose: "Fair pay" };
  it("normalises slugs and handles", () => {
    assert.equal(validateNewUnion({ ...ok, slug: " Riders " }).slug, "riders");
    assert.equal(normaliseHandle("Alice@Mastodon.Social"), "@alice@mastodon.social");
    assert.equal(normaliseHandle("@bob@host.example:8443"), "@bob@host.example:8443");
  });
  for (const [field, value, pattern] of [
    ["slug", "has space", /slug must be/],
    ["slug", "-dash", /slug must be/],
    ["slug", "a".repeat(65), /slug must be/],
    ["slug", "instance", /reserved/],
    ["name", "  ", /name must be/],
    ["purpose", "", /purpose must be/],
    ["leaderHandle", "not a handle", /fediverse handle/],
    ["iconUrl", "javascript:alert(1)", /icon must be/],
  ] as const) {
    it(`refuses ${field}=${JSON.stringify(value).slice(0, 20)}`, () => {
      assert.throws(() => validateNewUnion({ ...ok, [field]: value }), (e: unknown) => e instanceof UnionError && e.code === "invalid" && pattern.test(e.message));
    });
  }
});

describe("config", () => {
  it("defaults to embedded SQLite under ./data on port 8000", () => {
    const c = loadConfig({});
    assert.equal(c.port, 8000);
    assert.equal(c.dialect, "sqlite");
    assert.match(c.databaseUrl, /^sqlite:.*data\/muster\.sqlite$/);
    assert.equal(c.origin.href, "http://localhost:8000/");
    assert.equal(c.allowPrivateAddress, false);
  });
  it("fails fast with a clear message", () => {
    assert.throws(() => loadConfig({ PORT: "99999" }), /PORT must be/);
    assert.throws(() => loadConfig({ ORIGIN: "union.example" }), /ORIGIN must be an absolute URL/);
    assert.throws(() => loadConfig({ ORIGIN: "https://union.example/path" }), /bare origin/);
    assert.throws(() => loadConfig({ DATABASE_URL: "mysql://x@y/z" }), /DATABASE_URL must be/);
    assert.throws(() => loadConfig({ LOG_LEVEL: "loud" }), /LOG_LEVEL/);
    assert.throws(() => loadConfig({ MUSTER_ALLOW_PRIVATE_ADDRESS: "yes" }), /MUSTER_ALLOW_PRIVATE_ADDRESS/);
  });
  it("switches to PostgreSQL on a postgres URL", () => {
    assert.equal(loadConfig({ DATABASE_URL: "postgres://u@h/db" }).dialect, "postgres");
  });
});

for (const d of dialects) {
  describe(`unions on ${d.name}`, { skip: d.skip }, () => {
    it("create stores the union with RSA-2048 and Ed25519 keys and announces it", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        const events = createEventBus();
        const seen: string[] = [];
        events.on("union.created", (e) => seen.push(e.slug));
        const u = await createUnion({ db, events, generateKeys: generateActorKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        assert.deepEqual(seen, ["riders"]);
        assert.equal((await getUnionBySlug(db, "RIDERS"))?.id, u.id);
        assert.equal(u.manuallyApprovesFollowers, false);
        const keys = await loadKeyPairs(db, unionKeyOwner(u.id));
        assert.deepEqual(keys.map((k) => k.privateKey.algorithm.name), ["RSASSA-PKCS1-v1_5", "Ed25519"]);
        assert.equal((keys[0]!.publicKey.algorithm as RsaHashedKeyAlgorithm).modulusLength, 2048);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("two concurrent creates of one slug: one wins, the other is a conflict, no orphan keys", async () => {
      const tdb = await d.create();
      const a = tdb.open();
      const b = tdb.open();
      try {
        const deps = (db: typeof a.db) => ({ db, events: createEventBus(), generateKeys: generateActorKeys });
        const results = await Promise.allSettled([
          createUnion(deps(a.db), { slug: "same", name: "A", purpose: "p" }),
          createUnion(deps(b.db), { slug: "same", name: "B", purpose: "p" }),
        ]);
        assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
        const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
        assert.ok(failed.reason instanceof UnionError && failed.reason.code === "conflict", String(failed.reason));
        assert.equal((await listUnions(a.db)).length, 1);
        const owners = await a.db.selectFrom("actor_keys").select("owner").distinct().where("owner", "like", "union:%").execute();
        assert.equal(owners.length, 1, "the loser's keys were rolled back with it");
      } finally {
        await a.close();
        await b.close();
        await tdb.destroy();
      }
    });
  });
}

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { refreshRemoteActor } from "../federation/remote-actor-cache.ts";
import { handleOf, LIMITS } from "../src/actors/remote-actors.ts";
import { normaliseHandle } from "../src/unions/unions.ts";
import type { Kysely } from "kysely";
import { migrateTo } from "../src/db/migrate.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { startMuster, type TestMuster } from "./helpers/muster.ts";

// A remote server decides what its actor documents hold. What Muster reads
// is capped in bytes, what it keeps is capped per field, and nothing it
// keeps can make one handle display as another.

const RLO = "\u202E";

describe("handles typed into forms", () => {
  it("refuse bidi overrides and invisible characters", () => {
    assert.equal(normaliseHandle("@Alice@Example.org"), "@alice@example.org");
    for (const bad of [`@ali${RLO}gro.elpmaxe@example.org`, "@ali\u200Bce@example.org", "@ali\u2066ce@example.org", "@a\u0007@example.org", `@${"a".repeat(101)}@example.org`]) {
      assert.throws(() => normaliseHandle(bad), /looks like @user@host/, JSON.stringify(bad));
    }
  });
});

for (const d of dialects) {
  describe(`remote actor documents are capped on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let server: Server;
    let origin: string;
    let served = 0;
    let bomb: Buffer;

    const actor = (name: string, extra: Record<string, unknown> = {}) => ({
      "@context": "https://www.w3.org/ns/activitystreams",
      id: `${origin}/users/${name}`,
      type: "Person",
      preferredUsername: name,
      inbox: `${origin}/users/${name}/inbox`,
      ...extra,
    });

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      server = createServer((req, res) => {
        const name = (req.url ?? "").split("/").at(-1)!;
        if (name === "bomb" || name === "zipped") {
          const body = name === "bomb" ? bomb : gzipSync(JSON.stringify(actor("zipped", { summary: "short" })));
          res.writeHead(200, { "content-type": "application/activity+json", "content-encoding": "gzip", "content-length": String(body.length) });
          return res.end(body);
        }
        res.writeHead(200, { "content-type": "application/activity+json" });
        if (name === "huge") {
          // 30 MiB, streamed: the summary alone is 31 million characters.
          const head = JSON.stringify(actor("huge")).slice(0, -1) + ',"summary":"';
          res.write(head);
          const chunk = "x".repeat(1024 * 1024);
          let i = 0;
          const more = () => {
            while (i < 30) {
              i++;
              served += chunk.length;
              if (!res.write(chunk)) return void res.once("drain", more);
            }
            res.end('"}');
          };
          res.on("error", () => {});
          return more();
        }
        if (name === "loud") {
          return res.end(JSON.stringify(actor("loud", { type: "Group", name: `${RLO}${"N".repeat(100_000)}`, summary: `<p>${"s".repeat(1_000_000)}</p>`, url: `${origin}/${"u".repeat(5000)}` })));
        }
        if (name === "spoof") {
          // Displays as @admin@... in a right-to-left run.
          return res.end(JSON.stringify(actor("spoof", { type: "Group", preferredUsername: `nimda${RLO}`, name: `Ad${RLO}min` })));
        }
        res.writeHead(404).end();
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      // Well under the 2 MiB wire limit; inflates to 40 MiB of valid JSON.
      bomb = gzipSync(JSON.stringify(actor("bomb", { summary: "x".repeat(40 * 1024 * 1024) })), { level: 9 });
    });
    after(async () => {
      await m?.stop();
      server?.closeAllConnections();
      await new Promise<void>((r) => server?.close(() => r()));
      await tdb?.destroy();
    });

    const db = () => m.muster.database.db;
    const fetchActor = (name: string) =>
      refreshRemoteActor(m.muster.federation.createContext(m.origin, undefined), db(), `${origin}/users/${name}`);

    it("stops reading a 30 MiB actor document and stores nothing of it", async () => {
      await assert.rejects(fetchActor("huge"));
      assert.equal(await db().selectFrom("remote_actors").select("id").where("id", "=", `${origin}/users/huge`).executeTakeFirst(), undefined);
      assert.ok(served < 10 * 1024 * 1024, `the server was not read to the end (${served} bytes written)`);
    });

    it("refuses a gzip body that inflates past the cap (40 KB to 40 MiB) and stores nothing; a small gzipped actor is read", async () => {
      const before = process.memoryUsage().rss;
      await assert.rejects(fetchActor("bomb"));
      assert.ok(bomb.length < 1024 * 1024, `the bomb is under the wire limit (${bomb.length} bytes)`);
      assert.equal(await db().selectFrom("remote_actors").select("id").where("id", "=", `${origin}/users/bomb`).executeTakeFirst(), undefined);
      assert.ok(process.memoryUsage().rss - before < 30 * 1024 * 1024, "the 40 MiB were not inflated into memory");
      await fetchActor("zipped");
      const row = await db().selectFrom("remote_actors").selectAll().where("id", "=", `${origin}/users/zipped`).executeTakeFirstOrThrow();
      assert.equal(handleOf(row.id, row.handle), `@zipped@${new URL(origin).host}`);
    });

    it("keeps at most the field limits of a name of 100,000 characters and a summary of a megabyte", async () => {
      await fetchActor("loud");
      const row = await db().selectFrom("remote_actors").selectAll().where("id", "=", `${origin}/users/loud`).executeTakeFirstOrThrow();
      assert.ok(Array.from(row.name ?? "").length <= LIMITS.name, `name of ${row.name?.length}`);
      assert.ok(!row.name!.includes(RLO), "no bidi override kept");
      // PostgreSQL's row also has room for the actor's cached key (migration 0075).
      assert.deepEqual(Object.keys(row).filter((k) => !["key", "key_form", "key_expires_at"].includes(k)).sort(), ["fetched_at", "handle", "id", "inbox", "name", "shared_inbox", "type"], "nothing of the summary or the URL is kept (migration 0046)");
      assert.equal(handleOf(row.id, row.handle), `@loud@127.0.0.1:${new URL(origin).port}`);
    });

    it("gives no handle to a username with a bidi override, and strips it from the name", async () => {
      await fetchActor("spoof");
      const row = await db().selectFrom("remote_actors").selectAll().where("id", "=", `${origin}/users/spoof`).executeTakeFirstOrThrow();
      assert.equal(row.handle, null);
      assert.equal(row.name, "Admin");
    });
  });
}

/** The last migration before 0046 dropped the bio, URLs and username of cached actors. */
const LAST_WITH_BIO = "0045_spends_and_crowdfund_votes";

for (const d of dialects) {
  describe(`actors stored before the caps are brought to them (migration 0017) on ${d.name}`, { skip: d.skip }, () => {
    it("cuts long text, drops long URLs, strips bidi and unhandles spoofable usernames; a second run changes nothing", async () => {
      const tdb = await d.create();
      const opened = tdb.open();
      // The columns 0017 capped are dropped by 0046, so not in today's schema type.
      const db = opened.db as unknown as Kysely<any>;
      const close = () => opened.close();
      const row = (id: string, extra: Record<string, unknown>) => ({
        id, type: "Person", handle: null, preferred_username: null, name: null, summary: null, url: null, avatar_url: null,
        inbox: `${id}/inbox`, shared_inbox: null, fetched_at: 1, ...extra,
      });
      const read = (id: string) => db.selectFrom("remote_actors").selectAll().where("id", "=", id).executeTakeFirstOrThrow();
      try {
        await migrateTo(db, "0016_badges");
        const huge = "x".repeat(3 * 1024 * 1024);
        await db.insertInto("remote_actors").values([
          row("https://a.example/huge", { summary: huge, name: `${RLO}${"N".repeat(100_000)}`, url: `https://a.example/${"u".repeat(5000)}`, avatar_url: "https://a.example/ok.png", preferred_username: "huge", handle: "@huge@a.example" }),
          row("https://a.example/spoof", { preferred_username: `nimda${RLO}`, handle: `@nimda${RLO}@a.example`, name: `Ad${RLO}min` }),
          row("https://a.example/long-user", { preferred_username: "u".repeat(150), handle: `@${"u".repeat(150)}@a.example` }),
          row("https://a.example/fine", { preferred_username: "fine", handle: "@fine@a.example", name: "Fine ✊", summary: "<p>hi</p>", url: "https://a.example/@fine" }),
        ] as never).execute();
        const fineBefore = await read("https://a.example/fine");
        // 0046 drops these columns; what 0017 did to them is read before it.
        await migrateTo(db, LAST_WITH_BIO);

        const big = await read("https://a.example/huge");
        assert.equal(Array.from(big.summary!).length, LIMITS.summary);
        assert.ok(big.summary!.endsWith("…"));
        assert.equal(big.name, `${"N".repeat(LIMITS.name - 1)}…`, "bidi stripped, then cut");
        assert.equal(big.url, null, "a 5000-character URL is dropped");
        assert.equal(big.avatar_url, "https://a.example/ok.png");
        assert.equal(big.handle, "@huge@a.example");
        const spoof = await read("https://a.example/spoof");
        assert.equal(spoof.handle, null);
        assert.equal(spoof.name, "Admin");
        const longUser = await read("https://a.example/long-user");
        assert.equal(longUser.handle, null);
        assert.equal(longUser.preferred_username, null);
        assert.deepEqual(await read("https://a.example/fine"), fineBefore, "a row within the caps is untouched");

        // Idempotent: down is a no-op and up again finds nothing to change.
        const after = await db.selectFrom("remote_actors").selectAll().orderBy("id").execute();
        await migrateTo(db, "0016_badges");
        await migrateTo(db, LAST_WITH_BIO);
        assert.deepEqual(await db.selectFrom("remote_actors").selectAll().orderBy("id").execute(), after);
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}

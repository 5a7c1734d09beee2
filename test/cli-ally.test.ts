/**
 * `muster ally ...` and `muster chapter ...` as the real bin/muster.js,
 * against the databases of two running Muster servers on loopback: the
 * CLI writes the intent, the server's worker sends it, signed.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { listRelationships } from "../src/relationships/relationships.ts";
import type { Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";

const BIN = join(import.meta.dirname, "..", "bin", "muster.js");

interface Run {
  readonly code: number | null;
  readonly out: string;
  readonly err: string;
}

// Asynchronous, unlike the other CLI suites: the servers under test live in this process and must keep answering.
function cli(m: TestMuster, tdb: TestDatabase, args: string[]): Promise<Run> {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, LOG_LEVEL: "error", ORIGIN: m.origin.href.replace(/\/$/, ""), DATABASE_URL: tdb.url, MUSTER_ALLOW_PRIVATE_ADDRESS: "1" },
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (b: Buffer) => (out += b));
  child.stderr.on("data", (b: Buffer) => (err += b));
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, out, err })));
}

for (const d of dialects) {
  describe(`muster ally and chapter, on ${d.name}`, { skip: d.skip }, () => {
    let ta: TestDatabase, tb: TestDatabase;
    let ma: TestMuster, mb: TestMuster;
    let a: Union, b: Union;

    before(async () => {
      ta = await d.create();
      tb = await d.create();
      ma = await startMuster(ta);
      mb = await startMuster(tb);
      a = await makeUnion(ma, "a", { name: "Riders A" });
      b = await makeUnion(mb, "b", { name: "Couriers B" });
    });
    after(async () => {
      await ma?.stop();
      await mb?.stop();
      await ta?.destroy();
      await tb?.destroy();
    });

    it("--help, and wrong arguments fail with the usage", async () => {
      const help = await cli(ma, ta, ["ally", "propose", "--help"]);
      assert.equal(help.code, 0);
      assert.match(help.out, /--relay both\|theirs\|ours\|none/);
      const bad = await cli(ma, ta, ["ally", "propose", "a", "http://x.invalid/u/b", "--relay", "sideways"]);
      assert.equal(bad.code, 2);
      assert.match(bad.err, /--relay takes both\|theirs\|ours\|none/);
    });

    it("propose, list, accept and end, across two servers", async () => {
      const bUrl = new URL("/u/b", mb.origin).href;
      const aUrl = new URL("/u/a", ma.origin).href;
      const proposed = await cli(ma, ta, ["ally", "propose", "a", bUrl, "--relay", "theirs"]);
      assert.equal(proposed.code, 0, proposed.err);
      assert.match(proposed.out, /offered an alliance to .*waiting for their answer/);
      await eventually(async () => (await listRelationships(mb.muster.database.db, b.id)).length === 1, "B receives the offer");
      const listed = await cli(mb, tb, ["ally", "list", "b", "--json"]);
      const rows = JSON.parse(listed.out) as { peer: string; state: string; relay: string; kind: string }[];
      assert.deepEqual(rows.map((r) => [r.peer, r.kind, r.state, r.relay]), [[aUrl, "ally", "received", "ours"]]);

      const accepted = await cli(mb, tb, ["ally", "accept", "b", aUrl]);
      assert.equal(accepted.code, 0, accepted.err);
      await eventually(async () => (await listRelationships(ma.muster.database.db, a.id))[0]?.state === "active", "A sees the Accept");
      const table = await cli(ma, ta, ["ally", "list", "a"]);
      assert.match(table.out, /ally\s+active\s+outbound\s+theirs/);

      const again = await cli(ma, ta, ["ally", "propose", "a", bUrl]);
      assert.equal(again.code, 1);
      assert.match(again.err, /already a relationship/);
      assert.equal(again.err.trim().split("\n").length, 1);

      const ended = await cli(ma, ta, ["ally", "end", "a", bUrl]);
      assert.equal(ended.code, 0, ended.err);
      await eventually(async () => (await listRelationships(mb.muster.database.db, b.id))[0]?.state === "ended", "B sees the Undo");
      const none = await cli(ma, ta, ["ally", "end", "a", bUrl]);
      assert.equal(none.code, 1);
      assert.match(none.err, /no open relationship/);
    });

    it("chapter create asks the parent; chapter list shows it once confirmed", async () => {
      const made = await cli(mb, tb, ["chapter", "create", "north", "--parent", new URL("/u/a", ma.origin).href, "--name", "North Chapter"]);
      assert.equal(made.code, 0, made.err);
      const northUrl = new URL("/u/north", mb.origin).href;
      await eventually(async () => (await listRelationships(ma.muster.database.db, a.id)).some((r) => r.peerActorId === northUrl && r.state === "received"), "A receives the request");
      assert.match((await cli(ma, ta, ["chapter", "list", "a"])).out, /no parent and no chapters/);
      assert.equal((await cli(ma, ta, ["ally", "accept", "a", northUrl])).code, 0);
      // Once a chapter, north reports its totals up; the tree shows them.
      const tree = await eventually(async () => {
        const r = await cli(ma, ta, ["chapter", "list", "a"]);
        return r.out.includes("North Chapter") ? r.out : undefined;
      }, "A's tree shows north's report");
      assert.match(tree, new RegExp(`^Riders A  0 members, 0 commitments.*\\n└─ North Chapter  0 members, 0 commitments  ${northUrl.replace(/[.]/g, "\\.")}\\nWhole tree: 0 members, 0 commitments, 1 chapter\\.`));
      const northJson = JSON.parse((await cli(mb, tb, ["chapter", "list", "north", "--json"])).out) as { parent: { peer: string } | null };
      assert.equal(northJson.parent?.peer, new URL("/u/a", ma.origin).href);
      const shown = await cli(mb, tb, ["union", "show", "north"]);
      assert.match(shown.out, new RegExp(`Parent:\\s+(@a@${ma.origin.host.replace(/[.]/g, "\\.")}|${new URL("/u/a", ma.origin).href.replace(/[.]/g, "\\.")})\\n`));
      const shownJson = JSON.parse((await cli(ma, ta, ["union", "show", "a", "--json"])).out) as { chapters: { actorId: string }[]; allies: unknown[]; parent: unknown };
      assert.deepEqual(shownJson.chapters.map((c) => c.actorId), [northUrl]);
      assert.equal(shownJson.parent, null);
    });

    it("ally invite: gives an ally's member an invite that records them as sponsor; refused for a chapter, a bad sponsor or --uses", async () => {
      const help = await cli(ma, ta, ["ally", "invite", "--help"]);
      assert.equal(help.code, 0);
      assert.match(help.out, /muster ally invite <union> <@ally@host or URL> <sponsor actor URL> \[--uses N\]/);
      const bUrl = new URL("/u/b", mb.origin).href;
      const northUrl = new URL("/u/north", mb.origin).href;
      const sponsor = new URL("/users/bob", mb.origin).href;
      // Before the alliance: no open relationship with B.
      const early = await cli(ma, ta, ["ally", "invite", "a", bUrl, sponsor]);
      assert.equal(early.code, 1);
      assert.match(early.err, /no open relationship/);
      // B offers an alliance again; A accepts.
      assert.equal((await cli(mb, tb, ["ally", "propose", "b", new URL("/u/a", ma.origin).href])).code, 0);
      await eventually(async () => (await listRelationships(ma.muster.database.db, a.id, { states: ["received"] })).some((r) => r.peerActorId === bUrl), "A receives B's offer");
      assert.equal((await cli(ma, ta, ["ally", "accept", "a", bUrl])).code, 0);

      const made = await cli(ma, ta, ["ally", "invite", "a", bUrl, sponsor, "--uses", "2", "--json"]);
      assert.equal(made.code, 0, made.err);
      const invite = JSON.parse(made.out) as { code: string; url: string; sponsor: string; ally: string; uses: number };
      assert.equal(invite.ally, bUrl);
      assert.equal(invite.sponsor, sponsor);
      assert.equal(invite.uses, 2);
      assert.equal(invite.url, new URL(`/u/a/join/${invite.code}`, ma.origin).href);
      const row = await ma.muster.database.db.selectFrom("invites").selectAll().where("code", "=", invite.code).executeTakeFirstOrThrow();
      assert.equal(row.ally_sponsor_actor_id, sponsor);
      assert.equal(row.ally_sponsor_union, bUrl);
      assert.equal(Number(row.max_uses), 2);
      const text = await cli(ma, ta, ["ally", "invite", "a", bUrl, sponsor]);
      assert.match(text.out, new RegExp(`^Invite for ${sponsor.replace(/[.]/g, "\\.")} of .*: ${ma.origin.href.replace(/[.]/g, "\\.")}u/a/join/\\S+\n$`));

      // A chapter is no ally; a sponsor must be an actor URL; --uses is a whole number from 1.
      const chapter = await cli(ma, ta, ["ally", "invite", "a", northUrl, sponsor]);
      assert.equal(chapter.code, 1);
      assert.match(chapter.err, /is not an active ally of this union/);
      assert.equal(chapter.err.trim().split("\n").length, 1);
      const badSponsor = await cli(ma, ta, ["ally", "invite", "a", bUrl, "bob"]);
      assert.equal(badSponsor.code, 1);
      assert.match(badSponsor.err, /the sponsor must be an actor URL/);
      const badUses = await cli(ma, ta, ["ally", "invite", "a", bUrl, sponsor, "--uses", "0"]);
      assert.equal(badUses.code, 2);
      assert.match(badUses.err, /--uses takes a whole number from 1/);

      // Leave only the chapter open, as the next test expects.
      assert.equal((await cli(ma, ta, ["ally", "end", "a", bUrl])).code, 0);
      await eventually(async () => (await listRelationships(mb.muster.database.db, b.id, { states: ["active"] })).length === 0, "B sees the end");
    });

    it("server block: the blocked server's unions are refused, open relationships end, its deliveries are dropped at the inbox", async () => {
      const help = await cli(ma, ta, ["server", "block", "--help"]);
      assert.equal(help.code, 0);
      assert.match(help.out, /muster server block <host>/);
      assert.equal((await cli(ma, ta, ["server", "block", "exa mple"])).code, 1);
      const northUrl = new URL("/u/north", mb.origin).href;
      const blocked = await cli(ma, ta, ["server", "block", mb.origin.href, "--reason", "testing"]);
      assert.equal(blocked.code, 0, blocked.err);
      assert.match(blocked.out, new RegExp(`Blocked ${mb.origin.host.replace(/[.]/g, "\\.")}; ended 1 relationship`));
      assert.equal((await listRelationships(ma.muster.database.db, a.id, { states: ["active"] })).length, 0, "the chapter on the blocked server is no longer one");
      await eventually(async () => (await listRelationships(mb.muster.database.db, (await mb.muster.database.db.selectFrom("unions").select("id").where("slug", "=", "north").executeTakeFirstOrThrow()).id))[0]?.state === "ended", "north is told");
      const listed = JSON.parse((await cli(ma, ta, ["server", "list", "--json"])).out) as { host: string; reason: string }[];
      assert.deepEqual(listed.map((r) => [r.host, r.reason]), [[mb.origin.host, "testing"]]);
      assert.equal((await cli(ma, ta, ["server", "block", mb.origin.host])).code, 0, "blocking twice is one block");
      assert.equal(JSON.parse((await cli(ma, ta, ["server", "list", "--json"])).out).length, 1);

      const refused = await cli(ma, ta, ["ally", "propose", "a", new URL("/u/b", mb.origin).href]);
      assert.equal(refused.code, 1);
      assert.match(refused.err, /is blocked here/);
      // B offers an alliance to A: the Follow is dropped at A's inbox before any work (no record of it at all).
      const offered = await cli(mb, tb, ["ally", "propose", "b", new URL("/u/a", ma.origin).href]);
      assert.equal(offered.code, 0, offered.err);
      const followId = (await listRelationships(mb.muster.database.db, b.id, { states: ["offered"] }))[0]!.followId;
      await eventually(async () => (await mb.muster.database.db.selectFrom("fedify_mq").select("id").execute()).length === 0, "B's server delivered the Follow");
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await ma.muster.database.db.selectFrom("inbox_activities").select("id").where("id", "=", followId).executeTakeFirst(), undefined);
      assert.equal((await listRelationships(ma.muster.database.db, a.id, { states: ["received"] })).length, 0);
      assert.ok(!northUrl.startsWith(ma.origin.href));

      assert.equal((await cli(ma, ta, ["server", "unblock", mb.origin.host])).code, 0);
      assert.match((await cli(ma, ta, ["server", "list"])).out, /No server is blocked/);
      const again = await cli(ma, ta, ["server", "unblock", mb.origin.host]);
      assert.equal(again.code, 1);
      assert.match(again.err, /is not blocked/);
    });
  });
}

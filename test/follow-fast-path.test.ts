import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import type { HttpMessageSignaturesSpec } from "@fedify/fedify";
import { Accept, CryptographicKey } from "@fedify/vocab";
import { PostgresQueryCompiler, type RootOperationNode, sql } from "kysely";
import pg from "pg";
import { createOfflineContextLoader, createOfflineDocumentLoader } from "../federation/remote-actor-parse.ts";
import type { Union } from "../src/unions/unions.ts";
import { getRemoteActor } from "../src/actors/remote-actors.ts";
import { followShape, recordFollowAndActor } from "../federation/follow-fast-path.ts";
import { actionNoteId } from "../federation/action-note.ts";
import { composeAction } from "../src/actions/actions.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { type JsonObject, LEMMY_CONTEXT, loadFixture, readdress } from "./helpers/fixtures.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";

/*
 * The follow's fast path (federation/follow-fast-path.ts): a plain Follow of
 * a union, from a real Mastodon payload with a real HTTP signature on
 * loopback, is joined before the 202 (no inbox queue message), once however
 * often it arrives; hostile requests are refused as before and join no one;
 * unusual Follows (another context, an account that names aliases) still
 * join through Fedify's path.
 */

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
const CAVAGE: HttpMessageSignaturesSpec = "draft-cavage-http-signatures-12";
const RFC9421: HttpMessageSignaturesSpec = "rfc9421";
const NAMES = ["ann", "ben", "cat", "dup", "eve", "victim", "mallory", "digest", "late", "big", "nobody", "lemmy", "mover", "shared", "once1", "once2", "once3", "rowkey1", "rowkey2"];

for (const d of dialects) {
  describe(`the follow's fast path, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let riders: Union;
    let seq = 0;

    const db = () => m.muster.database.db;
    const actor = (name: string) => peer.actorId(name).href;
    const unionInbox = () => new URL("/u/riders/inbox", m.origin);
    const sharedInbox = () => new URL("/inbox", m.origin);
    const member = (name: string) => findMemberByActor(db(), riders.id, actor(name));
    const recorded = (id: string) => db().selectFrom("inbox_activities").selectAll().where("id", "=", id).execute();
    // The inbox lane's messages only: the Accept queued in the outbox lane embeds the Follow (its activity is kept in its row).
    const queued = async (id: string) => Number((await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).where("queue", "=", "inbox").where("message", "like", `%${id}%`).executeTakeFirstOrThrow()).n);
    const accepts = async (followId: string) => {
      let n = 0;
      for (const a of peer.received) if (a instanceof Accept && (await a.getObject({ crossOrigin: "trust" }))?.id?.href === followId) n++;
      return n;
    };

    /** mastodon/follow.json, from `name` at the peer, of the union at `object`. */
    function mastodonFollow(name: string, object = new URL("/u/riders", m.origin).href): JsonObject {
      const original = loadFixture(FIXTURES, "mastodon/follow.json");
      return readdress(original, {
        actors: { "https://masto.asonix.dog/users/asonix": actor(name) },
        exact: { "https://ds9.lemmy.ml/c/testcom": object },
        id: new URL(`/${crypto.randomUUID()}-${++seq}`, peer.origin).href,
      });
    }

    async function post(body: JsonObject | string, opts: { as: string; to?: URL; spec?: HttpMessageSignaturesSpec; keyOf?: string; date?: Date }) {
      const text = typeof body === "string" ? body : JSON.stringify(body);
      const to = opts.to ?? unionInbox();
      const signed = await peer.signedPost(to, text, { as: opts.as, keyOf: opts.keyOf, spec: opts.spec ?? CAVAGE, date: opts.date });
      const headers = new Headers(signed.headers);
      const send = (bytes = text) => fetch(to, { method: "POST", headers, body: bytes });
      return { res: await send(), again: () => send(), tampered: (bytes: string) => send(bytes) };
    }

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(NAMES);
      riders = await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    it("recognises only a plain Follow of a union here", () => {
      const o = new URL("http://127.0.0.1:1");
      const base = { "@context": "https://www.w3.org/ns/activitystreams", id: "https://a.example/1", type: "Follow", actor: "https://a.example/users/x", object: "http://127.0.0.1:1/u/riders" };
      assert.deepEqual(followShape(base, o), { id: base.id, actor: base.actor, object: base.object, slug: "riders" });
      assert.equal(followShape({ ...base, "@context": [base["@context"], { Follow: "as:Like" }] }, o), undefined, "a redefining context");
      assert.equal(followShape({ ...base, "@context": [base["@context"]] }, o), undefined, "a context array");
      assert.equal(followShape({ ...base, to: [base.object] }, o), undefined, "another field");
      assert.equal(followShape({ ...base, type: "Undo" }, o), undefined);
      assert.equal(followShape({ ...base, object: "http://127.0.0.1:1/u/riders/followers" }, o), undefined);
      assert.equal(followShape({ ...base, object: "https://elsewhere.example/u/riders" }, o), undefined);
      assert.equal(followShape({ ...base, id: "https://b.example/1" }, o), undefined, "an id on another origin than the actor");
      assert.equal(followShape({ ...base, actor: { id: base.actor } }, o), undefined, "an embedded actor");
      assert.equal(followShape({ ...base, "@type": "Follow" }, o), undefined, "a keyword");
    });

    it("mastodon/follow.json, draft-cavage, to the union's inbox: a member before the 202, nothing queued; the Accept arrives verified", async () => {
      const body = mastodonFollow("ann");
      const r = await post(body, { as: "ann" });
      assert.equal(r.res.status, 202);
      // No eventually: the fast path answers once the join is committed.
      assert.equal((await member("ann"))?.state, "active");
      assert.equal((await recorded(String(body.id)))[0]?.union_id, riders.id);
      assert.equal(await queued(String(body.id)), 0, "no inbox queue message");
      const cached = await getRemoteActor(db(), actor("ann"));
      assert.equal(cached?.handle, `@ann@${peer.origin.host}`);
      // Stored as Fedify's verifier stores a key it fetched (the same JSON-LD), so the member's likes then take the inbox's fast path.
      const stored = await new KyselyKvStore(db()).get(["_fedify", "publicKey", `${actor("ann")}#main-key`]);
      const key = await CryptographicKey.fromJsonLd(stored, { documentLoader: createOfflineDocumentLoader(), contextLoader: createOfflineContextLoader() });
      assert.equal(key.ownerId?.href, actor("ann"));
      assert.ok(key.publicKey);
      await eventually(async () => (await accepts(String(body.id))) === 1, "the Accept");
    });

    it("the key the join cached is the one the inbox's fast path reads: the new member's Like of a call is counted before the 202", async () => {
      const action = await composeAction(m.muster.membership, riders.id, OPERATOR, { title: "Sign the petition", text: "Like this.", kind: "sign" }, { publishNow: true });
      const call = actionNoteId(m.origin, riders, action.id).href;
      const like = readdress(loadFixture(FIXTURES, "mastodon/like.json"), {
        actors: { "https://mastodon.madrid/users/felix": actor("ann") },
        exact: { "https://ds9.lemmy.ml/post/147": call },
        id: `${actor("ann")}#likes/${++seq}`,
      });
      assert.equal((await post(like, { as: "ann" })).res.status, 202);
      // No eventually: only the inbox's fast path answers after counting, and it uses only keys Fedify's cache holds.
      const rows = await db().selectFrom("action_responses").select("kind").where("source_id", "=", String(like.id)).execute();
      assert.deepEqual(rows.map((r) => r.kind), ["commit"]);
    });

    it("RFC 9421 to the shared inbox: joined before the 202", async () => {
      const body = mastodonFollow("shared");
      assert.equal((await post(body, { as: "shared", to: sharedInbox(), spec: RFC9421 })).res.status, 202);
      assert.equal((await member("shared"))?.state, "active");
      assert.equal(await queued(String(body.id)), 0);
    });

    it("on PostgreSQL the Follow's record and the actor's upsert (one statement) are built and compiled once, not per join", async (t) => {
      if (d.name !== "postgres") return t.skip("that statement is PostgreSQL's");
      const first = mastodonFollow("once1");
      assert.equal((await post(first, { as: "once1" })).res.status, 202);
      // Kysely compiling the statement: it built the query per join, a tenth of the web process's CPU (issue 16).
      const compileQuery = PostgresQueryCompiler.prototype.compileQuery;
      const texts: string[] = [];
      PostgresQueryCompiler.prototype.compileQuery = function (this: PostgresQueryCompiler, node: RootOperationNode, queryId) {
        const compiled = compileQuery.call(this, node, queryId);
        texts.push(compiled.sql);
        return compiled;
      };
      try {
        for (const name of ["once2", "once3"]) assert.equal((await post(mastodonFollow(name), { as: name })).res.status, 202);
      } finally {
        PostgresQueryCompiler.prototype.compileQuery = compileQuery;
      }
      for (const name of ["once1", "once2", "once3"]) {
        assert.equal((await member(name))?.state, "active");
        assert.equal((await getRemoteActor(db(), actor(name)))?.handle, `@${name}@${peer.origin.host}`);
      }
      assert.equal(texts.filter((s) => s.includes('"inbox_activities"') && s.includes('"remote_actors"')).length, 0, "compiled for neither of the two later joins");
    });

    it("on PostgreSQL the follower's key is written by the Follow's own statement: no statement of its own a join", async (t) => {
      if (d.name !== "postgres") return t.skip("that statement is PostgreSQL's");
      const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
      const texts: string[] = [];
      const values = new Map<string, unknown[]>();
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        const q = args[0] as string | { text?: string; values?: unknown[] } | undefined;
        const text = typeof q === "string" ? q : q?.text ?? "";
        texts.push(text);
        values.set(text, (typeof q === "string" ? args[1] as unknown[] | undefined : q?.values) ?? []);
        return query.apply(this, args);
      } as typeof pg.Client.prototype.query;
      try {
        assert.equal((await post(mastodonFollow("rowkey1"), { as: "rowkey1" })).res.status, 202);
      } finally {
        pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
      }
      const keyWrites = texts.filter((x) => /insert into "?fedify_public_keys"?|update "?remote_actors"? set "?key"? =/.test(x));
      assert.equal(keyWrites.length, 1, `one statement writes the key: ${JSON.stringify(keyWrites.map((x) => x.slice(0, 80)))}`);
      assert.match(keyWrites[0]!, /"inbox_activities"/, "the Follow's record");
      // Each value sent once: the Follow's 4, the key's 5 and its owner (a loopback key id is not https, so this is
      // the fedify_public_keys form), the actor's 7 and "Follow". Before: 30 (the row
      // form, an https "#main-key": 35 with the key's bytes three times; checked in the next test).
      const sent = values.get(keyWrites[0]!)!;
      const report = `${JSON.stringify(sent.map((v) => (v instanceof Uint8Array ? `bytes:${v.length}` : v)))}\n${keyWrites[0]}`;
      assert.equal(sent.filter((v) => v instanceof Uint8Array).length, 1, `the key's bytes sent once: ${report}`);
      assert.equal(sent.length, 18, `parameters: ${report}`);
      const stored = await new KyselyKvStore(db()).get(["_fedify", "publicKey", `${actor("rowkey1")}#main-key`]);
      const key = await CryptographicKey.fromJsonLd(stored, { documentLoader: createOfflineDocumentLoader(), contextLoader: createOfflineContextLoader() });
      assert.equal(key.ownerId?.href, actor("rowkey1"));
    });

    it("on PostgreSQL an https '#main-key' goes into its actor's row by the row's own upsert (one version of the row), or by 'held' when a newer row is kept", async (t) => {
      if (d.name !== "postgres") return t.skip("the key lives in the actor's row on PostgreSQL only (0075)");
      const kv = new KyselyKvStore(db());
      const ann = (await kv.get(["_fedify", "publicKey", `${actor("ann")}#main-key`])) as Record<string, unknown>;
      // What the Follow's statements send (the row form: 35 parameters before, the key's bytes three times).
      const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
      const sent: unknown[][] = [];
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        const q = args[0] as { text?: string; values?: unknown[] } | string | undefined;
        if (typeof q === "object" && q?.text?.includes('"inbox_activities"') && q.text.includes("remote_actors")) sent.push(q.values ?? []);
        return query.apply(this, args);
      } as typeof pg.Client.prototype.query;
      t.after(() => {
        pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
      });
      for (const [name, stored] of [["fresh", undefined], ["newer", Date.now() + 3600_000]] as const) {
        const id = `https://rowkey.example/users/${name}`;
        const entry = ["_fedify", "publicKey", `${id}#main-key`] as const;
        const json = JSON.parse(JSON.stringify(ann).replaceAll(`${actor("ann")}#main-key`, `${id}#main-key`).replaceAll(actor("ann"), id)) as Record<string, unknown>;
        if (stored !== undefined) await sql`insert into remote_actors (id, type, handle, name, inbox, shared_inbox, fetched_at) values (${id}, 'Person', '@kept@rowkey.example', null, ${`${id}/inbox`}, null, ${stored})`.execute(db());
        const updates = await db().transaction().execute(async (trx) => {
          const write = kv.joinedKeyWrite(trx, [...entry], json, id);
          assert.equal(write?.actorRow, true);
          const r = await recordFollowAndActor(trx, `${id}/follows/1`, id, riders.id, Date.now(), { id, type: "Person", handle: `@${name}@rowkey.example`, name: null, inbox: `${id}/inbox`, sharedInbox: null, fetchedAt: Date.now() }, write);
          const n = (await sql<{ n: number }>`select coalesce((select n_tup_upd from pg_stat_xact_user_tables where relname = 'remote_actors'), 0)::int as n`.execute(trx)).rows[0]!.n;
          assert.equal((await r.answer).recorded, true);
          return n;
        });
        assert.equal(updates, stored === undefined ? 0 : 1, `${name}: versions written after the insert`);
        const row = (await sql<{ handle: string; has_key: boolean }>`select handle, key is not null as has_key from remote_actors where id = ${id}`.execute(db())).rows[0]!;
        assert.equal(row.has_key, true, `${name}: the key in the row`);
        assert.equal(row.handle, stored === undefined ? "" : "@kept@rowkey.example", `${name}: the newer row kept`);
        assert.deepEqual(await new KyselyKvStore(db()).get([...entry]), json, `${name}: read back as written`);
      }
      pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
      // Each value once: the Follow's 4, the key's 5, the actor's 7 and "Follow".
      assert.equal(sent.length, 2, "one Follow statement each");
      for (const values of sent) {
        const report = JSON.stringify(values.map((v) => (v instanceof Uint8Array ? `bytes:${v.length}` : v)));
        assert.equal(values.filter((v) => v instanceof Uint8Array).length, 1, `the key's bytes sent once: ${report}`);
        assert.equal(values.length, 17, `parameters: ${report}`);
      }
    });

    it("on PostgreSQL a key no actor's row holds (not '#main-key') goes into fedify_public_keys by the Follow's own statement, replacing an older row and a fedify_kv entry", async (t) => {
      if (d.name !== "postgres") return t.skip("that statement is PostgreSQL's");
      const kv = new KyselyKvStore(db());
      const ann = (await kv.get(["_fedify", "publicKey", `${actor("ann")}#main-key`])) as Record<string, unknown>;
      const id = "https://tablekey.example/users/tk";
      const entry = ["_fedify", "publicKey", `${id}#key-1`] as const;
      const json = JSON.parse(JSON.stringify(ann).replaceAll(`${actor("ann")}#main-key`, `${id}#key-1`).replaceAll(actor("ann"), id)) as Record<string, unknown>;
      // An older cached value in each place: a row of fedify_public_keys with another owner, and a fedify_kv entry.
      await sql`insert into fedify_public_keys (key_id, owner, key, form, expires_at) values (${"btablekey.example/users/tk#key-1"}, 'https://old.example/o', '\\x01'::bytea, 0, 1)`.execute(db());
      await sql`insert into fedify_kv (key, value, expires_at) values (${JSON.stringify(entry)}, 'null', null)`.execute(db());
      await db().transaction().execute(async (trx) => {
        const write = kv.joinedKeyWrite(trx, [...entry], json, id);
        assert.equal(write?.actorRow, false);
        const r = await recordFollowAndActor(trx, `${id}/follows/1`, id, riders.id, Date.now(), { id, type: "Person", handle: "@tk@tablekey.example", name: null, inbox: `${id}/inbox`, sharedInbox: null, fetchedAt: Date.now() }, write);
        await sql`select 1`.execute(trx);
        assert.deepEqual(await r.answer, { recorded: true, busy: false });
      });
      const rows = (await sql<{ owner: string | null; expired: boolean }>`select owner, expires_at <= ${Date.now()} as expired from fedify_public_keys where key_id = ${"btablekey.example/users/tk#key-1"}`.execute(db())).rows;
      assert.deepEqual(rows, [{ owner: null, expired: false }], "one row, the new one");
      assert.equal((await sql<{ n: number }>`select count(*)::int as n from fedify_kv where key = ${JSON.stringify(entry)}`.execute(db())).rows[0]!.n, 0, "the fedify_kv entry is gone");
      assert.equal((await getRemoteActor(db(), id))?.handle, "@tk@tablekey.example", "the actor's row");
      assert.deepEqual(await new KyselyKvStore(db()).get([...entry]), json, "read back as written");
    });

    it("on PostgreSQL a follower whose stored row is newer than the fetch keeps that row, and still gets the key cached (an older cached entry replaced)", async (t) => {
      if (d.name !== "postgres") return t.skip("the key lives in the actor's row on PostgreSQL only (0075)");
      const id = actor("rowkey2");
      const later = Date.now() + 3600_000;
      await sql`insert into remote_actors (id, type, handle, name, inbox, shared_inbox, fetched_at) values (${id}, 'Person', '@kept@elsewhere.invalid', null, ${`${id}/inbox`}, null, ${later})`.execute(db());
      // A key cached before under the same id (an older one) is replaced, not kept beside it.
      await sql`insert into fedify_kv (key, value, expires_at) values (${JSON.stringify(["_fedify", "publicKey", `${id}#main-key`])}, 'null', null)`.execute(db());
      assert.equal((await post(mastodonFollow("rowkey2"), { as: "rowkey2" })).res.status, 202);
      assert.equal((await member("rowkey2"))?.state, "active");
      const row = (await sql<{ handle: string; fetched_at: number }>`select handle, fetched_at from remote_actors where id = ${id}`.execute(db())).rows[0]!;
      assert.equal(row.handle, "@kept@elsewhere.invalid", "the newer row is kept");
      assert.equal(Number(row.fetched_at), later);
      const stored = await new KyselyKvStore(db()).get(["_fedify", "publicKey", `${id}#main-key`]);
      const key = await CryptographicKey.fromJsonLd(stored, { documentLoader: createOfflineDocumentLoader(), contextLoader: createOfflineContextLoader() });
      assert.equal(key.ownerId?.href, id);
      assert.equal((await sql<{ n: number }>`select count(*)::int as n from fedify_kv where key like ${`%${id}%`}`.execute(db())).rows[0]!.n, 0, "the old entry is gone");
    });

    it("the same Follow again, at once five times, and re-signed to the shared inbox: one member, one record, one Accept", async () => {
      const body = mastodonFollow("dup");
      const text = JSON.stringify(body);
      const signed = await peer.signedPost(unionInbox(), text, { as: "dup", spec: CAVAGE });
      const again = () => fetch(unionInbox(), { method: "POST", headers: new Headers(signed.headers), body: text });
      // Copies arriving together (a server retrying while the first is in flight), then later ones.
      const first = await Promise.all([...Array.from({ length: 5 }, again), post(body, { as: "dup", to: sharedInbox(), spec: RFC9421 }).then((x) => x.res)]);
      for (const a of [...first, await again()]) assert.equal(a.status, 202);
      const rows = await db().selectFrom("members").select("state").where("union_id", "=", riders.id).where("actor_id", "=", actor("dup")).execute();
      assert.deepEqual(rows, [{ state: "active" }]);
      assert.equal((await recorded(String(body.id))).length, 1);
      await eventually(async () => (await accepts(String(body.id))) >= 1, "the Accept");
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(await accepts(String(body.id)), 1, "one Accept");
    });

    it("hostile: unsigned, a forged actor, a wrong digest, a stale date, an oversized body: refused, no one joins", async () => {
      const unsigned = mastodonFollow("eve");
      const u = await fetch(unionInbox(), { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: JSON.stringify(unsigned) });
      assert.ok(u.status >= 400, `unsigned: ${u.status}`);
      assert.equal(await member("eve"), undefined);

      // Mallory signs a Follow that says it is the victim's.
      const forged = await post(mastodonFollow("victim"), { as: "victim", keyOf: "mallory" });
      assert.ok(forged.res.status >= 400, `forged actor: ${forged.res.status}`);
      assert.equal(await member("victim"), undefined);
      assert.equal(await member("mallory"), undefined);

      const body = mastodonFollow("digest");
      const signed = await peer.signedPost(unionInbox(), JSON.stringify(body), { as: "digest", spec: CAVAGE });
      // The signed request's headers with another body (another id): its digest no longer matches.
      const wrong = await fetch(unionInbox(), { method: "POST", headers: new Headers(signed.headers), body: JSON.stringify({ ...body, id: `${String(body.id)}-2` }) });
      assert.ok(wrong.status >= 400, `wrong digest: ${wrong.status}`);
      assert.equal(await member("digest"), undefined);
      assert.equal((await recorded(`${String(body.id)}-2`)).length, 0, "the tampered Follow is not recorded");

      const stale = await post(mastodonFollow("late"), { as: "late", date: new Date(Date.now() - 3 * 3600_000) });
      assert.ok(stale.res.status >= 400, `stale signature: ${stale.res.status}`);
      assert.equal(await member("late"), undefined);

      const huge: JsonObject = { ...mastodonFollow("big"), padding: "x".repeat(m.muster.config.maxBodyBytes) };
      const big = await post(huge, { as: "big" });
      assert.equal(big.res.status, 413);
      assert.equal(await member("big"), undefined);
      for (const id of [String(unsigned.id), String(huge.id)]) assert.equal((await recorded(id)).length, 0);
    });

    it("hostile: a Follow of no union here, or of the instance actor: no member anywhere", async () => {
      for (const object of [new URL("/u/nosuch", m.origin).href, new URL("/u/instance", m.origin).href]) {
        const body = mastodonFollow("nobody", object);
        const r = await post(body, { as: "nobody", to: sharedInbox() });
        assert.equal(r.res.status, 202, "recorded and ignored, as Fedify's path does");
        await eventually(async () => (await recorded(String(body.id))).length === 1, "the Follow recorded");
        assert.equal((await recorded(String(body.id)))[0]?.union_id, null);
      }
      const rows = await db().selectFrom("members").select("id").where("actor_id", "=", actor("nobody")).execute();
      assert.equal(rows.length, 0);
      // Another union's inbox does not take a Follow of riders here (Fedify answers it, for that inbox).
      const wrong = await post(mastodonFollow("nobody"), { as: "nobody", to: new URL("/u/nosuch/inbox", m.origin) });
      assert.equal(wrong.res.status, 404);
      assert.equal(await member("nobody"), undefined);
    });

    it("unusual Follows take Fedify's path and still join: lemmy/follow-group.json (Lemmy context, addressed), an account that names aliases", async () => {
      const original = loadFixture(FIXTURES, "lemmy/follow-group.json");
      const body = readdress(original, {
        actors: { "http://ds9.lemmy.ml/u/lemmy_alpha": actor("lemmy") },
        exact: { "http://enterprise.lemmy.ml/c/main": new URL("/u/riders", m.origin).href },
        id: new URL(`/activities/follow/${crypto.randomUUID()}`, peer.origin).href,
        defaultContext: LEMMY_CONTEXT,
      });
      assert.equal((await post(body, { as: "lemmy" })).res.status, 202);
      await eventually(async () => (await member("lemmy"))?.state === "active", "lemmy joined through Fedify");

      // An account naming an alias gets the account-migration check, which is Fedify's path's.
      peer.setMigration("mover", { alsoKnownAs: ["nobody"] });
      const moving = mastodonFollow("mover");
      assert.equal((await post(moving, { as: "mover" })).res.status, 202);
      await eventually(async () => (await member("mover"))?.state === "active", "mover joined through Fedify");
      // processOnce records the Follow after the join's own transaction.
      await eventually(async () => (await recorded(String(moving.id))).length === 1, "the mover's Follow recorded");
    });
  });

  describe(`the follow's fast path with private addresses refused, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb, { env: { MUSTER_ALLOW_PRIVATE_ADDRESS: "0" } });
      peer = await startPeer(["ann"]);
      await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    it("an actor on a private address is never fetched: refused, no member", async () => {
      const body = { "@context": "https://www.w3.org/ns/activitystreams", id: new URL(`/${crypto.randomUUID()}`, peer.origin).href, type: "Follow", actor: peer.actorId("ann").href, object: new URL("/u/riders", m.origin).href };
      const to = new URL("/u/riders/inbox", m.origin);
      const signed = await peer.signedPost(to, JSON.stringify(body), { as: "ann", spec: CAVAGE });
      const res = await fetch(to, { method: "POST", headers: new Headers(signed.headers), body: JSON.stringify(body) });
      assert.ok(res.status >= 400, `refused: ${res.status}`);
      assert.equal(peer.gets.filter((p) => p === "/users/ann").length, 0, "no request reached the private address");
      const rows = await m.muster.database.db.selectFrom("members").select("id").where("actor_id", "=", peer.actorId("ann").href).execute();
      assert.equal(rows.length, 0);
    });
  });
}

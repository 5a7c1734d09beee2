import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { pruneStorage } from "../federation/pruning.ts";
import { ACTIVITY_ID_RETENTION_MS, SIGNATURE_WINDOW_MS, SIGNED_BODY_MAX_AGE_MS } from "../src/replay-window.ts";
import { createInvite } from "../src/members/invites.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";
import { Follow, type Group, Undo } from "@fedify/vocab";
import { storedKey } from "./helpers/done-keys.ts";

// Storage pruned on a schedule (federation/pruning.ts): old rows go, recent
// ones stay, and activity ids outlive every window in which a signed copy of
// the activity would still verify, so a replay is still refused.

const HOUR = 3600_000;
const DAY = 24 * HOUR;

for (const d of dialects) {
  describe(`pruning on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let unionId: string;
    let seq = 0;
    const db = () => m.muster.database.db;
    const prune = (now = Date.now()) => pruneStorage({ db: db(), pruneQueue: (t) => m.muster.lanes.lanes.delivery.pruneDone(t) }, now);
    const ids = async (table: "inbox_activities" | "inbox_claims" | "join_claims" | "sessions" | "login_codes") =>
      new Set((await db().selectFrom(table).select("id").execute()).map((r) => r.id));

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(["alice"]);
      unionId = (await makeUnion(m, "riders")).id;
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    it("deletes old inbox ids, dead claims, spent join claims, expired sessions and sign-in links, old queue keys and expired wallet challenges; keeps recent ones and Follows", async () => {
      const now = Date.now();
      const old = now - ACTIVITY_ID_RETENTION_MS - HOUR;
      await db().insertInto("inbox_activities").values([
        { id: "https://x.example/old-like", type: "Like", actor: "https://x.example/a", union_id: unionId, received_at: old },
        { id: "https://x.example/old-follow", type: "Follow", actor: "https://x.example/a", union_id: unionId, received_at: old },
        { id: "https://x.example/recent-like", type: "Like", actor: "https://x.example/a", union_id: unionId, received_at: now - ACTIVITY_ID_RETENTION_MS + HOUR },
      ]).execute();
      await db().insertInto("inbox_claims").values([
        { id: "https://x.example/dead-claim", claimed_until: now - 2 * HOUR },
        { id: "https://x.example/live-claim", claimed_until: now + 5 * 60_000 },
      ]).execute();
      const invite = await createInvite(m.muster.membership, unionId, { by: OPERATOR, maxUses: 5 });
      const claim = (id: string, expiresAt: number, usedAt: number | null) => ({ id, union_id: unionId, invite_id: invite.id, handle: `@${id}@x.example`, created_at: expiresAt - DAY, expires_at: expiresAt, used_at: usedAt });
      await db().insertInto("join_claims").values([claim("lapsed", now - 2 * DAY, null), claim("spent", now - 2 * DAY, now - 3 * DAY), claim("open", now + HOUR, null)]).execute();
      const login = (id: string, expiresAt: number) => ({ id, code_hash: `hash-${id}`, union_id: unionId, member_id: "m1", created_at: expiresAt - HOUR, expires_at: expiresAt, used_at: null });
      await db().insertInto("login_codes").values([login("old-code", now - 2 * DAY), login("new-code", now + HOUR)]).execute();
      const session = (id: string, expiresAt: number) => ({ id, token_hash: `hash-${id}`, union_id: unionId, member_id: "m1", created_at: expiresAt - DAY, expires_at: expiresAt, revoked_at: null });
      await db().insertInto("sessions").values([session("old-session", now - 2 * DAY), session("new-session", now + DAY)]).execute();
      await db().insertInto("fedify_mq_done").values([{ dedupe_key: storedKey(db(), "old-key"), done_at: now - 8 * DAY }, { dedupe_key: storedKey(db(), "new-key"), done_at: now - HOUR }]).execute();
      const challenge = (nonce: string, expiresAt: number) => ({ nonce, union_id: unionId, member_id: "m1", message: `challenge ${nonce}`, expires_at: expiresAt, used_at: null });
      await db().insertInto("wallet_challenges").values([challenge("old-nonce", now - 2 * DAY), challenge("new-nonce", now + HOUR)]).execute();

      const report = await prune(now);
      assert.ok(Object.values(report).every((v) => v !== "failed"), JSON.stringify(report));
      assert.ok((report.inbox_activities as number) >= 1);

      const inbox = await ids("inbox_activities");
      assert.ok(!inbox.has("https://x.example/old-like"), "an old Like's id is gone");
      assert.ok(inbox.has("https://x.example/recent-like"), "a recent id stays");
      assert.ok(inbox.has("https://x.example/old-follow"), "a Follow's record stays (an old Undo is told apart by it)");
      const claims = await ids("inbox_claims");
      assert.ok(!claims.has("https://x.example/dead-claim") && claims.has("https://x.example/live-claim"));
      const joins = await ids("join_claims");
      assert.deepEqual([...joins].filter((j) => ["lapsed", "spent", "open"].includes(j)), ["open"]);
      const codes = await ids("login_codes");
      assert.ok(!codes.has("old-code") && codes.has("new-code"));
      const sessions = await ids("sessions");
      assert.ok(!sessions.has("old-session") && sessions.has("new-session"));
      const keys = new Set((await db().selectFrom("fedify_mq_done").select("dedupe_key").execute()).map((r) => r.dedupe_key));
      assert.ok(!keys.has(storedKey(db(), "old-key")) && keys.has(storedKey(db(), "new-key")));
      const nonces = new Set((await db().selectFrom("wallet_challenges").select("nonce").execute()).map((r) => r.nonce));
      assert.ok(!nonces.has("old-nonce") && nonces.has("new-nonce"), "an expired wallet challenge goes, a live one stays");
    });

    it("a current member's Follow record goes after the retention; one they replaced stays, so an Undo of it still cannot end the new membership", async () => {
      const union = await makeUnion(m, "couriers", { joinPolicy: "open" });
      const groupId = new URL("/u/couriers", m.origin);
      const group = await peer.lookup(groupId) as Group;
      const alice = peer.actorId("alice");
      const member = () => db().selectFrom("members").select(["state", "follow_id"]).where("union_id", "=", union.id).where("actor_id", "=", alice.href).executeTakeFirst();
      const processed: string[] = [];
      m.muster.events.on("activity.received", (e) => processed.push(e.activityId));
      const send = async (activity: Follow | Undo) => {
        await peer.send("alice", group, activity);
        await eventually(async () => processed.includes(activity.id!.href), `${activity.id!.href} processed`);
      };
      const follow = (n: string) => new Follow({ id: new URL(`/follows/${n}-${++seq}`, peer.origin), actor: alice, object: groupId });

      const first = follow("first");
      await send(first);
      assert.equal((await member())?.state, "active");
      const later = Date.now() + ACTIVITY_ID_RETENTION_MS + HOUR;
      await prune(later);
      assert.ok(!(await ids("inbox_activities")).has(first.id!.href), "the current Follow's record goes: members.follow_id holds it");

      // Following again (Mastodon's re-follow) replaces the member's Follow id: the old one is recorded again at once.
      const second = follow("second");
      await send(second);
      // Stored relative to alice's origin (migration 0058), and read back whole.
      assert.equal((await member())?.follow_id, second.id!.pathname);
      assert.equal((await findMemberByActor(db(), union.id, alice.href))?.followId, second.id!.href);
      const replaced = await db().selectFrom("inbox_activities").selectAll().where("id", "=", first.id!.href).executeTakeFirst();
      assert.deepEqual([replaced?.type, replaced?.actor, replaced?.union_id], ["Follow", alice.href, union.id], "the replaced Follow is recorded with its actor and union");
      await prune(later + ACTIVITY_ID_RETENTION_MS);
      const inbox = await ids("inbox_activities");
      assert.ok(inbox.has(first.id!.href), "a replaced Follow's record stays");
      assert.ok(!inbox.has(second.id!.href), "the current one's goes");

      await send(new Undo({ id: new URL(`/undos/${++seq}`, peer.origin), actor: alice, object: first }));
      assert.equal((await member())?.state, "active", "an Undo of the replaced Follow does not end the membership");
      await send(new Undo({ id: new URL(`/undos/${++seq}`, peer.origin), actor: alice, object: second }));
      assert.notEqual((await member())?.state, "active", "an Undo of the current one does");
    });

    it("a replay inside the signature window is refused after pruning; one outside it is refused by the signature check", async () => {
      const inbox = new URL("/u/riders/inbox", m.origin);
      const seen: string[] = [];
      m.muster.events.on("activity.received", (e) => seen.push(e.activityId));
      const activity = (id: string) => JSON.stringify({
        "@context": "https://www.w3.org/ns/activitystreams",
        id,
        type: "Add",
        actor: peer.actorId("alice").href,
        object: new URL("/notes/1", peer.origin).href,
        target: new URL("/u/riders", m.origin).href,
      });
      const id = new URL(`/activities/add-${++seq}`, peer.origin).href;
      const original = await peer.signedPost(inbox, activity(id), { as: "alice" });
      const copy = original.clone();
      assert.equal((await fetch(original)).status, 202);
      await eventually(async () => seen.includes(id), "the Add is processed");

      // Pruning as late as the signature window's end keeps the id...
      await prune(Date.now() + SIGNATURE_WINDOW_MS);
      assert.ok((await ids("inbox_activities")).has(id), "the id outlives the signature window");
      // ...so the very same signed request, sent again, changes nothing.
      assert.equal((await fetch(copy)).status, 202);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(seen.filter((s) => s === id).length, 1, "the replay was not processed");

      // After the retention the id goes; by then a copy's HTTP signature no longer verifies.
      await prune(Date.now() + ACTIVITY_ID_RETENTION_MS + HOUR);
      assert.ok(!(await ids("inbox_activities")).has(id));
      const stale = await peer.signedPost(inbox, activity(id), { as: "alice", date: new Date(Date.now() - SIGNATURE_WINDOW_MS - 10 * 60_000) });
      const res = await fetch(stale);
      assert.ok(res.status >= 400, `a signature older than the window is refused (got ${res.status})`);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(seen.filter((s) => s === id).length, 1);
    });

    it("refuses a body whose own signature (proof or LD signature) is older than the replay window", async () => {
      const inbox = new URL("/u/riders/inbox", m.origin);
      const body = (created: string, key: "proof" | "signature") => JSON.stringify({
        "@context": "https://www.w3.org/ns/activitystreams",
        id: new URL(`/activities/old-${++seq}`, peer.origin).href,
        type: "Like",
        actor: peer.actorId("alice").href,
        object: new URL("/u/riders", m.origin).href,
        [key]: key === "proof"
          ? { type: "DataIntegrityProof", cryptosuite: "eddsa-jcs-2022", verificationMethod: `${peer.actorId("alice").href}#ed25519-key`, proofPurpose: "assertionMethod", proofValue: "z111", created }
          : { type: "RsaSignature2017", creator: peer.keyId("alice").href, signatureValue: "AAAA", created },
      });
      const tooOld = new Date(Date.now() - SIGNED_BODY_MAX_AGE_MS - HOUR).toISOString();
      for (const [created, key] of [[tooOld, "proof"], [tooOld, "signature"], ["not a date", "proof"]] as const) {
        const res = await fetch(await peer.signedPost(inbox, body(created, key), { as: "alice" }));
        assert.equal(res.status, 401, `${key} created ${created}`);
        assert.equal((await res.json() as { error: { code: string } }).error.code, "stale_signature");
      }
      // A recent one passes the guard (and is then judged by Fedify's signature checks).
      const fresh = await fetch(await peer.signedPost(inbox, body(new Date().toISOString(), "proof"), { as: "alice" }));
      assert.notEqual(fresh.headers.get("content-type")?.includes("json") ? ((await fresh.json()) as { error?: { code: string } }).error?.code : undefined, "stale_signature");
    });
  });
}

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { claimInviteForApplicant, requestToJoin, setOfficer } from "../src/members/membership.ts";
import { createInvite, listInvites } from "../src/members/invites.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";
import { issueWalletChallenge, proveWallet, verifyWalletProof } from "../src/treasury/wallet-proof.ts";
import { Keypair } from "@solana/web3.js";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import { overrideBylaws } from "./helpers/bylaws.ts";

interface Page { orderedItems: { type: string; member: string; sponsor: string | null; role: string; portfolio?: string }[]; next?: string }

for (const d of dialects) {
  describe(`federated member list and moderators on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let outsider: Peer;
    let unionId: string;
    const url = (p: string) => new URL(p, m.origin);

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(["lead", "alice", "bob", "stranger"]);
      outsider = await startPeer(["mallory"]);
      const union = await makeUnion(m, "riders", { leaderHandle: `@lead@${peer.origin.host}`, joinPolicy: "approval", membersVisibility: "members" });
      unionId = union.id;
      const deps = m.muster.membership;
      const join = (name: string) => requestToJoin(deps, unionId, { actorId: peer.actorId(name).href, handle: `@${name}@${peer.origin.host}` }, `${peer.origin.href}follows/${name}`);
      await join("lead");
      const invite = await createInvite(deps, unionId, { by: OPERATOR });
      await claimInviteForApplicant(deps, unionId, invite.code, `@alice@${peer.origin.host}`);
      await join("alice");
      const alice = (await findMemberByActor(m.muster.database.db, unionId, peer.actorId("alice").href))!;
      // Her welcome invite, which already holds all her places.
      const [aliceInvite] = await listInvites(m.muster.database.db, unionId, { createdBy: alice.id });
      assert.ok(aliceInvite);
      await claimInviteForApplicant(deps, unionId, aliceInvite.code, `@bob@${peer.origin.host}`);
      await join("bob");
      await setOfficer(deps, unionId, alice.id, OPERATOR, "Treasurer");
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await outsider?.close();
      await tdb?.destroy();
    });

    async function allItems(first: Response): Promise<Page["orderedItems"]> {
      const coll = await first.json() as { first: string; totalItems: number; "@context": unknown[] };
      assert.deepEqual(coll["@context"], ["https://www.w3.org/ns/activitystreams", url("/ns").href]);
      const items: Page["orderedItems"] = [];
      let next: string | undefined = coll.first;
      while (next) {
        const page: Page = await (await fetch(await peer.signedGet(new URL(next), { as: "stranger" }))).json() as Page;
        items.push(...page.orderedItems);
        next = page.next;
      }
      assert.equal(items.length, coll.totalItems);
      return items;
    }

    it("serves its JSON-LD context, defining sponsor and member as ids", async () => {
      const res = await fetch(url("/ns"));
      assert.equal(res.status, 200);
      const ctx = (await res.json() as { "@context": Record<string, { "@id": string; "@type": string }> })["@context"];
      assert.deepEqual(ctx.sponsor, { "@id": "muster:sponsor", "@type": "@id" });
      assert.deepEqual(ctx.member, { "@id": "muster:member", "@type": "@id" });
    });

    it("members-only: unsigned is 401, another server is 403, a member's server sees sponsors", async () => {
      const unsigned = await fetch(url("/u/riders/members"), { headers: { Accept: "application/activity+json" } });
      assert.equal(unsigned.status, 401);
      const foreign = await fetch(await outsider.signedGet(url("/u/riders/members"), { as: "mallory" }));
      assert.equal(foreign.status, 403);
      // stranger is not a member, but signs from a server that hosts members.
      const res = await fetch(await peer.signedGet(url("/u/riders/members"), { as: "stranger", spec: "rfc9421" }));
      assert.equal(res.status, 200);
      assert.match(res.headers.get("cache-control") ?? "", /private/);
      const items = await allItems(res);
      const byMember = new Map(items.map((i) => [i.member, i]));
      assert.equal(byMember.get(peer.actorId("lead").href)?.sponsor, null);
      assert.equal(byMember.get(peer.actorId("alice").href)?.sponsor, peer.actorId("lead").href);
      assert.equal(byMember.get(peer.actorId("bob").href)?.sponsor, peer.actorId("alice").href);
      assert.equal(byMember.get(peer.actorId("alice").href)?.portfolio, "Treasurer");
      assert.ok(items.every((i) => i.type === "Membership"));
    });

    it("officers-only: an ordinary member is refused, an officer is served", async () => {
      await overrideBylaws(m.muster.unions, "riders", { membersVisibility: "officers" });
      assert.equal((await fetch(await peer.signedGet(url("/u/riders/members"), { as: "bob" }))).status, 403);
      assert.equal((await fetch(await peer.signedGet(url("/u/riders/members"), { as: "alice" }))).status, 200);
    });

    it("public: anyone", async () => {
      await overrideBylaws(m.muster.unions, "riders", { membersVisibility: "public" });
      const res = await fetch(url("/u/riders/members"));
      assert.equal(res.status, 200);
      assert.equal((await res.json() as { totalItems: number }).totalItems, 3);
    });

    it("publishes a member's wallet proof, which anyone can check with the wallet's key alone", async () => {
      // The roster is public since the test before: the proof travels with the public entry.
      const alice = (await findMemberByActor(m.muster.database.db, unionId, peer.actorId("alice").href))!;
      const wallet = Keypair.generate();
      const challenge = await issueWalletChallenge(m.muster.database.db, unionId, alice.id, { union: url("/u/riders").href, actorId: peer.actorId("alice").href });
      const signature = bs58.encode(await ed.signAsync(new TextEncoder().encode(challenge.message), wallet.secretKey.slice(0, 32)));
      await proveWallet(m.muster.membership, unionId, { wallet: wallet.publicKey.toBase58(), message: challenge.message, signature });
      const items = await allItems(await fetch(url("/u/riders/members")));
      const entry = items.find((i) => i.member === peer.actorId("alice").href) as unknown as { wallet: { type: string; address: string; signedMessage: string; signature: string } };
      assert.equal(entry.wallet.type, "WalletProof");
      assert.equal(entry.wallet.address, wallet.publicKey.toBase58());
      assert.match(entry.wallet.signedMessage, new RegExp(`Union: ${url("/u/riders").href}\nMember: ${peer.actorId("alice").href}`));
      assert.ok(await verifyWalletProof({ wallet: entry.wallet.address, message: entry.wallet.signedMessage, signature: entry.wallet.signature }));
      assert.ok(items.filter((i) => i.member !== peer.actorId("alice").href).every((i) => !("wallet" in i)), "no proof, no wallet published");
      const ctx = (await (await fetch(url("/ns"))).json() as { "@context": Record<string, unknown> })["@context"];
      assert.equal(ctx.WalletProof, "muster:WalletProof");
    });

    it("publishes the leader and officers as the moderators the Group is attributed to", async () => {
      const group = await (await fetch(url("/u/riders"), { headers: { Accept: "application/activity+json" } })).json() as { attributedTo: string };
      assert.equal(group.attributedTo, url("/u/riders/moderators").href);
      const mods = await (await fetch(group.attributedTo)).json() as { orderedItems: string[] };
      assert.deepEqual(mods.orderedItems, [peer.actorId("lead").href, peer.actorId("alice").href]);
    });
  });
}

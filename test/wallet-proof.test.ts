import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair } from "@solana/web3.js";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import { withCtx, followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";
import { dialects } from "./helpers/databases.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { linkWallet } from "../src/treasury/badges.ts";
import { CHALLENGE_TTL_MS, issueWalletChallenge, proveWallet, verifyWalletProof, walletOf } from "../src/treasury/wallet-proof.ts";

const sign = async (message: string, key: Keypair) => bs58.encode(await ed.signAsync(new TextEncoder().encode(message), key.secretKey.slice(0, 32)));

for (const d of dialects) {
  describe(`wallet ownership proof on ${d.name}`, { skip: d.skip }, () => {
    it("links a wallet only with its own signature of a fresh challenge naming the union and member; replays, expired, foreign and forged proofs are refused", async () => {
      await withCtx(d, async (c) => {
        const { db } = c.deps;
        const union = await createUnion({ ...c.deps, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        const other = await createUnion({ ...c.deps, generateKeys: sharedKeys }, { slug: "couriers", name: "Couriers", purpose: "Fair pay", joinPolicy: "open" });
        const alice = (await requestToJoin(c.deps, union.id, person("alice"), followId())).member;
        const names = { union: "https://union.example/u/riders", actorId: person("alice").actorId };
        const wallet = Keypair.generate();
        const address = wallet.publicKey.toBase58();

        const ch = await issueWalletChallenge(db, union.id, alice.id, names);
        assert.match(ch.message, /^Muster wallet link\nUnion: https:\/\/union\.example\/u\/riders\nMember: https:\/\/remote\.example\/users\/alice\nNonce: [0-9a-f]{32}\nExpires: /);
        // Forged: another key's signature, or the text changed to name someone else.
        await assert.rejects(proveWallet(c.deps, union.id, { wallet: address, message: ch.message, signature: await sign(ch.message, Keypair.generate()) }), /is not .*'s signature of the challenge/);
        const altered = ch.message.replace("users/alice", "users/mallory");
        await assert.rejects(proveWallet(c.deps, union.id, { wallet: address, message: altered, signature: await sign(altered, wallet) }), /not issued by this union/);
        // Another union's server cannot take a challenge issued here.
        await assert.rejects(proveWallet(c.deps, other.id, { wallet: address, message: ch.message, signature: await sign(ch.message, wallet) }), /not issued by this union/);
        await assert.rejects(proveWallet(c.deps, union.id, { wallet: "nope", message: ch.message, signature: await sign(ch.message, wallet) }), /not a Solana address/);
        assert.equal(await walletOf(db, union.id, alice.id), null, "nothing linked by refused proofs");

        const proof = { wallet: address, message: ch.message, signature: await sign(ch.message, wallet) };
        assert.deepEqual(await proveWallet(c.deps, union.id, proof), { memberId: alice.id, wallet: address });
        assert.deepEqual(await walletOf(db, union.id, alice.id), { wallet: address, proof });
        assert.ok(await verifyWalletProof(proof), "anyone can check the published proof with the wallet's key");
        assert.equal(await verifyWalletProof({ ...proof, message: altered }), false);
        assert.equal((await recordedIntents(db)).filter((i) => i.kind === "badge.sync").length, 1, "the badge follows the link");
        // Replay: the nonce is spent.
        await assert.rejects(proveWallet(c.deps, union.id, proof), /already used/);
        // Expired.
        const late = await issueWalletChallenge(db, union.id, alice.id, names);
        await assert.rejects(proveWallet(c.deps, union.id, { wallet: address, message: late.message, signature: await sign(late.message, wallet) }, Date.now() + CHALLENGE_TTL_MS + 1000), /expired/);
        // Two answers to one challenge at once: one link, one refusal.
        const race = await issueWalletChallenge(db, union.id, alice.id, names);
        const second = Keypair.generate();
        const results = await Promise.allSettled([
          proveWallet(c.deps, union.id, { wallet: address, message: race.message, signature: await sign(race.message, wallet) }),
          proveWallet(c.deps, union.id, { wallet: second.publicKey.toBase58(), message: race.message, signature: await sign(race.message, second) }),
        ]);
        assert.equal(results.filter((r) => r.status === "fulfilled").length, 1);
        // An operator's link replaces the wallet and carries no proof.
        await linkWallet(c.deps, union.id, alice.id, Keypair.generate().publicKey.toBase58(), OPERATOR);
        assert.equal((await walletOf(db, union.id, alice.id))?.proof, null);
      });
    });
  });
}

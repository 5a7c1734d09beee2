import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { createAssociatedTokenAccountIdempotentInstruction, createTransferCheckedInstruction, getMint, TOKEN_2022_PROGRAM_ID } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { recordedIntents, recordingOutbox } from "./helpers/membership-worker.ts";
import { startLedger } from "./helpers/solana.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { castVote, closeProposal, createProposal, YES } from "../src/bylaws/proposals.ts";
import { linkWallet } from "../src/treasury/badges.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { faucetFunding, treasuryKey } from "../solana/badge-sync.ts";
import { badgeAccount, badgeBalance } from "../solana/badges.ts";
import { handleLedgerIntent } from "../solana/ledger-lane.ts";
import { LedgerError } from "../solana/ledger.ts";
import { roleBadgeMints } from "../solana/role-badges.ts";

for (const d of dialects) {
  describe(`role badges on ${d.name}`, { skip: d.skip }, () => {
    it("an officer gets a soulbound officer badge that refuses to move; a recall burns it with the permanent delegate", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      const running = await startLedger(db);
      try {
        const { ledger, connection } = running;
        const events = createEventBus();
        const deps = { db, events, outbox: recordingOutbox };
        const chain = { db, ledger, fund: faucetFunding(ledger), origin: new URL("https://union.example") };
        let seen = 0;
        // The ledger lane: every badge.sync committed since the last call.
        const lane = async () => {
          const all = await recordedIntents(db);
          for (const intent of all.slice(seen).filter((i): i is Extract<OutboxIntent, { kind: "badge.sync" }> => i.kind === "badge.sync")) await handleLedgerIntent(chain, { intent });
          seen = all.length;
        };
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        const members: Record<string, { id: string; wallet: Keypair }> = {};
        for (const name of ["ana", "bob", "carol"]) {
          const j = await requestToJoin(deps, union.id, person(name), followId());
          const wallet = Keypair.generate();
          await linkWallet(deps, union.id, j.member.id, wallet.publicKey.toBase58(), OPERATOR);
          members[name] = { id: j.member.id, wallet };
        }
        await lane();
        assert.deepEqual(await roleBadgeMints(chain, union.id), {}, "no role, no role badge");

        // ana becomes an officer: the appointment queues her badge.
        await setOfficer(deps, union.id, members.ana!.id, OPERATOR, "treasurer");
        await lane();
        const { officer: mint } = await roleBadgeMints(chain, union.id);
        assert.ok(mint);
        const ana = members.ana!.wallet;
        assert.equal(await badgeBalance(ledger, mint, ana.publicKey.toBase58()), 1n);
        assert.equal(await badgeBalance(ledger, mint, members.bob!.wallet.publicKey.toBase58()), 0n);
        // A soulbound Token-2022 mint: decimals 0, its permanent delegate the union's server key.
        const onChain = await getMint(connection, new PublicKey(mint), "confirmed", TOKEN_2022_PROGRAM_ID);
        assert.equal(onChain.decimals, 0);
        await lane();
        assert.equal(await badgeBalance(ledger, mint, ana.publicKey.toBase58()), 1n, "synced again: still one");

        // The badge refuses to move: the chain rejects ana's own transfer of it.
        await ledger.airdrop(ana.publicKey.toBase58(), 1_000_000_000n);
        const buyer = Keypair.generate().publicKey;
        const to = new PublicKey(badgeAccount(mint, buyer.toBase58()));
        const bh = await ledger.latestBlockhash();
        const sell = new Transaction({ feePayer: ana.publicKey, ...bh }).add(
          createAssociatedTokenAccountIdempotentInstruction(ana.publicKey, to, buyer, new PublicKey(mint), TOKEN_2022_PROGRAM_ID),
          createTransferCheckedInstruction(new PublicKey(badgeAccount(mint, ana.publicKey.toBase58())), new PublicKey(mint), to, ana.publicKey, 1n, 0, [], TOKEN_2022_PROGRAM_ID),
        );
        sell.sign(ana);
        await assert.rejects(ledger.submit(sell.serialize(), { lastValidBlockHeight: bh.lastValidBlockHeight, commitment: "confirmed" }), (e: unknown) => e instanceof LedgerError && e.code === "failed");
        assert.equal(await badgeBalance(ledger, mint, ana.publicKey.toBase58()), 1n);

        // The members recall her: the badge is burned by the permanent delegate, without her signature.
        const recall = await createProposal(deps, union.id, { kind: "member", memberId: members.bob!.id }, { kind: "recall", title: "Recall the treasurer", memberId: members.ana!.id, closesAt: new Date(Date.now() + 60_000) });
        for (const n of ["bob", "carol"]) await castVote(deps, union.id, recall.id, { memberId: members[n]!.id }, [YES], { kind: "web" });
        const closed = await closeProposal(deps, union.id, recall.id, { force: true });
        assert.equal(closed?.state, "passed");
        await lane();
        assert.equal(await badgeBalance(ledger, mint, ana.publicKey.toBase58()), 0n, "burned after the recall");
        const row = await db.selectFrom("role_badges").selectAll().where("member_id", "=", members.ana!.id).executeTakeFirstOrThrow();
        assert.equal(row.state, "burned");
        assert.equal((await ledger.status(row.signature!))?.err, null);
        assert.equal((await getMint(connection, new PublicKey(mint), "confirmed", TOKEN_2022_PROGRAM_ID)).supply, 0n);
        // The burn was signed by the server's key alone (the permanent delegate), not ana.
        const burn = await ledger.transaction(row.signature!);
        const signers = Transaction.from(burn!.raw).signatures.map((s) => s.publicKey.toBase58());
        assert.deepEqual(signers, [(await treasuryKey(db, union.id)).publicKey.toBase58()]);
        // Her membership badge stays: she is still a member.
        await lane();
        assert.equal(await badgeBalance(ledger, mint, ana.publicKey.toBase58()), 0n, "and stays burned");
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });
  });
}

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, LAMPORTS_PER_SOL, PublicKey, Transaction } from "@solana/web3.js";
import {
  ExtensionType, TOKEN_2022_PROGRAM_ID, createAssociatedTokenAccountIdempotentInstruction, createTransferCheckedInstruction, getExtensionTypes,
  getMint, getPermanentDelegate, getTokenMetadata,
} from "@solana/spl-token";
import bs58 from "bs58";
import { dialects } from "./helpers/databases.ts";
import { startLedger } from "./helpers/solana.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { approveMember, removeMember, requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { linkWallet } from "../src/treasury/badges.ts";
import { TreasuryError } from "../src/treasury/dues.ts";
import { KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { queueOutbox } from "../federation/outbound.ts";
import { badgeBalance, badgeAccount, signMintBadge } from "../solana/badges.ts";
import { badgeMintOf, ensureMint, faucetFunding, handleLedgerIntent, syncBadge, treasuryKey } from "../solana/badge-sync.ts";
import { LedgerError } from "../solana/ledger.ts";

for (const d of dialects) {
  describe(`soulbound member badges on ${d.name}`, { skip: d.skip }, () => {
    let lane: Promise<void> | undefined;
    it("mints one badge to an active member's wallet through the ledger lane, refuses a transfer, and burns it on expulsion", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      const running = await startLedger(db);
      const domainQueue = new KyselyMessageQueue(database, { name: "domain", pollIntervalMs: 20 } as never);
      const ledgerQueue = new KyselyMessageQueue(database, { name: "ledger", pollIntervalMs: 20 } as never);
      const abort = new AbortController();
      try {
        const { ledger, connection } = running;
        const events = createEventBus();
        const outbox = queueOutbox(domainQueue, ledgerQueue);
        const deps = { db, events, outbox };
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        const join = async (name: string) => {
          const j = await requestToJoin(deps, union.id, person(name), followId());
          return j.outcome === "pending" ? approveMember(deps, union.id, j.member.id, OPERATOR) : j.member;
        };
        const alice = await join("alice");
        const bob = await join("bob");
        const ledgerIntents = async (): Promise<OutboxIntent[]> => (await db.selectFrom("fedify_mq").select("message").where("queue", "=", "ledger").orderBy("id").execute())
          .map((r) => (JSON.parse(r.message) as { intent: OutboxIntent }).intent);
        assert.deepEqual(await ledgerIntents(), [], "members without a wallet cause no chain work");

        // Bad input is refused and stores nothing; only the member themself (or the operator) links a wallet.
        await assert.rejects(linkWallet(deps, union.id, alice.id, "not-a-wallet", OPERATOR), (e: unknown) => e instanceof TreasuryError && e.code === "invalid");
        const aliceWallet = Keypair.generate();
        await assert.rejects(linkWallet(deps, union.id, alice.id, aliceWallet.publicKey.toBase58(), { kind: "member", memberId: bob.id }), /only the member themself/);
        assert.equal((await db.selectFrom("member_wallets").selectAll().execute()).length, 0);

        await linkWallet(deps, union.id, alice.id, aliceWallet.publicKey.toBase58(), { kind: "member", memberId: alice.id });
        assert.deepEqual(await ledgerIntents(), [{ kind: "badge.sync", unionId: union.id, memberId: alice.id }], "the intent waits in the ledger lane");
        const syncDeps = { db, ledger, origin: new URL("https://union.example"), fund: faucetFunding(ledger) };
        // A crash in an earlier attempt: the badge mint existed, a mint to alice was signed and stored, then the
        // process died before sending it. The lane must send those same bytes, not sign a second mint.
        const key = await treasuryKey(db, union.id);
        await syncDeps.fund(key.publicKey.toBase58());
        const mint = await ensureMint(syncDeps, union.id, key, { name: "Riders member", symbol: "MEMBER", uri: "https://union.example/u/riders" });
        const stored = await signMintBadge(ledger, key, mint, aliceWallet.publicKey.toBase58());
        await db.insertInto("badges").values({
          union_id: union.id, member_id: alice.id, wallet: aliceWallet.publicKey.toBase58(), state: "pending_mint", signature: null,
          raw: Buffer.from(stored.raw).toString("base64"), last_valid_block_height: stored.lastValidBlockHeight, updated_at: Date.now(),
        }).execute();
        const storedSignature = bs58.encode(Transaction.from(stored.raw).signature!);

        lane = ledgerQueue.listen((m) => handleLedgerIntent(syncDeps, m), { signal: abort.signal });
        const until = async (what: () => Promise<boolean>, label: string) => {
          for (let i = 0; i < 400 && !(await what()); i++) await new Promise((r) => setTimeout(r, 25));
          assert.ok(await what(), label);
        };
        const aliceBadge = async () => (await db.selectFrom("badges").selectAll().where("member_id", "=", alice.id).executeTakeFirst());
        await until(async () => (await aliceBadge())?.state === "minted", "alice's badge is minted");
        assert.equal((await aliceBadge())?.signature, storedSignature, "the stored bytes were sent, not a new mint");
        assert.equal(await badgeBalance(ledger, mint, aliceWallet.publicKey.toBase58()), 1n);
        assert.equal(await badgeMintOf(db, union.id), mint);

        // The mint: soulbound, the treasury key as permanent delegate, metadata in the mint.
        const mintInfo = await getMint(connection, new PublicKey(mint), "confirmed", TOKEN_2022_PROGRAM_ID);
        assert.equal(mintInfo.decimals, 0);
        assert.equal(mintInfo.mintAuthority?.toBase58(), key.publicKey.toBase58());
        const extensions = getExtensionTypes(mintInfo.tlvData);
        for (const e of [ExtensionType.NonTransferable, ExtensionType.PermanentDelegate, ExtensionType.MetadataPointer, ExtensionType.TokenMetadata]) assert.ok(extensions.includes(e), ExtensionType[e]);
        assert.equal(getPermanentDelegate(mintInfo)?.delegate.toBase58(), key.publicKey.toBase58());
        const metadata = await getTokenMetadata(connection, new PublicKey(mint), "confirmed", TOKEN_2022_PROGRAM_ID);
        assert.deepEqual([metadata?.name, metadata?.symbol, metadata?.uri], ["Riders member", "MEMBER", "https://union.example/u/riders"]);

        // Idempotent: syncing again and linking the same wallet again (through the lane) leave exactly one badge.
        await syncBadge(syncDeps, union.id, alice.id);
        await linkWallet(deps, union.id, alice.id, aliceWallet.publicKey.toBase58(), OPERATOR);
        await until(async () => (await db.selectFrom("fedify_mq").select("id").where("queue", "=", "ledger").execute()).length === 0, "the lane is drained");
        assert.equal(await badgeBalance(ledger, mint, aliceWallet.publicKey.toBase58()), 1n, "minting twice gives one badge");

        // Soulbound: alice cannot give her badge to bob.
        const bobWallet = Keypair.generate();
        const payer = Keypair.generate();
        await ledger.airdrop(payer.publicKey.toBase58(), 2n * BigInt(LAMPORTS_PER_SOL));
        await ledger.airdrop(aliceWallet.publicKey.toBase58(), BigInt(LAMPORTS_PER_SOL));
        const bobAccount = new PublicKey(badgeAccount(mint, bobWallet.publicKey.toBase58()));
        const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
        const open = new Transaction({ feePayer: payer.publicKey, blockhash, lastValidBlockHeight })
          .add(createAssociatedTokenAccountIdempotentInstruction(payer.publicKey, bobAccount, bobWallet.publicKey, new PublicKey(mint), TOKEN_2022_PROGRAM_ID));
        open.sign(payer);
        await ledger.submit(open.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
        const give = new Transaction({ feePayer: aliceWallet.publicKey, blockhash, lastValidBlockHeight })
          .add(createTransferCheckedInstruction(new PublicKey(badgeAccount(mint, aliceWallet.publicKey.toBase58())), new PublicKey(mint), bobAccount, aliceWallet.publicKey, 1n, 0, [], TOKEN_2022_PROGRAM_ID));
        give.sign(aliceWallet);
        await assert.rejects(ledger.submit(give.serialize(), { lastValidBlockHeight, commitment: "confirmed" }), (e: unknown) => e instanceof LedgerError && e.code === "failed");
        assert.equal(await badgeBalance(ledger, mint, bobWallet.publicKey.toBase58()), 0n);

        // Expelled: the intent is recorded with the expulsion, and the delegate burns the badge without alice.
        await removeMember(deps, union.id, alice.id, OPERATOR, { reason: "scab", expel: true });
        await until(async () => (await aliceBadge())?.state === "burned", "alice's badge is burned");
        assert.equal(await badgeBalance(ledger, mint, aliceWallet.publicKey.toBase58()), 0n);
        const row = await db.selectFrom("badges").selectAll().where("member_id", "=", alice.id).executeTakeFirstOrThrow();
        assert.equal(row.state, "burned");
        assert.ok(row.signature && (await ledger.status(row.signature))?.err === null, "the burn's signature is on the ledger");
        assert.equal(await badgeBalance(ledger, mint, bobWallet.publicKey.toBase58()), 0n, "bob has no wallet linked, so no badge");
        assert.equal((await db.selectFrom("badge_mints").selectAll().execute()).length, 1, "one mint per union");
      } finally {
        abort.abort();
        await lane?.catch(() => {});
        await domainQueue.close();
        await ledgerQueue.close();
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });
  });
}

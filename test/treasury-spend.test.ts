import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { createMintToCheckedInstruction, getAssociatedTokenAddressSync } from "@solana/spl-token";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import type { Kysely } from "kysely";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys } from "./helpers/domain-context.ts";
import { recordedIntents, recordingOutbox } from "./helpers/membership-worker.ts";
import { startLedger } from "./helpers/solana.ts";
import { tokenBalance } from "./helpers/crowdfund.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { type Member, OPERATOR } from "../src/members/members.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import { castVote, closeProposal, createProposal, describeOutcome, getProposal, type Proposal, ProposalError, YES } from "../src/bylaws/proposals.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { listTransfers, type Treasury } from "../src/treasury/treasury.ts";
import { spendExecution } from "../src/treasury/spends.ts";
import { issueWalletChallenge, proveWallet } from "../src/treasury/wallet-proof.ts";
import { faucetFunding, treasuryKey } from "../solana/badge-sync.ts";
import { handleLedgerIntent } from "../solana/ledger-lane.ts";
import { addTransferSignature, createTreasuryJob, signTransferMessage, transferMessage, treasuryBalance } from "../solana/treasury-authority.ts";
import type { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import { makeUnion, startMuster } from "./helpers/muster.ts";
import { ensureTreasury } from "../solana/treasury-authority.ts";

const override = { kind: "operator", reason: "test setup" } as const;
const SOON = () => new Date(Date.now() + 60_000);

/** Mints test dues tokens into the treasury (the embedded test mint's authority is the server's key). */
async function fund(ledger: EmbeddedLedger, db: Kysely<DB>, t: Treasury, amount: bigint): Promise<void> {
  const server = await treasuryKey(db, t.unionId);
  const bh = await ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: server.publicKey, ...bh }).add(createMintToCheckedInstruction(new PublicKey(t.mint), new PublicKey(t.tokenAccount), server.publicKey, amount, t.decimals));
  tx.sign(server);
  await ledger.submit(tx.serialize(), { lastValidBlockHeight: bh.lastValidBlockHeight, commitment: "confirmed" });
}

for (const d of dialects) {
  describe(`passed spends paid by the treasury on ${d.name}`, { skip: d.skip }, () => {
    it("1-of-1: a passed spend is sent once, linked to its proposal; a non-address is refused when proposed or when paid; too large a spend records why and moves nothing", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      const running = await startLedger(db);
      try {
        const { ledger } = running;
        const events = createEventBus();
        const deps = { db, events, outbox: recordingOutbox };
        const chain = { db, ledger, outbox: recordingOutbox, fund: faucetFunding(ledger), origin: new URL("https://union.example") };
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", leaderHandle: LEADER.handle, joinPolicy: "open" });
        await changeBylaws(deps, union.id, override, { params: { quorumPercent: 0 } });
        const voter = (await requestToJoin(deps, union.id, person("m0"), followId())).member;
        await new Promise((r) => setTimeout(r, 5));
        const pass = passer(deps, union, voter);

        // Opened before the union had a treasury: free text is accepted then, and refused when it comes to paying.
        const vague = await createProposal(deps, union.id, OPERATOR, { kind: "spend", title: "Lawyers", amount: "10", recipient: "Lawyers Co-op", closesAt: SOON() });

        const treasury = (await createTreasuryJob(chain, union.id))!;
        await fund(ledger, db, treasury, 1_000_000n);
        await assert.rejects(createProposal(deps, union.id, OPERATOR, { kind: "spend", title: "x", amount: "5", recipient: "Lawyers Co-op" }),
          (e: unknown) => e instanceof ProposalError && e.code === "invalid" && /recipient must be a Solana address \(base58 public key\)/.test(e.message));
        await assert.rejects(createProposal(deps, union.id, OPERATOR, { kind: "spend", title: "x", amount: "5", recipient: Keypair.generate().publicKey.toBase58(), mint: "So11111111111111111111111111111111111111112" }),
          /the treasury holds .* it cannot send So111/);

        const payee = Keypair.generate().publicKey;
        const payeeAccount = getAssociatedTokenAddressSync(new PublicKey(treasury.mint), payee, true);
        const spend = await createProposal(deps, union.id, OPERATOR, { kind: "spend", title: "Legal fund", amount: "400000", recipient: payee.toBase58(), purpose: "Defend the strikers", closesAt: SOON() });
        assert.equal((spend.change as { mint: string }).mint, treasury.mint, "the treasury's mint is recorded when the bylaws name none");
        const before = (await recordedIntents(db)).length;
        const passed = await pass(spend);
        const intents = (await recordedIntents(db)).slice(before).filter((i) => i.kind === "treasury.spend");
        assert.deepEqual(intents, [{ kind: "treasury.spend", unionId: union.id, proposalId: spend.id }], "queued with the outcome");
        assert.equal(await closeProposal(deps, union.id, spend.id, { force: true }), undefined);
        assert.match((await describeOutcome(db, passed))!.at(-1)!, /^A spend of 400000 base units of \w+ to \w+ is approved; the treasury sends it\.$/);
        assert.equal((await spendExecution(db, union.id, spend.id))!.state, "queued");

        // The lane gets the message twice (a redelivery): paid once.
        await runLane(chain, db, before);
        await handleLedgerIntent(chain, { intent: intents[0]! });
        await runLane(chain, db, before);
        assert.equal(await tokenBalance(ledger, payeeAccount), 400_000n);
        assert.equal(await treasuryBalance(ledger, treasury), 600_000n);
        const done = (await spendExecution(db, union.id, spend.id))!;
        assert.equal(done.state, "executed");
        assert.deepEqual([done.transfer!.destination, done.transfer!.amount, done.transfer!.memo], [payee.toBase58(), 400_000n, `muster spend #${spend.number}: Defend the strikers`]);
        assert.equal((await listTransfers(db, union.id)).length, 1, "one transfer");
        assert.equal((await ledger.status(done.transfer!.signature!))?.err, null, "landed on the chain");
        assert.match((await describeOutcome(db, (await getProposal(db, union.id, spend.id))!))!.at(-1)!, new RegExp(`; treasury transfer #${done.transfer!.id} sent it \\(transaction ${done.transfer!.signature}\\)\\.$`));

        // Two workers at once on another spend: still paid once.
        const twice = await pass(await createProposal(deps, union.id, OPERATOR, { kind: "spend", title: "Food", amount: "100000", recipient: payee.toBase58(), closesAt: SOON() }));
        await Promise.all([0, 1].map(() => handleLedgerIntent(chain, { intent: { kind: "treasury.spend", unionId: union.id, proposalId: twice.id } })));
        await runLane(chain, db, before);
        assert.equal(await tokenBalance(ledger, payeeAccount), 500_000n);
        assert.equal((await listTransfers(db, union.id)).length, 2);
        const linked = await db.selectFrom("treasury_spends").select(["proposal_id", "transfer_id"]).where("union_id", "=", union.id).where("transfer_id", "is not", null).execute();
        assert.equal(linked.length, 2);

        // More than the treasury holds: refused with the reason; nothing moves; a retry changes nothing.
        const big = await pass(await createProposal(deps, union.id, OPERATOR, { kind: "spend", title: "Too much", amount: "5000000", recipient: payee.toBase58(), closesAt: SOON() }));
        for (let i = 0; i < 2; i++) await handleLedgerIntent(chain, { intent: { kind: "treasury.spend", unionId: union.id, proposalId: big.id } });
        const refused = (await spendExecution(db, union.id, big.id))!;
        assert.equal(refused.state, "refused");
        assert.match(refused.reason!, /^insufficient balance: the treasury holds 500000 base units, less than the 5000000 approved$/);
        assert.equal(refused.transfer, null);
        assert.equal(await treasuryBalance(ledger, treasury), 500_000n);
        assert.equal((await listTransfers(db, union.id)).length, 2);
        assert.match((await describeOutcome(db, (await getProposal(db, union.id, big.id))!))!.at(-1)!, /; the treasury did not send it: insufficient balance/);

        // The free-text recipient approved before the treasury existed.
        const vagueDone = await pass(vague);
        assert.match((await describeOutcome(db, vagueDone))!.at(-1)!, /to Lawyers Co-op is approved; the treasury cannot send it: the recipient is not a Solana address\.$/);
        await handleLedgerIntent(chain, { intent: { kind: "treasury.spend", unionId: union.id, proposalId: vague.id } });
        const vagueRefused = (await spendExecution(db, union.id, vague.id))!;
        assert.equal(vagueRefused.state, "refused");
        assert.match(vagueRefused.reason!, /the recipient "Lawyers Co-op" is not a Solana address/);
        assert.equal((await listTransfers(db, union.id)).length, 2);
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });

    it("2-of-3: the spend's transfer waits for an officer's co-signature, then is sent once", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      const running = await startLedger(db);
      try {
        const { ledger } = running;
        const events = createEventBus();
        const deps = { db, events, outbox: recordingOutbox };
        const chain = { db, ledger, outbox: recordingOutbox, fund: faucetFunding(ledger), origin: new URL("https://union.example") };
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        const officers = [Keypair.generate(), Keypair.generate()];
        let voter: Member | undefined;
        for (const [i, name] of ["ana", "ben"].entries()) {
          const j = await requestToJoin(deps, union.id, person(name), followId());
          voter ??= j.member;
          await setOfficer(deps, union.id, j.member.id, OPERATOR, "treasurer");
          const challenge = await issueWalletChallenge(db, union.id, j.member.id, { union: "https://union.example/u/riders", actorId: person(name).actorId });
          await proveWallet(deps, union.id, { wallet: officers[i]!.publicKey.toBase58(), message: challenge.message, signature: bs58.encode(await ed.signAsync(new TextEncoder().encode(challenge.message), officers[i]!.secretKey.slice(0, 32))) });
        }
        await changeBylaws(deps, union.id, override, { params: { treasuryThreshold: "2", quorumPercent: 0 } });
        const treasury = (await createTreasuryJob(chain, union.id))!;
        assert.equal(treasury.threshold, 2);
        await fund(ledger, db, treasury, 1_000n);
        await new Promise((r) => setTimeout(r, 5));

        const payee = Keypair.generate().publicKey;
        const payeeAccount = getAssociatedTokenAddressSync(new PublicKey(treasury.mint), payee, true);
        const before = (await recordedIntents(db)).length;
        const spend = await passer(deps, union, voter!)(await createProposal(deps, union.id, OPERATOR, { kind: "spend", title: "Legal fund", amount: "250", recipient: payee.toBase58(), closesAt: SOON() }));
        assert.match((await describeOutcome(db, spend))!.at(-1)!, /is approved; the treasury's transfer waits for 1 officer's signature before it is sent\.$/);
        await runLane(chain, db, before);
        const waiting = (await spendExecution(db, union.id, spend.id))!;
        assert.equal(waiting.state, "pending");
        assert.deepEqual(waiting.transfer!.signed, [waiting.transfer!.required[0]], "the server signed; the officer has not");
        assert.equal(await tokenBalance(ledger, payeeAccount), 0n, "nothing moves on the server's signature");
        assert.match((await describeOutcome(db, spend))!.at(-1)!, new RegExp(`; treasury transfer #${waiting.transfer!.id} waits for officers' signatures \\(1 of 2 signed\\)\\.$`));

        // The officer named signs (as `muster treasury sign` does); the lane sends it once.
        const signer = officers.find((o) => o.publicKey.toBase58() === waiting.transfer!.required[1])!;
        const signature = await signTransferMessage(await transferMessage(db, union.id, waiting.transfer!.id), signer);
        await addTransferSignature(deps, union.id, waiting.transfer!.id, signer.publicKey.toBase58(), signature);
        await runLane(chain, db, before);
        await runLane(chain, db, before);
        assert.equal(await tokenBalance(ledger, payeeAccount), 250n);
        assert.equal(await treasuryBalance(ledger, treasury), 750n);
        assert.equal((await spendExecution(db, union.id, spend.id))!.state, "executed");
        assert.equal((await listTransfers(db, union.id)).length, 1);
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });

    it("on a running server: the ledger lane pays the spend; the proposal page and the transparency page say so", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb);
      try {
        const db = m.muster.database.db;
        const ledger = m.muster.embeddedLedger!;
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        await changeBylaws(m.muster.membership, union.id, override, { params: { quorumPercent: 0 } });
        const voter = (await requestToJoin(m.muster.membership, union.id, person("m0"), followId())).member;
        const treasury = await ensureTreasury({ db, ledger, fund: faucetFunding(ledger), testMint: true }, union.id);
        await fund(ledger, db, treasury, 1_000n);
        await new Promise((r) => setTimeout(r, 5));
        const payee = Keypair.generate().publicKey;
        const spend = await passer(m.muster.membership, union, voter)(await createProposal(m.muster.membership, union.id, OPERATOR, { kind: "spend", title: "Legal fund", amount: "300", recipient: payee.toBase58(), closesAt: SOON() }));
        let done = await spendExecution(db, union.id, spend.id);
        for (let i = 0; i < 600 && done?.state !== "executed"; i++) {
          await new Promise((r) => setTimeout(r, 50));
          done = await spendExecution(db, union.id, spend.id);
        }
        assert.equal(done?.state, "executed", "the server's ledger lane sent it");
        assert.equal(await tokenBalance(ledger, getAssociatedTokenAddressSync(new PublicKey(treasury.mint), payee, true)), 300n);

        const page = await (await fetch(new URL(`/u/riders/proposals/${spend.number}`, m.origin))).text();
        assert.match(page, new RegExp(`data-testid="spend-execution">A spend of 300 base units .* is approved; treasury transfer #${done!.transfer!.id} sent it`));
        const j = await (await fetch(new URL("/u/riders/treasury.json", m.origin))).json() as {
          flows: { signature: string; direction: string; spendProposal: number | null }[]; spends: { proposal: number; state: string; amount: { baseUnits: string }; recipient: string }[];
        };
        assert.deepEqual(j.spends.map((s) => [s.proposal, s.state, s.amount.baseUnits, s.recipient]), [[spend.number, "executed", "300", payee.toBase58()]]);
        const flow = j.flows.find((f) => f.signature === done!.transfer!.signature);
        assert.deepEqual([flow?.direction, flow?.spendProposal], ["out", spend.number], "the outflow names its proposal");
        assert.match(await (await fetch(new URL("/u/riders/treasury", m.origin))).text(), new RegExp(`data-proposal="${spend.number}" data-state="executed"`));
      } finally {
        await m.stop();
        await tdb.destroy();
      }
    });
  });
}

/** Votes yes with `voter` and closes now: the proposal passes (quorum 0). */
function passer(deps: { db: Kysely<DB>; events: ReturnType<typeof createEventBus>; outbox: typeof recordingOutbox }, union: Union, voter: Member) {
  return async (p: Proposal): Promise<Proposal> => {
    assert.deepEqual(await castVote(deps, union.id, p.id, { memberId: voter.id }, [YES], { kind: "web" }), { counted: true });
    const closed = await closeProposal(deps, union.id, p.id, { force: true });
    assert.equal(closed?.state, "passed", closed?.outcome?.reason);
    return closed!;
  };
}

/** Hands every chain intent recorded since `from` to the ledger lane's handler, in order (as the lane would, again on redelivery). */
async function runLane(chain: Parameters<typeof handleLedgerIntent>[0], db: Kysely<DB>, from: number): Promise<void> {
  const chainKinds = new Set<OutboxIntent["kind"]>(["treasury.spend", "treasury.transfer"]);
  for (const intent of (await recordedIntents(db)).slice(from).filter((i) => chainKinds.has(i.kind))) await handleLedgerIntent(chain, { intent });
}

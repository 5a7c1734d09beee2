import "./quiet-bindings.ts";
import { Keypair, PublicKey, SystemProgram, Transaction, TransactionInstruction } from "@solana/web3.js";
import { MULTISIG_SIZE, createAssociatedTokenAccountIdempotentInstruction, createInitializeMultisigInstruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync } from "@solana/spl-token";
import type { Outbox } from "../src/outbox.ts";
import { TreasuryError } from "../src/treasury/dues.ts";
import { failMove, finishMove, listMoves, moveByTransfer, moveRefusal, moveSigning, openMove, planMove, type TreasuryMove } from "../src/treasury/moves.ts";
import { getTransfer, insertPendingTransfer, recordTransferSignature, wantedSigners } from "../src/treasury/treasury.ts";
import { MEMO_PROGRAM } from "./crowdfund-vault.ts";
import { LedgerError } from "./ledger.ts";
import { prepareCosigned, resendStored, signTransferMessage, submitTransfer, transferMessage, treasuryAuthority, treasuryBalance, type TreasuryChainDeps } from "./treasury-authority.ts";

/**
 * Moves the union's treasury to a new SPL multisig of the signers and
 * threshold the bylaws and officers now call for (an SPL multisig cannot be
 * changed once made). First the new multisig and its token account, from
 * bytes stored before they are sent; then one transaction moving the whole
 * balance, which the old multisig's threshold co-signs like any treasury
 * transfer (a durable nonce; the ledger lane sends it once every named
 * signer has signed). When it executes the union's treasury becomes the new
 * one, recorded with the move. Running it again resumes the open move.
 */
export async function moveTreasury(deps: TreasuryChainDeps & { outbox: Outbox }, unionId: string): Promise<TreasuryMove> {
  const open = await openMove(deps.db, unionId);
  if (open) return resumeMove(deps, open);
  const auth = await treasuryAuthority(deps, unionId);
  const server = auth.serverKey.publicKey.toBase58();
  const wanted = await wantedSigners(deps.db, unionId, server);
  const same = wanted.threshold === auth.threshold && wanted.signers.length === auth.treasury.signers.length && wanted.signers.every((s) => auth.treasury.signers.includes(s));
  if (same) throw new TreasuryError("invalid", `the treasury already has these signers and threshold (${auth.threshold} of ${auth.treasury.signers.length}): nothing to move`);
  const refusal = await moveRefusal(deps.db, unionId);
  if (refusal) throw new TreasuryError("invalid", `the treasury cannot move yet: ${refusal}`);
  await deps.fund?.(server);
  const multisig = Keypair.generate();
  const mint = new PublicKey(auth.treasury.mint);
  const tokenAccount = getAssociatedTokenAddressSync(mint, multisig.publicKey, true, auth.tokenProgram);
  const { blockhash, lastValidBlockHeight } = await deps.ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: auth.feePayer, blockhash, lastValidBlockHeight }).add(
    SystemProgram.createAccount({ fromPubkey: auth.feePayer, newAccountPubkey: multisig.publicKey, space: MULTISIG_SIZE, lamports: Number(await deps.ledger.minimumBalanceForRentExemption(MULTISIG_SIZE)), programId: auth.tokenProgram }),
    createInitializeMultisigInstruction(multisig.publicKey, wanted.signers.map((s) => new PublicKey(s)), wanted.threshold, auth.tokenProgram),
    createAssociatedTokenAccountIdempotentInstruction(auth.feePayer, tokenAccount, multisig.publicKey, mint, auth.tokenProgram),
  );
  // Making the new multisig moves nothing of the treasury: the server's key pays and signs with the new account's.
  auth.signAsServer(tx, [multisig]);
  const to = { authority: multisig.publicKey.toBase58(), tokenAccount: tokenAccount.toBase58(), threshold: wanted.threshold, signers: wanted.signers };
  // Another worker planned a move first: resume that one.
  await planMove(deps.db, auth.treasury, to, { raw: tx.serialize().toString("base64"), lastValidBlockHeight });
  return resumeMove(deps, (await openMove(deps.db, unionId))!);
}

async function resumeMove(deps: TreasuryChainDeps & { outbox: Outbox }, move: TreasuryMove): Promise<TreasuryMove> {
  const row = await deps.db.selectFrom("treasury_moves").select(["setup_raw", "setup_last_valid_block_height"]).where("id", "=", move.id).executeTakeFirstOrThrow();
  if (move.state === "setup") {
    if (!await resendStored(deps.ledger, row.setup_raw, Number(row.setup_last_valid_block_height))) {
      await failMove(deps.db, move.id);
      throw new LedgerError("failed", `the new multisig of treasury move #${move.id} was not created; run the move again`);
    }
    const auth = await treasuryAuthority(deps, move.unionId);
    const balance = await treasuryBalance(deps.ledger, auth.treasury);
    if (balance === 0n) return finishMove(deps.db, move.id, null, 0n);
    const mint = new PublicKey(auth.treasury.mint);
    const ixs = [
      createTransferCheckedInstruction(new PublicKey(move.from.tokenAccount), mint, new PublicKey(move.to.tokenAccount), auth.address, balance, auth.treasury.decimals, [...auth.multiSigners], auth.tokenProgram),
      new TransactionInstruction({ programId: MEMO_PROGRAM, keys: [], data: Buffer.from(`muster treasury move ${move.id}: to ${move.to.authority}, ${move.to.threshold} of ${move.to.signers.length}`) }),
    ];
    const required = auth.multiSigners.map((k) => k.toBase58());
    const prepared = await prepareCosigned(deps, auth, ixs, required);
    const id = await insertPendingTransfer(deps.db, move.unionId, {
      destination: move.to.tokenAccount, amount: balance, memo: `treasury move #${move.id} to a ${move.to.threshold}-of-${move.to.signers.length} multisig`, ...prepared, signatures: {},
    });
    await moveSigning(deps.db, move.id, id, balance);
    await recordTransferSignature(deps, move.unionId, id, required[0]!, prepared.serverSignature);
  } else if (move.state === "signing" && move.transferId !== null) {
    const t = (await getTransfer(deps.db, move.unionId, move.transferId))!;
    const auth = await treasuryAuthority(deps, move.unionId);
    const server = auth.serverKey.publicKey.toBase58();
    // A crash between preparing the move and the server's signature: sign now (Ed25519 signs the same message the same way).
    if (t.state === "pending" && !t.signed.includes(server)) {
      await recordTransferSignature(deps, move.unionId, t.id, server, await signTransferMessage(await transferMessage(deps.db, move.unionId, t.id), auth.serverKey));
    }
    if (t.state === "executed") return finishMove(deps.db, move.id, t.signature, t.amount);
  }
  return (await listMoves(deps.db, move.unionId)).find((m) => m.id === move.id)!;
}

/**
 * The ledger lane's `treasury.transfer` for a move: sends it, and once it
 * executed makes the new multisig the union's treasury. False when the
 * transfer is no move.
 */
export async function submitMove(deps: TreasuryChainDeps, transferId: number): Promise<boolean> {
  const move = await moveByTransfer(deps.db, transferId);
  if (!move) return false;
  const t = await submitTransfer(deps, move.unionId, transferId);
  if (t.state === "executed") await finishMove(deps.db, move.id, t.signature, t.amount);
  else if (t.state === "failed") await failMove(deps.db, move.id);
  return true;
}

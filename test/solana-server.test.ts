import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Connection, Keypair, LAMPORTS_PER_SOL } from "@solana/web3.js";
import { createAssociatedTokenAccountIdempotent, createMint, getAccount, mintTo } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { startMuster } from "./helpers/muster.ts";

for (const d of dialects) {
  describe(`muster serve's Solana RPC endpoint on ${d.name}`, { skip: d.skip }, () => {
    it("serves /solana/rpc to web3.js (HTTP and confirmations)", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb, { worker: false });
      let connection: Connection | undefined;
      const stopSocket = () => {
        const socket = (connection as unknown as { _rpcWebSocket: { setAutoReconnect(on: boolean): void; close(): void } })._rpcWebSocket;
        socket.setAutoReconnect(false);
        socket.close();
      };
      try {
        const url = new URL("/solana/rpc", m.origin).href;
        connection = new Connection(url, { commitment: "confirmed", wsEndpoint: url.replace(/^http/, "ws") });
        assert.equal(m.muster.ledger?.kind, "embedded");
        const payer = Keypair.generate();
        await connection.requestAirdrop(payer.publicKey, 2 * LAMPORTS_PER_SOL);
        // createMint and mintTo confirm through signatureSubscribe.
        const mint = await createMint(connection, payer, payer.publicKey, null, 2);
        const account = await createAssociatedTokenAccountIdempotent(connection, payer, mint, payer.publicKey);
        await mintTo(connection, payer, mint, account, payer, 12_345n);
        // (Restart across processes is covered at ledger level in solana-embedded-ledger.test.ts.)
        assert.equal((await getAccount(connection, account)).amount, 12_345n);
        assert.equal(await connection.getBalance(payer.publicKey) > LAMPORTS_PER_SOL, true);
      } finally {
        if (connection) stopSocket();
        await m.stop();
        await tdb.destroy();
      }
    });
  });
}

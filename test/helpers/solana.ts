import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import type { Kysely } from "kysely";
import { Connection } from "@solana/web3.js";
import type { DB } from "../../src/db/schema.ts";
import { EmbeddedLedger, type EmbeddedLedgerOptions } from "../../solana/embedded-ledger.ts";
import { solanaRpcApp } from "../../solana/rpc.ts";
import { attachSolanaWebSocket } from "../../solana/rpc-websocket.ts";
import type { Server } from "node:http";

export interface RunningLedger {
  readonly ledger: EmbeddedLedger;
  /** The ledger's JSON-RPC endpoint on loopback. */
  readonly url: string;
  readonly connection: Connection;
  close(): Promise<void>;
}

/** An embedded ledger on a database, served over real HTTP on a free loopback port. */
export async function startLedger(db: Kysely<DB>, options: EmbeddedLedgerOptions = {}): Promise<RunningLedger> {
  const ledger = await EmbeddedLedger.open(db, options);
  const app = new Hono().route("/solana/rpc", solanaRpcApp(ledger));
  const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" });
  await new Promise<void>((resolve) => server.once("listening", () => resolve()));
  const detach = attachSolanaWebSocket(server as Server, "/solana/rpc", ledger);
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}/solana/rpc`;
  const connection = new Connection(url, { commitment: "confirmed", wsEndpoint: url.replace(/^http/, "ws"), disableRetryOnRateLimit: true });
  return {
    ledger,
    url,
    connection,
    close: () => {
      // web3.js reconnects its subscription socket forever and offers no
      // close(); its client (rpc-websockets) can be told to stop.
      const socket = (connection as unknown as { _rpcWebSocket: { setAutoReconnect(on: boolean): void; close(): void } })._rpcWebSocket;
      socket.setAutoReconnect(false);
      socket.close();
      detach();
      (server as Server).closeAllConnections();
      return new Promise<void>((resolve, reject) => server.close((e) => (e ? reject(e) : resolve())));
    },
  };
}

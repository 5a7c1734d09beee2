import type { IncomingMessage, Server } from "node:http";
import type { Socket } from "node:net";
import WebSocket from "ws";
import type { EmbeddedLedger } from "./embedded-ledger.ts";

/**
 * The one subscription clients need from the embedded ledger:
 * signatureSubscribe, which @solana/web3.js confirmTransaction (and so
 * sendAndConfirmTransaction and every spl-token helper) waits on before it
 * ever polls. Served on the RPC endpoint's own path.
 */
export function attachSolanaWebSocket(server: Server, path: string, ledger: EmbeddedLedger): () => void {
  const wss = new WebSocket.Server({ noServer: true, maxPayload: 64 * 1024 });
  const onUpgrade = (request: IncomingMessage, socket: Socket, head: Buffer) => {
    if (new URL(request.url ?? "/", "http://x").pathname !== path) return;
    wss.handleUpgrade(request, socket, head, (ws) => serveSocket(ws, ledger));
  };
  server.on("upgrade", onUpgrade);
  return () => {
    server.off("upgrade", onUpgrade);
    for (const client of wss.clients) client.terminate();
    wss.close();
  };
}

function serveSocket(ws: WebSocket, ledger: EmbeddedLedger): void {
  let nextId = 1;
  const waiting = new Map<number, string>();
  const notify = (subscription: number, slot: number, err: unknown) => {
    waiting.delete(subscription);
    ws.send(JSON.stringify({ jsonrpc: "2.0", method: "signatureNotification", params: { subscription, result: { context: { slot }, value: { err } } } }));
  };
  const unsubscribe = ledger.onProcessed((signature, slot, err) => {
    for (const [id, s] of waiting) if (s === signature) notify(id, slot, err);
  });
  ws.on("close", unsubscribe);
  ws.on("message", async (data) => {
    let msg: { id?: unknown; method?: unknown; params?: unknown };
    try {
      msg = JSON.parse(String(data));
    } catch {
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } }));
      return;
    }
    // Pings are notifications (no id): nothing to answer.
    if (msg.id === undefined || msg.id === null) return;
    const reply = (body: object) => ws.send(JSON.stringify({ jsonrpc: "2.0", id: msg.id, ...body }));
    const params = Array.isArray(msg.params) ? msg.params : [];
    if (msg.method === "signatureSubscribe" && typeof params[0] === "string") {
      const id = nextId++;
      waiting.set(id, params[0]);
      reply({ result: id });
      const status = await ledger.status(params[0]);
      if (status && waiting.has(id)) notify(id, status.slot, status.err);
    } else if (msg.method === "signatureUnsubscribe" || msg.method === "slotUnsubscribe" || msg.method === "accountUnsubscribe") {
      waiting.delete(Number(params[0]));
      reply({ result: true });
    } else {
      reply({ error: { code: -32601, message: "Method not found" } });
    }
  });
}

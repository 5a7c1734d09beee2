import { Agent, setGlobalDispatcher } from "undici";

/**
 * Fedify sends deliveries and fetches documents with the global fetch and
 * offers no timeout of its own for deliveries, so a server that accepts the
 * connection and never answers would hold a queue handler until the queue's
 * handler timeout, and then keep the socket. Node's fetch is undici: its
 * global dispatcher is where timeouts for every outgoing request belong.
 * Process-wide by nature; the last Muster created in a process sets it.
 */
export function limitOutgoingHttp(timeoutMs: number): void {
  setGlobalDispatcher(new Agent({
    connect: { timeout: Math.min(timeoutMs, 10_000) },
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
  }));
}

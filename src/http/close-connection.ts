import { IncomingMessage, type ServerResponse } from "node:http";
import type { Context } from "hono";

/** What @hono/node-server passes a request as its env. */
interface NodeBindings {
  readonly incoming?: IncomingMessage;
  readonly outgoing?: ServerResponse;
}

export function nodeRequestOf(c: Context): IncomingMessage | undefined {
  const incoming = (c.env as NodeBindings | undefined)?.incoming;
  return incoming instanceof IncomingMessage ? incoming : undefined;
}

/**
 * For a request refused before its body was read: the connection is closed
 * once the answer is flushed, and the unread rest of the body is never read.
 * Left alone, Node's server and @hono/node-server would read and discard it
 * (up to 64 MiB) to keep the connection, which is most of what a hostile
 * 1 MB POST costs. A client still sending may see a reset instead of the
 * answer on a slow network; on a refused request that is an acceptable loss.
 */
export function closeAfterResponse(c: Context): void {
  c.header("Connection", "close");
  const incoming = nodeRequestOf(c);
  const outgoing = (c.env as NodeBindings | undefined)?.outgoing;
  if (!incoming || !outgoing || incoming.complete) return;
  const socket = incoming.socket;
  const close = () => {
    incoming.destroy();
    socket.destroy();
  };
  // Node's own "finish" handler runs first and only schedules a read of the rest; this stops it.
  outgoing.once("finish", close);
  outgoing.once("close", close);
}

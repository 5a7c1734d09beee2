import { serve, type ServerType } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { logger } from "./logging.ts";
import type { Muster } from "./main.ts";
import { attachSolanaWebSocket } from "../solana/rpc-websocket.ts";
import { createServer, type RequestListener, type Server, type ServerOptions } from "node:http";
import { fastReads } from "./http/fast-reads.ts";
import { inboxPosts } from "./http/inbox-fast.ts";

const log = logger("server");

export interface RunningServer {
  readonly port: number;
  readonly url: URL;
  /** Stop accepting, finish in-flight requests, drain queue work, close the database. */
  stop(): Promise<void>;
}

export interface ServeOptions {
  readonly port: number;
  readonly hostname?: string;
  /** Consume the queue in this process (embedded mode); false with separate workers. */
  readonly worker: boolean;
}

export async function startServer(muster: Muster, options: ServeOptions): Promise<RunningServer> {
  const server: ServerType = await new Promise((resolve, reject) => {
    // Cached actor, WebFinger and NodeInfo hits are answered before Hono (http/fast-reads.ts).
    const fast = fastReads(muster.readCache, muster.app.fetch);
    // Members' responses the inbox's fast path counts are answered before the app too (http/inbox-fast.ts).
    const inbox = muster.fastInbox ? inboxPosts({ db: muster.database.db, maxBodyBytes: muster.config.maxBodyBytes, origin: muster.config.origin, fast: muster.fastInbox }) : (l: RequestListener) => l;
    const s = serve({ fetch: fast.fetch, port: options.port, hostname: options.hostname, createServer: ((opts: ServerOptions, listener: RequestListener) => createServer(opts, fast.listener(inbox(listener)))) as typeof createServer }, () => resolve(s));
    s.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  // web3.js confirms transactions through signatureSubscribe on the RPC path.
  const detachLedgerSocket = muster.embeddedLedger ? attachSolanaWebSocket(server as Server, "/solana/rpc", muster.embeddedLedger) : () => {};
  const queueStop = new AbortController();
  const queueDone = options.worker ? muster.runQueue(queueStop.signal) : Promise.resolve();
  queueDone.catch((error) => log.error("Queue stopped with an error: {error}", { error }));
  let stopping: Promise<void> | undefined;
  const stop = () => stopping ??= (async () => {
    detachLedgerSocket();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Idle keep-alive sockets would hold close() open forever.
      (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
    });
    queueStop.abort();
    await queueDone.catch(() => {});
    await muster.close();
  })();
  return { port, url: new URL(`http://127.0.0.1:${port}`), stop };
}

/** Runs until SIGTERM or SIGINT, then shuts down gracefully; a second signal forces exit. */
export function stopOnSignals(stop: () => Promise<void>, what: string): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      log.warn("Second {signal}: exiting without draining", { signal });
      process.exit(1);
    }
    signalled = true;
    log.info("{signal} received: stopping {what} (draining in-flight work)", { signal, what });
    stop().then(
      () => {
        log.info("Stopped cleanly");
        process.exit(0);
      },
      (error) => {
        log.error("Shutdown failed: {error}", { error });
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

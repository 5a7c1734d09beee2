import "./temporal.ts";
import type { Federation } from "@fedify/fedify";
import type { Hono } from "hono";
import { createFastInbox, type FastInbox } from "../federation/inbox-fast-path.ts";
import { createFastFollow } from "../federation/follow-fast-path.ts";
import { createSignerFetch } from "../federation/signer-fetch.ts";
import { createMusterFederation, INSTANCE_ACTOR } from "../federation/federation.ts";
import { ensureInstanceKeys, generateActorKeys, versionDroppingHeldKeys } from "../federation/keys.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { exportJwk } from "@fedify/fedify";
import type { KyselyMessageQueueOptions } from "../federation/kysely-message-queue.ts";
import { createQueueLanes, type QueueLanes, queueConnections } from "../federation/queue-lanes.ts";
import { type FanoutDeps, handleFanoutPage, waitForRoom } from "../federation/fanout-pages.ts";
import type { Dispatcher } from "undici";
import { BatchDeliverer } from "../federation/batch-delivery.ts";
import { DeliveryThreads, deliveryThreadCount } from "../federation/delivery-threads.ts";
import { createDeliveryDispatcher, limitOutgoingHttp, withOutgoingPolicy } from "../federation/http-client.ts";
import { type Config, ConfigError } from "./config.ts";
import { checkConnection, type Database, openDatabase, warnIfOverConnectionBudget } from "./db/database.ts";
import { migrateToLatest } from "./db/migrate.ts";
import { createEventBus, type EventBus } from "./events.ts";
import { createHttpApp } from "./http/app.ts";
import { ReadCache } from "./http/read-cache.ts";
import { documentsVersion } from "./db/document-versions.ts";
import type { UnionDeps } from "./unions/unions.ts";
import type { MembershipDeps } from "./members/members.ts";
import { handleIntent, memberGate, queueOutbox } from "../federation/outbound.ts";
import { remoteFollowUrl } from "../federation/remote-follow.ts";
import { PRUNE_INTERVAL_MS, pruneStorage } from "../federation/pruning.ts";
import { shareRecentActorDocuments } from "../federation/recent-actors.ts";
import { runScheduler } from "./actions/scheduler.ts";
import { every } from "./sleep.ts";
import { closeDue, type ProposalDeps } from "./bylaws/proposals.ts";
import { syncAllFeatured } from "./relationships/featured.ts";
import { logger } from "./logging.ts";
import { queueReportUp } from "./relationships/chapters.ts";
import { mountMemberCollections } from "../federation/member-collections.ts";
import { mountRelationshipCollections, proposeTo } from "../federation/relationships.ts";
import type { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import type { Ledger } from "../solana/ledger.ts";
import { NetworkLedger } from "../solana/network-ledger.ts";
import { formatUnits } from "../solana/amounts.ts";
import { mountCrowdfundsWeb } from "./http/crowdfunds-web.ts";
import { loadSecretKey, secretKeyFile } from "./secrets/secret-box.ts";
import { sealSecret, secureStoredKeys } from "./secrets/stored-keys.ts";

/** Everything one Muster process is made of, wired once, here and nowhere else. */
export interface Muster {
  readonly config: Config;
  readonly database: Database;
  readonly events: EventBus;
  /** The queue's lanes (federation/queue-lanes.ts). */
  readonly lanes: QueueLanes;
  readonly federation: Federation<void>;
  readonly app: Hono;
  /** The actor, WebFinger and NodeInfo documents as Fedify last served them (src/http/read-cache.ts). */
  readonly readCache: ReadCache;
  /** The inbox's fast path, which the server also runs before the app (src/http/inbox-fast.ts); absent when turned off. */
  readonly fastInbox?: FastInbox;
  readonly unions: UnionDeps;
  readonly membership: MembershipDeps & ProposalDeps;
  /**
   * The chain: the network ledger when SOLANA_RPC_URL is set, else the
   * embedded ledger in the process that runs it (`runLedger`), else null.
   */
  readonly ledger: Ledger | null;
  /** Set with the embedded ledger, for the server to attach its WebSocket subscriptions. */
  readonly embeddedLedger: EmbeddedLedger | null;
  /**
   * Runs the durable queue (inbox, outbox, fan-out) until the signal aborts;
   * resolves once in-flight messages have finished, which is the drain that
   * graceful shutdown waits for.
   */
  runQueue(signal: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

export interface MusterOptions {
  /** Skip migrations (a worker started beside a server that already ran them). */
  readonly migrate?: boolean;
  /** Queue tuning; tests use short polls. */
  readonly queue?: Omit<KyselyMessageQueueOptions, "name" | "concurrency" | "resolveKey" | "batch">;
  /** How often workers look for calls-to-action due today and deadlines passed. */
  readonly schedulerIntervalMs?: number;
  /**
   * Run the embedded ledger here and serve it at /solana/rpc (`muster serve`).
   * One process only: a worker or a CLI command beside it must not.
   */
  readonly runLedger?: boolean;
  /** Warn at start-up when the secret key is a file in DATA_DIR (serve and worker). */
  readonly announceSecretKey?: boolean;
  /** Off only for the joins benchmark's before/after comparison: fetch the follower's actor again after verifying its key. */
  readonly reuseFetchedActors?: boolean;
  /** Off only for the inbox benchmark's before/after comparison and tests of Fedify's own path: every inbox POST through Fedify and the queue. */
  readonly fastInbox?: boolean;
  /** Off only for the joins benchmark's before/after comparison and tests of Fedify's own path: every Follow through Fedify and the queue. */
  readonly fastFollow?: boolean;
  /** False: the follow's fast path reads every follower's actor through Fedify's vocabulary, not as plain JSON (benchmark comparison). */
  readonly plainFollowActors?: boolean;
  /**
   * Whether this process will handle queue work (`runQueue`): `serve` and
   * `worker` do; `serve --no-worker` and one-shot CLI commands only enqueue,
   * so their pool is not sized (or held) to the queue's handlers. Default true.
   */
  readonly runsQueue?: boolean;
}

/**
 * Fewest connections a process that runs no queue handlers may have: a
 * request's (or command's) transaction and one query beside it.
 */
export const MIN_POOL_WITHOUT_QUEUE = 2;
/** Connections for a process's own requests, beyond its queue handlers. */
const WEB_CONNECTIONS = 8;

/**
 * The PostgreSQL pool for a process, from MUSTER_DB_POOL or sized to what
 * the process runs, or a ConfigError naming the minimum when it is set below
 * what the process needs: one connection per queue handler and the shared
 * LISTEN where the queue runs, else MIN_POOL_WITHOUT_QUEUE.
 */
export function poolSizeFor(config: Pick<Config, "dbPool" | "queueConcurrency">, runsQueue: boolean): number {
  if (!runsQueue) {
    if (config.dbPool !== undefined && config.dbPool < MIN_POOL_WITHOUT_QUEUE) {
      throw new ConfigError(`MUSTER_DB_POOL is ${config.dbPool}, below the ${MIN_POOL_WITHOUT_QUEUE} connections any process needs (a transaction and one query beside it)`);
    }
    return config.dbPool ?? WEB_CONNECTIONS + MIN_POOL_WITHOUT_QUEUE;
  }
  // Never fewer connections than the queue's handlers and LISTENs, plus
  // some for the web's requests: a handler waiting for a connection holds
  // its message's lease doing nothing.
  const needed = queueConnections(config.queueConcurrency);
  if (config.dbPool !== undefined && config.dbPool < needed) {
    throw new ConfigError(`MUSTER_DB_POOL is ${config.dbPool}, below the ${needed} connections the queue needs at MUSTER_QUEUE_CONCURRENCY=${config.queueConcurrency} (one per handler and one shared LISTEN)`);
  }
  return config.dbPool ?? needed + WEB_CONNECTIONS;
}

export async function createMuster(config: Config, options: MusterOptions = {}): Promise<Muster> {
  const runsQueue = options.runsQueue !== false;
  // A process that runs the queue checkpoints SQLite's WAL on a thread of its own (MUSTER_SQLITE_CHECKPOINT_THREAD=0: in its commits, as before).
  const database = openDatabase(config.databaseUrl, { poolSize: poolSizeFor(config, runsQueue), checkpointThread: runsQueue && config.sqliteCheckpointThread !== false, sync: config.dbSync });
  // The batch sender signs and POSTs on worker threads where there is a core
  // to spare for them (MUSTER_DELIVERY_THREADS; 0 keeps it on this thread).
  // Started now, loading on the other core while this one opens and migrates
  // the database, and waited for before this returns: not with the first
  // joins' Accepts (delivery-threads.ts, start()).
  const threadCount = runsQueue ? deliveryThreadCount(config.deliveryThreads) : 0;
  const deliveryThreads = threadCount > 0 ? new DeliveryThreads({ threads: threadCount, timeoutMs: config.httpTimeoutMs }) : undefined;
  const threadsReady = deliveryThreads?.start();
  try {
    await checkConnection(database, config.databaseUrl);
    // serve and worker only: a pool the server cannot honour fails queries under load.
    if (options.announceSecretKey) await warnIfOverConnectionBudget(database);
    if (options.migrate !== false) await migrateToLatest(database.db);
    const secrets = loadSecretKey({ MUSTER_SECRET_KEY: config.secretKey ?? undefined }, secretKeyFile(config));
    // Said when the file is made and by every long-running process; one-shot CLI commands stay quiet.
    if (secrets.file && (secrets.generated || options.announceSecretKey)) {
      logger("secrets").warn("MUSTER_SECRET_KEY is not set: the server's private keys are sealed with {file}; back it up with the database, or set MUSTER_SECRET_KEY", { file: secrets.file });
    }
    const { sealed } = await secureStoredKeys(database.db, secrets);
    if (sealed) logger("secrets").info("Sealed {sealed} private keys that were stored in plaintext", { sealed });
    await ensureInstanceKeys(database.db);
  } catch (e) {
    await deliveryThreads?.close();
    await database.close();
    throw e;
  }
  limitOutgoingHttp(config.httpTimeoutMs);
  let deliveryDispatcher: Dispatcher | undefined;
  const events = createEventBus();
  // Assigned below; deliveries name their signing key, looked up here when handled.
  let signer: Federation<void> | undefined;
  const lanes = createQueueLanes(database, {
    concurrency: config.queueConcurrency,
    // MUSTER_BATCH_DELIVERY=0 leaves every delivery to Fedify's handler (to compare the two).
    ...(config.batchDelivery === false ? {} : {
      // Given the lanes' PartsSent: this Muster's, so another Muster in this process (tests) keeps its own, as another process does.
      batch: (partsSent) => new BatchDeliverer({ db: database.db, timeoutMs: config.httpTimeoutMs, dispatcher: () => (deliveryDispatcher ??= createDeliveryDispatcher(config.httpTimeoutMs)), threads: deliveryThreads, partsSent }),
    }),
    ...options.queue,
    resolveKey: async (keyId) => {
      if (!signer) return undefined;
      const ctx = signer.createContext(config.origin, undefined);
      const parsed = ctx.parseUri(new URL(keyId));
      if (parsed?.type !== "actor") return undefined;
      const pair = (await ctx.getActorKeyPairs(parsed.identifier)).find((p) => p.keyId.href === keyId);
      return pair ? await exportJwk(pair.privateKey) : undefined;
    },
  });
  // Domain intents (answer this Follow, welcome that member) wait in their
  // own lane, written in the same transaction as the change that caused them.
  // Chain work (badges, treasury transfers) has its own lane: a slow RPC never delays an Accept.
  const outbox = queueOutbox(lanes.lanes.domain, lanes.lanes.ledger, { queue: lanes.lanes.outbox, origin: config.origin });
  // tallyBatchMs rides along for castVote (bylaws/proposals.ts), which the web and the inbox both call.
  const membership: MembershipDeps & ProposalDeps = { db: database.db, events, outbox, tallyBatchMs: config.tallyBatchMs };
  reportChapterTotals(membership);
  // Fedify always gets an inbox queue here (lanes.fedify.inbox), so its receive-side idempotence key is never written (kysely-kv-store.ts).
  const kv = new KyselyKvStore(database.db, { inboxQueued: true });
  const federation = await createMusterFederation({
    db: database.db,
    events,
    outbox,
    tallyBatchMs: config.tallyBatchMs,
    kv,
    queue: lanes.fedify,
    origin: config.origin,
    allowPrivateAddress: config.allowPrivateAddress,
    // Always started explicitly, so `muster serve --no-worker`, `muster worker`
    // and tests each decide who consumes the queue, and shutdown can drain it.
    manuallyStartQueue: true,
  });
  signer = federation;
  // A join's second fetch of the follower's actor is answered from the first (federation/recent-actors.ts).
  if (options.reuseFetchedActors !== false) shareRecentActorDocuments(federation, kv);
  // Actor keys are sealed before the union's transaction writes them.
  const generateKeys = async () => (await generateActorKeys()).map((k) => ({ ...k, privateJwk: sealSecret(database.db, k.privateJwk) }));
  const unions: UnionDeps = { db: database.db, events, generateKeys, outbox };
  // A key replaced outside this process shows in the next document at once, not after the key hold.
  const readCache = new ReadCache({ version: versionDroppingHeldKeys(database.db, () => documentsVersion(database.db)) });
  // One fetcher of signers for both fast paths: a follower, and a member whose key is not cached or whose cached actor is stale.
  const signers = createSignerFetch({ db: database.db, origin: config.origin, federation, instanceActor: INSTANCE_ACTOR, allowPrivateAddress: config.allowPrivateAddress, plainActors: options.plainFollowActors });
  const fastResponses = options.fastInbox === false ? undefined : createFastInbox({ db: database.db, events, outbox, kv, origin: config.origin, tallyBatchMs: config.tallyBatchMs, signers });
  const fastFollow = options.fastFollow === false ? undefined : createFastFollow({ db: database.db, events, outbox, kv, origin: config.origin, signers });
  // One fast path for the inbox, members' responses then Follows: the node-level
  // inbox (server.ts) offers it once and marks the request, so the app's route
  // does not offer it again; a Follow offered separately there would never be.
  const fastInbox: FastInbox | undefined = fastResponses === undefined && fastFollow === undefined ? undefined
    : async (request, body, doc, recipient) => {
      const counted = fastResponses === undefined ? undefined : await fastResponses(request, body, doc, recipient);
      if (counted !== undefined || fastFollow === undefined) return counted;
      const joined = await fastFollow(request, body, doc, recipient);
      return joined === undefined ? undefined : joined === "repeat" ? "repeat" : "counted";
    };
  const app = createHttpApp({
    db: database.db,
    readCache,
    federation,
    fastInbox,
    origin: config.origin,
    maxBodyBytes: config.maxBodyBytes,
    trustProxy: config.trustProxy,
    unions,
    membership,
    remoteFollowUrl: (handle, target) => remoteFollowUrl(federation, config.origin, handle, target),
    proposeAlliance: (union, by, target, relay, proposalId) =>
      proposeTo({ ...membership, federation, origin: config.origin }, union, by, target, "ally", relay, proposalId ? { proposalId } : {}),
  });
  const fanout: FanoutDeps = {
    db: database.db,
    federation,
    origin: config.origin,
    enqueue: (page, opts) => lanes.fedify.fanout.enqueue(page, opts),
    enqueueDelivery: (message, opts) => lanes.lanes.delivery.enqueue(message, opts),
    // PostgreSQL: a page queues its deliveries once the backlog is under ROOM_ROWS (fanout-pages.ts, waitForRoom).
    ...(database.dialect === "postgres" ? { room: () => waitForRoom((n) => lanes.lanes.delivery.readyBacklog(n), { settled: () => lanes.lanes.delivery.settledHere }) } : {}),
  };
  lanes.fedify.fanout.handle("muster.fanout", (page) => handleFanoutPage(fanout, page));
  // A join's Accept and welcome go only to a member still active when they are sent (federation/outbound.ts).
  lanes.fedify.outbox.gate(memberGate(database.db));
  mountMemberCollections(app, { db: database.db, federation, origin: config.origin });
  mountRelationshipCollections(app, { db: database.db, origin: config.origin });
  // Only one process may run the embedded ledger's transactions: the one
  // serving /solana/rpc. Workers do not submit chain work yet.
  // Imported only here: spl-token prints a warning on import (bigint-buffer's
  // missing native binding) that every CLI command would otherwise show.
  let embeddedLedger: EmbeddedLedger | null = null;
  if (config.solanaRpcUrl === null && options.runLedger) {
    const [{ EmbeddedLedger }, { solanaRpcApp }] = await Promise.all([import("../solana/embedded-ledger.ts"), import("../solana/rpc.ts")]);
    embeddedLedger = await EmbeddedLedger.open(database.db);
    app.route("/solana/rpc", solanaRpcApp(embeddedLedger, { maxBodyBytes: config.maxBodyBytes }));
  }
  const ledger: Ledger | null = config.solanaRpcUrl !== null ? new NetworkLedger(config.solanaRpcUrl) : embeddedLedger;
  mountCrowdfundsWeb(app, {
    db: database.db,
    formatUnits,
    vaultBalance: ledger ? async (vault) => (await import("../solana/crowdfund-vault.ts")).vaultBalance(ledger, vault) : undefined,
  });
  // Dues by Solana Pay / Actions and the transparency page read the chain:
  // served where there is a ledger, loaded only there (spl-token's import warning).
  if (ledger) {
    const { mountTreasuryWeb } = await import("./http/treasury-web.ts");
    mountTreasuryWeb(app, { db: database.db, ledger, origin: config.origin, rpcUrl: config.solanaRpcUrl, outbox });
  }
  // Whatever a request or the queue starts connects under this server's
  // private-address rule (federation/http-client.ts).
  const policy = { allowPrivateAddress: config.allowPrivateAddress };
  const fetchApp = app.fetch;
  app.fetch = (request, ...rest) => withOutgoingPolicy(policy, () => fetchApp(request, ...rest));
  const log = logger("queue");
  // Loaded only where chain work runs: spl-token prints a warning on import that CLI commands must not show.
  const runLedgerLane = async (ledger: Ledger, signal: AbortSignal) => {
    const { faucetFunding, handleLedgerIntent } = await import("../solana/badge-sync.ts");
    const deps = { db: database.db, ledger, origin: config.origin, outbox, fund: embeddedLedger ? faucetFunding(embeddedLedger) : undefined };
    const { crowdfundAnnouncer, runCrowdfunds } = await import("../solana/crowdfund-jobs.ts");
    await Promise.all([
      lanes.lanes.ledger.listen((message) => handleLedgerIntent(deps, message), { signal }),
      // Crowdfund vaults: opened, pledges recorded, settled at the deadline (solana/crowdfund-jobs.ts).
      runCrowdfunds({ ...deps, announce: crowdfundAnnouncer(membership, config.origin) }, signal, options.schedulerIntervalMs),
    ]);
  };
  const runTreasuryJobs = async (ledger: Ledger, signal: AbortSignal) => {
    const { runTreasurySchedule } = await import("../solana/treasury-jobs.ts");
    await runTreasurySchedule({ db: database.db, events, ledger, origin: config.origin, rpcUrl: config.solanaRpcUrl, fund: embeddedLedger ? (await import("../solana/badge-sync.ts")).faucetFunding(embeddedLedger) : undefined }, signal, options.schedulerIntervalMs ?? 30_000);
  };
  const runQueue = async (signal: AbortSignal) => {
    const outbound = { ...fanout, db: database.db, federation, origin: config.origin, enqueueDirect: (message: unknown, opts: { orderingKey: string }) => lanes.lanes.outbox.enqueue(message, opts) };
    await Promise.all([
      federation.startQueue(undefined, { signal }),
      lanes.lanes.domain.listen((message) => handleIntent(outbound, message), { signal }),
      // Only a process with a ledger takes chain work; the others leave it queued.
      ledger ? runLedgerLane(ledger, signal) : undefined,
      // The dues scan (payments, standing) and the daily feed anchor, each once across workers (a lease).
      ledger ? runTreasuryJobs(ledger, signal) : undefined,
      runScheduler(membership, signal, options.schedulerIntervalMs),
      // Old inbox ids, claims, sessions and queue keys; each failure is logged (federation/pruning.ts).
      every(PRUNE_INTERVAL_MS, signal, () => pruneStorage({ db: database.db, pruneQueue: (now) => lanes.lanes.delivery.pruneDone(now) }), (error) => log.error("Pruning failed: {error}", { error })),
      // Proposals whose end time passed are closed by whichever worker gets
      // there first; closing is idempotent and happens once (proposals.ts).
      every(options.schedulerIntervalMs ?? 5_000, signal, async () => {
        for (const p of await closeDue(membership)) log.info("Closed proposal {id} (#{number}): {state}", { id: p.id, number: p.number, state: p.state });
      }, (error) => log.error("Closing due proposals failed: {error}", { error })),
      // New allies and officers are asked for their consent to be listed (FEP-7aa9); former ones leave the lists.
      every(options.schedulerIntervalMs ?? 30_000, signal, () => syncAllFeatured(membership), (error) => log.error("Updating the featured collections failed: {error}", { error })),
    ]);
  };
  // Up before anything can be delivered (see above); a thread that failed to load is replaced at the first delivery.
  await threadsReady;
  let closed = false;
  return {
    config,
    database,
    events,
    lanes,
    federation,
    app,
    readCache,
    fastInbox,
    unions,
    membership,
    ledger,
    embeddedLedger,
    runQueue(signal) {
      // Its pool was not sized for the handlers: they would queue for connections while holding leases.
      if (!runsQueue) return Promise.reject(new Error("this process was opened without queue handlers (runsQueue: false)"));
      return withOutgoingPolicy(policy, () => runQueue(signal));
    },
    async close() {
      if (closed) return;
      closed = true;
      events.all.clear();
      await lanes.close();
      await deliveryThreads?.close();
      await deliveryDispatcher?.close();
      await database.close();
    },
  };
}

/**
 * A chapter's totals go up to its parent when they change: members joining
 * or leaving, responses, the chapter becoming one. Changes within a second
 * are one report (totals, so a lost one is made good by the next).
 */
function reportChapterTotals(deps: MembershipDeps): void {
  const pending = new Map<string, NodeJS.Timeout>();
  const log = logger("relationships");
  const soon = (unionId: string) => {
    if (pending.has(unionId)) return;
    pending.set(unionId, setTimeout(() => {
      pending.delete(unionId);
      deps.db.transaction().execute((trx) => queueReportUp(deps, trx, unionId))
        .catch((error) => log.error("Queueing the chapter report of {unionId} failed: {error}", { unionId, error }));
    }, 1_000).unref());
  };
  deps.events.on("member.joined", (e) => soon(e.unionId));
  deps.events.on("member.left", (e) => soon(e.unionId));
  deps.events.on("action.response", (e) => soon(e.unionId));
  deps.events.on("relationship.changed", (e) => soon(e.unionId));
}

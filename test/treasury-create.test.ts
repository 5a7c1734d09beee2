import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { PublicKey } from "@solana/web3.js";
import { getAccount, getMultisig } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { startLedger } from "./helpers/solana.ts";
import { sharedKeys } from "./helpers/domain-context.ts";
import { eventually, makeUnion, startMuster } from "./helpers/muster.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { getTreasury } from "../src/treasury/treasury.ts";
import { KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { queueOutbox } from "../federation/outbound.ts";
import { faucetFunding, treasuryKey } from "../solana/badge-sync.ts";
import { handleLedgerIntent } from "../solana/ledger-lane.ts";
import type { Ledger } from "../solana/ledger.ts";
import { NetworkLedger } from "../solana/network-ledger.ts";
import { createTreasuryJob } from "../solana/treasury-authority.ts";

const intentsIn = async (db: Parameters<typeof getTreasury>[0], queue: string): Promise<OutboxIntent[]> =>
  (await db.selectFrom("fedify_mq").select("message").where("queue", "=", queue).execute()).map((r) => (JSON.parse(r.message) as { intent: OutboxIntent }).intent);

for (const d of dialects) {
  describe(`a union's treasury is created with the union on ${d.name}`, { skip: d.skip }, () => {
    it("queues its creation on the ledger lane with the union; a slow or failing ledger never fails the union, and retries make one treasury", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      const running = await startLedger(db);
      const domainQueue = new KyselyMessageQueue(database, { name: "domain", pollIntervalMs: 20 } as never);
      const ledgerQueue = new KyselyMessageQueue(database, { name: "ledger", pollIntervalMs: 20 } as never);
      try {
        const { ledger, connection } = running;
        const outbox = queueOutbox(domainQueue, ledgerQueue);
        const union = await createUnion({ db, events: createEventBus(), generateKeys: sharedKeys, outbox }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        // Committed with the union, on the ledger lane only: no chain call happened yet.
        assert.deepEqual(await intentsIn(db, "ledger"), [{ kind: "treasury.create", unionId: union.id }]);
        assert.deepEqual((await intentsIn(db, "domain")).filter((i) => i.kind.startsWith("treasury")), []);
        assert.equal(await getTreasury(db, union.id), undefined);

        // The ledger is down: the job fails (the lane retries it), the union is untouched, nothing is recorded.
        const fund = faucetFunding(ledger);
        const down: Ledger = new Proxy(ledger, {
          get(target, p) {
            if (p === "latestBlockhash" || p === "submit") return () => Promise.reject(new Error("fetch failed: connect ECONNREFUSED"));
            const v = Reflect.get(target, p, target) as unknown;
            return typeof v === "function" ? v.bind(target) : v;
          },
        });
        await assert.rejects(handleLedgerIntent({ db, ledger: down, origin: new URL("https://union.example"), fund }, { intent: { kind: "treasury.create", unionId: union.id } }), /ECONNREFUSED/);
        assert.equal(await getTreasury(db, union.id), undefined);

        // The bytes land but the answer is lost (a timeout after sending): the retry finds them by
        // signature and records that treasury, never a second one.
        let sent = 0;
        const lossy: Ledger = new Proxy(ledger, {
          get(target, p) {
            if (p === "submit") {
              return async (raw: Uint8Array, o: Parameters<Ledger["submit"]>[1]) => {
                await target.submit(raw, o);
                sent++;
                throw new Error("the RPC answer timed out");
              };
            }
            const v = Reflect.get(target, p, target) as unknown;
            return typeof v === "function" ? v.bind(target) : v;
          },
        });
        await assert.rejects(createTreasuryJob({ db, ledger: lossy, fund }, union.id), /timed out/);
        assert.equal(sent, 1);
        const planned = await db.selectFrom("treasury_setups").select("treasury").where("union_id", "=", union.id).executeTakeFirstOrThrow();
        const t = (await createTreasuryJob({ db, ledger, fund }, union.id))!;
        assert.equal(t.authority, (JSON.parse(planned.treasury) as { authority: string }).authority, "the stored creation, not a new one");
        assert.equal((await createTreasuryJob({ db, ledger, fund }, union.id))!.authority, t.authority, "idempotent");
        // On the chain: the server's key alone, 1 of 1 (the founding bylaws), owning the treasury's token account.
        const multisig = await getMultisig(connection, new PublicKey(t.authority));
        assert.deepEqual([multisig.m, multisig.n, multisig.signer1.toBase58()], [1, 1, (await treasuryKey(db, union.id)).publicKey.toBase58()]);
        assert.equal((await getAccount(connection, new PublicKey(t.tokenAccount))).owner.toBase58(), t.authority);
        assert.equal((await db.selectFrom("treasuries").select("union_id").execute()).length, 1);

        // The lane itself: a listener takes the queued intent and finds the treasury made.
        const stop = new AbortController();
        const lane = ledgerQueue.listen((message: { intent: OutboxIntent }) => handleLedgerIntent({ db, ledger, origin: new URL("https://union.example"), fund }, message), { signal: stop.signal });
        await eventually(async () => (await intentsIn(db, "ledger")).length === 0, "the ledger lane to take the intent");
        stop.abort();
        await lane.catch(() => undefined);
        assert.equal((await getTreasury(db, union.id))!.authority, t.authority);

        // A network ledger with no duesMint bylaw: not retried forever; made on first use once the bylaw is set.
        const other = await createUnion({ db, events: createEventBus(), generateKeys: sharedKeys, outbox }, { slug: "couriers", name: "Couriers", purpose: "Fair pay", joinPolicy: "open" });
        assert.equal(await createTreasuryJob({ db, ledger: new NetworkLedger(running.url), fund }, other.id), null);
        assert.equal(await getTreasury(db, other.id), undefined);
      } finally {
        await domainQueue.close();
        await ledgerQueue.close();
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });

    it("a union created through the running server (the CLI's and the setup page's path) gets its treasury from the server's ledger lane", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb);
      try {
        const union = await makeUnion(m);
        const db = m.muster.database.db;
        const t = await eventually(() => getTreasury(db, union.id), "the treasury, made by the ledger lane", 60_000);
        assert.equal(t.threshold, 1);
        assert.deepEqual(t.signers, [(await treasuryKey(db, union.id)).publicKey.toBase58()]);
      } finally {
        await m.stop();
        await tdb.destroy();
      }
    });
  });
}

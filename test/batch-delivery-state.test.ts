import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJwk, generateCryptoKeyPair } from "@fedify/fedify";
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from "kysely";
import { BatchDeliverer } from "../federation/batch-delivery.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import type { Database } from "../src/db/database.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";

/**
 * The batch sender's read of a server's circuit and spec state: held for a
 * second after it was read (a join's Accept and welcome, and the next joins
 * from that server, each read it: one of a worker's three round trips per
 * join), read again after any delivery it left to Fedify's handler.
 */

/** Counts the SELECTs run through the database it is plugged into (the state reads: the sender runs no other). */
class SelectCounter implements KyselyPlugin {
  selects = 0;
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (args.node.kind === "SelectQueryNode") this.selects++;
    return args.node;
  }
  transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return Promise.resolve(args.result);
  }
}

for (const d of dialects) {
  describe(`the batch sender's circuit and spec state on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let database: Database;
    let server: Server;
    let status = 202;
    const posts: string[] = [];
    let origin: string;
    let jwk: JsonWebKey;
    before(async () => {
      tdb = await d.create();
      database = tdb.open();
      server = createServer((req, res) => {
        posts.push(req.url ?? "");
        req.resume();
        req.on("end", () => res.writeHead(status).end());
      });
      await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
      origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      jwk = await exportJwk((await generateCryptoKeyPair("RSASSA-PKCS1-v1_5")).privateKey);
    });
    after(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await database.close();
      await tdb.destroy();
    });

    let seq = 0;
    const delivery = (inbox: string) => ({
      type: "outbox",
      keys: [{ keyId: "https://muster.example/u/riders#main-key", privateKey: jwk }],
      activity: { "@context": "https://www.w3.org/ns/activitystreams", id: `https://muster.example/a/${++seq}`, type: "Create", actor: "https://muster.example/u/riders" },
      activityId: `https://muster.example/a/${seq}`,
      inbox,
      sharedInbox: false,
    });

    it("reads a server's state once for the batches of the next second, again after that and after a delivery left to Fedify", async () => {
      const counter = new SelectCounter();
      let now = 1_000_000;
      const sender = new BatchDeliverer({ db: database.db.withPlugin(counter), timeoutMs: 5000, firstKnock: "draft-cavage-http-signatures-12", now: () => now });
      assert.deepEqual(await sender.deliver([delivery(`${origin}/users/a/inbox`)]), ["sent"]);
      assert.equal(counter.selects, 1);
      // The welcome after the Accept, and the next join's Accept from the same server: no read (the code before read each time).
      now += 400;
      assert.deepEqual(await sender.deliver([delivery(`${origin}/users/a/inbox`)]), ["sent"]);
      assert.deepEqual(await sender.deliver([delivery(`${origin}/users/b/inbox`)]), ["sent"]);
      assert.equal(counter.selects, 1, "held for the next batches");
      // A second later: read again.
      now += 1000;
      assert.deepEqual(await sender.deliver([delivery(`${origin}/users/a/inbox`)]), ["sent"]);
      assert.equal(counter.selects, 2);
      // The server fails a delivery: Fedify's handler takes it (and records the failure in its circuit) ...
      status = 503;
      assert.deepEqual(await sender.deliver([delivery(`${origin}/users/a/inbox`)]), ["fallback"]);
      await new KyselyKvStore(database.db).set(["_fedify", "circuit", new URL(origin).host], { state: "open", failures: 5 });
      status = 202;
      // ... so the next batch reads the state again at once, finds the circuit and leaves the delivery to Fedify without a POST.
      const before = posts.length;
      now += 1;
      assert.deepEqual(await sender.deliver([delivery(`${origin}/users/c/inbox`)]), ["fallback"]);
      assert.equal(counter.selects, 3);
      assert.equal(posts.length, before, "nothing sent past the circuit");
    });
  });
}

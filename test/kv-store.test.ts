import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { Temporal } from "@js-temporal/polyfill";
import type { KvKey, KvStore } from "@fedify/fedify";
import { CryptographicKey } from "@fedify/vocab";
import { KyselyKvStore, PUBLIC_KEY_CACHE_TTL_MS } from "../federation/kysely-kv-store.ts";
import { storedKeyId } from "../federation/kv-public-keys.ts";
import type { Database } from "../src/db/database.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";

async function collect(kv: KyselyKvStore, prefix?: KvKey): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for await (const { key, value } of kv.list(prefix)) out[JSON.stringify(key)] = value;
  return out;
}

const ms = (milliseconds: number) => Temporal.Duration.from({ milliseconds });

for (const d of dialects) {
  describe(`KyselyKvStore on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let database: Database;
    let kv: KyselyKvStore;

    before(async () => {
      tdb = await d.create();
      database = tdb.open();
      kv = new KyselyKvStore(database.db);
    });
    after(async () => {
      await database?.close();
      await tdb?.destroy();
    });

    it("satisfies Fedify's KvStore interface", () => {
      const asFedify: KvStore = kv;
      assert.equal(typeof asFedify.cas, "function");
    });

    it("returns undefined, never null, for a missing key", async () => {
      assert.strictEqual(await kv.get(["missing"]), undefined);
      assert.strictEqual(await kv.get(["missing", "deeper"]), undefined);
    });

    it("round-trips nested JSON, and a stored null stays null", async () => {
      const value = { a: [1, 2, { b: "c", d: null }], e: true, f: 1.5, g: "ünïcødé \"quoted\" \\ %_" };
      await kv.set(["nested", "1"], value);
      assert.deepStrictEqual(await kv.get(["nested", "1"]), value);
      await kv.set(["nested", "1"], "overwritten");
      assert.strictEqual(await kv.get(["nested", "1"]), "overwritten");
      await kv.set(["nested", "null"], null);
      assert.strictEqual(await kv.get(["nested", "null"]), null);
    });

    it("expires entries after their ttl and purges them when read", async () => {
      await kv.set(["ttl", "short"], "gone soon", { ttl: ms(50) });
      await kv.set(["ttl", "long"], "stays", { ttl: Temporal.Duration.from({ hours: 1 }) });
      assert.strictEqual(await kv.get(["ttl", "short"]), "gone soon");
      await sleep(120);
      assert.strictEqual(await kv.get(["ttl", "short"]), undefined);
      assert.strictEqual(await kv.get(["ttl", "long"]), "stays");
      assert.deepStrictEqual(await collect(kv, ["ttl"]), { '["ttl","long"]': "stays" });
      const rows = await database.db.selectFrom("fedify_kv").select("key").where("key", "=", '["ttl","short"]').execute();
      assert.equal(rows.length, 0, "an expired row is removed once read");
      // A set without ttl clears an earlier expiry.
      await kv.set(["ttl", "short"], "again", { ttl: ms(30) });
      await kv.set(["ttl", "short"], "forever");
      await sleep(60);
      assert.strictEqual(await kv.get(["ttl", "short"]), "forever");
    });

    it("keeps Fedify's cached public keys a week, not forever; other keys set without a ttl keep no expiry", async () => {
      const keyId: KvKey = ["_fedify", "publicKey", "https://social.example/users/a#main-key"];
      const before = Date.now();
      await kv.set(keyId, { id: keyId[2], publicKeyPem: "-----BEGIN PUBLIC KEY-----" });
      await kv.set(["_fedify", "publicKeyish"], "no expiry");
      const expiry = async (key: KvKey) => (await database.db.selectFrom("fedify_kv").select("expires_at").where("key", "=", JSON.stringify(key)).executeTakeFirstOrThrow()).expires_at;
      const at = Number(await expiry(keyId));
      assert.ok(at >= before + PUBLIC_KEY_CACHE_TTL_MS && at <= Date.now() + PUBLIC_KEY_CACHE_TTL_MS, `expires a week on (${at - before} ms)`);
      assert.equal(await expiry(["_fedify", "publicKeyish"]), null);
      assert.deepStrictEqual(await kv.get(keyId), { id: keyId[2], publicKeyPem: "-----BEGIN PUBLIC KEY-----" });
      // An explicit ttl (Fedify's for keys it could not fetch) is kept as given.
      await kv.set(keyId, null, { ttl: ms(30) });
      assert.ok(Number(await expiry(keyId)) < Date.now() + 1000);
    });

    it("stores Fedify's cached public key in fedify_public_keys as its bytes, and reads back exactly what Fedify wrote", async () => {
      const { publicKey } = await crypto.subtle.generateKey({ name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, true, ["sign", "verify"]);
      const owner = "https://social.example/users/kim";
      const json = await new CryptographicKey({ id: new URL(`${owner}#main-key`), owner: new URL(owner), publicKey }).toJsonLd();
      const key: KvKey = ["_fedify", "publicKey", `${owner}#main-key`];
      const kvRow = async (k: KvKey) => (await database.db.selectFrom("fedify_kv").select("value").where("key", "=", JSON.stringify(k)).executeTakeFirst())?.value;
      const keyRow = async (k: KvKey) => database.db.selectFrom("fedify_public_keys").selectAll().where("key_id", "=", storedKeyId(k[2] as string)).executeTakeFirst();
      await kv.set(key, json);
      assert.deepStrictEqual(await kv.get(key), json);
      assert.equal(JSON.stringify(await kv.get(key)), JSON.stringify(json), "the same JSON, member order too");
      assert.equal(await kvRow(key), undefined, "not in fedify_kv");
      const stored = await keyRow(key);
      // An RSA-2048 key's fixed SubjectPublicKeyInfo header and exponent are not stored: the 256-byte modulus alone, and no owner.
      assert.equal(stored?.key.length, 256);
      assert.equal(stored?.owner, null);
      assert.ok(Number(stored?.expires_at) > Date.now() + PUBLIC_KEY_CACHE_TTL_MS - 60_000, "kept a week");
      assert.deepStrictEqual((await CryptographicKey.fromJsonLd(await kv.get(key)))?.publicKey?.algorithm, publicKey.algorithm);
      const listed = [];
      for await (const e of kv.list(["_fedify", "publicKey"])) listed.push(e);
      assert.deepStrictEqual(listed.find((e) => e.key[2] === key[2])?.value, json);
      assert.deepStrictEqual((await collect(kv, key))[JSON.stringify(key)], json, "listed under its own key");
      assert.ok(JSON.stringify(key) in (await collect(kv)), "listed with everything");

      // An owner other than the key id's document (GoToSocial's /main-key): the owner kept.
      const elsewhere: KvKey = ["_fedify", "publicKey", "https://keys.example/k/1"];
      const other = { ...(json as Record<string, unknown>), id: elsewhere[2] };
      await kv.set(elsewhere, other);
      assert.deepStrictEqual(await kv.get(elsewhere), other);
      assert.equal((await keyRow(elsewhere))?.owner, owner);
      // Another shape or a cached null: stored in fedify_kv as given, and read back the same.
      const extra: KvKey = ["_fedify", "publicKey", "https://social.example/users/lee#main-key"];
      const odd = { ...(json as Record<string, unknown>), id: extra[2], owner: "https://social.example/users/lee", name: "with a name" };
      await kv.set(extra, odd);
      assert.deepStrictEqual(await kv.get(extra), odd);
      assert.ok((await kvRow(extra))?.startsWith("{"), "a shape it does not know is kept as JSON");
      assert.equal(await keyRow(extra), undefined);
      // A key id holds one value: a null replaces a compact key and a key replaces a null, whichever table each lives in.
      await kv.set(key, null, { ttl: ms(60_000) });
      assert.equal(await kv.get(key), null);
      assert.equal(await keyRow(key), undefined);
      await kv.set(key, json);
      assert.equal(await kvRow(key), undefined);
      assert.deepStrictEqual(await kv.get(key), json);
      // cas compares values, wherever stored; afterwards the value reads the same.
      assert.equal(await kv.cas(key, json, json), true, "cas compares the value, not its stored form");
      assert.deepStrictEqual(await kv.get(key), json);
      await kv.set(key, json);
      await kv.delete(key);
      assert.equal(await kv.get(key), undefined);
      assert.equal(await keyRow(key), undefined);
      assert.equal(await kvRow(key), undefined);
    });

    it("a rotated key replaces the cached one, and an expired one is gone from both tables", async () => {
      const gen = async () => (await crypto.subtle.generateKey({ name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, true, ["sign", "verify"])).publicKey;
      const owner = "https://social.example/users/rot";
      const key: KvKey = ["_fedify", "publicKey", `${owner}#main-key`];
      const old = await new CryptographicKey({ id: new URL(key[2] as string), owner: new URL(owner), publicKey: await gen() }).toJsonLd();
      const rotated = await new CryptographicKey({ id: new URL(key[2] as string), owner: new URL(owner), publicKey: await gen() }).toJsonLd();
      await kv.set(key, old);
      await kv.set(key, rotated);
      assert.deepStrictEqual(await kv.get(key), rotated);
      // An older value left in fedify_kv (before 0064, or by an older process) never comes back once the compact one expires.
      await database.db.insertInto("fedify_kv").values({ key: JSON.stringify(key), value: JSON.stringify(old), expires_at: null }).execute();
      assert.deepStrictEqual(await kv.get(key), rotated, "the compact row wins");
      await database.db.updateTable("fedify_public_keys").set({ expires_at: Date.now() - 1 }).where("key_id", "=", storedKeyId(key[2] as string)).execute();
      assert.equal(await kv.get(key), undefined);
      assert.equal(await kv.get(key), undefined, "and stays gone");
    });

    it("with every inbox queued, answers Fedify's receive-side idempotence check without a read, until such a key is written", async () => {
      const queued = new KyselyKvStore(database.db, { inboxQueued: true });
      const receiveKey: KvKey = ["_fedify", "activityIdempotence", "https://muster.example\nhttps://peer.example/a/1\nsharedInbox"];
      const handlerKey: KvKey = ["_fedify", "activityIdempotence", "https://muster.example", "https://peer.example/a/1"];
      // Written behind the store's back: only a read would see them.
      await database.db.insertInto("fedify_kv").values([
        { key: JSON.stringify(receiveKey), value: "true", expires_at: null },
        { key: JSON.stringify(handlerKey), value: "true", expires_at: null },
      ]).execute();
      assert.equal(await queued.get(receiveKey), undefined, "the receive-side key is not read");
      assert.equal(await queued.get(handlerKey), true, "the queue handler's key is read as ever");
      assert.equal(await kv.get(receiveKey), true, "a store not told that inboxes are queued reads it");
      // Should one be written after all (an inline-processing federation), they are read from then on.
      await queued.set(["_fedify", "activityIdempotence", "https://muster.example\nhttps://peer.example/a/2"], true);
      assert.equal(await queued.get(receiveKey), true);
    });

    it("deletes, and deleting a missing key is fine", async () => {
      await kv.set(["del"], 1);
      await kv.delete(["del"]);
      assert.strictEqual(await kv.get(["del"]), undefined);
      await kv.delete(["del"]);
      await kv.set(["del"], undefined);
      assert.strictEqual(await kv.get(["del"]), undefined);
    });

    it("lists by prefix exactly, element by element", async () => {
      const keys: KvKey[] = [
        ["p", "b"], ["p", "b", "x"], ["p", "b", "y", "z"], ["p", "bc"], ["p", "bc", "x"], ["p", "B"], ["p", "b\""],
        ["p", "a%"], ["p", "a%", "1"], ["p", "aX"], ["p", "a_"], ["p", "a_", "1"], ["p", "ab"], ["pp", "b"], ["p"],
      ];
      for (const [i, key] of keys.entries()) await kv.set(key, i);
      const list = async (prefix: KvKey) => Object.keys(await collect(kv, prefix)).sort();

      assert.deepStrictEqual(await list(["p", "b"]), ['["p","b","x"]', '["p","b","y","z"]', '["p","b"]'].sort());
      assert.deepStrictEqual(await list(["p", "bc"]), ['["p","bc","x"]', '["p","bc"]'].sort());
      assert.deepStrictEqual(await list(["p", "a%"]), ['["p","a%","1"]', '["p","a%"]'].sort());
      assert.deepStrictEqual(await list(["p", "a_"]), ['["p","a_","1"]', '["p","a_"]'].sort());
      assert.deepStrictEqual(await list(["p", "B"]), ['["p","B"]']);
      assert.deepStrictEqual(await list(["p", "b", "y"]), ['["p","b","y","z"]']);
      assert.equal((await list(["p"])).length, keys.length - 1, "[\"pp\",…] is not under [\"p\"]");
      assert.deepStrictEqual(await list(["nothing"]), []);
      const all = await collect(kv);
      assert.equal(all['["p","b","x"]'], 1);
      assert.equal(all['["pp","b"]'], 13);
      // Keys come back as arrays, not their encoding.
      for await (const entry of kv.list(["p", "bc"])) assert.ok(Array.isArray(entry.key));
    });

    it("compares and swaps", async () => {
      await kv.set(["cas"], { n: 1, tags: ["x"] });
      assert.equal(await kv.cas(["cas"], { n: 2 }, { n: 3 }), false);
      assert.deepStrictEqual(await kv.get(["cas"]), { n: 1, tags: ["x"] });
      // Equal by value, whatever the member order.
      assert.equal(await kv.cas(["cas"], { tags: ["x"], n: 1 }, { n: 2 }), true);
      assert.deepStrictEqual(await kv.get(["cas"]), { n: 2 });
      assert.equal(await kv.cas(["cas"], { n: 1, tags: ["x"] }, { n: 9 }), false, "stale expectation");

      // Missing key: only `undefined` matches it.
      assert.equal(await kv.cas(["cas", "new"], null, 1), false);
      assert.strictEqual(await kv.get(["cas", "new"]), undefined);
      assert.equal(await kv.cas(["cas", "new"], undefined, 1), true);
      assert.equal(await kv.get(["cas", "new"]), 1);
      assert.equal(await kv.cas(["cas", "new"], undefined, 2), false, "the key exists now");
      assert.equal(await kv.get(["cas", "new"]), 1);

      // Fedify consumes nonces with cas(key, true, undefined): a conditional delete.
      await kv.set(["nonce"], true);
      assert.equal(await kv.cas(["nonce"], true, undefined), true);
      assert.strictEqual(await kv.get(["nonce"]), undefined);
      assert.equal(await kv.cas(["nonce"], true, undefined), false);

      // An expired entry is absent to cas as well.
      await kv.set(["cas", "exp"], "old", { ttl: ms(30) });
      await sleep(80);
      assert.equal(await kv.cas(["cas", "exp"], "old", "new"), false);
      assert.equal(await kv.cas(["cas", "exp"], undefined, "new", { ttl: Temporal.Duration.from({ hours: 1 }) }), true);
      assert.equal(await kv.get(["cas", "exp"]), "new");
    });

    it("lets exactly one of two connections win a concurrent cas", async () => {
      const other = tdb.open();
      try {
        const kv2 = new KyselyKvStore(other.db);
        for (let round = 0; round < 20; round++) {
          const key: KvKey = ["race", String(round)];
          // Both start from a missing key …
          const created = await Promise.all([kv.cas(key, undefined, "one"), kv2.cas(key, undefined, "two")]);
          assert.equal(created.filter(Boolean).length, 1, `round ${round}: creating`);
          const winner = created[0] ? "one" : "two";
          assert.equal(await kv2.get(key), winner);
          // … then both expect the same existing value.
          const swapped = await Promise.all([kv.cas(key, winner, "A"), kv2.cas(key, winner, "B")]);
          assert.equal(swapped.filter(Boolean).length, 1, `round ${round}: swapping`);
          assert.equal(await kv.get(key), swapped[0] ? "A" : "B");
          // … and both try to consume it.
          const current = await kv.get(key);
          const consumed = await Promise.all([kv.cas(key, current, undefined), kv2.cas(key, current, undefined)]);
          assert.equal(consumed.filter(Boolean).length, 1, `round ${round}: consuming`);
          assert.strictEqual(await kv.get(key), undefined);
        }
      } finally {
        await other.close();
      }
    });

    it("setWith writes inside the caller's transaction: gone if it rolls back, there (with the public-key TTL, compact) once it commits", async () => {
      const keyId = "https://peer.example/users/tx#main-key";
      const entry: KvKey = ["_fedify", "publicKey", keyId];
      const value = { "@id": keyId, "https://w3id.org/security#owner": [{ "@id": "https://peer.example/users/tx" }] };
      assert.equal(kv.sharesDatabase(database.db), true);
      await assert.rejects(database.db.transaction().execute(async (trx) => {
        await kv.setWith(trx, entry, value);
        throw new Error("rolled back");
      }), /rolled back/);
      assert.strictEqual(await kv.get(entry), undefined);
      await database.db.transaction().execute((trx) => kv.setWith(trx, entry, value));
      assert.deepStrictEqual(await kv.get(entry), value);
      const row = await database.db.selectFrom("fedify_kv").select("expires_at").where("key", "like", `%${keyId}%`).executeTakeFirstOrThrow();
      assert.ok(Number(row.expires_at) > Date.now() + PUBLIC_KEY_CACHE_TTL_MS - 60_000);
    });
  });
}

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import type { KvKey } from "@fedify/fedify";
import { CryptographicKey } from "@fedify/vocab";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { keyIdOfStored, storedKeyId, storedText } from "../federation/kv-public-keys.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import { dialects } from "./helpers/databases.ts";

// Issue 16: a cached public key per member, at a million members.

const RSA2048_SPKI_HEAD = Buffer.from("30820122300d06092a864886f70d01010105000382010f003082010a0282010100", "hex");
const RSA2048_SPKI_TAIL = Buffer.from("0203010001", "hex");

/** Fedify's KvKeyCache value for an RSA-2048 key with a random modulus (what its toJsonLd() writes). */
function cachedKey(keyId: string, owner = keyId.replace(/#.*$/, "")): Record<string, unknown> {
  const modulus = randomBytes(256);
  modulus[0] = modulus[0]! | 0x80;
  const body = Buffer.concat([RSA2048_SPKI_HEAD, modulus, RSA2048_SPKI_TAIL]).toString("base64");
  return { owner, publicKeyPem: `-----BEGIN PUBLIC KEY-----\n${body.replace(/.{64}/g, "$&\n")}\n-----END PUBLIC KEY-----\n`, type: "CryptographicKey", id: keyId, "@context": "https://w3id.org/security/v1" };
}

/** The key's node of the expanded actor document: what Fedify's verifier caches for a key it fetched (and plain-actor.ts writes). */
function expandedKey(keyId: string, owner = keyId.replace(/#.*$/, ""), typed = true): Record<string, unknown> {
  const { publicKeyPem } = cachedKey(keyId, owner) as { publicKeyPem: string };
  const sec = "https://w3id.org/security#";
  return { "@id": keyId, [`${sec}owner`]: [{ "@id": owner }], [`${sec}publicKeyPem`]: [{ "@value": publicKeyPem }], ...(typed ? { "@type": [`${sec}Key`] } : {}) };
}

async function realKey(keyId: string, owner: string, modulusLength = 2048): Promise<unknown> {
  const { publicKey } = await crypto.subtle.generateKey({ name: "RSASSA-PKCS1-v1_5", modulusLength, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" }, true, ["sign", "verify"]);
  return new CryptographicKey({ id: new URL(keyId), owner: new URL(owner), publicKey }).toJsonLd();
}

for (const d of dialects) {
  describe(`cached public keys on ${d.name}`, { skip: d.skip }, () => {
    it("a cached key per member costs under 420 bytes on SQLite, 560 on PostgreSQL (it was 560 and 650 in fedify_kv)", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        const n = 3000;
        const kv = new KyselyKvStore(db);
        const size = async () => d.name === "sqlite"
          ? Number((await sql<{ b: number }>`select coalesce(sum(pgsize), 0) as b from dbstat where name like '%fedify_kv%' or name like '%fedify_public_keys%'`.execute(db)).rows[0]!.b)
          : Number((await sql<{ b: string }>`select pg_total_relation_size('fedify_kv') + pg_total_relation_size('fedify_public_keys') as b`.execute(db)).rows[0]!.b);
        const before = await size();
        await db.transaction().execute(async (trx) => {
          const store = new KyselyKvStore(trx);
          for (let i = 0; i < n; i++) {
            const keyId = `https://social-${i % 200}.example.net/users/member_${i.toString(36)}#main-key`;
            await store.set(["_fedify", "publicKey", keyId], i % 2 ? expandedKey(keyId) : cachedKey(keyId));
          }
        });
        if (d.name === "postgres") await sql`vacuum analyze fedify_public_keys`.execute(db);
        const perKey = (await size() - before) / n;
        assert.ok(perKey < (d.name === "sqlite" ? 420 : 560), `${perKey.toFixed(0)} bytes per cached key`);
        assert.equal(Number((await db.selectFrom("fedify_kv").select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n), 0, "every key compact, both forms");
        const keyId = "https://social-8.example.net/users/member_8#main-key";
        assert.equal(((await kv.get(["_fedify", "publicKey", keyId])) as { id: string }).id, keyId);
        const expandedId = "https://social-7.example.net/users/member_7#main-key";
        assert.equal(((await kv.get(["_fedify", "publicKey", expandedId])) as { "@id": string })["@id"], expandedId);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("a key id is stored without https:// and #main-key, and each spelling reads back as it was", async () => {
      for (const keyId of ["https://a.example/u/1#main-key", "https://a.example/u/1", "https://a.example/u/1#other", "http://a.example/u/1#main-key", "https://#main-key", "https://a.example/u/1#main-key#main-key", "c", "ahttps://x", ""]) {
        assert.equal(keyIdOfStored(storedKeyId(keyId)), keyId, keyId);
      }
      assert.equal(storedKeyId("https://social.example/users/kim#main-key"), "asocial.example/users/kim");
    });

    it("0064 moves the compact keys cached before out of fedify_kv, each reading back as it was; rotation replaces a moved key; down puts them back", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        await migrateTo(db, "0063_member_index_diet");
        const entry = (keyId: string): KvKey => ["_fedify", "publicKey", keyId];
        const kim = "https://social.example/users/kim";
        const gts = "https://gts.example/users/ana";
        const values: [KvKey, unknown, number | null][] = [
          [entry(`${kim}#main-key`), await realKey(`${kim}#main-key`, kim), Date.now() + 3_600_000],
          // GoToSocial's key id is not in the actor's document: the owner is stored.
          [entry(`${gts}/main-key`), await realKey(`${gts}/main-key`, gts), Date.now() + 3_600_000],
          // Another key size: the whole body, no expiry (written before the week's TTL).
          [entry("https://big.example/u/1#main-key"), await realKey("https://big.example/u/1#main-key", "https://big.example/u/1", 3072), null],
          // As Fedify's verifier cached them, expanded: typed, and untyped.
          [entry("https://mastodon.example/users/exp#main-key"), expandedKey("https://mastodon.example/users/exp#main-key"), Date.now() + 3_600_000],
          [entry("https://mastodon.example/users/untyped#main-key"), expandedKey("https://mastodon.example/users/untyped#main-key", undefined, false), Date.now() + 3_600_000],
          // Left where they are: a cached null, a shape the compact form does not hold, a fetch error, another prefix.
          [entry("https://gone.example/u/2#main-key"), null, Date.now() + 600_000],
          [entry("https://odd.example/u/3#main-key"), { ...(cachedKey("https://odd.example/u/3#main-key")), name: "named" }, Date.now() + 3_600_000],
          [["_fedify", "publicKey", "__fetchError", "https://gone.example/u/2#main-key"], { errorName: "E", errorMessage: "m" }, Date.now() + 600_000],
          [["_fedify", "remoteDocument", `${kim}#main-key`], { document: 1 }, null],
        ];
        // Written as the code before 0064 wrote them (storedText, the compact text form).
        await db.insertInto("fedify_kv").values(values.map(([key, value, expires_at]) => ({ key: JSON.stringify(key), value: storedText(key, JSON.stringify(value)), expires_at }))).execute();
        const stored = async () => Object.fromEntries((await db.selectFrom("fedify_kv").select(["key", "value"]).execute()).map((r) => [r.key, r.value]));
        const old = await stored();
        assert.equal(Object.values(old).filter((v) => v.startsWith("~")).length, 3, "three compact entries to move, and two expanded");
        await migrateToLatest(db);
        const kv = new KyselyKvStore(db);
        for (const [key, value] of values) assert.equal(JSON.stringify(await kv.get(key)), JSON.stringify(value), JSON.stringify(key));
        const moved = await db.selectFrom("fedify_public_keys").selectAll().orderBy("key_id").execute();
        // Without "https://" and "#main-key" ("a"), without "https://" ("b").
        assert.deepEqual(moved.map((r) => [r.key_id, r.owner, r.key.length, Number(r.form)]), [
          ["abig.example/u/1", null, 422, 0],
          ["amastodon.example/users/exp", null, 256, 1],
          ["amastodon.example/users/untyped", null, 256, 3],
          ["asocial.example/users/kim", null, 256, 0],
          ["bgts.example/users/ana/main-key", gts, 256, 0],
        ]);
        assert.equal(Number(moved[3]!.expires_at), values[0]![2]);
        assert.ok(Number(moved[0]!.expires_at) > Date.now(), "a key without expiry gets one");
        const left = await stored();
        assert.deepEqual(Object.keys(left).sort(), values.slice(5).map(([k]) => JSON.stringify(k)).sort());
        // Rotation: the owner's new key, fetched by Fedify's verifier after the old one failed, replaces the moved one.
        const rotated = await realKey(`${kim}#main-key`, kim);
        await kv.set(values[0]![0], rotated);
        assert.equal(JSON.stringify(await kv.get(values[0]![0])), JSON.stringify(rotated));
        assert.equal((await db.selectFrom("fedify_public_keys").select("key_id").execute()).length, 5);
        // Down: the compact text form again, read back the same by the store's fedify_kv path.
        await migrateTo(db, "0063_member_index_diet");
        const back = await stored();
        assert.equal(Object.keys(back).length, values.length);
        for (const i of [1, 2, 3, 4]) assert.equal(back[JSON.stringify(values[i]![0])], old[JSON.stringify(values[i]![0])]);
        assert.equal(back[JSON.stringify(values[0]![0])], storedText(values[0]![0], JSON.stringify(rotated)));
        await migrateToLatest(db);
        assert.equal(JSON.stringify(await kv.get(values[0]![0])), JSON.stringify(rotated));
        assert.equal(JSON.stringify(await kv.get(values[2]![0])), JSON.stringify(values[2]![1]));
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}

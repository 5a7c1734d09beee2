import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { secretKeyFile } from "../src/secrets/secret-box.ts";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { ConfigError, loadConfig } from "../src/config.ts";
import { createMuster } from "../src/main.ts";
import { createUnion } from "../src/unions/unions.ts";
import { createEventBus } from "../src/events.ts";
import { generateActorKeys, loadKeyPairs } from "../federation/keys.ts";
import { treasuryKey } from "../solana/badge-sync.ts";
import { dialects } from "./helpers/databases.ts";

const ROOT = join(import.meta.dirname, "..");
const ORIGIN = "https://union.example";

/** Every private-key column, as stored. */
async function storedSecrets(db: Awaited<ReturnType<typeof createMuster>>["database"]["db"]) {
  const actor = await db.selectFrom("actor_keys").select(["owner", "private_jwk"]).execute();
  const treasury = await db.selectFrom("treasury_keys").select(["union_id", "secret_key"]).execute();
  return [...actor.map((r) => r.private_jwk), ...treasury.map((r) => r.secret_key)];
}

for (const d of dialects) {
  describe(`private keys sealed at rest on ${d.name}`, { skip: d.skip }, () => {
    it("seals plaintext rows on first start, keeps working after a restart with the same key, and refuses a wrong key in one line", async () => {
      const tdb = await d.create();
      const dataDir = mkdtempSync(join(tmpdir(), "muster-secrets-"));
      const key = randomBytes(32).toString("hex");
      const env = { DATABASE_URL: tdb.url, ORIGIN, LOG_LEVEL: "error", DATA_DIR: dataDir };
      try {
        // Rows written the way the code before encryption wrote them: plaintext.
        const bare = tdb.open();
        const union = await createUnion({ db: bare.db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        const treasury = await treasuryKey(bare.db, union.id);
        const plainTreasury = Buffer.from(treasury.secretKey).toString("base64");
        const plainJwk = (await bare.db.selectFrom("actor_keys").select("private_jwk").where("algorithm", "=", "Ed25519").executeTakeFirstOrThrow()).private_jwk;
        const jwkD = (JSON.parse(plainJwk) as { d: string }).d;
        assert.ok((await storedSecrets(bare.db)).some((s) => s.includes(jwkD)), "the fixture starts in plaintext");
        await bare.close();

        const m1 = await createMuster(loadConfig({ ...env, MUSTER_SECRET_KEY: key }));
        let instancePub: string;
        try {
          const rows = await storedSecrets(m1.database.db);
          assert.ok(rows.length >= 5, "union and instance actor keys plus the treasury key");
          for (const r of rows) assert.match(r, /^enc:v1:/);
          const dump = JSON.stringify(rows);
          assert.ok(!dump.includes(jwkD) && !dump.includes(plainTreasury), "no plaintext key left in the database");
          // A union created by the running server is sealed from the start.
          await createUnion(m1.unions, { slug: "couriers", name: "Couriers", purpose: "Fair pay", joinPolicy: "open" });
          for (const r of await storedSecrets(m1.database.db)) assert.match(r, /^enc:v1:/);
          assert.equal((await treasuryKey(m1.database.db, union.id)).publicKey.toBase58(), treasury.publicKey.toBase58());
          instancePub = JSON.stringify(await crypto.subtle.exportKey("jwk", (await loadKeyPairs(m1.database.db, "instance"))[0]!.publicKey));
        } finally {
          await m1.close();
        }

        // Same key: everything opens, nothing is sealed twice.
        const m2 = await createMuster(loadConfig({ ...env, MUSTER_SECRET_KEY: key }));
        try {
          const pairs = await loadKeyPairs(m2.database.db, `union:${union.id}`);
          assert.equal(pairs.length, 2);
          const data = new TextEncoder().encode("hello");
          const ed = pairs.find((p) => p.privateKey.algorithm.name === "Ed25519")!;
          assert.ok(await crypto.subtle.verify("Ed25519", ed.publicKey, await crypto.subtle.sign("Ed25519", ed.privateKey, data), data), "the opened private key signs");
          assert.equal((await treasuryKey(m2.database.db, union.id)).publicKey.toBase58(), treasury.publicKey.toBase58());
          assert.equal(JSON.stringify(await crypto.subtle.exportKey("jwk", (await loadKeyPairs(m2.database.db, "instance"))[0]!.publicKey)), instancePub);
        } finally {
          await m2.close();
        }

        // Wrong key: refused before anything runs, in one line, from the CLI too.
        const wrong = randomBytes(32).toString("hex");
        await assert.rejects(createMuster(loadConfig({ ...env, MUSTER_SECRET_KEY: wrong })), (e: unknown) => e instanceof ConfigError && /does not open the keys in this database/.test(e.message));
        const r = spawnSync(process.execPath, [join(ROOT, "bin", "muster.js"), "union", "list"], { cwd: ROOT, env: { ...process.env, ...env, MUSTER_SECRET_KEY: wrong }, encoding: "utf8" });
        assert.equal(r.status, 1, r.stderr);
        assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
        assert.match(r.stderr, /^muster: error: the secret key from MUSTER_SECRET_KEY does not open the keys in this database/);
        // Without MUSTER_SECRET_KEY a fresh DATA_DIR key file is another key: refused too.
        await assert.rejects(createMuster(loadConfig(env)), /secret\.key does not open the keys/);
        rmSync(secretKeyFile(loadConfig(env)), { force: true });
        assert.throws(() => loadConfig({ ...env, MUSTER_SECRET_KEY: "short" }), /MUSTER_SECRET_KEY must be a 32-byte key/);
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
        await tdb.destroy();
      }
    });

    it("without MUSTER_SECRET_KEY generates a key file (owner-only) once and reuses it", async () => {
      const tdb = await d.create();
      const dataDir = mkdtempSync(join(tmpdir(), "muster-secrets-"));
      const env = { DATABASE_URL: tdb.url, ORIGIN, LOG_LEVEL: "error", DATA_DIR: dataDir };
      try {
        const m1 = await createMuster(loadConfig(env));
        const file = secretKeyFile(loadConfig(env));
        assert.equal(file, d.name === "sqlite" ? join(dirname(tdb.url.slice("sqlite:".length)), "secret.key") : join(dataDir, "secret.key"), "beside a SQLite database, else in DATA_DIR");
        const first = readFileSync(file, "utf8");
        assert.equal(statSync(file).mode & 0o777, 0o600);
        await m1.close();
        const m2 = await createMuster(loadConfig(env));
        await m2.close();
        assert.equal(readFileSync(file, "utf8"), first);
        // The same key given in the environment opens the database too.
        const m3 = await createMuster(loadConfig({ ...env, MUSTER_SECRET_KEY: first.trim() }));
        await m3.close();
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
        await tdb.destroy();
      }
    });
  });
}

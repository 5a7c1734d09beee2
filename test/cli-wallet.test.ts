import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair } from "@solana/web3.js";
import { loadConfig } from "../src/config.ts";
import { createMuster } from "../src/main.ts";
import { requestToJoin } from "../src/members/membership.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, person } from "./helpers/domain-context.ts";

const ROOT = join(import.meta.dirname, "..");
const ORIGIN = "https://union.example";

function cli(args: string[], url: string) {
  const r = spawnSync(process.execPath, [join(ROOT, "bin", "muster.js"), ...args], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: "error", ORIGIN, DATABASE_URL: url }, encoding: "utf8" });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

for (const d of dialects) {
  describe(`muster member wallet on ${d.name}`, { skip: d.skip }, () => {
    it("links a member's wallet and queues the badge in the ledger lane; a bad address is one clear line and stores nothing", async () => {
      const tdb = await d.create();
      const m = await createMuster(loadConfig({ DATABASE_URL: tdb.url, ORIGIN, LOG_LEVEL: "error" }));
      try {
        const union = await createUnion(m.unions, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        const joined = await requestToJoin(m.membership, union.id, person("alice"), followId());
        assert.equal(joined.outcome, "accepted");

        const help = cli(["member", "wallet", "--help"], tdb.url);
        assert.equal(help.code, 0);
        assert.match(help.out, /muster member wallet <union> <@user@host> <address>/);

        const bad = cli(["member", "wallet", "riders", "@alice@remote.example", "0OIl-not-base58"], tdb.url);
        assert.equal(bad.code, 1, bad.err);
        assert.match(bad.err, /not a Solana address/);
        assert.equal(bad.err.trim().split("\n").length, 1);
        assert.equal((await m.database.db.selectFrom("member_wallets").selectAll().execute()).length, 0);

        const wallet = Keypair.generate().publicKey.toBase58();
        const good = cli(["member", "wallet", "riders", "@alice@remote.example", wallet], tdb.url);
        assert.equal(good.code, 0, good.err);
        assert.match(good.out, new RegExp(`Linked wallet ${wallet}`));
        const row = await m.database.db.selectFrom("member_wallets").selectAll().executeTakeFirstOrThrow();
        assert.deepEqual([row.member_id, row.address], [joined.member.id, wallet]);
        const lane = (await m.database.db.selectFrom("fedify_mq").select(["queue", "message"]).execute())
          .filter((r) => (JSON.parse(r.message) as { intent?: OutboxIntent }).intent?.kind === "badge.sync");
        assert.deepEqual(lane.map((r) => r.queue), ["ledger"]);
      } finally {
        await m.close();
        await tdb.destroy();
      }
    });
  });
}

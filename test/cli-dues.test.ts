import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PublicKey } from "@solana/web3.js";
import { getAccount } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { makeUnion, startMuster } from "./helpers/muster.ts";
import { followId, person } from "./helpers/domain-context.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { rpcConnection, setUpTreasury } from "./helpers/treasury.ts";
import { BIN, ROOT } from "./helpers/cli-run.ts";
import { requestToJoin } from "../src/members/membership.ts";

const DUES = 5_000_000n;

/** The real CLI, asynchronously: the server it talks to runs in this process. */
function run(args: string[], env: Record<string, string>): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: "error", MUSTER_ALLOW_PRIVATE_ADDRESS: "1", ...env } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, out: stdout, err: stderr });
    });
  });
}

for (const d of dialects) {
  describe(`muster dues pay and dues status on ${d.name}`, { skip: d.skip }, () => {
    it("pays through the running server's Solana Pay endpoint, then in-process once it is stopped; status shows standing and unmatched payments", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb, { env: { MUSTER_QUEUE_CONCURRENCY: "2" } });
      const rpc = rpcConnection(m.origin);
      let stopped = false;
      try {
        const db = m.muster.database.db;
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        const joined = await requestToJoin(m.muster.membership, union.id, person("alice"), followId());
        assert.equal(joined.outcome, "accepted");
        await overrideBylaws(m.muster.membership, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
        const t = await setUpTreasury(rpc.connection, db, union.id);
        const wallet = await t.wallet(30_000_000n);
        const dir = await mkdtemp(join(tmpdir(), "muster-dues-"));
        const keyFile = join(dir, "wallet.json");
        await writeFile(keyFile, JSON.stringify([...wallet.secretKey]));
        const env = { DATABASE_URL: tdb.url, ORIGIN: m.origin.origin };

        const help = await run(["dues", "pay", "--help"], env);
        assert.equal(help.code, 0);
        assert.match(help.out, /muster dues pay <union> <@user@host> --keypair <file>/);
        assert.match((await run(["dues", "status", "--help"], env)).out, /--json/);

        const paid = await run(["dues", "pay", "riders", "@alice@remote.example", "--keypair", keyFile], env);
        assert.equal(paid.code, 0, paid.err);
        assert.match(paid.out, new RegExp(`transaction built by the server at ${m.origin.origin.replace(/\./g, "\\.")}`));
        const signature = /Signature: (\w+)/.exec(paid.out)![1]!;
        assert.match(paid.out, /Recorded: credited; standing good/);
        const tx = await rpc.connection.getTransaction(signature, { commitment: "confirmed", maxSupportedTransactionVersion: 0 });
        assert.equal(tx?.meta?.err, null);
        assert.equal((await getAccount(rpc.connection, new PublicKey(t.treasury.tokenAccount))).amount, DUES);

        // Errors are one line, and move nothing.
        const cases: [string[], number, RegExp][] = [
          [["dues", "pay", "riders", "@alice@remote.example"], 2, /--keypair <file> is required/],
          [["dues", "pay", "riders", "@alice@remote.example", "--keypair", join(dir, "missing.json")], 1, /cannot read the keypair file .*ENOENT/],
          [["dues", "pay", "riders", "@bob@remote.example", "--keypair", keyFile], 1, /no member @bob@remote.example in union riders/],
          [["dues", "pay", "nowhere", "@alice@remote.example", "--keypair", keyFile], 1, /no union with slug "nowhere"/],
        ];
        await writeFile(join(dir, "bad.json"), "[1,2,3]");
        cases.push([["dues", "pay", "riders", "@alice@remote.example", "--keypair", join(dir, "bad.json")], 1, /is not a keypair file/]);
        for (const [args, code, message] of cases) {
          const r = await run(args, env);
          assert.equal(r.code, code, `${args.join(" ")}: ${r.err}`);
          assert.match(r.err, message);
          if (code === 1) assert.equal(r.err.trim().split("\n").length, 1, r.err);
        }

        // No server at the origin: the CLI builds the transaction and runs the embedded ledger itself.
        await m.stop();
        stopped = true;
        const local = await run(["dues", "pay", "riders", "@alice@remote.example", "--keypair", keyFile, "--json"], env);
        assert.equal(local.code, 0, local.err);
        const j = JSON.parse(local.out) as { signature: string; transactionFrom: string; payment: { status: string }; standing: string };
        assert.equal(j.transactionFrom, "in-process");
        assert.equal(j.payment.status, "credited");
        assert.notEqual(j.signature, signature);

        const status = await run(["dues", "status", "riders", "--json"], env);
        assert.equal(status.code, 0, status.err);
        const s = JSON.parse(status.out) as { duesAmount: string; members: { handle: string; standing: string; paidThrough: string; lastPayment: { signature: string; amount: string } }[]; unmatched: unknown[] };
        assert.equal(s.duesAmount, "5000000");
        const alice = s.members.find((x) => x.handle === "@alice@remote.example")!;
        assert.equal(alice.standing, "good");
        assert.equal(alice.lastPayment.amount, "5000000");
        assert.ok([signature, j.signature].includes(alice.lastPayment.signature));
        // Two periods paid: 60 days of cover from the first payment.
        assert.ok(new Date(alice.paidThrough).getTime() > Date.now() + 59 * 86_400_000);
        assert.deepEqual(s.unmatched, []);
        const one = await run(["dues", "status", "riders", "@alice@remote.example"], env);
        assert.equal(one.code, 0, one.err);
        assert.match(one.out, /@alice@remote\.example\s+good/);
        assert.doesNotMatch(one.out, /@lead@example\.org/);
      } finally {
        rpc.close();
        if (!stopped) await m.stop();
        await tdb.destroy();
      }
    });
  });
}

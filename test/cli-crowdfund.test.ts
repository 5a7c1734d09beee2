import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair } from "@solana/web3.js";
import { getAssociatedTokenAddressSync } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { makeUnion, startMuster } from "./helpers/muster.ts";
import { BIN, ROOT } from "./helpers/cli-run.ts";
import { fundedWallet, setupTreasury, tokenBalance } from "./helpers/crowdfund.ts";
import { followId, person } from "./helpers/domain-context.ts";
import { requestToJoin } from "../src/members/membership.ts";

interface Run { code: number | null; out: string; err: string }

// The server runs in this process, so the CLI must run without blocking it (no spawnSync).
function cli(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: "error", ...env } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, out: stdout, err: stderr });
    });
  });
}

for (const d of dialects) {
  describe(`muster crowdfund on ${d.name}`, { skip: d.skip }, () => {
    it("create, approve (opens the vault), pledge from keypair files, show with the vault balance from the chain, settle", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb, { worker: false });
      const dir = mkdtempSync(join(tmpdir(), "muster-cf-"));
      try {
        const env = { DATABASE_URL: tdb.url, ORIGIN: m.origin.href.replace(/\/$/, ""), MUSTER_ALLOW_PRIVATE_ADDRESS: "1" };
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        const ledger = m.muster.embeddedLedger!;
        const treasury = await setupTreasury(ledger, m.muster.database.db, union.id);
        const wallets: Record<string, { file: string; account: string }> = {};
        for (const name of ["alice", "bob"]) {
          const j = await requestToJoin(m.muster.membership, union.id, person(name), followId());
          assert.equal(j.outcome, "accepted");
          const { wallet, account } = await fundedWallet(ledger, treasury.mint, treasury.mintAuthority, 50_000_000n);
          const file = join(dir, `${name}.json`);
          writeFileSync(file, JSON.stringify([...wallet.secretKey]));
          wallets[name] = { file, account: account.toBase58() };
        }
        for (const cmd of ["create", "list", "show", "approve", "reject", "pledge", "settle"]) {
          const help = await cli(["crowdfund", cmd, "--help"], env);
          assert.equal(help.code, 0);
          assert.match(help.out, new RegExp(`^Usage: muster crowdfund ${cmd} <union>`));
        }
        const beneficiary = Keypair.generate().publicKey.toBase58();
        const deadline = new Date(Date.now() + 86_400_000).toISOString();
        const bad = await cli(["crowdfund", "create", "riders", "--by", "@alice@remote.example", "--title", "Van", "--text", "A van.", "--goal", "1.0000001", "--deadline", deadline, "--beneficiary", beneficiary], env);
        assert.equal(bad.code, 2);
        assert.match(bad.err, /--goal: amount has more than 6 decimal places/);
        const created = JSON.parse((await cli(["crowdfund", "create", "riders", "--by", "@alice@remote.example", "--title", "Van", "--text", "A **van** for the night shift.", "--goal", "10", "--deadline", deadline, "--beneficiary", beneficiary, "--json"], env)).out);
        assert.deepEqual([created.seq, created.state, created.goal], [1, "proposed", "10000000"]);

        // Not open yet: a pledge is refused in one line.
        const early = await cli(["crowdfund", "pledge", "riders", "1", "@alice@remote.example", "--keypair", wallets.alice!.file, "--amount", "1"], env);
        assert.equal(early.code, 1);
        assert.match(early.err, /is proposed, not open for pledges/);
        assert.equal(early.err.trim().split("\n").length, 1);

        const approved = await cli(["crowdfund", "approve", "riders", "#1", "--json"], env);
        assert.equal(approved.code, 0, approved.err);
        const cf = JSON.parse(approved.out);
        assert.equal(cf.state, "open");
        assert.equal(cf.cutBps, 500);
        // Announced as a call-to-action linking to the pledge page.
        const action = await m.muster.database.db.selectFrom("actions").selectAll().executeTakeFirstOrThrow();
        assert.equal(action.link, cf.url);
        assert.equal(action.state, "published");

        const p1 = await cli(["crowdfund", "pledge", "riders", "1", "@alice@remote.example", "--keypair", wallets.alice!.file, "--amount", "6", "--json"], env);
        assert.equal(p1.code, 0, p1.err);
        assert.equal(JSON.parse(p1.out).status, "matched");
        const p2 = await cli(["crowdfund", "pledge", "riders", cf.id, "@bob@remote.example", "--keypair", wallets.bob!.file, "--amount", "5.5"], env);
        assert.equal(p2.code, 0, p2.err);
        assert.match(p2.out, /^Pledged 5.5 tokens to crowdfund #1/);
        const badKey = await cli(["crowdfund", "pledge", "riders", "1", "@bob@remote.example", "--keypair", join(dir, "missing.json"), "--amount", "1"], env);
        assert.equal(badKey.code, 2);

        const shown = JSON.parse((await cli(["crowdfund", "show", "riders", "1", "--json"], env)).out);
        assert.equal(shown.vaultBalance, "11500000", "read from the chain through the server's RPC");
        assert.deepEqual(shown.pledges.map((p: { member: string; amount: string; status: string }) => [p.member, p.amount, p.status]), [
          ["@alice@remote.example", "6000000", "matched"], ["@bob@remote.example", "5500000", "matched"],
        ]);
        const listed = JSON.parse((await cli(["crowdfund", "list", "riders", "--json"], env)).out);
        assert.deepEqual(listed.map((c: { seq: number; pledged: string }) => [c.seq, c.pledged]), [[1, "11500000"]]);

        const notDue = await cli(["crowdfund", "settle", "riders", "1"], env);
        assert.equal(notDue.code, 0, notDue.err);
        assert.match(notDue.out, /nothing settled \(use --force/);
        const settled = await cli(["crowdfund", "settle", "riders", "1", "--force"], env);
        assert.equal(settled.code, 0, settled.err);
        assert.match(settled.out, /^Settled crowdfund #1: 10.925 tokens to the beneficiary, 0.575 to the union, vault closed/);
        const beneficiaryAccount = getAssociatedTokenAddressSync(treasury.mint, new (await import("@solana/web3.js")).PublicKey(beneficiary), true);
        assert.equal(await tokenBalance(ledger, beneficiaryAccount), 10_925_000n);
        assert.equal(await tokenBalance(ledger, treasury.account), 575_000n);
        const after = JSON.parse((await cli(["crowdfund", "show", "riders", "1", "--json"], env)).out);
        assert.equal(after.state, "settled");
        assert.equal(after.vaultBalance, "closed");
        assert.deepEqual(after.transactions.map((t: { kind: string; state: string }) => [t.kind, t.state]), [["payout", "confirmed"]]);

        const missing = await cli(["crowdfund", "show", "riders", "#7"], env);
        assert.equal(missing.code, 1);
        assert.match(missing.err, /no crowdfund #7 in this union/);
      } finally {
        await m.stop();
        rmSync(dir, { recursive: true, force: true });
        await tdb.destroy();
      }
    });
  });
}

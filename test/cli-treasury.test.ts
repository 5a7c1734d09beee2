import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { createMuster } from "../src/main.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { verifyWalletProof } from "../src/treasury/wallet-proof.ts";
import { faucetFunding, syncBadge, badgeMintOf } from "../solana/badge-sync.ts";
import { handleLedgerIntent } from "../solana/ledger-lane.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, person } from "./helpers/domain-context.ts";
import { BIN, ORIGIN, ROOT, type Run } from "./helpers/cli-run.ts";
import { startLedger } from "./helpers/solana.ts";

// The CLI talks JSON-RPC to a ledger this process serves: spawnSync would block
// the very event loop that answers it, so commands run asynchronously here.
function run(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, LOG_LEVEL: "error", ORIGIN, ...env } });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("close", (code) => resolve({ code, out, err }));
  });
}
async function ok(args: string[], env: Record<string, string>): Promise<string> {
  const r = await run(args, env);
  assert.equal(r.code, 0, `muster ${args.join(" ")} failed: ${r.err}`);
  return r.out;
}
async function fails(args: string[], env: Record<string, string>, message: RegExp, code = 1): Promise<void> {
  const r = await run(args, env);
  assert.equal(r.code, code, `muster ${args.join(" ")} should exit ${code}: ${r.out} ${r.err}`);
  assert.match(r.err, message);
  assert.equal(r.err.trim().split("\n").length, 1, `one line: ${r.err}`);
}

for (const d of dialects) {
  describe(`treasury, wallet and ledger commands on ${d.name}`, { skip: d.skip }, () => {
    it("links proven wallets, creates a 2-of-3 treasury, moves it only with two signatures, shows it, and a badge refuses to move", async () => {
      const tdb = await d.create();
      const dir = mkdtempSync(join(tmpdir(), "muster-cli-treasury-"));
      const secret = randomBytes(32).toString("hex");
      const m = await createMuster(loadConfig({ DATABASE_URL: tdb.url, ORIGIN, LOG_LEVEL: "error", MUSTER_SECRET_KEY: secret, DATA_DIR: dir }));
      const running = await startLedger(m.database.db);
      const env = { DATABASE_URL: tdb.url, MUSTER_SECRET_KEY: secret, DATA_DIR: dir, SOLANA_RPC_URL: running.url, MUSTER_ALLOW_PRIVATE_ADDRESS: "1" };
      try {
        for (const c of [["wallet", "create"], ["wallet", "link"], ["ledger", "status"], ["ledger", "airdrop"], ["ledger", "transfer"], ["treasury", "create"], ["treasury", "show"], ["treasury", "transfer"], ["treasury", "sign"], ["treasury", "move"]]) {
          assert.match(await ok([...c, "--help"], env), new RegExp(`^Usage: muster ${c.join(" ")}`));
        }
        const status = JSON.parse(await ok(["ledger", "status", "--json"], env)) as { ledger: string; rpcUrl: string; slot: number; blockhash: string };
        assert.deepEqual([status.ledger, status.rpcUrl], ["embedded", running.url]);
        assert.ok(status.slot > 0 && status.blockhash.length >= 32);

        const file = (n: string) => join(dir, `${n}.json`);
        const addr: Record<string, string> = {};
        for (const n of ["ana", "ben", "carol"]) addr[n] = (JSON.parse(await ok(["wallet", "create", "--out", file(n), "--json"], env)) as { address: string }).address;
        await fails(["wallet", "create", "--out", file("ana")], env, /already exists/);
        await fails(["wallet", "create"], env, /--out <file> is required/, 2);

        const union = await createUnion(m.unions, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        for (const n of ["ana", "ben", "carol"]) {
          const j = await requestToJoin(m.membership, union.id, person(n), followId());
          if (n !== "carol") await setOfficer(m.membership, union.id, j.member.id, OPERATOR, "treasurer");
          await ok(["wallet", "link", "riders", `@${n}@remote.example`, "--keypair", file(n)], env);
        }
        await fails(["wallet", "link", "riders", "@ana@remote.example", "--keypair", join(dir, "missing.json")], env, /no such file/);
        const shown = JSON.parse(await ok(["member", "show", "riders", "@ana@remote.example", "--json"], env)) as { standing: string; wallet: string; walletProof: { wallet: string; message: string; signature: string } };
        assert.equal(shown.wallet, addr.ana);
        assert.equal(shown.standing, "good");
        assert.ok(await verifyWalletProof(shown.walletProof), "the proof shown checks out with the wallet's key");
        assert.match(shown.walletProof.message, /Member: https:\/\/remote\.example\/users\/ana/);

        await fails(["treasury", "show", "riders"], env, /no treasury yet; run muster treasury create riders/);
        await changeBylaws(m.membership, union.id, { kind: "operator", reason: "officers co-sign" }, { params: { treasuryThreshold: "2" } });
        const created = JSON.parse(await ok(["treasury", "create", "riders", "--json"], env)) as { authority: string; threshold: number; signers: string[]; tokenAccount: string; mint: string };
        assert.equal(created.threshold, 2);
        assert.deepEqual(created.signers.slice(1), [addr.ana, addr.ben], "the officers' proven wallets; carol is no officer");
        assert.equal(JSON.parse(await ok(["treasury", "create", "riders", "--json"], env)).authority, created.authority, "created once");

        // Fund it with test dues tokens: to the multisig, whose associated account is the treasury.
        await ok(["ledger", "airdrop", created.authority, "--tokens", "5", "--union", "riders"], env);
        await fails(["ledger", "airdrop", created.authority, "--tokens", "5"], env, /--tokens needs --union/, 2);
        await fails(["ledger", "airdrop", "not-an-address"], env, /not a Solana address/);
        await ok(["ledger", "airdrop", addr.ana!, "--sol", "2"], env);
        const show = async () => JSON.parse(await ok(["treasury", "show", "riders", "--json"], env)) as { balance: string; address: string; threshold: number; signers: string[]; custodial: boolean; transfers: { id: number; state: string; signed: string[] }[]; badgeMints: string[] };
        let t = await show();
        assert.deepEqual([t.balance, t.address, t.threshold, t.custodial], ["5000000", created.tokenAccount, 2, false]);

        const prepared = JSON.parse(await ok(["treasury", "transfer", "riders", "--to", addr.carol!, "--amount", "1.5", "--cosigners", addr.ben!, "--json"], env)) as { id: number; state: string };
        assert.equal(prepared.state, "pending");
        await fails(["treasury", "sign", "riders", String(prepared.id), "--keypair", file("carol")], env, /is not one of the signers/);
        await fails(["treasury", "sign", "riders", "x1", "--keypair", file("ben")], env, /a transfer id is a number/, 2);
        const signed = JSON.parse(await ok(["treasury", "sign", "riders", `#${prepared.id}`, "--keypair", file("ben"), "--json"], env)) as { state: string };
        assert.equal(signed.state, "ready");
        // The serving process's ledger lane takes the queued submission.
        const chain = { db: m.database.db, ledger: running.ledger, origin: new URL(ORIGIN), fund: faucetFunding(running.ledger) };
        const lane = await m.database.db.selectFrom("fedify_mq").select("message").where("queue", "=", "ledger").execute();
        for (const row of lane) {
          const { intent } = JSON.parse(row.message) as { intent: OutboxIntent };
          await handleLedgerIntent(chain, { intent });
        }
        t = await show();
        assert.equal(t.balance, "3500000");
        assert.equal(t.transfers[0]!.state, "executed");
        const text = await ok(["treasury", "show", "riders"], env);
        assert.match(text, /Authority: .*\(SPL multisig, 2 of 3\)/);
        assert.match(text, /#1 .* executed {2}3\/3|#1 .* executed {2}2\/2/);

        // Plain transfers: dues tokens move; a soulbound badge does not.
        await ok(["ledger", "transfer", "--mint", created.mint, "--keypair", file("carol"), "--to", addr.ana!, "--amount", "0.5"], env).catch(async () => {
          // carol pays the fee: give her SOL first, then retry.
          await ok(["ledger", "airdrop", addr.carol!], env);
          await ok(["ledger", "transfer", "--mint", created.mint, "--keypair", file("carol"), "--to", addr.ana!, "--amount", "0.5"], env);
        });
        const ana = (await m.database.db.selectFrom("members").select("id").where("handle", "=", "@ana@remote.example").executeTakeFirstOrThrow()).id;
        await syncBadge(chain, union.id, ana);
        const badgeMint = (await badgeMintOf(m.database.db, union.id))!;
        await fails(["ledger", "transfer", "--mint", badgeMint, "--keypair", file("ana"), "--to", addr.carol!, "--amount", "1"], env, /failed|refused/);
        assert.deepEqual((await show()).badgeMints, [badgeMint]);
        const memberText = await ok(["member", "show", "riders", "@ana@remote.example"], env);
        assert.match(memberText, /Standing: +good/);
        assert.match(memberText, new RegExp(`Wallet: +${addr.ana} \\(proven: signed challenge\\)`));
        assert.match(memberText, new RegExp(`Badges: +member minted in ${addr.ana}`));

        // A network ledger (anything that is not Muster's embedded one) refuses airdrops in one line.
        const network = createServer((req, res) => {
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ jsonrpc: "2.0", id: 1, error: { code: -32601, message: "Method not found" } }));
        });
        await new Promise<void>((r) => network.listen(0, "127.0.0.1", () => r()));
        try {
          const url = `http://127.0.0.1:${(network.address() as AddressInfo).port}/`;
          await fails(["ledger", "airdrop", addr.ana!, "--sol", "1"], { ...env, SOLANA_RPC_URL: url }, /airdrops are for the embedded ledger only/);
        } finally {
          network.close();
        }
      } finally {
        await running.close();
        await m.close();
        rmSync(dir, { recursive: true, force: true });
        await tdb.destroy();
      }
    });
  });
}

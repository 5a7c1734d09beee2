import type { Hono } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Ledger } from "../../solana/ledger.ts";
import { explorerUrl, treasuryReport } from "../../solana/treasury-report.ts";
import { duesParamsFromBylaws } from "../treasury/dues-params.ts";
import { getUnionBySlug, type Union } from "../unions/unions.ts";
import { mayReadRoster } from "../members/roster.ts";
import { getMember } from "../members/members.ts";
import { apiError } from "./api-error.ts";
import { errorPage } from "./pages/error.ts";
import { signedInMember } from "./members-web.ts";
import { blockchainIdFor, mountDuesPay } from "./dues-pay.ts";
import { treasuryJson, treasuryPage, type TreasuryView } from "./treasury-page.ts";
import type { Context } from "hono";
import type { Outbox } from "../outbox.ts";
import { formatUnits } from "../../solana/amounts.ts";
import { getTreasury } from "../treasury/treasury.ts";
import { TreasuryError } from "../treasury/dues.ts";
import { cosignAsOfficer, cosignView, messageToCosign } from "../treasury/cosign.ts";
import type { Member } from "../members/members.ts";
import { consoleTreasuryPage } from "./pages/console-treasury.ts";
import { listMoves } from "../treasury/moves.ts";
import { listSpendExecutions } from "../treasury/spends.ts";

export interface TreasuryWebDeps {
  readonly db: Kysely<DB>;
  readonly ledger: Ledger;
  readonly origin: URL;
  /** SOLANA_RPC_URL when the chain is a network; null for the embedded ledger. */
  readonly rpcUrl: string | null;
  /** Where a co-signed transaction's submission is queued once fully signed (the ledger lane). */
  readonly outbox: Outbox;
}

/** Everything the web serves about a union's treasury: dues payment requests and the transparency page. */
export function mountTreasuryWeb(app: Hono, deps: TreasuryWebDeps): void {
  mountDuesPay(app, { db: deps.db, ledger: deps.ledger, origin: deps.origin, duesParams: duesParamsFromBylaws, blockchainId: blockchainIdFor(deps.rpcUrl) });

  const view = async (c: Context, union: Union): Promise<TreasuryView> => {
    const report = await treasuryReport(deps.db, deps.ledger, union.id);
    // Who paid is membership: named only to viewers the roster rule lets see members.
    const shown = await mayReadRoster(deps.db, union, { via: "web", member: await signedInMember(deps.db, c, union) });
    let names: Map<string, string> | null = null;
    if (shown && report) {
      names = new Map();
      for (const id of new Set(report.flows.map((f) => f.memberId).filter((x): x is string => x !== null))) {
        const m = await getMember(deps.db, union.id, id);
        if (m) names.set(id, m.handle ?? m.actorId ?? id);
      }
    }
    return {
      union, report, names, ledger: deps.ledger.kind,
      txUrl: (s) => explorerUrl("tx", s, deps.rpcUrl, deps.origin),
      addressUrl: (a) => explorerUrl("address", a, deps.rpcUrl, deps.origin),
      rpcUrl: deps.rpcUrl ?? new URL("/solana/rpc", deps.origin).href,
      duesPayPath: `/u/${union.slug}/dues/pay`,
      moves: await listMoves(deps.db, union.id),
      spends: await listSpendExecutions(deps.db, union.id),
    };
  };

  app.get("/u/:slug/treasury.json", async (c) => {
    const union = await getUnionBySlug(deps.db, c.req.param("slug"));
    if (!union) return apiError(c, 404, "not_found", "no such union here");
    c.header("Cache-Control", "private, no-cache");
    return c.json(treasuryJson(await view(c, union)));
  });
  app.get("/u/:slug/treasury", async (c) => {
    const union = await getUnionBySlug(deps.db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    c.header("Cache-Control", "private, no-cache");
    return c.html(treasuryPage(await view(c, union)));
  });

  mountCosign(app, deps);
}

const COSIGN_DONE: Record<string, string> = {
  cosigned: "Signed. The transaction waits for the other signers it names.",
  cosigned_ready: "Signed by everyone it names: it is being sent.",
};

/**
 * The console's co-signing: officers see the treasury's transactions and
 * sign those naming their proven wallet, in the browser with their own
 * wallet (public/treasury-cosign.js). Only the leader and officers, signed in.
 */
function mountCosign(app: Hono, deps: TreasuryWebDeps): void {
  type Gate = { ok: true; union: Union; member: Member } | { ok: false; res: Response };
  const gate = async (c: Context, json: boolean): Promise<Gate> => {
    const union = await getUnionBySlug(deps.db, c.req.param("slug") ?? "");
    if (!union) return { ok: false, res: json ? apiError(c, 404, "not_found", "no such union here") : await c.html(errorPage(404, "No such union here."), 404) };
    const member = await signedInMember(deps.db, c, union);
    if (!member) return { ok: false, res: json ? apiError(c, 401, "unauthorized", "sign in first") : c.redirect(`/u/${union.slug}/login`, 303) };
    if (member.state !== "active" || (member.role !== "leader" && member.role !== "officer")) {
      const text = "Only the leader and officers can open the console.";
      return { ok: false, res: json ? apiError(c, 403, "forbidden", text) : await c.html(errorPage(403, text), 403) };
    }
    return { ok: true, union, member };
  };
  const transferId = (c: Context): number | null => {
    const id = c.req.param("id") ?? "";
    return /^[1-9][0-9]{0,9}$/.test(id) ? Number(id) : null;
  };
  const refused = (c: Context, e: unknown) => {
    if (!(e instanceof TreasuryError)) throw e;
    return apiError(c, e.code === "not_found" ? 404 : 400, e.code, e.message);
  };

  app.get("/u/:slug/console/treasury", async (c) => {
    const g = await gate(c, false);
    if (!g.ok) return g.res;
    const [view, treasury] = await Promise.all([cosignView(deps.db, g.union.id, g.member.id), getTreasury(deps.db, g.union.id)]);
    c.header("Cache-Control", "private, no-store");
    return c.html(consoleTreasuryPage({
      union: g.union, viewer: g.member, wallet: view.wallet, transfers: view.transfers,
      hasTreasury: treasury !== undefined, threshold: treasury?.threshold ?? null, signerCount: treasury?.signers.length ?? null,
      amount: (a) => formatUnits(a, treasury?.decimals ?? 0), txUrl: (s) => explorerUrl("tx", s, deps.rpcUrl, deps.origin),
      notice: COSIGN_DONE[c.req.query("done") ?? ""],
    }));
  });

  app.get("/u/:slug/console/treasury/:id/message", async (c) => {
    const g = await gate(c, true);
    if (!g.ok) return g.res;
    const id = transferId(c);
    if (id === null) return apiError(c, 400, "invalid", "a transaction id is a positive whole number");
    try {
      const { message, wallet } = await messageToCosign(deps.db, g.union.id, g.member.id, id);
      c.header("Cache-Control", "private, no-store");
      return c.json({ id, signer: wallet, message: Buffer.from(message).toString("base64") });
    } catch (e) {
      return refused(c, e);
    }
  });

  app.post("/u/:slug/console/treasury/:id/signature", async (c) => {
    const g = await gate(c, true);
    if (!g.ok) return g.res;
    const id = transferId(c);
    if (id === null) return apiError(c, 400, "invalid", "a transaction id is a positive whole number");
    // JSON only: a cross-site form cannot send it, and a cross-site fetch of it needs CORS this server never grants.
    if (!/^application\/json\b/.test(c.req.header("content-type") ?? "")) return apiError(c, 415, "invalid", "send JSON: {\"signature\": \"…\"}");
    let body: { signature?: unknown };
    try {
      body = await c.req.json();
    } catch {
      return apiError(c, 400, "invalid", "expected JSON with a signature");
    }
    if (typeof body?.signature !== "string" || body.signature.length > 200) return apiError(c, 400, "invalid", "expected JSON with a signature (base58 or base64, 64 bytes)");
    try {
      const t = await cosignAsOfficer(deps, g.union.id, g.member.id, id, body.signature);
      return c.json({ id: t.id, state: t.state, signed: t.signed.length, required: t.required.length });
    } catch (e) {
      return refused(c, e);
    }
  });
}

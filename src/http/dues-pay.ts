import { ACTIONS_CORS_HEADERS, type ActionGetResponse, type ActionPostResponse, type ActionsJson, BLOCKCHAIN_IDS, createPostResponse } from "@solana/actions";
import type { Context, Hono } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Ledger } from "../../solana/ledger.ts";
import { buildDuesTransaction, duesTerms, parsePayerAccount, PayRequestError, solanaPayLink } from "../../solana/solana-pay.ts";
import type { DuesParamsSource } from "../treasury/dues-params.ts";
import { issueDuesReference } from "../treasury/dues-references.ts";
import { getUnionBySlug, normaliseHandle, type Union } from "../unions/unions.ts";
import { findMemberByHandle, getMember, type Member } from "../members/members.ts";
import { UnionError } from "../unions/unions.ts";
import { isMemberIdForm } from "../members/member-id.ts";

export interface DuesPayDeps {
  readonly db: Kysely<DB>;
  readonly ledger: Ledger;
  readonly origin: URL;
  readonly duesParams: DuesParamsSource;
  /** The cluster's CAIP-2 id for X-Blockchain-Ids, when it is a public cluster. */
  readonly blockchainId?: string | undefined;
}

/** The Actions spec version these responses follow (@solana/actions 1.6.6 implements 2.4). */
const ACTION_VERSION = "2.4";
const MAX_BODY = 4096;

/** The request path of a member's dues payment; also its Solana Pay link and its Action URL. */
export function duesPayPath(slug: string, handleOrId: string): string {
  return `/u/${slug}/dues/pay?member=${encodeURIComponent(handleOrId)}`;
}

/** The blockchain id a wallet checks, from the RPC URL's cluster (none for a local or embedded ledger). */
export function blockchainIdFor(rpcUrl: string | null): string | undefined {
  if (!rpcUrl) return undefined;
  if (/devnet/.test(rpcUrl)) return BLOCKCHAIN_IDS.devnet;
  if (/testnet/.test(rpcUrl)) return BLOCKCHAIN_IDS.testnet;
  if (/mainnet/.test(rpcUrl)) return BLOCKCHAIN_IDS.mainnet;
  return undefined;
}

/**
 * Dues by Solana Pay transaction request, which is also a Solana Action:
 * GET answers the label and icon (Solana Pay) plus the title, description
 * and links an Action needs; POST {account} answers the unsigned transaction
 * for that wallet to sign. `/actions.json` at the origin maps the path.
 */
export function mountDuesPay(app: Hono, deps: DuesPayDeps): void {
  const headers = (c: Context) => {
    for (const [k, v] of Object.entries(ACTIONS_CORS_HEADERS)) c.header(k, v);
    c.header("X-Action-Version", ACTION_VERSION);
    if (deps.blockchainId) c.header("X-Blockchain-Ids", deps.blockchainId);
  };
  const fail = (c: Context, status: 400 | 404 | 409, message: string) => {
    headers(c);
    return c.json({ message }, status);
  };

  app.get("/actions.json", (c) => {
    headers(c);
    const body: ActionsJson = { rules: [{ pathPattern: "/u/*/dues/pay", apiPath: "/u/*/dues/pay" }] };
    return c.json(body);
  });
  app.options("/actions.json", (c) => {
    headers(c);
    return c.body(null, 204);
  });
  app.options("/u/:slug/dues/pay", (c) => {
    headers(c);
    return c.body(null, 204);
  });

  const resolve = async (c: Context): Promise<{ union: Union; member: Member } | Response> => {
    const union = await getUnionBySlug(deps.db, c.req.param("slug") ?? "");
    if (!union) return fail(c, 404, "no such union here");
    const who = (c.req.query("member") ?? "").trim();
    if (!who) return fail(c, 400, "say whose dues: ?member=@user@host");
    let member: Member | undefined;
    if (who.includes("@")) {
      let handle: string;
      try {
        handle = normaliseHandle(who);
      } catch (e) {
        if (e instanceof UnionError) return fail(c, 400, e.message);
        throw e;
      }
      member = await findMemberByHandle(deps.db, union.id, handle);
    } else if (isMemberIdForm(who)) {
      member = await getMember(deps.db, union.id, who);
    }
    if (!member || member.actorId === null) return fail(c, 404, `no member ${who.slice(0, 100)} in this union`);
    if (member.state !== "active") return fail(c, 409, `${member.handle ?? who} is ${member.state}, not an active member`);
    return { union, member };
  };

  app.get("/u/:slug/dues/pay", async (c) => {
    const found = await resolve(c);
    if (found instanceof Response) return found;
    const { union, member } = found;
    let terms;
    try {
      terms = await duesTerms(deps.db, deps.ledger, deps.duesParams, union.id);
    } catch (e) {
      if (e instanceof PayRequestError) return fail(c, e.status, e.message);
      throw e;
    }
    const href = duesPayPath(union.slug, member.handle ?? member.id);
    const body: ActionGetResponse = {
      type: "action",
      icon: union.iconUrl ?? new URL("/public/favicon.svg", deps.origin).href,
      title: `${union.name}: dues`,
      description: `Dues of ${terms.display} for ${member.handle ?? member.actorId}, paid into the union's treasury ${terms.destination}. The payment names the member in a memo.`,
      label: `Pay ${terms.display}`,
      links: { actions: [{ type: "transaction", label: `Pay ${terms.display}`, href }] },
    };
    headers(c);
    c.header("Cache-Control", "no-store");
    return c.json({ ...body, solanaPay: solanaPayLink(new URL(href, deps.origin)) });
  });

  app.post("/u/:slug/dues/pay", async (c) => {
    const found = await resolve(c);
    if (found instanceof Response) return found;
    const { union, member } = found;
    const text = await c.req.text();
    if (text.length > MAX_BODY) return fail(c, 400, "the request body is too large");
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return fail(c, 400, "the body must be JSON: {\"account\": \"<wallet address>\"}");
    }
    try {
      const payer = parsePayerAccount((body as { account?: unknown } | null)?.account);
      const terms = await duesTerms(deps.db, deps.ledger, deps.duesParams, union.id);
      const built = await buildDuesTransaction(deps.ledger, terms, payer, member.actorId!);
      // Kept so the scan finds this payment by its reference even if it goes astray (wrong account or mint).
      await issueDuesReference(deps.db, {
        reference: built.reference, unionId: union.id, memberId: member.id, payer: payer.toBase58(), amount: terms.amount, mint: terms.mint, destination: terms.destination,
      });
      const response: ActionPostResponse = await createPostResponse({
        fields: { type: "transaction", transaction: built.transaction, message: `Dues of ${terms.display} to ${union.name} for ${member.handle ?? member.actorId}` },
      });
      headers(c);
      c.header("Cache-Control", "no-store");
      return c.json({ ...response, reference: built.reference });
    } catch (e) {
      if (e instanceof PayRequestError) return fail(c, e.status, e.message);
      throw e;
    }
  });
}

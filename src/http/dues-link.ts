import { renderSVG } from "uqr";
import { formatUnits } from "../../solana/amounts.ts";
import { readBylaws } from "../bylaws/bylaws.ts";
import type { DB } from "../db/schema.ts";
import type { Kysely } from "kysely";
import type { Member } from "../members/members.ts";
import { getTreasury } from "../treasury/treasury.ts";
import type { Union } from "../unions/unions.ts";

/** What the member's page offers for paying dues: the Solana Pay link, its QR code, the request URL the page's wallet button uses. */
export interface DuesPayOffer {
  /** `solana:<URL-encoded https link>`: a Solana Pay transaction request any wallet app opens. */
  readonly link: string;
  /** The transaction request itself (same origin), for the wallet in this browser. */
  readonly requestUrl: string;
  /** The link as a QR code, an SVG drawn on the server (uqr): no script, no external image. */
  readonly qrSvg: string;
  /** "5 tokens". */
  readonly display: string;
}

/**
 * The member's dues payment offer, or null when the union takes no dues
 * (every member is in good standing) or has no treasury yet. The path is
 * the one src/http/dues-pay.ts serves (duesPayPath there; not imported, so
 * pages never load the Solana modules).
 */
export async function duesPayOffer(db: Kysely<DB>, origin: URL, union: Union, member: Member): Promise<DuesPayOffer | null> {
  const { duesAmount } = (await readBylaws(db, union.id)).params;
  if (duesAmount === 0n) return null;
  const treasury = await getTreasury(db, union.id);
  if (!treasury) return null;
  const requestUrl = new URL(`/u/${union.slug}/dues/pay?member=${encodeURIComponent(member.handle ?? member.id)}`, origin).href;
  const link = `solana:${encodeURIComponent(requestUrl)}`;
  return { link, requestUrl, qrSvg: renderSVG(link, { pixelSize: 4, border: 2 }), display: `${formatUnits(duesAmount, treasury.decimals)} tokens` };
}

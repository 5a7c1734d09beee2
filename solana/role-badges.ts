import "./quiet-bindings.ts";
import { Keypair } from "@solana/web3.js";
import { logger } from "../src/logging.ts";
import { wantedRoleBadges, type BadgeRole } from "../src/treasury/badges.ts";
import { getUnionById } from "../src/unions/unions.ts";
import { badgeBalance, signBurnBadge, signCreateBadgeMint, signMintBadge, type SignedTransaction } from "./badges.ts";
import { resubmit, treasuryKey, type BadgeSyncDeps } from "./badge-sync.ts";

const log = logger("solana", "badges");

const SPEC: Record<BadgeRole, { name: string; symbol: string }> = {
  leader: { name: "leader", symbol: "LEADER" },
  officer: { name: "officer", symbol: "OFFICER" },
};

/**
 * Makes the chain match the member's roles: a leader's badge while they
 * lead, an officer's while they hold an office, in their linked wallet; the
 * permanent delegate (the union's server key) burns it when the role is lost
 * (recall, another elected, dismissal, leaving). Soulbound like the member
 * badge (solana/badges.ts: NonTransferable Token-2022, one mint per union and
 * role). Safe to repeat: balances are read first, and signed bytes are
 * stored before they are sent and sent again after a crash.
 */
export async function syncRoleBadges(deps: BadgeSyncDeps, unionId: string, memberId: string): Promise<Record<BadgeRole, bigint>> {
  const out: Record<BadgeRole, bigint> = { leader: 0n, officer: 0n };
  const union = await getUnionById(deps.db, unionId);
  if (!union) return out;
  const wanted = await wantedRoleBadges(deps.db, unionId, memberId);
  for (const role of ["leader", "officer"] as const) {
    const want = wanted.roles.includes(role) && wanted.wallet !== null;
    const readPrior = () => deps.db.selectFrom("role_badges").selectAll().where("union_id", "=", unionId).where("member_id", "=", memberId).where("role", "=", role).executeTakeFirst();
    let prior = await readPrior();
    if (!want && (!prior || prior.state === "burned")) continue;
    const key = await treasuryKey(deps.db, unionId);
    await deps.fund?.(key.publicKey.toBase58());
    const mint = await ensureRoleMint(deps, unionId, role, key, { name: `${union.name} ${SPEC[role].name}`, symbol: SPEC[role].symbol, uri: new URL(`/u/${union.slug}`, deps.origin).href });
    const row = (patch: { wallet: string; state: string; signature?: string | null; tx?: SignedTransaction | null }) => {
      const values = {
        wallet: patch.wallet, state: patch.state, signature: patch.signature ?? null,
        raw: patch.tx ? Buffer.from(patch.tx.raw).toString("base64") : null, last_valid_block_height: patch.tx?.lastValidBlockHeight ?? null, updated_at: Date.now(),
      };
      return deps.db.insertInto("role_badges").values({ union_id: unionId, member_id: memberId, role, ...values })
        .onConflict((oc) => oc.columns(["union_id", "member_id", "role"]).doUpdateSet(values)).execute();
    };
    if (prior?.raw) {
      const signature = await resubmit(deps.ledger, prior.raw, Number(prior.last_valid_block_height), "role badge");
      await row({ wallet: prior.wallet, state: signature ? prior.state.replace("pending_", "") : "unsent", signature });
      prior = await readPrior();
    }
    const burnFrom = prior && prior.state !== "burned" && (!want || prior.wallet !== wanted.wallet) ? prior.wallet : null;
    if (burnFrom) {
      const held = await badgeBalance(deps.ledger, mint, burnFrom);
      if (held > 0n) {
        const tx = await signBurnBadge(deps.ledger, key, mint, burnFrom, held);
        await row({ wallet: burnFrom, state: "pending_burn", tx });
        const signature = await deps.ledger.submit(tx.raw, { lastValidBlockHeight: tx.lastValidBlockHeight, commitment: "confirmed" });
        await row({ wallet: burnFrom, state: "burned", signature });
        log.info("Burned the {role} badge of member {memberId} in union {unionId}", { role, memberId, unionId });
      } else {
        await row({ wallet: burnFrom, state: "burned", signature: prior?.signature ?? null });
      }
    }
    if (!want) continue;
    const wallet = wanted.wallet!;
    const balance = await badgeBalance(deps.ledger, mint, wallet);
    if (balance >= 1n) {
      await row({ wallet, state: "minted", signature: prior?.wallet === wallet ? prior.signature : null });
      out[role] = balance;
      continue;
    }
    const tx = await signMintBadge(deps.ledger, key, mint, wallet);
    await row({ wallet, state: "pending_mint", tx });
    const signature = await deps.ledger.submit(tx.raw, { lastValidBlockHeight: tx.lastValidBlockHeight, commitment: "confirmed" });
    await row({ wallet, state: "minted", signature });
    log.info("Minted a {role} badge for member {memberId} in union {unionId}", { role, memberId, unionId });
    out[role] = 1n;
  }
  return out;
}

/** The union's badge mint for a role, created on-chain on first use (stored signed before it is sent). */
async function ensureRoleMint(deps: BadgeSyncDeps, unionId: string, role: BadgeRole, key: Keypair, spec: { name: string; symbol: string; uri: string }): Promise<string> {
  const find = () => deps.db.selectFrom("role_badge_mints").selectAll().where("union_id", "=", unionId).where("role", "=", role).executeTakeFirst();
  const existing = await find();
  if (existing?.signature) return existing.mint;
  if (existing?.raw) {
    const signature = await resubmit(deps.ledger, existing.raw, Number(existing.last_valid_block_height), "role badge");
    if (signature) {
      await deps.db.updateTable("role_badge_mints").set({ signature, raw: null, last_valid_block_height: null }).where("union_id", "=", unionId).where("role", "=", role).execute();
      return existing.mint;
    }
    await deps.db.deleteFrom("role_badge_mints").where("union_id", "=", unionId).where("role", "=", role).execute();
  }
  const mint = Keypair.generate();
  const tx = await signCreateBadgeMint(deps.ledger, key, mint, spec);
  const inserted = await deps.db.insertInto("role_badge_mints").values({
    union_id: unionId, role, mint: mint.publicKey.toBase58(), signature: null, raw: Buffer.from(tx.raw).toString("base64"), last_valid_block_height: tx.lastValidBlockHeight, created_at: Date.now(),
  }).onConflict((oc) => oc.columns(["union_id", "role"]).doNothing()).executeTakeFirst();
  // Another worker stored its creation first: that one is the mint.
  if (Number(inserted.numInsertedOrUpdatedRows ?? 1n) === 0) return ensureRoleMint(deps, unionId, role, key, spec);
  const signature = await deps.ledger.submit(tx.raw, { lastValidBlockHeight: tx.lastValidBlockHeight, commitment: "confirmed" });
  await deps.db.updateTable("role_badge_mints").set({ signature, raw: null, last_valid_block_height: null }).where("union_id", "=", unionId).where("role", "=", role).execute();
  return mint.publicKey.toBase58();
}

/** The union's role badge mints that exist on-chain. */
export async function roleBadgeMints(deps: Pick<BadgeSyncDeps, "db">, unionId: string): Promise<Partial<Record<BadgeRole, string>>> {
  const rows = await deps.db.selectFrom("role_badge_mints").select(["role", "mint"]).where("union_id", "=", unionId).where("signature", "is not", null).execute();
  return Object.fromEntries(rows.map((r) => [r.role, r.mint]));
}

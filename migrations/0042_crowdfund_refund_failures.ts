import type { Kysely } from "kysely";

// A refund the chain cannot make (the pledger closed or froze the account the
// pledge came from) is recorded with its reason instead of failing its whole
// batch; its tokens go to the union's treasury account, held for the pledger,
// so the vault still empties and closes (solana/crowdfund-settlement.ts).

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("crowdfund_pledges").addColumn("refund_failure", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("crowdfund_pledges").dropColumn("refund_failure").execute();
}

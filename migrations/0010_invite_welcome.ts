import type { Kysely } from "kysely";

// The invite a member is handed on joining is marked, so that an invite they
// make themselves can take its places from it instead of being refused by
// the union's limit right after joining.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("invites").addColumn("welcome", "integer", (c) => c.notNull().defaultTo(0)).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("invites").dropColumn("welcome").execute();
}

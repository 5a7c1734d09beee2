import type { Kysely } from "kysely";

// Proposals members vote on, their ballots (one row per chosen option), and
// standing delegations of a member's vote.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("proposals")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("number", "integer", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("title", "text", (c) => c.notNull())
    .addColumn("text_md", "text", (c) => c.notNull())
    // JSON array of option texts; a vote names its option by text.
    .addColumn("options", "text", (c) => c.notNull())
    .addColumn("multiple", "integer", (c) => c.notNull())
    // JSON: what passing does (parameters, a role, a spend).
    .addColumn("change", "text", (c) => c.notNull())
    // The bylaws version in force at opening decides quorum, threshold and delegation.
    .addColumn("bylaws_version", "integer", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("opened_by", "text")
    .addColumn("opened_at", "bigint", (c) => c.notNull())
    .addColumn("closes_at", "bigint", (c) => c.notNull())
    .addColumn("eligible_count", "integer", (c) => c.notNull())
    .addColumn("closed_at", "bigint")
    .addColumn("outcome", "text")
    .execute();
  await db.schema.createIndex("proposals_union_number").on("proposals").columns(["union_id", "number"]).unique().execute();
  await db.schema.createIndex("proposals_open").on("proposals").columns(["state", "closes_at"]).execute();

  await db.schema.createTable("ballots")
    .addColumn("proposal_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("option", "integer", (c) => c.notNull())
    // `activity` (a poll answer; source_id is the Note's id) or `web`.
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("source_id", "text", (c) => c.notNull())
    .addColumn("cast_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("ballots_pk", ["proposal_id", "member_id", "option"])
    .execute();

  await db.schema.createTable("delegations")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("delegator_id", "text", (c) => c.notNull())
    // `all` or a proposal kind.
    .addColumn("scope", "text", (c) => c.notNull())
    .addColumn("delegate_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("delegations_pk", ["union_id", "delegator_id", "scope"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["delegations", "ballots", "proposals"]) await db.schema.dropTable(t).execute();
}

import type { Kysely } from "kysely";

// Each union's bylaws: every version kept, the highest in force. The union's
// old setting columns stay as the projection of the version in force (hot
// paths read them with the union row); only src/bylaws writes them.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("bylaws_versions")
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("version", "integer", (c) => c.notNull())
    .addColumn("text_md", "text", (c) => c.notNull())
    // JSON object of parameter values; keys missing from an old version take
    // their documented default when read.
    .addColumn("params", "text", (c) => c.notNull())
    // `founding`, `migration`, `proposal` or `operator`.
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("proposal_id", "text")
    .addColumn("reason", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("bylaws_versions_pk", ["union_id", "version"])
    .execute();

  // Existing unions start from what their settings say today.
  const unions = await db.selectFrom("unions").selectAll().execute();
  const now = Date.now();
  for (const u of unions) {
    const params = {
      joinPolicy: u.join_policy,
      memberInviteLimit: Number(u.member_invite_limit),
      membersVisibility: u.members_visibility,
      actionsVisibility: u.actions_visibility,
      commitmentWords: String(u.commitment_words).split(",").filter(Boolean),
      timeZone: u.time_zone,
      publishTime: u.publish_time,
    };
    await db.insertInto("bylaws_versions").values({
      union_id: u.id,
      version: 1,
      text_md: "",
      params: JSON.stringify(params),
      source: "migration",
      proposal_id: null,
      reason: "settings in force when bylaws were introduced",
      created_at: now,
    }).execute();
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("bylaws_versions").execute();
}

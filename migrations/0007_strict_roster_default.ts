import type { Kysely } from "kysely";

// New unions show their roster to signed-in members on the web and to the
// leader and officers over the fediverse ("signed-in"); the old default,
// "members", let any account on a member's server read it. Existing unions
// keep the value they have: it was either chosen, or it is what their
// members were told when they joined, and changing what a union shows is a
// decision for its officers (`muster union set --visibility`), not for an
// upgrade.
//
// SQLite cannot change a column's default in place, so the column is
// rebuilt (add, copy, drop, rename), the same statements on both dialects.
export async function up(db: Kysely<any>): Promise<void> {
  await rebuild(db, "signed-in", null);
}

export async function down(db: Kysely<any>): Promise<void> {
  // The old code knows no "signed-in": its strictest neighbour keeps the roster private.
  await rebuild(db, "members", { from: "signed-in", to: "officers" });
}

async function rebuild(db: Kysely<any>, defaultValue: string, map: { from: string; to: string } | null): Promise<void> {
  await db.schema.alterTable("unions").addColumn("members_visibility_next", "text", (c) => c.notNull().defaultTo(defaultValue)).execute();
  await db.updateTable("unions").set((eb) => ({ members_visibility_next: eb.ref("members_visibility") })).execute();
  if (map) await db.updateTable("unions").set({ members_visibility_next: map.to }).where("members_visibility_next", "=", map.from).execute();
  await db.schema.alterTable("unions").dropColumn("members_visibility").execute();
  await db.schema.alterTable("unions").renameColumn("members_visibility_next", "members_visibility").execute();
}

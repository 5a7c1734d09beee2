import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// The union's actor document, WebFinger and NodeInfo are served from a cached
// serialization (src/http/read-cache.ts). The cache must notice any change to
// what they show, from any process (a `muster` CLI edit, a worker handling an
// ally's Accept), so the database counts the changes itself: every write to
// the tables those documents are built from bumps one version number, and a
// cached copy is good only while the number it was built at is current.
//
// The tables: unions (name, purpose, icon, bylaws' projection such as
// manuallyApprovesFollowers), actor_keys (key rotation) and
// union_relationships (the "Parent union" attachment).
const TABLES = ["unions", "actor_keys", "union_relationships"] as const;

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("document_versions")
    .addColumn("scope", "varchar(32)", (c) => c.primaryKey())
    .addColumn("version", "bigint", (c) => c.notNull())
    .execute();
  await sql`insert into document_versions (scope, version) values ('documents', 1)`.execute(db);
  if (isPostgres(db)) {
    await sql.raw(`create function muster_bump_documents() returns trigger language plpgsql as $$
      begin
        update document_versions set version = version + 1 where scope = 'documents';
        return null;
      end $$`).execute(db);
    for (const t of TABLES) {
      await sql.raw(`create trigger ${t}_documents after insert or update or delete on ${t} for each statement execute function muster_bump_documents()`).execute(db);
    }
  } else {
    for (const t of TABLES) {
      for (const event of ["insert", "update", "delete"]) {
        await sql.raw(`create trigger ${t}_documents_${event} after ${event} on ${t} begin update document_versions set version = version + 1 where scope = 'documents'; end`).execute(db);
      }
    }
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  if (isPostgres(db)) {
    for (const t of TABLES) await sql.raw(`drop trigger if exists ${t}_documents on ${t}`).execute(db);
    await sql.raw(`drop function if exists muster_bump_documents()`).execute(db);
  } else {
    for (const t of TABLES) for (const event of ["insert", "update", "delete"]) await sql.raw(`drop trigger if exists ${t}_documents_${event}`).execute(db);
  }
  await db.schema.dropTable("document_versions").execute();
}

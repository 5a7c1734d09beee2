import { type CreateTableBuilder, type Kysely, PostgresAdapter } from "kysely";

// Migrations run unchanged on both dialects; the one thing they cannot share
// is how an auto-incrementing key is spelled, so that lives here.

export function isPostgres(db: Kysely<any>): boolean {
  return db.getExecutor().adapter instanceof PostgresAdapter;
}

export function autoIncrementId<T extends string>(db: Kysely<any>, table: CreateTableBuilder<T, never>): CreateTableBuilder<T, "id"> {
  return isPostgres(db)
    ? table.addColumn("id", "bigserial", (c) => c.primaryKey())
    : table.addColumn("id", "integer", (c) => c.primaryKey().autoIncrement());
}

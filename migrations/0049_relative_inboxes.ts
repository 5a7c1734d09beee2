import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Cached actors' inboxes, stored relative to the actor id the row already
// holds (src/actors/remote-actors.ts storedUrl): "" for `${id}/inbox`, and a
// path for a URL on the id's origin. Rows written before keep reading as they
// are (an absolute URL reads as itself); this brings them to the short form.
// One statement per scheme and column, so a million rows take seconds.
// Down writes the absolute URLs back.
export async function up(db: Kysely<any>): Promise<void> {
  const instr = isPostgres(db) ? sql.raw("strpos") : sql.raw("instr");
  await sql`update remote_actors set inbox = '' where inbox = id || '/inbox'`.execute(db);
  for (const scheme of ["https://", "http://"]) {
    const p = scheme.length;
    // "https://host" of "https://host/users/x": the scheme, then up to the first "/".
    const origin = sql`substr(id, 1, ${sql.lit(p)} + ${instr}(substr(id, ${sql.lit(p + 1)}), '/') - 1)`;
    for (const column of ["inbox", "shared_inbox"]) {
      const c = sql.ref(column);
      await sql`update remote_actors set ${c} = substr(${c}, length(${origin}) + 1)
        where substr(id, 1, ${sql.lit(p)}) = ${scheme} and ${instr}(substr(id, ${sql.lit(p + 1)}), '/') > 0
          and substr(${c}, 1, length(${origin}) + 1) = ${origin} || '/'`.execute(db);
    }
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  const instr = isPostgres(db) ? sql.raw("strpos") : sql.raw("instr");
  await sql`update remote_actors set inbox = id || '/inbox' where inbox = ''`.execute(db);
  for (const scheme of ["https://", "http://"]) {
    const p = scheme.length;
    const origin = sql`substr(id, 1, ${sql.lit(p)} + ${instr}(substr(id, ${sql.lit(p + 1)}), '/') - 1)`;
    for (const column of ["inbox", "shared_inbox"]) {
      const c = sql.ref(column);
      await sql`update remote_actors set ${c} = ${origin} || ${c}
        where substr(id, 1, ${sql.lit(p)}) = ${scheme} and ${instr}(substr(id, ${sql.lit(p + 1)}), '/') > 0 and substr(${c}, 1, 1) = '/'`.execute(db);
    }
  }
}

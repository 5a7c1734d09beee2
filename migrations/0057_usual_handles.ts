import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// A cached actor's handle is `@${preferredUsername}@${host of id}`, and for
// most servers (Mastodon, Pleroma, GoToSocial) the username is the id's last
// path segment: the handle repeats the id it sits next to, about 36 bytes a
// member at a million members (issue 16). Such a handle is now stored as ""
// (src/actors/remote-actors.ts usualHandle, storedHandle, handleOf); this
// brings the rows written before to that form, and down writes them back.
//
// `usual` is usualHandle in SQL, on both dialects: the host is what lies
// between "://" and the next "/", the last segment what follows the last "/"
// (rtrim strips every trailing character that is not a "/", SQLite having no
// reverse()). One statement, so a million rows take seconds.

/** SQL for usualHandle(id) of src/actors/remote-actors.ts; null where it is null. */
export function usualHandleSql(pg: boolean, id: string): string {
  const instr = (hay: string, needle: string) => (pg ? `strpos(${hay}, ${needle})` : `instr(${hay}, ${needle})`);
  const scheme = instr(id, "'://'");
  const slash = instr(`substr(${id}, ${scheme} + 3)`, "'/'");
  const host = `substr(${id}, ${scheme} + 3, ${slash} - 1)`;
  const last = `substr(${id}, length(rtrim(${id}, replace(${id}, '/', ''))) + 1)`;
  return `(case when ${scheme} = 0 or ${slash} = 0 then null else '@' || ${last} || '@' || ${host} end)`;
}

export async function up(db: Kysely<any>): Promise<void> {
  const usual = sql.raw(usualHandleSql(isPostgres(db), "id"));
  await sql`update remote_actors set handle = '' where handle = ${usual}`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  const usual = sql.raw(usualHandleSql(isPostgres(db), "id"));
  await sql`update remote_actors set handle = ${usual} where handle = ''`.execute(db);
}

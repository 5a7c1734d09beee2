import { type Kysely, sql } from "kysely";

// Remote actors stored before their fields were capped (issue 12) can hold a
// summary of 31 million characters, a name of 100,000, URLs of any length and
// bidi overrides that make one handle display as another's. This brings those
// rows to what is stored today (src/actors/remote-actors.ts, copied here so
// this migration keeps meaning what it meant). Running it again changes
// nothing. There is no down: the cut text is not kept.

const LIMITS = { name: 200, summary: 5000, preferredUsername: 100, url: 2048 } as const;
const BIDI_AND_CONTROLS = /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\u061C\u200B\u200E\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF]/g;
const BAD_USERNAME = /[@\s/\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Z}]/u;
const BATCH = 500;

function boundedText(value: string | null, max: number): string | null {
  if (value == null) return null;
  const clean = value.replace(BIDI_AND_CONTROLS, "");
  const chars = Array.from(clean);
  return chars.length <= max ? clean : `${chars.slice(0, max - 1).join("")}…`;
}

export async function up(db: Kysely<any>): Promise<void> {
  // First in SQL, so the huge values are never loaded: URLs too long to be
  // real are dropped (a cut URL points elsewhere), usernames too long lose
  // their handle, and long text is cut to four times its limit (room for
  // the characters the pass below strips), which that pass then turns into
  // the stored form (limit - 1 characters and "…").
  for (const column of ["url", "avatar_url"]) {
    await db.updateTable("remote_actors").set({ [column]: null }).where(sql`length(${sql.ref(column)})`, ">", LIMITS.url).execute();
  }
  await db.updateTable("remote_actors").set({ preferred_username: null, handle: null })
    .where(sql`length(preferred_username)`, ">", LIMITS.preferredUsername).execute();
  for (const [column, max] of [["name", LIMITS.name], ["summary", LIMITS.summary]] as const) {
    const margin = 4 * max;
    await db.updateTable("remote_actors").set({ [column]: sql`substr(${sql.ref(column)}, 1, ${margin})` })
      .where(sql`length(${sql.ref(column)})`, ">", margin).execute();
  }
  // Then each row, in pages: control and bidi characters out of the text, and
  // no handle for a username that could display as someone else's.
  let after = "";
  for (;;) {
    const rows = await db.selectFrom("remote_actors").select(["id", "name", "summary", "preferred_username", "handle"])
      .where("id", ">", after).orderBy("id").limit(BATCH).execute() as Array<{ id: string; name: string | null; summary: string | null; preferred_username: string | null; handle: string | null }>;
    if (rows.length === 0) break;
    for (const r of rows) {
      const name = boundedText(r.name, LIMITS.name);
      const summary = boundedText(r.summary, LIMITS.summary);
      const spoofable = (r.preferred_username != null && BAD_USERNAME.test(r.preferred_username)) || (r.handle != null && r.handle !== r.handle.replace(BIDI_AND_CONTROLS, ""));
      const handle = spoofable ? null : r.handle;
      if (name !== r.name || summary !== r.summary || handle !== r.handle) {
        await db.updateTable("remote_actors").set({ name, summary, handle }).where("id", "=", r.id).execute();
      }
    }
    after = rows.at(-1)!.id;
  }
}

export async function down(): Promise<void> {}

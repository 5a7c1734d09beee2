import type { Kysely } from "kysely";
import type { DB } from "../../db/schema.ts";
import type { Muster } from "../../main.ts";
import { createInvite, getInviteByCode, type Invite, inviteStatus, listInvites, revokeInvite } from "../../members/invites.ts";
import { getMember, IN_TREE, type Member, OPERATOR } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import {
  CliError,
  type Command,
  iso,
  JSON_OPT,
  out,
  parseCount,
  parseDuration,
  print,
  requireMember,
  requireUnion,
  shortDate,
  str,
  table,
  UsageError,
  withMuster,
} from "../command.ts";

export function inviteUrl(m: Muster, union: Union, code: string): string {
  return new URL(`/u/${union.slug}/join/${encodeURIComponent(code)}`, m.config.origin).href;
}

/** Looks sponsors up once each: a union hands every member an invite, so creators repeat little. */
function sponsorLookup(db: Kysely<DB>, unionId: string) {
  const cache = new Map<string, Promise<Member | undefined>>();
  return (id: string | null) => {
    if (id === null) return Promise.resolve(undefined);
    let p = cache.get(id);
    if (!p) cache.set(id, (p = getMember(db, unionId, id)));
    return p;
  };
}

function inviteJson(m: Muster, union: Union, i: Invite, sponsor: Member | undefined) {
  return {
    code: i.code,
    url: inviteUrl(m, union, i.code),
    sponsor: sponsor ? { handle: sponsor.handle, actorId: sponsor.actorId } : null,
    uses: i.uses,
    maxUses: i.maxUses,
    status: inviteStatus(i),
    expiresAt: iso(i.expiresAt),
    revokedAt: iso(i.revokedAt),
    createdAt: iso(i.createdAt),
  };
}

/** Accepts a bare code or a whole invite URL (codes may start with "-"; a URL never does). */
function codeOf(raw: string): string {
  const m = /\/join\/([^/?#]+)\/?(?:[?#].*)?$/.exec(raw.trim());
  return m ? decodeURIComponent(m[1]!) : raw.trim();
}

export const inviteCommands: Command[] = [
  {
    path: ["invite", "create"],
    usage: "muster invite create <union> [--by <@member@host>] [--uses N] [--expires <duration>] [--json]",
    summary: "Make an invite and print its URL, ORIGIN/u/<union>/join/<code>.",
    details: [
      "  --by        the member whose recruits newcomers become (default: the leader, or the top of the tree)",
      "              an ordinary member's invites count against the union's invite limit",
      "  --uses N    how many people it admits (default: unlimited, or one for an ordinary member)",
      "  --expires   lifetime, like 7d, 12h, 30m or 1d12h (default: never)",
    ].join("\n"),
    options: { by: { type: "string" }, uses: { type: "string" }, expires: { type: "string" }, ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      const uses = str(values, "uses");
      const expires = str(values, "expires");
      const maxUses = uses === undefined ? undefined : parseCount("--uses", uses);
      const expiresInMs = expires === undefined ? undefined : parseDuration("--expires", expires);
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const byHandle = str(values, "by");
        const by = byHandle === undefined ? OPERATOR : { kind: "member" as const, memberId: (await requireMember(m, union, byHandle, IN_TREE)).id };
        const invite = await createInvite(m.membership, union.id, { by, maxUses, expiresInMs });
        if (values.json) print(inviteJson(m, union, invite, await sponsorLookup(m.database.db, union.id)(invite.createdBy)));
        else out(inviteUrl(m, union, invite.code) + "\n");
      });
    },
  },
  {
    path: ["invite", "list"],
    usage: "muster invite list <union> [--by <@member@host>] [--json]",
    summary: "List a union's invites, newest first: code, sponsor, uses, status and URL.",
    options: { by: { type: "string" }, ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const byHandle = str(values, "by");
        const createdBy = byHandle === undefined ? undefined : (await requireMember(m, union, byHandle)).id;
        const invites = await listInvites(m.database.db, union.id, { createdBy });
        const sponsorOf = sponsorLookup(m.database.db, union.id);
        const rows = await Promise.all(invites.map(async (i) => inviteJson(m, union, i, await sponsorOf(i.createdBy))));
        if (values.json) return print(rows);
        if (rows.length === 0) return out(`No invites in union ${union.slug}. Make one with: muster invite create ${union.slug}\n`);
        out(table(
          ["CODE", "SPONSOR", "USES", "STATUS", "EXPIRES", "URL"],
          rows.map((r, n) => [
            r.code,
            r.sponsor ? r.sponsor.handle ?? r.sponsor.actorId : "(top)",
            `${r.uses}/${r.maxUses ?? "∞"}`,
            r.status,
            shortDate(invites[n]!.expiresAt) ?? "never",
            r.url,
          ]),
        ));
      });
    },
  },
  {
    path: ["invite", "revoke"],
    usage: "muster invite revoke <union> <code|url> [--json]",
    summary: "Withdraw an invite: it admits nobody from now on (people it already admitted stay).",
    details: "  A code that starts with \"-\" can be given after --, or as the whole invite URL.",
    options: { ...JSON_OPT },
    positionals: ["union", "code"],
    async run({ values, positionals }) {
      const code = codeOf(positionals[1]!);
      if (!code) throw new UsageError("the invite code is empty");
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const before = await getInviteByCode(m.database.db, union.id, code);
        if (!before) throw new CliError(`no invite ${JSON.stringify(code)} in union ${union.slug}`);
        await revokeInvite(m.membership, union.id, code);
        const after = (await getInviteByCode(m.database.db, union.id, code))!;
        if (values.json) return print(inviteJson(m, union, after, await sponsorLookup(m.database.db, union.id)(after.createdBy)));
        out(before.revokedAt ? `Invite ${code} was already withdrawn (${before.revokedAt.toISOString()}).\n` : `Withdrew invite ${code}; it had been used ${after.uses} time(s).\n`);
      });
    },
  },
];

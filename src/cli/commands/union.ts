import { unionLinks } from "../../relationships/relationships.ts";
import type { Config } from "../../config.ts";
import { createUnion, type JoinPolicy, listUnions, type MembersVisibility, type Union, type UnionSettings, updateUnion } from "../../unions/unions.ts";
import { OPERATOR } from "../../members/members.ts";
import { membersVisibility, VISIBILITY_CHOICES, VISIBILITY_TEXT } from "../../members/visibility.ts";
import { type Command, fields, JSON_OPT, out, parseCount, print, requireUnion, str, UsageError, withMuster } from "../command.ts";

const JOIN_POLICY_TEXT: Record<JoinPolicy, string> = {
  invite: "invite only (follows without an invite are refused)",
  approval: "by invite, or by officers' approval of a follow request",
  open: "open (any follow joins, under the leader)",
};


function visibilityHelp(): string {
  return [
    "  --visibility       who may see the member list, the sponsor tree and who holds office:",
    ...VISIBILITY_CHOICES.map((v) => `      ${v.padEnd(10)} ${VISIBILITY_TEXT[v]}`),
    "                     New unions start as signed-in.",
    "  --time-zone        the IANA zone of the daily publication time, e.g. Europe/Berlin (default UTC);",
    "                     a founding bylaw, changed later only by an amendment.",
  ].join("\n");
}

/** The API's view of a union (loaded on demand: it lives with the HTTP app). */
async function unionJson(u: Union, origin: URL) {
  const http = await import("../../http/app.ts");
  return http.unionJson(u, origin);
}

/** unionJson plus what only the operator sees. */
async function json(u: Union, origin: URL) {
  return { ...await unionJson(u, origin), welcomeText: u.welcomeText };
}

function describe(u: Union, config: Config, extra: [string, string][] = []): string {
  return fields([
    ["Name", u.name],
    ["Handle", `@${u.slug}@${config.origin.host}`],
    ["Actor", new URL(`/u/${u.slug}`, config.origin).href],
    ["Purpose", u.purpose],
    ["Leader", u.leaderHandle ?? "(not set)"],
    ["Icon", u.iconUrl ?? "(none)"],
    ["Joining", JOIN_POLICY_TEXT[u.joinPolicy]],
    ["Invites", `each member may invite ${u.memberInviteLimit} (officers without limit)`],
    ["Roster", `${membersVisibility(u)}: ${VISIBILITY_TEXT[membersVisibility(u)]}`],
    ["Publishes", `one queued call-to-action a day at ${u.publishTime} ${u.timeZone}`],
    ["Welcome", u.welcomeText ?? "(default)"],
    ["Created", u.createdAt.toISOString()],
    ...extra,
  ]);
}

export const unionCommands: Command[] = [
  {
    path: ["union", "create"],
    usage: "muster union create <slug> --name <text> --purpose <text> [--leader <@user@host>] [--icon <url>] [--join-policy invite|approval|open] [--visibility officers|signed-in|members|public] [--time-zone <IANA zone>] [--json]",
    summary: "Create a union: a Fediverse Group actor @slug@host with its own signing keys.",
    details: visibilityHelp(),
    options: {
      name: { type: "string" },
      purpose: { type: "string" },
      leader: { type: "string" },
      icon: { type: "string" },
      open: { type: "boolean", default: false },
      "join-policy": { type: "string" },
      visibility: { type: "string" },
      "time-zone": { type: "string" },
      ...JSON_OPT,
    },
    positionals: ["slug"],
    async run({ values, positionals }) {
      if (!values.name) throw new UsageError("--name is required");
      if (!values.purpose) throw new UsageError("--purpose is required");
      await withMuster(async (m) => {
        const union = await createUnion(m.unions, {
          slug: positionals[0]!,
          name: String(values.name),
          purpose: String(values.purpose),
          leaderHandle: values.leader ? String(values.leader) : null,
          iconUrl: values.icon ? String(values.icon) : null,
          joinPolicy: values.open ? "open" : (values["join-policy"] as JoinPolicy | undefined),
          membersVisibility: str(values, "visibility") as MembersVisibility | undefined,
          timeZone: str(values, "time-zone"),
        });
        // The treasury is chain work: queued with the union, made by the ledger lane of a running server.
        const treasury = `queued: a running server (muster serve) creates it on the ledger lane: the dues mint, the treasury's token account and its authority; see muster treasury show ${union.slug}`;
        if (values.json) print({ ...await unionJson(union, m.config.origin), treasury: "queued" });
        else out(`Created union ${union.name}: @${union.slug}@${m.config.origin.host}\n${describe(union, m.config, [["Treasury", treasury]])}`);
      });
    },
  },
  {
    path: ["union", "list"],
    usage: "muster union list [--json]",
    summary: "List the unions hosted here.",
    options: { ...JSON_OPT },
    positionals: [],
    async run({ values }) {
      await withMuster(async (m) => {
        const unions = await listUnions(m.database.db);
        if (values.json) return print(await Promise.all(unions.map((u) => unionJson(u, m.config.origin))));
        if (unions.length === 0) return out("No unions yet. Create one with: muster union create <slug> --name <text> --purpose <text>\n");
        const width = Math.max(...unions.map((u) => u.slug.length));
        for (const u of unions) out(`${u.slug.padEnd(width)}  ${u.name}  @${u.slug}@${m.config.origin.host}\n`);
      });
    },
  },
  {
    path: ["union", "show"],
    usage: "muster union show <slug> [--json]",
    summary: "Show one union.",
    options: { ...JSON_OPT },
    positionals: ["slug"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const links = await unionLinks(m.database.db, union.id);
        const named = (l: { actorId: string; handle: string | null }) => l.handle ?? l.actorId;
        if (values.json) return print({ ...await json(union, m.config.origin), parent: links.parent[0] ?? null, allies: links.allies, chapters: links.chapters });
        out(describe(union, m.config));
        out(fields([
          ["Parent", links.parent.length ? links.parent.map(named).join(", ") : "(none)"],
          ["Allies", links.allies.length ? links.allies.map(named).join(", ") : "(none)"],
          ["Chapters", links.chapters.length ? links.chapters.map(named).join(", ") : "(none)"],
        ]));
      });
    },
  },
  {
    path: ["union", "set"],
    usage: "muster union set <slug> [--name <text>] [--purpose <text>] [--icon <url>] [--welcome <text>] [--relay off|approval|auto] [--leader <@user@host>] [--json]",
    summary: "Change a union's name, purpose, icon, welcome text or relay policy; invalid values are refused and nothing changes.",
    details: [
      "  --icon \"\", --welcome \"\"   clear the icon or the welcome text",
      "  --relay            relaying members' posts: off, approval (an officer decides) or auto",
      "  --leader           names the leader while the place is empty (never claimed, or after a recall):",
      "                     a member takes office at once, at the root of the tree; anyone else on following.",
      "                     A sitting leader changes only by election.",
      "  Joining, invite limit, roster visibility and the other enforced rules are bylaws:",
      "  see `muster bylaws show <slug>`; the operator overrides them with `muster bylaws set`.",
    ].join("\n"),
    options: {
      name: { type: "string" },
      purpose: { type: "string" },
      icon: { type: "string" },
      welcome: { type: "string" },
      relay: { type: "string" },
      leader: { type: "string" },
      // Accepted only to say where they went.
      "join-policy": { type: "string" },
      "invite-limit": { type: "string" },
      visibility: { type: "string" },
      ...JSON_OPT,
    },
    positionals: ["slug"],
    async run({ values, positionals }) {
      for (const [flag, key] of [["join-policy", "joinPolicy"], ["invite-limit", "memberInviteLimit"], ["visibility", "membersVisibility"]] as const) {
        const v = str(values, flag);
        if (v !== undefined) throw new UsageError(`--${flag} is a bylaw now: members change it by vote; as the operator, run muster bylaws set ${positionals[0]} ${key}=${v} --reason "..."`);
      }
      const icon = str(values, "icon");
      const welcome = str(values, "welcome");
      const settings: UnionSettings = {
        name: str(values, "name"),
        purpose: str(values, "purpose"),
        iconUrl: icon === undefined ? undefined : icon.trim() || null,
        welcomeText: welcome === undefined ? undefined : welcome.trim() || null,
        relayPolicy: str(values, "relay") as UnionSettings["relayPolicy"],
        leaderHandle: str(values, "leader"),
      };
      const changed = Object.entries(settings).filter(([, v]) => v !== undefined).map(([k]) => k);
      if (changed.length === 0) throw new UsageError("nothing to change: give at least one setting");
      await withMuster(async (m) => {
        await requireUnion(m, positionals[0]!);
        const union = await updateUnion(m.unions, positionals[0]!, OPERATOR, settings);
        if (values.json) print(await json(union, m.config.origin));
        else out(`Updated union ${union.slug}.\n${describe(union, m.config)}`);
      });
    },
  },
];

import { listOfficers, setOfficer, unsetOfficer } from "../../members/membership.ts";
import { OPERATOR } from "../../members/members.ts";
import { type Command, JSON_OPT, label, memberJson, out, print, requireMember, requireUnion, shortDate, str, table, withMuster } from "../command.ts";

export const officerCommands: Command[] = [
  {
    path: ["officer", "add"],
    usage: "muster officer add <union> <@user@host> [--portfolio <title>] [--json]",
    summary: "Appoint an active member as an officer, or change an officer's (or the leader's) portfolio.",
    options: { portfolio: { type: "string" }, ...JSON_OPT },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const member = await requireMember(m, union, positionals[1]!, ["active"]);
        const updated = await setOfficer(m.membership, union.id, member.id, OPERATOR, str(values, "portfolio") ?? null);
        if (values.json) return print(memberJson(updated, { sponsor: null, depth: null }));
        out(`${label(updated)} is ${updated.role === "leader" ? "the leader" : "an officer"} of ${union.slug}${updated.portfolio ? ` (${updated.portfolio})` : ""}.\n`);
      });
    },
  },
  {
    path: ["officer", "remove"],
    usage: "muster officer remove <union> <@user@host> [--json]",
    summary: "Dismiss an officer: they stay a member, in the same place in the tree.",
    options: { ...JSON_OPT },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const member = await requireMember(m, union, positionals[1]!, ["active"]);
        const wasOfficer = member.role === "officer";
        const updated = await unsetOfficer(m.membership, union.id, member.id, OPERATOR);
        if (values.json) return print(memberJson(updated, { sponsor: null, depth: null }));
        out(wasOfficer ? `${label(updated)} is no longer an officer of ${union.slug}.\n` : `${label(updated)} was not an officer of ${union.slug}; nothing changed.\n`);
      });
    },
  },
  {
    path: ["officer", "list"],
    usage: "muster officer list <union> [--json]",
    summary: "List the leader and officers, leader first.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const officers = await listOfficers(m.database.db, union.id);
        if (values.json) return print(officers.map((o) => ({ id: o.id, actorId: o.actorId, handle: o.handle, role: o.role, portfolio: o.portfolio, state: o.state, joinedAt: o.joinedAt?.toISOString() ?? null })));
        if (officers.length === 0) return out(`Union ${union.slug} has no leader or officers yet.\n`);
        out(table(["HANDLE", "ROLE", "PORTFOLIO", "STATE", "JOINED", "ACTOR"], officers.map((o) => [o.handle, o.role, o.portfolio, o.state, shortDate(o.joinedAt), o.actorId])));
      });
    },
  },
];

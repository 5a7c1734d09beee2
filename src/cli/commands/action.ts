import { type Action, ACTION_KINDS, composeAction, findAction, hashesOf, listActions } from "../../actions/actions.ts";
import { publicationSchedule } from "../../actions/scheduler.ts";
import { possessive } from "../../english.ts";
import { verifyChain } from "../../actions/chain.ts";
import { progressOf } from "../../actions/responses.ts";
import { OPERATOR } from "../../members/members.ts";
import type { Muster } from "../../main.ts";
import type { Union } from "../../unions/unions.ts";
import "../../temporal.ts";
import { CliError, type Command, fields, iso, JSON_OPT, out, parseCount, print, requireUnion, shortDate, str, table, UsageError, withMuster } from "../command.ts";

function parseDeadline(raw: string): Date {
  const d = new Date(raw);
  if (Number.isNaN(d.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(raw)) {
    throw new UsageError(`--deadline takes an ISO 8601 time such as 2026-12-01T18:00:00Z; got ${JSON.stringify(raw)}`);
  }
  return d;
}

function actionSummary(m: Muster, union: Union, a: Action, hashes: { prevHash: string; hash: string } | undefined) {
  return {
    id: a.id,
    seq: a.seq,
    state: a.state,
    title: a.title,
    kind: a.kind,
    link: a.link,
    goal: a.goal,
    deadline: iso(a.deadline),
    url: new URL(`/u/${union.slug}/actions/${a.id}`, m.config.origin).href,
    createdAt: iso(a.createdAt),
    publishedAt: iso(a.publishedAt),
    updatedAt: iso(a.updatedAt),
    retractedAt: iso(a.retractedAt),
    hash: hashes?.hash ?? null,
    previousHash: hashes?.prevHash ?? null,
  };
}

async function actionJson(m: Muster, union: Union, a: Action) {
  return actionSummary(m, union, a, await hashesOf(m.database.db, a.id));
}

async function actionDetail(m: Muster, union: Union, a: Action) {
  const base = await actionJson(m, union, a);
  const p = await progressOf(m.database.db, a);
  const comments = await m.database.db.selectFrom("action_responses as r").innerJoin("members as mem", "mem.id", "r.member_id")
    .select(["mem.handle", "mem.actor_id", "r.content", "r.created_at", "r.undone_at"])
    .where("r.action_id", "=", a.id).where("r.kind", "=", "comment").orderBy("r.created_at").execute();
  return {
    ...base,
    text: a.bodyMd,
    commitments: p.commitments,
    done: p.done,
    boosts: p.boosts,
    activeMembers: p.activeMembers,
    participation: Number(p.participation.toFixed(4)),
    comments: comments.map((c) => ({ handle: c.handle, actor: c.actor_id, html: c.content, at: new Date(Number(c.created_at)).toISOString(), withdrawn: c.undone_at !== null })),
  };
}

async function requireAction(m: Muster, union: Union, ref: string): Promise<Action> {
  const a = await findAction(m.database.db, union.id, ref);
  if (!a) throw new CliError(`no call-to-action ${/^#?\d+$/.test(ref) ? `#${ref.replace("#", "")}` : JSON.stringify(ref)} in union ${union.slug}; \`muster action list ${union.slug}\` shows them`);
  return a;
}

/** "today at 09:00 Europe/Berlin (08:00 UTC)", in the union's zone, for a human. */
export function whenText(at: Date, timeZone: string, now = new Date()): string {
  const local = Temporal.Instant.fromEpochMilliseconds(at.getTime()).toZonedDateTimeISO(timeZone);
  const today = Temporal.Instant.fromEpochMilliseconds(now.getTime()).toZonedDateTimeISO(timeZone).toPlainDate();
  const days = local.toPlainDate().since(today).days;
  const day = days === 0 ? "today" : days === 1 ? "tomorrow" : `on ${local.toPlainDate().toString()}`;
  const time = local.toPlainTime().toString().slice(0, 5);
  return `${day} at ${time} ${timeZone}${timeZone === "UTC" ? "" : ` (${at.toISOString().slice(11, 16)} UTC)`}`;
}

/** When a queued call-to-action goes out, said truthfully; undefined once published. */
async function scheduledText(m: Muster, union: Union, a: Action): Promise<string | undefined> {
  if (a.state !== "queued") return undefined;
  const slot = (await publicationSchedule(m.database.db, union.id)).get(a.id);
  if (!slot) return undefined;
  return slot.immediate ? `within a minute (${possessive(union.slug)} slot for today is free and its time, ${union.publishTime} ${union.timeZone}, has passed)` : whenText(slot.at, union.timeZone);
}

export const actionCommands: Command[] = [
  {
    path: ["action", "post"],
    usage: "muster action post <union> --title <text> --text <markdown> [--kind K] [--link <url>] [--goal N] [--deadline ISO] [--now] [--json]",
    summary: "Queue a call-to-action for the union's daily publication, or publish it at once with --now.",
    details: `Kinds: ${ACTION_KINDS.join(", ")} (default other). The text is Markdown; raw HTML is shown as text.
One queued call-to-action goes out a day, oldest first, at the union's publication time (muster union show).
--now publishes at once, for what cannot wait: it is outside that rhythm and does not use the day's slot,
so a queued call-to-action still goes out at the usual time.`,
    options: {
      title: { type: "string" },
      text: { type: "string" },
      kind: { type: "string" },
      link: { type: "string" },
      goal: { type: "string" },
      deadline: { type: "string" },
      now: { type: "boolean", default: false },
      ...JSON_OPT,
    },
    positionals: ["union"],
    async run({ values, positionals }) {
      const title = str(values, "title");
      const text = str(values, "text");
      if (!title) throw new UsageError("--title is required");
      if (!text) throw new UsageError("--text is required");
      const rawGoal = str(values, "goal");
      const rawDeadline = str(values, "deadline");
      // Argument errors answer before the database is opened.
      const goal = rawGoal === undefined ? null : parseCount("--goal", rawGoal, 1);
      const deadline = rawDeadline === undefined ? null : parseDeadline(rawDeadline);
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const a = await composeAction(m.membership, union.id, OPERATOR, {
          title,
          text,
          kind: str(values, "kind"),
          link: str(values, "link") ?? null,
          goal,
          deadline,
        }, { publishNow: values.now === true });
        if (values.json) return print(await actionJson(m, union, a));
        if (a.state === "published") {
          const next = (await publicationSchedule(m.database.db, union.id)).values().next().value;
          out(`Published call-to-action #${a.seq} of ${union.slug} at once: ${a.title}\n${new URL(`/u/${union.slug}/actions/${a.id}`, m.config.origin).href}\n`
            + `It is outside the daily rhythm: ${next ? `the next queued one still goes out ${next.immediate ? "within a minute" : whenText(next.at, union.timeZone)}` : `${possessive(union.slug)} daily slot stays free for a queued one`}.\n`);
        } else {
          out(`Queued ${a.id} for ${possessive(union.slug)} daily publication; it goes out ${await scheduledText(m, union, a)}.\n`);
        }
      });
    },
  },
  {
    path: ["action", "list"],
    usage: "muster action list <union> [--json]",
    summary: "List the union's calls-to-action: queued, published and retracted, newest first.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const actions = await listActions(m.database.db, union.id);
        if (values.json) return print(await Promise.all(actions.map((a) => actionJson(m, union, a))));
        if (actions.length === 0) return out(`Union ${union.slug} has no calls-to-action yet.\n`);
        const rows = [];
        for (const a of actions) {
          const p = a.state === "queued" ? undefined : await progressOf(m.database.db, a);
          rows.push([a.seq ?? "", a.state, a.title.slice(0, 48), p ? `${p.commitments}${a.goal ? `/${a.goal}` : ""}` : "", shortDate(a.publishedAt ?? a.createdAt), a.id]);
        }
        out(table(["#", "STATE", "TITLE", "COMMITTED", "DATE", "ID"], rows));
      });
    },
  },
  {
    path: ["action", "show"],
    usage: "muster action show <union> <number|id> [--json]",
    summary: "Show one call-to-action with its commitments, comments, boosts, goal and hashes.",
    options: { ...JSON_OPT },
    positionals: ["union", "id"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const a = await requireAction(m, union, positionals[1]!);
        const j = await actionDetail(m, union, a);
        const goesOut = await scheduledText(m, union, a);
        if (values.json) return print(j);
        out(fields([
          ["Title", j.title],
          ["State", `${j.state}${j.seq ? ` (#${j.seq})` : ""}${goesOut ? `, goes out ${goesOut}` : ""}`],
          ["Kind", j.kind],
          ["Link", j.link ?? "-"],
          ["Goal", j.goal === null ? "-" : String(j.goal)],
          ["Deadline", j.deadline ?? "-"],
          ["Committed", `${j.commitments} (${j.done} done), ${Math.round(j.participation * 100)}% of ${j.activeMembers} members`],
          ["Boosts", String(j.boosts)],
          ["Comments", String(j.comments.length)],
          ["Hash", j.hash ?? "-"],
          ["Previous", j.previousHash ?? "-"],
          ["URL", j.url],
        ]));
      });
    },
  },
  {
    path: ["action", "verify"],
    usage: "muster action verify <union> [--json]",
    summary: "Check the union's hash chain (calls-to-action, proposals, ballots and outcomes) and say where it breaks (exit 1 if it does).",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const report = await verifyChain(m.database.db, union.id);
        if (values.json) print(report);
        else if (report.ok) out(`The chain of ${union.slug} is intact: ${report.entries} entries, head ${report.head}.\n`);
        else {
          out(`The chain of ${union.slug} is broken (${report.breaks.length} problem(s) in ${report.entries} entries):\n`);
          for (const b of report.breaks) out(`  entry ${b.n || "-"}, ${b.problem.startsWith("proposal #") ? "" : "call-to-action "}${b.actionId}: ${b.problem}\n`);
        }
        if (!report.ok) throw new CliError(`the chain of ${union.slug} does not verify`);
      });
    },
  },
];

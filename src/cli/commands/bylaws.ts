import { readFileSync } from "node:fs";
import { bylawsHistory, bylawsJson, changeBylaws, describeSource, readBylaws } from "../../bylaws/bylaws.ts";
import { changedKeys, PARAMS, parseAssignments } from "../../bylaws/params.ts";
import { type Command, fields, JSON_OPT, out, print, requireUnion, shortDate, str, table, UsageError, withMuster } from "../command.ts";

const PARAM_HELP = PARAMS.map((p) => `  ${p.key.padEnd(22)} ${p.help} (default ${p.format(p.default as never)})`).join("\n");

export const bylawsCommands: Command[] = [
  {
    path: ["bylaws", "show"],
    usage: "muster bylaws show <union> [--json]",
    summary: "Show the bylaws in force: version, text and the parameters the server enforces.",
    details: `Parameters:\n${PARAM_HELP}`,
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const b = await readBylaws(m.database.db, union.id);
        if (values.json) return print(bylawsJson(b));
        out(fields([["Bylaws", `${union.slug}, version ${b.version}`], ["Since", `${b.createdAt.toISOString()} (${describeSource(b.source)})`]]));
        out(`\n${b.text || "(no text)"}\n\nParameters:\n`);
        out(fields(PARAMS.map((p) => [p.key, p.format(b.params[p.key] as never)] as const)));
      });
    },
  },
  {
    path: ["bylaws", "history"],
    usage: "muster bylaws history <union> [--json]",
    summary: "List every version of a union's bylaws, newest first, with what changed and how.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const versions = await bylawsHistory(m.database.db, union.id);
        if (values.json) return print(versions.map(bylawsJson));
        out(table(["VERSION", "SINCE", "HOW", "CHANGED"], versions.map((v, i) => {
          const prev = versions[i + 1];
          const changed = prev ? [...changedKeys(prev.params, v.params), ...(prev.text !== v.text ? ["text"] : [])].join(", ") : "";
          return [v.version, shortDate(v.createdAt), describeSource(v.source), changed];
        })));
      });
    },
  },
  {
    path: ["bylaws", "set"],
    usage: "muster bylaws set <union> key=value... [--text-file <path>] --reason <text> [--json]",
    summary: "Operator override: change bylaw parameters (or text) without a vote; recorded in the history with the reason.",
    details: [
      "  An emergency lever: members change bylaws by passing an amendment. Invalid values are refused and nothing changes.",
      "  --text-file <path>   replace the bylaws text with this Markdown file",
      "  --reason <text>      required; shown in the bylaws history",
      "",
      `Parameters:\n${PARAM_HELP}`,
    ].join("\n"),
    options: { reason: { type: "string" }, "text-file": { type: "string" }, ...JSON_OPT },
    positionals: ["union"],
    rest: "key=value",
    async run({ values, positionals }) {
      const reason = str(values, "reason");
      if (!reason?.trim()) throw new UsageError("--reason is required: an operator override is recorded with its reason");
      const assignments = positionals.slice(1);
      const textFile = str(values, "text-file");
      if (assignments.length === 0 && textFile === undefined) throw new UsageError("nothing to change: give key=value or --text-file");
      const params = parseAssignments(assignments);
      const text = textFile === undefined ? undefined : readFileSync(textFile, "utf8");
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const b = await changeBylaws(m.unions, union.id, { kind: "operator", reason }, { params, text });
        if (values.json) return print(bylawsJson(b));
        out(`Bylaws of ${union.slug} are now version ${b.version} (operator override: ${reason.trim()}).\n`);
      });
    },
  },
];

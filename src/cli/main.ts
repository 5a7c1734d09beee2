import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { ConfigError, loadConfig, type Config } from "../config.ts";
import { setupLogging } from "../logging.ts";
import { createMuster, type Muster } from "../main.ts";
import { startServer, stopOnSignals } from "../server.ts";
import { issueSetupToken, revokeSetupToken } from "../setup/setup-token.ts";
import { countUnions, createUnion, getUnionBySlug, type JoinPolicy, listUnions, type Union, UnionError } from "../unions/unions.ts";
import { unionJson } from "../http/app.ts";

/** A failure the user caused: printed as one line, exit status 1. */
class CliError extends Error {}
/** Wrong arguments: printed with a pointer to --help, exit status 2. */
class UsageError extends Error {}

interface Command {
  readonly path: readonly string[];
  readonly usage: string;
  readonly summary: string;
  readonly options: ParseArgsOptionsConfig;
  readonly positionals: readonly string[];
  run(args: { values: Record<string, string | boolean | undefined>; positionals: string[] }): Promise<void>;
}

const JSON_OPT = { json: { type: "boolean", default: false } } as const satisfies ParseArgsOptionsConfig;

const commands: Command[] = [
  {
    path: ["serve"],
    usage: "muster serve [--port N] [--no-worker]",
    summary: "Run the web server (and, unless --no-worker, the queue workers) until SIGTERM.",
    options: { port: { type: "string" }, "no-worker": { type: "boolean", default: false } },
    positionals: [],
    async run({ values }) {
      const config = await configWith(values.port ? { PORT: String(values.port) } : {});
      const muster = await createMuster(config);
      const server = await startServer(muster, { port: config.port, worker: !values["no-worker"] });
      const out = process.stdout;
      out.write(`Muster is listening on http://localhost:${server.port} (public origin ${config.origin.href.replace(/\/$/, "")})\n`);
      out.write(`Database: ${config.dialect === "sqlite" ? config.databaseUrl : "PostgreSQL"}; queue workers: ${values["no-worker"] ? "none in this process (run `muster worker`)" : "in this process"}\n`);
      if (config.allowPrivateAddress) {
        out.write("\n*** WARNING: MUSTER_ALLOW_PRIVATE_ADDRESS=1 ***\n*** This server will fetch from and deliver to loopback and private addresses. ***\n*** Use it only for local development; never in production. ***\n\n");
      }
      if ((await countUnions(muster.database.db)) === 0) {
        const token = await issueSetupToken(muster.database.db);
        out.write(`\nNo union exists yet. Create the first one at:\n\n    http://localhost:${server.port}/?token=${token}\n\nSetup token (one use): ${token}\n\n`);
      } else {
        await revokeSetupToken(muster.database.db);
      }
      stopOnSignals(server.stop, "the server");
    },
  },
  {
    path: ["worker"],
    usage: "muster worker",
    summary: "Run only the queue workers (deliveries, inbox processing); several may share PostgreSQL.",
    options: {},
    positionals: [],
    async run() {
      const config = await configWith({});
      const muster = await createMuster(config);
      const stop = new AbortController();
      const done = muster.runQueue(stop.signal);
      process.stdout.write(`Muster worker started (${config.dialect}); stop with SIGTERM to drain.\n`);
      stopOnSignals(async () => {
        stop.abort();
        await done;
        await muster.close();
      }, "the worker");
    },
  },
  {
    path: ["migrate"],
    usage: "muster migrate [--json]",
    summary: "Bring the database schema up to date (serve and worker also do this on start).",
    options: { ...JSON_OPT },
    positionals: [],
    async run({ values }) {
      const config = await configWith({});
      const { openDatabase } = await import("../db/database.ts");
      const { migrateToLatest } = await import("../db/migrate.ts");
      const database = openDatabase(config.databaseUrl);
      try {
        const result = await migrateToLatest(database.db);
        const applied = (result.results ?? []).map((r) => r.migrationName);
        if (values.json) print({ applied });
        else process.stdout.write(applied.length ? `Applied ${applied.length} migration(s): ${applied.join(", ")}\n` : "Database is up to date.\n");
      } finally {
        await database.close();
      }
    },
  },
  {
    path: ["union", "create"],
    usage: "muster union create <slug> --name <text> --purpose <text> [--leader <@user@host>] [--icon <url>] [--join-policy invite|approval|open] [--json]",
    summary: "Create a union: a Fediverse Group actor @slug@host with its own signing keys.",
    options: {
      name: { type: "string" },
      purpose: { type: "string" },
      leader: { type: "string" },
      icon: { type: "string" },
      open: { type: "boolean", default: false },
      "join-policy": { type: "string" },
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
        });
        if (values.json) print(unionJson(union, m.config.origin));
        else process.stdout.write(`Created union ${union.name}: @${union.slug}@${m.config.origin.host}\n${describe(union, m.config)}`);
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
        if (values.json) return print(unions.map((u) => unionJson(u, m.config.origin)));
        if (unions.length === 0) return void process.stdout.write("No unions yet. Create one with: muster union create <slug> --name <text> --purpose <text>\n");
        const width = Math.max(...unions.map((u) => u.slug.length));
        for (const u of unions) process.stdout.write(`${u.slug.padEnd(width)}  ${u.name}  @${u.slug}@${m.config.origin.host}\n`);
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
        const union = await getUnionBySlug(m.database.db, positionals[0]!);
        if (!union) throw new CliError(`no union with slug ${JSON.stringify(positionals[0])}`);
        if (values.json) print(unionJson(union, m.config.origin));
        else process.stdout.write(describe(union, m.config));
      });
    },
  },
];

const JOIN_POLICY_TEXT: Record<JoinPolicy, string> = {
  invite: "invite only (follows without an invite are refused)",
  approval: "by invite, or by officers' approval of a follow request",
  open: "open (any follow joins, under the leader)",
};

function describe(u: Union, config: Config): string {
  const rows: [string, string][] = [
    ["Name", u.name],
    ["Handle", `@${u.slug}@${config.origin.host}`],
    ["Actor", new URL(`/u/${u.slug}`, config.origin).href],
    ["Purpose", u.purpose],
    ["Leader", u.leaderHandle ?? "(not set)"],
    ["Joining", JOIN_POLICY_TEXT[u.joinPolicy]],
    ["Created", u.createdAt.toISOString()],
  ];
  return rows.map(([k, v]) => `${(k + ":").padEnd(9)} ${v}\n`).join("");
}

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

async function configWith(overrides: Record<string, string>): Promise<Config> {
  const config = loadConfig({ ...process.env, ...overrides });
  await setupLogging(config.logLevel);
  return config;
}

async function withMuster(fn: (m: Muster) => Promise<void>): Promise<void> {
  const muster = await createMuster(await configWith({}));
  try {
    await fn(muster);
  } finally {
    await muster.close();
  }
}

function helpText(cmds: readonly Command[], prefix: readonly string[]): string {
  const lines = [
    prefix.length ? `Commands under "muster ${prefix.join(" ")}":` : "Muster: a federated ActivityPub server for network unions.",
    "",
    "Usage:",
    ...cmds.map((c) => `  ${c.usage}\n      ${c.summary}`),
    "",
    "Every command takes --help. Configuration comes from the environment:",
    "  PORT (8000), ORIGIN (http://localhost:PORT), DATABASE_URL (sqlite:DATA_DIR/muster.sqlite, or postgres://...),",
    "  DATA_DIR (./data), LOG_LEVEL (debug|info|warning|error), MUSTER_ALLOW_PRIVATE_ADDRESS (1 for local development only).",
  ];
  return lines.join("\n") + "\n";
}

export async function main(argv: string[]): Promise<number> {
  const words: string[] = [];
  for (const a of argv) {
    if (a.startsWith("-")) break;
    words.push(a);
  }
  const wantsHelp = argv.includes("--help") || argv.includes("-h") || words[0] === "help";
  if (words[0] === "help") words.shift();
  const cmd = [...commands].sort((a, b) => b.path.length - a.path.length)
    .find((c) => c.path.every((p, i) => words[i] === p));
  if (!cmd) {
    const group = commands.filter((c) => words.length > 0 && c.path[0] === words[0]);
    if (wantsHelp || words.length === 0 || group.length > 0) {
      const shown = group.length ? group : commands;
      const out = helpText(shown, group.length ? [words[0]!] : []);
      if (wantsHelp || words.length === 0) {
        process.stdout.write(out);
        return words.length === 0 && !wantsHelp ? 2 : 0;
      }
      process.stderr.write(`muster: unknown command "${words.join(" ")}"\n\n${out}`);
      return 2;
    }
    process.stderr.write(`muster: unknown command "${words.join(" ")}"; run muster --help\n`);
    return 2;
  }
  if (wantsHelp) {
    process.stdout.write(`Usage: ${cmd.usage}\n\n${cmd.summary}\n`);
    return 0;
  }
  try {
    const parsed = parseArgs({ args: argv.slice(cmd.path.length), options: cmd.options, allowPositionals: true, strict: true });
    if (parsed.positionals.length !== cmd.positionals.length) {
      throw new UsageError(cmd.positionals.length
        ? `expected ${cmd.positionals.map((p) => `<${p}>`).join(" ")}`
        : `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    }
    await cmd.run({ values: parsed.values as Record<string, string | boolean | undefined>, positionals: parsed.positionals });
    return 0;
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`muster ${cmd.path.join(" ")}: ${(e as Error).message}\nUsage: ${cmd.usage}\n`);
      return 2;
    }
    if (e instanceof CliError || e instanceof UnionError || e instanceof ConfigError) {
      process.stderr.write(`muster: error: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`muster: error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.LOG_LEVEL === "debug") console.error(e);
    return 1;
  }
}

// Run when started as `node src/cli/main.ts`; bin/muster.js imports main() instead.
if (process.argv[1] && import.meta.filename === (await import("node:fs")).realpathSync(process.argv[1])) {
  // serve and worker keep running on their own handles; the rest simply end.
  process.exitCode = await main(process.argv.slice(2));
}

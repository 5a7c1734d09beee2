import { parseArgs } from "node:util";
import { ConfigError } from "../config.ts";
import { DomainError } from "../domain-error.ts";
import { bylawsCommands } from "./commands/bylaws.ts";
import { proposalCommands } from "./commands/proposal.ts";
import { CliError, type Command, UsageError } from "./command.ts";
import { inviteCommands } from "./commands/invite.ts";
import { memberCommands } from "./commands/member.ts";
import { officerCommands } from "./commands/officer.ts";
import { systemCommands } from "./commands/system.ts";
import { unionCommands } from "./commands/union.ts";
import { actionCommands } from "./commands/action.ts";
import { allyCommands } from "./commands/ally.ts";
import { crowdfundCommands } from "./commands/crowdfund.ts";
import { featuredCommands } from "./commands/featured.ts";
import { DatabaseUnavailableError } from "../db/unavailable.ts";

const commands: readonly Command[] = [] = [...systemCommands, ...unionCommands, ...inviteCommands, ...memberCommands, ...officerCommands, ...actionCommands, ...bylawsCommands, ...proposalCommands, ...allyCommands, ...featuredCommands, ...crowdfundCommands, ...treasuryCommands, ...walletCommands, ...ledgerCommands];
import { ledgerCommands, treasuryCommands, walletCommands } from "./commands/treasury.ts";


function helpText(cmds: readonly Command[], prefix: readonly string[]): string {
  const lines = [
    prefix.length ? `Commands under "muster ${prefix.join(" ")}":` : "Muster: a federated ActivityPub server for network unions.",
    "",
    "Usage:",
  ];
  let group: string | undefined;
  for (const c of cmds) {
    // A blank line between groups (serve/worker/migrate count as one).
    const g = c.path.length > 1 ? c.path[0] : "";
    if (group !== undefined && g !== group) lines.push("");
    group = g;
    lines.push(`  ${c.usage}`, `      ${c.summary}`);
  }
  lines.push(
    "",
    "Every command takes --help; listings take --json. Errors are one line on stderr: exit 1 for a refusal,",
    "exit 2 for wrong arguments. Members are named by handle, @user@host. Configuration comes from the environment:",
    "  PORT (8000), ORIGIN (http://localhost:PORT), DATABASE_URL (sqlite:DATA_DIR/muster.sqlite, or postgres://...),",
    "  DATA_DIR (./data), LOG_LEVEL (debug|info|warning|error), MUSTER_ALLOW_PRIVATE_ADDRESS (1 for local development only).",
  );
  return lines.join("\n") + "\n";
}

function expected(cmd: Command): string {
  return [...cmd.positionals.map((p) => `<${p}>`), ...(cmd.optional ?? []).map((p) => `[<${p}>]`), ...(cmd.rest ? [`<${cmd.rest}>...`] : [])].join(" ");
}

/**
 * Node's parseArgs explains some mistakes over three lines; the first says
 * what is wrong, and a value that starts with a dash gets its own hint.
 */
function oneLine(e: Error): string {
  const ambiguous = /^Option '(-[^' ]+)[^']*' argument is ambiguous/.exec(e.message);
  if (ambiguous) return `${ambiguous[1]} needs a value; for one that starts with a dash write ${ambiguous[1]}=-…`;
  const unknown = /^Unknown option '([^']+)'/.exec(e.message);
  if (unknown) return `unknown option ${unknown[1]}`;
  const missing = /^Option '(-[^' ]+)[^']*' argument missing/.exec(e.message);
  if (missing) return `${missing[1]} needs a value`;
  return e.message.split("\n").map((l) => l.trim()).filter(Boolean).join(" ").replace(/\.$/, "");
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
      // A group alone (`muster member`) is a question: what is under it.
      if (wantsHelp || words.length === 0 || words.length === 1) {
        process.stdout.write(out);
        return wantsHelp ? 0 : 2;
      }
      process.stderr.write(`muster: unknown command "${words.join(" ")}"\n\n${out}`);
      return 2;
    }
    process.stderr.write(`muster: unknown command "${words.join(" ")}"; run muster --help\n`);
    return 2;
  }
  if (wantsHelp) {
    process.stdout.write(`Usage: ${cmd.usage}\n\n${cmd.summary}\n${cmd.details ? `\n${cmd.details}\n` : ""}`);
    return 0;
  }
  try {
    const parsed = parseArgs({ args: argv.slice(cmd.path.length), options: cmd.options, allowPositionals: true, strict: true });
    const min = cmd.positionals.length;
    const max = cmd.rest ? Infinity : min + (cmd.optional?.length ?? 0);
    if (parsed.positionals.length < min || parsed.positionals.length > max) {
      const extra = parsed.positionals[max];
      throw new UsageError(extra === undefined
        ? `expected ${expected(cmd)}`
        : `unexpected argument ${JSON.stringify(extra)}${max ? `; expected ${expected(cmd)}` : ""}`);
    }
    await cmd.run({ values: parsed.values as Record<string, string | boolean | undefined>, positionals: parsed.positionals });
    return 0;
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`muster ${cmd.path.join(" ")}: ${oneLine(e as Error)}; see muster ${cmd.path.join(" ")} --help\n`);
      return 2;
    }
    // Refusals the user can act on are one line; anything else is a fault, with its stack under LOG_LEVEL=debug.
    if (e instanceof CliError || e instanceof DomainError || e instanceof ConfigError || e instanceof DatabaseUnavailableError) {
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

// Must come first: it points test/helpers/databases.ts at BENCH_DATABASE_URL.
import "./pg-env.ts";
import { parseArgs } from "node:util";
import { dialects } from "../test/helpers/databases.ts";
import { actorFetch } from "./actor-fetch.ts";
import { fanout } from "./fanout.ts";
import { hostile } from "./hostile.ts";
import { inboxIngest } from "./inbox-ingest.ts";
import { type Benchmark, loadAverage, machineFacts, printTable, type Row } from "./lib.ts";
import { payments } from "./payments.ts";
import { queueThroughput } from "./queue-throughput.ts";
import { tree } from "./tree.ts";
import { votes } from "./votes.ts";
import { crowdfund } from "./crowdfund.ts";
import { reads } from "./reads.ts";
import { joins } from "./joins.ts";
import { underFanout } from "./under-fanout.ts";
import { goalCount } from "./goal-count.ts";
import { storage } from "./storage.ts";
import { workers } from "./workers.ts";
import { memory } from "./memory.ts";
import { roundtrips } from "./roundtrips.ts";
import { standings } from "./standings.ts";

const BENCHMARKS: readonly Benchmark[] = [inboxIngest, fanout, queueThroughput, actorFetch, reads, joins, underFanout, goalCount, tree, hostile, votes, crowdfund, payments, storage, workers, memory, roundtrips, standings];

const USAGE = `Usage: npm run bench -- [--quick] [--only <name>[,<name>…]] [--dialect sqlite|postgres]

Benchmarks Muster on loopback and prints figures (no pass/fail). Runs on SQLite,
and on PostgreSQL when BENCH_DATABASE_URL (or TEST_DATABASE_URL) names a server
whose user may create databases; each run uses fresh databases it drops after.

Options:
  --quick           smaller sizes and shorter runs, for a smoke run
  --only <name>     run only these benchmarks (repeatable or comma-separated)
  --dialect <name>  run on this database only: sqlite or postgres
  -h, --help        show this help

Benchmarks:
${BENCHMARKS.map((b) => `  ${b.name.padEnd(18)}${b.summary}`).join("\n")}
`;

function parse() {
  try {
    const { values } = parseArgs({
      options: {
        help: { type: "boolean", short: "h", default: false },
        quick: { type: "boolean", default: false },
        only: { type: "string", multiple: true, default: [] },
        dialect: { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    });
    const only = values.only.flatMap((o) => o.split(",")).map((o) => o.trim()).filter(Boolean);
    const unknown = only.filter((o) => !BENCHMARKS.some((b) => b.name === o));
    if (unknown.length) throw new Error(`unknown benchmark ${unknown.join(", ")}; choose from ${BENCHMARKS.map((b) => b.name).join(", ")}`);
    if (values.dialect !== undefined && !dialects.some((d) => d.name === values.dialect)) throw new Error(`unknown dialect ${values.dialect}; choose sqlite or postgres`);
    return { help: values.help, quick: values.quick, dialect: values.dialect, selected: only.length ? BENCHMARKS.filter((b) => only.includes(b.name)) : BENCHMARKS };
  } catch (error) {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`);
    process.exit(2);
  }
}

const { help, quick, dialect: onlyDialect, selected } = parse();
if (help) {
  process.stdout.write(USAGE);
} else {
  const started = performance.now();
  const active = dialects.filter((d) => !d.skip && (onlyDialect === undefined || d.name === onlyDialect));
  if (active.length === 0) {
    process.stderr.write(`${onlyDialect} is not available: ${dialects.find((d) => d.name === onlyDialect)?.skip}\n`);
    process.exit(2);
  }
  process.stdout.write(`# Muster benchmarks (${quick ? "--quick" : "full"}), ${new Date().toISOString()}\n`);
  for (const line of await machineFacts(process.env.TEST_DATABASE_URL)) process.stdout.write(`${line}\n`);
  for (const bench of selected) {
    process.stderr.write(`${bench.name}…\n`);
    const rows: Row[] = [];
    for (const dialect of active) {
      try {
        rows.push(...await bench.run(dialect, { quick }));
      } catch (error) {
        process.stderr.write(`${bench.name} on ${dialect.name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
        rows.push({ dialect: dialect.name, error: error instanceof Error ? error.message : String(error) });
        process.exitCode = 1;
      }
    }
    printTable(bench.title, rows, bench.notes);
  }
  process.stdout.write(`\nTotal runtime: ${((performance.now() - started) / 1000).toFixed(1)} s; ${loadAverage()} at the end\n`);
}

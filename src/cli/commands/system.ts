import { countUnions } from "../../unions/unions.ts";
import { type Command, configWith, JSON_OPT, print } from "../command.ts";
import { cacheCompiledModules } from "../compile-cache.ts";
import { boundHeapGrowth } from "../heap-growth.ts";

export const systemCommands: Command[] = [
  {
    path: ["serve"],
    usage: "muster serve [--port N] [--no-worker]",
    summary: "Run the web server (and, unless --no-worker, the queue workers) until SIGTERM.",
    options: { port: { type: "string" }, "no-worker": { type: "boolean", default: false } },
    positionals: [],
    async run({ values }) {
      boundHeapGrowth();
      // Before main.ts and everything it loads.
      cacheCompiledModules();
      const config = await configWith(values.port ? { PORT: String(values.port) } : {});
      const { createMuster } = await import("../../main.ts");
      const { startServer, stopOnSignals } = await import("../../server.ts");
      const { issueSetupToken, revokeSetupToken } = await import("../../setup/setup-token.ts");
      const muster = await createMuster(config, { runLedger: true, announceSecretKey: true, runsQueue: !values["no-worker"] });
      const server = await startServer(muster, { port: config.port, worker: !values["no-worker"] });
      // At once: a SIGTERM during the start-up output below must still drain and exit cleanly.
      stopOnSignals(server.stop, "the server");
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
    },
  },
  {
    path: ["worker"],
    usage: "muster worker",
    summary: "Run only the queue workers (deliveries, inbox processing); several may share PostgreSQL.",
    options: {},
    positionals: [],
    async run() {
      boundHeapGrowth();
      cacheCompiledModules();
      const config = await configWith({});
      const { createMuster } = await import("../../main.ts");
      const { stopOnSignals } = await import("../../server.ts");
      const muster = await createMuster(config, { announceSecretKey: true });
      const stop = new AbortController();
      const done = muster.runQueue(stop.signal);
      stopOnSignals(async () => {
        stop.abort();
        await done;
        await muster.close();
      }, "the worker");
      process.stdout.write(`Muster worker started (${config.dialect}); stop with SIGTERM to drain.\n`);
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
      const { checkConnection, openDatabase } = await import("../../db/database.ts");
      const { migrateToLatest } = await import("../../db/migrate.ts");
      const database = openDatabase(config.databaseUrl);
      try {
        await checkConnection(database, config.databaseUrl);
        const result = await migrateToLatest(database.db);
        const applied = (result.results ?? []).map((r) => r.migrationName);
        if (values.json) print({ applied });
        else process.stdout.write(applied.length ? `Applied ${applied.length} migration(s): ${applied.join(", ")}\n` : "Database is up to date.\n");
      } finally {
        await database.close();
      }
    },
  },
];

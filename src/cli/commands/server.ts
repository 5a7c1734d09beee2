import { blockServer, listBlockedServers, unblockServer } from "../../servers/blocklist.ts";
import { type Command, JSON_OPT, out, print, shortDate, str, table, withMuster } from "../command.ts";

export const serverCommands: Command[] = [
  {
    path: ["server", "block"],
    usage: "muster server block <host> [--reason <text>] [--json]",
    summary: "Block a server: its unions cannot ally or be chapters here, and its deliveries are dropped at the inbox.",
    details: "<host> is example.org (every port), example.org:8443, a URL or a handle there. Open relationships with its unions end.",
    options: { reason: { type: "string" }, ...JSON_OPT },
    positionals: ["host"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const r = await blockServer(m.membership, positionals[0]!, str(values, "reason") ?? null);
        if (values.json) return print(r);
        out(`Blocked ${r.host}${r.ended ? `; ended ${r.ended} relationship${r.ended === 1 ? "" : "s"} with its unions` : ""}.\n`);
      });
    },
  },
  {
    path: ["server", "unblock"],
    usage: "muster server unblock <host> [--json]",
    summary: "Take a server off the block list (relationships it ended stay ended).",
    options: { ...JSON_OPT },
    positionals: ["host"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const host = await unblockServer(m.database.db, positionals[0]!);
        if (values.json) return print({ host });
        out(`Unblocked ${host}.\n`);
      });
    },
  },
  {
    path: ["server", "list"],
    usage: "muster server list [--json]",
    summary: "List blocked servers.",
    options: { ...JSON_OPT },
    positionals: [],
    async run({ values }) {
      await withMuster(async (m) => {
        const rows = await listBlockedServers(m.database.db);
        if (values.json) return print(rows.map((r) => ({ host: r.host, reason: r.reason, createdAt: r.createdAt.toISOString() })));
        if (rows.length === 0) return out("No server is blocked.\n");
        out(table(["HOST", "SINCE", "REASON"], rows.map((r) => [r.host, shortDate(r.createdAt), r.reason])));
      });
    },
  },
];

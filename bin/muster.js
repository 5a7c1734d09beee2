#!/usr/bin/env node
// The CLI is TypeScript run by Node 24's type stripping. `npx muster` may start
// under an older Node on the PATH, so re-exec with the project's pinned Node 24.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { existsSync } from "node:fs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const entry = join(root, "src", "cli", "main.ts");
const major = Number(process.versions.node.split(".")[0]);
if (major >= 24) {
  const { main } = await import(entry);
  process.exitCode = await main(process.argv.slice(2));
} else {
  const pinned = join(root, "node_modules", ".bin", "node");
  const node = existsSync(pinned) ? pinned : "node";
  const r = spawnSync(node, [entry, ...process.argv.slice(2)], { stdio: "inherit" });
  process.exit(r.status ?? 1);
}

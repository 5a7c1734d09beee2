// The floor for bench/memory.ts: a process that loads what `muster serve` loads (the CLI, and the modules serve
// imports on start) and does nothing else.
await import("../src/cli/main.ts");
await import("../src/main.ts");
await Promise.all([import("../solana/embedded-ledger.ts"), import("../solana/rpc.ts")]);
process.stdout.write("imported\n");
setInterval(() => {}, 1 << 30);

// bigint-buffer (under @solana/spl-token) tries a native addon that npm
// cannot build for the pinned Node 24 here, says so on stderr at import, and
// uses its pure-JS path, which is what Muster wants anyway. That one line
// would land in every `muster` command's stderr, so it alone is dropped.
// Imported before anything that loads @solana/*.
const BIGINT_NOTICE = "bigint: Failed to load bindings, pure JS will be used (try npm run rebuild?)";
const warn = console.warn.bind(console);
console.warn = (...args: unknown[]) => {
  if (args.length === 1 && args[0] === BIGINT_NOTICE) return;
  warn(...args);
};

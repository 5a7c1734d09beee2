import module from "node:module";

/**
 * Turns on Node's on-disk compile cache for a long-running process (serve,
 * worker) before it loads the server's modules: V8's code cache for each
 * module and the TypeScript it had its types stripped from, kept in Node's
 * default directory (os.tmpdir()/node-compile-cache, one subdirectory per
 * Node version) and checked against each file's contents, so a changed file
 * is compiled again. A start after the first skips parsing and stripping
 * most of what it loads (`muster serve` loads a few thousand modules).
 * Workers and delivery threads inherit it through NODE_COMPILE_CACHE, which
 * Node reads for every thread and child it starts. NODE_COMPILE_CACHE names
 * another directory; NODE_DISABLE_COMPILE_CACHE=1 turns it off; a directory
 * that cannot be written leaves it off, as before (Node reports, never
 * throws). Returns the directory in use, if any.
 */
export function cacheCompiledModules(): string | undefined {
  const result = module.enableCompileCache?.();
  const { ENABLED, ALREADY_ENABLED } = module.constants.compileCacheStatus;
  if (result === undefined || (result.status !== ENABLED && result.status !== ALREADY_ENABLED) || !result.directory) return undefined;
  process.env.NODE_COMPILE_CACHE ??= result.directory;
  return result.directory;
}

import SQLite from "better-sqlite3";

/**
 * Calls `seen` with the text (whitespace collapsed) of every statement
 * better-sqlite3 runs in this process from now on, by wrapping its
 * Statement's run/all/get/iterate: the tests that bound how many statements
 * a join or a reply costs count at the driver, below Kysely and its plugins.
 */
export function onSqliteStatement(seen: (text: string) => void): void {
  const probe = new SQLite(":memory:");
  const proto = Object.getPrototypeOf(probe.prepare("select 1")) as Record<string, (...a: unknown[]) => unknown>;
  probe.close();
  for (const method of ["run", "all", "get", "iterate"]) {
    const original = proto[method]!;
    proto[method] = function (this: { source: string }, ...args: unknown[]) {
      seen(this.source.replace(/\s+/g, " ").trim());
      return original.apply(this, args);
    };
  }
}

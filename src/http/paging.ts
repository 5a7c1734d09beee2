/**
 * A 1-based page number from a query string, or null when it is not one a
 * person could have reached by following links (`1e309`, `-1`, `2.5`, `x`):
 * those get 400 instead of a query with an infinite or fractional offset.
 * Absent means the first page.
 */
export function pageNumber(raw: string | undefined, max = 1_000_000): number | null {
  if (raw === undefined || raw === "") return 1;
  if (!/^[0-9]{1,7}$/.test(raw)) return null;
  const n = Number(raw);
  return n >= 1 && n <= max ? n : null;
}

/** A pagination cursor (an id we handed out) of sane length, or null. */
export function cursorParam(raw: string | undefined, maxLength = 200): string | undefined | null {
  if (raw === undefined || raw === "") return undefined;
  return raw.length <= maxLength ? raw : null;
}

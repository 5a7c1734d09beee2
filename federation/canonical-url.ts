const MAX_URL = 2048;

/**
 * `value` as a URL when it is an absolute http(s) URL in its canonical
 * spelling and carries no credentials: what Fedify's JSON-LD expansion
 * would give back unchanged, so a fast path that reads it as plain JSON
 * reads what Fedify would. Anything else is left to Fedify's path.
 */
export function canonicalHttpUrl(value: unknown): URL | undefined {
  if (typeof value !== "string" || value.length > MAX_URL) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return undefined;
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.href !== value || url.username || url.password) return undefined;
  return url;
}

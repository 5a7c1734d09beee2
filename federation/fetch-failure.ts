/**
 * The HTTP status a failed document fetch got from the server, read from the
 * error's response (Fedify's FetchError carries it), never from its message:
 * a message quotes the URL, and a URL can say "410". Undefined when no
 * response came (refused, timed out, unreachable) or the fetch that failed
 * was of another URL (a redirect's target).
 */
export function fetchStatus(error: unknown, of?: URL): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { response, url } = error as { response?: unknown; url?: unknown };
  if (!(response instanceof Response)) return undefined;
  if (of && !(url instanceof URL ? url.href === of.href : String(url) === of.href)) return undefined;
  return response.status;
}

/** The server answered that the document does not exist or never will: a retry would get the same. */
export function isPermanentFetchFailure(error: unknown): boolean {
  const status = fetchStatus(error);
  return status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429;
}

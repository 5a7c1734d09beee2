import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** The one JSON error shape of the API: `{ "error": { "code", "message" } }`. */
export interface ApiErrorBody {
  readonly error: { readonly code: string; readonly message: string };
}

export function apiError(c: Context, status: ContentfulStatusCode, code: string, message: string): Response {
  return c.json({ error: { code, message } } satisfies ApiErrorBody, status);
}

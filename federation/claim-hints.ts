import { gateOf } from "./direct-send.ts";

/**
 * What a claim on PostgreSQL reads with a delivery (kysely-message-queue.ts,
 * gatesWithClaim) besides the message: its member gate's ids, and its
 * inbox's origin, whose server state (circuit breaker, signature spec) the
 * batch sender checks. Written in columns of the message's row when it is
 * queued (migration 0089), taken from the message object Muster built: the
 * gate is Muster's own field (direct-send.ts), the origin is the inbox URL
 * as parsed, so no text inside an activity (a remote account's name, a
 * welcome that quotes it) can make a message claim another's gate or host.
 */
export interface ClaimHints {
  readonly gate_union_id: string | null;
  readonly gate_member_id: string | null;
  readonly inbox_origin: string | null;
}

export const NO_HINTS: ClaimHints = { gate_union_id: null, gate_member_id: null, inbox_origin: null };

export function claimHints(message: unknown): ClaimHints {
  const m = message as { type?: unknown; inbox?: unknown } | null;
  if (m?.type !== "outbox") return NO_HINTS;
  const gate = gateOf(message);
  return { gate_union_id: gate?.unionId ?? null, gate_member_id: gate?.memberId ?? null, inbox_origin: typeof m.inbox === "string" ? originOf(m.inbox) : null };
}

/**
 * The inbox's origin as the batch sender derives its server's keys from it
 * (batch-delivery.ts: the circuit key is JSON of the host, the spec key of
 * the origin), or null when the claim's SQL could not spell those keys the
 * same way: not http(s), or a host JSON would escape. Null only costs a
 * read of the state by the sender.
 */
function originOf(inbox: string): string | null {
  let url: URL;
  try {
    url = new URL(inbox);
  } catch {
    return null;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return null;
  const origin = url.origin;
  if (origin !== `${url.protocol}//${url.host}` || JSON.stringify(origin) !== `"${origin}"`) return null;
  return origin;
}

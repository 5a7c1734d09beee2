// How long a signed inbox delivery stays acceptable, and so how long its
// activity id must be remembered to refuse a replay of it.
//
// - An HTTP signature is accepted by Fedify for SIGNATURE_WINDOW_MS around its
//   Date (createFederation's signatureTimeWindow is set from this).
// - A body signed on its own (an Object Integrity Proof or a Linked Data
//   signature) is accepted by Fedify without the HTTP signature and with no
//   time limit; the inbox guard (src/http/inbox-guard.ts) refuses one created
//   more than SIGNED_BODY_MAX_AGE_MS ago. Two days covers a sender's
//   retries of one delivery (Mastodon's sixteen retries span about a day and a half).
// - Activity ids are kept ACTIVITY_ID_RETENTION_MS, longer than both, so any
//   copy the signature checks still let through finds its id and is refused.

export const SIGNATURE_WINDOW_MS = 3600_000;
export const SIGNED_BODY_MAX_AGE_MS = 2 * 24 * 3600_000;
export const ACTIVITY_ID_RETENTION_MS = 3 * 24 * 3600_000;

import { randomFillSync } from "node:crypto";

/** Lower-case letters and digits without i, l, o, u, in ASCII order (as src/unions/union-id.ts). */
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
/** Before the time: greater than every hex digit, so every new id sorts after every UUID made before. */
const PREFIX = "v";
const TIME_CHARS = 10;
const RANDOM_CHARS = 9;

/**
 * A new member's id: "v", the join's time in milliseconds as 10 base-32
 * characters, then 45 random bits as 9 more: 20 characters.
 *
 * Why time first: the roster's indexes end in the member id (members' primary
 * key, and (union_id, state, id) that fan-outs and the roster page through).
 * Random ids land all over those b-trees, whose pages split in two and stay
 * about two thirds full; ids that grow with time are appended at the right
 * edge, and pages fill to the b-tree's fill factor.
 *
 * Why 20 characters and not a UUIDv7's 36 (as until issue 16's storage work):
 * a member id is in the row twice (its own, and as its recruits' sponsor) and
 * in three indexes, 16 bytes each time, about 80 bytes a member on SQLite and
 * PostgreSQL at a million members. 45 random bits per millisecond keep ids
 * unguessable and unique (a collision would fail the insert on the primary
 * key). Ids made before (UUIDs, v4 or v7) stay as they are: "v" sorts after
 * every hex digit, so new ids still append at the right edge of indexes that
 * hold old ones, and both forms are text.
 */
export function newMemberId(now = Date.now()): string {
  // 48 bits of milliseconds; a clock a test set anywhere odd still gives a well-formed id.
  let ms = Number.isFinite(now) ? Math.min(2 ** 48 - 1, Math.max(0, Math.floor(now))) : Date.now();
  let time = "";
  for (let i = 0; i < TIME_CHARS; i++) {
    time = ALPHABET[ms % 32]! + time;
    ms = Math.floor(ms / 32);
  }
  let random = "";
  for (const b of randomFillSync(Buffer.allocUnsafe(RANDOM_CHARS))) random += ALPHABET[b & 31];
  return `${PREFIX}${time}${random}`;
}

/** Whether `text` has the form of a member id, new or made before (a UUID). */
export function isMemberIdForm(text: string): boolean {
  return /^v[0-9a-hjkmnp-tv-z]{19}$/.test(text) || /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text);
}

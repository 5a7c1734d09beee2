import { randomFillSync } from "node:crypto";

/** Lower-case letters and digits without i, l, o, u: nothing a LIKE pattern, a URL or JSON must escape. */
const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
const LENGTH = 13;

/**
 * A new union's id: 13 random base-32 characters (65 bits).
 *
 * Every member row, and every entry of four of its indexes, repeats its
 * union's id (issue 16: a million members). A union id is a key inside this
 * server only (outside, a union is its actor URL, made of its slug), and a
 * server holds a few unions, not billions: 65 random bits are as safe from a
 * collision here as a UUID's 122, and a collision would only fail the
 * insert on the primary key. The 23 bytes saved are about 100 bytes a
 * member on PostgreSQL and 80 on SQLite, counted in the heap and the
 * indexes. Unions created before keep their UUIDs; both forms are text.
 */
export function newUnionId(): string {
  const bytes = randomFillSync(Buffer.allocUnsafe(LENGTH));
  let id = "";
  for (const b of bytes) id += ALPHABET[b & 31];
  return id;
}

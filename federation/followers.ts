import type { Recipient } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { committedRecipients, deliveryRecipients, type Recipient as MemberRecipient } from "../src/members/roster.ts";

/** Rows a fan-out page reads: members, or inboxes (federation/fanout-pages.ts). */
export const PAGE = 500;

/**
 * The union's followers are its active members, paged by member id; each
 * carries its inbox and shared inbox so Fedify can fan out by shared inbox.
 * Fedify calls this for fan-out and for HTTP reads alike; the collection's
 * authorize() keeps HTTP reads to those who may see the roster.
 */
export async function followersPage(db: Kysely<DB>, unionId: string, cursor: string | null) {
  const page = await deliveryRecipients(db, unionId, cursor, PAGE);
  return { items: page.items.map(toRecipient), nextCursor: page.next };
}

/** The members who committed to a call-to-action, a page at a time (for progress replies). */
export async function committedPage(db: Kysely<DB>, unionId: string, actionId: string, cursor: string | null) {
  const page = await committedRecipients(db, unionId, actionId, cursor, PAGE);
  return { items: page.items.map(toRecipient), nextCursor: page.next };
}

function toRecipient(r: MemberRecipient): Recipient {
  return {
    id: new URL(r.actorId),
    inboxId: r.inbox ? new URL(r.inbox) : null,
    endpoints: r.sharedInbox ? { sharedInbox: new URL(r.sharedInbox) } : null,
  };
}

import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import { generateActorKeys } from "../../federation/keys.ts";
import type { ActionDeps } from "../../src/actions/actions.ts";
import type { DB } from "../../src/db/schema.ts";
import { createEventBus, type DomainEvents } from "../../src/events.ts";
import type { MembershipDeps } from "../../src/members/members.ts";
import type { Applicant } from "../../src/members/membership.ts";
import type { OutboxIntent } from "../../src/outbox.ts";
import type { StoredKey } from "../../src/unions/unions.ts";
import type { DialectCase, TestDatabase } from "./databases.ts";
import { recordingOutbox } from "./membership-worker.ts";

// The domain suites (members, actions) call the domain functions directly,
// one fresh database per test, with intents recorded rather than delivered.

export type Logged = { [K in keyof DomainEvents]: { type: K } & DomainEvents[K] }[keyof DomainEvents];

export interface Ctx {
  readonly tdb: TestDatabase;
  readonly db: Kysely<DB>;
  readonly deps: MembershipDeps & ActionDeps;
  /** Every domain event emitted so far, in order. */
  readonly log: Logged[];
}

export async function withCtx(d: DialectCase, fn: (c: Ctx) => Promise<void>): Promise<void> {
  const tdb = await d.create();
  const { db, close } = tdb.open();
  const events = createEventBus();
  const log: Logged[] = [];
  events.on("*", (type, e) => log.push({ type, ...e } as Logged));
  try {
    await fn({ tdb, db, deps: { db, events, outbox: recordingOutbox }, log });
  } finally {
    await close();
    await tdb.destroy();
  }
}

/**
 * The context's deps with an outbox that records each intent and then fails
 * on those of one kind, so a test sees what a delivery store going away in
 * the middle of a transaction leaves behind.
 */
export function failingOn(c: Ctx, kind: OutboxIntent["kind"]): Ctx["deps"] {
  return {
    ...c.deps,
    outbox: {
      add: async (trx, intent) => {
        await recordingOutbox.add(trx, intent);
        if (intent.kind === kind) throw new Error("delivery store unavailable");
      },
    },
  };
}

// Real keys, made once per suite: RSA generation is slow and keys are
// irrelevant here, but a union is never created keyless (an empty key list is
// refused).
let keys: Promise<StoredKey[]> | undefined;
export const sharedKeys = () => (keys ??= generateActorKeys());

export const LEADER: Applicant = { actorId: "https://example.org/users/lead", handle: "@lead@example.org" };

export function person(name: string, host = "remote.example"): Applicant {
  return { actorId: `https://${host}/users/${name}`, handle: `@${name}@${host}` };
}

export const followId = () => `https://remote.example/follows/${randomUUID()}`;

import type { Kysely } from "kysely";
import type { DB } from "./db/schema.ts";
import type { EventBus } from "./events.ts";
import type { Outbox } from "./outbox.ts";

/**
 * What a feature's state-changing functions are given: the database, the
 * in-process bus to announce what happened, and the outbox where outbound
 * work is recorded in the same transaction as the change.
 */
export interface DomainDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
}

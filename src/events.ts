import mittModule, { type Emitter } from "mitt";

// mitt's typings describe a CommonJS module, but Node loads its ESM build,
// whose default export is the factory itself.
const mitt = mittModule as unknown as typeof mittModule.default;

/**
 * Everything the domain announces. In-process notifications only: work that
 * must not be lost is committed to the database queue, never carried by mitt.
 */
export type DomainEvents = {
  "union.created": { unionId: string; slug: string };
  "activity.received": { activityId: string; type: string; actor: string; unionId: string | null };
};

export type EventBus = Emitter<DomainEvents>;

export function createEventBus(): EventBus {
  return mitt<DomainEvents>();
}

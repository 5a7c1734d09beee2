import type { Kysely } from "kysely";
import { changeBylaws } from "../../src/bylaws/bylaws.ts";
import type { DB } from "../../src/db/schema.ts";
import type { EventBus } from "../../src/events.ts";
import { getUnionBySlug, type Union } from "../../src/unions/unions.ts";

/**
 * Sets bylaw parameters as the operator would (`muster bylaws set`), for
 * tests that need a union with a given rule in force; returns the union as
 * it reads afterwards.
 */
export async function overrideBylaws(deps: { db: Kysely<DB>; events: EventBus }, slug: string, params: Record<string, unknown>): Promise<Union> {
  const union = await getUnionBySlug(deps.db, slug);
  if (!union) throw new Error(`no union ${slug}`);
  await changeBylaws(deps, union.id, { kind: "operator", reason: "test setup" }, { params });
  return (await getUnionBySlug(deps.db, slug))!;
}

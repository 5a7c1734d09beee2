/**
 * Calls-to-action test support: contenders that each run one scheduler or
 * publishing operation on a thread and database connection of their own (a
 * second `muster worker` or web process would), and a Kysely plugin that
 * holds chosen queries until a second transaction reaches the same point, so
 * a PostgreSQL interleaving that a race needs happens every time instead of
 * by luck. Intents go through membership-worker's recording Outbox; the
 * threads are contender-pool.ts's.
 */
import type { KyselyPlugin, PluginTransformQueryArgs, PluginTransformResultArgs, QueryResult, RootOperationNode, UnknownRow } from "kysely";
import { publishAction } from "../../src/actions/actions.ts";
import { decideRelay } from "../../src/actions/relay.ts";
import { publishDue } from "../../src/actions/scheduler.ts";
import { openDatabase } from "../../src/db/database.ts";
import { createEventBus } from "../../src/events.ts";
import type { By } from "../../src/members/members.ts";
import { type Contender, contenderPool, serveContender } from "./contender-pool.ts";
import { recordingOutbox } from "./membership-worker.ts";

export type ActionRaceOp =
  | { readonly op: "publish"; readonly unionId: string; readonly actionId: string; readonly by: By }
  | { readonly op: "publishDue"; readonly now: number }
  | { readonly op: "decideRelay"; readonly unionId: string; readonly requestId: number; readonly by: By; readonly relay: boolean };

export type ActionRaceResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly error: string; readonly name: string; readonly code: string | null };

export type ActionContender = Contender<ActionRaceOp, ActionRaceResult>;

const pool = contenderPool<ActionRaceOp, ActionRaceResult>(new URL(import.meta.url), "actionsRace", (error) => ({ ok: false, error, name: "WorkerError", code: null }));

/** The first `n` shared contenders, started on first use (starting one costs seconds). */
export const actionContenders = (n: number): Promise<ActionContender[]> => pool.take(n);
export const closeActionContenders = (): Promise<void> => pool.close();

async function runOp(url: string, op: ActionRaceOp): Promise<ActionRaceResult> {
  const database = openDatabase(url, { poolSize: 2 });
  const deps = { db: database.db, events: createEventBus(), outbox: recordingOutbox };
  try {
    switch (op.op) {
      case "publish":
        return { ok: true, value: (await publishAction(deps, op.unionId, op.actionId, op.by)).state };
      case "publishDue":
        return { ok: true, value: await publishDue(deps, op.now) };
      case "decideRelay":
        await decideRelay(deps, op.unionId, op.requestId, op.by, op.relay);
        return { ok: true, value: null };
    }
  } catch (e) {
    const err = e as { name?: string; code?: unknown };
    return { ok: false, error: String(e), name: String(err?.name ?? "Error"), code: typeof err?.code === "string" ? err.code : null };
  } finally {
    await database.close();
  }
}

serveContender("actionsRace", runOp);

/**
 * A plugin that holds the results of the first `parties` queries matching
 * `match` until all of them have arrived (or `timeoutMs` passed, which is
 * what happens on SQLite, where the second transaction cannot start while
 * the first holds the connection). `met()` says whether the parties really
 * were held together: on PostgreSQL that proves the interleaving happened.
 */
export function rendezvous(match: (node: RootOperationNode, json: string) => boolean, parties = 2, timeoutMs = 400) {
  const marked = new WeakSet<object>();
  let armed = parties;
  let met = false;
  const held: (() => void)[] = [];
  const plugin: KyselyPlugin = {
    transformQuery({ node, queryId }: PluginTransformQueryArgs): RootOperationNode {
      if (armed > 0 && match(node, JSON.stringify(node))) {
        armed--;
        marked.add(queryId);
      }
      return node;
    },
    async transformResult({ result, queryId }: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
      if (!marked.has(queryId)) return result;
      await new Promise<void>((resolve) => {
        held.push(resolve);
        if (held.length >= parties) {
          met = true;
          for (const r of held.splice(0)) r();
          return;
        }
        setTimeout(() => {
          const i = held.indexOf(resolve);
          if (i >= 0) {
            held.splice(i, 1);
            resolve();
          }
        }, timeoutMs);
      });
      return result;
    },
  };
  return { plugin, met: () => met };
}

/** The table a query node reads or writes first, for `rendezvous` matchers. */
export function touches(json: string, table: string): boolean {
  return json.includes(`"kind":"IdentifierNode","name":"${table}"`);
}

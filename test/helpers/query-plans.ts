import pg from "pg";

/** A node of PostgreSQL's `explain (format json)` plan, as far as the plan tests read it. */
export interface PlanNode {
  readonly "Node Type": string;
  readonly "Relation Name"?: string;
  readonly Plans?: PlanNode[];
}

/** Every node of an `explain (format json)` answer's plan, the root first. */
export function planNodes(plan: unknown): PlanNode[] {
  const out: PlanNode[] = [];
  const walk = (n: PlanNode) => {
    out.push(n);
    for (const c of n.Plans ?? []) walk(c);
  };
  for (const p of plan as { Plan: PlanNode }[]) walk(p.Plan);
  return out;
}

/** A statement sent to PostgreSQL, with its parameters. */
export interface Sent {
  readonly text: string;
  readonly values: unknown[];
}

/**
 * Records, while `recording` is on, the statements every pg client sends
 * whose text `wanted` accepts, so a test can explain them with their own
 * parameters; `restore` puts pg's query back.
 */
export function statementRecorder(wanted: (text: string) => boolean): { sent: Sent[]; recording: boolean; restore(): void } {
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  const recorder = {
    sent: [] as Sent[],
    recording: false,
    restore: () => {
      pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
    },
  };
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const q = args[0] as string | { text?: string; values?: unknown[] };
    const text = typeof q === "string" ? q : q?.text;
    if (recorder.recording && typeof text === "string" && wanted(text)) {
      recorder.sent.push({ text, values: (typeof q === "object" ? q.values : undefined) ?? (Array.isArray(args[1]) ? args[1] as unknown[] : []) });
    }
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
  return recorder;
}

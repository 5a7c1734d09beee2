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

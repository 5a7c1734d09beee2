import { OPERATOR } from "../../members/members.ts";
import {
  decideFeatureRequest, type FeatureStamp, type FeaturedItem, listFeaturedItems, listStamps, syncFeatured, withdrawStamp,
} from "../../relationships/featured.ts";
import { CliError, type Command, JSON_OPT, out, print, requireUnion, shortDate, table, withMuster } from "../command.ts";

// The union's FEP-7aa9 lists (allies, cabinet) as Mastodon 4.6 shows them,
// and the requests of others to list this union.

const itemJson = (i: FeaturedItem) => ({ id: i.id, collection: i.collection, actor: i.actorId, state: i.state, stamp: i.stamp, updatedAt: i.updatedAt.toISOString() });
const stampJson = (s: FeatureStamp) => ({ id: s.id, requester: s.requester, collection: s.collection, request: s.requestId, state: s.state, decidedBy: s.decidedBy, createdAt: s.createdAt.toISOString() });

async function requireStamp(list: FeatureStamp[], id: string): Promise<FeatureStamp> {
  const s = list.find((x) => x.id === id || x.id.startsWith(id));
  if (!s) throw new CliError(`no feature request ${JSON.stringify(id)} (see muster featured list)`);
  return s;
}

const decide = (verb: "accept" | "reject" | "withdraw"): Command => ({
  path: ["featured", verb],
  usage: `muster featured ${verb} <union> <request id> [--json]`,
  summary: verb === "accept" ? "Consent to another actor's request to list the union in its collection (issues a stamp)."
    : verb === "reject" ? "Refuse another actor's request to list the union."
    : "Withdraw consent given earlier: the stamp stops resolving and its holder is sent a Delete.",
  options: { ...JSON_OPT },
  positionals: ["union", "request"],
  async run({ values, positionals }) {
    await withMuster(async (m) => {
      const union = await requireUnion(m, positionals[0]!);
      const stamp = await requireStamp(await listStamps(m.database.db, union.id), positionals[1]!);
      if (verb === "withdraw") await withdrawStamp(m.membership, union.id, stamp.id, OPERATOR);
      else await decideFeatureRequest(m.membership, union.id, stamp.id, OPERATOR, verb === "accept");
      const after = (await listStamps(m.database.db, union.id)).find((s) => s.id === stamp.id)!;
      if (values.json) return print(stampJson(after));
      out(`${union.slug}: the request of ${after.requester} is now ${after.state}\n`);
    });
  },
});

export const featuredCommands: Command[] = [
  {
    path: ["featured", "list"],
    usage: "muster featured list <union> [--json]",
    summary: "The union's featured collections (allies, cabinet) with each listed actor's consent, and others' requests to list the union.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const items = await listFeaturedItems(m.database.db, union.id);
        const stamps = await listStamps(m.database.db, union.id);
        if (values.json) return print({ items: items.map(itemJson), requests: stamps.map(stampJson) });
        out(`Listed by ${union.slug} (only "accepted" ones are shown to others):\n`);
        out(items.length ? table(["collection", "actor", "consent", "since"], items.map((i) => [i.collection, i.actorId, i.state, shortDate(i.updatedAt)])) : "  nobody yet\n");
        out(`\nRequests to list ${union.slug}:\n`);
        out(stamps.length ? table(["id", "from", "collection", "state"], stamps.map((s) => [s.id.slice(0, 8), s.requester, s.collection, s.state])) : "  none\n");
      });
    },
  },
  {
    path: ["featured", "sync"],
    usage: "muster featured sync <union> [--json]",
    summary: "Ask new allies and officers for consent now, and drop former ones (the worker does this every 30 s).",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const r = await syncFeatured(m.membership, union.id);
        if (values.json) return print(r);
        out(`${union.slug}: ${r.requested} asked for consent, ${r.dropped} dropped, ${r.withdrawn} consents withdrawn\n`);
      });
    },
  },
  decide("accept"),
  decide("reject"),
  decide("withdraw"),
];

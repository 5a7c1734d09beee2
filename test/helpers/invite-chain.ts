import assert from "node:assert/strict";
import { Accept } from "@fedify/vocab";
import { createInvite } from "../../src/members/invites.ts";
import { OPERATOR } from "../../src/members/members.ts";
import { eventually } from "./muster.ts";
import type { StartedUnion, UnionWithPeer } from "./union-with-peer.ts";

/**
 * Members who came in by invites, as on an approval union: `leader` follows
 * and is accepted (the root), `first` claims a one-use operator invite, and
 * `second` claims the invite the union sent `first` with its welcome.
 */
export async function joinByInviteChain(fx: UnionWithPeer, { m, unionId }: StartedUnion, [leader, first, second]: readonly [string, string, string]): Promise<void> {
  const acceptOf = async (name: string) => fx.answerTo(await fx.follow(name), Accept);
  await acceptOf(leader);
  const operatorInvite = await createInvite(m.muster.membership, unionId, { by: OPERATOR, maxUses: 1 });
  for (const [name, code] of [[first, operatorInvite.code], [second, undefined]] as const) {
    const invite = code ?? (await eventually(async () => (await fx.linksTo(first, "join"))[0], `${first}'s welcome invite`));
    const claimed = await fetch(fx.url(`/u/riders/join/${invite}`), { method: "POST", body: new URLSearchParams({ handle: fx.handleOf(name) }), redirect: "manual" });
    assert.equal(claimed.status, 200);
    await acceptOf(name);
  }
}

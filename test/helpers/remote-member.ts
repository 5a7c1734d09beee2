import { upsertRemoteActor } from "../../src/actors/remote-actors.ts";
import type { MembershipDeps } from "../../src/members/members.ts";
import { requestToJoin } from "../../src/members/membership.ts";

/**
 * An account on another server, cached as if fetched, that follows an
 * `open` union and is accepted: a member without the Follow round trip.
 * `sharedInbox` null means the server only has per-actor inboxes.
 */
export async function joinAsRemoteMember(deps: MembershipDeps, unionId: string, origin: URL, name: string, sharedInbox: URL | null): Promise<string> {
  const id = new URL(`/users/${name}`, origin).href;
  const handle = `@${name}@${origin.host}`;
  await upsertRemoteActor(deps.db, {
    id, type: "Person", handle, name,
    inbox: `${id}/inbox`, sharedInbox: sharedInbox?.href ?? null, fetchedAt: Date.now(),
  });
  const joined = await requestToJoin(deps, unionId, { actorId: id, handle }, `${id}#follow`);
  if (joined.outcome !== "accepted") throw new Error(`${handle}'s join was ${joined.outcome}; the union must be open`);
  return id;
}

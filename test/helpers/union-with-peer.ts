import { type Accept, Create, Follow, type Group, Note, type Reject } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../../src/db/schema.ts";
import { findMemberByActor, type Member } from "../../src/members/members.ts";
import type { JoinPolicy } from "../../src/unions/unions.ts";
import type { DialectCase, TestDatabase } from "./databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./muster.ts";
import { type Peer, startPeer } from "./peer.ts";

/** What start() brings up. */
export interface StartedUnion {
  readonly m: TestMuster;
  readonly peer: Peer;
  /** The union as the peer sees it. */
  readonly group: Group;
  readonly unionId: string;
}

/**
 * The end-to-end suites' world: a real Muster server whose union "riders" is
 * led by the peer's actor "lead", and a real peer fediverse server whose
 * actors join it. The suite calls start() and stop() from its own before and
 * after hooks, so that what it adds (a browser) comes up after and goes down
 * before the servers.
 */
export interface UnionWithPeer {
  start(): Promise<StartedUnion>;
  stop(): Promise<void>;
  /** The peer's host, for handles of actors it does not have. */
  host(): string;
  handleOf(name: string): string;
  /** An absolute URL on the Muster server. */
  url(path: string): string;
  db(): Kysely<DB>;
  member(name: string): Promise<Member | undefined>;
  /** Sends a Follow of the union from the peer's actor; the answer comes later. */
  follow(name: string): Promise<Follow>;
  /** The answer (Accept or Reject) the peer received for this Follow. */
  answerTo(f: Follow, Kind: typeof Accept | typeof Reject): Promise<Accept | Reject>;
  /** Links of a kind (`join` or `login`) in direct messages the union sent to this actor, oldest first. */
  linksTo(name: string, kind: "join" | "login"): Promise<string[]>;
  /** The sign-in code in the newest direct message to this actor that has not been seen yet. */
  newLoginCode(name: string): Promise<string>;
}

export function unionWithPeer(d: DialectCase, opts: { actors: readonly string[]; joinPolicy: JoinPolicy }): UnionWithPeer {
  let tdb: TestDatabase | undefined;
  let m: TestMuster | undefined;
  let peer: Peer | undefined;
  let started: StartedUnion | undefined;
  let n = 0;
  const seenCodes = new Set<string>();
  const the = (): StartedUnion => {
    if (!started) throw new Error("the union and its peer have not been started");
    return started;
  };

  const host = () => {
    if (!peer) throw new Error("the peer has not been started");
    return peer.origin.host;
  };
  const handleOf = (name: string) => `@${name}@${host()}`;
  const db = () => the().m.muster.database.db;

  async function linksTo(name: string, kind: "join" | "login"): Promise<string[]> {
    const { peer } = the();
    const out: string[] = [];
    for (const a of peer.received) {
      if (!(a instanceof Create) || !a.toIds.some((t) => t.href === peer.actorId(name).href)) continue;
      const note = await a.getObject({ crossOrigin: "trust" });
      if (!(note instanceof Note)) continue;
      const code = new RegExp(`/u/riders/${kind}/([\\w-]+)`).exec(String(note.content))?.[1];
      if (code) out.push(code);
    }
    return out;
  }

  return {
    async start() {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(opts.actors);
      const union = await makeUnion(m, "riders", { leaderHandle: handleOf("lead"), joinPolicy: opts.joinPolicy });
      const group = await peer.lookup(new URL("/u/riders", m.origin)) as Group;
      started = { m, peer, group, unionId: union.id };
      return started;
    },
    async stop() {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    },
    host,
    handleOf,
    url: (path) => new URL(path, the().m.origin).href,
    db,
    member: (name) => findMemberByActor(db(), the().unionId, the().peer.actorId(name).href),
    async follow(name) {
      const { peer, group } = the();
      const f = new Follow({ id: new URL(`/follows/${name}-${++n}`, peer.origin), actor: peer.actorId(name), object: group.id });
      await peer.send(name, group, f);
      return f;
    },
    answerTo(f, Kind) {
      const { peer } = the();
      return eventually(async () => {
        for (const a of peer.received) {
          if (!(a instanceof Kind)) continue;
          const obj = await a.getObject({ crossOrigin: "trust" });
          if (obj instanceof Follow && obj.id?.href === f.id!.href) return a;
        }
        return undefined;
      }, `${Kind.name} of ${f.id!.href}`);
    },
    linksTo,
    async newLoginCode(name) {
      const code = await eventually(async () => (await linksTo(name, "login")).find((c) => !seenCodes.has(c)), `a sign-in DM to ${name}`);
      seenCodes.add(code);
      return code;
    },
  };
}

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { fastShape } from "../federation/inbox-fast-shape.ts";

/*
 * The inbox's fast path reads URLs as federation/canonical-url.ts does (as
 * the Follow's fast path reads them): a URL carrying credentials (user:pass@)
 * is never read from the plain JSON, whichever field it is in, and the
 * activity goes to Fedify's path instead, which decides.
 */

const origin = new URL("https://muster.example");
const AS = "https://www.w3.org/ns/activitystreams";
const call = "https://muster.example/u/riders/actions/0b6c1b53-4c59-4d7e-a1a5-1e1b3b0a9f10";
const proposal = "https://muster.example/u/riders/proposals/0b6c1b53-4c59-4d7e-a1a5-1e1b3b0a9f10";
const actor = "https://peer.example/users/alice";
const withCredentials = (url: string) => url.replace("https://", "https://user:pass@");

const like = (o: Record<string, unknown> = {}) => ({ "@context": AS, id: "https://peer.example/likes/1", type: "Like", actor, object: call, ...o });
const reply = (note: Record<string, unknown> = {}, o: Record<string, unknown> = {}) => ({
  "@context": AS, id: "https://peer.example/activities/1", type: "Create", actor,
  object: { id: "https://peer.example/notes/1", type: "Note", attributedTo: actor, inReplyTo: call, content: "I'm in", ...note }, ...o,
});
const vote = (note: Record<string, unknown> = {}) => ({
  "@context": AS, id: "https://peer.example/users/alice#votes/1/activity", type: "Create", actor,
  object: { id: "https://peer.example/users/alice#votes/1", type: "Note", attributedTo: actor, inReplyTo: proposal, name: "yes", ...note },
});
const undo = (inner: Record<string, unknown> = {}) => ({ "@context": AS, id: "https://peer.example/undos/1", type: "Undo", actor, object: { id: "https://peer.example/likes/1", type: "Like", actor, object: call, ...inner } });

describe("the inbox's fast shapes: URLs with credentials are left to Fedify's path", () => {
  it("the plain shapes are read (the control)", () => {
    assert.equal(fastShape(like(), origin)?.kind, "like");
    assert.equal(fastShape(reply(), origin)?.kind, "reply");
    assert.equal(fastShape(vote(), origin)?.kind, "vote");
    assert.equal(fastShape(undo(), origin)?.kind, "undo-like");
  });

  it("a Like of the call named with user:pass@ on this server's own origin: not read", () => {
    assert.equal(fastShape(like({ object: withCredentials(call) }), origin), undefined);
  });

  it("an activity id or actor with credentials: not read", () => {
    assert.equal(fastShape(like({ id: withCredentials("https://peer.example/likes/1") }), origin), undefined);
    assert.equal(fastShape(like({ actor: withCredentials(actor) }), origin), undefined);
    assert.equal(fastShape(reply({ attributedTo: withCredentials(actor) }, { actor: withCredentials(actor) }), origin), undefined);
  });

  it("a reply whose note id or inReplyTo carries credentials: not read", () => {
    assert.equal(fastShape(reply({ id: withCredentials("https://peer.example/notes/1") }, { id: withCredentials("https://peer.example/activities/1") }), origin), undefined);
    assert.equal(fastShape(reply({ inReplyTo: withCredentials(call) }), origin), undefined);
  });

  it("a poll answer to the proposal named with credentials, or an Undo of such a Like: not read", () => {
    assert.equal(fastShape(vote({ inReplyTo: withCredentials(proposal) }), origin), undefined);
    assert.equal(fastShape(undo({ object: withCredentials(call) }), origin), undefined);
    assert.equal(fastShape(undo({ id: "https://u:@peer.example/likes/1" }), origin), undefined);
  });
});

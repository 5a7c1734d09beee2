import { commitRelayedOnWeb, relayedCallsOf, talliesOf, withdrawRelayedOnWeb } from "../relationships/tallies.ts";
import type { Context, Hono, MiddlewareHandler } from "hono";
import type { Kysely } from "kysely";
import {
  type Action,
  ActionError,
  type ActionDeps,
  composeAction,
  editAction,
  getAction,
  hashesOf,
  listActions,
  publishAction,
  retractAction,
} from "../actions/actions.ts";
import { decideRelay, pendingRelays } from "../actions/relay.ts";
import { chainOf, GENESIS } from "../actions/chain.ts";
import { progressOf, recordWebResponse } from "../actions/responses.ts";
import { mayReadRoster } from "../members/roster.ts";
import type { DB } from "../db/schema.ts";
import { anchorOfAction } from "../actions/anchors.ts";
import { logger } from "../logging.ts";
import { MemberError } from "../members/members.ts";
import { type RelayPolicy, type Union, UnionError, type UnionSettings, updateUnion } from "../unions/unions.ts";
import { BylawsError } from "../bylaws/params.ts";
import { nextPublication } from "../actions/scheduler.ts";
import {
  commentsOf,
  handlesByActor,
  htmlToText,
  lastPublishedOn,
  parseDatetimeLocal,
  recentRelays,
  responseStateOf,
  timeZones,
} from "./actions-data.ts";
import type { Gate, Viewer } from "./members-web.ts";
import { actionIndexPage, actionPage, relayedCallsPage, retractedPage } from "./pages/actions.ts";
import { consoleActionPage, consoleActionsPage, type DraftValues, type RelayRow, valuesOf } from "./pages/console-actions.ts";
import { errorPage } from "./pages/error.ts";

// Calls-to-action on the web: the officers' console (compose, queue,
// schedule, history, relays, replies) and each call-to-action's page, where
// a signed-in member can say "I'm in" and "Done". The rules live in
// src/actions; this file turns forms into those calls.

export interface ActionsWebDeps {
  readonly db: Kysely<DB>;
  readonly actions: ActionDeps;
  readonly loadUnion: (c: Context) => Promise<Union | undefined>;
  readonly viewerIn: (c: Context, union: Union) => Promise<Viewer | undefined>;
  readonly gate: (c: Context, officersOnly: boolean) => Promise<Gate>;
  /** Sends a signed-out visitor to sign in, and back to `returnTo` afterwards. */
  readonly signInFirst: (c: Context, union: Union, returnTo: string) => Response;
}

const log = logger("http", "actions");

const DONE: Record<string, string> = {
  queued: "Queued. It goes out with the daily schedule.",
  published: "Published: it is on its way to members' servers.",
  edited: "Saved. Members' servers are sent the edit.",
  draft_saved: "Draft saved.",
  deleted: "Draft deleted.",
  retracted: "Retracted: members' servers were asked to delete it.",
  schedule: "Schedule settings saved.",
  relayed: "Relayed to all members.",
  declined: "Declined: it will not be relayed.",
};

const ANSWERED: Record<string, string> = {
  committed: "You're in: you have been counted.",
  already_committed: "You were already counted. Thank you.",
  done: "Marked as done. Thank you.",
  already_done: "You had already marked it done.",
  withdrawn: "Withdrawn: you are no longer counted.",
  not_counted: "You were not counted for it.",
};

/**
 * Pages that embed Markdown and remote text run no inline script, whatever
 * slips through: only our own static files (the chain check) may run.
 */
const STRICT_CSP = [
  "default-src 'self'",
  "img-src 'self' https: http: data:",
  "style-src 'self'",
  "script-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

type Status = 400 | 403 | 404 | 409;

class FormError extends Error {}

function statusOf(e: unknown): Status {
  const code = (e as { code?: string }).code;
  return code === "forbidden" ? 403 : code === "not_found" ? 404 : code === "conflict" ? 409 : 400;
}

const isDomainError = (e: unknown): e is ActionError | MemberError | UnionError | BylawsError | FormError =>
  e instanceof ActionError || e instanceof MemberError || e instanceof UnionError || e instanceof BylawsError || e instanceof FormError;

const field = (form: Record<string, unknown>, name: string): string => {
  const v = form[name];
  return typeof v === "string" ? v : "";
};

function draftValues(form: Record<string, unknown>): DraftValues {
  return {
    title: field(form, "title"),
    text: field(form, "text"),
    kind: field(form, "kind"),
    link: field(form, "link").trim(),
    goal: field(form, "goal").trim(),
    deadline: field(form, "deadline").trim(),
  };
}

function goalOf(raw: string): number | null {
  if (raw === "") return null;
  if (!/^\d{1,9}$/.test(raw)) throw new FormError("The goal is a whole number of members, or empty for none.");
  return Number(raw);
}

function deadlineOf(raw: string, union: Union): Date | null {
  if (raw === "") return null;
  const d = parseDatetimeLocal(raw, union.timeZone);
  if (!d) throw new FormError(`The deadline is not a date and time (${union.timeZone}).`);
  return d;
}

export function mountActionsWeb(app: Hono, deps: ActionsWebDeps): void {
  const { db, actions } = deps;

  const strictCsp: MiddlewareHandler = async (c, next) => {
    await next();
    c.header("Content-Security-Policy", STRICT_CSP);
  };
  for (const path of ["/u/:slug/actions", "/u/:slug/actions/*", "/u/:slug/console/actions", "/u/:slug/console/actions/*"]) {
    app.use(path, strictCsp);
  }

  const noUnion = (c: Context) => c.html(errorPage(404, "No such union here."), 404);
  const noAction = (c: Context) => c.html(errorPage(404, "No such call-to-action here."), 404);
  const by = (v: Viewer) => ({ kind: "member", memberId: v.member.id }) as const;
  const mayRead = (union: Union, viewer: Viewer | undefined) => union.actionsVisibility === "public" || viewer !== undefined;

  // ---- The pages members (or, for public unions, everyone) see ----

  app.get("/u/:slug/actions", async (c) => {
    const union = await deps.loadUnion(c);
    if (!union) return noUnion(c);
    const viewer = await deps.viewerIn(c, union);
    if (!mayRead(union, viewer)) return deps.signInFirst(c, union, `/u/${union.slug}/actions`);
    const published = await listActions(db, union.id, { states: ["published"], limit: 50 });
    const items = await Promise.all(published.map(async (action) => ({ action, progress: await progressOf(db, action) })));
    const membersShown = await mayReadRoster(db, union, { via: "web", member: viewer?.member });
    return c.html(actionIndexPage({ union, viewer: viewer?.member, items, membersShown }));
  });

  // The whole hash chain, for anyone who may read the calls-to-action: what
  // the page's in-browser check (public/verify-chain.js) and any other tool
  // recompute. Registered before /actions/:id, which would take the name.
  app.get("/u/:slug/actions/chain.json", async (c) => {
    const union = await deps.loadUnion(c);
    if (!union) return noUnion(c);
    const viewer = await deps.viewerIn(c, union);
    if (!mayRead(union, viewer)) return c.json({ error: { code: "forbidden", message: "sign in as a member to read this union's chain" } }, 403);
    if (union.actionsVisibility !== "public") c.header("Cache-Control", "private, no-cache");
    const entries = await chainOf(db, union.id);
    return c.json({
      union: `/u/${union.slug}`,
      algorithm: "sha256(prevHash + \"\\n\" + event + \"\\n\" + payload), hex; the first prevHash is 64 zeros",
      genesis: GENESIS,
      entries: entries.map((e) => ({ n: e.n, actionId: e.actionId, event: e.event, at: e.at.toISOString(), prevHash: e.prevHash, hash: e.hash, payload: e.payload })),
    });
  });

  // Calls this union relays from an ally or its parent: its members cannot
  // sign in at the call's own union, so they say "I'm in" here, and it is
  // counted in the totals reported to that union. Registered before
  // /actions/:id, which would take the name.
  app.get("/u/:slug/actions/relayed", async (c) => {
    const union = await deps.loadUnion(c);
    if (!union) return noUnion(c);
    const viewer = await deps.viewerIn(c, union);
    if (!viewer) return deps.signInFirst(c, union, `/u/${union.slug}/actions/relayed`);
    const calls = await relayedCallsOf(db, union.id, viewer.member.id);
    const handles = await handlesByActor(db, union.id, calls.map((r) => r.authorId));
    return c.html(relayedCallsPage({
      union,
      viewer: viewer.member,
      calls: calls.map((r) => ({ ...r, excerpt: htmlToText(r.excerpt), authorHandle: handles.get(r.authorId) ?? null })),
      notice: ANSWERED[c.req.query("done") ?? ""],
    }));
  });

  for (const kind of ["commit", "withdraw"] as const) {
    app.post(`/u/:slug/actions/relayed/${kind}`, async (c) => {
      const union = await deps.loadUnion(c);
      if (!union) return noUnion(c);
      const page = `/u/${union.slug}/actions/relayed`;
      const viewer = await deps.viewerIn(c, union);
      if (!viewer) return deps.signInFirst(c, union, page);
      const note = field(await c.req.parseBody(), "note");
      const changed = kind === "commit"
        ? await commitRelayedOnWeb(actions, union.id, note, viewer.member.id)
        : await withdrawRelayedOnWeb(actions, union.id, note, viewer.member.id);
      if (changed === undefined) return noAction(c);
      const done = kind === "commit" ? (changed ? "committed" : "already_committed") : (changed ? "withdrawn" : "not_counted");
      return c.redirect(`${page}?done=${done}`, 303);
    });
  }

  // Fedify answers this URL with the Note for ActivityPub clients; a browser
  // (Accept: text/html) falls through to here.
  app.get("/u/:slug/actions/:id", async (c) => {
    // The same URL is JSON for fediverse servers: caches must key on Accept.
    c.header("Vary", "Accept");
    const union = await deps.loadUnion(c);
    if (!union) return noUnion(c);
    const action = await getAction(db, union.id, c.req.param("id"));
    if (!action || action.state === "queued") return noAction(c);
    if (action.state === "retracted") return c.html(retractedPage(union, action), 410);
    const viewer = await deps.viewerIn(c, union);
    if (!mayRead(union, viewer)) return deps.signInFirst(c, union, `/u/${union.slug}/actions/${action.id}`);
    const [progress, hashes, state, anchor, relayed] = await Promise.all([
      progressOf(db, action),
      hashesOf(db, action.id),
      viewer ? responseStateOf(db, action.id, viewer.member.id) : undefined,
      anchorOfAction(db, union.id, action.id),
      talliesOf(db, union.id, action.id),
    ]);
    return c.html(actionPage({
      union,
      action,
      progress,
      relayed,
      membersShown: await mayReadRoster(db, union, { via: "web", member: viewer?.member }),
      hashes,
      anchor,
      viewer: viewer?.member,
      state,
      now: Date.now(),
      notice: ANSWERED[c.req.query("done") ?? ""],
    }));
  });

  for (const kind of ["commit", "done"] as const) {
    app.post(`/u/:slug/actions/:id/${kind}`, async (c) => {
      const union = await deps.loadUnion(c);
      if (!union) return noUnion(c);
      const id = c.req.param("id");
      const page = `/u/${union.slug}/actions/${id}`;
      const viewer = await deps.viewerIn(c, union);
      if (!viewer) return deps.signInFirst(c, union, page);
      const action = await getAction(db, union.id, id);
      if (!action || action.state === "queued") return noAction(c);
      if (action.state === "retracted") return c.html(retractedPage(union, action), 410);
      const counted = await recordWebResponse(actions, union.id, action.id, viewer.member.id, kind);
      const done = kind === "commit" ? (counted ? "committed" : "already_committed") : (counted ? "done" : "already_done");
      return c.redirect(`${page}?done=${done}`, 303);
    });
  }

  // ---- The console ----

  async function renderList(c: Context, v: Viewer, extra: { error?: string; status?: Status; values?: DraftValues } = {}) {
    const { union } = v;
    const [queuedNewestFirst, history, pending, decided, last] = await Promise.all([
      listActions(db, union.id, { states: ["queued"] }),
      listActions(db, union.id, { states: ["published", "retracted"], limit: 100 }),
      pendingRelays(db, union.id),
      recentRelays(db, union.id),
      lastPublishedOn(db, union.id),
    ]);
    // The scheduler takes the oldest queued first (created_at, then id).
    const queued = [...queuedNewestFirst].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1));
    const rows = await Promise.all(history.map(async (action) => ({
      action,
      progress: await progressOf(db, action),
      hash: (await hashesOf(db, action.id))?.hash ?? null,
    })));
    const handles = await handlesByActor(db, union.id, [...pending, ...decided].map((r) => r.author_id));
    const relayRow = (r: (typeof pending)[number]): RelayRow => ({
      id: Number(r.id),
      noteId: r.note_id,
      author: r.author_id,
      authorHandle: handles.get(r.author_id) ?? null,
      excerpt: htmlToText(r.excerpt ?? ""),
      state: r.state,
      at: new Date(Number(r.created_at)),
    });
    return c.html(consoleActionsPage({
      union,
      viewer: v.member,
      queued,
      history: rows,
      next: nextPublication(Date.now(), union, last),
      timeZones: timeZones(union.timeZone),
      pendingRelays: pending.map(relayRow),
      decidedRelays: decided.map(relayRow),
      notice: DONE[c.req.query("done") ?? ""],
      error: extra.error,
      values: extra.values,
    }), extra.status ?? 200);
  }

  async function renderDetail(c: Context, v: Viewer, action: Action, extra: { error?: string; status?: Status; values?: DraftValues } = {}) {
    const { union } = v;
    const live = action.state !== "queued";
    const [progress, hashes, comments, queued] = await Promise.all([
      live ? progressOf(db, action) : undefined,
      live ? hashesOf(db, action.id) : undefined,
      live ? commentsOf(db, action.id) : [],
      live ? [] : listActions(db, union.id, { states: ["queued"] }),
    ]);
    const order = [...queued].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || (a.id < b.id ? -1 : 1));
    const position = live ? undefined : order.findIndex((a) => a.id === action.id) + 1 || undefined;
    return c.html(consoleActionPage({
      union,
      viewer: v.member,
      action,
      progress,
      hashes,
      comments,
      position,
      values: extra.values,
      notice: DONE[c.req.query("done") ?? ""],
      error: extra.error,
    }), extra.status ?? 200);
  }

  app.get("/u/:slug/console/actions", async (c) => {
    const g = await deps.gate(c, true);
    return g.ok ? renderList(c, g.viewer) : g.res;
  });

  app.post("/u/:slug/console/actions", async (c) => {
    const g = await deps.gate(c, true);
    if (!g.ok) return g.res;
    const { union } = g.viewer;
    const form = await c.req.parseBody();
    const values = draftValues(form);
    const now = field(form, "when") === "now";
    try {
      const action = await composeAction(actions, union.id, by(g.viewer), {
        title: values.title!,
        text: values.text!,
        kind: values.kind || undefined,
        link: values.link || null,
        goal: goalOf(values.goal!),
        deadline: deadlineOf(values.deadline!, union),
      }, { publishNow: now });
      log.info("{handle} {verb} call-to-action {id} in {slug}", { handle: g.viewer.member.handle, verb: now ? "published" : "queued", id: action.id, slug: union.slug });
      const base = `/u/${union.slug}/console/actions`;
      return c.redirect(now ? `${base}?done=published#history` : `${base}?done=queued#queue`, 303);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return renderList(c, g.viewer, { error: e.message, status: statusOf(e), values });
    }
  });

  app.get("/u/:slug/console/actions/:id", async (c) => {
    const g = await deps.gate(c, true);
    if (!g.ok) return g.res;
    const action = await getAction(db, g.viewer.union.id, c.req.param("id"));
    return action ? renderDetail(c, g.viewer, action) : noAction(c);
  });

  app.post("/u/:slug/console/actions/:id/edit", async (c) => {
    const g = await deps.gate(c, true);
    if (!g.ok) return g.res;
    const { union } = g.viewer;
    const action = await getAction(db, union.id, c.req.param("id"));
    if (!action) return noAction(c);
    const values = draftValues(await c.req.parseBody());
    try {
      // An unchanged deadline is left alone (it may have passed); a new one must be ahead.
      const deadline = values.deadline === valuesOf(action, union).deadline ? undefined : deadlineOf(values.deadline!, union);
      await editAction(actions, union.id, action.id, by(g.viewer), {
        title: values.title,
        text: values.text,
        kind: values.kind || undefined,
        link: values.link || null,
        goal: goalOf(values.goal!),
        deadline,
      });
      return c.redirect(`/u/${union.slug}/console/actions/${action.id}?done=${action.state === "published" ? "edited" : "draft_saved"}`, 303);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return renderDetail(c, g.viewer, action, { error: e.message, status: statusOf(e), values });
    }
  });

  app.post("/u/:slug/console/actions/:id/publish", async (c) => {
    const g = await deps.gate(c, true);
    if (!g.ok) return g.res;
    const { union } = g.viewer;
    try {
      await publishAction(actions, union.id, c.req.param("id"), by(g.viewer));
      return c.redirect(`/u/${union.slug}/console/actions?done=published#history`, 303);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return renderList(c, g.viewer, { error: e.message, status: statusOf(e) });
    }
  });

  app.post("/u/:slug/console/actions/:id/retract", async (c) => {
    const g = await deps.gate(c, true);
    if (!g.ok) return g.res;
    const { union } = g.viewer;
    const id = c.req.param("id");
    try {
      const after = await retractAction(actions, union.id, id, by(g.viewer));
      return after
        ? c.redirect(`/u/${union.slug}/console/actions/${id}?done=retracted`, 303)
        : c.redirect(`/u/${union.slug}/console/actions?done=deleted#queue`, 303);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return renderList(c, g.viewer, { error: e.message, status: statusOf(e) });
    }
  });

  app.post("/u/:slug/console/schedule", async (c) => {
    const g = await deps.gate(c, true);
    if (!g.ok) return g.res;
    const form = await c.req.parseBody();
    try {
      // Only the relay policy is the officers' to set. A bylaw field posted
      // here (a stale page, a forged form) goes to the domain, which refuses it.
      const settings: Record<string, unknown> = { relayPolicy: field(form, "relayPolicy") as RelayPolicy };
      for (const k of ["publishTime", "timeZone", "actionsVisibility", "commitmentWords"]) if (k in form) settings[k] = field(form, k);
      await updateUnion(actions, g.viewer.union.slug, by(g.viewer), settings as UnionSettings);
      log.info("{handle} changed the call-to-action schedule of {slug}", { handle: g.viewer.member.handle, slug: g.viewer.union.slug });
      return c.redirect(`/u/${g.viewer.union.slug}/console/actions?done=schedule#schedule`, 303);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return renderList(c, g.viewer, { error: e.message, status: statusOf(e) });
    }
  });

  for (const decision of ["relay", "decline"] as const) {
    app.post(`/u/:slug/console/relays/:id/${decision}`, async (c) => {
      const g = await deps.gate(c, true);
      if (!g.ok) return g.res;
      const { union } = g.viewer;
      const id = Number(c.req.param("id"));
      try {
        if (!Number.isSafeInteger(id)) throw new ActionError("not_found", "no such relay request");
        await decideRelay(actions, union.id, id, by(g.viewer), decision === "relay");
        return c.redirect(`/u/${union.slug}/console/actions?done=${decision === "relay" ? "relayed" : "declined"}#relays`, 303);
      } catch (e) {
        if (!isDomainError(e)) throw e;
        return renderList(c, g.viewer, { error: e.message, status: statusOf(e) });
      }
    });
  }
}

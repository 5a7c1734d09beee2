import { type ChapterNode, chapterTree } from "../relationships/chapters.ts";
import type { ChapterLead } from "./pages/console.ts";
import { BylawsError, parseAssignments } from "../bylaws/params.ts";
import type { Context, Hono, MiddlewareHandler } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { logger } from "../logging.ts";
import { createInvite, getInviteByCode, type Invite, listInvites, placesHeld, revokeInvite, welcomePlaces } from "../members/invites.ts";
import { type By, countMembers, findMemberByHandle, getMember, listMembers, type Member, MemberError, type MembershipDeps } from "../members/members.ts";
import { approveMember, rejectMember, removeMember, setOfficer, unsetOfficer } from "../members/membership.ts";
import { recruitsOf, sponsorChain } from "../members/tree.ts";
import {
  type CodeProblem,
  endSession,
  LOGIN_CODE_LIFETIME_MS,
  requestLogin,
  SESSION_LIFETIME_MS,
  sessionFor,
  SessionError,
  signInWithCode,
  checkLoginCode,
} from "../sessions/sessions.ts";
import { getUnionBySlug, type MembersVisibility, normaliseHandle, type Union, UnionError, updateUnion } from "../unions/unions.ts";
import { handlesOf, loadTree, treeRoots } from "./console-data.ts";
import { consolePage, memberDetailPage } from "./pages/console.ts";
import { cursorParam, pageNumber } from "./paging.ts";
import { clientOf as clientAddress } from "./client-address.ts";
import { errorPage } from "./pages/error.ts";
import { confirmLoginPage, homeOf, isOfficer, loginPage, loginProblemPage, loginSentPage } from "./pages/login.ts";
import { mePage } from "./pages/me.ts";
import { membersPage } from "./pages/members.ts";
import { readRoster, readSubtreeRoot, readTreeRoots } from "../members/roster.ts";
import { membersVisibility, VISIBILITY_TEXT } from "../members/visibility.ts";
import { mountActionsWeb } from "./actions-web.ts";
import { mountRelationshipsWeb, type ProposeAlliance } from "./relationships-web.ts";
import { issueWalletChallenge, proveWallet, walletOf } from "../treasury/wallet-proof.ts";
import { TreasuryError } from "../treasury/dues.ts";
import { duesPayOffer } from "./dues-link.ts";
import { mountProposalsWeb } from "./proposals-web.ts";
import { delegationState, mayPropose } from "../bylaws/proposing.ts";
import { delegateVote, type DelegationScope, ProposalError, withdrawDelegation } from "../bylaws/proposals.ts";

// Passwordless sign-in, the officers' console and the member page. The
// rules live in src/sessions and src/members; this file turns forms into
// those calls and results into pages.

export interface MembersWebDeps {
  readonly db: Kysely<DB>;
  readonly origin: URL;
  readonly membership: MembershipDeps;
  readonly proposeAlliance?: ProposeAlliance;
  /**
   * Take the client address from the last X-Forwarded-For entry (set by a
   * reverse proxy in front of Muster). Off: the socket's peer address, which
   * behind a proxy is the proxy itself, so every client would share one limit.
   */
  readonly trustProxy?: boolean;
}

export const SESSION_COOKIE = "muster_session";
/** Where to go after signing in, when a page sent a signed-out visitor to sign in first. */
const NEXT_COOKIE = "muster_next";
const MEMBERS_PER_PAGE = 100;
const LIFETIME_MINUTES = Math.round(LOGIN_CODE_LIFETIME_MS / 60_000);
const log = logger("http", "members");

const DONE: Record<string, string> = {
  approved: "Request approved: they are now a member, and their server has been told.",
  rejected: "Request rejected.",
  removed: "Member removed.",
  expelled: "Member expelled.",
  invite_revoked: "Invite revoked.",
  officer: "Office updated.",
  visibility: "Saved who sees the members.",
  signed_out: "You are signed out.",
  wallet_linked: "Wallet linked, with proof. Your badge follows shortly.",
  delegated: "Your vote is delegated.",
  delegation_withdrawn: "Your delegation is withdrawn: you vote for yourself.",
};

const CODE_PROBLEMS: Record<CodeProblem, { status: 404 | 410 | 403; message: string }> = {
  unknown: { status: 404, message: "This sign-in link is not valid. Copy the whole link from the message, or ask for a new one." },
  used: { status: 410, message: "This sign-in link has already been used. Each link works only once." },
  expired: { status: 410, message: `This sign-in link has expired. Links work for ${LIFETIME_MINUTES} minutes.` },
  not_member: { status: 403, message: "This account is not a current member of the union." },
};

export type Viewer = { readonly union: Union; readonly member: Member; readonly token: string };
export type Gate = { ok: true; viewer: Viewer } | { ok: false; res: Response };

/** The member signed in to this union on this request, if any. */
export async function signedInMember(db: Kysely<DB>, c: Context, union: Union): Promise<Member | undefined> {
  const token = getCookie(c, SESSION_COOKIE) ?? "";
  return token ? (await sessionFor(db, union.id, token))?.member : undefined;
}

/** Only pages of the union's calls-to-action and its member list are returned to after signing in. */
function returnPath(union: Union, path: string | undefined): string | undefined {
  return path && new RegExp(`^/u/${union.slug}/(actions(/[A-Za-z0-9-]{1,64})?|members)$`).test(path) ? path : undefined;
}

/** A browser asking for a page, not a fediverse server asking for the collection at the same URL. */
function wantsHtml(c: Context): boolean {
  const accept = c.req.header("accept") ?? "";
  return /\btext\/html\b/.test(accept) && !/application\/(activity\+json|ld\+json)/.test(accept);
}

export function mountMembersWeb(app: Hono, deps: MembersWebDeps): void {
  const { db, origin, membership } = deps;
  const secure = origin.protocol === "https:";

  // Requests that change state must come from our own pages, whatever their
  // content type (hono/csrf looks only at form types, so a JSON POST with a
  // session cookie passed): the Origin must be ours, or, from a browser that
  // sends no Origin, Sec-Fetch-Site must say same-origin. Neither: refused.
  const csrfPage: MiddlewareHandler = async (c, next) => {
    if (["GET", "HEAD", "OPTIONS"].includes(c.req.method)) return next();
    const from = c.req.header("origin");
    const site = c.req.header("sec-fetch-site");
    // Fetch metadata first: a browser sets Sec-Fetch-Site itself, and pages
    // sent with Referrer-Policy: no-referrer (the sign-in link's) make it
    // send "Origin: null" for their own same-origin forms. Without it (older
    // browsers), the Origin must be ours; without either, it is no browser
    // form and is refused.
    const ok = site !== undefined
      ? site === "same-origin"
      : from !== undefined && (from === origin.origin || from === new URL(c.req.url).origin);
    if (!ok) {
      log.warn("Refused a cross-site {method} to {path}", { method: c.req.method, path: c.req.path });
      return c.html(errorPage(403, "This form was sent from another site, so it was refused. Open the page on this site and try again."), 403);
    }
    return next();
  };
  // Pages that show or change a member's data are never cached.
  const privatePage: MiddlewareHandler = async (c, next) => {
    await next();
    c.header("Cache-Control", "no-store");
    // Framing, sniffing and scripts: the app-wide secure headers (src/http/app.ts).
    c.header("Referrer-Policy", "same-origin");
  };
  for (const path of ["/u/:slug/login", "/u/:slug/login/*", "/u/:slug/logout", "/u/:slug/console", "/u/:slug/console/*", "/u/:slug/me", "/u/:slug/me/*", "/u/:slug/actions", "/u/:slug/actions/*", "/u/:slug/proposals/new", "/u/:slug/proposals/:n/vote", "/u/:slug/delegation", "/u/:slug/me/delegation"]) {
    app.use(path, privatePage, csrfPage);
  }

  const clientOf = (c: Context): string => clientAddress(c, deps.trustProxy);

  const loadUnion = (c: Context) => getUnionBySlug(db, c.req.param("slug") ?? "");
  const noUnion = (c: Context) => c.html(errorPage(404, "No such union here."), 404);

  async function viewerIn(c: Context, union: Union): Promise<Viewer | undefined> {
    const token = getCookie(c, SESSION_COOKIE) ?? "";
    const s = token ? await sessionFor(db, union.id, token) : undefined;
    return s && { union, member: s.member, token };
  }

  /** A signed-in current member of this union (officers only, when asked); else the answer to send. */
  async function gate(c: Context, officersOnly: boolean): Promise<Gate> {
    const union = await loadUnion(c);
    if (!union) return { ok: false, res: await noUnion(c) };
    const viewer = await viewerIn(c, union);
    if (!viewer) return { ok: false, res: c.redirect(`/u/${union.slug}/login`, 303) };
    if (officersOnly && !isOfficer(viewer.member)) {
      return {
        ok: false,
        res: await c.html(errorPage(403, "Only the leader and officers can open the console."), 403),
      };
    }
    return { ok: true, viewer };
  }

  const by = (v: Viewer): By => ({ kind: "member", memberId: v.member.id });
  const statusOf = (e: MemberError | UnionError | BylawsError): 400 | 403 | 404 | 409 =>
    e.code === "forbidden" ? 403 : e.code === "not_found" ? 404 : e.code === "conflict" ? 409 : 400;
  const isDomainError = (e: unknown): e is MemberError | UnionError | BylawsError => e instanceof MemberError || e instanceof UnionError || e instanceof BylawsError;

  // ---- Sign-in ----

  app.get("/u/:slug/login", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const viewer = await viewerIn(c, union);
    const notice = c.req.query("done") === "signed_out" ? DONE.signed_out : undefined;
    return c.html(loginPage({ union, host: origin.host, lifetimeMinutes: LIFETIME_MINUTES, signedInAs: viewer?.member, notice }));
  });

  app.post("/u/:slug/login", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const handle = String((await c.req.parseBody()).handle ?? "").trim();
    const view = { union, host: origin.host, lifetimeMinutes: LIFETIME_MINUTES, handle };
    try {
      const r = await requestLogin(membership, {
        unionId: union.id,
        handle,
        client: clientOf(c),
        linkFor: (code) => new URL(`/u/${union.slug}/login/${code}`, origin).href,
      });
      if (r.status === "limited") {
        const minutes = Math.max(1, Math.ceil(r.retryAfterMs / 60_000));
        c.header("Retry-After", String(Math.ceil(r.retryAfterMs / 1000)));
        const error = r.scope === "handle"
          ? `Too many sign-in links have been asked for ${handle} recently. Wait ${minutes} ${minutes === 1 ? "minute" : "minutes"}, then try again; a link sent earlier still works.`
          : `Too many sign-in requests from your network recently. Wait ${minutes} ${minutes === 1 ? "minute" : "minutes"}, then try again.`;
        return c.html(loginPage({ ...view, error }), 429);
      }
      return c.html(loginSentPage(union, r.handle, LIFETIME_MINUTES));
    } catch (e) {
      if (e instanceof SessionError) return c.html(loginPage({ ...view, error: e.message }), 400);
      throw e;
    }
  });

  // GET only shows a button: link previews and mail scanners fetch links,
  // and must not use the code up.
  app.get("/u/:slug/login/:code", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const code = c.req.param("code");
    const check = await checkLoginCode(db, union.id, code);
    if (!check.ok) {
      const p = CODE_PROBLEMS[check.problem];
      return c.html(loginProblemPage(union, p.message), p.status);
    }
    return c.html(confirmLoginPage(union, code, check.member));
  });

  app.post("/u/:slug/login/:code", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const r = await signInWithCode(db, union.id, c.req.param("code"), clientOf(c));
    if (!r.ok) {
      if (r.problem === "limited") {
        const minutes = Math.max(1, Math.ceil(r.retryAfterMs / 60_000));
        c.header("Retry-After", String(Math.ceil(r.retryAfterMs / 1000)));
        return c.html(loginProblemPage(union, `Too many sign-in links that did not work came from your network. Wait ${minutes} ${minutes === 1 ? "minute" : "minutes"}, then try again.`), 429);
      }
      const p = CODE_PROBLEMS[r.problem];
      return c.html(loginProblemPage(union, p.message), p.status);
    }
    setCookie(c, SESSION_COOKIE, r.token, {
      httpOnly: true,
      sameSite: "Lax",
      path: "/",
      secure,
      maxAge: Math.floor(SESSION_LIFETIME_MS / 1000),
    });
    log.info("{handle} signed in to {slug}", { handle: r.member.handle, slug: union.slug });
    const back = returnPath(union, getCookie(c, NEXT_COOKIE));
    if (getCookie(c, NEXT_COOKIE) !== undefined) deleteCookie(c, NEXT_COOKIE, { path: `/u/${union.slug}`, secure, httpOnly: true, sameSite: "Lax" });
    return c.redirect(back ?? homeOf(union, r.member), 303);
  });

  app.post("/u/:slug/logout", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const token = getCookie(c, SESSION_COOKIE);
    if (token) await endSession(db, token);
    deleteCookie(c, SESSION_COOKIE, { path: "/", secure, httpOnly: true, sameSite: "Lax" });
    return c.redirect(`/u/${union.slug}/login?done=signed_out`, 303);
  });

  // ---- Officers' console ----

  async function renderConsole(c: Context, v: Viewer, extra: { error?: string; status?: 400 | 403 | 404 | 409; inviteValues?: { uses?: string; expires?: string } } = {}) {
    const { union } = v;
    const page = pageNumber(c.req.query("page"));
    if (page === null) return c.html(errorPage(400, "The page number must be a whole number from 1."), 400);
    const [pending, members, activeCount, invites, roots] = await Promise.all([
      listMembers(db, union.id, { states: ["pending"], limit: 200 }),
      listMembers(db, union.id, { states: ["active", "reserved"], limit: MEMBERS_PER_PAGE, offset: (page - 1) * MEMBERS_PER_PAGE }),
      countMembers(db, union.id, ["active"]),
      listInvites(db, union.id),
      treeRoots(db, union.id),
    ]);
    const trees = await Promise.all(roots.map((r) => loadTree(db, r)));
    const chapterLeads = leadsOf(await chapterTree(db, union.id));
    const creators = await handlesOf(db, union.id, invites.flatMap((i) => (i.createdBy ? [i.createdBy] : [])));
    const createdCode = c.req.query("created");
    const created = createdCode ? invites.find((i) => i.code === createdCode) : undefined;
    return c.html(consolePage({
      union,
      origin,
      viewer: v.member,
      pending,
      members,
      activeCount,
      page,
      pageSize: MEMBERS_PER_PAGE,
      invites,
      creators,
      trees,
      created,
      notice: DONE[c.req.query("done") ?? ""],
      error: extra.error,
      inviteValues: extra.inviteValues,
      chapterLeads,
    }), extra.status ?? 200);
  }

  async function renderMemberDetail(c: Context, v: Viewer, memberId: string, extra: { error?: string; status?: 400 | 403 | 404 | 409 } = {}) {
    const member = await getMember(db, v.union.id, memberId);
    if (!member) return c.html(errorPage(404, "No such member."), 404);
    const after = cursorParam(c.req.query("after"));
    if (after === null) return c.html(errorPage(400, "That position in the list is not one this page offered."), 400);
    const [chain, tree] = await Promise.all([sponsorChain(db, member.id), loadTree(db, member, { after })]);
    return c.html(memberDetailPage({
      union: v.union,
      viewer: v.member,
      member,
      chain,
      tree,
      after,
      notice: DONE[c.req.query("done") ?? ""],
      error: extra.error,
    }), extra.status ?? 200);
  }

  app.get("/u/:slug/console", async (c) => {
    const g = await gate(c, true);
    return g.ok ? renderConsole(c, g.viewer) : g.res;
  });

  app.get("/u/:slug/console/members/:id", async (c) => {
    const g = await gate(c, true);
    return g.ok ? renderMemberDetail(c, g.viewer, c.req.param("id")) : g.res;
  });

  /** An officer action on a member; domain errors are shown on the page the form was on. */
  function memberAction(action: string, run: (v: Viewer, memberId: string, form: Record<string, unknown>) => Promise<string>, errorsOn: "console" | "member") {
    app.post(`/u/:slug/console/members/:id/${action}`, async (c) => {
      const g = await gate(c, true);
      if (!g.ok) return g.res;
      const memberId = c.req.param("id");
      try {
        const done = await run(g.viewer, memberId, await c.req.parseBody());
        const base = `/u/${g.viewer.union.slug}/console`;
        return c.redirect(errorsOn === "console" ? `${base}?done=${done}#pending` : `${base}/members/${memberId}?done=${done}`, 303);
      } catch (e) {
        if (!isDomainError(e)) throw e;
        const extra = { error: e.message, status: statusOf(e) };
        return errorsOn === "console" ? renderConsole(c, g.viewer, extra) : renderMemberDetail(c, g.viewer, memberId, extra);
      }
    });
  }

  memberAction("approve", async (v, id) => {
    await approveMember(membership, v.union.id, id, by(v));
    return "approved";
  }, "console");
  memberAction("reject", async (v, id) => {
    await rejectMember(membership, v.union.id, id, by(v), null);
    return "rejected";
  }, "console");
  memberAction("remove", async (v, id, form) => {
    const expel = form.expel === "1" || form.expel === "on";
    await removeMember(membership, v.union.id, id, by(v), { reason: String(form.reason ?? ""), expel });
    return expel ? "expelled" : "removed";
  }, "member");
  memberAction("officer", async (v, id, form) => {
    if (form.dismiss === "1") await unsetOfficer(membership, v.union.id, id, by(v));
    else await setOfficer(membership, v.union.id, id, by(v), String(form.portfolio ?? "").trim() || null);
    return "officer";
  }, "member");

  app.post("/u/:slug/console/roster-visibility", async (c) => {
    const g = await gate(c, true);
    if (!g.ok) return g.res;
    const choice = String((await c.req.parseBody()).visibility ?? "");
    try {
      // A bylaw: the domain refuses officers (kept so a stale form gets a clear answer).
      await updateUnion(membership, g.viewer.union.slug, by(g.viewer), { membersVisibility: choice } as never);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      return renderConsole(c, g.viewer, { error: e.message, status: statusOf(e) });
    }
    log.info("{handle} set who sees the members of {slug} to {choice}", { handle: g.viewer.member.handle, slug: g.viewer.union.slug, choice });
    return c.redirect(`/u/${g.viewer.union.slug}/console?done=visibility#roster-visibility`, 303);
  });

  mountProposalsWeb(app, { db, membership, loadUnion });

  app.post("/u/:slug/console/invites", (c) => postInvite(c, "console"));

  app.post("/u/:slug/console/invites/:code/revoke", async (c) => {
    const g = await gate(c, true);
    if (!g.ok) return g.res;
    await revokeInvite(membership, g.viewer.union.id, c.req.param("code"));
    return c.redirect(`/u/${g.viewer.union.slug}/console?done=invite_revoked#invites`, 303);
  });

  // ---- Calls-to-action: the console's section and each one's page ----

  mountActionsWeb(app, {
    db,
    actions: membership,
    loadUnion,
    viewerIn,
    gate,
    signInFirst: (c, union, returnTo) => {
      setCookie(c, NEXT_COOKIE, returnTo, { path: `/u/${union.slug}`, httpOnly: true, sameSite: "Lax", secure, maxAge: 3600 });
      return c.redirect(`/u/${union.slug}/login`, 303);
    },
  });

  mountRelationshipsWeb(app, { db, relationships: membership, gate, propose: deps.proposeAlliance });

  // ---- The member list and tree, for browsers ----

  // The same URL is the federated collection (federation/member-collections.ts);
  // browsers get this page, and both go through the same roster reads.
  app.get("/u/:slug/members", async (c, next) => {
    if (!wantsHtml(c)) return next();
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const member = (await viewerIn(c, union))?.member;
    const viewer = { via: "web", member } as const;
    const after = c.req.query("after") || undefined;
    const rootId = c.req.query("root") || undefined;
    const q = c.req.query("q") || undefined;
    const roster = await readRoster(db, union, viewer, { after, limit: MEMBERS_PER_PAGE, handle: q });
    // Framing, sniffing and scripts: the app-wide secure headers (src/http/app.ts).
    c.header("Cache-Control", "private, no-store");
    c.header("Referrer-Policy", "same-origin");
    c.header("Vary", "Accept, Cookie");
    if (!roster.ok) {
      if (roster.refused === "unidentified") {
        setCookie(c, NEXT_COOKIE, `/u/${union.slug}/members`, { path: `/u/${union.slug}`, httpOnly: true, sameSite: "Lax", secure, maxAge: 3600 });
        return c.redirect(`/u/${union.slug}/login`, 303);
      }
      return c.html(errorPage(403, `This union shows its member list only to: ${VISIBILITY_TEXT[membersVisibility(union)]}`), 403);
    }
    let roots: Member[];
    let subtreeOf: Member | undefined;
    if (rootId) {
      const r = await readSubtreeRoot(db, union, viewer, rootId);
      if (!r.ok || !r.root) return c.html(errorPage(404, "No such member in the tree."), 404);
      roots = [r.root];
      subtreeOf = r.root;
    } else {
      const r = await readTreeRoots(db, union, viewer);
      roots = r.ok ? r.roots : [];
    }
    const trees = await Promise.all(roots.map((r) => loadTree(db, r, { after: subtreeOf ? after : undefined })));
    return c.html(membersPage({ union, viewer: member, total: roster.total, search: roster.search, matched: roster.matched, items: roster.items, next: roster.next, paged: after !== undefined, trees, subtreeOf }));
  });

  // ---- A member's own page ----

  /** The invite form on the console (officers) and on a member's own page: same form, same rules. */
  async function postInvite(c: Context, page: "console" | "me") {
    const g = await gate(c, page === "console");
    if (!g.ok) return g.res;
    const form = await c.req.parseBody();
    const values = { uses: String(form.uses ?? "").trim(), expires: String(form.expires ?? "") };
    try {
      const invite = await createInvite(membership, g.viewer.union.id, inviteInput(g.viewer, values));
      return c.redirect(`/u/${g.viewer.union.slug}/${page}?created=${encodeURIComponent(invite.code)}#invites`, 303);
    } catch (e) {
      if (!isDomainError(e)) throw e;
      const extra = { error: e.message, status: statusOf(e), inviteValues: values };
      return page === "console" ? renderConsole(c, g.viewer, extra) : renderMe(c, g.viewer, extra);
    }
  }

  async function renderMe(c: Context, v: Viewer, extra: { error?: string; status?: 400 | 403 | 404 | 409; inviteValues?: { uses?: string; expires?: string }; delegationValues?: { scope?: string; delegate?: string } } = {}) {
    const { union, member } = v;
    const [chain, recruits, invites, held, welcome, proposer] = await Promise.all([
      sponsorChain(db, member.id),
      recruitsOf(db, union.id, member.id, { limit: 200 }),
      listInvites(db, union.id, { createdBy: member.id }),
      placesHeld(db, union.id, member.id),
      welcomePlaces(db, union.id, member.id),
      mayPropose(db, union.id, member),
    ]);
    const delegation = await delegationState(db, union.id, member);
    const createdCode = c.req.query("created");
    const created: Invite | undefined = createdCode ? invites.find((i) => i.code === createdCode) : undefined;
    const wallet = await walletOf(db, union.id, member.id);
    return c.html(mePage({
      union,
      origin,
      wallet,
      dues: await duesPayOffer(db, origin, union, member),
      viewer: member,
      chain,
      recruits,
      invites,
      placesHeld: held,
      welcomePlaces: welcome,
      created,
      notice: DONE[c.req.query("done") ?? ""],
      error: extra.error,
      inviteValues: extra.inviteValues,
      mayPropose: proposer,
      delegation,
      delegationValues: extra.delegationValues,
    }), extra.status ?? 200);
  }

  app.get("/u/:slug/me", async (c) => {
    const g = await gate(c, false);
    return g.ok ? renderMe(c, g.viewer) : g.res;
  });

  app.post("/u/:slug/me/invites", (c) => postInvite(c, "me"));

  // Wallet linking from the page (public/wallet-link.js): a challenge for the
  // signed-in member, then their wallet's signature of it.
  app.post("/u/:slug/me/wallet/challenge", async (c) => {
    const g = await gate(c, false);
    if (!g.ok) return g.res;
    const { union, member } = g.viewer;
    if (!member.actorId) return c.json({ error: { code: "invalid", message: "your account has not joined yet" } }, 400);
    const ch = await issueWalletChallenge(db, union.id, member.id, { union: new URL(`/u/${union.slug}`, origin).href, actorId: member.actorId });
    return c.json({ message: ch.message, expiresAt: new Date(ch.expiresAt).toISOString() });
  });

  app.post("/u/:slug/me/wallet", async (c) => {
    const g = await gate(c, false);
    if (!g.ok) return g.res;
    let body: { wallet?: unknown; message?: unknown; signature?: unknown };
    try {
      body = await c.req.json();
    } catch {
      return c.json({ error: { code: "invalid", message: "expected JSON with wallet, message and signature" } }, 400);
    }
    if (typeof body.wallet !== "string" || typeof body.message !== "string" || typeof body.signature !== "string" || body.message.length > 2000) {
      return c.json({ error: { code: "invalid", message: "expected JSON with wallet, message and signature" } }, 400);
    }
    try {
      // A challenge is issued to one member: another member's signed challenge links nothing here.
      const linked = await proveWallet(membership, g.viewer.union.id, { wallet: body.wallet, message: body.message, signature: body.signature }, Date.now(), g.viewer.member.id);
      return c.json({ wallet: linked.wallet });
    } catch (e) {
      if (e instanceof TreasuryError) return c.json({ error: { code: e.code, message: e.message } }, 400);
      throw e;
    }
  });

  // Delegating one's vote (all proposals or one kind; the sponsor is offered first), changing it, or withdrawing it.
  app.post("/u/:slug/me/delegation", async (c) => {
    const g = await gate(c, false);
    if (!g.ok) return g.res;
    const form = await c.req.parseBody();
    const values = { scope: String(form.scope ?? "all"), delegate: String(form.delegate ?? "") };
    const scope = values.scope as DelegationScope;
    try {
      if (form.withdraw === "1") {
        await withdrawDelegation(membership, g.viewer.union.id, by(g.viewer), scope);
      } else {
        const handle = normaliseHandle(values.delegate);
        const to = await findMemberByHandle(db, g.viewer.union.id, handle);
        if (!to || to.state !== "active") throw new ProposalError("not_found", `${handle} is not a member of this union`);
        await delegateVote(membership, g.viewer.union.id, by(g.viewer), to.id, scope);
      }
    } catch (e) {
      if (!(e instanceof ProposalError || e instanceof UnionError)) throw e;
      return renderMe(c, g.viewer, { error: e.message, status: e.code === "forbidden" ? 403 : e.code === "conflict" ? 409 : 400, delegationValues: values });
    }
    return c.redirect(`/u/${g.viewer.union.slug}/me?done=${form.withdraw === "1" ? "delegation_withdrawn" : "delegated"}#delegation`, 303);
  });

  app.post("/u/:slug/me/invites/:code/revoke", async (c) => {
    const g = await gate(c, false);
    if (!g.ok) return g.res;
    const invite = await getInviteByCode(db, g.viewer.union.id, c.req.param("code"));
    // Members revoke only their own invites; officers use the console for others'.
    if (!invite || invite.createdBy !== g.viewer.member.id) {
      return renderMe(c, g.viewer, { error: "That is not one of your invites.", status: 404 });
    }
    await revokeInvite(membership, g.viewer.union.id, invite.code);
    return c.redirect(`/u/${g.viewer.union.slug}/me?done=invite_revoked#invites`, 303);
  });
}

const DAY_MS = 24 * 3600_000;

/** The invite form's fields as createInvite's input; the domain checks the numbers and the limit. */
function inviteInput(v: Viewer, values: { uses: string; expires: string }) {
  const expiresInMs = values.expires === "never"
    ? null
    : /^\d+$/.test(values.expires) && Number(values.expires) >= 1 && Number(values.expires) <= 365
    ? Number(values.expires) * DAY_MS
    : undefined;
  if (expiresInMs === undefined) throw new MemberError("invalid", "choose when the invite expires");
  // Empty uses: unlimited for officers; one for members (the domain's default).
  const maxUses = values.uses === "" ? (isOfficer(v.member) ? null : undefined) : Number(values.uses);
  return { by: { kind: "member", memberId: v.member.id } as By, maxUses, expiresInMs };
}

/** Every chapter's leads, down the whole tree, in tree order. */
function leadsOf(nodes: readonly ChapterNode[]): ChapterLead[] {
  return nodes.flatMap((n) => [...n.leads.map((l) => ({ handle: l.handle, actorId: l.actorId, chapter: n.name, chapterActorId: n.actorId })), ...leadsOf(n.chapters)]);
}

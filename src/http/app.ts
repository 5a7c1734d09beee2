import type { ProposeAlliance } from "./relationships-web.ts";
import { chapterSnapshot } from "../relationships/chapters.ts";
import type { Federation } from "@fedify/fedify";
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { secureHeaders } from "hono/secure-headers";
import { HTTPException } from "hono/http-exception";
import { serveStatic } from "@hono/node-server/serve-static";
import { fileURLToPath } from "node:url";
import { relative } from "node:path";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { logger } from "../logging.ts";
import { checkSetupToken, consumeSetupToken, setupTokenPending } from "../setup/setup-token.ts";
import { createUnion, getUnionBySlug, listUnions, type MembersVisibility, type Union, UnionError, type UnionDeps, validateNewUnion } from "../unions/unions.ts";
import { apiError } from "./api-error.ts";
import { DatabaseBusyError } from "../db/sqlite-driver.ts";
import { clientOf } from "./client-address.ts";
import { hitLimits } from "../sessions/rate-limit.ts";
import { federationMiddleware } from "./federation-mount.ts";
import type { ReadCache } from "./read-cache.ts";
import { inboxGuard } from "./inbox-guard.ts";
import { actorFeaturedFields, featuredRoutes, featureRequestInbox } from "../../federation/featured-collections.ts";
import { proposalResultRoute } from "../../federation/proposal-question.ts";
import { membershipCheckRoute } from "../../federation/partner-membership.ts";
import { healthMonitor } from "./health.ts";
import { closeAfterResponse } from "./close-connection.ts";
import { blockedServerGuard } from "./blocked-servers.ts";
import { fastInboxRoute } from "./inbox-fast.ts";
import type { FastInbox } from "../../federation/inbox-fast-path.ts";
import { errorPage } from "./pages/error.ts";
import { homePage } from "./pages/home.ts";
import { unionPage } from "./pages/union.ts";
import { unionLinks } from "../relationships/relationships.ts";
import { crowdfundItems } from "./crowdfunds-web.ts";
import { formatUnits } from "../../solana/amounts.ts";
import { followNextPage, joinedPage, joinPage } from "./pages/join.ts";
import { bylawsPage } from "./pages/bylaws.ts";
import { bylawsHistory } from "../bylaws/bylaws.ts";
import { getInviteByCode, inviteProblem } from "../members/invites.ts";
import { countMembers, getLeader, getMember, MemberError, type MembershipDeps } from "../members/members.ts";
import { startPage } from "./pages/start.ts";
import { claimInviteForApplicant } from "../members/membership.ts";
import { mountMembersWeb, signedInMember } from "./members-web.ts";
import { currentAction, listActions } from "../actions/actions.ts";
import { progressOf } from "../actions/responses.ts";
import { mayReadRoster } from "../members/roster.ts";

export interface HttpDeps {
  readonly db: Kysely<DB>;
  readonly federation: Federation<void>;
  readonly origin: URL;
  readonly maxBodyBytes: number;
  readonly unions: UnionDeps;
  readonly membership: MembershipDeps;
  /** Looks up another union by handle or URL and offers it an alliance (federation/relationships.ts proposeTo). */
  readonly proposeAlliance?: ProposeAlliance;
  /** The newcomer's own server's follow page for `target`, if it has one. */
  readonly remoteFollowUrl: (handle: string, target: URL) => Promise<string | undefined>;
  /** Behind a reverse proxy: rate-limit by the last X-Forwarded-For address instead of the socket's. */
  readonly trustProxy?: boolean;
  /** Serves the actor, WebFinger and NodeInfo documents from Fedify's last answer until they change. */
  readonly readCache?: ReadCache;
  /** The inbox's fast path for common responses; absent, every inbox POST goes through Fedify. */
  readonly fastInbox?: FastInbox;
}

const log = logger("http");
/** Join attempts one client address may make per window. */
const JOIN_PER_CLIENT = 10;
const JOIN_WINDOW_MS = 15 * 60_000;
const PUBLIC_DIR = relative(process.cwd(), fileURLToPath(new URL("../../public/", import.meta.url))) || ".";

export function createHttpApp(deps: HttpDeps): Hono {
  const { db } = deps;
  const app = new Hono();

  app.use("*", securityHeaders(deps.origin));

  // Before anything reads an inbox body: unsigned, oversized, malformed or
  // context-fetching bodies are refused without that work (and, when they
  // are refused before the end, without reading the rest).
  app.use("*", inboxGuard({ db, maxBodyBytes: deps.maxBodyBytes, origin: deps.origin }));
  // Every other request: a body larger than this is refused with 413 instead
  // of being buffered; a declared one, from its headers, unread.
  app.use("*", async (c, next) => {
    const declared = c.req.header("Content-Length");
    if (declared !== undefined && /^\d{1,15}$/.test(declared) && Number(declared) > deps.maxBodyBytes) {
      closeAfterResponse(c);
      return apiError(c, 413, "payload_too_large", `request bodies are limited to ${deps.maxBodyBytes} bytes`);
    }
    return next();
  });
  app.use("*", bodyLimit({
    maxSize: deps.maxBodyBytes,
    onError: (c) => {
      // Not closeAfterResponse: this body is already wrapped in a web stream (see inbox-guard.ts).
      c.header("Connection", "close");
      return apiError(c, 413, "payload_too_large", `request bodies are limited to ${deps.maxBodyBytes} bytes`);
    },
  }));
  // A blocked server's deliveries go no further (muster server block).
  app.use("*", blockedServerGuard(db));
  // Members' responses counted and plain Follows joined without the queue (federation/inbox-fast-path.ts,
  // follow-fast-path.ts, composed in main.ts), for inbox POSTs the node-level inbox did not already offer.
  if (deps.fastInbox) app.use("*", fastInboxRoute(deps.fastInbox));
  // FEP-7aa9 FeatureRequests, which Fedify cannot parse, and the featured collections and stamps.
  app.use("*", featureRequestInbox({ db, events: deps.membership.events, outbox: deps.membership.outbox, origin: deps.origin, federation: deps.federation }));
  app.use("*", featuredRoutes(db, deps.origin, deps.federation));
  app.use("*", proposalResultRoute(db, deps.federation));
  app.use("*", membershipCheckRoute(db, deps.origin, deps.federation));
  app.use("*", federationMiddleware(deps.federation, deps.readCache, actorFeaturedFields(db, deps.origin)));
  app.use("/public/*", serveStatic({ root: PUBLIC_DIR, rewriteRequestPath: (p) => p.replace(/^\/public/, "") }));

  // Browsers and feed readers ask for /favicon.ico whatever the page links.
  app.get("/favicon.ico", (c) => c.redirect("/public/favicon.svg", 301));

  const health = healthMonitor(db);
  app.get("/healthz", async (c) => {
    if ((await health()).ok) return c.json({ status: "ok" });
    return c.json({ status: "error", error: { code: "database_unavailable", message: "database unavailable" } }, 503);
  });

  app.get("/", async (c) => c.html(homePage({
    host: deps.origin.host,
    unions: await listUnions(db),
    setupOpen: await setupTokenPending(db),
    setup: { token: c.req.query("token") ?? "" },
  })));

  app.post("/setup", async (c) => {
    const form = await c.req.parseBody();
    const values = Object.fromEntries(["slug", "name", "purpose", "leader", "visibility", "timeZone"].map((k) => [k, String(form[k] ?? "")]));
    const token = String(form.token ?? "");
    const again = async (status: 400 | 403, error: string) =>
      c.html(homePage({ host: deps.origin.host, unions: await listUnions(db), setupOpen: await setupTokenPending(db), setup: { token, error, values } }), status);
    if (!(await checkSetupToken(db, token))) return again(403, "That setup token is not valid. Use the one printed on the server's console.");
    const input = {
      slug: values.slug!,
      name: values.name!,
      purpose: values.purpose!,
      leaderHandle: values.leader || null,
      membersVisibility: (values.visibility || undefined) as MembersVisibility | undefined,
      timeZone: values.timeZone,
    };
    try {
      validateNewUnion(input);
    } catch (e) {
      if (e instanceof UnionError) return again(400, e.message);
      throw e;
    }
    // Validate before consuming, so a typo does not burn the one-time token.
    if (!(await consumeSetupToken(db, token))) return again(403, "That setup token has already been used.");
    try {
      const union = await createUnion(deps.unions, input);
      log.info("First-run setup created union {slug}", { slug: union.slug });
      return c.redirect(`/u/${union.slug}/start`, 303);
    } catch (e) {
      if (e instanceof UnionError) return again(400, e.message);
      throw e;
    }
  });

  app.get("/u/:slug/start", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    return c.html(startPage(union, deps.origin.host));
  });

  app.get("/u/:slug", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    const action = await currentAction(db, union.id);
    const viewer = await signedInMember(db, c, union);
    // Counts reveal membership, so they follow the union's roster rule.
    const rosterShown = await mayReadRoster(db, union, { via: "web", member: viewer });
    // A members-only union's call-to-action is named only to its signed-in members.
    const readable = union.actionsVisibility === "public" || viewer !== undefined;
    const current = action
      ? readable
        ? { action, progress: await progressOf(db, action), membersShown: rosterShown }
        : { action: undefined, progress: undefined }
      : undefined;
    const recent = readable ? (await listActions(db, union.id, { states: ["published"], limit: 6 })).filter((a) => a.id !== action?.id).slice(0, 5) : [];
    const memberCount = rosterShown ? await countMembers(db, union.id) : undefined;
    const leader = await getLeader(db, union.id);
    // What the page shows depends on who is signed in.
    c.header("Cache-Control", "private, no-cache");
    return c.html(unionPage(union, new URL(`/u/${union.slug}`, deps.origin), current, {
      memberCount,
      leaderUrl: leader?.actorId ?? null,
      recent,
      viewer: viewer ? { handle: viewer.handle ?? viewer.actorId ?? "", home: viewer.role === "member" ? "me" : "console" } : undefined,
      links: await unionLinks(db, union.id),
      tree: await chapterSnapshot(db, union.id, new URL(`/u/${union.slug}`, deps.origin).href),
      totalsShown: rosterShown,
      crowdfunds: readable ? await crowdfundItems({ db, formatUnits }, union) : [],
    }));
  });

  // Public like the union page: the rules a newcomer joins under.
  app.get("/u/:slug/bylaws", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    return c.html(bylawsPage(union, await bylawsHistory(db, union.id)));
  });

  app.get("/u/:slug/join/:code", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    const view = await joinView(union, c.req.param("code"));
    return c.html(joinPage(view), view.invite ? 200 : 404);
  });

  app.post("/u/:slug/join/:code", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    const code = c.req.param("code");
    const handle = String((await c.req.parseBody()).handle ?? "").trim();
    // Each attempt records a claim and makes a WebFinger lookup on someone
    // else's server: a client gets a few, not a loop.
    const limited = await hitLimits(db, [{ bucket: `join:ip:${clientOf(c, deps.trustProxy)}`, max: JOIN_PER_CLIENT, windowMs: JOIN_WINDOW_MS }]);
    if (!limited.ok) {
      const minutes = Math.max(1, Math.ceil(limited.retryAfterMs / 60_000));
      c.header("Retry-After", String(Math.ceil(limited.retryAfterMs / 1000)));
      const view = await joinView(union, code);
      return c.html(joinPage({ ...view, error: `Too many join attempts from your network recently. Wait ${minutes} ${minutes === 1 ? "minute" : "minutes"}, then try again.`, handle }), 429);
    }
    try {
      const r = await claimInviteForApplicant(deps.membership, union.id, code, handle);
      if (r.admitted) return c.html(joinedPage(union, r.admitted.handle ?? handle));
      const actorId = new URL(`/u/${union.slug}`, deps.origin);
      const next = await deps.remoteFollowUrl(r.claim!.handle, actorId);
      if (next) return c.redirect(next, 303);
      return c.html(followNextPage(union, deps.origin.host, r.claim!.handle, actorId));
    } catch (e) {
      if (!(e instanceof MemberError)) throw e;
      const view = await joinView(union, code);
      return c.html(joinPage({ ...view, error: e.message, handle }), 400);
    }
  });

  async function joinView(union: Union, code: string) {
    const invite = await getInviteByCode(db, union.id, code);
    const sponsor = invite?.createdBy ? await getMember(db, union.id, invite.createdBy) : undefined;
    return {
      union,
      host: deps.origin.host,
      leader: (await getLeader(db, union.id))?.handle ?? union.leaderHandle,
      sponsor: sponsor?.handle ?? null,
      invite,
      problem: inviteProblem(invite),
    };
  }

  // Sign-in, the officers' console and the member page.
  mountMembersWeb(app, { db, origin: deps.origin, membership: deps.membership, trustProxy: deps.trustProxy, proposeAlliance: deps.proposeAlliance });

  app.get("/api/unions", async (c) => c.json({ unions: (await listUnions(db)).map((u) => unionJson(u, deps.origin)) }));
  app.get("/api/unions/:slug", async (c) => {
    const union = await getUnionBySlug(db, c.req.param("slug"));
    return union ? c.json(unionJson(union, deps.origin)) : apiError(c, 404, "not_found", `no union ${JSON.stringify(c.req.param("slug"))}`);
  });

  app.notFound((c) => c.req.path.startsWith("/api/")
    ? apiError(c, 404, "not_found", `no route for ${c.req.method} ${c.req.path}`)
    : c.html(errorPage(404, "Nothing here."), 404));
  app.onError((error, c) => {
    if (error instanceof HTTPException) return error.getResponse();
    if (error instanceof DatabaseBusyError) {
      // Another process held the SQLite write lock: nothing was written; the same request will work shortly.
      log.warn("{method} {path} waited out the database lock: {error}", { method: c.req.method, path: c.req.path, error: error.message });
      c.header("Retry-After", String(error.retryAfterSeconds));
      return c.req.path.startsWith("/api/")
        ? apiError(c, 503, "database_busy", error.message)
        : c.html(errorPage(503, "The server is busy with maintenance for a moment. Nothing was saved: send the form again in a few seconds."), 503);
    }
    log.error("Unhandled error on {method} {path}: {error}", { method: c.req.method, path: c.req.path, error });
    return c.req.path.startsWith("/api/")
      ? apiError(c, 500, "internal", "internal server error")
      : c.html(errorPage(500, "Something went wrong on our side."), 500);
  });
  return app;
}

/**
 * Every response: no sniffing, no framing, no script but our own files, and
 * HSTS when served over https. Pages with a stricter policy of their own
 * (calls-to-action, which embed remote text) keep it. Also what the
 * node-level inbox (inbox-fast.ts) puts on the 202s it writes itself.
 */
export function securityHeaders(origin: URL): MiddlewareHandler {
  return secureHeaders({
    overwrite: false,
    contentSecurityPolicy: {
      defaultSrc: ["'self'"],
      imgSrc: ["'self'", "https:", "http:", "data:"],
      styleSrc: ["'self'"],
      scriptSrc: ["'self'"],
      objectSrc: ["'none'"],
      baseUri: ["'self'"],
      frameAncestors: ["'none'"],
    },
    xFrameOptions: "DENY",
    strictTransportSecurity: origin.protocol === "https:" ? "max-age=31536000; includeSubDomains" : false,
    referrerPolicy: "same-origin",
    // Other servers fetch icons and documents server-side; browsers may embed public images.
    crossOriginResourcePolicy: false,
    crossOriginOpenerPolicy: "same-origin",
  });
}

export function unionJson(u: Union, origin: URL) {
  return {
    id: u.id,
    slug: u.slug,
    name: u.name,
    purpose: u.purpose,
    handle: `@${u.slug}@${origin.host}`,
    actor: new URL(`/u/${u.slug}`, origin).href,
    leader: u.leaderHandle,
    icon: u.iconUrl,
    manuallyApprovesFollowers: u.manuallyApprovesFollowers,
    joinPolicy: u.joinPolicy,
    memberInviteLimit: u.memberInviteLimit,
    membersVisibility: u.membersVisibility,
    timeZone: u.timeZone,
    publishTime: u.publishTime,
    createdAt: u.createdAt.toISOString(),
  };
}

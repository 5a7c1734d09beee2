import { createHash } from "node:crypto";

/**
 * Serves the documents every remote server fetches over and over (a union's
 * actor, WebFinger, NodeInfo) from the bytes Fedify produced the last time,
 * instead of rebuilding and JSON-LD-compacting them on every GET (5.5 ms of
 * CPU each, which capped reads near 190/s).
 *
 * Fedify stays the source of truth: a miss goes through Fedify and its exact
 * response (status 200 only, headers included) is stored. A stored copy is
 * good while the database's document version (migration 0018: triggers on
 * unions, actor_keys and union_relationships) is the one it was built at, so
 * an edit from any process, the CLI included, is seen on the next request.
 *
 * Only the paths in `routeOf` are cached, and none of them has an
 * `.authorize()` predicate or depends on who signed the request: the
 * followers collection and anything else that varies by viewer never enters.
 * The key is the path, query and the exact Accept header, so content
 * negotiation is whatever Fedify decided for that Accept; a browser's Accept
 * falls through to the HTML page, which is never stored.
 */
export interface ReadCacheOptions {
  /** The current document version; it changes whenever a cached document could. */
  readonly version: () => Promise<string>;
  /** NodeInfo's member and post counts change without a version bump; they may lag this long. */
  readonly countsTtlMs?: number;
  /** Distinct (path, Accept) pairs kept; the oldest is dropped beyond this. */
  readonly maxEntries?: number;
  readonly now?: () => number;
}

export type ReadRoute = "actor" | "webfinger" | "nodeinfo";

interface Entry {
  readonly version: string;
  readonly expiresAt: number;
  readonly body: Uint8Array<ArrayBuffer>;
  readonly headers: readonly [string, string][];
  readonly etag: string;
}

/**
 * What the full pipeline (Hono's middleware included: security headers and
 * whatever else wraps Fedify) sent for an entry, so the node-level fast path
 * (fast-reads.ts) can answer with the same headers without running it.
 */
interface Sent {
  readonly key: string;
  readonly entry: Entry;
  /** The whole 200 header list, ETag and Content-Length left out. */
  readonly ok: readonly [string, string][];
  /** The 304 header list the pipeline would send: Fedify's kept few plus the outer middleware's. */
  readonly notModified: readonly [string, string][];
}

export interface FastAnswer {
  readonly status: 200 | 304;
  readonly headers: readonly [string, string][];
  readonly body?: Uint8Array;
}

const ACTOR_PATH = /^\/u\/[^/]+$/;
export const COUNTS_TTL_MS = 60_000;

export class ReadCache {
  readonly #entries = new Map<string, Entry>();
  /** Keyed by the raw request line's target, Host and Accept, exactly as an earlier request that went through Hono. */
  readonly #sent = new Map<string, Sent>();
  readonly #version: () => Promise<string>;
  readonly #countsTtlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  #inflight: Promise<string> | undefined;
  /** Set by the benchmark to measure the same server without the cache, back to back. */
  bypass = false;
  /** Hits and misses since start, for the benchmark and tests. */
  readonly stats = { hits: 0, misses: 0, notModified: 0, /** hits answered by the node-level fast path */ fast: 0, /** misses rendered by Fedify (concurrent misses of one document share one) */ renders: 0 };
  /** Documents being rendered after a miss, by version and key: see rendering(). */
  readonly #rendering = new Map<string, Promise<void>>();

  constructor(options: ReadCacheOptions) {
    this.#version = options.version;
    this.#countsTtlMs = options.countsTtlMs ?? COUNTS_TTL_MS;
    this.#maxEntries = options.maxEntries ?? 512;
    this.#now = options.now ?? Date.now;
  }

  /** Which cached document a request asks for, if any. */
  routeOf(request: Request): ReadRoute | undefined {
    if (this.bypass || request.method !== "GET") return undefined;
    return routeOfPath(new URL(request.url).pathname);
  }

  /**
   * The node-level fast path: answers a GET that an earlier identical request
   * (same target, Host and Accept) had answered through the whole pipeline,
   * from the bytes and headers it sent then, while the document version is
   * the same. Undefined: not such a request, or nothing current; run the app.
   * `rawKey` is from `fastKeyOf`; the version is read as for any hit.
   */
  async fastAnswer(rawKey: string, ifNoneMatch: string | undefined): Promise<FastAnswer | undefined> {
    const sent = this.#sent.get(rawKey);
    if (!sent) return undefined;
    const version = await this.currentVersion();
    const { entry } = sent;
    if (entry.version !== version || entry.expiresAt <= this.#now() || this.#entries.get(sent.key) !== entry) return undefined;
    this.stats.hits++;
    this.stats.fast++;
    if (ifNoneMatch && etagMatches(ifNoneMatch, entry.etag)) {
      this.stats.notModified++;
      return { status: 304, headers: sent.notModified };
    }
    return { status: 200, headers: sent.ok, body: entry.body };
  }

  /**
   * Called with what the app answered to a request whose target, Host and
   * Accept are `rawKey`: when that was a cached document (its ETag is the
   * entry's), the headers the pipeline added are remembered for the fast path.
   */
  noteSent(rawKey: string, request: Request, response: Response): void {
    // What the outer middleware added must be as shareable as what Fedify said.
    if (response.status !== 200 || this.bypass || uncacheable(response)) return;
    const etag = response.headers.get("ETag");
    if (!etag || !this.routeOf(request)) return;
    const key = keyOf(request);
    const entry = this.#entries.get(key);
    if (!entry || entry.etag !== etag) return;
    const ok = [...response.headers].filter(([name]) => name !== "etag" && name !== "content-length");
    const own = new Set(entry.headers.map(([name]) => name.toLowerCase()));
    const outer = ok.filter(([name]) => !own.has(name));
    const notModified = notModifiedHeaders(entry).concat(outer);
    this.#sent.delete(rawKey);
    this.#sent.set(rawKey, { key, entry, ok: ok.concat([["etag", entry.etag]]), notModified });
    if (this.#sent.size > this.#maxEntries) this.#sent.delete(this.#sent.keys().next().value!);
  }

  /** The version as of now. Concurrent requests share one query, so 2,000 GET/s cost a few queries, not 2,000. */
  currentVersion(): Promise<string> {
    this.#inflight ??= this.#version().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  /**
   * Answers from the cache when it can: the stored response, or 304 when
   * If-None-Match names its ETag. Undefined means ask Fedify, then `store`
   * with the version read here (read before rendering, so a change that
   * commits while Fedify renders makes the stored copy stale at once).
   */
  async lookup(request: Request): Promise<{ response?: Response; version: string }> {
    const version = await this.currentVersion();
    const key = keyOf(request);
    const entry = this.#entries.get(key);
    if (!entry || entry.version !== version || entry.expiresAt <= this.#now()) {
      this.stats.misses++;
      return { version };
    }
    this.stats.hits++;
    if (etagMatches(request.headers.get("If-None-Match"), entry.etag)) {
      this.stats.notModified++;
      return { version, response: notModified(entry) };
    }
    return { version, response: new Response(entry.body, { status: 200, headers: entry.headers.concat([["ETag", entry.etag]]) }) };
  }

  /**
   * Another request's rendering of this document at this version, if one is
   * under way: wait for it and look up again instead of rendering it too.
   * A fan-out's first deliveries reach thousands of servers at once, and
   * each one fetches the union's actor for its key: rendered once per
   * request (JSON-LD compaction, 5.5 ms of CPU), a few hundred misses kept
   * the web process busy for seconds, the receivers answered the deliveries
   * after the sender's HTTP timeout, and every one timed out was sent again
   * (repeats at the receivers in the workers benchmark).
   */
  rendering(request: Request, version: string): Promise<void> | undefined {
    return this.#rendering.get(`${version} ${keyOf(request)}`);
  }

  /** Marks this request as the one rendering its document at `version`; call what it returns once it is stored (or not). */
  beginRendering(request: Request, version: string): () => void {
    const key = `${version} ${keyOf(request)}`;
    let done!: () => void;
    const rendered = new Promise<void>((resolve) => (done = resolve));
    this.#rendering.set(key, rendered);
    this.stats.renders++;
    return () => {
      if (this.#rendering.get(key) === rendered) this.#rendering.delete(key);
      done();
    };
  }

  /** Keeps Fedify's 200 response for this request and returns it with its ETag (or a 304). */
  async store(request: Request, route: ReadRoute, version: string, response: Response): Promise<Response> {
    if (response.status !== 200 || uncacheable(response)) return response;
    const body = new Uint8Array(await response.arrayBuffer());
    const headers = [...response.headers].filter(([name]) => name.toLowerCase() !== "etag");
    const entry: Entry = {
      version,
      expiresAt: route === "nodeinfo" ? this.#now() + this.#countsTtlMs : Number.POSITIVE_INFINITY,
      body,
      headers,
      etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 27)}"`,
    };
    const key = keyOf(request);
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    if (this.#entries.size > this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
    if (etagMatches(request.headers.get("If-None-Match"), entry.etag)) return notModified(entry);
    return new Response(body, { status: 200, headers: headers.concat([["ETag", entry.etag]]) });
  }

  /** Drops every stored copy (tests; the version normally does this). */
  clear(): void {
    this.#entries.clear();
    this.#sent.clear();
  }
}

/** Which cached document a path names, if any. */
export function routeOfPath(path: string): ReadRoute | undefined {
  if (path === "/.well-known/webfinger") return "webfinger";
  if (path === "/.well-known/nodeinfo" || path === "/nodeinfo/2.1") return "nodeinfo";
  if (ACTOR_PATH.test(path)) return "actor";
  return undefined;
}

/** The fast path's key: the request target as sent, Host and Accept; nothing is normalised, so only an exact repeat matches. */
export function fastKeyOf(target: string, host: string | undefined, accept: string | undefined): string {
  return `${host ?? ""} ${target}\n${accept ?? ""}`;
}

function keyOf(request: Request): string {
  const url = new URL(request.url);
  return `${url.pathname}${url.search}\n${request.headers.get("Accept") ?? ""}`;
}

/** A response that says it is private, or varies on who asks, is never shared. */
function uncacheable(response: Response): boolean {
  const cc = response.headers.get("Cache-Control") ?? "";
  const vary = (response.headers.get("Vary") ?? "").toLowerCase();
  return /\b(private|no-store)\b/i.test(cc) || /\b(signature|authorization|cookie|\*)/.test(vary) || response.headers.has("Set-Cookie");
}

function etagMatches(header: string | null, etag: string): boolean {
  if (!header) return false;
  return header.split(",").some((t) => {
    const tag = t.trim();
    return tag === "*" || tag === etag || tag === `W/${etag}`;
  });
}

function notModifiedHeaders(entry: Entry): [string, string][] {
  const keep = entry.headers.filter(([name]) => ["vary", "cache-control", "content-location", "expires"].includes(name.toLowerCase()));
  return keep.concat([["ETag", entry.etag]]);
}

function notModified(entry: Entry): Response {
  return new Response(null, { status: 304, headers: notModifiedHeaders(entry) });
}

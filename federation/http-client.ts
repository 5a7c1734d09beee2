import { AsyncLocalStorage } from "node:async_hooks";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP } from "node:net";
import { Agent, buildConnector, Dispatcher, interceptors, setGlobalDispatcher } from "undici";

/*
 * Every outgoing request Muster makes (Fedify's deliveries, key and actor
 * fetches, WebFinger) goes through Node's global fetch, which is undici: its
 * global dispatcher is the one place where timeouts and the private-address
 * rule can hold for all of them.
 *
 * Fedify's own allowPrivateAddress checks only the URL it was given, before
 * connecting, and not deliveries or redirects at all. Here the check is on
 * the address the socket actually connects to, after DNS, on every hop: a
 * redirect to a private URL opens a new connection and is refused there, and
 * a name that resolves to a public address for the check and a private one
 * for the connection cannot slip between the two, because there is only one
 * resolution.
 *
 * Which rule applies is per Muster, not per process (tests run a server that
 * refuses private addresses beside one that allows them): a Muster runs its
 * HTTP handlers and its queue inside `withOutgoingPolicy`, and the dispatcher
 * reads the policy from the async context of the request. Outside any Muster
 * context the process default applies; `muster` commands set it from their
 * configuration.
 */

export interface OutgoingPolicy {
  readonly allowPrivateAddress: boolean;
}

const policyStore = new AsyncLocalStorage<OutgoingPolicy>();
let processDefault: OutgoingPolicy = { allowPrivateAddress: true };

/** Runs `fn` (and everything it starts) under `policy` for outgoing HTTP. */
export function withOutgoingPolicy<T>(policy: OutgoingPolicy, fn: () => T): T {
  return policyStore.run(policy, fn);
}

/** The rule that applies to a request made here and now: the Muster's whose context this is, else the process default. */
export function currentOutgoingPolicy(): OutgoingPolicy {
  return policyStore.getStore() ?? processDefault;
}

/** The rule for outgoing requests made outside any Muster's context (one-Muster processes: the CLI). */
export function setDefaultOutgoingPolicy(policy: OutgoingPolicy): void {
  processDefault = policy;
}

export class PrivateAddressError extends Error {
  readonly code = "EPRIVATEADDRESS";
  constructor(host: string, address: string) {
    super(address === host
      ? `Refusing to connect to ${host}: a private, loopback or link-local address (MUSTER_ALLOW_PRIVATE_ADDRESS is off)`
      : `Refusing to connect to ${host}: it resolves to ${address}, a private, loopback or link-local address (MUSTER_ALLOW_PRIVATE_ADDRESS is off)`);
    this.name = "PrivateAddressError";
  }
}

// Everything that is not the public internet: RFC 6890 special-purpose
// ranges. IPv4-mapped, IPv4-compatible and NAT64 IPv6 ranges are refused
// whole: no public server needs to be reached through them, and each can
// carry a loopback or private IPv4 address.
// Two lists: a BlockList matches IPv4 addresses against IPv4-mapped IPv6
// rules, so one list would refuse every IPv4 address.
const notPublicV4 = new BlockList();
const notPublicV6 = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.0.2.0", 24], ["192.88.99.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["198.51.100.0", 24],
  ["203.0.113.0", 24], ["224.0.0.0", 4], ["240.0.0.0", 4],
] as const) notPublicV4.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of [
  ["::", 96], ["::1", 128], ["::ffff:0:0", 96], ["64:ff9b::", 96], ["64:ff9b:1::", 48], ["100::", 64], ["2001::", 23],
  ["2001:db8::", 32], ["2002::", 16], ["fc00::", 7], ["fe80::", 10], ["fec0::", 10], ["ff00::", 8],
] as const) notPublicV6.addSubnet(net, prefix, "ipv6");

/** True for an IP address a public federation peer can never have. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return true;
  return family === 4 ? notPublicV4.check(address, "ipv4") : notPublicV6.check(address, "ipv6");
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
export type Lookup = (hostname: string, options: { all?: boolean; family?: number | string }, callback: LookupCallback) => void;

/** A DNS lookup that fails when any address the name resolves to is refused. */
export function refusingLookup(refuse: (address: string) => boolean, lookup: Lookup = dnsLookup as unknown as Lookup): Lookup {
  return (hostname, options, callback) => {
    lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, []);
      const list = addresses as LookupAddress[];
      // All of them, not only the one chosen: Happy Eyeballs may try any.
      const bad = list.find((a) => refuse(a.address));
      if (bad) return callback(Object.assign(new PrivateAddressError(hostname, bad.address), { errno: undefined }), []);
      if (options.all) return callback(null, list);
      const first = list[0];
      if (!first) return callback(Object.assign(new Error(`${hostname} has no address`), { code: "ENOTFOUND" }), []);
      callback(null, first.address, first.family);
    });
  };
}

/**
 * The largest response body Muster reads from another server. ActivityPub
 * documents are kilobytes (Mastodon refuses JSON over 1 MiB); a 30 MiB actor
 * was once read and stored whole. Counted by undici as they arrive, both on
 * the wire and after decompression, so an oversized answer is cut off, never
 * buffered.
 */
export const MAX_RESPONSE_BYTES = 2 * 1024 * 1024;

export interface OutgoingHttpOptions {
  readonly timeoutMs: number;
  /** Defaults to MAX_RESPONSE_BYTES. */
  readonly maxResponseBytes?: number;
  /** Which addresses a Muster that refuses private addresses may not connect to; tests narrow it. */
  readonly refuse?: (address: string) => boolean;
  /** The resolver behind the check; tests point names at loopback with it. */
  readonly lookup?: Lookup;
  /** Connections per origin at most; unbounded by default. */
  readonly connectionsPerOrigin?: number;
  /** How long an idle kept-alive connection stays open; undici's 4 s by default. */
  readonly keepAliveMs?: number;
}

/** An undici connector that refuses connections to addresses `refuse` names, IP literals and resolved names alike. */
function refusingConnector(timeout: number, refuse: (address: string) => boolean, lookup?: Lookup): buildConnector.connector {
  const base = buildConnector({ timeout, lookup: refusingLookup(refuse, lookup) } as buildConnector.BuildOptions);
  return (options, callback) => {
    const host = options.hostname.replace(/^\[(.*)\]$/, "$1");
    // Node skips the lookup for IP literals, so they are checked here.
    if (isIP(host) !== 0 && refuse(host)) {
      callback(new PrivateAddressError(host, host), null);
      return;
    }
    base(options, callback);
  };
}

/**
 * Decompresses here, counting what comes out: fetch would otherwise inflate
 * a gzip body above the dispatcher, past MAX_RESPONSE_BYTES (which counts
 * wire bytes), so 2 MiB of gzip could become gigabytes. Inflation stops at
 * the first chunk over the limit; the Content-Encoding header is removed, so
 * fetch does not inflate again.
 */
function decompressCapped(maxBytes: number): Dispatcher.DispatcherComposeInterceptor {
  // undici marks the interceptor experimental and warns once on stderr, which
  // every CLI command would print; that one warning is dropped.
  const emit = process.emitWarning;
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    if (String(warning).includes("DecompressInterceptor")) return;
    (emit as (...args: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    return interceptors.decompress({ maxSize: maxBytes, skipErrorResponses: false });
  } finally {
    process.emitWarning = emit;
  }
}

/** Picks, per request, the agent that applies the caller's policy. */
class PolicyDispatcher extends Dispatcher {
  readonly #open: Dispatcher;
  readonly #guarded: Dispatcher;
  constructor(open: Dispatcher, guarded: Dispatcher) {
    super();
    this.#open = open;
    this.#guarded = guarded;
  }
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const policy = currentOutgoingPolicy();
    return (policy.allowPrivateAddress ? this.#open : this.#guarded).dispatch(options, handler);
  }
  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const done = Promise.all([this.#open.close(), this.#guarded.close()]).then(() => {});
    if (callback) void done.then(callback);
    else return done;
  }
  override destroy(): Promise<void>;
  override destroy(error: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(error: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const error = typeof a === "function" ? null : a ?? null;
    const callback = typeof a === "function" ? a : b;
    const done = Promise.all([this.#open.destroy(error), this.#guarded.destroy(error)]).then(() => {});
    if (callback) void done.then(callback);
    else return done;
  }
}

/** A dispatcher with Muster's timeouts that applies each caller's private-address policy. */
export function createOutgoingDispatcher(options: OutgoingHttpOptions): Dispatcher {
  // Fedify offers no timeout of its own for deliveries: a server that accepts
  // the connection and never answers would hold a queue handler until the
  // queue's handler timeout, and then keep the socket.
  const timeouts = {
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.timeoutMs,
    maxResponseSize: options.maxResponseBytes ?? MAX_RESPONSE_BYTES,
  };
  const connectTimeout = Math.min(options.timeoutMs, 10_000);
  const decompress = decompressCapped(options.maxResponseBytes ?? MAX_RESPONSE_BYTES);
  const pooling = {
    ...(options.connectionsPerOrigin === undefined ? {} : { connections: options.connectionsPerOrigin }),
    ...(options.keepAliveMs === undefined ? {} : { keepAliveTimeout: options.keepAliveMs, keepAliveMaxTimeout: options.keepAliveMs }),
  };
  const open = new Agent({ ...timeouts, ...pooling, connect: { timeout: connectTimeout } }).compose(decompress);
  const guarded = new Agent({
    ...timeouts,
    ...pooling,
    connect: refusingConnector(connectTimeout, options.refuse ?? isPrivateAddress, options.lookup),
  }).compose(decompress);
  return new PolicyDispatcher(open, guarded);
}

/**
 * Installs the outgoing dispatcher process-wide. The last Muster created in
 * a process sets the timeouts; each keeps its own policy through
 * withOutgoingPolicy.
 */
export function limitOutgoingHttp(timeoutMs: number): void {
  setGlobalDispatcher(createOutgoingDispatcher({ timeoutMs }));
}

/**
 * The dispatcher of the delivery lanes' own sender (batch-delivery.ts), with
 * the same private-address rule and timeouts. A fan-out reaches 10^4 servers
 * in seconds, once each through a shared inbox: those connections are closed
 * as soon as answered (batch-delivery.ts), so no idle connection and
 * per-origin pool is held for them (undici drops an origin's pool with its
 * last connection). A server with many personal inboxes gets a few
 * connections, kept alive 10 s: its deliveries come one at a time (one
 * ordering key per server) between every other server's, seconds apart in
 * a 10^5 fan-out, and with a 1 s keep-alive each one opened a connection
 * (connect, close and undici's error objects were 0.3-0.4 ms a delivery).
 */
export function createDeliveryDispatcher(timeoutMs: number): Dispatcher {
  return createOutgoingDispatcher({ timeoutMs, connectionsPerOrigin: 4, keepAliveMs: 10_000 });
}

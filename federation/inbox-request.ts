/**
 * An inbox POST as the fast paths read it (inbox-fast-path.ts,
 * follow-fast-path.ts): its method, URL and headers. The node-level inbox
 * (src/http/inbox-fast.ts) hands them over as they came off the wire, with
 * the WHATWG Request built only when Fedify's verifier is asked (a signature
 * form inbox-fast-verify.ts does not check): building a Headers and a
 * Request for every POST only for its headers to be read was 7 % of the web
 * process's main thread in a join (issue 16).
 */

/** What the signature check reads of a request's headers, as Headers#get and Headers#has answer. */
export interface HeaderReader {
  get(name: string): string | null;
  has(name: string): boolean;
}

/** The parts of a request the fast paths' signature check reads (a WHATWG Request is one). */
export interface SignedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: HeaderReader;
}

/** An inbox POST handed to a fast path: a WHATWG Request, or a LazyInboxRequest that builds one when asked. */
export type FastRequest = Request | LazyInboxRequest;

/** The request as a WHATWG Request (Fedify's verifier takes nothing else). */
export function whatwgRequest(request: FastRequest): Request {
  return request instanceof LazyInboxRequest ? request.request() : request;
}

// What Headers strips from both ends of a value (HTTP whitespace: fetch's "normalize").
const HTTP_WHITESPACE = /^[\t\n\r ]+|[\t\n\r ]+$/g;

/**
 * A POST from its URL, its raw header list (Node's rawHeaders: name, value,
 * name, value, … as received) and its body bytes. Its headers answer as a
 * Headers built by appending each raw pair in order would (names compared
 * without case, repeated fields joined with ", ", values trimmed of HTTP
 * whitespace), and request() builds exactly that Request, once.
 */
export class LazyInboxRequest implements SignedRequest {
  readonly method = "POST";
  readonly url: string;
  readonly headers: HeaderReader;
  readonly #rawHeaders: readonly string[];
  readonly #body: Uint8Array;
  #request: Request | undefined;

  constructor(url: string, rawHeaders: readonly string[], body: Uint8Array) {
    this.url = url;
    this.#rawHeaders = rawHeaders;
    this.#body = body;
    const get = (name: string): string | null => {
      const wanted = name.toLowerCase();
      let value: string | null = null;
      for (let i = 0; i < rawHeaders.length; i += 2) {
        if (rawHeaders[i]!.toLowerCase() !== wanted) continue;
        const v = rawHeaders[i + 1]!.replace(HTTP_WHITESPACE, "");
        value = value === null ? v : `${value}, ${v}`;
      }
      return value;
    };
    this.headers = { get, has: (name) => get(name) !== null };
  }

  /** The WHATWG Request the node-level inbox built for every POST before: built the first time it is asked for. */
  request(): Request {
    if (this.#request === undefined) {
      const headers = new Headers();
      for (let i = 0; i < this.#rawHeaders.length; i += 2) headers.append(this.#rawHeaders[i]!, this.#rawHeaders[i + 1]!);
      this.#request = new Request(this.url, { method: "POST", headers, body: this.#body as Uint8Array<ArrayBuffer> });
    }
    return this.#request;
  }
}

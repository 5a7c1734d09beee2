import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import { fastKeyOf, type ReadCache } from "./read-cache.ts";

/** What @hono/node-server passes the app as its env. */
interface NodeEnv {
  readonly incoming: IncomingMessage;
}

type Fetch = (request: Request, env?: unknown) => Response | Promise<Response>;

/**
 * The read cache's hits answered in the node request handler, before Hono
 * and @hono/node-server's Request/Response conversion, which cost most of a
 * cached GET's CPU. A request is answered here only when an identical earlier
 * one (target, Host and Accept as sent) went through the whole app and got a
 * cached document: the same bytes and the same headers the app sent then,
 * ETag and 304 included, for as long as the document version is unchanged.
 * Everything else, including the first request of each kind, runs the app.
 */
export function fastReads(cache: ReadCache, fetch: Fetch): { fetch: Fetch; listener: (next: RequestListener) => RequestListener } {
  return {
    // Learns, from the app's own answers, the headers a hit must carry.
    fetch: async (request, env) => {
      const response = await fetch(request, env);
      const incoming = (env as NodeEnv | undefined)?.incoming;
      if (incoming && request.method === "GET" && response.status === 200 && response.headers.has("ETag")) {
        cache.noteSent(fastKeyOf(incoming.url ?? "", incoming.headers.host, incoming.headers.accept), request, response);
      }
      return response;
    },
    listener: (next) => (req: IncomingMessage, res: ServerResponse) => {
      if (req.method !== "GET" || cache.bypass) return next(req, res);
      const inm = req.headers["if-none-match"];
      cache.fastAnswer(fastKeyOf(req.url ?? "", req.headers.host, req.headers.accept), inm).then(
        (answer) => {
          if (!answer) return next(req, res);
          const headers = answer.headers.flat();
          if (answer.body) headers.push("content-length", String(answer.body.byteLength));
          res.writeHead(answer.status, headers);
          res.end(answer.body);
        },
        // The version could not be read: the app answers, as it would have.
        () => next(req, res),
      );
    },
  };
}

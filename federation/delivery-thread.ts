import { parentPort, workerData } from "node:worker_threads";
import { type Body, bodyOf, OTHER_SPEC, type SigningKey, signedHeaders, type Spec } from "./delivery-sign.ts";
import { createDeliveryDispatcher, withOutgoingPolicy } from "./http-client.ts";
import type { ThreadInit, ThreadResult, ToThread } from "./delivery-threads.ts";

/*
 * A delivery thread (delivery-threads.ts): signs and POSTs the deliveries the
 * batch sender hands it, and says how each went. It holds no database and no
 * queue: the main thread claims, decides and settles. The private keys come
 * once each, as node:crypto KeyObjects, and bodies once per activity;
 * a delivery names them by handle. Every POST goes through this thread's own
 * guarded dispatcher under the rule the main thread sent with it (the
 * private-address rule after DNS, timeouts, 2 MiB).
 */

// Errors made here are never shown with their stacks: a failed delivery goes
// back as its name and message only. And undici makes one for every
// connection it closes (InformationalError "reset", ClientDestroyedError),
// which is every delivery to a shared inbox: capturing their stacks was 8 % of
// this thread's time in a fan-out to 5·10^3 servers.
Error.stackTraceLimit = 0;

const port = parentPort;
if (port === null) throw new Error("delivery-thread.ts runs as a worker thread");
const { timeoutMs } = workerData as ThreadInit;
const dispatcher = createDeliveryDispatcher(timeoutMs);
/** See answer(). */
const ANSWER_MS = 4;
const ANSWER_BATCH = 32;
const keys = new Map<number, { key: SigningKey; keyId: URL }>();
const bodies = new Map<number, Body>();

let results: ThreadResult[] = [];
let flushTimer: ReturnType<typeof setTimeout> | undefined;
function flush(): void {
  if (flushTimer !== undefined) clearTimeout(flushTimer);
  flushTimer = undefined;
  const out = results;
  results = [];
  port!.postMessage(out);
}
function answer(result: ThreadResult): void {
  results.push(result);
  // Answers go back together rather than a message per turn of this loop:
  // each message costs both threads a wake-up and a structured clone. A
  // turn here usually holds one or two answers; at 1 ms a message held 1.6
  // of them in a fan-out to personal inboxes and postMessage was still 7 %
  // of this thread's time. ANSWER_MS later, or at once when a batch's worth
  // is waiting; the claim that refills the main thread's slots waits for
  // half of them anyway (a delivery is 40 ms or more in flight there).
  if (results.length >= ANSWER_BATCH) flush();
  else flushTimer ??= setTimeout(flush, ANSWER_MS);
}

port.on("message", (m: ToThread) => {
  if (m.close) {
    void dispatcher.close().finally(() => port.close());
    return;
  }
  for (const [handle, key, keyId] of m.keys) keys.set(handle, { key, keyId: new URL(keyId) });
  for (const [handle, text] of m.bodies) bodies.set(handle, bodyOf(text));
  for (const [seq, inbox, keyHandle, bodyHandle, spec, reset, allowPrivateAddress] of m.items) {
    // Looked up now, before the drops below: a handle dropped by this same
    // message is still used by the deliveries it came with.
    const key = keys.get(keyHandle);
    const body = bodies.get(bodyHandle);
    if (key === undefined || body === undefined) {
      answer([seq, -1, 0, false, spec, false, "the delivery thread was not given its key or body"]);
      continue;
    }
    withOutgoingPolicy({ allowPrivateAddress }, () => send(new URL(inbox), key.key, key.keyId, body, spec, reset)).then(
      (r) => answer([seq, r.ok ? 1 : 0, r.status, r.acceptSignature, r.spec, r.knocked, null]),
      (error: unknown) => answer([seq, -1, 0, false, spec, false, error instanceof Error ? `${error.name}: ${error.message}` : String(error)]),
    );
  }
  for (const handle of m.dropKeys) keys.delete(handle);
  for (const handle of m.dropBodies) bodies.delete(handle);
});

// Loaded (undici, the signer and this module evaluated): the main thread's start() waits for this.
port.postMessage("ready");

/** One delivery with Fedify's double knock: a 400 or 401 without a challenge is tried once more in the other spec. */
async function send(inbox: URL, key: SigningKey, keyId: URL, body: Body, spec: Spec, reset: boolean): Promise<{ ok: boolean; status: number; acceptSignature: boolean; spec: Spec; knocked: boolean }> {
  const first = await post(inbox, key, keyId, body, spec, reset);
  if (first.ok || (first.status !== 400 && first.status !== 401) || first.acceptSignature) return { ...first, spec, knocked: false };
  const other = OTHER_SPEC[spec];
  const second = await post(inbox, key, keyId, body, other, reset);
  return { ...second, spec: other, knocked: true };
}

/** What is read of an inbox's answer at most; past it the connection is dropped (an inbox answers a few bytes). */
const ANSWER_LIMIT = 64 * 1024;

async function post(inbox: URL, key: SigningKey, keyId: URL, body: Body, spec: Spec, reset: boolean): Promise<{ ok: boolean; status: number; acceptSignature: boolean }> {
  const headers = await signedHeaders(inbox, key, keyId, body, spec);
  // undici's dispatch() with a handler of its own rather than request():
  // request() makes a Readable stream and its events for every answer, which
  // is then read to its end and thrown away; here the answer's status and
  // one header are kept and its bytes counted as they pass. Measured on
  // this thread, 31-37 µs a POST against 40-44.
  return new Promise((resolve, reject) => {
    let status = 0;
    let acceptSignature = false;
    let read = 0;
    try {
      dispatcher.dispatch({
        origin: inbox.origin,
        path: `${inbox.pathname}${inbox.search}`,
        method: "POST",
        headers,
        body: body.text,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        reset,
      }, {
        // undici takes a handler with onRequestStart for one of its new
        // shape (these methods); without it, for an old one, and calls
        // methods this one does not have.
        onRequestStart() {},
        onResponseStart(_controller, statusCode, answerHeaders) {
          status = statusCode;
          acceptSignature = answerHeaders["accept-signature"] !== undefined;
        },
        onResponseData(controller, chunk) {
          // Read to the end so the connection is kept for the next delivery;
          // past the limit the answer stands on its status (as request()'s
          // body.dump() did) and the connection is dropped.
          read += chunk.length;
          if (read > ANSWER_LIMIT) {
            resolve({ ok: status >= 200 && status < 300, status, acceptSignature });
            controller.abort(new Error(`the inbox answered more than ${ANSWER_LIMIT} bytes`));
          }
        },
        onResponseEnd() {
          resolve({ ok: status >= 200 && status < 300, status, acceptSignature });
        },
        onResponseError(_controller, error) {
          reject(error);
        },
      });
    } catch (error) {
      reject(error);
    }
  });
}

import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * Stands in for a Pleroma instance's own `/schemas/litepub-0.1.jsonld`, which
 * every Pleroma activity names in its @context (Fedify does not ship it, so
 * the receiver fetches it from the sender's host). A short context of our own
 * with the same role, not a copy of Pleroma's file.
 */
export async function startLitepubContext(): Promise<{ url: URL; hits(): number; close(): Promise<void> }> {
  let hits = 0;
  const doc = JSON.stringify({
    "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1", {
      litepub: "http://litepub.social/ns#",
      toot: "http://joinmastodon.org/ns#",
      sensitive: "as:sensitive",
      Emoji: "toot:Emoji",
      directMessage: "litepub:directMessage",
    }],
  });
  const server: Server = createServer((req, res) => {
    if (req.url === "/schemas/litepub-0.1.jsonld") {
      hits++;
      res.writeHead(200, { "Content-Type": "application/ld+json" });
      res.end(doc);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/schemas/litepub-0.1.jsonld`);
  return { url, hits: () => hits, close: () => new Promise<void>((r) => server.close(() => r())) };
}

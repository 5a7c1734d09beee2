// A Muster server in its own process, so the hostile benchmark can read the
// server's CPU time apart from the client's. Prints {"origin"} once ready;
// exits when its stdin closes.
import type { TestDatabase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster } from "../test/helpers/muster.ts";

const url = process.env.HOSTILE_DATABASE_URL;
if (!url) throw new Error("HOSTILE_DATABASE_URL is not set");
// startMuster reads only the URL of the database the parent created and will drop.
const m = await startMuster({ url } as TestDatabase, { env: { MUSTER_MAX_BODY_BYTES: String(2 * 1024 * 1024) } });
await makeUnion(m, "riders", { joinPolicy: "open" });
process.stdout.write(`${JSON.stringify({ origin: m.origin.href })}\n`);
process.stdin.resume();
process.stdin.on("end", () => void m.stop().then(() => process.exit(0)));

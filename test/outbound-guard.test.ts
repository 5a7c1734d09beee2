import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createOutgoingDispatcher, isPrivateAddress, type Lookup, PrivateAddressError, withOutgoingPolicy } from "../federation/http-client.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";

// With MUSTER_ALLOW_PRIVATE_ADDRESS off, nothing Muster sends may reach a
// private address: not a delivery to an inbox cached on loopback, not a name
// that resolves to loopback, not a redirect that points there.

interface Hit {
  readonly method: string;
  readonly path: string;
  readonly userAgent: string;
}

/** A plain HTTP server that records whoever reaches it and answers 202 (or what `answer` says). */
async function recorder(host: string, answer?: (req: IncomingMessage) => { status: number; location?: string }) {
  const hits: Hit[] = [];
  const server: Server = createServer((req, res) => {
    hits.push({ method: req.method ?? "", path: req.url ?? "", userAgent: String(req.headers["user-agent"] ?? "") });
    req.resume();
    const a = answer?.(req) ?? { status: 202 };
    res.writeHead(a.status, a.location ? { location: a.location } : {});
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  return {
    hits,
    port,
    url: (path: string, h = host) => `http://${h}:${port}${path}`,
    close: () => new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    }),
  };
}

describe("isPrivateAddress", () => {
  it("names loopback, private, link-local, ULA and mapped addresses, and only those", () => {
    for (const a of ["127.0.0.1", "127.8.9.10", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
      "::1", "::", "fe80::1", "fd00::1", "fc12::3", "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "64:ff9b::7f00:1", "not-an-ip"]) {
      assert.equal(isPrivateAddress(a), true, a);
    }
    for (const a of ["93.184.216.34", "1.1.1.1", "172.32.0.1", "2606:4700::1111", "2a01:4f8::1"]) {
      assert.equal(isPrivateAddress(a), false, a);
    }
  });
});

describe("the outgoing dispatcher", () => {
  let target: Awaited<ReturnType<typeof recorder>>;
  let redirector: Awaited<ReturnType<typeof recorder>>;
  before(async () => {
    // The target lives on 127.0.0.2, which these dispatchers treat as the
    // private address; 127.0.0.1 stands in for a public server.
    target = await recorder("127.0.0.2", () => ({ status: 200 }));
    redirector = await recorder("127.0.0.1", () => ({ status: 307, location: target.url("/secret") }));
  });
  after(async () => {
    await target?.close();
    await redirector?.close();
  });

  const refuse = (address: string) => address === "127.0.0.2";
  // A resolver where public.test is the stand-in public server and rebind.test resolves to the private one.
  const lookup: Lookup = (hostname, options, callback) => {
    const address = hostname === "rebind.test" ? "127.0.0.2" : hostname === "public.test" ? "127.0.0.1" : undefined;
    if (!address) return callback(Object.assign(new Error(`${hostname} not found`), { code: "ENOTFOUND" }), []);
    if (options.all) callback(null, [{ address, family: 4 }]);
    else callback(null, address, 4);
  };
  const dispatcher = createOutgoingDispatcher({ timeoutMs: 5000, refuse, lookup });
  const refused = async (url: string) => {
    const error = await withOutgoingPolicy({ allowPrivateAddress: false }, () => fetch(url, { dispatcher } as RequestInit)).then(
      () => assert.fail(`${url} was fetched`),
      (e: Error) => e,
    );
    assert.ok(error.cause instanceof PrivateAddressError, `${url}: ${String(error.cause ?? error)}`);
    return error.cause as PrivateAddressError;
  };

  it("refuses a redirect to a private address, and follows it when private addresses are allowed", async () => {
    const before = target.hits.length;
    const e = await refused(redirector.url("/inbox", "public.test"));
    assert.match(e.message, /127\.0\.0\.2/);
    assert.equal(redirector.hits.length, 1, "the public hop was made");
    assert.equal(target.hits.length, before, "the private hop was not");

    const res = await withOutgoingPolicy({ allowPrivateAddress: true }, () => fetch(redirector.url("/inbox", "127.0.0.1"), { dispatcher } as RequestInit));
    assert.equal(res.status, 200);
    assert.deepEqual(target.hits.map((h) => h.path), ["/secret"]);
  });

  it("refuses a name that resolves to a private address, and a private IP literal, before connecting", async () => {
    const before = target.hits.length;
    const byName = await refused(target.url("/x", "rebind.test"));
    assert.match(byName.message, /rebind\.test.*127\.0\.0\.2/);
    await refused(target.url("/y"));
    assert.equal(target.hits.length, before, "nothing reached the private address");
  });

  it("with the default rule, refuses localhost (a name for loopback) and a loopback literal", async () => {
    const strict = createOutgoingDispatcher({ timeoutMs: 5000 });
    for (const url of [redirector.url("/a", "localhost"), redirector.url("/b", "127.0.0.1"), `http://[::1]:${redirector.port}/c`]) {
      const error = await withOutgoingPolicy({ allowPrivateAddress: false }, () => fetch(url, { dispatcher: strict } as RequestInit)).then(
        () => assert.fail(`${url} was fetched`),
        (e: Error) => e,
      );
      assert.ok(error.cause instanceof PrivateAddressError, `${url}: ${String(error.cause ?? error)}`);
    }
    assert.equal(redirector.hits.filter((h) => h.path.length === 2).length, 0);
    await strict.close();
  });
});

for (const d of dialects) {
  describe(`deliveries and MUSTER_ALLOW_PRIVATE_ADDRESS on ${d.name}`, { skip: d.skip }, () => {
    let offDb: TestDatabase;
    let onDb: TestDatabase;
    let off: TestMuster;
    let on: TestMuster;
    // One member server per Muster: deliveries carry no telling User-Agent.
    const inboxes = new Map<TestMuster, Awaited<ReturnType<typeof recorder>>>();

    before(async () => {
      [offDb, onDb] = await Promise.all([d.create(), d.create()]);
      off = await startMuster(offDb, { env: { MUSTER_ALLOW_PRIVATE_ADDRESS: "0" } });
      on = await startMuster(onDb, { env: { MUSTER_ALLOW_PRIVATE_ADDRESS: "1" } });
      inboxes.set(off, await recorder("127.0.0.1"));
      inboxes.set(on, await recorder("127.0.0.1"));
    });
    after(async () => {
      await off?.stop();
      await on?.stop();
      for (const inbox of inboxes.values()) await inbox.close();
      await offDb?.destroy();
      await onDb?.destroy();
    });

    const from = (m: TestMuster) => inboxes.get(m)!.hits;

    it("a sign-in request sends no DM to an inbox on a loopback address or on a name for one", async () => {
      for (const m of [off, on]) {
        const inbox = inboxes.get(m)!;
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        // One member's server is an IP literal, the other's a name (localhost) that resolves to loopback.
        await joinAsRemoteMember(m.muster.membership, union.id, new URL(inbox.url("/")), "alice", null);
        await joinAsRemoteMember(m.muster.membership, union.id, new URL(inbox.url("/", "localhost")), "bob", null);
        for (const handle of [`@alice@127.0.0.1:${inbox.port}`, `@bob@localhost:${inbox.port}`]) {
          const res = await fetch(new URL("/u/riders/login", m.origin), { method: "POST", headers: { origin: m.origin.origin }, body: new URLSearchParams({ handle }) });
          assert.equal(res.status, 200, `${m.origin.host}: ${handle}`);
        }
      }
      // The server that allows private addresses delivers both DMs...
      await eventually(async () => {
        const paths = from(on).filter((h) => h.method === "POST").map((h) => h.path);
        return paths.includes("/users/alice/inbox") && paths.includes("/users/bob/inbox");
      }, "both DMs from the permissive server");
      // ...and the default one, given the same time and more, reaches neither.
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(from(off), [], "nothing from the server that refuses private addresses");
    });
  });
}

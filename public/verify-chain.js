// Checks a union's hash chain in the browser, with nothing but the server's
// JSON export and the browser's own SHA-256 (Web Crypto): every entry's hash
// is recomputed from its content and the previous hash, every link followed,
// and this page's entry looked up. The server is not trusted to say "intact".
const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");

async function entryHash(prevHash, event, payload) {
  return hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(`${prevHash}\n${event}\n${payload}`)));
}

async function verify(chain, expectHash) {
  let prev = chain.genesis;
  const problems = [];
  let seen = false;
  for (const [i, e] of chain.entries.entries()) {
    if (e.n !== i + 1) problems.push(`entry ${i + 1} is missing`);
    if (e.prevHash !== prev) problems.push(`entry ${e.n} does not link to the entry before it`);
    const again = await entryHash(e.prevHash, e.event, e.payload);
    if (again !== e.hash) problems.push(`entry ${e.n}'s content does not match its hash`);
    if (e.hash === expectHash) seen = true;
    prev = e.hash;
  }
  if (expectHash && !seen) problems.push("this page's entry is not in the chain");
  return { problems, entries: chain.entries.length, head: prev };
}

document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-verify-chain]") : null;
  if (!button) return;
  const out = button.closest("details, section, article")?.querySelector(".chain-result");
  if (!out) return;
  out.textContent = "Checking…";
  out.className = "chain-result";
  try {
    const res = await fetch(button.getAttribute("data-verify-chain"), { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (!res.ok) throw new Error(`the server answered ${res.status}`);
    const r = await verify(await res.json(), button.getAttribute("data-expect-hash"));
    if (r.problems.length === 0) {
      out.textContent = `Intact: all ${r.entries} entries recomputed in this browser, each linked to the one before; this call-to-action is entry of hash ${button.getAttribute("data-expect-hash").slice(0, 12)}…, head ${r.head.slice(0, 12)}….`;
      out.classList.add("ok");
    } else {
      out.textContent = `Broken: ${r.problems.join("; ")}.`;
      out.classList.add("error");
    }
  } catch (e) {
    out.textContent = `Could not check the chain: ${e instanceof Error ? e.message : String(e)}.`;
    out.classList.add("error");
  }
});

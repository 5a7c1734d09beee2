// Co-signs a treasury transaction with the officer's own wallet: fetches the
// transaction's message, has the wallet sign it (signMessage, Ed25519), and
// sends the signature back, where it is checked against the officer's proven
// wallet. The private key never leaves the wallet.
(() => {
  const buttons = document.querySelectorAll("[data-cosign]");
  if (buttons.length === 0) return;
  const status = document.querySelector("[data-cosign-status]");
  const say = (text) => { if (status) status.textContent = text; };
  const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
  const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  for (const button of buttons) {
    button.addEventListener("click", async () => {
      const wallet = window.solana ?? window.phantom?.solana;
      if (!wallet || typeof wallet.signMessage !== "function") {
        say("No Solana wallet found in this browser. Install one (Phantom, Solflare, Backpack), or use `muster treasury sign`.");
        return;
      }
      const base = button.getAttribute("data-cosign");
      button.disabled = true;
      try {
        const connected = await wallet.connect();
        const publicKey = (connected?.publicKey ?? wallet.publicKey).toString();
        const got = await fetch(`${base}/message`, { headers: { Accept: "application/json" } });
        const tx = await got.json();
        if (!got.ok) throw new Error(tx.error?.message ?? `refused (${got.status})`);
        if (tx.signer !== publicKey) throw new Error(`this transaction needs the wallet ${tx.signer}; the browser's wallet is ${publicKey}`);
        say("Sign the transaction in your wallet…");
        const signed = await wallet.signMessage(unb64(tx.message));
        const signature = b64(signed.signature ?? signed);
        const res = await fetch(`${base}/signature`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ signature }) });
        const body = await res.json();
        if (!res.ok) throw new Error(body.error?.message ?? `refused (${res.status})`);
        location.assign(`${location.pathname}?done=${body.state === "pending" ? "cosigned" : "cosigned_ready"}`);
      } catch (e) {
        say(`Not signed: ${e instanceof Error ? e.message : String(e)}`);
        button.disabled = false;
      }
    });
  }
})();

// Links a Solana wallet to the signed-in member: asks the union for a one-time
// challenge, has the wallet sign it (signMessage, Ed25519), and sends the
// signature back. The private key never leaves the wallet. Wallet Standard
// wallets come first; an injected window.solana provider is the fallback.
(() => {
  const button = document.querySelector("[data-wallet-link]");
  if (!button) return;
  const status = document.querySelector("[data-wallet-status]");
  const say = (text) => { if (status) status.textContent = text; };
  const base = button.getAttribute("data-wallet-link");
  const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
  // A Wallet Standard wallet (public/wallet-standard.js) with solana:signMessage, seen through the same
  // connect/signMessage shape as an injected provider.
  const standard = () => {
    const w = window.musterWallet?.("solana:signMessage");
    if (!w) return null;
    let account = null;
    return {
      async connect() {
        const { accounts } = await w.features["standard:connect"].connect();
        account = accounts?.[0] ?? w.accounts?.[0];
        if (!account) throw new Error("the wallet shared no account");
        return { publicKey: account.address };
      },
      async signMessage(message) {
        const [signed] = await w.features["solana:signMessage"].signMessage({ account, message });
        return { signature: signed.signature };
      },
    };
  };
  button.addEventListener("click", async () => {
    const wallet = standard() ?? window.solana ?? window.phantom?.solana;
    if (!wallet || typeof wallet.signMessage !== "function") {
      say("No Solana wallet found in this browser. Install one (Phantom, Solflare, Backpack), or use `muster wallet link`.");
      return;
    }
    button.disabled = true;
    try {
      const connected = await wallet.connect();
      const publicKey = (connected?.publicKey ?? wallet.publicKey).toString();
      const challenge = await fetch(`${base}/challenge`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }).then((r) => r.json());
      if (!challenge.message) throw new Error(challenge.error?.message ?? "the union gave no challenge");
      say("Sign the message in your wallet…");
      const signed = await wallet.signMessage(new TextEncoder().encode(challenge.message), "utf8");
      const signature = b64(signed.signature ?? signed);
      const res = await fetch(base, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ wallet: publicKey, message: challenge.message, signature }) });
      const body = await res.json();
      if (!res.ok) throw new Error(body.error?.message ?? `refused (${res.status})`);
      location.assign(`${location.pathname}?done=wallet_linked#wallet`);
    } catch (e) {
      say(`Not linked: ${e instanceof Error ? e.message : String(e)}`);
      button.disabled = false;
    }
  });
})();

// Pays the member's dues with a wallet in this browser. The union serves a
// Solana Pay transaction request (data-dues-pay): we POST the wallet's
// address, get the unsigned transaction back (bytes, built by the server with
// a fresh reference key and a memo naming the member) and ask the wallet to
// sign and send it. Wallets are found by the Wallet Standard's discovery
// events (public/wallet-standard.js); a wallet that only injects
// window.solana with signAndSendTransaction for raw bytes is not usable
// without web3.js here, so the page offers the link and QR code instead.
(() => {
  const button = document.querySelector("[data-dues-pay]");
  if (!button) return;
  const status = document.querySelector("[data-dues-status]");
  const say = (text) => { if (status) status.textContent = text; };
  const url = button.getAttribute("data-dues-pay");

  const ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  const base58 = (bytes) => {
    let n = 0n;
    for (const b of bytes) n = n * 256n + BigInt(b);
    let out = "";
    while (n > 0n) { out = ALPHABET[Number(n % 58n)] + out; n /= 58n; }
    for (const b of bytes) { if (b !== 0) break; out = "1" + out; }
    return out;
  };
  const fromBase64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

  button.addEventListener("click", async () => {
    const wallet = window.musterWallet?.("solana:signAndSendTransaction");
    if (!wallet) {
      say("No Solana wallet found in this browser. Open the link with your wallet app, or scan the QR code with your phone.");
      return;
    }
    button.disabled = true;
    try {
      const { accounts } = await wallet.features["standard:connect"].connect();
      const account = accounts?.[0] ?? wallet.accounts?.[0];
      if (!account) throw new Error("the wallet shared no account");
      say(`Asking the union for the payment from ${account.address}…`);
      const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ account: account.address }) });
      const body = await res.json();
      if (!res.ok || !body.transaction) throw new Error(body.error?.message ?? body.message ?? `refused (${res.status})`);
      say("Approve the payment in your wallet…");
      const chain = account.chains?.find((c) => c.startsWith("solana:")) ?? "solana:mainnet";
      const [sent] = await wallet.features["solana:signAndSendTransaction"].signAndSendTransaction({ account, chain, transaction: fromBase64(body.transaction) });
      const signature = base58(sent.signature);
      status.dataset.signature = signature;
      say(`Sent. Transaction ${signature}. Your standing updates once the union's scan records it.`);
    } catch (e) {
      say(`Not paid: ${e instanceof Error ? e.message : String(e)}`);
      button.disabled = false;
    }
  });
})();

// Wallet Standard discovery for the member's page: what @wallet-standard/app's
// getWallets() does, in the few lines it takes, since these pages have no
// bundler to serve that module. Wallets that load before this script answer
// "app-ready"; those that load after announce themselves with "register-wallet".
(() => {
  const wallets = [];
  const api = Object.freeze({
    register: (...ws) => {
      wallets.push(...ws);
      return () => ws.forEach((w) => wallets.splice(wallets.indexOf(w), 1));
    },
  });
  window.addEventListener("wallet-standard:register-wallet", (event) => {
    try { event.detail(api); } catch (e) { console.error(e); }
  });
  try {
    window.dispatchEvent(new CustomEvent("wallet-standard:app-ready", { detail: api }));
  } catch (e) {
    console.error(e);
  }
  /** The first registered wallet with every one of these features (and standard:connect). */
  window.musterWallet = (...features) => wallets.find((w) => ["standard:connect", ...features].every((f) => w.features?.[f]));
})();

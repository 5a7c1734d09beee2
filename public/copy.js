// Copy-to-clipboard for buttons with data-copy="<id of the element whose text to copy>".
// A static file, not an inline script, so the pages' Content-Security-Policy can forbid inline code.
document.addEventListener("click", async (event) => {
  const button = event.target instanceof Element ? event.target.closest("button[data-copy]") : null;
  if (!button) return;
  const source = document.getElementById(button.getAttribute("data-copy") ?? "");
  if (!source) return;
  const text = source.textContent.trim();
  const status = button.parentElement?.querySelector(".copied");
  try {
    await navigator.clipboard.writeText(text);
    if (status) status.textContent = "Copied.";
  } catch {
    // No clipboard (an insecure origin, a refused permission): select the text so the user can copy it.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = getSelection();
    selection?.removeAllRanges();
    selection?.addRange(range);
    if (status) status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
});

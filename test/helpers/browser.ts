import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

/** Debian's Chromium (`apt-get install chromium`); .ci/run installs it. */
export const CHROMIUM_PATH = "/usr/bin/chromium";

/**
 * Flags for a root, offline machine: no sandbox (we run as root), and no
 * background networking, whose connections this machine's closed network
 * refuses many at a time.
 */
export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

const browserRequired = process.env.CI_REQUIRE_BROWSER === "1";
const chromiumPresent = existsSync(CHROMIUM_PATH);

/**
 * A reason to skip browser tests, reported by node:test, never a silent pass.
 * When CI_REQUIRE_BROWSER=1 (set by .ci/run) a missing Chromium is not a skip:
 * this is false and launchBrowser() throws, so the tests fail.
 */
export const browserSkip: string | false = chromiumPresent || browserRequired
  ? false
  : `${CHROMIUM_PATH} is missing (apt-get install chromium), so browser tests are skipped`;

/** Launches headless Chromium; the caller must close() it. */
export async function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `${CHROMIUM_PATH} is missing but browser tests are required` +
        (browserRequired ? " (CI_REQUIRE_BROWSER=1)" : "") +
        ": install it with apt-get install chromium",
    );
  }
  return await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [...CHROMIUM_ARGS],
  });
}

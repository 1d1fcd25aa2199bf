// Debian's chromium, driven by playwright-core. Outside CI a machine without it skips the browser
// tests; in CI (CI set) a missing browser fails them, since .ci/run installs it.
import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

export const CHROMIUM = process.env["METERD_CHROMIUM"] ?? "/usr/bin/chromium";
export const IN_CI = (process.env["CI"] ?? "") !== "" && process.env["CI"] !== "false";
export const HAVE_CHROMIUM = existsSync(CHROMIUM);
/** Run the browser tests: always in CI (where a missing browser is a failure), else when installed. */
export const RUN_BROWSER_TESTS = HAVE_CHROMIUM || IN_CI;

/** The flags of ../shared/TOOLCHAIN.md. playwright adds --headless and a new, empty --user-data-dir. */
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launchChromium(): Promise<Browser> {
  if (!HAVE_CHROMIUM) {
    throw new Error(`no chromium at ${CHROMIUM}: install it (apt-get install -y chromium), as .ci/run does, or set METERD_CHROMIUM`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
}

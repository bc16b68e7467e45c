/**
 * Shared setup of the browser tests: Debian's Chromium (never a downloaded
 * one), launched headless by playwright-core with the flags this machine's
 * closed network needs.
 */
import { type Browser, chromium, type Page } from "playwright-core";

/** Where Debian's `chromium` package puts the browser. */
export const CHROMIUM = "/usr/bin/chromium";

/** Whether Chromium is installed; the browser tests skip themselves, saying so, when it is not. */
export async function chromiumAvailable(test: string): Promise<boolean> {
  const found = await Deno.stat(CHROMIUM).then(() => true, () => false);
  if (!found) {
    console.warn(
      `%cSkipping ${test}: ${CHROMIUM} is missing (apt-get install -y chromium)`,
      "color: yellow",
    );
  }
  return found;
}

/** Launches headless Chromium. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
}

/** Runs in the page: whether the run page's event stream is in `state`. */
export const streamIs = (state: string): boolean =>
  (globalThis as unknown as {
    document: { documentElement: { dataset: Record<string, string | undefined> } };
  }).document.documentElement.dataset.stream === state;

/**
 * Collects what should never happen on a page: script errors, console
 * errors and 4xx/5xx responses. Sets a 15 s default timeout.
 */
export function watchPage(page: Page): string[] {
  page.setDefaultTimeout(15_000);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("response", (r) => {
    if (r.status() >= 400) errors.push(`${r.status()} ${r.url()}`);
  });
  return errors;
}

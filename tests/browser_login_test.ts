/**
 * Signing in to the dashboard from a real browser when the server has a
 * token: Debian's Chromium, driven by playwright-core, against the real
 * server on a real port. Skips itself only when /usr/bin/chromium is absent.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { DEFAULT_MAX_BODY_BYTES } from "../http/body.ts";
import { SESSION_COOKIE } from "../http/auth.ts";
import { startServer } from "../server.ts";
import { chromiumAvailable, launchChromium, streamIs, watchPage } from "./_browser.ts";

const TOKEN = "browser-s3cret";
const hasChromium = await chromiumAvailable("the browser login test");

Deno.test({
  name: "browser: with a token, sign in through the form and see the run list",
  ignore: !hasChromium,
  async fn(t) {
    const server = await startServer({
      port: 0,
      hostname: "127.0.0.1",
      kvPath: ":memory:",
      workflowPaths: [fileURLToPath(new URL("../workflows/", import.meta.url))],
      token: TOKEN,
      maxBodyBytes: DEFAULT_MAX_BODY_BYTES,
      graceMs: 0,
      debug: false,
    }, () => {});
    const { engine } = server;
    const base = server.url.origin;
    const run = await engine.start("order", { orderId: "login-1", amount: 5 });
    await engine.result(run.id);
    const browser = await launchChromium();
    try {
      const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
      const page = await context.newPage();
      const errors = watchPage(page);

      await t.step("a run page without a session shows the login form", async () => {
        await page.goto(`${base}/ui/runs/${run.id}`);
        assert.equal(new URL(page.url()).pathname, "/login");
        assert.equal(await page.textContent("h1"), "Sign in");
        assert.equal(await page.getAttribute("input[name=token]", "type"), "password");
      });

      await t.step("a wrong token is refused", async () => {
        await page.fill("input[name=token]", "wrong");
        await Promise.all([page.waitForLoadState(), page.click("button:text('Sign in')")]);
        await page.waitForSelector("text=Wrong token");
        assert.deepEqual((await context.cookies()).map((c) => c.name), []);
        // The 401 of the form post itself, and the browser's note of it.
        const expected = errors.splice(0).filter((e) => !/401/.test(e));
        assert.deepEqual(expected, []);
      });

      await t.step("the token signs in and leads back to the run page", async () => {
        await page.fill("input[name=token]", TOKEN);
        await Promise.all([
          page.waitForURL(`${base}/ui/runs/${run.id}`),
          page.click("button:text('Sign in')"),
        ]);
        const [cookie, ...others] = await context.cookies();
        assert.deepEqual(others, []);
        assert.equal(cookie.name, SESSION_COOKIE);
        assert.equal(cookie.httpOnly, true);
        assert.equal(cookie.sameSite, "Strict");
        assert.ok(!cookie.value.includes(TOKEN));
        // The page's EventSource and fragment fetches carry the cookie.
        await page.waitForFunction(streamIs, "ended");
        await page.waitForSelector("#run-body [data-run-status][data-status=succeeded]");
      });

      await t.step("the run list shows the run", async () => {
        await page.click("header.top a:text('Runs')");
        await page.waitForURL(`${base}/`);
        assert.equal(await page.textContent("h1"), "Runs");
        const ids = await page.$$eval(
          "tr[data-run-id]",
          (rows) => rows.map((r) => r.getAttribute("data-run-id")),
        );
        assert.deepEqual(ids, [run.id]);
      });

      await t.step("log out ends the session", async () => {
        await Promise.all([page.waitForURL(`${base}/login`), page.click("text=Log out")]);
        assert.deepEqual(await context.cookies(), []);
        await page.goto(`${base}/`);
        assert.equal(new URL(page.url()).pathname, "/login");
      });

      assert.deepEqual(errors, [], "no script errors or failed requests in the page");
    } finally {
      await browser.close();
      await server.shutdown();
    }
  },
});

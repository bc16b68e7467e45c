/**
 * The dashboard in a real browser: Debian's Chromium, driven by
 * playwright-core, against the real server (`startServer` of server.ts, as
 * `deno task serve` runs it) on a real port. Skips itself only when
 * /usr/bin/chromium is absent (CI installs it).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { DEFAULT_MAX_BODY_BYTES } from "../http/body.ts";
import { startServer } from "../server.ts";
import { chromiumAvailable, launchChromium, streamIs, watchPage } from "./_browser.ts";
import { control } from "./fixtures/browser_workflows.ts";

const hasChromium = await chromiumAvailable("the browser test");

/**
 * Just enough of the DOM for the page-side checks: this file is type-checked
 * without the DOM library, and those functions run in the browser.
 */
interface PageGlobals {
  document: {
    documentElement: { dataset: Record<string, string | undefined> };
    querySelectorAll(selector: string): ArrayLike<{ getAttribute(name: string): string | null }>;
  };
  getComputedStyle(
    element: unknown,
  ): { stroke: string; strokeDasharray: string; borderTopColor: string };
}

/** Runs in the page: whether every DAG node is green. */
const allNodesSucceeded = () => {
  const { document } = globalThis as unknown as PageGlobals;
  const nodes = Array.from(document.querySelectorAll("svg.dag g.node"));
  return nodes.length > 0 && nodes.every((n) => n.getAttribute("data-status") === "succeeded");
};

Deno.test({
  name: "browser: start an order run from the dashboard and watch its DAG turn green",
  ignore: !hasChromium,
  async fn(t) {
    const server = await startServer({
      port: 0,
      hostname: "127.0.0.1",
      kvPath: ":memory:",
      workflowPaths: [
        fileURLToPath(new URL("../workflows/", import.meta.url)),
        fileURLToPath(new URL("./fixtures/browser_workflows.ts", import.meta.url)),
      ],
      maxBodyBytes: DEFAULT_MAX_BODY_BYTES,
      graceMs: 0,
      debug: false,
    }, () => {});
    const { engine } = server;
    const base = server.url.origin;
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      const errors = watchPage(page);

      await t.step("start an order run from the form", async () => {
        await page.goto(`${base}/`);
        assert.equal(await page.textContent("h1"), "Runs");
        await page.click("text=Start a run");
        await page.click("a:text-is('order')");
        await page.fill("textarea[name=input]", '{"orderId": "browser-1", "amount": 42}');
        await Promise.all([
          page.waitForURL(/\/ui\/runs\/[0-9A-Z]+$/),
          page.click("button:text('Start run')"),
        ]);
      });

      await t.step("its DAG nodes turn green and the details fill in", async () => {
        await page.waitForFunction(allNodesSucceeded);
        assert.equal(await page.locator("svg.dag g.node").count(), 4);
        const fills = await page.evaluate(() => {
          const { document, getComputedStyle } = globalThis as unknown as PageGlobals;
          return Array.from(document.querySelectorAll("svg.dag g.node rect")).map((r) =>
            getComputedStyle(r).stroke
          );
        });
        assert.deepEqual(fills, Array(4).fill("rgb(22, 163, 74)"), "green outlines");
        // The stream ended and the last fragment shows the run's result.
        await page.waitForFunction(streamIs, "ended");
        await page.waitForSelector("#run-body [data-run-status][data-status=succeeded]");
        await page.waitForSelector("pre.run-output");
        assert.match((await page.textContent("pre.run-output"))!, /tx-browser-1-1/);
        // The README's screenshot is refreshed on request only, so a test run
        // leaves the working tree clean: WEFT_UPDATE_SCREENSHOT=1 deno task test
        const shot = await page.screenshot({ fullPage: true });
        assert.ok(shot.byteLength > 10_000, "a screenshot of the run page");
        if (Deno.env.get("WEFT_UPDATE_SCREENSHOT") === "1") {
          await Deno.writeFile(new URL("../docs/run-page.png", import.meta.url), shot);
        }
      });

      await t.step("a run page follows the run live, without reloading", async () => {
        const run = await engine.start("review", { ticket: "T-1" });
        await control.approve.started.promise;
        await page.goto(`${base}/ui/runs/${run.id}`);
        await page.waitForFunction(streamIs, "open");
        const status = (step: string) =>
          page.getAttribute(`svg.dag g.node[data-step=${step}]`, "data-status");
        assert.equal(await status("fetch"), "succeeded");
        assert.equal(await status("approve"), "running");
        assert.equal(await status("notify"), "pending");
        await page.evaluate(() => Object.assign(globalThis, { marker: "same page" }));
        const fetched: string[] = [];
        const onRequest = (r: { url(): string }) => {
          if (r.url().includes("/fragment")) fetched.push(new URL(r.url()).search);
        };
        page.on("request", onRequest);
        // Each transition re-colours its node while the run is still going.
        control.approve.gate.resolve();
        await control.notify.started.promise;
        await page.waitForSelector("svg.dag g.node[data-step=approve][data-status=succeeded]");
        await page.waitForSelector("svg.dag g.node[data-step=notify][data-status=running]");
        // The row and output of the step that changed were fetched alone.
        await page.waitForSelector("#step-approve .badge:text('succeeded')");
        await page.waitForSelector("[data-step-slot=approve] pre.output", { state: "attached" });
        assert.equal(await page.evaluate(streamIs, "open"), true);
        page.off("request", onRequest);
        assert.ok(fetched.includes("?step=approve"), `fetched ${fetched}`);
        assert.ok(!fetched.includes(""), `the whole body was fetched while live: ${fetched}`);
        control.notify.gate.resolve();
        await page.waitForFunction(allNodesSucceeded);
        assert.equal(
          await page.evaluate(() => (globalThis as unknown as { marker?: string }).marker),
          "same page",
        );
        await page.waitForSelector("#run-body [data-run-status][data-status=succeeded]");
      });

      await t.step("the cancel button cancels a running run", async () => {
        const run = await engine.start("stuck", {});
        await page.goto(`${base}/ui/runs/${run.id}`);
        await page.waitForFunction(streamIs, "open");
        await Promise.all([
          page.waitForURL(`${base}/ui/runs/${run.id}`),
          page.click("button:text('Cancel run')"),
        ]);
        await page.waitForSelector("svg.dag g.node[data-step=wait][data-status=cancelled]");
        await page.waitForSelector("#run-body [data-run-status][data-status=cancelled]");
        assert.equal((await engine.get(run.id)).status, "cancelled");
        assert.equal(await page.$("button:text('Cancel run')"), null);
      });

      await t.step(
        "control-flow shapes colour live, and the event form sends an event",
        async () => {
          const run = await engine.start("signoff", { wakeAt: Date.now() + 7 * 24 * 3600_000 });
          await control.prep.started.promise;
          await page.goto(`${base}/ui/runs/${run.id}`);
          await page.waitForFunction(streamIs, "open");
          const node = (step: string) => `svg.dag g.node[data-step="${step}"]`;
          assert.equal(await page.getAttribute(node("approval"), "data-status"), "pending");
          assert.equal(await page.$("form.send-event"), null);
          control.prep.gate.resolve();
          // Painted from the stream, then re-rendered: the sleep, the wait, the skip, the form.
          await page.waitForSelector(`${node("cool-off")}[data-status=sleeping]`);
          await page.waitForSelector(`${node("approval")}[data-status=awaiting]`);
          await page.waitForSelector(`${node("express")}[data-status=skipped]`);
          await page.waitForSelector("form.send-event input[name=event][value=approved]");
          const look = (step: string) =>
            page.$eval(`svg.dag g.node[data-step="${step}"] .shape`, (el) => {
              const { getComputedStyle } = globalThis as unknown as PageGlobals;
              const style = getComputedStyle(el);
              return { tag: el.tagName, stroke: style.stroke, dash: style.strokeDasharray };
            });
          assert.deepEqual(await look("cool-off"), {
            tag: "rect",
            stroke: "rgb(8, 145, 178)",
            dash: "none",
          });
          assert.deepEqual(await look("approval"), {
            tag: "polygon",
            stroke: "rgb(219, 39, 119)",
            dash: "none",
          });
          assert.equal((await look("express")).dash, "4px, 3px");
          assert.equal((await look("prep~compensate")).dash, "9px, 3px");
          assert.match((await page.textContent(`${node("express")} title`))!, /why: its condition/);
          const box = async (step: string) => (await page.locator(node(step)).boundingBox())!;
          const lowest = Math.max(
            ...await Promise.all(
              ["prep", "express", "audit", "cool-off", "approval", "ship"].map(async (s) => {
                const b = await box(s);
                return b.y + b.height;
              }),
            ),
          );
          assert.ok((await box("prep~compensate")).y > lowest, "the compensation lane is below");

          if (Deno.env.get("WEFT_UPDATE_SCREENSHOT") === "1") {
            const shot = await page.screenshot({ fullPage: true });
            await Deno.writeFile(new URL("../docs/control-flow-page.png", import.meta.url), shot);
          }

          // What is typed in the form survives the refresh that a transition triggers.
          const payload = "form.send-event textarea[name=payload]";
          await page.fill(payload, '{"by": ""}');
          await page.focus(payload);
          control.audit.gate.resolve();
          await page.waitForFunction(() => {
            const { document } = globalThis as unknown as {
              document: { querySelector(s: string): { textContent: string } | null };
            };
            const finished = document.querySelector("tr[data-step-row=audit] td:nth-child(6)");
            return finished !== null && finished.textContent !== "—";
          });
          assert.equal(await page.inputValue(payload), '{"by": ""}');
          assert.equal(
            await page.evaluate(() => {
              const { document } = globalThis as unknown as {
                document: { activeElement: { getAttribute(n: string): string | null } | null };
              };
              return document.activeElement?.getAttribute("name");
            }),
            "payload",
          );

          // A refused payload comes back as a 400 naming the field; the form keeps it.
          const before = errors.length;
          const refreshed = page.waitForResponse((r) => r.url().endsWith("/fragment"));
          await Promise.all([
            page.waitForURL(`${base}/ui/runs/${run.id}/events`),
            page.click("button:text('Send event')"),
          ]);
          await refreshed;
          await page.waitForFunction(streamIs, "open");
          assert.match(
            (await page.textContent("form.send-event .notice"))!,
            /by.*expected string/s,
          );
          assert.equal(await page.inputValue(payload), '{"by": ""}');
          const refused = errors.splice(before);
          assert.ok(
            refused.length > 0 && refused.every((e) => /400|status of 400/.test(e)),
            String(refused),
          );

          await page.fill(payload, '{"by": "ada"}');
          await Promise.all([
            page.waitForURL(`${base}/ui/runs/${run.id}`),
            page.click("button:text('Send event')"),
          ]);
          await page.waitForSelector(`${node("approval")}[data-status=succeeded]`);
          await page.waitForSelector("form.send-event", { state: "detached" });
          const after = await engine.get(run.id);
          assert.deepEqual((after.steps.approval.output as { payload: unknown }).payload, {
            by: "ada",
          });
          assert.equal(after.steps["cool-off"].status, "sleeping");

          // Cancelled, the run compensates (orange) before it ends cancelled.
          await Promise.all([
            page.waitForURL(`${base}/ui/runs/${run.id}`),
            page.click("button:text('Cancel run')"),
          ]);
          await control.undo.started.promise;
          await page.waitForSelector("#run-body [data-run-status][data-status=compensating]");
          await page.waitForSelector(`${node("prep~compensate")}[data-status=running]`);
          assert.equal(
            await page.$eval("#run-body [data-run-status]", (el) => {
              const { getComputedStyle } = globalThis as unknown as PageGlobals;
              return getComputedStyle(el).borderTopColor;
            }),
            "rgb(234, 88, 12)",
          );
          control.undo.gate.resolve();
          await page.waitForSelector(`${node("prep~compensate")}[data-status=succeeded]`);
          await page.waitForSelector("#run-body [data-run-status][data-status=cancelled]");
          assert.equal(await page.getAttribute(node("~onFailure"), "data-status"), "skipped");
        },
      );

      await t.step("the run list filters by workflow and status", async () => {
        await page.goto(`${base}/`);
        await page.selectOption("select[name=workflow]", "order");
        await page.selectOption("select[name=status]", "succeeded");
        await Promise.all([
          page.waitForURL(/status=succeeded/),
          page.click("button:text('Filter')"),
        ]);
        const rows = await page.$$eval(
          "tr[data-run-id] td:nth-child(2)",
          (tds) => tds.map((td) => td.textContent),
        );
        assert.deepEqual(rows, ["order"]);
      });

      assert.deepEqual(errors, [], "no script errors in the page");
    } finally {
      await browser.close();
      await server.shutdown();
    }
  },
});

import assert from "node:assert/strict";
import { Hono } from "hono";
import { z } from "zod";
import { type AnyWorkflow, workflow } from "../mod.ts";
import { mountObservability } from "../observability/mod.ts";
import { order } from "../workflows/order.ts";
import { createTestEngine } from "../testing.ts";
import { deferred } from "./_helpers.ts";

const ORIGIN = "http://localhost";

function form(fields: Record<string, string>): RequestInit {
  return {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: ORIGIN },
    body: new URLSearchParams(fields).toString(),
  };
}

async function setup(workflows: AnyWorkflow[] = [order, quick()], pageSize = 25) {
  const te = await createTestEngine({ workflows });
  const app = new Hono();
  const observability = mountObservability(app, {
    engine: te.engine,
    dashboard: { now: () => te.clock.now(), pageSize },
  });
  return {
    te,
    app,
    async [Symbol.asyncDispose]() {
      observability.close();
      await te.close();
    },
  };
}

function quick() {
  return workflow("quick", { input: z.object({ n: z.number().int() }) })
    .step("one", ({ input }) => input.n)
    .step("two", { needs: ["one"] }, ({ results }) => results.one * 2);
}

/** The attribute values of `attr` on every element matching `tag` with class `cls`. */
function attrs(html: string, pattern: RegExp): string[] {
  return [...html.matchAll(pattern)].map((m) => m[1]);
}

Deno.test("dashboard lists runs with status, workflow and age, filtered and paged", async (t) => {
  await using s = await setup([order, quick()], 2);
  const { te, app } = s;
  const ids: string[] = [];
  for (const n of [1, 2, 3]) {
    const run = await te.engine.start("quick", { n });
    await te.engine.result(run.id);
    ids.push(run.id);
  }
  te.clock.tick(90_000);

  await t.step("the first page: newest first, with a next link", async () => {
    const res = await app.request("/");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-security-policy")!, /script-src 'self'/);
    const html = await res.text();
    assert.deepEqual(attrs(html, /<tr data-run-id="([^"]+)"/g), [ids[2], ids[1]]);
    assert.match(html, /data-status="succeeded"/);
    assert.match(html, />1m ago</);
    assert.match(html, /<td>quick<\/td>/);
    const next = html.match(/rel="next" href="([^"]+)"/)?.[1];
    assert.ok(next, "a next-page link");
    const page2 = await (await app.request(next.replaceAll("&amp;", "&"))).text();
    assert.deepEqual(attrs(page2, /<tr data-run-id="([^"]+)"/g), [ids[0]]);
    assert.doesNotMatch(page2, /rel="next"/);
    assert.match(page2, /First page/);
  });

  await t.step("filters by workflow and status", async () => {
    const orderRun = await te.engine.start("order", { orderId: "x", amount: 99_999 });
    await te.runToEnd(orderRun.id);
    const byWorkflow = await (await app.request("/?workflow=order")).text();
    assert.deepEqual(attrs(byWorkflow, /<tr data-run-id="([^"]+)"/g), [orderRun.id]);
    assert.match(byWorkflow, /<option value="order" selected>order<\/option>/);
    const failed = await (await app.request("/?status=failed")).text();
    assert.deepEqual(attrs(failed, /<tr data-run-id="([^"]+)"/g), [orderRun.id]);
    const none = await (await app.request("/?workflow=quick&status=failed")).text();
    assert.match(none, /No runs\./);
  });

  await t.step("a bad status or cursor is a 400 with the reason", async () => {
    const bad = await app.request("/?status=exploded");
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /Unknown status &#39;exploded&#39;/);
    const cursor = await app.request("/?cursor=garbage");
    assert.equal(cursor.status, 400);
    assert.match(await cursor.text(), /cursor/);
  });
});

Deno.test("dashboard run page draws the DAG coloured by step state, with details", async () => {
  await using s = await setup();
  const { te, app } = s;
  // payment fails its first attempt and retries after a backoff on the fake clock.
  const run = await te.engine.start("order", { orderId: "flaky-7", amount: 12 });
  const done = await te.runToEnd(run.id);
  assert.equal(done.steps.payment.attempts, 2);
  assert.equal(done.status, "succeeded");
  const res = await app.request(`/ui/runs/${run.id}`);
  assert.equal(res.status, 200);
  const html = await res.text();
  const svg = html.match(/<svg class="dag"[\s\S]*?<\/svg>/)?.[0];
  assert.ok(svg, "an inline SVG DAG");
  const nodes = [...svg.matchAll(/<g class="node" data-step="([^"]+)" data-status="([^"]+)"/g)]
    .map((m) => [m[1], m[2]]);
  assert.deepEqual(nodes, [
    ["payment", "succeeded"],
    ["inventory", "succeeded"],
    ["logistics", "succeeded"],
    ["dispatch", "succeeded"],
  ]);
  const edges = [...svg.matchAll(/data-from="([^"]+)" data-to="([^"]+)"/g)].map((m) =>
    `${m[1]}->${m[2]}`
  );
  assert.deepEqual(edges.sort(), [
    "inventory->dispatch",
    "logistics->dispatch",
    "payment->dispatch",
  ]);
  // dagre placed dispatch to the right of what it needs.
  const x = (step: string) =>
    Number(svg.match(new RegExp(`data-step="${step}"[^>]*translate\\(([\\d.]+)`))![1]);
  assert.ok(x("dispatch") > x("payment") && x("dispatch") > x("inventory"));
  assert.match(html, /payment gateway unavailable/, "the failed attempt's error");
  assert.match(html, /succeeded · 2 attempts/);
  assert.match(html, /tx-flaky-7-2/, "the step output");
  assert.match(html, /<script src="\/ui\/assets\/run.js" defer>/);
  assert.doesNotMatch(html, /Cancel run/, "no cancel button once terminal");

  const fragment = await app.request(`/ui/runs/${run.id}/fragment`);
  assert.match(await fragment.text(), /^<section id="run-body" data-run-id=/);
  const js = await app.request("/ui/assets/run.js");
  assert.match(js.headers.get("content-type")!, /javascript/);
  assert.match(await js.text(), /new EventSource\("\/runs\/" \+ enc \+ "\/events"\)/);
  const css = await app.request("/ui/assets/style.css");
  assert.match(await css.text(), /\.node\[data-status="succeeded"\] rect/);
});

Deno.test("dashboard run page of an unknown run is a 404 page", async () => {
  await using s = await setup();
  const res = await s.app.request("/ui/runs/nope");
  assert.equal(res.status, 404);
  assert.match(await res.text(), /Run not found/);
  assert.equal((await s.app.request("/ui/runs/nope/fragment")).status, 404);
});

Deno.test("dashboard start form validates against the schema and starts a run", async (t) => {
  await using s = await setup();
  const { te, app } = s;

  await t.step("the form is pre-filled with an input the schema accepts", async () => {
    const res = await app.request("/ui/start?workflow=order");
    assert.equal(res.status, 200);
    const html = await res.text();
    const text = html.match(/<textarea name="input"[^>]*>([\s\S]*?)<\/textarea>/)?.[1];
    assert.ok(text);
    const example = JSON.parse(text.replaceAll("&quot;", '"'));
    assert.deepEqual(example, { orderId: "example", amount: 1, sku: "sku-1" });
    assert.match(html, /Input schema/);
  });

  await t.step("invalid JSON is refused with the parser's message", async () => {
    const res = await app.request("/ui/runs", form({ workflow: "order", input: "{nope" }));
    assert.equal(res.status, 400);
    const html = await res.text();
    assert.match(html, /The input is not valid JSON/);
    assert.match(html, />\{nope<\/textarea>/, "the text is kept for fixing");
  });

  await t.step("a schema mismatch shows zod's issues by path", async () => {
    const res = await app.request(
      "/ui/runs",
      form({ workflow: "order", input: '{"orderId": "", "amount": -3}' }),
    );
    assert.equal(res.status, 422);
    const html = await res.text();
    assert.match(html, /does not match the workflow&#39;s schema/);
    assert.match(html, /<code>orderId<\/code>: /);
    assert.match(html, /<code>amount<\/code>: [^<]*&gt;0/);
    assert.equal((await te.engine.list()).runs.length, 0);
  });

  await t.step("an unknown workflow is a 404", async () => {
    const res = await app.request("/ui/runs", form({ workflow: "nope", input: "{}" }));
    assert.equal(res.status, 404);
    assert.match(await res.text(), /nope/);
  });

  await t.step("a valid input starts the run and redirects to its page", async () => {
    const res = await app.request(
      "/ui/runs",
      form({ workflow: "quick", input: '{"n": 21}', idempotencyKey: "k1" }),
    );
    assert.equal(res.status, 303);
    const location = res.headers.get("location")!;
    const id = location.match(/^\/ui\/runs\/(.+)$/)?.[1];
    assert.ok(id);
    const done = await te.engine.result(id);
    assert.equal(done.output, 42);
    assert.equal(done.idempotencyKey, "k1");
  });

  await t.step("a cross-site post is refused", async () => {
    const res = await app.request("/ui/runs", {
      ...form({ workflow: "quick", input: '{"n": 1}' }),
      headers: {
        "Content-Type": "application/x-www-form-urlencoded",
        Origin: "https://evil.example",
      },
    });
    assert.equal(res.status, 403);
    assert.equal((await te.engine.list({ workflow: "quick" })).runs.length, 1);
  });
});

Deno.test("dashboard cancel button cancels a running run", async () => {
  const gate = deferred();
  const held = workflow("held", { input: z.object({}) })
    .step("wait", async ({ signal }) => {
      await Promise.race([
        gate.promise,
        new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason))),
      ]);
    });
  await using s = await setup([held]);
  const { te, app } = s;
  const run = await te.engine.start("held", {});
  const page = await (await app.request(`/ui/runs/${run.id}`)).text();
  assert.match(page, new RegExp(`action="/ui/runs/${run.id}/cancel"`));
  const res = await app.request(`/ui/runs/${run.id}/cancel`, form({}));
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), `/ui/runs/${run.id}`);
  const cancelled = await te.engine.get(run.id);
  assert.equal(cancelled.status, "cancelled");
  assert.equal(cancelled.steps.wait.status, "cancelled");
  const again = await app.request(`/ui/runs/${run.id}/cancel`, form({}));
  assert.equal(again.status, 409);
  assert.match(await again.text(), /cancelled/);
  const forged = await app.request(`/ui/runs/${run.id}/cancel`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: "",
  });
  assert.equal(forged.status, 403, "a post without an Origin is refused");
  gate.resolve();
});

Deno.test("dashboard escapes run data", async () => {
  await using s = await setup();
  const { te, app } = s;
  const evil = "<script>alert(1)</script><img src=x onerror=alert(1)>";
  const run = await te.engine.start("order", { orderId: evil, amount: 99_999 });
  await te.runToEnd(run.id);
  for (const path of [`/ui/runs/${run.id}`, "/"]) {
    const html = await (await app.request(path)).text();
    assert.doesNotMatch(html, /<script>alert/);
    assert.doesNotMatch(html, /<img src=x/);
  }
  const page = await (await app.request(`/ui/runs/${run.id}`)).text();
  assert.match(page, /&lt;script&gt;alert\(1\)&lt;\/script&gt;&lt;img src=x/);
  const bad = await app.request("/ui/runs", form({ workflow: "order", input: evil }));
  assert.doesNotMatch(await bad.text(), /<script>alert/);
});

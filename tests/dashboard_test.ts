import assert from "node:assert/strict";
import { Hono } from "hono";
import { z } from "zod";
import { type AnyWorkflow, type RunSnapshot, workflow } from "../mod.ts";
import { dashboardRoutes } from "../dashboard/routes.tsx";
import { mountObservability } from "../observability/mod.ts";
import { order } from "../workflows/order.ts";
import { createTestEngine } from "../testing.ts";
import { deferred, testEngine, waitFor } from "./_helpers.ts";

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
  assert.match(await css.text(), /\.node\[data-status="succeeded"\] \.shape/);
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

const DAY = 24 * 3600_000;

/** Text as the page shows it: Hono's escapes undone. */
function unescape(html: string): string {
  return html.replaceAll("&#39;", "'").replaceAll("&quot;", '"').replaceAll("&lt;", "<")
    .replaceAll("&gt;", ">").replaceAll("&amp;", "&");
}

interface DrawnNode {
  href: string;
  attrs: Record<string, string>;
  body: string;
  title: string;
  lines: string[];
  y: number;
}

/** The nodes of a run page's DAG: link, attributes, inner markup, tooltip and text lines. */
function drawnNodes(html: string): Map<string, DrawnNode> {
  const svg = html.match(/<svg class="dag"[\s\S]*?<\/svg>/)?.[0];
  assert.ok(svg, "an inline SVG DAG");
  const nodes = new Map<string, DrawnNode>();
  for (const m of svg.matchAll(/<a href="([^"]*)"><g class="node" ([^>]*)>([\s\S]*?)<\/a>/g)) {
    const attrs = Object.fromEntries(
      [...m[2].matchAll(/([\w-]+)="([^"]*)"/g)].map((a) => [a[1], unescape(a[2])]),
    );
    const body = m[3];
    nodes.set(attrs["data-step"], {
      href: unescape(m[1]),
      attrs,
      body,
      title: unescape(body.match(/<title>([\s\S]*?)<\/title>/)?.[1] ?? ""),
      lines: [...body.matchAll(/<text class="meta[^"]*"[^>]*>([^<]*)<\/text>/g)].map((t) =>
        unescape(t[1])
      ),
      y: Number(attrs.transform.match(/translate\([\d.]+,([\d.]+)\)/)![1]),
    });
  }
  return nodes;
}

/** The text of a step's row in the step table. */
function stepRow(html: string, step: string): string {
  const row = html.match(new RegExp(`<tr id="step-${step}"[\\s\\S]*?</tr>`))?.[0];
  assert.ok(row, `a row for step ${step}`);
  return unescape(row.replace(/<[^>]+>/g, ""));
}

/** A shipment that waits for an approval and a cooling-off period, with a compensation. */
function shipment() {
  return workflow("shipment", { input: z.object({ express: z.boolean() }) })
    .step("quote", { compensate: () => "refunded" }, ({ input }) => ({ express: input.express }))
    .step("express", { needs: ["quote"], when: ({ results }) => results.quote.express }, () => 1)
    .sleep("cool-off", { needs: ["quote"], durationMs: 2 * DAY })
    .waitForEvent("approval", {
      needs: ["quote"],
      event: "approved",
      schema: z.object({ by: z.string().min(1) }),
      timeoutMs: 3 * DAY,
    })
    .step(
      "ship",
      { needs: ["cool-off", "approval"] },
      ({ results }) => results.approval.timedOut ? "expired" : `for ${results.approval.payload.by}`,
    )
    .onFailure(() => "notified");
}

Deno.test("dashboard run page draws each step kind with its own shape and state", async (t) => {
  await using s = await setup([shipment()]);
  const { te, app } = s;
  const run = await te.engine.start("shipment", { express: false });
  await waitFor(async () => {
    const steps = (await te.engine.get(run.id)).steps;
    return steps["cool-off"].status === "sleeping" && steps.approval.status === "awaiting";
  }, "the sleep and the wait to start");
  const html = await (await app.request(`/ui/runs/${run.id}`)).text();
  const nodes = drawnNodes(html);

  await t.step("one node per step, each with its kind, phase and status", () => {
    const seen = [...nodes.values()].map((
      n,
    ) => [
      n.attrs["data-step"],
      n.attrs["data-kind"],
      n.attrs["data-phase"],
      n.attrs["data-status"],
    ]);
    assert.deepEqual(seen, [
      ["quote", "task", "forward", "succeeded"],
      ["express", "task", "forward", "skipped"],
      ["cool-off", "sleep", "forward", "sleeping"],
      ["approval", "wait", "forward", "awaiting"],
      ["ship", "task", "forward", "pending"],
      ["quote~compensate", "task", "compensation", "pending"],
      ["~onFailure", "task", "compensation", "pending"],
    ]);
  });

  await t.step("a task is a rounded box, a sleep a pill, a wait a hexagon", () => {
    assert.match(nodes.get("quote")!.body, /<rect class="shape" width="[\d.]+" height="48" rx="8"/);
    assert.match(nodes.get("cool-off")!.body, /<rect class="shape"[^>]* height="64" rx="32"/);
    const hexagon = nodes.get("approval")!.body.match(/<polygon class="shape" points="([^"]+)"/);
    assert.ok(hexagon, "the wait step is a polygon");
    assert.equal(hexagon[1].split(" ").length, 6);
    assert.doesNotMatch(nodes.get("approval")!.body, /<rect/);
  });

  await t.step("a sleep and a wait say when they resume; a wait names its event", () => {
    assert.deepEqual(nodes.get("cool-off")!.lines, ["sleeping", "until 2026-01-03 00:00 UTC"]);
    assert.deepEqual(nodes.get("approval")!.lines, [
      "awaiting",
      "event approved",
      "timeout 2026-01-04 00:00 UTC",
    ]);
    assert.match(stepRow(html, "cool-off"), /resumes at 2026-01-03 00:00 UTC \(in 2d 00h\)/);
    assert.match(stepRow(html, "approval"), /event approved/);
    assert.match(stepRow(html, "approval"), /times out at 2026-01-04 00:00 UTC \(in 3d 00h\)/);
  });

  await t.step("a skipped step says why, in its tooltip, its node and its row", () => {
    const express = nodes.get("express")!;
    assert.match(express.title, /^express \(task\): skipped\nwhy: its condition is false$/);
    assert.deepEqual(express.lines, ["skipped · 0 attempts", "why: its condition is false"]);
    assert.match(stepRow(html, "express"), /skipped: its condition is false/);
    assert.doesNotMatch(stepRow(html, "quote"), /skipped:/);
  });

  await t.step("compensations sit in their own lane below, with edges from their needs", () => {
    const svg = html.match(/<svg class="dag"[\s\S]*?<\/svg>/)![0];
    const lane = svg.match(/<g class="lane" data-lane="compensation"><rect x="2" y="([\d.]+)"/);
    assert.ok(lane, "a compensation lane");
    const laneTop = Number(lane[1]);
    const forwardBottom = Math.max(
      ...[...nodes.values()].filter((n) => n.attrs["data-phase"] === "forward").map((n) => {
        const points = n.body.match(/points="([^"]+)"/)?.[1];
        const height = points
          ? Math.max(...points.split(" ").map((p) => Number(p.split(",")[1])))
          : Number(n.body.match(/height="([\d.]+)"/)![1]);
        return n.y + height;
      }),
    );
    assert.ok(laneTop >= forwardBottom, `lane at ${laneTop}, below ${forwardBottom}`);
    assert.ok(nodes.get("quote~compensate")!.y > laneTop);
    assert.ok(nodes.get("~onFailure")!.y > laneTop);
    assert.match(svg, /data-from="quote~compensate" data-to="~onFailure"/);
    assert.match(stepRow(html, "quote~compensate"), /compensation/);
    assert.match(html, /<tr id="step-quote~compensate"[^>]* data-phase="compensation"/);
  });

  await t.step("the send-event form names the awaited event, pre-filled from its schema", () => {
    const form = html.match(/<form class="send-event"[\s\S]*?<\/form>/)?.[0];
    assert.ok(form, "a send-event form");
    assert.match(form, new RegExp(`action="/ui/runs/${run.id}/events"`));
    assert.match(form, /<input type="text" name="event" value="approved"/);
    const payload = form.match(/<textarea name="payload"[^>]*>([\s\S]*?)<\/textarea>/)![1];
    assert.deepEqual(JSON.parse(unescape(payload)), { by: "example" });
    assert.match(form, /Payload schema/);
  });

  await t.step("once the run ends, the compensations show why they were skipped", async () => {
    await te.engine.signal(run.id, "approved", { by: "ada" });
    await te.clock.advance(2 * DAY);
    const done = await te.engine.result(run.id);
    assert.equal(done.status, "succeeded");
    const page = await (await app.request(`/ui/runs/${run.id}`)).text();
    const after = drawnNodes(page);
    assert.equal(after.get("quote~compensate")!.attrs["data-status"], "skipped");
    assert.match(after.get("quote~compensate")!.title, /why: the run succeeded/);
    assert.match(stepRow(page, "quote~compensate"), /skipped: the run succeeded/);
    assert.deepEqual(after.get("cool-off")!.lines, ["succeeded"], "no resume time once done");
    assert.doesNotMatch(page, /class="send-event"/, "no event form once nothing awaits");
  });
});

Deno.test("dashboard event form sends an event, and shows why one is refused", async (t) => {
  await using s = await setup([shipment()]);
  const { te, app } = s;
  const run = await te.engine.start("shipment", { express: false });
  await waitFor(async () => (await te.engine.get(run.id)).steps.approval.status === "awaiting");
  const send = (fields: Record<string, string>) =>
    app.request(`/ui/runs/${run.id}/events`, form(fields));
  const keptPayload = (html: string) =>
    unescape(html.match(/<textarea name="payload"[^>]*>([\s\S]*?)<\/textarea>/)![1]);

  await t.step("a payload that is not JSON is a 400 with the parser's message, kept", async () => {
    const res = await send({ event: "approved", payload: "{by: ada" });
    assert.equal(res.status, 400);
    const html = await res.text();
    assert.match(html, /The payload is not valid JSON/);
    assert.match(html, /<ul class="issues"><li><code>\(input\)<\/code>: /);
    assert.equal(keptPayload(html), "{by: ada");
  });

  await t.step("a payload the schema refuses is a 400 listing the issues by path", async () => {
    const res = await send({ event: "approved", payload: '{"by": ""}', key: "k-1" });
    assert.equal(res.status, 400);
    const html = unescape(await res.text());
    assert.match(html, /The payload does not match the schema of event 'approved'/);
    assert.match(html, /<code>by<\/code>: Too small: expected string to have >=1 characters/);
    assert.equal(keptPayload(html), '{"by": ""}');
    assert.match(html, /name="key" value="k-1"/);
    assert.equal((await te.engine.get(run.id)).steps.approval.status, "awaiting");
  });

  await t.step("an event no step waits for is a 404 naming it", async () => {
    const res = await send({ event: "aproved", payload: "{}" });
    assert.equal(res.status, 404);
    const html = unescape(await res.text());
    assert.match(html, /Workflow 'shipment' has no step that waits for event 'aproved'/);
    assert.match(html, /name="event" value="aproved"/, "the typo is shown, to fix");
    assert.equal((await send({ event: "", payload: "{}" })).status, 400);
  });

  await t.step("a cross-site post is refused", async () => {
    const res = await app.request(`/ui/runs/${run.id}/events`, {
      ...form({ event: "approved", payload: '{"by": "mallory"}' }),
      headers: {
        "Content-Type": "application/x-www-form-urlencoded",
        Origin: "https://evil.example",
      },
    });
    assert.equal(res.status, 403);
    assert.equal((await te.engine.get(run.id)).steps.approval.status, "awaiting");
  });

  await t.step("a valid event is delivered and redirects to the run page", async () => {
    const res = await send({ event: "approved", payload: '{"by": "ada"}', key: "k-1" });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get("location"), `/ui/runs/${run.id}`);
    await waitFor(async () => (await te.engine.get(run.id)).steps.approval.status === "succeeded");
    const snapshot = await te.engine.get(run.id);
    assert.deepEqual((snapshot.steps.approval.output as { payload: unknown }).payload, {
      by: "ada",
    });
  });

  await t.step("the same key again is not delivered twice, and the page says so", async () => {
    const res = await send({ event: "approved", payload: '{"by": "bo"}', key: "k-1" });
    assert.equal(res.status, 200);
    assert.match(unescape(await res.text()), /An event with key 'k-1' was already sent/);
  });

  await t.step("a finished run is a 409, and an unknown run a 404", async () => {
    await te.clock.advance(2 * DAY);
    assert.equal((await te.engine.result(run.id)).steps.ship.output, "for ada");
    const res = await send({ event: "approved", payload: '{"by": "cy"}' });
    assert.equal(res.status, 409);
    assert.match(unescape(await res.text()), /Cannot send event 'approved' to run/);
    const unknown = await app.request("/ui/runs/nope/events", form({ event: "e", payload: "1" }));
    assert.equal(unknown.status, 404);
    assert.match(await unknown.text(), /Run not found/);
  });
});

Deno.test("dashboard draws a map step as one node with counts, and links child and parent runs", async (t) => {
  // The engine's map and child kinds add `kind: "map"` with `map` counts,
  // `childRunId` and the run's `parent`; this engine decorates real
  // snapshots with them, so the test pins what the page makes of them.
  const fanout = workflow("fanout", { input: z.object({}) })
    .step("list", () => ({ items: 10_000 }))
    .step("charge-each", { needs: ["list"] }, () => [])
    .step("report", { needs: ["charge-each"] }, () => "sent");
  const childWf = workflow("child-job", { input: z.object({}) }).step("work", () => "done");
  const te = await testEngine([fanout, childWf]);
  const child = await te.engine.start("child-job", {});
  const parent = await te.engine.start("fanout", {});
  await te.engine.result(child.id);
  await te.engine.result(parent.id);
  const decorate = (run: RunSnapshot): RunSnapshot => {
    if (run.id === child.id) {
      return { ...run, parent: { runId: parent.id, step: "report" } } as never;
    }
    if (run.id !== parent.id) return run;
    const steps = { ...run.steps };
    steps["charge-each"] = {
      ...steps["charge-each"],
      kind: "map",
      map: { total: 10_000, succeeded: 6_000, failed: 3, running: 50 },
    } as never;
    steps.report = { ...steps.report, kind: "child", childRunId: child.id } as never;
    return { ...run, steps };
  };
  const engine = te.engine;
  const app = dashboardRoutes({
    workflows: engine.workflows,
    list: (o) => engine.list(o),
    get: async (id) => decorate(await engine.get(id)),
    start: (w, i, o) => engine.start(w, i, o),
    cancel: (id, o) => engine.cancel(id, o),
    signal: (id, e, p, o) => engine.signal(id, e, p, o),
  }, { now: () => te.clock.now() });
  try {
    const html = await (await app.request(`/ui/runs/${parent.id}`)).text();
    const nodes = drawnNodes(html);

    await t.step("a map of 10,000 items is one stacked node with its counts", () => {
      assert.equal(nodes.size, 3, "one node per step, not per item");
      const map = nodes.get("charge-each")!;
      assert.equal(map.attrs["data-kind"], "map");
      assert.equal([...map.body.matchAll(/<rect class="shape stack"/g)].length, 2);
      assert.deepEqual(map.lines, ["succeeded", "6000/10000 done · 50 running · 3 failed"]);
      const bar = (part: string) =>
        Number(map.body.match(new RegExp(`class="bar-${part}"[^>]* width="([\\d.]+)"`))![1]);
      const track = Number(map.body.match(/class="bar-track"[^>]* width="([\d.]+)"/)![1]);
      assert.ok(Math.abs(bar("succeeded") - track * 0.6) < 0.2, "60% of the bar succeeded");
      assert.ok(Math.abs(bar("running") - track * 0.005) < 0.2);
      assert.ok(bar("failed") > 0 && bar("failed") < 1);
      assert.match(stepRow(html, "charge-each"), /6000 of 10000 done, 50 running, 3 failed/);
    });

    await t.step("a child step is a framed node that links to the child run", () => {
      const node = nodes.get("report")!;
      assert.equal(node.attrs["data-kind"], "child");
      assert.equal(node.href, `/ui/runs/${child.id}`);
      assert.match(node.body, /<path class="shape-detail" d="M9,0 L9,/);
      assert.deepEqual(node.lines.at(-1), `child run ${child.id}`);
      assert.equal(nodes.get("list")!.href, "#step-list");
      assert.match(stepRow(html, "report"), new RegExp(`child run ${child.id}`));
    });

    await t.step("the parent page lists its children with the child's own status", () => {
      const item = html.match(/<li data-child-run="([^"]+)">([\s\S]*?)<\/li>/);
      assert.ok(item, "a child run entry");
      assert.equal(item[1], child.id);
      assert.match(item[2], new RegExp(`<a href="/ui/runs/${child.id}">`));
      assert.match(item[2], /from step <a href="#step-report">report<\/a>/);
      assert.match(item[2], /data-status="succeeded"/);
    });

    await t.step("the child page links back to its parent", async () => {
      const page = await (await app.request(`/ui/runs/${child.id}`)).text();
      const link = page.match(/<span class="parent-run">([\s\S]*?)<\/span>/)?.[1];
      assert.ok(link, "a parent link");
      assert.match(link, new RegExp(`<a href="/ui/runs/${parent.id}"><code>${parent.id}</code>`));
      assert.match(link, new RegExp(`href="/ui/runs/${parent.id}#step-report">report</a>`));
      assert.doesNotMatch(page, /Child runs/);
    });
  } finally {
    await te[Symbol.asyncDispose]();
  }
});

Deno.test("dashboard stylesheet colours the new step and run states", async () => {
  await using s = await setup([quick()]);
  const css = await (await s.app.request("/ui/assets/style.css")).text();
  for (const status of ["sleeping", "awaiting"]) {
    assert.match(
      css,
      new RegExp(
        `svg\\.dag \\.node\\[data-status="${status}"\\] \\.shape \\{ fill: var\\(--${status}-bg\\); stroke: var\\(--${status}\\)`,
      ),
    );
    assert.match(
      css,
      new RegExp(`\\.badge\\[data-status="${status}"\\] \\{ border-color: var\\(--${status}\\)`),
    );
  }
  assert.match(css, /\.badge\[data-status="compensating"\] \{ border-color: var\(--compensating\)/);
  assert.match(css, /--compensating: #[0-9a-f]{6}/);
  assert.match(css, /svg\.dag \.node\[data-phase="compensation"\] \.shape \{ stroke-dasharray/);
});

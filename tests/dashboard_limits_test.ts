/**
 * The dashboard's doors: the start form applies the API's nesting and size
 * limits, and run pages render huge or deep JSON bounded, with a link to
 * the raw JSON.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { workflow } from "../mod.ts";
import { createApp } from "../http/app.ts";
import { mountObservability, type Observability } from "../observability/mod.ts";
import { testEngine } from "./_helpers.ts";

const ORIGIN = "http://localhost";
const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);

function deepArray(depth: number): unknown {
  let v: unknown = "bottom";
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

const anything = workflow("anything", { input: z.unknown() }).step("echo", () => "ok");
const big = workflow("big", { input: z.object({}) })
  .step("deep", () => deepArray(1_000))
  .step("wide", () => "x".repeat(600_000));

async function setup() {
  const te = await testEngine([anything, big], { maxInputBytes: 64 * 1024 });
  let observability: Observability | undefined;
  const app = createApp({
    engine: te.engine,
    maxBodyBytes: 256 * 1024,
    mount: (a) => observability = mountObservability(a, { engine: te.engine }),
  });
  return {
    te,
    app,
    async [Symbol.asyncDispose]() {
      observability?.close();
      await te[Symbol.asyncDispose]();
    },
  };
}

function submit(input: string): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", origin: ORIGIN },
    body: new URLSearchParams({ workflow: "anything", input }),
  };
}

Deno.test("the start form applies the API's nesting and size limits", async (t) => {
  await using s = await setup();
  for (const depth of [65, 3_000, 5_000]) {
    await t.step(`${depth} levels deep: 400, named, nothing started`, async () => {
      const res = await s.app.request("/ui/runs", submit(nested(depth)));
      const html = await res.text();
      assert.equal(res.status, 400, html.slice(0, 300));
      assert.match(html, /The input nests arrays and objects deeper than 64 levels/);
    });
  }
  await t.step("64 levels are accepted, as by the API", async () => {
    const res = await s.app.request("/ui/runs", submit(nested(64)));
    assert.equal(res.status, 303);
  });
  await t.step("an input over the engine's limit: 413 with the limit named", async () => {
    const res = await s.app.request("/ui/runs", submit(JSON.stringify("x".repeat(100_000))));
    const html = await res.text();
    assert.equal(res.status, 413);
    assert.match(html, /65536/);
  });
  await t.step("a form over the server's body limit: 413 before parsing", async () => {
    const res = await s.app.request("/ui/runs", submit(JSON.stringify("x".repeat(300_000))));
    assert.equal(res.status, 413);
    await res.body?.cancel();
  });
  assert.equal((await s.te.engine.list()).runs.length, 1, "only the 64-level run was started");
});

Deno.test("run pages render deep and large JSON bounded, with a link to the raw JSON", async () => {
  await using s = await setup();
  const run = await s.te.engine.start("big", {});
  const done = await s.te.engine.result(run.id);
  assert.equal(done.status, "succeeded", JSON.stringify(done.error));
  const res = await s.app.request(`/ui/runs/${run.id}`);
  const html = await res.text();
  assert.equal(res.status, 200);
  // 1,000 levels pretty-printed would be ~1 MB of indentation; 600 KB of output is cut.
  assert.ok(html.length < 100_000, `the page is ${html.length} characters`);
  assert.match(html, /Cut short here: see the <a href="\/runs\/[0-9A-Z]{26}">raw JSON<\/a>/);
  // The live fragment of one step is bounded the same way.
  const part = await s.app.request(`/ui/runs/${run.id}/fragment?step=wide`);
  const partHtml = await part.text();
  assert.ok(partHtml.length < 40_000, `the fragment is ${partHtml.length} characters`);
  assert.match(partHtml, /data-step-row="wide"/);
  assert.doesNotMatch(partHtml, /data-step-row="deep"/);
  const head = await (await s.app.request(`/ui/runs/${run.id}/fragment?part=head`)).text();
  assert.match(head, /id="run-head"/);
  assert.doesNotMatch(head, /data-step-row/);
  assert.equal((await s.app.request(`/ui/runs/${run.id}/fragment?step=nope`)).status, 404);
});

/**
 * Handler tests of the HTTP API through `app.request()`: every row of the
 * endpoint table, every error case, auth, limits and the OpenAPI document.
 */
import assert from "node:assert/strict";
import { Validator } from "@seriousme/openapi-schema-validator";
import type { Hono } from "hono";
import { z } from "zod";
import {
  createEngine,
  type Engine,
  type EngineOptions,
  type InputSchema,
  workflow,
} from "../mod.ts";
import { order } from "../workflows/order.ts";
import { type AppOptions, createApp } from "../http/app.ts";
import { MAX_JSON_DEPTH } from "../http/body.ts";
import { LOGIN_PATH, LOGOUT_PATH } from "../dashboard/login.tsx";
import { type AppHarness as Harness, appHarness, fails, ok, TOKEN, UNKNOWN_ID } from "./_app.ts";
import {
  HealthSchema,
  RunPageSchema,
  RunSnapshotSchema,
  RunSummarySchema,
  WorkflowInfoSchema,
  WorkflowListSchema,
} from "../http/schemas.ts";

/** Workflows made per test, so no test shares state with another. */
function testWorkflows() {
  const gate = Promise.withResolvers<void>();
  const echo = workflow("echo", {
    description: "Doubles n",
    input: z.object({ n: z.number() }),
  })
    .step("double", ({ input }) => input.n * 2)
    .step("report", { needs: ["double"] }, ({ results }) => ({ result: results.double }));
  const gated = workflow("gated").step(
    "block",
    ({ signal }) =>
      new Promise<string>((resolve, reject) => {
        gate.promise.then(() => resolve("opened"));
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      }),
  );
  const accepting: InputSchema<unknown> = {
    safeParse: (value) => ({ success: true, data: value }),
  };
  const custom = workflow("custom", { input: accepting }).step("noop", () => null);
  const short = workflow("short", { input: z.string().max(3) }).step("noop", () => null);
  return { gate, workflows: [echo, gated, custom, order, short] };
}

/** The app over this file's workflows; the gate holds every `gated` step. */
function setup(
  options: Omit<AppOptions, "engine"> = {},
  engineOptions: Partial<EngineOptions> = {},
): Promise<Harness> {
  return appHarness(testWorkflows(), options, { shutdownGraceMs: 1_000, ...engineOptions });
}

function post(
  app: Hono,
  path: string,
  body?: BodyInit,
  headers: Record<string, string> = { "content-type": "application/json" },
): Promise<Response> {
  return Promise.resolve(app.request(path, { method: "POST", body, headers }));
}

async function start(app: Hono, name: string, input: unknown, headers?: Record<string, string>) {
  const res = await post(app, `/workflows/${name}/runs`, JSON.stringify(input), {
    "content-type": "application/json",
    ...headers,
  });
  return await ok(res, 201, RunSummarySchema);
}

const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);

Deno.test("GET /healthz answers ok, without a token even when one is set", async () => {
  await using h = await setup({ token: TOKEN });
  assert.deepEqual(await ok(await h.app.request("/healthz"), 200, HealthSchema), {
    ok: true,
    status: "ok",
    storage: { status: "ok", freeBytes: null, minFreeBytes: 64 * 1024 * 1024 },
  });
  await fails(await h.app.request("/healthz?verbose=1"), 400, "invalid_input");
});

Deno.test("GET /workflows lists every served workflow with its steps and input schema", async () => {
  await using h = await setup();
  const { workflows } = await ok(await h.app.request("/workflows"), 200, WorkflowListSchema);
  assert.deepEqual(workflows.map((w) => w.name), ["echo", "gated", "custom", "order", "short"]);
  const echo = workflows[0];
  assert.equal(echo.description, "Doubles n");
  assert.deepEqual(echo.steps.map((s) => [s.name, s.needs]), [["double", []], [
    "report",
    ["double"],
  ]]);
  assert.equal(echo.steps[0].timeoutMs, 30_000);
  assert.equal(echo.steps[0].retry.maxAttempts, 3);
  assert.equal(echo.steps[0].concurrency, null);
  assert.deepEqual((echo.inputSchema.properties as Record<string, unknown>).n, { type: "number" });
  const orderInfo = workflows[3];
  assert.equal(orderInfo.steps.find((s) => s.name === "logistics")?.concurrency, 5);
  assert.equal(orderInfo.steps[0].timeoutMs, 2_000);
  // Input schemas are what clients send: `sku` has a default, so it is optional.
  assert.deepEqual(orderInfo.inputSchema.required, ["orderId", "amount"]);
  // A schema that is not zod cannot be rendered: it accepts anything.
  assert.deepEqual(workflows[2].inputSchema, {});
  await fails(await h.app.request("/workflows?all=1"), 400, "invalid_input");
});

Deno.test("GET /workflows/:name answers one workflow, 404 when unknown, 400 when malformed", async (t) => {
  await using h = await setup();
  const info = await ok(await h.app.request("/workflows/order"), 200, WorkflowInfoSchema);
  assert.equal(info.name, "order");
  assert.equal(info.steps.length, 4);
  await t.step("unknown", async () => {
    const error = await fails(await h.app.request("/workflows/nope"), 404, "not_found");
    assert.match(error.message, /nope/);
  });
  await t.step("malformed names and path traversal", async () => {
    for (const name of ["..%2F..%2Fetc%2Fpasswd", "a%20b", "x".repeat(65), "-lead", "%00"]) {
      const error = await fails(await h.app.request(`/workflows/${name}`), 400, "invalid_input");
      assert.deepEqual(error.issues?.[0].path, ["name"]);
    }
    await fails(await h.app.request("/workflows/../../etc/passwd"), 404, "not_found");
  });
});

Deno.test("POST /workflows/:name/runs creates a run with 201 and a Location header", async () => {
  await using h = await setup();
  const res = await post(h.app, "/workflows/echo/runs", JSON.stringify({ n: 21 }));
  const location = res.headers.get("location");
  const run = await ok(res, 201, RunSummarySchema);
  assert.equal(run.workflow, "echo");
  assert.ok(run.status === "pending" || run.status === "running");
  assert.ok(!Number.isNaN(Date.parse(run.createdAt)));
  assert.equal(location, `/runs/${run.id}`);
  const snapshot = await ok(await h.app.request(location!), 200, RunSnapshotSchema);
  assert.deepEqual(snapshot.input, { n: 21 });
});

Deno.test("POST /workflows/:name/runs parses the body as JSON whatever curl or fetch sent", async () => {
  await using h = await setup();
  const body = JSON.stringify({ n: 1 });
  const cases: [string, BodyInit, Record<string, string>][] = [
    ["curl -d default", body, { "content-type": "application/x-www-form-urlencoded" }],
    ["no content type", new TextEncoder().encode(body), {}],
    ["fetch string default", body, {}],
    ["JSON with charset", body, { "content-type": "application/json; charset=utf-8" }],
    ["a +json type", body, { "content-type": "application/vnd.weft+json" }],
  ];
  for (const [label, payload, headers] of cases) {
    const res = await post(h.app, "/workflows/echo/runs", payload, headers);
    assert.equal(res.status, 201, label);
    await res.body?.cancel();
  }
  const page = await ok(await h.app.request("/runs"), 200, RunPageSchema);
  assert.equal(page.runs.length, cases.length);
});

Deno.test("POST /workflows/:name/runs answers 200 with the first run for a reused Idempotency-Key", async () => {
  await using h = await setup();
  const first = await start(h.app, "echo", { n: 1 }, { "idempotency-key": "order-A1" });
  const res = await post(h.app, "/workflows/echo/runs", JSON.stringify({ n: 1 }), {
    "content-type": "application/json",
    "idempotency-key": "order-A1",
  });
  assert.equal(res.headers.get("location"), `/runs/${first.id}`);
  const again = await ok(res, 200, RunSummarySchema);
  assert.equal(again.id, first.id);
  assert.equal(again.idempotencyKey, "order-A1");
  const other = await start(h.app, "echo", { n: 1 }, { "idempotency-key": "order-A2" });
  assert.notEqual(other.id, first.id);
});

Deno.test("POST /workflows/:name/runs refuses bad requests with 4xx and creates no run", async (t) => {
  await using h = await setup();
  const send = (body: BodyInit, headers?: Record<string, string>, name = "echo") =>
    post(h.app, `/workflows/${name}/runs`, body, headers);

  await t.step("malformed JSON is 400 invalid_json", async () => {
    const error = await fails(await send("{bad"), 400, "invalid_json");
    assert.match(error.message, /not valid JSON/);
  });
  await t.step("an empty body is 400 invalid_json", async () => {
    await fails(await send(""), 400, "invalid_json");
  });
  await t.step("wrong content types are 400 invalid_json", async () => {
    for (const type of ["application/xml", "multipart/form-data; boundary=x", "image/png"]) {
      await fails(await send('{"n":1}', { "content-type": type }), 400, "invalid_json");
    }
  });
  await t.step("bytes that are not UTF-8 are 400 invalid_json", async () => {
    await fails(await send(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), 400, "invalid_json");
  });
  await t.step(`nesting deeper than ${MAX_JSON_DEPTH} is 400 invalid_json`, async () => {
    const error = await fails(
      await send(nested(MAX_JSON_DEPTH + 1), undefined, "custom"),
      400,
      "invalid_json",
    );
    assert.match(error.message, /deeper than 64/);
    // Exactly the limit is fine, and brackets inside strings do not count.
    for (const body of [nested(MAX_JSON_DEPTH), JSON.stringify({ s: "[{".repeat(100) })]) {
      const res = await send(body, undefined, "custom");
      assert.equal(res.status, 201);
      await res.body?.cancel();
    }
  });
  await t.step("input that fails the schema is 400 invalid_input with zod's issues", async () => {
    const error = await fails(await send(JSON.stringify({ n: "one" })), 400, "invalid_input");
    assert.equal(error.issues?.length, 1);
    assert.deepEqual(error.issues?.[0].path, ["n"]);
    assert.equal(error.issues?.[0].code, "invalid_type");
    const missing = await fails(await send("{}"), 400, "invalid_input");
    assert.deepEqual(missing.issues?.[0].path, ["n"]);
  });
  await t.step("an unknown workflow is 404, before the body is read", async () => {
    await fails(await send('{"n":1}', undefined, "nope"), 404, "not_found");
    await fails(await send("{bad", undefined, "nope"), 404, "not_found");
  });
  await t.step("a malformed workflow name is 400", async () => {
    await fails(await send('{"n":1}', undefined, "..%2Fetc"), 400, "invalid_input");
  });
  await t.step("a body over the limit is 413 before parsing, by Content-Length", async () => {
    const big = JSON.stringify({ n: 1, pad: "x".repeat(9000) });
    const error = await fails(
      await send(big, { "content-type": "application/json", "content-length": String(big.length) }),
      413,
      "payload_too_large",
    );
    assert.match(error.message, /8192/);
  });
  await t.step("a streamed body over the limit is 413", async () => {
    const chunk = new TextEncoder().encode("x".repeat(4096));
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 3; i++) controller.enqueue(chunk);
        controller.close();
      },
    });
    await fails(await send(stream), 413, "payload_too_large");
  });
  await t.step("input over the engine's size limit is 413", async () => {
    const error = await fails(
      await send(JSON.stringify({ big: "x".repeat(3000) }), undefined, "custom"),
      413,
      "payload_too_large",
    );
    assert.match(error.message, /2048/);
    // zod's own "too_big" on the whole input is invalid input, not a size limit.
    const tooLong = await fails(await send('"abcd"', undefined, "short"), 400, "invalid_input");
    assert.equal(tooLong.issues?.[0].code, "too_big");
  });
  await t.step("an Idempotency-Key over 512 characters is 400 invalid_input", async () => {
    const error = await fails(
      await send('{"n":1}', {
        "content-type": "application/json",
        "idempotency-key": "k".repeat(513),
      }),
      400,
      "invalid_input",
    );
    assert.deepEqual(error.issues?.[0].path, ["Idempotency-Key"]);
  });
  await t.step("a cross-origin browser request is 403", async () => {
    await fails(
      await send('{"n":1}', { origin: "https://evil.example" }),
      403,
      "forbidden",
    );
    await fails(await send('{"n":1}', { "sec-fetch-site": "cross-site" }), 403, "forbidden");
    await fails(await send('{"n":1}', { origin: "null" }), 403, "forbidden");
    const same = await send('{"n":1}', { origin: "http://localhost" });
    assert.equal(same.status, 201);
    await same.body?.cancel();
  });
  await t.step("only the three valid requests created runs", async () => {
    const page = await ok(await h.app.request("/runs"), 200, RunPageSchema);
    assert.deepEqual(page.runs.map((r) => r.workflow).sort(), ["custom", "custom", "echo"]);
  });
});

Deno.test("GET /runs/:id answers the run with every step's status and output", async (t) => {
  await using h = await setup();
  const { id } = await start(h.app, "echo", { n: 21 });
  await h.engine.result(id);
  const run = await ok(await h.app.request(`/runs/${id}`), 200, RunSnapshotSchema);
  assert.equal(run.status, "succeeded");
  assert.deepEqual(run.input, { n: 21 });
  assert.deepEqual(run.output, { result: 42 });
  assert.equal(run.steps.double.status, "succeeded");
  assert.equal(run.steps.double.attempts, 1);
  assert.equal(run.steps.double.output, 42);
  assert.ok(run.steps.report.startedAt && run.steps.report.finishedAt && run.finishedAt);
  await t.step("unknown id is 404", async () => {
    await fails(await h.app.request(`/runs/${UNKNOWN_ID}`), 404, "not_found");
  });
  await t.step(
    "malformed ids and path traversal are 404, saying what run ids look like",
    async () => {
      for (const bad of ["not-a-ulid", id.toLowerCase(), "..%2F..%2Fetc%2Fpasswd", `${id}X`]) {
        const error = await fails(await h.app.request(`/runs/${bad}`), 404, "not_found");
        assert.match(error.message, /not found: run ids are 26-character ULIDs$/);
      }
      const unknown = await fails(await h.app.request(`/runs/${UNKNOWN_ID}`), 404, "not_found");
      assert.equal(unknown.message, `Run '${UNKNOWN_ID}' not found`);
    },
  );
  await t.step("a query parameter is 400", async () => {
    await fails(await h.app.request(`/runs/${id}?fields=all`), 400, "invalid_input");
  });
});

Deno.test("GET /runs lists runs newest first, filters them and pages with a cursor", async (t) => {
  await using h = await setup();
  const echoIds: string[] = [];
  for (let n = 0; n < 3; n++) echoIds.push((await start(h.app, "echo", { n })).id);
  for (const id of echoIds) await h.engine.result(id);
  const gated = await start(h.app, "gated", null);

  await t.step("all runs, newest first", async () => {
    const page = await ok(await h.app.request("/runs"), 200, RunPageSchema);
    assert.deepEqual(page.runs.map((r) => r.id), [gated.id, ...echoIds.toReversed()]);
    assert.equal(page.nextCursor, null);
  });
  await t.step("by workflow and by status", async () => {
    const byWorkflow = await ok(await h.app.request("/runs?workflow=echo"), 200, RunPageSchema);
    assert.deepEqual(byWorkflow.runs.map((r) => r.id), echoIds.toReversed());
    const running = await ok(await h.app.request("/runs?status=running"), 200, RunPageSchema);
    assert.deepEqual(running.runs.map((r) => r.id), [gated.id]);
    const both = await ok(
      await h.app.request("/runs?workflow=echo&status=succeeded"),
      200,
      RunPageSchema,
    );
    assert.equal(both.runs.length, 3);
    const none = await ok(await h.app.request("/runs?workflow=ghost"), 200, RunPageSchema);
    assert.deepEqual(none, { runs: [], nextCursor: null });
  });
  await t.step("pages with limit and cursor", async () => {
    const first = await ok(await h.app.request("/runs?workflow=echo&limit=2"), 200, RunPageSchema);
    assert.deepEqual(first.runs.map((r) => r.id), echoIds.toReversed().slice(0, 2));
    assert.ok(first.nextCursor);
    const second = await ok(
      await h.app.request(
        `/runs?workflow=echo&limit=2&cursor=${encodeURIComponent(first.nextCursor)}`,
      ),
      200,
      RunPageSchema,
    );
    assert.deepEqual(second.runs.map((r) => r.id), [echoIds[0]]);
    assert.equal(second.nextCursor, null);
    // A cursor only fits the query it came from.
    const q = `/runs?status=running&cursor=${encodeURIComponent(first.nextCursor!)}`;
    await fails(await h.app.request(q), 400, "invalid_input");
  });
  await t.step("bad filters are 400 invalid_input", async () => {
    for (
      const query of [
        "status=done",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "limit=1.5",
        "limit=-1",
        "limit=1&limit=2",
        "workflow=a%20b",
        "workflow=",
        "cursor=",
        "cursor=garbage!",
        "sort=asc",
      ]
    ) {
      const error = await fails(await h.app.request(`/runs?${query}`), 400, "invalid_input");
      assert.ok(error.message.length > 0, query);
    }
  });
});

Deno.test("GET /runs/:id/wait answers as soon as the run ends", async () => {
  await using h = await setup();
  const { id } = await start(h.app, "gated", null);
  const waiting = h.app.request(`/runs/${id}/wait?timeoutMs=999999`);
  h.openGate();
  const run = await ok(await waiting, 200, RunSnapshotSchema);
  assert.equal(run.status, "succeeded");
  assert.equal(run.steps.block.output, "opened");
  // A terminal run answers at once.
  const again = await ok(await h.app.request(`/runs/${id}/wait`), 200, RunSnapshotSchema);
  assert.equal(again.status, "succeeded");
});

Deno.test("GET /runs/:id/wait answers the run as it is when the timeout passes", async (t) => {
  await using h = await setup();
  const { id } = await start(h.app, "gated", null);
  const began = performance.now();
  const run = await ok(
    await h.app.request(`/runs/${id}/wait?timeoutMs=20`),
    200,
    RunSnapshotSchema,
  );
  const elapsedMs = performance.now() - began;
  assert.ok(elapsedMs >= 15 && elapsedMs < 5_000, `waited ${elapsedMs} ms`);
  assert.equal(run.status, "running");
  assert.equal(run.steps.block.status, "running");
  const now = await ok(await h.app.request(`/runs/${id}/wait?timeoutMs=0`), 200, RunSnapshotSchema);
  assert.equal(now.status, "running");
  await t.step("bad timeouts, unknown parameters and unknown runs", async () => {
    for (const q of ["timeoutMs=-1", "timeoutMs=abc", "timeoutMs=1.5", "timeoutMs=", "wait=1"]) {
      await fails(await h.app.request(`/runs/${id}/wait?${q}`), 400, "invalid_input");
    }
    await fails(await h.app.request(`/runs/${UNKNOWN_ID}/wait`), 404, "not_found");
    await fails(await h.app.request(`/runs/nope/wait`), 404, "not_found");
  });
});

Deno.test("GET /runs/:id/wait returns at once when the server shuts down", async () => {
  const shutdown = new AbortController();
  await using h = await setup({ shutdownSignal: shutdown.signal });
  const { id } = await start(h.app, "gated", null);
  const began = performance.now();
  const waiting = h.app.request(`/runs/${id}/wait`); // 30 s by default
  shutdown.abort();
  const run = await ok(await waiting, 200, RunSnapshotSchema);
  assert.equal(run.status, "running");
  assert.ok(performance.now() - began < 5_000);
});

Deno.test("POST /runs/:id/cancel answers 202, then 409 once finished; 404 when unknown", async (t) => {
  await using h = await setup();
  const { id } = await start(h.app, "gated", null);
  const run = await ok(await post(h.app, `/runs/${id}/cancel`), 202, RunSnapshotSchema);
  assert.equal(run.status, "cancelled");
  assert.equal(run.steps.block.status, "cancelled");
  assert.equal(run.error?.name, "RunCancelledError");
  const stored = await ok(await h.app.request(`/runs/${id}`), 200, RunSnapshotSchema);
  assert.equal(stored.status, "cancelled");
  await t.step("a finished run is 409 conflict", async () => {
    await fails(await post(h.app, `/runs/${id}/cancel`), 409, "conflict");
    const done = await start(h.app, "echo", { n: 1 });
    await h.engine.result(done.id);
    await fails(await post(h.app, `/runs/${done.id}/cancel`), 409, "conflict");
  });
  await t.step("unknown and malformed ids", async () => {
    await fails(await post(h.app, `/runs/${UNKNOWN_ID}/cancel`), 404, "not_found");
    await fails(await post(h.app, `/runs/..%2F${id}/cancel`), 404, "not_found");
  });
  await t.step("a cross-origin browser request is 403 and cancels nothing", async () => {
    const live = await start(h.app, "gated", null);
    await fails(
      await post(h.app, `/runs/${live.id}/cancel`, undefined, { origin: "https://evil.example" }),
      403,
      "forbidden",
    );
    assert.equal((await h.engine.get(live.id)).status, "running");
  });
});

Deno.test("wait and cancel answer 409 for a live run of a workflow this server does not serve", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const ghost = workflow("ghost").step("hang", ({ signal }) =>
      new Promise((_, reject) => {
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      }));
    const before = await createEngine({ kv, workflows: [ghost] });
    const { id } = await before.start("ghost", null);
    await before.close({ graceMs: 0 });

    const { gate, workflows } = testWorkflows();
    gate.resolve();
    const engine = await createEngine({ kv, workflows });
    try {
      const app = createApp({ engine });
      const run = await ok(await app.request(`/runs/${id}`), 200, RunSnapshotSchema);
      assert.equal(run.workflow, "ghost");
      assert.equal(run.status, "running");
      const waited = await fails(await app.request(`/runs/${id}/wait`), 409, "conflict");
      assert.match(waited.message, /does not serve its workflow 'ghost'/);
      await fails(await post(app, `/runs/${id}/cancel`), 409, "conflict");
    } finally {
      await engine.close();
    }
  } finally {
    kv.close();
  }
});

Deno.test("every route but /healthz requires the bearer token when one is set", async (t) => {
  await using h = await setup({ token: TOKEN });
  const { id } = await h.engine.start("echo", { n: 1 });
  await h.engine.result(id);
  const routes: [string, string][] = [
    ["GET", "/workflows"],
    ["GET", "/workflows/echo"],
    ["POST", "/workflows/echo/runs"],
    ["GET", `/runs/${id}`],
    ["GET", "/runs"],
    ["GET", `/runs/${id}/wait`],
    ["POST", `/runs/${id}/cancel`],
    ["GET", "/openapi.json"],
    ["GET", "/no-such-route"],
  ];
  const request = (method: string, path: string, authorization?: string) =>
    h.app.request(path, {
      method,
      headers: authorization ? { authorization } : {},
      body: method === "POST" ? '{"n":2}' : undefined,
    });
  for (const [method, path] of routes) {
    await t.step(`${method} ${path}`, async () => {
      for (
        const authorization of [
          undefined,
          "Bearer wrong",
          `Bearer ${TOKEN}x`,
          `Bearer ${TOKEN.slice(0, -1)}`,
          `Basic ${btoa(`u:${TOKEN}`)}`,
          TOKEN,
        ]
      ) {
        const res = await request(method, path, authorization);
        await fails(res, 401, "unauthorized");
        assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="weft"');
      }
      const res = await request(method, path, `Bearer ${TOKEN}`);
      assert.notEqual(res.status, 401);
      await res.body?.cancel();
    });
  }
  const lower = await request("GET", "/workflows", `bearer ${TOKEN}`);
  assert.equal(lower.status, 200);
  await lower.body?.cancel();
});

function withOverrides(engine: Engine, overrides: Partial<Engine>): Engine {
  return {
    workflows: engine.workflows,
    workerId: engine.workerId,
    start: (workflow, input, options) => engine.start(workflow, input, options),
    get: (runId) => engine.get(runId),
    result: (runId, options) => engine.result(runId, options),
    cancel: (runId, options) => engine.cancel(runId, options),
    signal: (runId, event, payload, options) => engine.signal(runId, event, payload, options),
    list: (options) => engine.list(options),
    history: (runId) => engine.history(runId),
    subscribe: (listener) => engine.subscribe(listener),
    stats: () => engine.stats(),
    idle: () => engine.idle(),
    close: (options) => engine.close(options),
    ...overrides,
  };
}

Deno.test("unexpected errors answer 500 internal, with details only in debug mode", async (t) => {
  await using h = await setup();
  const broken = withOverrides(h.engine, {
    get: () => Promise.reject(new TypeError("disk on fire at /secret/path")),
  });
  await t.step("without debug: no message, no stack, reported once", async () => {
    const reported: unknown[] = [];
    const app = createApp({ engine: broken, onUnexpectedError: (e) => reported.push(e) });
    const res = await app.request(`/runs/${UNKNOWN_ID}`);
    const text = await res.clone().text();
    const error = await fails(res, 500, "internal");
    assert.equal(error.message, "Internal server error");
    assert.doesNotMatch(text, /secret|stack|TypeError/);
    assert.equal(reported.length, 1);
    assert.ok(reported[0] instanceof TypeError);
  });
  await t.step("with debug: the message and the stack", async () => {
    const app = createApp({ engine: broken, debug: true, onUnexpectedError: () => {} });
    const res = await app.request(`/runs/${UNKNOWN_ID}`);
    assert.equal(res.status, 500);
    const { error } = await res.json();
    assert.equal(error.code, "internal");
    assert.match(error.message, /TypeError: disk on fire/);
    assert.match(error.stack, /disk on fire/);
  });
});

Deno.test("a closed engine answers 503 unavailable", async () => {
  await using h = await setup();
  await h.engine.close();
  await fails(await post(h.app, "/workflows/echo/runs", '{"n":1}'), 503, "unavailable");
});

Deno.test("unknown routes and methods answer 404 in the error shape", async () => {
  await using h = await setup();
  await fails(await h.app.request("/nope"), 404, "not_found");
  await fails(await h.app.request("/runs", { method: "DELETE" }), 404, "not_found");
  await fails(await h.app.request("/healthz/"), 404, "not_found");
});

Deno.test("mount adds routes behind the same token, body limit and error mapping", async () => {
  await using h = await setup({
    token: TOKEN,
    mount: (app) => {
      app.get("/extra", (c) => c.json({ extra: true }));
      app.post("/extra", async (c) => c.json({ size: (await c.req.text()).length }));
      app.get("/extra/boom", () => {
        throw new RangeError("boom");
      });
    },
    onUnexpectedError: () => {},
  });
  const auth = { authorization: `Bearer ${TOKEN}` };
  await fails(await h.app.request("/extra"), 401, "unauthorized");
  assert.deepEqual(await (await h.app.request("/extra", { headers: auth })).json(), {
    extra: true,
  });
  await fails(
    await h.app.request("/extra", { method: "POST", headers: auth, body: "x".repeat(9000) }),
    413,
    "payload_too_large",
  );
  await fails(await h.app.request("/extra/boom", { headers: auth }), 500, "internal");
});

Deno.test("GET /openapi.json is a valid OpenAPI 3.1 document of every route", async (t) => {
  for (const token of [undefined, TOKEN]) {
    await t.step(token ? "with a token" : "without a token", async () => {
      await using h = await setup({ token });
      const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
      const res = await h.app.request("/openapi.json", { headers });
      assert.equal(res.status, 200);
      const doc = await res.json();

      const validator = new Validator();
      const result = await validator.validate(doc);
      assert.ok(result.valid, JSON.stringify(result.errors, null, 2));
      assert.equal(validator.version, "3.1");

      const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>)
        .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
        .sort();
      // The issue's endpoint table, row by row.
      assert.deepEqual(
        documented,
        [
          "GET /healthz",
          "GET /workflows",
          "GET /workflows/{name}",
          "POST /workflows/{name}/runs",
          "POST /runs/{id}/events/{event}",
          "GET /runs/{id}",
          "GET /runs",
          "GET /runs/{id}/wait",
          "POST /runs/{id}/cancel",
          "GET /openapi.json",
        ].sort(),
      );
      // And exactly the routes the app serves, but the browser sign-in form,
      // which is HTML for the dashboard rather than part of the JSON API.
      const signIn = [LOGIN_PATH, LOGOUT_PATH];
      const served = h.app.routes
        .filter((r) => r.method !== "ALL" && !signIn.includes(r.path))
        .map((r) => `${r.method} ${r.path.replace(/:([A-Za-z0-9_]+)/g, "{$1}")}`)
        .sort();
      assert.deepEqual(served, documented);

      // Every $ref resolves.
      const refs = JSON.stringify(doc).match(/"\$ref":"[^"]+"/g) ?? [];
      assert.ok(refs.length > 0);
      for (const ref of refs) {
        const target = ref.slice(8, -1).replace(/^#\//, "").split("/");
        let node = doc;
        for (const part of target) node = node?.[part];
        assert.ok(node, `unresolved ${ref}`);
      }

      const ops = doc.paths as Record<string, Record<string, Record<string, unknown>>>;
      const startOp = ops["/workflows/{name}/runs"].post;
      assert.deepEqual(
        Object.keys(startOp.responses as object).sort(),
        ["200", "201", "400", "403", "404", "413", "503", ...(token ? ["401"] : [])].sort(),
      );
      assert.ok(startOp.requestBody);
      const listParams = (ops["/runs"].get.parameters as { name: string; in: string }[])
        .map((p) => `${p.in}:${p.name}`);
      assert.deepEqual(listParams, [
        "query:workflow",
        "query:status",
        "query:limit",
        "query:cursor",
      ]);
      const statusParam = (ops["/runs"].get.parameters as { schema: { enum?: string[] } }[])[1];
      assert.deepEqual(statusParam.schema.enum, [
        "pending",
        "running",
        "succeeded",
        "failed",
        "cancelled",
        "compensating",
      ]);
      assert.deepEqual(ops["/healthz"].get.security, []);
      if (token) {
        assert.deepEqual(doc.components.securitySchemes.bearer, { type: "http", scheme: "bearer" });
        assert.deepEqual(ops["/runs"].get.security, [{ bearer: [] }]);
      } else {
        assert.equal(doc.components.securitySchemes, undefined);
        assert.deepEqual(ops["/runs"].get.security, []);
      }
      const stepStatus = doc.components.schemas.StepSnapshot.properties.status.enum;
      assert.deepEqual(stepStatus, [
        "pending",
        "running",
        "waiting",
        "sleeping",
        "awaiting",
        "succeeded",
        "failed",
        "skipped",
        "cancelled",
      ]);
      // The event endpoint documents the payload schema of every event served.
      const eventOp = ops["/runs/{id}/events/{event}"].post as {
        requestBody: { content: { "application/json": { schema: { anyOf?: unknown[] } } } };
      };
      assert.ok(eventOp.requestBody.content["application/json"].schema);
    });
  }
});

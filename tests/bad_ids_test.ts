import assert from "node:assert/strict";
import { createApp } from "../http/app.ts";
import { mountObservability } from "../observability/mod.ts";
import { order } from "../workflows/order.ts";
import { testEngine } from "./_helpers.ts";

const WELL_FORMED = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
const MALFORMED = ["X".repeat(3_000), "does-not-exist", WELL_FORMED.toLowerCase(), "..%2Fetc"];
const ULID_HINT = "run ids are 26-character ULIDs";

/** Every route that names a run, as `[method, path of the id]`. */
const RUN_ROUTES: [string, (id: string) => string][] = [
  ["GET", (id) => `/runs/${id}`],
  ["GET", (id) => `/runs/${id}/wait`],
  ["GET", (id) => `/runs/${id}/wait?timeoutMs=0`],
  ["POST", (id) => `/runs/${id}/cancel`],
  ["GET", (id) => `/runs/${id}/events`],
  ["GET", (id) => `/ui/runs/${id}`],
  ["GET", (id) => `/ui/runs/${id}/fragment`],
  ["POST", (id) => `/ui/runs/${id}/cancel`],
];

function appOf(te: Awaited<ReturnType<typeof testEngine>>, unexpected: unknown[]) {
  let observability: { close(): void } | undefined;
  const app = createApp({
    engine: te.engine,
    onUnexpectedError: (e) => unexpected.push(e),
    mount: (a) => {
      observability = mountObservability(a, { engine: te.engine });
    },
  });
  return { app, close: () => observability?.close() };
}

Deno.test("every run route answers an unknown id, well-formed or not, with 404 not_found", async (t) => {
  await using te = await testEngine([order]);
  const unexpected: unknown[] = [];
  const { app, close } = appOf(te, unexpected);
  try {
    for (const [method, path] of RUN_ROUTES) {
      const dashboard = path("x").startsWith("/ui/");
      await t.step(`${method} ${path(":id")}`, async () => {
        for (const id of [WELL_FORMED, ...MALFORMED]) {
          const init = method === "POST"
            ? { method, headers: { origin: "http://localhost" } }
            : undefined;
          const res = await app.request(`http://localhost${path(id)}`, init);
          const text = await res.text();
          const what = `${method} ${path(id).slice(0, 50)}`;
          assert.equal(res.status, 404, `${what} answered ${res.status}: ${text.slice(0, 200)}`);
          if (path(id).endsWith("/fragment")) continue; // an empty fragment: the page reloads
          const malformed = id !== WELL_FORMED;
          if (dashboard) {
            assert.match(text, /Run not found/, what);
            assert.equal(text.includes(ULID_HINT), malformed, what);
            continue;
          }
          const { error } = JSON.parse(text);
          assert.equal(error.code, "not_found", what);
          assert.equal(error.message.endsWith(ULID_HINT), malformed, `${what}: ${error.message}`);
          // A 3,000-character id is not echoed back whole.
          assert.ok(error.message.length < 200, what);
        }
      });
    }
    assert.deepEqual(unexpected, []);
  } finally {
    close();
  }
});

Deno.test("every route answers an oversized or malformed name or query with a 4xx, never a 500", async () => {
  await using te = await testEngine([order]);
  const unexpected: unknown[] = [];
  const { app, close } = appOf(te, unexpected);
  try {
    const long = "X".repeat(3_000);
    const requests: string[] = [
      `/?workflow=${long}`,
      `/?status=nope`,
      `/runs?workflow=${long}`,
      `/workflows/${long}`,
      `/runs/${WELL_FORMED}/wait?timeoutMs=abc`,
    ];
    for (const path of requests) {
      const res = await app.request(path);
      await res.body?.cancel();
      assert.ok(
        res.status >= 400 && res.status < 500,
        `${path.slice(0, 60)}… answered ${res.status}`,
      );
    }
    assert.deepEqual(unexpected, []);
  } finally {
    close();
  }
});

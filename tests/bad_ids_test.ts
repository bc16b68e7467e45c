import assert from "node:assert/strict";
import { createApp } from "../http/app.ts";
import { mountObservability } from "../observability/mod.ts";
import { order } from "../workflows/order.ts";
import { testEngine } from "./_helpers.ts";

Deno.test("every route answers an oversized or malformed id or name with a 4xx, never a 500", async () => {
  await using te = await testEngine([order]);
  const unexpected: unknown[] = [];
  let observability: { close(): void } | undefined;
  const app = createApp({
    engine: te.engine,
    onUnexpectedError: (e) => unexpected.push(e),
    mount: (a) => {
      observability = mountObservability(a, { engine: te.engine });
    },
  });
  try {
    const long = "X".repeat(3_000);
    const sameOrigin = { headers: { origin: "http://localhost" } };
    const requests: [string, RequestInit?][] = [
      [`/runs/${long}`],
      [`/runs/${long}/events`],
      [`/runs/${long}/wait`],
      [`/ui/runs/${long}`],
      [`/ui/runs/${long}/fragment`],
      [`/?workflow=${long}`],
      [`/?status=nope`],
      [`/runs?workflow=${long}`],
      [`/workflows/${long}`],
      [`/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/events`],
      [`/ui/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV`],
      [`http://localhost/ui/runs/${long}/cancel`, { method: "POST", ...sameOrigin }],
      [`http://localhost/runs/${long}/cancel`, { method: "POST" }],
    ];
    for (const [path, init] of requests) {
      const res = await app.request(path, init);
      await res.body?.cancel();
      assert.ok(
        res.status >= 400 && res.status < 500,
        `${init?.method ?? "GET"} ${path.slice(0, 60)}… answered ${res.status}`,
      );
    }
    assert.deepEqual(unexpected, []);
  } finally {
    observability?.close();
  }
});

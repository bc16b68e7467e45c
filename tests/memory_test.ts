// What the engine holds in memory under a burst of starts, counted (not timed).
import assert from "node:assert/strict";
import { createEngine, FakeClock, workflow } from "../mod.ts";
import { deferred, waitFor } from "./_helpers.ts";

/** A KV handle whose commits wait, once `closed` is set, for `open` to resolve; counts them. */
function gatedKv(kv: Deno.Kv) {
  const open = deferred();
  const state = { commits: 0, closed: false, open };
  const opHandler: ProxyHandler<Deno.AtomicOperation> = {
    get(op, prop, receiver) {
      if (prop === "commit") {
        return async () => {
          state.commits++;
          if (state.closed) await open.promise;
          return await op.commit();
        };
      }
      const value = Reflect.get(op, prop);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        value.apply(op, args);
        return receiver;
      };
    },
  };
  const proxy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") return () => new Proxy(target.atomic(), opHandler);
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv: proxy, state };
}

Deno.test("engine start admits a bounded number of runs while earlier ones are not committed", async () => {
  using inner = await Deno.openKv(":memory:");
  const { kv, state } = gatedKv(inner);
  const wf = workflow("burst").step("noop", () => 1);
  // Starts between admission and commit: as many as the engine has slots (within 50..400).
  const slots = 60;
  const engine = await createEngine({
    kv,
    workflows: [wf],
    clock: new FakeClock(),
    maxConcurrentSteps: slots,
  });
  try {
    // Every commit from here on waits; the engine's own start-up writes went through.
    state.closed = true;
    const before = state.commits;
    const n = 2_000;
    const starts = Array.from({ length: n }, (_, i) => engine.start("burst", { i }));
    await waitFor(() => state.commits > before, "the first commit of the burst");
    for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 0));
    const held = engine.stats().activeRuns;
    assert.ok(held > 0, "some runs were admitted");
    assert.ok(held <= slots, `${held} runs of ${n} are held before any of them is committed`);
    state.open.resolve();
    const ids = new Set((await Promise.all(starts)).map((r) => r.id));
    assert.equal(ids.size, n, "every start went through, each with its own run");
    await waitFor(() => engine.stats().activeRuns === 0, "every run to end", 20_000);
  } finally {
    state.open.resolve();
    await engine.close({ graceMs: 0 });
  }
});

import assert from "node:assert/strict";
import { Hono } from "hono";
import type { Registry } from "prom-client";
import { z } from "zod";
import { NonRetryableError, workflow } from "../mod.ts";
import { createApp } from "../http/app.ts";
import { createMetrics, mountObservability, type Observability } from "../observability/mod.ts";
import { deferred, testEngine, waitFor } from "./_helpers.ts";

/** The value of one series, or 0 when it has never been set. */
async function sample(
  registry: Registry,
  name: string,
  labels: Record<string, string> = {},
  series = name,
): Promise<number> {
  const metric = registry.getSingleMetric(name);
  assert.ok(metric, `metric ${name} is registered`);
  const { values } = await metric.get();
  const match = values.find((v) =>
    (v as { metricName?: string }).metricName === undefined
      ? series === name && sameLabels(v.labels, labels)
      : (v as { metricName?: string }).metricName === series && sameLabels(v.labels, labels)
  );
  return match?.value ?? 0;
}

function sameLabels(actual: Record<string, unknown>, wanted: Record<string, string>): boolean {
  const keys = Object.keys(actual).filter((k) => k !== "le");
  return keys.length === Object.keys(wanted).length && keys.every((k) => actual[k] === wanted[k]);
}

const noJitter = { jitter: 0, initialDelayMs: 100 };

Deno.test("metrics count runs and step attempts by outcome", async (t) => {
  const hold = deferred();
  const mix = workflow("mix", { input: z.object({}) })
    .step("ok", () => 1)
    .step("flaky", { retry: { ...noJitter, maxAttempts: 2 } }, ({ attempt }) => {
      if (attempt === 1) throw new Error("first attempt fails");
      return 2;
    });
  const doomed = workflow("doomed", { input: z.object({}) })
    .step("boom", () => {
      throw new NonRetryableError("no");
    });
  const slow = workflow("slow", { input: z.object({}) })
    .step(
      "hang",
      { timeoutMs: 50, retry: { ...noJitter, maxAttempts: 2 } },
      ({ signal }) =>
        new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason))),
    );
  const held = workflow("held", { input: z.object({}) })
    .step("wait", async () => await hold.promise);
  await using te = await testEngine([mix, doomed, slow, held]);
  const metrics = createMetrics(te.engine);
  const { registry } = metrics;
  const attempts = (workflow: string, step: string, outcome: string) =>
    sample(registry, "weft_step_attempts_total", { workflow, step, outcome });

  await t.step("a retried step and a success", async () => {
    const run = await te.engine.start("mix", {});
    await waitFor(async () => (await te.engine.get(run.id)).steps.flaky.status === "waiting");
    await waitFor(() => te.clock.pendingTimers > 0, "the retry timer");
    assert.equal(await sample(registry, "weft_retries_waiting"), 1);
    te.clock.tick(100);
    assert.equal((await te.engine.result(run.id)).status, "succeeded");
    assert.equal(await sample(registry, "weft_runs_started_total", { workflow: "mix" }), 1);
    assert.equal(
      await sample(registry, "weft_runs_finished_total", { workflow: "mix", outcome: "succeeded" }),
      1,
    );
    assert.equal(await attempts("mix", "ok", "succeeded"), 1);
    assert.equal(await attempts("mix", "flaky", "retried"), 1);
    assert.equal(await attempts("mix", "flaky", "succeeded"), 1);
    assert.equal(await sample(registry, "weft_retries_waiting"), 0);
  });

  await t.step("a non-retryable failure", async () => {
    const run = await te.engine.start("doomed", {});
    assert.equal((await te.engine.result(run.id)).status, "failed");
    assert.equal(await attempts("doomed", "boom", "failed"), 1);
    assert.equal(
      await sample(registry, "weft_runs_finished_total", { workflow: "doomed", outcome: "failed" }),
      1,
    );
  });

  await t.step("timeouts, retried then final", async () => {
    const run = await te.engine.start("slow", {});
    const attemptIs = async (n: number, status: string) => {
      const s = (await te.engine.get(run.id)).steps.hang;
      return s.attempts === n && s.status === status;
    };
    await waitFor(() => attemptIs(1, "running"));
    te.clock.tick(50);
    await waitFor(() => attemptIs(1, "waiting"));
    await waitFor(() => te.clock.pendingTimers > 0, "the retry timer");
    te.clock.tick(100);
    await waitFor(() => attemptIs(2, "running"));
    await waitFor(() => te.clock.pendingTimers > 0, "the timeout timer");
    te.clock.tick(50);
    assert.equal((await te.engine.result(run.id)).status, "failed");
    assert.equal(await attempts("slow", "hang", "retried"), 1);
    assert.equal(await attempts("slow", "hang", "timed_out"), 1);
    assert.equal(await attempts("slow", "hang", "failed"), 0);
    assert.equal(
      await sample(registry, "weft_step_timeouts_total", { workflow: "slow", step: "hang" }),
      2,
    );
    const labels = { workflow: "slow", step: "hang", outcome: "timed_out" };
    assert.equal(
      await sample(
        registry,
        "weft_step_duration_seconds",
        labels,
        "weft_step_duration_seconds_sum",
      ),
      0.05,
    );
  });

  await t.step("a cancelled run and its running attempt", async () => {
    const run = await te.engine.start("held", {});
    await waitFor(async () => (await te.engine.get(run.id)).steps.wait.status === "running");
    assert.equal(await sample(registry, "weft_runs_in_flight"), 1);
    assert.equal(await sample(registry, "weft_steps_in_flight"), 1);
    await te.engine.cancel(run.id);
    assert.equal(await attempts("held", "wait", "cancelled"), 1);
    assert.equal(
      await sample(registry, "weft_runs_finished_total", {
        workflow: "held",
        outcome: "cancelled",
      }),
      1,
    );
    assert.equal(await sample(registry, "weft_runs_in_flight"), 0);
  });

  await t.step("close stops counting", async () => {
    metrics.close();
    await te.engine.result((await te.engine.start("doomed", {})).id);
    assert.equal(await sample(registry, "weft_runs_started_total", { workflow: "doomed" }), 1);
  });
});

Deno.test("metrics measure queue wait for a slot and attempt durations on the clock", async () => {
  const gates = [deferred(), deferred()];
  let n = 0;
  const capped = workflow("capped", { input: z.object({}) })
    .step("a", { concurrency: 1 }, async () => await gates[n++].promise)
    .step("b", { needs: ["a"] }, () => "after a");
  await using te = await testEngine([capped]);
  const { registry, close } = createMetrics(te.engine);
  const first = await te.engine.start("capped", {});
  const second = await te.engine.start("capped", {});
  await waitFor(() => n === 1, "the first attempt of a");
  assert.equal(await sample(registry, "weft_steps_queued"), 1);
  assert.equal(await sample(registry, "weft_steps_in_flight"), 1);
  assert.equal(await sample(registry, "weft_concurrency_in_use"), 1);
  assert.equal(await sample(registry, "weft_concurrency_limit"), 100);
  te.clock.tick(500);
  gates[0].resolve();
  await waitFor(() => n === 2, "the second run's a to get the slot");
  // b starts once a's success is durable; let it, before the clock moves on.
  await te.engine.result(first.id);
  te.clock.tick(250);
  gates[1].resolve();
  await te.engine.result(second.id);
  const wait = (step: string, series: string) =>
    sample(registry, "weft_step_queue_wait_seconds", { workflow: "capped", step }, series);
  // a: 0 s for the first run, 0.5 s for the second (it waited for the slot).
  assert.equal(await wait("a", "weft_step_queue_wait_seconds_count"), 2);
  assert.equal(await wait("a", "weft_step_queue_wait_seconds_sum"), 0.5);
  // b started as soon as a's success was committed, with no time passing on the clock.
  assert.equal(await wait("b", "weft_step_queue_wait_seconds_count"), 2);
  assert.equal(await wait("b", "weft_step_queue_wait_seconds_sum"), 0);
  const duration = (series: string) =>
    sample(
      registry,
      "weft_step_duration_seconds",
      { workflow: "capped", step: "a", outcome: "succeeded" },
      series,
    );
  assert.equal(await duration("weft_step_duration_seconds_count"), 2);
  assert.equal(await duration("weft_step_duration_seconds_sum"), 0.75);
  assert.ok((await sample(registry, "weft_kv_commits_total")) > 0);
  close();
});

Deno.test("metrics show the workers on the KV: others seen, claims, fences and reaped leases", async () => {
  const wf = workflow("quick", { input: z.object({}) }).step("only", () => 1);
  await using te = await testEngine([wf]);
  // The engine's counters are tested where they are made (tests/leases_test.ts); here, that
  // each reaches its series.
  const counters = { otherWorkers: 2, claims: 11, fenced: 1, fencedOthers: 3, reaped: 7 };
  const { registry, close } = createMetrics({
    workflows: te.engine.workflows,
    subscribe: (fn) => te.engine.subscribe(fn),
    stats: () => ({ ...te.engine.stats(), ...counters }),
  });
  assert.equal(await sample(registry, "weft_workers_others"), 2);
  assert.equal(await sample(registry, "weft_runs_claimed_total"), 11);
  assert.equal(await sample(registry, "weft_worker_fenced_total"), 1);
  assert.equal(await sample(registry, "weft_workers_declared_dead_total"), 3);
  assert.equal(await sample(registry, "weft_leases_reaped_total"), 7);
  counters.claims = 12;
  assert.equal(await sample(registry, "weft_runs_claimed_total"), 12, "read at each scrape");
  close();
});

Deno.test("GET /metrics serves the Prometheus text format", async () => {
  const wf = workflow("quick", { input: z.object({}) }).step("only", () => 1);
  await using te = await testEngine([wf]);
  const app = new Hono();
  const observability = mountObservability(app, { engine: te.engine, dashboard: false });
  await te.engine.result((await te.engine.start("quick", {})).id);
  const res = await app.request("/metrics");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.match(text, /^# TYPE weft_runs_started_total counter$/m);
  assert.match(text, /^weft_runs_started_total\{workflow="quick"\} 1$/m);
  assert.match(text, /^weft_runs_finished_total\{workflow="quick",outcome="succeeded"\} 1$/m);
  assert.match(
    text,
    /^weft_step_attempts_total\{workflow="quick",step="only",outcome="succeeded"\} 1$/m,
  );
  assert.match(
    text,
    /^weft_step_duration_seconds_count\{workflow="quick",step="only",outcome="succeeded"\} 1$/m,
  );
  assert.match(text, /^weft_step_queue_wait_seconds_count\{workflow="quick",step="only"\} 1$/m);
  for (
    const gauge of [
      "weft_runs_in_flight",
      "weft_steps_in_flight",
      "weft_steps_queued",
      "weft_retries_waiting",
      "weft_concurrency_in_use",
      "weft_concurrency_limit",
    ]
  ) {
    assert.match(text, new RegExp(`^# TYPE ${gauge} gauge$`, "m"));
  }
  // No process-wide default registry: a second engine's metrics are separate.
  const other = createMetrics(te.engine);
  assert.doesNotMatch(await other.registry.metrics(), /weft_runs_started_total\{/);
  other.close();
  observability.close();
});

Deno.test("ops/grafana.json queries only metrics that the registry exposes", async () => {
  const dashboard = JSON.parse(
    await Deno.readTextFile(new URL("../ops/grafana.json", import.meta.url)),
  );
  const wf = workflow("quick", { input: z.object({}) }).step("only", () => 1);
  await using te = await testEngine([wf]);
  const { registry, close } = createMetrics(te.engine);
  const known = new Set<string>();
  for (const m of await registry.getMetricsAsJSON()) {
    known.add(m.name);
    if (String(m.type) === "histogram") {
      for (const s of ["_bucket", "_sum", "_count"]) known.add(m.name + s);
    }
  }
  close();
  const exprs: string[] = [];
  const walk = (node: unknown) => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (node && typeof node === "object") {
      for (const [k, v] of Object.entries(node)) {
        if (k === "expr" && typeof v === "string") exprs.push(v);
        else walk(v);
      }
    }
  };
  walk(dashboard);
  assert.ok(exprs.length >= 8, "the dashboard has panels with queries");
  const used = new Set<string>();
  for (const expr of exprs) for (const m of expr.match(/weft_[a-z_]+/g) ?? []) used.add(m);
  for (const name of used) assert.ok(known.has(name), `${name} is a metric Weft exposes`);
  for (const m of await registry.getMetricsAsJSON()) {
    assert.ok(
      [...used].some((u) => u.startsWith(m.name)),
      `the dashboard shows ${m.name}`,
    );
  }
});

Deno.test("GET /metrics mounted in the HTTP app needs the same bearer token", async () => {
  const wf = workflow("quick", { input: z.object({}) }).step("only", () => 1);
  await using te = await testEngine([wf]);
  let observability: Observability | undefined;
  const app = createApp({
    engine: te.engine,
    token: "s3cret",
    mount: (app) => observability = mountObservability(app, { engine: te.engine }),
  });
  const anonymous = await app.request("/metrics");
  assert.equal(anonymous.status, 401);
  assert.equal((await anonymous.json()).error.code, "unauthorized");
  const res = await app.request("/metrics", { headers: { authorization: "Bearer s3cret" } });
  assert.equal(res.status, 200);
  assert.match(await res.text(), /^# TYPE weft_runs_started_total counter$/m);
  observability?.close();
});

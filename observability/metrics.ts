/**
 * Prometheus metrics of an engine, derived from its committed transitions
 * (`engine.subscribe`) and its live counters (`engine.stats()`), kept in a
 * registry of their own rather than prom-client's global one.
 *
 * | metric | type | labels |
 * |---|---|---|
 * | `weft_runs_started_total` | counter | `workflow` |
 * | `weft_runs_finished_total` | counter | `workflow`, `outcome` (succeeded, failed, cancelled) |
 * | `weft_step_attempts_total` | counter | `workflow`, `step`, `outcome` (succeeded, failed, timed_out, retried, cancelled) |
 * | `weft_step_timeouts_total` | counter | `workflow`, `step` |
 * | `weft_step_duration_seconds` | histogram | `workflow`, `step`, `outcome` |
 * | `weft_step_queue_wait_seconds` | histogram | `workflow`, `step` |
 * | `weft_runs_in_flight` | gauge | |
 * | `weft_steps_in_flight` | gauge | |
 * | `weft_steps_queued` | gauge | |
 * | `weft_retries_waiting` | gauge | |
 * | `weft_concurrency_in_use` | gauge | |
 * | `weft_concurrency_limit` | gauge | |
 * | `weft_kv_commits_total` | counter | |
 * | `weft_storage_degraded` | gauge | |
 * | `weft_storage_free_bytes` | gauge | |
 *
 * @module
 */
import { Hono } from "hono";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Engine, EngineEvent } from "../mod.ts";

/** How a step attempt ended, as the `outcome` label of step metrics. */
export const AttemptOutcome = {
  /** Its output was committed. */
  Succeeded: "succeeded",
  /** It failed (or timed out) and another attempt is scheduled. */
  Retried: "retried",
  /** It failed for good, other than by a timeout. */
  Failed: "failed",
  /** It timed out and was the last attempt allowed. */
  TimedOut: "timed_out",
  /** The run was cancelled or failed elsewhere while it ran. */
  Cancelled: "cancelled",
} as const;
/** One of the {@linkcode AttemptOutcome} values. */
export type AttemptOutcome = typeof AttemptOutcome[keyof typeof AttemptOutcome];

/** Default buckets of `weft_step_duration_seconds`. */
export const DEFAULT_DURATION_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  300,
];

/** Default buckets of `weft_step_queue_wait_seconds`. */
export const DEFAULT_QUEUE_WAIT_BUCKETS: readonly number[] = [
  0.001,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/** What {@linkcode createMetrics} needs of an engine. */
export type MetricsEngine = Pick<Engine, "subscribe" | "stats" | "workflows">;

/** Options of {@linkcode createMetrics}. */
export interface MetricsOptions {
  /** The registry to register in. @default {a new `Registry`} */
  registry?: Registry;
  /** Buckets of the step duration histogram, in seconds. @default {DEFAULT_DURATION_BUCKETS} */
  durationBuckets?: readonly number[];
  /** Buckets of the queue-wait histogram, in seconds. @default {DEFAULT_QUEUE_WAIT_BUCKETS} */
  queueWaitBuckets?: readonly number[];
}

/** An engine's metrics. */
export interface WeftMetrics {
  /** The registry holding them; `await registry.metrics()` is the exposition text. */
  readonly registry: Registry;
  /** Stops following the engine. Idempotent. */
  close(): void;
}

/** What is remembered of a run still in flight, to derive durations and waits. */
interface RunTrack {
  createdAt?: number;
  succeededAt: Map<string, number>;
  dueAt: Map<string, number>;
  attemptStartedAt: Map<string, number>;
}

/**
 * Creates the metrics of an engine and starts following its transitions.
 * Only transitions committed after this call are counted.
 *
 * Queue wait is the time from a step becoming ready (its last `needs`
 * succeeded, the run was created, or its retry fell due) to its attempt
 * starting: the wait for a concurrency slot plus the engine's own latency.
 * Attempts whose readiness this process did not see (runs recovered after a
 * restart) are not observed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * import { createMetrics } from "./metrics.ts";
 * const hello = workflow("hello", { input: z.object({}) }).step("greet", () => "hi");
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const metrics = createMetrics(engine);
 * await engine.result((await engine.start("hello", {})).id);
 * const text = await metrics.registry.metrics();
 * assert.ok(text.includes('weft_runs_finished_total{workflow="hello",outcome="succeeded"} 1'));
 * metrics.close();
 * await engine.close();
 * kv.close();
 * ```
 */
export function createMetrics(engine: MetricsEngine, options: MetricsOptions = {}): WeftMetrics {
  const registry = options.registry ?? new Registry();
  const registers = [registry];
  const runsStarted = new Counter({
    name: "weft_runs_started_total",
    help: "Runs created, by workflow.",
    labelNames: ["workflow"] as const,
    registers,
  });
  const runsFinished = new Counter({
    name: "weft_runs_finished_total",
    help: "Runs that reached a terminal state, by workflow and outcome.",
    labelNames: ["workflow", "outcome"] as const,
    registers,
  });
  const attempts = new Counter({
    name: "weft_step_attempts_total",
    help:
      "Step attempts that ended, by workflow, step and outcome (succeeded, retried, failed, timed_out, cancelled).",
    labelNames: ["workflow", "step", "outcome"] as const,
    registers,
  });
  const timeouts = new Counter({
    name: "weft_step_timeouts_total",
    help: "Step attempts that timed out, whether retried or not.",
    labelNames: ["workflow", "step"] as const,
    registers,
  });
  const duration = new Histogram({
    name: "weft_step_duration_seconds",
    help: "How long step attempts ran, by workflow, step and outcome.",
    labelNames: ["workflow", "step", "outcome"] as const,
    buckets: [...(options.durationBuckets ?? DEFAULT_DURATION_BUCKETS)],
    registers,
  });
  const queueWait = new Histogram({
    name: "weft_step_queue_wait_seconds",
    help: "Time from a step becoming ready (needs met or retry due) to its attempt starting.",
    labelNames: ["workflow", "step"] as const,
    buckets: [...(options.queueWaitBuckets ?? DEFAULT_QUEUE_WAIT_BUCKETS)],
    registers,
  });
  /** A gauge, or a counter (`_total`), read from the engine's stats at each scrape. */
  const fromStats = (
    name: string,
    help: string,
    pick: (s: ReturnType<MetricsEngine["stats"]>) => number,
  ) =>
    name.endsWith("_total")
      ? new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(pick(engine.stats()));
        },
      })
      : new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(pick(engine.stats()));
        },
      });
  fromStats(
    "weft_runs_in_flight",
    "Runs held in this worker's memory (runs waiting on disk are not counted).",
    (s) => s.activeRuns,
  );
  fromStats("weft_steps_in_flight", "Step attempts running.", (s) => s.runningSteps);
  fromStats(
    "weft_steps_queued",
    "Ready steps waiting for a concurrency slot.",
    (s) => s.queuedSteps,
  );
  fromStats(
    "weft_retries_waiting",
    "Retries this worker scheduled, less those it moved on (sum over workers).",
    (s) => s.waitingRetries,
  );
  fromStats(
    "weft_concurrency_in_use",
    "Engine-wide concurrency slots taken by running attempts.",
    (s) => s.runningSteps,
  );
  fromStats(
    "weft_concurrency_limit",
    "The engine-wide concurrency cap (maxConcurrentSteps).",
    (s) => s.maxConcurrentSteps,
  );
  fromStats(
    "weft_storage_degraded",
    "1 while the KV's disk is full or below the free-space reserve (no new work is taken), else 0.",
    (s) => s.storage.status === "ok" ? 0 : 1,
  );
  fromStats(
    "weft_storage_free_bytes",
    "Free bytes on the KV's disk at the last look (-1 when not watched).",
    (s) => s.storage.freeBytes ?? -1,
  );
  fromStats("weft_kv_commits_total", "KV commits made by this engine.", (s) => s.commits);
  fromStats(
    "weft_workers_others",
    "Other workers registered on this KV at this worker's last look.",
    (s) => s.otherWorkers,
  );
  fromStats(
    "weft_runs_claimed_total",
    "Runs this worker claimed from the due index.",
    (s) => s.claims,
  );
  fromStats(
    "weft_worker_fenced_total",
    "Times this worker found itself fenced (declared dead by another) and registered again.",
    (s) => s.fenced,
  );
  fromStats(
    "weft_workers_declared_dead_total",
    "Other workers this worker declared dead (fenced).",
    (s) => s.fencedOthers,
  );
  fromStats(
    "weft_leases_reaped_total",
    "Runs of dead workers this worker moved back to the due index.",
    (s) => s.reaped,
  );

  const needsOf = new Map<string, Map<string, readonly string[]>>();
  for (const wf of engine.workflows) {
    needsOf.set(wf.name, new Map(wf.steps.map((s) => [s.name, s.needs])));
  }
  const runs = new Map<string, RunTrack>();
  const track = (runId: string): RunTrack => {
    let t = runs.get(runId);
    if (!t) {
      runs.set(
        runId,
        t = { succeededAt: new Map(), dueAt: new Map(), attemptStartedAt: new Map() },
      );
    }
    return t;
  };

  const onEvent = ({ runId, workflow, event }: EngineEvent): void => {
    if (event.type === "run") {
      if (event.from === null) {
        runsStarted.inc({ workflow });
        track(runId).createdAt = event.at;
      }
      if (event.to === "succeeded" || event.to === "failed" || event.to === "cancelled") {
        runsFinished.inc({ workflow, outcome: event.to });
        runs.delete(runId);
      }
      return;
    }
    const t = track(runId);
    // A map's items (`step[3]`) count under their step: one series per step, not per item.
    const step = event.step.replace(/\[\d+\]$/, "");
    if (event.to === "running") {
      const readyAt = event.from === "waiting"
        ? t.dueAt.get(step)
        : event.from === "pending"
        ? readyTime(t, needsOf.get(workflow)?.get(step))
        : undefined;
      if (readyAt !== undefined) {
        queueWait.observe({ workflow, step }, Math.max(0, event.at - readyAt) / 1000);
      }
      t.dueAt.delete(step);
      t.attemptStartedAt.set(step, event.at);
      return;
    }
    if (event.from === "running") {
      const outcome = attemptOutcome(event.to, event.error?.name);
      if (outcome) {
        attempts.inc({ workflow, step, outcome });
        if (event.error?.name === "StepTimeoutError") timeouts.inc({ workflow, step });
        const startedAt = t.attemptStartedAt.get(step);
        const ms = event.durationMs ??
          (startedAt === undefined ? undefined : event.at - startedAt);
        if (ms !== undefined) duration.observe({ workflow, step, outcome }, Math.max(0, ms) / 1000);
      }
      t.attemptStartedAt.delete(step);
    }
    if (event.to === "succeeded") t.succeededAt.set(step, event.at);
    if (event.to === "waiting" && event.nextAttemptAt !== undefined) {
      t.dueAt.set(step, event.nextAttemptAt);
    }
  };

  const unsubscribe = engine.subscribe(onEvent);
  let closed = false;
  return {
    registry,
    close() {
      if (closed) return;
      closed = true;
      unsubscribe();
      runs.clear();
    },
  };
}

/** When a pending step became ready, if every moment it depends on was seen. */
function readyTime(t: RunTrack, needs: readonly string[] | undefined): number | undefined {
  if (needs === undefined) return undefined;
  if (needs.length === 0) return t.createdAt;
  let latest = -Infinity;
  for (const n of needs) {
    const at = t.succeededAt.get(n);
    if (at === undefined) return undefined;
    latest = Math.max(latest, at);
  }
  return latest;
}

function attemptOutcome(to: string, errorName: string | undefined): AttemptOutcome | undefined {
  switch (to) {
    case "succeeded":
      return AttemptOutcome.Succeeded;
    case "waiting":
      return AttemptOutcome.Retried;
    case "failed":
      return errorName === "StepTimeoutError" ? AttemptOutcome.TimedOut : AttemptOutcome.Failed;
    case "cancelled":
      return AttemptOutcome.Cancelled;
    default:
      return undefined;
  }
}

/**
 * A Hono app serving `GET /metrics` in the Prometheus text format. Mount it
 * with `app.route("/", metricsRoutes(metrics))` so the parent's auth applies.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Registry } from "prom-client";
 * import { metricsRoutes } from "./metrics.ts";
 * const app = metricsRoutes({ registry: new Registry() });
 * const res = await app.request("/metrics");
 * assert.ok(res.headers.get("content-type")?.startsWith("text/plain"));
 * ```
 */
export function metricsRoutes(metrics: Pick<WeftMetrics, "registry">): Hono {
  const app = new Hono();
  app.get("/metrics", async (c) => {
    const text = await metrics.registry.metrics();
    return c.body(text, 200, {
      "Content-Type": metrics.registry.contentType,
      "Cache-Control": "no-store",
    });
  });
  return app;
}

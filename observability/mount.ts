/**
 * One call that adds Weft's operator surface to a Hono app: `GET /metrics`,
 * `GET /runs/:id/events` and the web dashboard (`GET /` and `/ui/*`).
 *
 * @module
 */
import type { Env, Hono, Schema } from "hono";
import type { Engine } from "../mod.ts";
import { type DashboardOptions, dashboardRoutes } from "../dashboard/routes.tsx";
import { runEventsRoutes } from "./events.ts";
import { createMetrics, type MetricsOptions, metricsRoutes, type WeftMetrics } from "./metrics.ts";

/** Options of {@linkcode mountObservability}. */
export interface ObservabilityOptions {
  /** The engine to observe and drive. */
  engine: Engine;
  /**
   * Metrics already created for the engine; when absent they are created
   * here and closed by the returned handle's `close()`.
   * @default {createMetrics(engine, options.metricsOptions)}
   */
  metrics?: WeftMetrics;
  /** Options of the metrics created here. @default {{}} */
  metricsOptions?: MetricsOptions;
  /** Options of the dashboard. @default {{}} */
  dashboard?: DashboardOptions | false;
  /** Ends every open event stream when it aborts, such as on shutdown. */
  signal?: AbortSignal;
}

/** What {@linkcode mountObservability} returns. */
export interface Observability {
  /** The metrics served at `/metrics`. */
  readonly metrics: WeftMetrics;
  /** Stops following the engine if the metrics were created here. Idempotent. */
  close(): void;
}

/**
 * Adds `GET /metrics`, `GET /runs/:id/events` and, unless `dashboard` is
 * `false`, the dashboard routes to `app`. Call it after the app's auth
 * middleware so that they share it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * import { mountObservability } from "./mount.ts";
 * const hello = workflow("hello", { input: z.object({}) }).step("greet", () => "hi");
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const app = new Hono();
 * const observability = mountObservability(app, { engine });
 * assert.ok((await app.request("/metrics")).status === 200);
 * observability.close();
 * await engine.close();
 * kv.close();
 * ```
 */
export function mountObservability<E extends Env, S extends Schema, B extends string>(
  app: Hono<E, S, B>,
  options: ObservabilityOptions,
): Observability {
  const { engine } = options;
  const owned = options.metrics === undefined;
  const metrics = options.metrics ?? createMetrics(engine, options.metricsOptions);
  app.route("/", metricsRoutes(metrics));
  app.route("/", runEventsRoutes(engine, { signal: options.signal }));
  if (options.dashboard !== false) app.route("/", dashboardRoutes(engine, options.dashboard));
  return {
    metrics,
    close() {
      if (owned) metrics.close();
    },
  };
}

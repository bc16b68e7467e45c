/**
 * Weft's operator surface: structured logging, Prometheus metrics, live run
 * events over SSE and the web dashboard, mounted on a Hono app with
 * {@linkcode mountObservability}.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * import { mountObservability } from "./mod.ts";
 * const hello = workflow("hello", { input: z.object({}) }).step("greet", () => "hi");
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const app = new Hono();
 * mountObservability(app, { engine }).close();
 * await engine.close();
 * kv.close();
 * ```
 *
 * @module
 */
export { configureLogging, LogFormat, type LoggingOptions, loggingOptionsFrom } from "./logging.ts";
export {
  AttemptOutcome,
  createMetrics,
  DEFAULT_DURATION_BUCKETS,
  DEFAULT_QUEUE_WAIT_BUCKETS,
  type MetricsEngine,
  type MetricsOptions,
  metricsRoutes,
  type WeftMetrics,
} from "./metrics.ts";
export {
  type EventsEngine,
  type RunEventsOptions,
  runEventsRoutes,
  RunStreamEvent,
} from "./events.ts";
export { mountObservability, type Observability, type ObservabilityOptions } from "./mount.ts";
export {
  type DashboardEngine,
  type DashboardOptions,
  dashboardRoutes,
} from "../dashboard/routes.tsx";

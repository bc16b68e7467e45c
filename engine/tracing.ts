/**
 * OpenTelemetry spans of runs and step attempts, through `@opentelemetry/api`
 * (Deno's built-in exporter sends them with `OTEL_DENO=true`). A run keeps
 * the W3C trace context of its start span in its KV record, so its attempts
 * continue the same trace in any worker, after any restart:
 *
 * - `start <workflow>`: the start of a run, a child of the caller's span
 *   (the HTTP request) or of the `traceparent` it passed;
 * - `step <workflow>/<step>`: one per attempt, a child of the start span;
 * - `run <workflow>`: the whole run, from creation to its end, emitted by
 *   the worker that ends it, also a child of the start span.
 *
 * Times come from the engine's clock, so a fake clock gives fake times.
 *
 * @module
 */
import {
  type Attributes,
  type Context,
  context,
  defaultTextMapGetter,
  defaultTextMapSetter,
  isSpanContextValid,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import type { Clock } from "./clock.ts";
import { InvalidArgumentError, StepCancelledError, StepTimeoutError } from "./errors.ts";
import type { RunRecord } from "./records.ts";

/** The W3C trace context stored with a run. */
export interface RunTrace {
  /** The `traceparent` of the run's start span. */
  traceparent: string;
  /** The vendor `tracestate` that came with it, if any. */
  tracestate?: string;
}

/** Trace and span ids for log records. */
export interface TraceIds {
  /** 32 hex digits. */
  traceId: string;
  /** 16 hex digits. */
  spanId: string;
}

/** Attribute names on Weft's spans. */
export const TraceAttribute = {
  /** The workflow's name. */
  Workflow: "weft.workflow",
  /** The run's id. */
  RunId: "weft.run.id",
  /** The step's name. */
  Step: "weft.step",
  /** The attempt's number, 1-based. */
  Attempt: "weft.attempt",
  /** How the attempt or the run ended: succeeded, failed, timed_out, cancelled. */
  Outcome: "weft.outcome",
  /** The error's class name, as OpenTelemetry's semantic conventions name it. */
  ErrorType: "error.type",
  /** The step whose failure failed the run. */
  FailedStep: "weft.failed_step",
} as const;

const TRACEPARENT = /^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$/;

/**
 * Whether `value` is a well-formed W3C `traceparent`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isTraceparent } from "./tracing.ts";
 * assert.ok(isTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
 * assert.ok(!isTraceparent("garbage"));
 * ```
 */
export function isTraceparent(value: unknown): value is string {
  return typeof value === "string" && TRACEPARENT.test(value);
}

/**
 * The ids a stored trace context names, for log records.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { traceIdsOf } from "./tracing.ts";
 * const ids = traceIdsOf({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
 * assert.equal(ids?.spanId, "b7ad6b7169203331");
 * ```
 */
export function traceIdsOf(trace: RunTrace | undefined): TraceIds | undefined {
  if (!trace || !isTraceparent(trace.traceparent)) return undefined;
  const [, traceId, spanId] = trace.traceparent.split("-");
  return { traceId, spanId };
}

function outcomeOf(error: unknown): string {
  if (error instanceof StepTimeoutError) return "timed_out";
  if (error instanceof StepCancelledError) return "cancelled";
  return "failed";
}

function errorName(error: unknown): string {
  return error instanceof Error ? error.name || "Error" : "Error";
}

const PROBE = ROOT_CONTEXT.setValue(Symbol("weft.probe"), true);

/**
 * Whether `context.with` makes a context active: false under the no-op
 * context manager that stands in while none is registered. Asked each
 * time, as one may be registered at any moment.
 */
function entersContexts(): boolean {
  return context.with(PROBE, () => context.active()) !== ROOT_CONTEXT;
}

/**
 * Makes the spans of one engine from a tracer provider.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
 * import { systemClock } from "./clock.ts";
 * import { Tracing } from "./tracing.ts";
 * const exporter = new InMemorySpanExporter();
 * const tracing = new Tracing(
 *   new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
 *   systemClock,
 * );
 * const start = tracing.startRun("order", {});
 * start.end("01ARZ3NDEKTSV4RRFFQ69G5FAV");
 * const [span] = exporter.getFinishedSpans();
 * assert.equal(span.name, "start order");
 * assert.equal(start.trace?.traceparent.split("-")[2], span.spanContext().spanId);
 * ```
 */
export class Tracing {
  readonly #provider: TracerProvider;
  readonly #clock: Clock;
  readonly #propagator = new W3CTraceContextPropagator();

  /** Creates spans with `provider`'s tracer, timed by `clock`. */
  constructor(provider: TracerProvider, clock: Clock) {
    this.#provider = provider;
    this.#clock = clock;
  }

  #tracerCache: Tracer | undefined;

  /** Got once: a proxy tracer of the global provider follows a provider registered later. */
  #tracer(): Tracer {
    return this.#tracerCache ??= this.#provider.getTracer("weft");
  }

  /** The context a stored trace continues; the root context for a run without one. */
  #parentOf(stored: RunTrace | undefined): Context {
    if (!stored) return ROOT_CONTEXT;
    return this.#propagator.extract(ROOT_CONTEXT, { ...stored }, defaultTextMapGetter);
  }

  /**
   * Starts the span of a run's start, under the active span if there is one,
   * else under `traceparent`. Returns the trace context to store with the
   * run (none when tracing is off) and a function that ends the span.
   *
   * @throws {InvalidArgumentError} when `traceparent` is not a W3C traceparent.
   */
  startRun(
    workflow: string,
    options: { traceparent?: string; tracestate?: string },
  ): { trace: RunTrace | undefined; end(runId: string | undefined, error?: unknown): void } {
    const { traceparent, tracestate } = options;
    if (traceparent !== undefined && !isTraceparent(traceparent)) {
      throw new InvalidArgumentError(
        `Cannot start run as 'traceparent' is not a W3C traceparent: current value is ${
          JSON.stringify(String(traceparent).slice(0, 80))
        }`,
      );
    }
    const active = context.active();
    const parent = trace.getSpan(active)?.spanContext() !== undefined || traceparent === undefined
      ? active
      : this.#parentOf({ traceparent, ...(tracestate ? { tracestate } : {}) });
    const span = this.#tracer().startSpan(`start ${workflow}`, {
      kind: SpanKind.PRODUCER,
      startTime: this.#clock.now(),
      attributes: { [TraceAttribute.Workflow]: workflow },
    }, parent);
    // Only a recording span's context is stored: a run without tracing stores none.
    let stored: RunTrace | undefined;
    if (span.isRecording()) {
      const carrier: Record<string, string> = {};
      this.#propagator.inject(trace.setSpan(parent, span), carrier, defaultTextMapSetter);
      if (isTraceparent(carrier.traceparent)) {
        stored = {
          traceparent: carrier.traceparent,
          ...(carrier.tracestate ? { tracestate: carrier.tracestate } : {}),
        };
      }
    }
    return {
      trace: stored,
      end: (runId, error) => {
        if (runId !== undefined) span.setAttribute(TraceAttribute.RunId, runId);
        if (error !== undefined) {
          span.setAttribute(TraceAttribute.ErrorType, errorName(error));
          span.setStatus({
            code: SpanStatusCode.ERROR,
            message: String((error as Error)?.message),
          });
        }
        span.end(this.#clock.now());
      },
    };
  }

  /**
   * Starts the span of one attempt, a child of the run's start span; see
   * {@linkcode endAttempt}. `context` is the one to run the body in, absent
   * when no context manager is registered (entering it would change nothing).
   */
  startAttempt(
    run: Pick<RunRecord, "id" | "workflow" | "trace">,
    step: string,
    attempt: number,
  ): { span: Span; context?: Context } {
    const parent = this.#parentOf(run.trace);
    const span = this.#tracer().startSpan(`step ${run.workflow}/${step}`, {
      kind: SpanKind.CONSUMER,
      startTime: this.#clock.now(),
      attributes: {
        [TraceAttribute.Workflow]: run.workflow,
        [TraceAttribute.RunId]: run.id,
        [TraceAttribute.Step]: step,
        [TraceAttribute.Attempt]: attempt,
      },
    }, parent);
    // No context manager (no tracing set up): entering a context does
    // nothing. A span that records nothing and carries no trace gives the
    // body's own spans nothing to join.
    if (!entersContexts() || (!span.isRecording() && !isSpanContextValid(span.spanContext()))) {
      return { span };
    }
    return { span, context: trace.setSpan(parent, span) };
  }

  /** Ends an attempt's span with its outcome. */
  endAttempt(span: Span, outcome: { ok: true } | { ok: false; error: unknown }): void {
    if (outcome.ok) {
      span.setAttribute(TraceAttribute.Outcome, "succeeded");
    } else {
      span.setAttributes({
        [TraceAttribute.Outcome]: outcomeOf(outcome.error),
        [TraceAttribute.ErrorType]: errorName(outcome.error),
      });
      if (outcome.error instanceof Error) span.recordException(outcome.error, this.#clock.now());
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: String((outcome.error as Error)?.message ?? outcome.error),
      });
    }
    span.end(this.#clock.now());
  }

  /** Emits the span of a whole run that just ended: from its creation to now. */
  runEnded(record: RunRecord): void {
    const attributes: Attributes = {
      [TraceAttribute.Workflow]: record.workflow,
      [TraceAttribute.RunId]: record.id,
      [TraceAttribute.Outcome]: record.status,
    };
    if (record.failedStep) attributes[TraceAttribute.FailedStep] = record.failedStep;
    if (record.error) {
      attributes[TraceAttribute.ErrorType] = record.error.cause?.name ?? record.error.name;
    }
    const span = this.#tracer().startSpan(`run ${record.workflow}`, {
      kind: SpanKind.INTERNAL,
      startTime: record.createdAt,
      attributes,
    }, this.#parentOf(record.trace));
    if (record.status === "failed") {
      span.setStatus({
        code: SpanStatusCode.ERROR,
        message: record.error?.message ?? record.status,
      });
    }
    span.end(record.finishedAt ?? this.#clock.now());
  }
}

/**
 * Committed transitions, announced: one structured log record each, then
 * every subscriber of the engine, in order.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { AttemptInterruptedError, StepTimeoutError } from "./errors.ts";
import type { HistoryEvent, RunHistoryEvent, StepHistoryEvent } from "./records.ts";
import type { RunStatus } from "./states.ts";
import { type RunTrace, traceIdsOf } from "./tracing.ts";

const log = getLogger(["weft", "engine"]);

/** A committed transition, as delivered to subscribers. */
export interface EngineEvent {
  /** The run. */
  runId: string;
  /** Its workflow. */
  workflow: string;
  /** The transition. */
  event: HistoryEvent;
}

/**
 * Logs each committed transition and passes it to every listener; a listener
 * that throws is logged and does not keep the others from the event.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type EngineEvent, EventHub } from "./events.ts";
 * const hub = new EventHub();
 * const seen: EngineEvent[] = [];
 * const unsubscribe = hub.subscribe((e) => seen.push(e));
 * const event = { runId: "r", workflow: "wf", event: { type: "run", seq: 0, at: 0, from: null, to: "pending" } } as const;
 * hub.emit(event);
 * unsubscribe();
 * hub.emit(event);
 * assert.equal(seen.length, 1);
 * ```
 */
export class EventHub {
  readonly #listeners = new Set<(event: EngineEvent) => void>();

  /** Calls `listener` after each committed transition; returns an unsubscribe function. */
  subscribe(listener: (event: EngineEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Announces one committed transition; its log record carries the ids of
   * the run's `trace`, when it has one.
   */
  emit(e: EngineEvent, options: { trace?: RunTrace } = {}): void {
    logEvent(e, options.trace);
    for (const listener of this.#listeners) {
      try {
        listener(e);
      } catch (error) {
        log.error("An event listener threw: {error}", { error });
      }
    }
  }
}

const RUN_MESSAGES: Record<RunStatus, string> = {
  pending: "Run {runId} created",
  running: "Run {runId} started",
  succeeded: "Run {runId} succeeded in {durationMs} ms",
  failed: "Run {runId} failed in {durationMs} ms: {error.message}",
  cancelled: "Run {runId} cancelled: {error.message}",
  compensating: "Run {runId} is compensating its succeeded steps: {error.message}",
};

/** The level and message of a transition's log record. */
function recordOf(
  event: HistoryEvent,
): { level: "debug" | "info" | "warning" | "error"; message: string } {
  if (event.type === "run") {
    return { level: event.to === "failed" ? "warning" : "info", message: RUN_MESSAGES[event.to] };
  }
  const timedOut = event.error?.name === StepTimeoutError.name;
  const interrupted = event.error?.name === AttemptInterruptedError.name;
  switch (event.to) {
    case "running":
      return { level: "debug", message: "Step {step} attempt {attempt} started" };
    case "succeeded":
      return { level: "info", message: "Step {step} succeeded in {durationMs} ms" };
    case "waiting":
      if (interrupted) {
        return {
          level: "warning",
          message: "Step {step} attempt {attempt} was interrupted; recovering",
        };
      }
      if (timedOut) {
        return {
          level: "warning",
          message: "Step {step} attempt {attempt} timed out; retrying in {delayMs} ms",
        };
      }
      return {
        level: "warning",
        message: "Step {step} attempt {attempt} failed, retrying in {delayMs} ms: {error.message}",
      };
    case "failed":
      return timedOut
        ? { level: "error", message: "Step {step} attempt {attempt} timed out; giving up" }
        : { level: "error", message: "Step {step} failed: {error.message}" };
    default:
      return { level: "info", message: `Step {step} ${event.to}` };
  }
}

/**
 * One structured record per committed transition; its properties are built
 * only when some sink takes the record's level.
 */
function logEvent({ runId, workflow, event }: EngineEvent, trace: RunTrace | undefined): void {
  const { level, message } = recordOf(event);
  if (!log.isEnabledFor(level)) return;
  const ids = traceIdsOf(trace);
  const props = event.type === "run"
    ? {
      ...ids,
      workflow,
      runId,
      status: event.to,
      durationMs: event.durationMs,
      error: event.error,
      ...(event.to === "failed" ? failedStepOf(event) : {}),
    }
    : {
      ...ids,
      workflow,
      runId,
      step: event.step,
      attempt: event.attempt,
      durationMs: event.durationMs,
      error: event.error,
      status: event.to,
      ...retryOf(event),
    };
  switch (level) {
    case "debug":
      return log.debug(message, props);
    case "info":
      return log.info(message, props);
    case "warning":
      return log.warn(message, props);
    default:
      return log.error(message, props);
  }
}

/**
 * When a retry is due, for the record of the attempt that failed: the time
 * as ISO 8601 (as `@timestamp` is) and the wait from the failure.
 */
function retryOf(event: StepHistoryEvent): { nextAttemptAt?: string; delayMs?: number } {
  if (event.nextAttemptAt === undefined) return {};
  return {
    nextAttemptAt: new Date(event.nextAttemptAt).toISOString(),
    delayMs: Math.max(0, event.nextAttemptAt - event.at),
  };
}

/** The step whose failure failed the run, at the top level of the run-failed record. */
function failedStepOf(event: RunHistoryEvent): { failedStep?: string } {
  const step = event.error?.details?.step;
  return typeof step === "string" ? { failedStep: step } : {};
}

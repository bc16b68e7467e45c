/**
 * How a transition is recorded: the live run changes in memory at once, and
 * the write that will store it gets the changed record and the history
 * event that says what happened. Deciding which transition to make is the
 * scheduler's part.
 *
 * @module
 */
import type { ErrorData } from "./errors.ts";
import type { LiveRun } from "./live_run.ts";
import type { HistoryEvent, StepRecord } from "./records.ts";
import { isTerminalRun, type RunStatus, transitionRun } from "./states.ts";
import type { Txn } from "./txn.ts";

/** A step record keeps its newest attempt errors within this many bytes of JSON. */
export const MAX_ERRORS_BYTES = 24_000;

/**
 * Keeps the newest errors that fit in {@linkcode MAX_ERRORS_BYTES}, the last one always.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { boundErrors } from "./transitions.ts";
 * const error = { name: "Error", message: "x".repeat(10_000) };
 * const errors = [1, 2, 3, 4].map((attempt) => ({ attempt, at: 0, error }));
 * assert.deepEqual(boundErrors(errors).map((e) => e.attempt), [3, 4]);
 * ```
 */
export function boundErrors(errors: StepRecord["errors"]): StepRecord["errors"] {
  let bytes = 0;
  let keep = 0;
  for (let i = errors.length - 1; i >= 0; i--) {
    bytes += JSON.stringify(errors[i]).length;
    if (keep > 0 && bytes > MAX_ERRORS_BYTES) break;
    keep++;
  }
  return errors.slice(errors.length - keep);
}

/** One step's change, for {@linkcode recordStep}. */
export interface StepChange {
  /** The step. */
  step: string;
  /** Its new record; its status is already checked as a legal transition. */
  next: StepRecord;
  /** The attempt the change belongs to (0 if none started). */
  attempt: number;
  /** The attempt's error, when it failed. */
  error?: ErrorData;
  /** When the next attempt is due, when it will be retried. */
  nextAttemptAt?: number;
  /** How long the attempt ran, when it ended. */
  durationMs?: number;
  /** When, in epoch milliseconds. */
  at: number;
}

/**
 * Sets a step's new record on the live run, and records it and its history
 * event in `txn`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newLiveRun } from "./live_run.ts";
 * import type { StepRecord } from "./records.ts";
 * import { recordStep } from "./transitions.ts";
 * import { Txn } from "./txn.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const live = newLiveRun(workflow("wf").step("a", () => 1), {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map([["a", { status: "pending", attempts: 0, errors: [] }]]),
 *   results: new Map(),
 *   nextSeq: 1,
 * });
 * const txn = new Txn();
 * const next: StepRecord = { status: "running", attempts: 1, errors: [] };
 * recordStep(txn, live, { step: "a", next, attempt: 1, at: 5 });
 * assert.equal(live.steps.get("a")?.status, "running");
 * assert.deepEqual(txn.history.get(live), [
 *   { type: "step", seq: 1, at: 5, step: "a", from: "pending", to: "running", attempt: 1 },
 * ]);
 * ```
 */
export function recordStep(txn: Txn, live: LiveRun, change: StepChange): void {
  const name = change.step;
  const next = change.next;
  const from = live.steps.get(name)!.status;
  live.steps.set(name, next);
  txn.touchStep(live, name);
  const event: HistoryEvent = {
    type: "step",
    seq: live.nextSeq++,
    at: change.at,
    step: name,
    from,
    to: next.status,
    attempt: change.attempt,
  };
  if (change.error) event.error = change.error;
  if (change.nextAttemptAt !== undefined) event.nextAttemptAt = change.nextAttemptAt;
  if (change.durationMs !== undefined) event.durationMs = change.durationMs;
  txn.record(live, event);
}

/** A run's change of status, for {@linkcode recordRunStatus}. */
export interface RunStatusChange {
  /** The new status. */
  to: RunStatus;
  /** Why the run failed or was cancelled. */
  error?: ErrorData;
  /** When, in epoch milliseconds. */
  at: number;
}

/**
 * Moves the live run to a new status (throwing on an illegal transition),
 * stamping when it started or ended, and records it and its history event
 * in `txn`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newLiveRun } from "./live_run.ts";
 * import { recordRunStatus } from "./transitions.ts";
 * import { Txn } from "./txn.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const live = newLiveRun(workflow("wf").step("a", () => 1), {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map(),
 *   results: new Map(),
 *   nextSeq: 3,
 * });
 * const txn = new Txn();
 * recordRunStatus(txn, live, { to: "succeeded", at: 40 });
 * assert.equal(live.record.finishedAt, 40);
 * assert.equal(txn.runs.get(live)?.fromStatus, "running");
 * assert.equal(txn.history.get(live)?.[0].durationMs, 40);
 * ```
 */
export function recordRunStatus(txn: Txn, live: LiveRun, change: RunStatusChange): void {
  const { to, error } = change;
  const from = live.record.status;
  txn.touchRun(live);
  const now = change.at;
  const record = { ...live.record, status: transitionRun(from, to) };
  if (to === "running") record.startedAt = now;
  if (isTerminalRun(to)) record.finishedAt = now;
  live.record = record;
  const event: HistoryEvent = { type: "run", seq: live.nextSeq++, at: now, from, to };
  if (error) event.error = error;
  if (isTerminalRun(to)) event.durationMs = now - record.createdAt;
  txn.record(live, event);
}

/**
 * Run and step states, and the one pure function that moves between them.
 *
 * @module
 */

/**
 * The states of a run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RunStatus } from "./states.ts";
 * assert.ok(RunStatus.Succeeded === "succeeded");
 * ```
 */
export const RunStatus = {
  /** Stored; no step has started yet (for example all wait for a concurrency slot). */
  Pending: "pending",
  /** At least one step has started and the run has not ended. */
  Running: "running",
  /** Every step succeeded. */
  Succeeded: "succeeded",
  /** A step failed for good. */
  Failed: "failed",
  /** Cancelled by a caller. */
  Cancelled: "cancelled",
  /**
   * Failing or being cancelled: the compensations of its succeeded steps
   * (and its `onFailure` handler) run before it ends as failed or cancelled.
   */
  Compensating: "compensating",
} as const;
/** One of the {@linkcode RunStatus} values. */
export type RunStatus = typeof RunStatus[keyof typeof RunStatus];

/**
 * The states of a step within a run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { StepStatus } from "./states.ts";
 * assert.ok(StepStatus.Waiting === "waiting");
 * ```
 */
export const StepStatus = {
  /** Not started: waits for its `needs` or for a concurrency slot. */
  Pending: "pending",
  /** An attempt is in flight. */
  Running: "running",
  /** An attempt failed; the next one is scheduled (backoff). */
  Waiting: "waiting",
  /** A sleep step, until its time (`resumeAt`). */
  Sleeping: "sleeping",
  /** A wait step, until its event arrives or its timeout (`resumeAt`) passes. */
  Awaiting: "awaiting",
  /** Its result is committed. */
  Succeeded: "succeeded",
  /** It failed for good; the run failed with it. */
  Failed: "failed",
  /** It never ran: its condition was false, a step it needs was skipped, or the run ended first. */
  Skipped: "skipped",
  /** It was running or waiting when the run was cancelled or failed. */
  Cancelled: "cancelled",
} as const;
/** One of the {@linkcode StepStatus} values. */
export type StepStatus = typeof StepStatus[keyof typeof StepStatus];

/** The run states no run leaves. */
export const TERMINAL_RUN_STATUSES: readonly RunStatus[] = ["succeeded", "failed", "cancelled"];
/** The step states no step leaves. */
export const TERMINAL_STEP_STATUSES: readonly StepStatus[] = [
  "succeeded",
  "failed",
  "skipped",
  "cancelled",
];

/**
 * Whether a run status is terminal.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isTerminalRun } from "./states.ts";
 * assert.ok(isTerminalRun("failed") && !isTerminalRun("running"));
 * ```
 */
export function isTerminalRun(status: RunStatus): boolean {
  return TERMINAL_RUN_STATUSES.includes(status);
}

/**
 * Whether a step status is terminal.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isTerminalStep } from "./states.ts";
 * assert.ok(isTerminalStep("skipped") && !isTerminalStep("waiting"));
 * ```
 */
export function isTerminalStep(status: StepStatus): boolean {
  return TERMINAL_STEP_STATUSES.includes(status);
}

const RUN_TRANSITIONS: Record<RunStatus, readonly RunStatus[]> = {
  pending: ["running", "failed", "cancelled", "compensating"],
  running: ["succeeded", "failed", "cancelled", "compensating"],
  compensating: ["failed", "cancelled"],
  succeeded: [],
  failed: [],
  cancelled: [],
};

const STEP_TRANSITIONS: Record<StepStatus, readonly StepStatus[]> = {
  // pending -> failed is a condition (`when`) that threw.
  pending: ["running", "skipped", "sleeping", "awaiting", "failed"],
  // running -> running is a new attempt after an interrupted one.
  running: ["running", "waiting", "succeeded", "failed", "cancelled"],
  waiting: ["running", "cancelled", "failed"],
  sleeping: ["succeeded", "cancelled"],
  // awaiting -> failed is a child run that failed.
  awaiting: ["succeeded", "cancelled", "failed"],
  succeeded: [],
  failed: [],
  skipped: [],
  cancelled: [],
};

/**
 * A transition that the state machine does not allow. Seeing one is a bug in
 * the engine, never a user error.
 */
export class InvalidTransitionError extends Error {
  /** Creates the error for `from -> to` of `subject`. */
  constructor(subject: string, from: string, to: string) {
    super(`Invalid transition of ${subject}: ${from} -> ${to}`);
    this.name = "InvalidTransitionError";
  }
}

/**
 * Checks a run transition and returns the new status.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { transitionRun } from "./states.ts";
 * assert.ok(transitionRun("pending", "running") === "running");
 * ```
 */
export function transitionRun(from: RunStatus, to: RunStatus): RunStatus {
  if (!RUN_TRANSITIONS[from].includes(to)) throw new InvalidTransitionError("run", from, to);
  return to;
}

/**
 * Checks a step transition and returns the new status.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { transitionStep } from "./states.ts";
 * assert.ok(transitionStep("running", "waiting") === "waiting");
 * ```
 */
export function transitionStep(from: StepStatus, to: StepStatus): StepStatus {
  if (!STEP_TRANSITIONS[from].includes(to)) throw new InvalidTransitionError("step", from, to);
  return to;
}

/**
 * The error hierarchy of Weft. Every error the engine raises or stores is a
 * {@linkcode WeftError}; users throw {@linkcode NonRetryableError} or
 * {@linkcode RetryAfterError} from a step to steer retries.
 *
 * @module
 */

/** An error as stored in KV and returned to clients: data, never a string. */
export interface ErrorData {
  /** The error class name, such as `"StepTimeoutError"`. */
  name: string;
  /** The human-readable message. */
  message: string;
  /** Whether the engine will not retry after this error. */
  nonRetryable?: boolean;
  /** Structured details, such as the step and timeout of a timeout. */
  details?: Record<string, unknown>;
  /** The error that caused this one, if any. */
  cause?: ErrorData;
  /**
   * Where it was thrown: the JavaScript stack, cut to
   * {@linkcode MAX_STACK_BYTES} (shared with its causes). Absent for the
   * engine's own timeouts and interruptions, whose stack says nothing of
   * the step.
   */
  stack?: string;
}

/** The most bytes of stack trace stored with one error, its causes included. */
export const MAX_STACK_BYTES = 4_096;

/**
 * The base class of every error Weft raises.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WeftError } from "./errors.ts";
 * const err = new WeftError("something broke");
 * assert.ok(err.name === "WeftError");
 * ```
 */
export class WeftError extends Error {
  /** Creates the error with an optional cause. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Thrown from a step to fail it at once, with no further attempts. Any other
 * error, a `TypeError` from a bug included, is retried by the step's
 * policy; wrap it to stop retries: `throw new NonRetryableError("bug", { cause })`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NonRetryableError } from "./errors.ts";
 * const declined = new NonRetryableError("card declined");
 * assert.ok(declined.name === "NonRetryableError");
 * ```
 */
export class NonRetryableError extends WeftError {}

/**
 * Thrown from a step to retry it after exactly `delayMs`, instead of the
 * step's backoff. It still counts as an attempt.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RetryAfterError } from "./errors.ts";
 * const limited = new RetryAfterError("rate limited", 30_000);
 * assert.ok(limited.delayMs === 30_000);
 * ```
 */
export class RetryAfterError extends WeftError {
  /** How long to wait before the next attempt. */
  readonly delayMs: number;
  /** Creates the error; `delayMs` must be a finite number of at least 0. */
  constructor(message: string, delayMs: number, options?: ErrorOptions) {
    super(message, options);
    if (!Number.isFinite(delayMs) || delayMs < 0) {
      throw new RangeError(
        `Cannot create RetryAfterError as 'delayMs' must be a finite number >= 0: current value is ${delayMs}`,
      );
    }
    this.delayMs = delayMs;
  }
}

/**
 * A step attempt ran longer than its `timeoutMs`. Retryable.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { StepTimeoutError } from "./errors.ts";
 * const err = new StepTimeoutError("payment", 2, 2_000);
 * assert.ok(err.timeoutMs === 2_000);
 * ```
 */
export class StepTimeoutError extends WeftError {
  /** The step that timed out. */
  readonly step: string;
  /** The attempt that timed out, 1-based. */
  readonly attempt: number;
  /** The timeout the attempt exceeded. */
  readonly timeoutMs: number;
  /** Creates the error for one attempt of one step. */
  constructor(step: string, attempt: number, timeoutMs: number) {
    super(`Step '${step}' attempt ${attempt} timed out after ${timeoutMs} ms`);
    this.step = step;
    this.attempt = attempt;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * The attempt was stopped because its run was cancelled or failed elsewhere.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { StepCancelledError } from "./errors.ts";
 * assert.ok(new StepCancelledError("payment", "run cancelled").step === "payment");
 * ```
 */
export class StepCancelledError extends WeftError {
  /** The step that was stopped. */
  readonly step: string;
  /** Creates the error with the reason the step was stopped. */
  constructor(step: string, reason: string) {
    super(`Step '${step}' was stopped: ${reason}`);
    this.step = step;
  }
}

/**
 * The process running an attempt stopped (crash or shutdown) before the
 * attempt finished; the engine found the attempt orphaned at start-up.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { AttemptInterruptedError } from "./errors.ts";
 * assert.ok(new AttemptInterruptedError("payment", 1).attempt === 1);
 * ```
 */
export class AttemptInterruptedError extends WeftError {
  /** The step whose attempt was lost. */
  readonly step: string;
  /** The lost attempt, 1-based. */
  readonly attempt: number;
  /** Creates the error for one lost attempt. */
  constructor(step: string, attempt: number, reason = "a process stop") {
    super(`Step '${step}' attempt ${attempt} was interrupted by ${reason}`);
    this.step = step;
    this.attempt = attempt;
  }
}

/**
 * A step returned an output that cannot be stored: too large or not JSON.
 * Never retried, since the same code would return the same output.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { OutputError } from "./errors.ts";
 * const err = new OutputError("report", "too large: 2000000 bytes, limit 1048576");
 * assert.ok(err.step === "report");
 * ```
 */
export class OutputError extends WeftError {
  /** The step whose output was refused. */
  readonly step: string;
  /** Creates the error with what was wrong with the output. */
  constructor(step: string, problem: string) {
    super(`Cannot store the output of step '${step}' as it is ${problem}`);
    this.step = step;
  }
}

/**
 * A workflow definition is invalid. Raised when the module that defines it
 * is loaded, naming the workflow and the step.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WorkflowDefinitionError } from "./errors.ts";
 * const err = new WorkflowDefinitionError("order", "payment", "'timeoutMs' must be > 0");
 * assert.ok(err.message.includes("order"));
 * ```
 */
export class WorkflowDefinitionError extends WeftError {
  /** The workflow whose definition is wrong. */
  readonly workflow: string;
  /** The step whose definition is wrong, if the problem is in one step. */
  readonly step?: string;
  /** Creates the error from the workflow, step and problem. */
  constructor(workflow: string, step: string | undefined, problem: string) {
    super(
      step === undefined
        ? `Invalid workflow '${workflow}': ${problem}`
        : `Invalid step '${step}' in workflow '${workflow}': ${problem}`,
    );
    this.workflow = workflow;
    this.step = step;
  }
}

/** One problem found in a run's input, as reported by zod. */
export interface InputIssue {
  /** zod's issue code, such as `"invalid_type"`. */
  code: string;
  /** Where in the input the problem is. */
  path: (string | number)[];
  /** What is wrong there. */
  message: string;
}

/**
 * A run's input does not match its workflow's schema. Nothing was stored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { InvalidInputError } from "./errors.ts";
 * const err = new InvalidInputError("order", [{ code: "invalid_type", path: ["amount"], message: "Expected number" }]);
 * assert.ok(err.issues.length === 1);
 * ```
 */
export class InvalidInputError extends WeftError {
  /** The workflow whose input was refused. */
  readonly workflow: string;
  /** zod's issues, one per problem. */
  readonly issues: InputIssue[];
  /**
   * Creates the error from zod's issues; `subject` names what was refused
   * (default: the workflow's input).
   */
  constructor(workflow: string, issues: InputIssue[], subject?: string) {
    const first = issues[0];
    const where = first && first.path.length > 0 ? ` at '${first.path.join(".")}'` : "";
    super(
      `Invalid ${subject ?? `input for workflow '${workflow}'`}${where}: ${
        first?.message ?? "rejected"
      }${issues.length > 1 ? ` (and ${issues.length - 1} more)` : ""}`,
    );
    this.workflow = workflow;
    this.issues = issues;
  }
}

/**
 * A schema's issues as {@linkcode InputIssue}s (symbol keys in paths become strings).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toInputIssues } from "./errors.ts";
 * const issues = toInputIssues([{ code: "invalid_type", path: ["a", 0], message: "no" }]);
 * assert.deepEqual(issues[0].path, ["a", 0]);
 * ```
 */
export function toInputIssues(
  issues: readonly { code: string; path: readonly PropertyKey[]; message: string }[],
): InputIssue[] {
  return issues.map((i) => ({
    code: i.code,
    path: i.path.map((p) => typeof p === "symbol" ? String(p) : p),
    message: i.message,
  }));
}

/**
 * A run's input is larger than the engine accepts (`maxInputBytes`).
 * Nothing was stored.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { InputTooLargeError } from "./errors.ts";
 * const err = new InputTooLargeError("order", 300_000, 262_144);
 * assert.ok(err.sizeBytes > err.limitBytes);
 * ```
 */
export class InputTooLargeError extends WeftError {
  /** The workflow whose input was refused. */
  readonly workflow: string;
  /** The input's size in bytes of JSON. */
  readonly sizeBytes: number;
  /** The engine's limit. */
  readonly limitBytes: number;
  /** Creates the error from the size and the limit. */
  constructor(workflow: string, sizeBytes: number, limitBytes: number) {
    super(
      `Cannot start workflow '${workflow}' as its input is ${sizeBytes} bytes of JSON, over the limit of ${limitBytes}`,
    );
    this.workflow = workflow;
    this.sizeBytes = sizeBytes;
    this.limitBytes = limitBytes;
  }
}

/**
 * The run is not finished, but this engine does not serve its workflow, so
 * it can neither wait for it nor cancel it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WorkflowNotServedError } from "./errors.ts";
 * assert.ok(new WorkflowNotServedError("r1", "old").workflow === "old");
 * ```
 */
export class WorkflowNotServedError extends WeftError {
  /** The run. */
  readonly runId: string;
  /** Its workflow, which this engine does not have. */
  readonly workflow: string;
  /** Creates the error for a run and its workflow. */
  constructor(runId: string, workflow: string) {
    super(`Run '${runId}' is unfinished but this engine does not serve its workflow '${workflow}'`);
    this.runId = runId;
    this.workflow = workflow;
  }
}

/**
 * An argument to an engine method is wrong, such as a malformed cursor.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { InvalidArgumentError } from "./errors.ts";
 * assert.ok(new InvalidArgumentError("bad").name === "InvalidArgumentError");
 * ```
 */
export class InvalidArgumentError extends WeftError {}

/**
 * No workflow of that name is registered with the engine.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { UnknownWorkflowError } from "./errors.ts";
 * assert.ok(new UnknownWorkflowError("nope").workflow === "nope");
 * ```
 */
export class UnknownWorkflowError extends WeftError {
  /** The name that was asked for. */
  readonly workflow: string;
  /** Creates the error for a name. */
  constructor(workflow: string) {
    super(`Unknown workflow '${workflow}'`);
    this.workflow = workflow;
  }
}

/**
 * No run has that id. When the id is not even shaped like one (`malformed`),
 * the message says what run ids look like.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RunNotFoundError } from "./errors.ts";
 * assert.ok(new RunNotFoundError("r1").runId === "r1");
 * const err = new RunNotFoundError("r1", { malformed: true });
 * assert.ok(err.message.endsWith("run ids are 26-character ULIDs"));
 * ```
 */
export class RunNotFoundError extends WeftError {
  /** The id that was asked for. */
  readonly runId: string;
  /** Whether the id is not shaped like a run id at all. */
  readonly malformed: boolean;
  /** Creates the error for an id. */
  constructor(runId: string, options: { malformed?: boolean } = {}) {
    const malformed = options.malformed ?? false;
    super(`Run '${runId}' not found${malformed ? ": run ids are 26-character ULIDs" : ""}`);
    this.runId = runId;
    this.malformed = malformed;
  }
}

/**
 * The workflow of a run has no step that waits for that event.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { UnknownEventError } from "./errors.ts";
 * assert.ok(new UnknownEventError("order", "paid").event === "paid");
 * ```
 */
export class UnknownEventError extends WeftError {
  /** The workflow. */
  readonly workflow: string;
  /** The event asked for. */
  readonly event: string;
  /** Creates the error for a workflow and an event name. */
  constructor(workflow: string, event: string) {
    super(`Workflow '${workflow}' has no step that waits for event '${event}'`);
    this.workflow = workflow;
    this.event = event;
  }
}

/**
 * The run is already terminal, so it cannot be cancelled (or sent an event).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RunFinishedError } from "./errors.ts";
 * assert.ok(new RunFinishedError("r1", "succeeded").status === "succeeded");
 * ```
 */
export class RunFinishedError extends WeftError {
  /** The run. */
  readonly runId: string;
  /** Its terminal status. */
  readonly status: string;
  /** Creates the error for a run and its status; `action` is what could not be done. */
  constructor(runId: string, status: string, action = `cancel run '${runId}'`) {
    super(`Cannot ${action} as it has already finished: status is ${status}`);
    this.runId = runId;
    this.status = status;
  }
}

/**
 * The engine is closed and takes no more work.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EngineClosedError } from "./errors.ts";
 * assert.ok(new EngineClosedError().name === "EngineClosedError");
 * ```
 */
export class EngineClosedError extends WeftError {
  /** Creates the error. */
  constructor() {
    super("Engine is closed");
  }
}

/**
 * The store cannot take this write: the disk holding the KV is full, or its
 * free space is below the engine's reserve (`minFreeBytes`). Nothing of the
 * write was applied; reads still work, and work carries on by itself once
 * space returns.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { StorageFullError } from "./errors.ts";
 * assert.match(new StorageFullError().message, /out of space/);
 * ```
 */
export class StorageFullError extends WeftError {
  /** Creates the error, with the KV's own error as `cause` when a write failed. */
  constructor(detail?: string, options?: ErrorOptions) {
    super(`The store is out of space${detail ? `: ${detail}` : ""}`, options);
  }
}

const MAX_MESSAGE_CHARS = 2_000;

/**
 * A write of a worker that another worker declared dead: its fence no longer
 * holds, so nothing of the write was applied. The worker drops what it held
 * and registers again.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FencedError } from "./errors.ts";
 * assert.match(new FencedError("w1").message, /w1/);
 * ```
 */
export class FencedError extends WeftError {
  /** The fenced worker. */
  readonly workerId: string;
  /** Creates the error for `workerId`. */
  constructor(workerId: string) {
    super(`Worker '${workerId}' was fenced: another worker declared it dead`);
    this.workerId = workerId;
  }
}

/**
 * Errors whose stack says nothing worth keeping: the engine's own, and
 * `RetryAfterError`, a step's "not yet" (a poll that waits an hour for each
 * try would store a stack per try).
 */
const ENGINE_MADE = [
  StepTimeoutError,
  AttemptInterruptedError,
  StepCancelledError,
  RetryAfterError,
];

/** `text` cut to at most `maxBytes` bytes of UTF-8, on a character boundary, and its size. */
function cutToBytes(text: string, maxBytes: number): { text: string; bytes: number } {
  const bytes = new TextEncoder().encode(text);
  if (bytes.byteLength <= maxBytes) return { text, bytes: bytes.byteLength };
  const cut = new TextDecoder().decode(bytes.subarray(0, maxBytes)).replace(/\uFFFD$/, "");
  return { text: cut, bytes: new TextEncoder().encode(cut).byteLength };
}

/**
 * Turns anything thrown into {@linkcode ErrorData} that can be stored as JSON.
 * Messages are cut to 2,000 characters; stacks to {@linkcode MAX_STACK_BYTES}
 * in all (the error's first, then its causes').
 *
 * A programming error such as a `TypeError` is stored like any other and is
 * retried by the step's policy: only {@linkcode NonRetryableError} (or a
 * subclass) and an {@linkcode OutputError} end a step at once.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toErrorData } from "./errors.ts";
 * const data = toErrorData(new TypeError("x"));
 * assert.ok(data.name === "TypeError" && data.stack?.startsWith("TypeError: x"));
 * assert.ok(toErrorData("plain").message === "plain");
 * ```
 */
export function toErrorData(error: unknown, depth = 0): ErrorData {
  return errorData(error, depth, { bytes: MAX_STACK_BYTES });
}

function errorData(error: unknown, depth: number, budget: { bytes: number }): ErrorData {
  if (!(error instanceof Error)) {
    let message: string;
    try {
      message = typeof error === "string" ? error : JSON.stringify(error) ?? String(error);
    } catch {
      message = String(error);
    }
    return { name: "Error", message: message.slice(0, MAX_MESSAGE_CHARS) };
  }
  const data: ErrorData = {
    name: error.name || "Error",
    message: String(error.message).slice(0, MAX_MESSAGE_CHARS),
  };
  if (error instanceof NonRetryableError || error instanceof OutputError) data.nonRetryable = true;
  const details: Record<string, unknown> = {};
  if (error instanceof StepTimeoutError) {
    Object.assign(details, {
      step: error.step,
      attempt: error.attempt,
      timeoutMs: error.timeoutMs,
    });
  }
  if (error instanceof RetryAfterError) details.delayMs = error.delayMs;
  if (Object.keys(details).length > 0) data.details = details;
  // Reading `stack` makes the runtime format it (some 10 µs a frame): only
  // for an error whose stack is kept, once.
  if (budget.bytes > 0 && !ENGINE_MADE.some((type) => error instanceof type)) {
    const stack = error.stack;
    if (typeof stack === "string" && stack) {
      const cut = cutToBytes(stack, budget.bytes);
      data.stack = cut.text;
      budget.bytes -= cut.bytes;
    }
  }
  if (error.cause !== undefined && depth < 3) {
    data.cause = errorData(error.cause, depth + 1, budget);
  }
  return data;
}

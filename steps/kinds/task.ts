/**
 * The task kind: a step whose body runs as attempts under a timeout, retried
 * with exponential backoff and jitter, until one succeeds or the policy gives
 * up and the run fails. Every step declared with `.step()` is a task.
 *
 * @module
 */
import {
  AttemptInterruptedError,
  NonRetryableError,
  OutputError,
  RetryAfterError,
  StepTimeoutError,
  toErrorData,
} from "../../engine/errors.ts";
import { backoffDelayMs } from "../../engine/retry.ts";
import type { StepKind, StepKindContext } from "../../engine/step_kind.ts";
import { boundErrors } from "../../engine/transitions.ts";
import { transitionStep } from "../../engine/states.ts";

/**
 * Records a failed attempt: the retry it schedules, or the step's and the
 * run's failure. `delayMs` replaces the backoff (0 for an attempt lost with
 * its process); `uncharged` does not count the attempt against `maxAttempts`.
 */
function attemptFailed(
  ctx: StepKindContext,
  attempt: number,
  error: unknown,
  options: { delayMs?: number; uncharged?: boolean } = {},
): void {
  const { step } = ctx;
  const delayOverrideMs = options.delayMs;
  const now = ctx.now();
  const data = toErrorData(error);
  const stored = ctx.record();
  const rec = options.uncharged ? { ...stored, uncharged: (stored.uncharged ?? 0) + 1 } : stored;
  const errors = boundErrors([...rec.errors, { attempt, at: now, error: data }]);
  const durationMs = rec.status === "running" && rec.attemptStartedAt !== undefined
    ? now - rec.attemptStartedAt
    : undefined;
  const nonRetryable = error instanceof NonRetryableError || error instanceof OutputError;
  // Attempts abandoned by a graceful shutdown or a reload do not count.
  if (!nonRetryable && attempt - (rec.uncharged ?? 0) < step.retry.maxAttempts) {
    const delayMs = delayOverrideMs ??
      (error instanceof RetryAfterError
        ? error.delayMs
        : backoffDelayMs(step.retry, attempt + 1, ctx.random));
    const nextAttemptAt = now + delayMs;
    ctx.transition(
      { ...rec, status: transitionStep(rec.status, "waiting"), errors, nextAttemptAt },
      { attempt, error: data, nextAttemptAt, durationMs, at: now },
    );
    ctx.armTimer(nextAttemptAt);
    return;
  }
  ctx.transition(
    { ...rec, status: transitionStep(rec.status, "failed"), errors, finishedAt: now },
    { attempt, error: data, durationMs, at: now },
  );
  const reason = error instanceof StepTimeoutError
    ? "timed out"
    : nonRetryable
    ? "failed with a non-retryable error"
    : `failed after ${attempt} attempt${attempt === 1 ? "" : "s"}`;
  ctx.failRun({
    name: "StepFailedError",
    message: `Step '${step.name}' ${reason}: ${data.message}`,
    details: { step: step.name, attempt },
    cause: data,
  });
}

/**
 * The task kind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { taskKind } from "./task.ts";
 * assert.equal(taskKind.name, "task");
 * assert.equal(taskKind.dueAt({ status: "waiting", attempts: 1, errors: [], nextAttemptAt: 5 }), 5);
 * ```
 */
export const taskKind: StepKind = {
  name: "task",
  ready(ctx) {
    ctx.startAttempt();
  },
  attemptEnded(ctx, attempt, outcome) {
    if (!outcome.ok) return attemptFailed(ctx, attempt, outcome.error);
    const now = ctx.now();
    const rec = ctx.record();
    ctx.transition(
      {
        ...rec,
        status: transitionStep(rec.status, "succeeded"),
        finishedAt: now,
        output: outcome.output,
      },
      {
        attempt,
        durationMs: rec.attemptStartedAt === undefined ? undefined : now - rec.attemptStartedAt,
      },
    );
    ctx.succeeded(outcome.value);
  },
  timerDue(ctx) {
    if (ctx.record().status === "waiting") ctx.startAttempt();
  },
  recover(ctx, { reloaded }) {
    const rec = ctx.record();
    if (rec.status === "waiting") return ctx.armTimer(rec.nextAttemptAt ?? ctx.now());
    if (rec.status !== "running") return;
    // The process that ran this attempt is gone; its result was never
    // committed. One this worker abandoned to reload the run (a failed
    // write elsewhere in it) was not lost to a crash: it does not count.
    attemptFailed(
      ctx,
      rec.attempts,
      new AttemptInterruptedError(
        ctx.step.name,
        rec.attempts,
        reloaded ? "a reload after a failed write" : undefined,
      ),
      { delayMs: 0, uncharged: reloaded },
    );
  },
  dueAt(rec) {
    return rec.status === "waiting" ? rec.nextAttemptAt : undefined;
  },
};

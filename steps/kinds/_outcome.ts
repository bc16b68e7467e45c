/**
 * How the kinds that run no body of their own (sleep, wait, child, map) end
 * their step: with a value they computed, or failed with the run.
 *
 * @module
 */
import { toErrorData } from "../../engine/errors.ts";
import type { StepKindContext } from "../../engine/step_kind.ts";
import { transitionStep } from "../../engine/states.ts";

/** Ends the step `succeeded` with `value` (small, stored inline), and lets what needs it start. */
export function succeedWith(ctx: StepKindContext, value: unknown): void {
  const rec = ctx.record();
  const now = ctx.now();
  const encoded = ctx.encode(value);
  ctx.transition(
    {
      ...rec,
      status: transitionStep(rec.status, "succeeded"),
      finishedAt: now,
      output: encoded.ref,
    },
    { attempt: rec.attempts, durationMs: now - (rec.startedAt ?? now) },
  );
  ctx.succeeded(encoded.value);
}

/** Ends the step `failed` because of `cause`, and the run with it: "Step 'x' failed: <message>". */
export function failWith(ctx: StepKindContext, message: string, cause: unknown): void {
  const rec = ctx.record();
  const attempt = Math.max(1, rec.attempts);
  const data = toErrorData(cause);
  ctx.transition(
    { ...rec, status: transitionStep(rec.status, "failed"), finishedAt: ctx.now() },
    { attempt, error: data },
  );
  ctx.failRun({
    name: "StepFailedError",
    message: `Step '${ctx.step.name}' failed: ${message}`,
    details: { step: ctx.step.name, attempt },
    cause: data,
  });
}

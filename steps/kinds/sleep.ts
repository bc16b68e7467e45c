/**
 * The sleep kind: a step that waits until a time, on disk. When it becomes
 * ready it computes its end from the run's input and results, records it
 * (`sleeping`, `resumeAt`) and arms a timer; the run then waits in the due
 * index until then, holding no memory, however long the sleep (past the KV
 * queue's 30-day delay too: the due index, not the queue, says when).
 *
 * @module
 */
import type { StepKind, StepKindContext } from "../../engine/step_kind.ts";
import { transitionStep } from "../../engine/states.ts";
import { failWith, succeedWith } from "./_outcome.ts";

function wake(ctx: StepKindContext): void {
  const rec = ctx.record();
  if (rec.status !== "sleeping") return;
  const until = rec.resumeAt ?? ctx.now();
  if (until > ctx.now()) return ctx.armTimer(until);
  succeedWith(ctx, { until: new Date(until).toISOString() });
}

/**
 * The sleep kind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { sleepKind } from "./sleep.ts";
 * assert.equal(sleepKind.dueAt({ status: "sleeping", attempts: 1, errors: [], resumeAt: 9 }), 9);
 * ```
 */
export const sleepKind: StepKind = {
  name: "sleep",
  ready(ctx) {
    const rec = ctx.record();
    const now = ctx.now();
    let until: number;
    try {
      until = ctx.step.sleep!.until({ input: ctx.input(), results: ctx.results() }, now);
    } catch (error) {
      return failWith(
        ctx,
        `its sleep time could not be computed: ${(error as Error)?.message}`,
        error,
      );
    }
    ctx.transition(
      {
        ...rec,
        status: transitionStep(rec.status, "sleeping"),
        attempts: 1,
        startedAt: now,
        resumeAt: until,
      },
      { attempt: 1, nextAttemptAt: until },
    );
    ctx.armTimer(until);
  },
  attemptEnded() {
    // A sleep runs no body.
  },
  timerDue: wake,
  recover(ctx) {
    wake(ctx);
  },
  dueAt(rec) {
    return rec.status === "sleeping" ? rec.resumeAt : undefined;
  },
};

/**
 * The wait-for-event kind: a step that ends with the payload of an event
 * sent to its run, or with `{ timedOut: true }` once its timeout passes.
 * Events live in the run's mailbox in KV (`engine.signal` writes them, and
 * may write them before the step starts); the step takes the oldest one of
 * its name in the same write that commits its result, so an event is taken
 * once. While it waits the run is in the due index (at its timeout, or
 * parked when it has none), holding no memory; a delivery makes it due now.
 *
 * @module
 */
import type { StepKind, StepKindContext } from "../../engine/step_kind.ts";
import { transitionStep } from "../../engine/states.ts";
import { succeedWith } from "./_outcome.ts";

/** Ends the wait if its event is in the mailbox or its timeout has passed. */
function look(ctx: StepKindContext): void {
  const rec = ctx.record();
  if (rec.status !== "awaiting") return;
  const taken = ctx.takeEvent(ctx.step.wait!.event);
  if (taken) {
    return succeedWith(ctx, {
      timedOut: false,
      payload: taken.payload,
      at: new Date(taken.at).toISOString(),
    });
  }
  const timeoutAt = rec.resumeAt;
  if (timeoutAt === undefined) return;
  if (timeoutAt <= ctx.now()) {
    return succeedWith(ctx, { timedOut: true, at: new Date(ctx.now()).toISOString() });
  }
  ctx.armTimer(timeoutAt);
}

/**
 * The wait kind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { waitKind } from "./wait.ts";
 * assert.equal(waitKind.dueAt({ status: "awaiting", attempts: 1, errors: [] }), Infinity);
 * ```
 */
export const waitKind: StepKind = {
  name: "wait",
  ready(ctx) {
    const rec = ctx.record();
    const now = ctx.now();
    const { timeoutMs } = ctx.step.wait!;
    const next = {
      ...rec,
      status: transitionStep(rec.status, "awaiting"),
      attempts: 1,
      startedAt: now,
    };
    if (Number.isFinite(timeoutMs)) next.resumeAt = now + timeoutMs;
    ctx.transition(next, { attempt: 1, nextAttemptAt: next.resumeAt });
    look(ctx);
  },
  attemptEnded() {
    // A wait runs no body.
  },
  timerDue: look,
  eventArrived: look,
  recover: look,
  dueAt(rec) {
    return rec.status === "awaiting" ? rec.resumeAt ?? Infinity : undefined;
  },
};

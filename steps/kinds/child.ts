/**
 * The child kind: a step that starts a run of another workflow and waits
 * for it. The child is created in the same write that records the step's
 * start (with the child's id on the step), so a crash starts one child at
 * most. When the child ends, its last write puts its outcome in this run's
 * mailbox, and the worker that wrote it wakes this run; should that wake be
 * lost with a process, the step looks at its mailbox again now and then (from
 * 30 s up to an hour apart), so no parent waits for ever.
 *
 * @module
 */
import { InvalidInputError, toInputIssues } from "../../engine/errors.ts";
import type { StepKind, StepKindContext } from "../../engine/step_kind.ts";
import { transitionStep } from "../../engine/states.ts";
import { failWith, succeedWith } from "./_outcome.ts";

/** The event a child's end puts in its parent's mailbox, for the step `step`. */
export function childEndedEvent(step: string): string {
  return `~child.${step}`;
}

/** How long after a look the step looks again, growing with the wait's age. */
function nextLook(ctx: StepKindContext): number {
  const now = ctx.now();
  const age = now - (ctx.record().startedAt ?? now);
  return now + Math.min(3_600_000, Math.max(30_000, age));
}

function fail(ctx: StepKindContext, error: unknown, message: string): void {
  failWith(ctx, message, error);
}

/** Ends the step if its child's outcome is in the mailbox; else looks again later. */
function look(ctx: StepKindContext): void {
  const rec = ctx.record();
  if (rec.status !== "awaiting") return;
  const ended = ctx.takeEvent(childEndedEvent(ctx.step.name));
  if (!ended) {
    if ((rec.resumeAt ?? 0) > ctx.now()) return ctx.armTimer(rec.resumeAt!);
    const resumeAt = nextLook(ctx);
    ctx.update({ ...rec, resumeAt });
    return ctx.armTimer(resumeAt);
  }
  const outcome = ended.payload as {
    runId: string;
    status: string;
    results?: Record<string, unknown>;
    error?: { name: string; message: string };
  };
  if (outcome.status !== "succeeded") {
    return fail(
      ctx,
      outcome.error ?? new Error(`child run ${outcome.status}`),
      `child run '${outcome.runId}' ${outcome.status}: ${outcome.error?.message ?? ""}`,
    );
  }
  succeedWith(ctx, { runId: outcome.runId, results: outcome.results ?? {} });
}

/**
 * The child kind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { childKind } from "./child.ts";
 * assert.equal(childKind.dueAt({ status: "awaiting", attempts: 1, errors: [], resumeAt: 7 }), 7);
 * ```
 */
export const childKind: StepKind = {
  name: "child",
  ready(ctx) {
    const spec = ctx.step.child!;
    const def = spec.workflow;
    let input: unknown;
    try {
      input = spec.input({ input: ctx.input(), results: ctx.results() });
    } catch (error) {
      return fail(ctx, error, `its child's input could not be computed: ${String(error)}`);
    }
    const parsed = def.input.safeParse(input);
    if (!parsed.success) {
      const error = new InvalidInputError(
        def.name,
        toInputIssues(parsed.error.issues),
      );
      return fail(ctx, error, error.message);
    }
    let childRunId: string;
    try {
      childRunId = ctx.startChild(def, parsed.data);
    } catch (error) {
      return fail(ctx, error, `its child could not be started: ${(error as Error).message}`);
    }
    const rec = ctx.record();
    const now = ctx.now();
    ctx.transition(
      {
        ...rec,
        status: transitionStep(rec.status, "awaiting"),
        attempts: 1,
        startedAt: now,
        childRunId,
        resumeAt: now + 30_000,
      },
      { attempt: 1 },
    );
    ctx.armTimer(now + 30_000);
  },
  attemptEnded() {
    // A child step runs no body of its own.
  },
  timerDue: look,
  eventArrived: look,
  recover: look,
  dueAt(rec) {
    return rec.status === "awaiting" ? rec.resumeAt : undefined;
  },
};

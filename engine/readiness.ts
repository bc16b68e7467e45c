/**
 * When a step may start, and when a run is done: the rules for `needs`,
 * skipped steps and the compensation phase, as pure functions of a run's
 * step records. The scheduler calls them; step kinds never see them.
 *
 * - A forward step waits until every step it needs has ended. If one of them
 *   was skipped, the step is skipped too, unless it set
 *   `skippedNeeds: "run"`. Then its condition (`when`) decides.
 * - A compensation step (and `onFailure`) waits for the run to be
 *   `compensating` and for every compensation it needs to end, whatever
 *   their outcome: one failed compensation does not stop the others.
 * - A run succeeds when every forward step succeeded or was skipped; a
 *   compensating run ends when every compensation step has ended.
 *
 * @module
 */
import type { LiveRun } from "./live_run.ts";
import { isTerminalStep } from "./states.ts";
import type { StepDefinition } from "../steps/workflow.ts";

/** Whether a pending step may start now. */
export type Readiness =
  /** Something it needs has not ended (or the phase is not its own). */
  | { kind: "wait" }
  /** It never runs; `reason` says why. */
  | { kind: "skip"; reason: string }
  /** It may start once its condition (if any) holds. */
  | { kind: "ready" };

/**
 * Whether the pending `step` of `live` may start.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newLiveRun } from "./live_run.ts";
 * import { readiness } from "./readiness.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const wf = workflow("wf").step("a", () => 1).step("b", { needs: ["a"] }, () => 2);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map([
 *     ["a", { status: "skipped", attempts: 0, errors: [] }],
 *     ["b", { status: "pending", attempts: 0, errors: [] }],
 *   ]),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * assert.deepEqual(readiness(live, wf.getStep("b")!), {
 *   kind: "skip",
 *   reason: "step 'a' it needs was skipped",
 * });
 * ```
 */
export function readiness(live: LiveRun, step: StepDefinition): Readiness {
  const compensating = live.record.status === "compensating";
  if (step.phase === "compensation") {
    if (!compensating) return { kind: "wait" };
    for (const need of step.needs) {
      if (!isTerminalStep(live.steps.get(need)!.status)) return { kind: "wait" };
    }
    if (step.compensates !== undefined) {
      return live.steps.get(step.compensates)!.status === "succeeded"
        ? { kind: "ready" }
        : { kind: "skip", reason: `step '${step.compensates}' did not succeed` };
    }
    return live.record.endsAs === "failed"
      ? { kind: "ready" }
      : { kind: "skip", reason: "the run was cancelled, not failed" };
  }
  if (compensating) return { kind: "wait" };
  let skipped: string | undefined;
  for (const need of step.needs) {
    const status = live.steps.get(need)!.status;
    if (status === "skipped") skipped ??= need;
    else if (status !== "succeeded") return { kind: "wait" };
  }
  if (skipped !== undefined && step.skippedNeeds !== "run") {
    return { kind: "skip", reason: `step '${skipped}' it needs was skipped` };
  }
  return { kind: "ready" };
}

/**
 * What the run's steps say of its end: `"succeeded"` once every forward step
 * succeeded or was skipped, `"compensated"` once a compensating run's
 * compensation steps have all ended, else `undefined`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newLiveRun } from "./live_run.ts";
 * import { runOutcome } from "./readiness.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const wf = workflow("wf").step("a", () => 1);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map([["a", { status: "skipped", attempts: 0, errors: [] }]]),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * assert.equal(runOutcome(live), "succeeded");
 * ```
 */
export function runOutcome(live: LiveRun): "succeeded" | "compensated" | undefined {
  if (live.record.status === "compensating") {
    for (const s of live.def.steps) {
      if (s.phase === "compensation" && !isTerminalStep(live.steps.get(s.name)!.status)) {
        return undefined;
      }
    }
    return "compensated";
  }
  for (const s of live.def.steps) {
    if (s.phase !== "forward") continue;
    const status = live.steps.get(s.name)!.status;
    if (status !== "succeeded" && status !== "skipped") return undefined;
  }
  return "succeeded";
}

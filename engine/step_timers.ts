/**
 * The in-process timers of the runs a worker holds: a retry's backoff, a
 * sleep, a wait's timeout. They are the fast path only; a timer lost with
 * the process is found again through the due index and the KV queue's
 * sweep (`sweep_alarm.ts`).
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import type { LiveRun } from "./live_run.ts";

/**
 * At most one armed timer per step of a held run, kept on the run
 * (`live.retryTimers`) so that it goes with the run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 * import { newLiveRun } from "./live_run.ts";
 * import { StepTimers } from "./step_timers.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const clock = new FakeClock(0);
 * const timers = new StepTimers(clock);
 * const live = newLiveRun(workflow("wf").step("a", () => 1), {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null, steps: new Map(), results: new Map(), nextSeq: 0,
 * });
 * const fired: string[] = [];
 * timers.arm(live, "a", 100, () => fired.push("a"));
 * timers.arm(live, "a", 50, () => fired.push("again")); // one is armed already
 * clock.tick(100);
 * assert.deepEqual(fired, ["a"]);
 * assert.deepEqual(timers.armed(live), []);
 * ```
 */
export class StepTimers {
  readonly #clock: Clock;

  /** Timers on `clock`. */
  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Calls `fire` at `dueAt` (epoch ms) unless the step has a timer armed already. */
  arm(live: LiveRun, step: string, dueAt: number, fire: () => void): void {
    if (live.retryTimers?.has(step)) return;
    const timer = this.#clock.setTimeout(() => {
      live.retryTimers?.delete(step);
      fire();
    }, dueAt - this.#clock.now());
    (live.retryTimers ??= new Map()).set(step, timer);
  }

  /** The steps of `live` with a timer armed. */
  armed(live: LiveRun): string[] {
    return live.retryTimers ? [...live.retryTimers.keys()] : [];
  }

  /** Disarms the step's timer, if it has one. */
  clear(live: LiveRun, step: string): void {
    const timer = live.retryTimers?.get(step);
    if (timer === undefined) return;
    this.#clock.clearTimeout(timer);
    live.retryTimers!.delete(step);
  }

  /** Disarms every timer of `live`. */
  clearAll(live: LiveRun): void {
    if (!live.retryTimers) return;
    for (const timer of live.retryTimers.values()) this.#clock.clearTimeout(timer);
    live.retryTimers = undefined;
  }
}

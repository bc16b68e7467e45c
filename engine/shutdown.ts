/**
 * The two parts of a graceful shutdown that do not depend on the rest of
 * the scheduler: the grace period that waits for attempts in flight, and
 * the write-back of the attempts it cut short, as due now and not charged,
 * so a deploy costs no step an attempt.
 *
 * @module
 */
import type { Clock, TimerHandle } from "./clock.ts";
import { AttemptInterruptedError, StepCancelledError, toErrorData } from "./errors.ts";
import type { LiveRun, RunningAttempt } from "./live_run.ts";
import { transitionStep } from "./states.ts";
import { boundErrors, recordStep } from "./transitions.ts";
import type { Txn } from "./txn.ts";

/**
 * The wait of a shutdown for attempts in flight: it ends when the last one
 * does ({@linkcode GracePeriod.idle}), when its time is up, or when
 * {@linkcode GracePeriod.end} cuts it (a second signal).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 * import { GracePeriod } from "./shutdown.ts";
 * const clock = new FakeClock(0);
 * const grace = new GracePeriod(clock);
 * let over = false;
 * const waiting = grace.wait(5_000).then(() => over = true);
 * await clock.advance(4_999);
 * assert.ok(!over);
 * await clock.advance(1);
 * await waiting;
 * assert.ok(over);
 * ```
 */
export class GracePeriod {
  readonly #clock: Clock;
  #cut = false;
  #end: (() => void) | undefined;
  readonly #idleWaiters = new Set<() => void>();

  /** Creates a grace period timed on `clock`, not started. */
  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /**
   * Resolves after `graceMs`, or sooner once {@linkcode GracePeriod.idle} or
   * {@linkcode GracePeriod.end} is called; at once if `graceMs` is not
   * positive or `end()` was called before.
   */
  async wait(graceMs: number): Promise<void> {
    if (!(graceMs > 0) || this.#cut) return;
    let timer: TimerHandle | undefined;
    await Promise.race([
      new Promise<void>((resolve) => this.#idleWaiters.add(resolve)),
      new Promise<void>((resolve) => {
        timer = this.#clock.setTimeout(resolve, graceMs);
        this.#end = resolve;
      }),
    ]);
    this.#end = undefined;
    if (timer) this.#clock.clearTimeout(timer);
    this.#idleWaiters.clear();
  }

  /** Nothing is in flight any more: a wait in progress ends. */
  idle(): void {
    for (const w of this.#idleWaiters) w();
  }

  /** Ends the wait in progress now, or makes the coming one empty. */
  end(): void {
    this.#cut = true;
    this.#end?.();
  }
}

/**
 * Abandons every attempt of `runs` still running and records each, in
 * `txn`, as waiting for a new attempt due now that does not count against
 * `maxAttempts` (`uncharged`). Each attempt's slot is given back (through
 * `finishAttempt`) before its body is aborted, so a body that ends while
 * the write is in flight finds its attempt gone and changes nothing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 * import { newLiveRun } from "./live_run.ts";
 * import { writeBackRunning } from "./shutdown.ts";
 * import { Txn } from "./txn.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const wf = workflow("wf").step("a", () => 1);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map([["a", { status: "running", attempts: 1, errors: [] }]]),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * live.running.set("a", { attempt: 1, controller: new AbortController(), startedAt: 0, capKey: "wf/a" });
 * const txn = new Txn();
 * writeBackRunning(txn, [live], {
 *   clock: new FakeClock(10),
 *   finishAttempt: (run, step) => void run.running.delete(step),
 * });
 * assert.equal(live.steps.get("a")!.status, "waiting");
 * assert.equal(live.steps.get("a")!.uncharged, 1);
 * ```
 */
export function writeBackRunning(
  txn: Txn,
  runs: Iterable<LiveRun>,
  options: {
    /** The source of time. */
    clock: Clock;
    /** Gives the attempt's slot back and drops it from `live.running`. */
    finishAttempt: (live: LiveRun, step: string, running: RunningAttempt) => void;
  },
): void {
  const { clock } = options;
  const now = clock.now();
  for (const live of runs) {
    for (const [name, r] of [...live.running]) {
      options.finishAttempt(live, name, r);
      r.controller.abort(new StepCancelledError(name, "engine closed"));
      const rec = live.steps.get(name)!;
      const error = toErrorData(new AttemptInterruptedError(name, r.attempt, "engine shut down"));
      recordStep(txn, live, {
        step: name,
        next: {
          ...rec,
          status: transitionStep(rec.status, "waiting"),
          errors: boundErrors([...rec.errors, { attempt: r.attempt, at: now, error }]),
          nextAttemptAt: now,
          uncharged: (rec.uncharged ?? 0) + 1,
        },
        attempt: r.attempt,
        error,
        nextAttemptAt: now,
        at: clock.now(),
      });
    }
  }
}

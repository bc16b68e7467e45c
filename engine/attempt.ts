/**
 * Runs one attempt of one step: the timeout, the abort signal, and the
 * abandonment of a body that ignores its signal.
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import { StepTimeoutError } from "./errors.ts";

/** Skips the body of an attempt that ended before it started. */
const NOT_STARTED = Symbol("not started");

const leaseLost = () => new Error("the attempt's body was not started: its lease was lost");

/** How an attempt ended. */
export type AttemptOutcome =
  | { ok: true; value: unknown }
  | { ok: false; error: unknown };

/** What {@linkcode runAttempt} needs. */
export interface AttemptSpec {
  /** The step, for the timeout error. */
  step: string;
  /** The attempt, for the timeout error. */
  attempt: number;
  /** Limit of the attempt. */
  timeoutMs: number;
  /** Aborted by the engine to stop the attempt (cancellation, run failure). */
  controller: AbortController;
  /** The source of time. */
  clock: Clock;
  /** Calls the body; it receives `controller.signal`. */
  body: () => unknown;
  /**
   * Asked in the body's own job, just before the body is called: `false`
   * (or a promise of it) skips the body. The engine checks there that the
   * run's lease is still its own, as late as it can. @default {always}
   */
  mayStart?: () => boolean | Promise<boolean>;
  /** Called once the body settled, or once it is known never to start. @default {undefined} */
  onSettled?: () => void;
}

/**
 * Runs the body until it settles, times out, or is aborted, whichever comes
 * first. On timeout the signal aborts with a {@linkcode StepTimeoutError}.
 * The outcome never waits for a body that ignores its signal. The body is
 * called in a microtask, not before this returns, and not at all when the
 * attempt ended (aborted) before that.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { runAttempt } from "./attempt.ts";
 * import { systemClock } from "./clock.ts";
 * const outcome = await runAttempt({
 *   step: "s", attempt: 1, timeoutMs: 1_000, controller: new AbortController(),
 *   clock: systemClock, body: () => 42,
 * });
 * assert.ok(outcome.ok && outcome.value === 42);
 * ```
 */
export function runAttempt(spec: AttemptSpec): Promise<AttemptOutcome> {
  const { controller, clock } = spec;
  return new Promise<AttemptOutcome>((resolve) => {
    let settled = false;
    const finish = (outcome: AttemptOutcome) => {
      if (settled) return;
      settled = true;
      clock.clearTimeout(timer);
      controller.signal.removeEventListener("abort", onAbort);
      resolve(outcome);
    };
    const onAbort = () => finish({ ok: false, error: controller.signal.reason });
    const timer = clock.setTimeout(() => {
      controller.abort(new StepTimeoutError(spec.step, spec.attempt, spec.timeoutMs));
    }, spec.timeoutMs);
    if (controller.signal.aborted) {
      spec.onSettled?.();
      return onAbort();
    }
    controller.signal.addEventListener("abort", onAbort, { once: true });
    // The body starts in a job of its own, called by nothing else: a stack
    // it throws holds its own frames, not those of the commit that launched
    // it, which makes it shorter to read and cheaper to format (Deno spends
    // some 10 µs on each frame).
    Promise.resolve()
      .then(() => {
        if (settled) throw NOT_STARTED;
        const may = spec.mayStart?.();
        if (may === false) throw leaseLost();
        if (may instanceof Promise) {
          return may.then((yes) => {
            if (settled) throw NOT_STARTED;
            if (!yes) throw leaseLost();
          });
        }
      })
      .then(spec.body)
      .then((value) => {
        spec.onSettled?.();
        finish({ ok: true, value });
      }, (error) => {
        spec.onSettled?.();
        finish({ ok: false, error });
      });
  });
}

/**
 * Runs one attempt of one step: the timeout, the abort signal, and the
 * abandonment of a body that ignores its signal.
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import { StepTimeoutError } from "./errors.ts";

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
}

/**
 * Runs the body until it settles, times out, or is aborted, whichever comes
 * first. On timeout the signal aborts with a {@linkcode StepTimeoutError}.
 * The outcome never waits for a body that ignores its signal.
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
  const { signal } = controller;
  if (signal.aborted) return Promise.resolve({ ok: false, error: signal.reason });
  const startedAt = clock.now();
  let value: unknown;
  try {
    value = spec.body();
  } catch (error) {
    return Promise.resolve({ ok: false, error });
  }
  if (signal.aborted) return Promise.resolve({ ok: false, error: signal.reason });
  // A body that returned a value has ended: no timer is needed (none could
  // have fired while it ran, as timers do not interrupt synchronous code).
  if (!isThenable(value)) return Promise.resolve({ ok: true, value });
  return new Promise<AttemptOutcome>((resolve) => {
    let settled = false;
    const finish = (outcome: AttemptOutcome) => {
      if (settled) return;
      settled = true;
      clock.clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      resolve(outcome);
    };
    const onAbort = () => finish({ ok: false, error: signal.reason });
    // The limit counts from the start of the body, its synchronous part included.
    const timer = clock.setTimeout(() => {
      controller.abort(new StepTimeoutError(spec.step, spec.attempt, spec.timeoutMs));
    }, Math.max(0, spec.timeoutMs - (clock.now() - startedAt)));
    signal.addEventListener("abort", onAbort, { once: true });
    Promise.resolve(value).then(
      (value) => finish({ ok: true, value }),
      (error) => finish({ ok: false, error }),
    );
  });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === "object" || typeof value === "function") && value !== null &&
    typeof (value as { then?: unknown }).then === "function";
}

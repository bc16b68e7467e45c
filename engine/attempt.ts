/**
 * Runs one attempt of one step: the timeout, the abort signal, and the
 * abandonment of a body that ignores its signal.
 *
 * @module
 */
import type { Clock, TimerHandle } from "./clock.ts";
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
  /**
   * Where the attempt's timeout is kept, shared by the attempts of one
   * engine. @default {a timer of `clock` of its own}
   */
  deadlines?: Deadlines;
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
  const deadlines = spec.deadlines ?? new Deadlines(clock);
  return new Promise<AttemptOutcome>((resolve) => {
    let settled = false;
    const finish = (outcome: AttemptOutcome) => {
      if (settled) return;
      settled = true;
      deadlines.remove(deadline);
      controller.signal.removeEventListener("abort", onAbort);
      resolve(outcome);
    };
    const onAbort = () => finish({ ok: false, error: controller.signal.reason });
    const deadline = deadlines.add(clock.now() + spec.timeoutMs, () => {
      controller.abort(new StepTimeoutError(spec.step, spec.attempt, spec.timeoutMs));
    });
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

/** A deadline of {@linkcode Deadlines}: what to call, and when. */
export interface Deadline {
  /** When it is due, in the clock's epoch milliseconds. */
  readonly atMs: number;
  /** Called once when it is due. */
  readonly onDue: () => void;
}

/**
 * The timeouts of the attempts in flight, on one timer of the clock: the
 * earliest one's. A runtime timer per attempt costs some 400 bytes of old
 * generation that outlive the attempt until the next full collection, and
 * nearly every timeout is cancelled long before it is due; here an
 * attempt costs an entry of a set, and the timer is set again only when a
 * deadline earlier than the one armed arrives (rarely: most steps of an
 * engine share a timeout, so later attempts are due later).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Deadlines } from "./attempt.ts";
 * import { FakeClock } from "./clock.ts";
 * const clock = new FakeClock(0);
 * const deadlines = new Deadlines(clock);
 * const due: string[] = [];
 * deadlines.add(10, () => due.push("a"));
 * const b = deadlines.add(20, () => due.push("b"));
 * deadlines.add(30, () => due.push("c"));
 * deadlines.remove(b);
 * await clock.advance(30);
 * assert.deepEqual(due, ["a", "c"]);
 * assert.equal(deadlines.size, 0);
 * ```
 */
export class Deadlines {
  readonly #clock: Clock;
  readonly #pending = new Set<Deadline>();
  #timer: TimerHandle | undefined;
  #armedAt = Infinity;

  /** Deadlines on `clock`'s timers. */
  constructor(clock: Clock) {
    this.#clock = clock;
  }

  /** Deadlines not yet due nor removed. */
  get size(): number {
    return this.#pending.size;
  }

  /** Calls `onDue` once the clock reaches `atMs`, unless removed first. */
  add(atMs: number, onDue: () => void): Deadline {
    const deadline = { atMs, onDue };
    this.#pending.add(deadline);
    if (atMs < this.#armedAt) this.#arm(atMs);
    return deadline;
  }

  /** Drops `deadline`: it is never called. */
  remove(deadline: Deadline): void {
    if (!this.#pending.delete(deadline) || this.#pending.size > 0) return;
    // Nothing left to time: no timer keeps the process alive.
    if (this.#timer) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Infinity;
  }

  #arm(atMs: number): void {
    if (this.#timer) this.#clock.clearTimeout(this.#timer);
    this.#armedAt = atMs;
    this.#timer = this.#clock.setTimeout(() => this.#fire(), atMs - this.#clock.now());
  }

  #fire(): void {
    // What was armed is due, whatever the clock says (a timer may fire a
    // millisecond early, or the wall clock step back meanwhile).
    const now = Math.max(this.#clock.now(), this.#armedAt);
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const due: Deadline[] = [];
    let next = Infinity;
    for (const d of this.#pending) {
      if (d.atMs <= now) due.push(d);
      else if (d.atMs < next) next = d.atMs;
    }
    for (const d of due) this.#pending.delete(d);
    if (next < Infinity) this.#arm(next);
    for (const d of due) d.onDue();
  }
}

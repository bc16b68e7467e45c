/**
 * Time as the engine sees it. Every timeout, backoff and timestamp in Weft
 * goes through a {@linkcode Clock}, so tests can replace real time with a
 * {@linkcode FakeClock} and move it forward by hand.
 *
 * @module
 */

const MAX_TIMER_MS = 2 ** 31 - 1;

/** An opaque handle returned by {@linkcode Clock.setTimeout}. */
export type TimerHandle = { readonly id: unknown };

/**
 * The source of time and timers for an engine.
 *
 * @example Use the system clock
 * ```ts
 * import assert from "node:assert/strict";
 * import { systemClock } from "./clock.ts";
 * const started = systemClock.now();
 * assert.ok(typeof started === "number");
 * ```
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
  /** Calls `fn` once after `delayMs` milliseconds of this clock's time. */
  setTimeout(fn: () => void, delayMs: number): TimerHandle;
  /** Cancels a timer; cancelling a fired or unknown timer does nothing. */
  clearTimeout(handle: TimerHandle): void;
}

/**
 * The real clock: `Date.now()` and the runtime's timers.
 *
 * @example
 * ```ts
 * import { systemClock } from "./clock.ts";
 * const t = systemClock.setTimeout(() => {}, 10);
 * systemClock.clearTimeout(t);
 * ```
 */
export const systemClock: Clock = Object.freeze({
  now: () => Date.now(),
  setTimeout: (fn: () => void, delayMs: number): TimerHandle => {
    // Runtime timers overflow past 2^31 - 1 ms (~24.8 days) and fire at once;
    // longer waits are chained.
    const handle = { id: undefined as unknown };
    const arm = (remainingMs: number) => {
      const stepMs = Math.min(MAX_TIMER_MS, Math.max(0, remainingMs));
      handle.id = setTimeout(() => {
        if (remainingMs > MAX_TIMER_MS) arm(remainingMs - MAX_TIMER_MS);
        else fn();
      }, stepMs);
    };
    arm(delayMs);
    return handle;
  },
  clearTimeout: (handle: TimerHandle) => clearTimeout(handle.id as number),
});

interface FakeTimer {
  id: number;
  at: number;
  fn: () => void;
}

/**
 * A clock that only moves when told to. Timers due at or before the new time
 * fire in order of their due time when {@linkcode FakeClock.advance} or
 * {@linkcode FakeClock.tick} is called.
 *
 * @example Fire a timer without waiting
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 * const clock = new FakeClock(0);
 * let fired = false;
 * clock.setTimeout(() => fired = true, 1_000);
 * clock.tick(1_000);
 * assert.ok(fired);
 * ```
 */
export class FakeClock implements Clock {
  #now: number;
  #nextId = 1;
  #timers: FakeTimer[] = [];

  /** Creates a clock that reads `startMs` until moved. */
  constructor(startMs: number = Date.UTC(2026, 0, 1)) {
    this.#now = startMs;
  }

  /** The clock's current time in epoch milliseconds. */
  now(): number {
    return this.#now;
  }

  /** Schedules `fn` at `now() + delayMs`. */
  setTimeout(fn: () => void, delayMs: number): TimerHandle {
    const id = this.#nextId++;
    this.#timers.push({ id, at: this.#now + Math.max(0, delayMs), fn });
    return { id };
  }

  /** Removes a pending timer. */
  clearTimeout(handle: TimerHandle): void {
    this.#timers = this.#timers.filter((t) => t.id !== handle.id);
  }

  /** The number of timers not yet fired. */
  get pendingTimers(): number {
    return this.#timers.length;
  }

  /** When the earliest pending timer is due, in epoch milliseconds; `undefined` when none is. */
  get nextDueAt(): number | undefined {
    let next: number | undefined;
    for (const t of this.#timers) if (next === undefined || t.at < next) next = t.at;
    return next;
  }

  /** Moves time forward by `ms`, firing due timers synchronously in order. */
  tick(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      this.#timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.#timers[0];
      if (!next || next.at > target) break;
      this.#timers.shift();
      this.#now = Math.max(this.#now, next.at);
      next.fn();
    }
    this.#now = target;
  }

  /**
   * Moves time forward by `ms` and lets promise callbacks and pending I/O
   * that the fired timers started run before returning.
   */
  async advance(ms: number): Promise<void> {
    this.tick(ms);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

/**
 * Resolves after `delayMs` of `clock`'s time, or rejects with the signal's
 * reason once `signal` aborts. `Infinity` waits for the signal only.
 *
 * @throws {RangeError} when `delayMs` is not a number >= 0.
 *
 * @example Sleep on a fake clock
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock, sleepOn } from "./clock.ts";
 * const clock = new FakeClock(0);
 * let woke = false;
 * const sleeping = sleepOn(clock, 3_600_000).then(() => woke = true);
 * await clock.advance(3_600_000);
 * await sleeping;
 * assert.ok(woke);
 * ```
 */
export function sleepOn(clock: Clock, delayMs: number, signal?: AbortSignal): Promise<void> {
  if (typeof delayMs !== "number" || !(delayMs >= 0)) {
    return Promise.reject(
      new RangeError(`Cannot sleep as 'ms' must be a number >= 0: current value is ${delayMs}`),
    );
  }
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      if (timer) clock.clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = delayMs === Infinity ? undefined : clock.setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Admission of new runs: at most so many starts between their admission and
 * their commit, the rest waiting in arrival order. A burst of `start` calls
 * made in one tick all see an empty write queue, so a bound on the queue
 * alone lets every one of them through at once; counting the starts
 * themselves does not.
 *
 * @module
 */

/**
 * A counting gate with a FIFO of waiters.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Admission } from "./admission.ts";
 * const gate = new Admission(1);
 * await gate.enter();
 * let second = false;
 * const waiting = gate.enter().then(() => second = true);
 * await Promise.resolve();
 * assert.equal(second, false);
 * gate.leave();
 * await waiting;
 * assert.ok(second && gate.inside === 1 && gate.waiting === 0);
 * ```
 */
export class Admission {
  readonly #max: number;
  #inside = 0;
  #queue: (() => void)[] = [];
  #head = 0;

  /** Lets at most `max` callers in at once. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Callers let in and not yet gone. */
  get inside(): number {
    return this.#inside;
  }

  /** Callers waiting to be let in. */
  get waiting(): number {
    return this.#queue.length - this.#head;
  }

  /** Resolves once the caller is let in; each call needs one {@linkcode leave}. */
  enter(): Promise<void> {
    if (this.#inside < this.#max && this.waiting === 0) {
      this.#inside++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#queue.push(resolve));
  }

  /** One caller let in is done: the next waiter, if any, takes its place. */
  leave(): void {
    if (this.#head < this.#queue.length) {
      const next = this.#queue[this.#head];
      this.#queue[this.#head++] = undefined as never;
      // Drop the consumed prefix now and then: shifting one by one is quadratic.
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      next();
      return;
    }
    this.#inside = Math.max(0, this.#inside - 1);
  }
}

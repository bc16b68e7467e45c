/**
 * Admission of new runs: at most so many starts between their admission and
 * their commit, the rest waiting in arrival order. A burst of `start` calls
 * made in one tick all see an empty write queue, so a bound on the queue
 * alone lets every one of them through at once; counting the starts
 * themselves does not.
 *
 * @module
 */

interface Waiting {
  task: () => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

/**
 * Runs tasks with at most `max` of them in flight, the rest waiting in
 * arrival order. A waiting task costs a small record, not a suspended
 * async function: a burst may leave thousands waiting.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Admission } from "./admission.ts";
 * const gate = new Admission(1);
 * const releases: (() => void)[] = [];
 * const first = gate.run(() => new Promise<string>((r) => releases.push(() => r("first"))));
 * const second = gate.run(() => Promise.resolve("second"));
 * assert.equal(gate.inside, 1);
 * assert.equal(gate.waiting, 1);
 * releases[0]();
 * assert.deepEqual(await Promise.all([first, second]), ["first", "second"]);
 * assert.equal(gate.inside, 0);
 * ```
 */
export class Admission {
  readonly #max: number;
  #inside = 0;
  #queue: (Waiting | undefined)[] = [];
  #head = 0;

  /** Lets at most `max` tasks run at once. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Tasks running. */
  get inside(): number {
    return this.#inside;
  }

  /** Tasks waiting to run. */
  get waiting(): number {
    return this.#queue.length - this.#head;
  }

  /** Runs `task` once fewer than `max` others run; settles as its promise does. */
  run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#inside < this.#max && this.waiting === 0) return this.#start(task);
    return new Promise<T>((resolve, reject) =>
      this.#queue.push({ task, resolve: resolve as (value: unknown) => void, reject })
    );
  }

  #start<T>(task: () => Promise<T>): Promise<T> {
    this.#inside++;
    let promise: Promise<T>;
    try {
      promise = task();
    } catch (error) {
      promise = Promise.reject(error);
    }
    const leave = () => this.#leave();
    promise.then(leave, leave);
    return promise;
  }

  #leave(): void {
    this.#inside--;
    if (this.#head === this.#queue.length) return;
    const next = this.#queue[this.#head]!;
    this.#queue[this.#head++] = undefined;
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      // Drop the consumed prefix now and then: shifting one by one is quadratic.
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    this.#start(next.task).then(next.resolve, next.reject);
  }
}

/**
 * What an engine is doing right now, as a count: commits being flushed,
 * claim rounds, polls, heartbeats, reloads and step bodies each hold a unit
 * of work while they run. A step body waiting in `ctx.sleep` holds none: it
 * waits for the clock, not for work. The test kit (`testing.ts`) waits on
 * this count instead of polling for the effects it expects.
 *
 * @module
 */

/**
 * A count of work in flight and a notifier for when it falls to zero.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Activity } from "./activity.ts";
 * const activity = new Activity();
 * const end = activity.begin();
 * let idle = false;
 * const settled = activity.settled().then(() => idle = true);
 * assert.equal(activity.busy, 1);
 * end();
 * end(); // ending twice counts once
 * await settled;
 * assert.ok(idle);
 * assert.equal(activity.busy, 0);
 * ```
 */
export class Activity {
  #busy = 0;
  #begun = 0;
  #waiters: (() => void)[] = [];

  /** Units of work in flight. */
  get busy(): number {
    return this.#busy;
  }

  /** Units of work begun so far: a change tells that work started meanwhile. */
  get begun(): number {
    return this.#begun;
  }

  /** Marks one unit of work begun; the function returned ends it, once. */
  begin(): () => void {
    this.#busy++;
    this.#begun++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.#busy === 0) { for (const wake of this.#waiters.splice(0)) wake(); }
    };
  }

  /** Holds a unit of work until `promise` settles; returns `promise`. */
  track<T>(promise: Promise<T>): Promise<T> {
    const end = this.begin();
    promise.then(end, end);
    return promise;
  }

  /** Resolves once nothing is in flight: at once when nothing is. */
  settled(): Promise<void> {
    if (this.#busy === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }
}

/**
 * The unit of work of one step body: held while the body runs, let go while
 * it waits in `ctx.sleep` (any sleep pending counts as waiting), released
 * for good once the body settles.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Activity, BodyActivity } from "./activity.ts";
 * const activity = new Activity();
 * const body = new BodyActivity(activity);
 * body.park();
 * assert.equal(activity.busy, 0);
 * body.unpark();
 * assert.equal(activity.busy, 1);
 * body.done();
 * assert.equal(activity.busy, 0);
 * ```
 */
export class BodyActivity {
  readonly #activity: Activity;
  #end: (() => void) | undefined;
  #sleeping = 0;
  #done = false;

  /** Begins the body's unit of work. */
  constructor(activity: Activity) {
    this.#activity = activity;
    this.#end = activity.begin();
  }

  /** A sleep began. */
  park(): void {
    if (this.#sleeping++ === 0) {
      this.#end?.();
      this.#end = undefined;
    }
  }

  /** A sleep ended (elapsed or aborted). */
  unpark(): void {
    if (--this.#sleeping === 0 && !this.#done) this.#end = this.#activity.begin();
  }

  /** The body settled. */
  done(): void {
    this.#done = true;
    this.#end?.();
    this.#end = undefined;
  }
}

/**
 * Concurrency limits: an engine-wide cap on attempts in flight and a cap per
 * step, with a FIFO of work that waits for a slot. The waiting work is
 * durable elsewhere (its step record says pending or waiting); this list is
 * only the in-process order in which it gets slots.
 *
 * @module
 */

/** One unit of work waiting for a slot. */
export interface SlotRequest {
  /** The run. */
  runId: string;
  /** The step. */
  step: string;
  /** The key of the per-step cap, `workflow/step`. */
  capKey: string;
  /** The per-step cap. */
  cap: number;
}

/**
 * Counts slots in use and queues requests that do not fit.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Slots } from "./slots.ts";
 * const slots = new Slots(1);
 * assert.ok(slots.tryAcquire("wf/a", 5));
 * assert.ok(!slots.tryAcquire("wf/a", 5));
 * slots.release("wf/a");
 * assert.ok(slots.inUse === 0);
 * ```
 */
export class Slots {
  readonly #max: number;
  readonly #byKey = new Map<string, number>();
  #inUse = 0;
  // Insertion-ordered, so iteration is FIFO and removal is O(1).
  #waiting = new Map<string, SlotRequest>();

  /** Creates the counter with an engine-wide cap. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Slots in use engine-wide. */
  get inUse(): number {
    return this.#inUse;
  }

  /** The engine-wide cap. */
  get max(): number {
    return this.#max;
  }

  /** Requests waiting for a slot. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Slots in use for one per-step key. */
  inUseFor(capKey: string): number {
    return this.#byKey.get(capKey) ?? 0;
  }

  /** Takes a slot if both caps allow. */
  tryAcquire(capKey: string, cap: number): boolean {
    if (this.#inUse >= this.#max || this.inUseFor(capKey) >= cap) return false;
    this.#inUse++;
    this.#byKey.set(capKey, this.inUseFor(capKey) + 1);
    return true;
  }

  /** Gives a slot back. */
  release(capKey: string): void {
    const n = this.inUseFor(capKey);
    if (n <= 0) throw new Error(`Slot released twice for ${capKey}`);
    if (n === 1) this.#byKey.delete(capKey);
    else this.#byKey.set(capKey, n - 1);
    this.#inUse--;
  }

  /** Queues a request that did not get a slot. */
  enqueue(request: SlotRequest): void {
    this.#waiting.set(`${request.runId}\u0000${request.step}`, request);
  }

  /** Drops a queued request (its run ended). */
  forget(runId: string, step: string): void {
    this.#waiting.delete(`${runId}\u0000${step}`);
  }

  /**
   * Removes and returns the first queued requests that now fit, taking a slot
   * for each, in FIFO order except that a request blocked by its per-step
   * cap, or not `eligible` yet, lets later ones pass.
   */
  takeFitting(eligible: (r: SlotRequest) => boolean = () => true): SlotRequest[] {
    const taken: SlotRequest[] = [];
    for (const [key, r] of this.#waiting) {
      if (this.#inUse >= this.#max) break;
      if (eligible(r) && this.tryAcquire(r.capKey, r.cap)) {
        taken.push(r);
        this.#waiting.delete(key);
      }
    }
    return taken;
  }
}

/**
 * Callers of `result()`, by run id. A run this worker ends resolves its
 * waiters from the commit that ends it; a run held by another process, or
 * waiting in the due index, is looked at on each poll, so a waiter never
 * depends on which worker carries the run on.
 *
 * @module
 */
import type { RunSnapshot } from "./snapshot.ts";
import { isTerminalRun, type RunStatus } from "./states.ts";

/** A caller of `result()` waiting for a run to end. */
export interface Waiter {
  /** Called with the run's snapshot once it is terminal. */
  resolve(snapshot: RunSnapshot): void;
  /** Called when the run cannot be waited for any more (engine closed, run stuck). */
  reject(error: unknown): void;
}

/** What the registry reads on a poll. */
export interface WaiterReads {
  /** The statuses of these runs as stored (`undefined`: no such run). */
  statuses(runIds: string[]): Promise<(RunStatus | undefined)[]>;
  /** A run's full snapshot. */
  snapshot(runId: string): Promise<RunSnapshot>;
  /** Whether this worker holds the run (it then resolves it itself). */
  holds(runId: string): boolean;
}

/**
 * The waiters of one engine.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { WaiterRegistry } from "./waiters.ts";
 * const waiters = new WaiterRegistry();
 * let got = "";
 * waiters.add("r1", { resolve: (s) => got = s.status, reject: () => {} });
 * waiters.resolve("r1", { status: "succeeded" } as never);
 * assert.equal(got, "succeeded");
 * assert.equal(waiters.size, 0);
 * ```
 */
export class WaiterRegistry {
  readonly #byRun = new Map<string, Set<Waiter>>();
  #cursor = 0;

  /** Runs waited for. */
  get size(): number {
    return this.#byRun.size;
  }

  /** Adds a waiter; returns a function that removes it. */
  add(runId: string, waiter: Waiter): () => void {
    let set = this.#byRun.get(runId);
    if (!set) this.#byRun.set(runId, set = new Set());
    set.add(waiter);
    return () => {
      set.delete(waiter);
      if (set.size === 0 && this.#byRun.get(runId) === set) this.#byRun.delete(runId);
    };
  }

  /** Whether anyone waits for the run. */
  has(runId: string): boolean {
    return this.#byRun.has(runId);
  }

  /** Resolves and removes every waiter of the run. */
  resolve(runId: string, snapshot: RunSnapshot): void {
    const set = this.#byRun.get(runId);
    if (!set) return;
    this.#byRun.delete(runId);
    for (const w of set) w.resolve(snapshot);
  }

  /** Rejects and removes every waiter of the run. */
  reject(runId: string, error: unknown): void {
    const set = this.#byRun.get(runId);
    if (!set) return;
    this.#byRun.delete(runId);
    for (const w of set) w.reject(error);
  }

  /** Rejects and removes every waiter. */
  rejectAll(error: unknown): void {
    for (const runId of [...this.#byRun.keys()]) this.reject(runId, error);
  }

  /**
   * Resolves the waiters of runs that another worker ended, looking at up to
   * `limit` runs per call, in turn, so a worker waiting for 10,000 runs
   * spends a bounded number of reads per poll.
   */
  async poll(reads: WaiterReads, limit = 100): Promise<void> {
    const all = [...this.#byRun.keys()].filter((id) => !reads.holds(id));
    if (all.length === 0) return;
    const from = this.#cursor % all.length;
    const ids = [...all.slice(from), ...all.slice(0, from)].slice(0, limit);
    this.#cursor = from + ids.length;
    for (let i = 0; i < ids.length; i += 10) {
      const batch = ids.slice(i, i + 10);
      const statuses = await reads.statuses(batch);
      for (let j = 0; j < batch.length; j++) {
        const status = statuses[j];
        if (status === undefined || !isTerminalRun(status) || !this.has(batch[j])) continue;
        this.resolve(batch[j], await reads.snapshot(batch[j]));
      }
    }
  }
}

/**
 * Watches an engine's committed transitions: when each run ended, and how
 * many attempts started, failed and were retried. Events are emitted only
 * after their commit, so an end time here is an acknowledged, durable end.
 * Only `bench/` imports this file.
 *
 * @module
 */
import type { Engine } from "../mod.ts";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

/**
 * Counts transitions of one engine.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { workflow, createEngine } from "../mod.ts";
 * import { RunTracker } from "./_tracker.ts";
 * const wf = workflow("w").step("s", () => 1);
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [wf] });
 * const tracker = new RunTracker(engine);
 * await engine.start("w", null);
 * await tracker.waitForEnded(1);
 * assert.ok(tracker.succeeded === 1);
 * await engine.close();
 * kv.close();
 * ```
 */
export class RunTracker {
  /** `performance.now()` at which each run's terminal transition was committed. */
  readonly endedAt = new Map<string, number>();
  /** Runs that succeeded. */
  succeeded = 0;
  /** Runs that failed or were cancelled. */
  failed = 0;
  /** Attempts started (step transitions to `running`). */
  attempts = 0;
  /** Attempts that failed and will be retried (transitions to `waiting`). */
  retries = 0;
  /** History events committed. */
  events = 0;
  readonly #waiters: { n: number; resolve: () => void }[] = [];
  readonly #unsubscribe: () => void;

  /** Subscribes to `engine`. */
  constructor(engine: Engine) {
    this.#unsubscribe = engine.subscribe(({ runId, event }) => {
      this.events++;
      if (event.type === "step") {
        if (event.to === "running") this.attempts++;
        else if (event.to === "waiting") this.retries++;
        return;
      }
      if (!TERMINAL.has(event.to)) return;
      this.endedAt.set(runId, performance.now());
      if (event.to === "succeeded") this.succeeded++;
      else this.failed++;
      this.#check();
    });
  }

  /** Runs that reached a terminal state. */
  get ended(): number {
    return this.succeeded + this.failed;
  }

  /** Resolves once `n` runs in all have ended. */
  waitForEnded(n: number): Promise<void> {
    if (this.ended >= n) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ n, resolve }));
  }

  /** Stops watching. */
  close(): void {
    this.#unsubscribe();
  }

  #check(): void {
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      if (this.ended >= this.#waiters[i].n) {
        this.#waiters[i].resolve();
        this.#waiters.splice(i, 1);
      }
    }
  }
}

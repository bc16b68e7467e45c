/**
 * Which runs a worker keeps holding after a write, and which it gives back
 * to the due index. A run with nothing in flight is held only while it is
 * worth it: a short backoff, a step waiting for a slot among few idle runs,
 * or a cancel about to act on it. Everything else waits on disk, due when
 * its earliest step is, for any worker to claim.
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import { PARKED_MS } from "./keys.ts";
import { type LiveRun, stepsOf } from "./live_run.ts";
import { readiness } from "./readiness.ts";
import type { StepRecord } from "./records.ts";
import { isTerminalRun, isTerminalStep } from "./states.ts";
import type { Txn } from "./txn.ts";
import type { StepDefinition } from "../steps/workflow.ts";

/** A run with nothing in flight that is due again within this stays held, on its timer. */
export const SHORT_WAIT_MS = 1_000;

/**
 * When a run with nothing in flight next needs a worker, in epoch
 * milliseconds: `now` if a step is queued for a slot or ready to start, the
 * earliest time its waiting steps' kinds give (never before `now`),
 * {@linkcode PARKED_MS} if its steps all wait for an event without a
 * timeout, and `now` if nothing waits at all.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { newLiveRun } from "./live_run.ts";
 * import { nextDue } from "./run_leases.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const wf = workflow("wf").step("a", () => 1);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map([["a", { status: "waiting", attempts: 1, errors: [], nextAttemptAt: 500 }]]),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * assert.equal(nextDue(live, { now: 100, dueAt: (_step, rec) => rec.nextAttemptAt }), 500);
 * ```
 */
export function nextDue(
  live: LiveRun,
  options: {
    now: number;
    dueAt: (step: StepDefinition, record: StepRecord) => number | undefined;
  },
): number {
  const { now } = options;
  let dueAt = Infinity;
  let parked = false;
  for (const s of stepsOf(live)) {
    const rec = live.steps.get(s.name)!;
    if (
      live.queued.has(s.name) || (rec.status === "pending" && readiness(live, s).kind !== "wait")
    ) {
      dueAt = now;
    } else if (!isTerminalStep(rec.status)) {
      const at = options.dueAt(s, rec);
      if (at === Infinity) parked = true;
      else if (at !== undefined) dueAt = Math.min(dueAt, Math.max(now, at));
    }
  }
  // Only an event wakes a run whose steps all wait for one without a timeout.
  if (dueAt === Infinity) return parked ? PARKED_MS : now;
  return dueAt;
}

/** What {@linkcode RunLeases} reads of the scheduler and asks of it. */
export interface RunLeasesOptions {
  /** The source of time. */
  clock: Clock;
  /** Held runs with nothing in flight beyond which new ones wait on disk (and short waits are not kept). */
  maxIdleRuns: () => number;
  /** Runs held with at least one step waiting for a slot. */
  queuedRuns: () => number;
  /** Whether the worker is shutting down: every run it holds goes back. */
  closing: () => boolean;
  /** When a waiting step next needs a worker, as its kind says (`Infinity`: only an event wakes it). */
  dueAt: (step: StepDefinition, record: StepRecord) => number | undefined;
  /** Drops a run from memory, writing nothing. */
  forget: (live: LiveRun) => void;
  /** Makes sure the KV queue's alarm, written with `txn`, comes no later than `dueAt`. */
  planSweep: (txn: Txn, dueAt: number) => void;
  /** Tells this worker's claims that work is due at `dueAt` (once the release is on disk). */
  wakeAt: (dueAt: number) => void;
}

/**
 * Decides, for the runs a write touches, whether this worker keeps holding
 * them, and records the release of those it gives back in the write. Holds
 * the runs pinned in memory and the short waits; the scheduler owns the
 * runs themselves.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 * import { newLiveRun } from "./live_run.ts";
 * import { RunLeases } from "./run_leases.ts";
 * import { Txn } from "./txn.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const clock = new FakeClock(0);
 * const forgotten: string[] = [];
 * const leases = new RunLeases({
 *   clock,
 *   maxIdleRuns: () => 10,
 *   queuedRuns: () => 0,
 *   closing: () => false,
 *   dueAt: (_step, rec) => rec.nextAttemptAt,
 *   forget: (live) => forgotten.push(live.record.id),
 *   planSweep: () => {},
 *   wakeAt: () => {},
 * });
 * const wf = workflow("wf").step("a", () => 1);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map([["a", { status: "waiting", attempts: 1, errors: [], nextAttemptAt: 60_000 }]]),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * const txn = new Txn();
 * txn.consider(live);
 * leases.settle(txn);
 * assert.deepEqual(txn.leaseOf(live), { kind: "due", dueAt: 60_000 });
 * assert.deepEqual(forgotten, ["r"]);
 * ```
 */
export class RunLeases {
  readonly #options: RunLeasesOptions;
  /** Held runs that only wait for a timer due within {@linkcode SHORT_WAIT_MS}. */
  readonly #shortWaits = new Set<LiveRun>();
  /** Runs kept in memory whatever they wait for (being cancelled). */
  readonly #pinned = new Set<LiveRun>();

  /** Creates the bookkeeping of a worker that holds no run yet. */
  constructor(options: RunLeasesOptions) {
    this.#options = options;
  }

  /** Held runs kept only for a short wait. */
  get shortWaits(): number {
    return this.#shortWaits.size;
  }

  /** Keeps `live` in memory whatever it waits for, until it ends or is unpinned. */
  pin(live: LiveRun): void {
    this.#pinned.add(live);
  }

  /** Lets `live` go back to the due index like any run. */
  unpin(live: LiveRun): void {
    this.#pinned.delete(live);
  }

  /** Unpins every run (shutting down, or fenced). */
  unpinAll(): void {
    this.#pinned.clear();
  }

  /** Stops counting `live` as a short wait: it was dropped from memory. */
  dropped(live: LiveRun): void {
    this.#shortWaits.delete(live);
  }

  /** When a run with nothing in flight next needs a worker (see {@linkcode nextDue}). */
  nextDue(live: LiveRun): number {
    return nextDue(live, { now: this.#options.clock.now(), dueAt: this.#options.dueAt });
  }

  /**
   * Gives a held run back to the due index in `txn`, due when its earliest
   * step is, and drops it from memory: from now on it is any worker's.
   */
  release(txn: Txn, live: LiveRun, dueAt: number = this.nextDue(live)): void {
    txn.setLease(live, { kind: "due", dueAt });
    this.#options.planSweep(txn, dueAt);
    this.#options.forget(live);
    live.released = true;
    txn.after.push(() => {
      live.released = false;
      if (dueAt < PARKED_MS) this.#options.wakeAt(dueAt);
    });
  }

  /** Decides, for every run `txn` touches, whether this worker keeps holding it. */
  settle(txn: Txn): void {
    const runs = new Set(txn.runs.keys());
    for (const live of txn.steps.keys()) runs.add(live);
    for (const live of txn.gated) runs.add(live);
    for (const live of txn.considered) runs.add(live);
    for (const live of runs) {
      this.#shortWaits.delete(live);
      if (txn.leaseOf(live) || isTerminalRun(live.record.status)) continue;
      if (live.dead) continue;
      const created = txn.runs.get(live)?.fromStatus === null;
      if (!this.#shouldRelease(live, created)) {
        if (created) txn.setLease(live, { kind: "hold" });
        continue;
      }
      // A run due again within a second (a short backoff) stays, on its
      // timer: writing it back and claiming it again would cost more than
      // it saves. Bounded like the idle runs.
      const dueAt = this.nextDue(live);
      if (
        !this.#options.closing() && !created &&
        dueAt - this.#options.clock.now() <= SHORT_WAIT_MS &&
        this.#shortWaits.size < this.#options.maxIdleRuns() && live.queued.size === 0
      ) {
        this.#shortWaits.add(live);
        continue;
      }
      this.release(txn, live, dueAt);
    }
  }

  /**
   * Whether a held run should go back to the due index: nothing of it is in
   * flight, and it either waits only for time or, new, would wait for a slot
   * behind more idle runs than this worker keeps.
   */
  #shouldRelease(live: LiveRun, created: boolean): boolean {
    if (live.running.size > 0 || this.#pinned.has(live)) return false;
    if (this.#options.closing() || live.queued.size === 0) return true;
    // Admission: a new run waits on disk when the idle runs held are many.
    // A run already held, or just claimed (claims are sized by the room),
    // keeps its place until its queued steps start.
    return created && this.#options.queuedRuns() > this.#options.maxIdleRuns();
  }
}

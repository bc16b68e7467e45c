/**
 * What happens to a run after a write of it failed: memory may be ahead of
 * the disk, so the run is dropped and loaded again from KV, once its own
 * queued writes have settled (commits go out in order). One reload per run
 * at a time; a failure during a reload makes it go again. A run whose writes
 * keep failing is left as it is on disk until the next start.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Activity } from "./activity.ts";
import { EngineClosedError, StorageFullError } from "./errors.ts";
import type { LiveRun } from "./live_run.ts";

const log = getLogger(["weft", "engine"]);

/** Failed writes in a row after which a run is left as it is on disk. */
const MAX_COMMIT_FAILURES = 3;

/** What {@linkcode RunReloads} reads of the scheduler and asks of it. */
export interface RunReloadsOptions {
  /** Drops a run from memory, writing nothing (its attempts are aborted). */
  forget: (live: LiveRun) => void;
  /**
   * Loads the run from KV and carries it on; the attempts of `abandoned`
   * steps were cut by the reload, not lost to a crash, and are not charged.
   */
  resume: (runId: string, abandoned: ReadonlySet<string>) => Promise<unknown>;
  /** The latest write of the run now held under `runId`; a settled promise when none is. */
  lastWrite: (runId: string) => Promise<unknown>;
  /** Whether the engine is closing: nothing is reloaded any more. */
  closing: () => boolean;
  /** Resolves once the store takes writes again after a full disk. */
  whenWritable: () => Promise<void>;
  /** Rejects the callers of the run's `result()` with `reason`: it will not end here. */
  rejectWaiters: (runId: string, reason: unknown) => void;
  /** Counts each reload as work in flight. @default {undefined} */
  activity?: Activity;
}

/**
 * Reloads runs after a failed write, and counts the failures in a row of
 * each: after three the run stays as it is on disk and its waiters are
 * rejected with the error. A full disk is waited out, however long, and not
 * counted; waiters are rejected with `EngineClosedError` if the engine
 * closes meanwhile.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Activity } from "./activity.ts";
 * import { newLiveRun } from "./live_run.ts";
 * import { RunReloads } from "./run_reloads.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const activity = new Activity();
 * const resumed: string[] = [];
 * const reloads = new RunReloads({
 *   forget: (live) => void (live.dead = true),
 *   resume: (runId) => Promise.resolve(void resumed.push(runId)),
 *   lastWrite: () => Promise.resolve(),
 *   closing: () => false,
 *   whenWritable: () => Promise.resolve(),
 *   rejectWaiters: () => {},
 *   activity,
 * });
 * const wf = workflow("wf").step("a", () => 1);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: null,
 *   steps: new Map([["a", { status: "running", attempts: 1, errors: [] }]]),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * reloads.reload(live, new Error("write failed"));
 * await activity.settled();
 * assert.ok(live.dead);
 * assert.deepEqual(resumed, ["r"]);
 * ```
 */
export class RunReloads {
  readonly #options: RunReloadsOptions;
  /** Runs being reloaded. */
  readonly #reloading = new Set<string>();
  /** Runs whose reload must go again: a write failed while it ran. */
  readonly #reloadAgain = new Set<string>();
  /** Steps whose attempts a reload abandoned, not charged to `maxAttempts`, by run. */
  readonly #abandoned = new Map<string, Set<string>>();
  /** Failed writes in a row, by run. */
  readonly #failures = new Map<string, number>();

  /** Creates the bookkeeping of a worker that reloads no run yet. */
  constructor(options: RunReloadsOptions) {
    this.#options = options;
  }

  /**
   * After a failed write of `live` (with `error`), drops the run from memory
   * and reloads it from KV once its own queued writes have settled.
   * `written` names the steps whose records the failed write held: one
   * whose attempt ended in it is still `running` on disk, and is not
   * charged either. Does nothing for a run already dropped, unless a
   * release not yet on disk dropped it.
   */
  reload(live: LiveRun, error: unknown, written: ReadonlySet<string> = new Set()): void {
    if (live.dead && !live.released) return;
    live.released = false;
    const runId = live.record.id;
    // Steps whose write failed were not lost to a crash either: one whose
    // attempt ended in it is still `running` on disk, and is not charged.
    const abandoned = new Set([...live.running.keys(), ...written]);
    this.#options.forget(live);
    const pending = this.#abandoned.get(runId) ?? new Set<string>();
    for (const step of abandoned) pending.add(step);
    this.#abandoned.set(runId, pending);
    // A full disk is waited out, however long: it is not this run's fault.
    const failures = (this.#failures.get(runId) ?? 0) +
      (error instanceof StorageFullError ? 0 : 1);
    this.#failures.set(runId, failures);
    const giveUp = (reason: unknown) => {
      this.#options.rejectWaiters(runId, reason);
      this.#abandoned.delete(runId);
    };
    if (this.#options.closing()) return giveUp(new EngineClosedError());
    if (failures > MAX_COMMIT_FAILURES) {
      log.error("Run {runId} is stuck: its writes keep failing ({error}); left as it is on disk", {
        runId,
        error,
      });
      return giveUp(error);
    }
    if (this.#reloading.has(runId)) {
      this.#reloadAgain.add(runId);
      return;
    }
    this.#reloading.add(runId);
    const end = this.#options.activity?.begin();
    (async () => {
      let lastWrite = live.lastCommit;
      do {
        this.#reloadAgain.delete(runId);
        await lastWrite.catch(() => {});
        await this.#options.whenWritable();
        if (this.#options.closing()) return giveUp(new EngineClosedError());
        const steps = this.#abandoned.get(runId) ?? new Set<string>();
        this.#abandoned.delete(runId);
        await this.#options.resume(runId, steps).catch((e) => {
          // A failed write of the reload itself comes back through `reload`.
          if (!this.#reloadAgain.has(runId)) throw e;
        });
        lastWrite = this.#options.lastWrite(runId);
      } while (this.#reloadAgain.has(runId));
    })().catch((e) => {
      log.error("Run {runId} could not be reloaded: {error}", { runId, error: e });
      giveUp(e);
    }).finally(() => {
      this.#reloading.delete(runId);
      end?.();
    });
  }

  /** A write of `runs` is on disk: their failures in a row start again from none. */
  committed(runs: Iterable<LiveRun>): void {
    if (this.#failures.size === 0) return;
    for (const live of runs) this.#failures.delete(live.record.id);
  }
}

/**
 * A run as the engine holds it in memory while it is unfinished: its stored
 * records, the outputs its steps read, and what is in flight for it
 * (attempts, retry timers, requests for a slot, writes not yet on disk).
 * A worker holds a run only while it has leased it. Only the engine's scheduler changes it.
 *
 * @module
 */
import type { TimerHandle } from "./clock.ts";
import type { Fence } from "./commit_batcher.ts";
import type { RunEvent, RunRecord, StepRecord } from "./records.ts";
import { type RunSnapshot, snapshotOf } from "./snapshot.ts";
import type { AnyWorkflow, StepDefinition } from "../steps/workflow.ts";

/** An attempt in flight; it holds one concurrency slot under `capKey`. */
export interface RunningAttempt {
  /** The attempt's number, from 1. */
  attempt: number;
  /** Aborted to stop the attempt (cancellation, run failure, shutdown). */
  controller: AbortController;
  /** When the attempt started, in epoch milliseconds. */
  startedAt: number;
  /** The key of the per-step cap whose slot it holds. */
  capKey: string;
}

/** A write as a run sees it: is it on disk yet? */
export interface PendingWrite {
  /** Set once the write is committed. */
  readonly durable: boolean;
}

/** What {@linkcode newLiveRun} starts from: a run's stored state. */
export interface StoredRun {
  /** The run record. */
  record: RunRecord;
  /** The input as steps see it: what JSON keeps of the parsed input. */
  input: unknown;
  /** Every step record, by name. */
  steps: Map<string, StepRecord>;
  /** The committed outputs of succeeded steps, by name. */
  results: Map<string, unknown>;
  /** The `seq` of the run's next history event. */
  nextSeq: number;
  /** Events delivered to it that no wait step has taken yet, oldest first. */
  mailbox?: RunEvent[];
  /** The items of its running map steps, by step (their records are in `steps`). */
  mapItems?: Map<string, readonly unknown[]>;
}

/** An unfinished run in memory. */
export interface LiveRun {
  /** Its workflow. */
  def: AnyWorkflow;
  /** The run record as last changed (committed or about to be). */
  record: RunRecord;
  /** The input as steps see it: what JSON keeps of the parsed input. */
  input: unknown;
  /** Every step record, by name. */
  steps: Map<string, StepRecord>;
  /** The committed outputs of succeeded steps, by name. */
  results: Map<string, unknown>;
  /** The `seq` of the run's next history event. */
  nextSeq: number;
  /** Attempts in flight, by step. */
  running: Map<string, RunningAttempt>;
  /**
   * In-process timers of steps waiting for a retry, by step; absent while
   * there are none (most runs never have one, and thousands may be held).
   */
  retryTimers?: Map<string, TimerHandle>;
  /**
   * Steps waiting for a concurrency slot, each with the write that made it
   * ready: it starts only once that write is on disk.
   */
  queued: Map<string, PendingWrite>;
  /** Writes of this run not yet committed. */
  uncommitted: number;
  /** The latest write of this run (a settled promise once it is committed). */
  lastCommit: Promise<unknown>;
  /** Dropped from memory (released, or a failed write); nothing of it may act any more. */
  dead: boolean;
  /**
   * This worker's fence (its registration) when the run was created or
   * loaded. After a fence the worker registers again under a new one: what
   * was read under the old is stale, and none of it may be written under
   * the new. `undefined` for a run built by hand.
   */
  fence: Fence | undefined;
  /** Given back to the due index by a write not yet known to be on disk. */
  released: boolean;
  /** Events delivered to it that no wait step has taken yet, oldest first. */
  mailbox: RunEvent[];
  /** Ids of events its wait steps took (a later read of the mailbox may still list them). */
  taken?: Set<string>;
  /** Compensation steps that failed for good, while it is compensating. */
  failedCompensations?: Set<string>;
  /** The items of its map steps that started, by step. */
  mapItems?: Map<string, readonly unknown[]>;
  /** The definitions the engine runs its map items as, by item name (`step[index]`). */
  itemDefs?: Map<string, StepDefinition>;
}

/** The `lastCommit` of a run with no write yet, or whose last write is committed. */
export const NO_WRITE: Promise<unknown> = Promise.resolve();

/**
 * A live run of `def` with nothing in flight yet.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { needsMet, newLiveRun } from "./live_run.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const wf = workflow("wf").step("a", () => 1).step("b", { needs: ["a"] }, () => 2);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "pending", createdAt: 0 },
 *   input: null,
 *   steps: new Map([
 *     ["a", { status: "succeeded", attempts: 1, errors: [] }],
 *     ["b", { status: "pending", attempts: 0, errors: [] }],
 *   ]),
 *   results: new Map([["a", 1]]),
 *   nextSeq: 0,
 * });
 * assert.ok(needsMet(live, wf.getStep("b")!));
 * assert.equal(live.running.size, 0);
 * ```
 */
export function newLiveRun(def: AnyWorkflow, stored: StoredRun): LiveRun {
  // The collections most runs never use are created when first needed.
  const live: LiveRun = {
    def,
    record: stored.record,
    input: stored.input,
    steps: stored.steps,
    results: stored.results,
    nextSeq: stored.nextSeq,
    running: new Map(),
    queued: new Map(),
    uncommitted: 0,
    lastCommit: NO_WRITE,
    dead: false,
    // Set by the scheduler; present from the start, so every run keeps one shape.
    fence: undefined,
    released: false,
    mailbox: stored.mailbox ?? [],
  };
  if (stored.mapItems) live.mapItems = stored.mapItems;
  return live;
}

/** Whether every step that `step` needs has succeeded. */
export function needsMet(live: LiveRun, step: StepDefinition): boolean {
  return step.needs.every((n) => live.steps.get(n)?.status === "succeeded");
}

/** Whether every step of the run has succeeded. */
export function allStepsSucceeded(live: LiveRun): boolean {
  return live.def.steps.every((s) => live.steps.get(s.name)!.status === "succeeded");
}

/** The run's snapshot as held in memory. */
export function liveSnapshot(live: LiveRun): RunSnapshot {
  return snapshotOf(live.record, live.input, live.steps, live.results, live.def);
}

/** The run's steps, and the items of its maps that started. */
export function* stepsOf(live: LiveRun): Iterable<StepDefinition> {
  yield* live.def.steps;
  if (live.itemDefs) yield* live.itemDefs.values();
}

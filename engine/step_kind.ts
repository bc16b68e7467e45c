/**
 * The seam between the scheduler and kinds of step. The scheduler knows
 * runs, leases, slots, timers and commits; a kind knows what its step does
 * when it becomes ready, when an attempt of its body ends, when its timer is
 * due, and when a worker loads its run from KV. It acts only through a
 * {@linkcode StepKindContext}, which records every change in the write the
 * scheduler commits. A new kind (sleep, wait-for-event, map, child run) is a
 * new file in `steps/kinds/`, not a new branch in the scheduler.
 *
 * @module
 */
import type { ErrorData } from "./errors.ts";
import type { EncodedOutput } from "./output.ts";
import type { RunEvent, StepRecord } from "./records.ts";
import type { AnyWorkflow, StepDefinition } from "../steps/workflow.ts";

/** How an attempt of a step's body ended; a success carries what its record points at. */
export type AttemptOutcome =
  | { ok: true; output: StepRecord["output"]; value: unknown }
  | { ok: false; error: unknown };

/** How one item of a map step ended, after its retries. */
export type ItemOutcome = { ok: true } | { ok: false; error: ErrorData };

/** What a map step may do with its items, within the write being built. */
export interface MapItemsContext {
  /** Stores the items with the write: from now on they are the step's. */
  store(items: readonly unknown[]): void;
  /** How many items were stored. */
  count(): number;
  /** An item's record, once it started. */
  record(index: number): StepRecord | undefined;
  /** An item's committed output, once it succeeded. */
  value(index: number): unknown;
  /** Starts item `index`: its first attempt, under the engine's caps. */
  start(index: number): void;
  /** Carries on an item loaded from KV that had not ended, as a task's recovery does. */
  recover(index: number): void;
}

/** What a step kind may do to its step, within the write being built. */
export interface StepKindContext {
  /** The step's definition. */
  readonly step: StepDefinition;
  /** The step's record as last changed. */
  record(): StepRecord;
  /** The engine's clock, in epoch milliseconds. */
  now(): number;
  /** The run's input. */
  input(): unknown;
  /** The committed results of the steps it needs (absent for a skipped one). */
  results(): Record<string, unknown>;
  /** Encodes a value the kind makes its step's output (small, inline). */
  encode(value: unknown): EncodedOutput;
  /**
   * Takes the oldest event of that name from the run's mailbox, if any; the
   * write being built deletes it, so it is taken once.
   */
  takeEvent(event: string): RunEvent | undefined;
  /** A random number in [0, 1), for jitter. */
  random(): number;
  /**
   * Records the step's next state (a legal transition of its status) and
   * its history event, dated `event.at` (default: now). A kind that read the
   * clock to compute the record passes that reading, so the event and the
   * record agree (a retry's `nextAttemptAt - at` is its delay).
   */
  transition(
    next: StepRecord,
    event: {
      attempt: number;
      error?: ErrorData;
      nextAttemptAt?: number;
      durationMs?: number;
      at?: number;
    },
  ): void;
  /** Changes the step's record without a history event (bookkeeping, such as when to look again). */
  update(next: StepRecord): void;
  /**
   * Creates a run of `def` with `input` (already parsed) in the write being
   * built, linked to this run and step, and returns its id.
   */
  startChild(def: AnyWorkflow, input: unknown): string;
  /** Starts an attempt of the step's body, under the concurrency caps, once this write is durable. */
  startAttempt(): void;
  /** Calls the kind's `timerDue` at `atMs`; a run that waits for it alone waits on disk. */
  armTimer(atMs: number): void;
  /** The step's result is committed: the steps that need it may start. */
  succeeded(value: unknown): void;
  /** Ends the run as failed because of this step. */
  failRun(error: ErrorData): void;
  /** For a map step: its items. */
  items(): MapItemsContext;
}

/** One kind of step: what its events mean. */
export interface StepKind {
  /** The kind's name, as `StepDefinition.kind` names it. */
  readonly name: string;
  /** Every step it needs has succeeded (or the run started, for a step that needs none). */
  ready(ctx: StepKindContext): void;
  /** An attempt of its body ended; `attempt` is the attempt's number. */
  attemptEnded(ctx: StepKindContext, attempt: number, outcome: AttemptOutcome): void;
  /** A timer it armed is due. */
  timerDue(ctx: StepKindContext): void;
  /** Events arrived in the run's mailbox (for a step that waits for one). */
  eventArrived?(ctx: StepKindContext): void;
  /** One of its items ended for good (for a map step). */
  itemEnded?(ctx: StepKindContext, index: number, outcome: ItemOutcome): void;
  /**
   * A worker loaded the run from KV and holds it now. `reloaded` tells an
   * attempt this worker abandoned itself (to reload after a failed write)
   * from one lost with a process.
   */
  recover(ctx: StepKindContext, options: { reloaded: boolean }): void;
  /** While its step waits with nothing running: when it next needs a worker, if at a time. */
  dueAt(record: StepRecord): number | undefined;
}

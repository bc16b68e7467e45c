/**
 * The context a step's kind acts through ({@linkcode StepKindContext}), as
 * one small object per call: its methods live on the prototype and reach
 * the scheduler through {@linkcode KindOps}, made once per scheduler. A
 * context is built for every transition of every step, so an object of a
 * dozen fresh closures each time was a large share of the engine's garbage.
 *
 * @module
 */
import type { ErrorData } from "./errors.ts";
import type { LiveRun } from "./live_run.ts";
import { type EncodedOutput, encodeOutput, INLINE_OUTPUT_BYTES } from "./output.ts";
import type { RunEvent, StepRecord } from "./records.ts";
import type { ItemOutcome, MapItemsContext, StepKindContext } from "./step_kind.ts";
import type { StepChange } from "./transitions.ts";
import type { Txn } from "./txn.ts";
import type { AnyWorkflow, StepDefinition } from "../steps/workflow.ts";

/** What a step kind's context needs of the scheduler. */
export interface KindOps {
  /** The engine's clock. */
  now(): number;
  /** A random number in [0, 1). */
  random(): number;
  /** The committed results of `names` (absent for a skipped step). */
  resultsOf(live: LiveRun, names: readonly string[]): Record<string, unknown>;
  /** Records a step's change (and starts the run on its first step). */
  recordStep(txn: Txn, live: LiveRun, change: StepChange): void;
  /** Starts the step if a slot is free, else queues it. */
  tryStart(txn: Txn, live: LiveRun, step: StepDefinition): void;
  /** Creates a child run of `def` in `txn`; returns its id. */
  startChild(
    txn: Txn,
    live: LiveRun,
    step: StepDefinition,
    def: AnyWorkflow,
    input: unknown,
  ): string;
  /** Calls the kind's `timerDue` at `atMs`. */
  armTimer(txn: Txn, live: LiveRun, step: StepDefinition, atMs: number): void;
  /** The key of an event in a run's mailbox. */
  eventKey(runId: string, eventId: string): Deno.KvKey;
  /** A map item ended for good: its map step decides what follows. */
  itemEnded(txn: Txn, live: LiveRun, item: StepDefinition, outcome: ItemOutcome): void;
  /** A step ended: the steps that need it may start, and the run may be done. */
  resolved(txn: Txn, live: LiveRun, step: StepDefinition): void;
  /** What a map step may do with its items. */
  items(txn: Txn, live: LiveRun, map: StepDefinition): MapItemsContext;
  /** Ends the run as failed because of `step`. */
  failRun(txn: Txn, live: LiveRun, error: ErrorData, step: string): void;
}

/**
 * A step's context for one transition, recorded in `txn`. Built by the
 * scheduler, which is where to look for how it is used.
 */
export class KindContext implements StepKindContext {
  readonly step: StepDefinition;
  /** The engine's clock (the scheduler's own function: safe to pass around). */
  readonly now: () => number;
  /** A random number in [0, 1) (the scheduler's own function: safe to pass around). */
  readonly random: () => number;
  readonly #ops: KindOps;
  readonly #txn: Txn;
  readonly #live: LiveRun;

  /** A context of `step` of `live`, whose changes go into `txn`. */
  constructor(ops: KindOps, txn: Txn, live: LiveRun, step: StepDefinition) {
    this.#ops = ops;
    this.#txn = txn;
    this.#live = live;
    this.step = step;
    this.now = ops.now;
    this.random = ops.random;
  }

  record(): StepRecord {
    return this.#live.steps.get(this.step.name)!;
  }

  input(): unknown {
    return this.#live.input;
  }

  results(): Record<string, unknown> {
    return this.#ops.resultsOf(this.#live, this.step.needs);
  }

  transition(next: StepRecord, event: Parameters<StepKindContext["transition"]>[1]): void {
    this.#ops.recordStep(this.#txn, this.#live, {
      step: this.step.name,
      next,
      ...event,
      at: event.at ?? this.#ops.now(),
    });
  }

  startAttempt(): void {
    this.#ops.tryStart(this.#txn, this.#live, this.step);
  }

  update(next: StepRecord): void {
    this.#live.steps.set(this.step.name, next);
    this.#txn.touchStep(this.#live, this.step.name);
  }

  startChild(def: AnyWorkflow, input: unknown): string {
    return this.#ops.startChild(this.#txn, this.#live, this.step, def, input);
  }

  armTimer(atMs: number): void {
    this.#ops.armTimer(this.#txn, this.#live, this.step, atMs);
  }

  encode(value: unknown): EncodedOutput {
    return encodeOutput(this.step.name, 0, value, INLINE_OUTPUT_BYTES);
  }

  takeEvent(event: string): RunEvent | undefined {
    const live = this.#live;
    const i = live.mailbox.findIndex((e) => e.event === event);
    if (i < 0) return undefined;
    const [taken] = live.mailbox.splice(i, 1);
    (live.taken ??= new Set()).add(taken.id);
    this.#txn.extraDeletes.push(this.#ops.eventKey(live.record.id, taken.id));
    return taken;
  }

  succeeded(value: unknown): void {
    const step = this.step;
    this.#live.results.set(step.name, value);
    if (step.itemOf) return this.#ops.itemEnded(this.#txn, this.#live, step, { ok: true });
    this.#ops.resolved(this.#txn, this.#live, step);
  }

  items(): MapItemsContext {
    return this.#ops.items(this.#txn, this.#live, this.step);
  }

  failRun(error: ErrorData): void {
    const step = this.step;
    if (step.itemOf) return this.#ops.itemEnded(this.#txn, this.#live, step, { ok: false, error });
    if (step.phase === "compensation") {
      // One failed compensation does not stop the others; the run's
      // error names it once they have all ended.
      (this.#live.failedCompensations ??= new Set()).add(step.name);
      return this.#ops.resolved(this.#txn, this.#live, step);
    }
    this.#ops.failRun(this.#txn, this.#live, error, step.name);
  }
}

/**
 * One write of the engine: the runs, steps and history events changed while
 * handling one event, with the effects to run once they are on disk.
 * {@linkcode toWriteOp} turns it into KV mutations when it is committed, so
 * a run or step changed twice in one write is stored once, as it ended.
 *
 * @module
 */
import type { WriteOp } from "./commit_batcher.ts";
import type { KeyLayout } from "./keys.ts";
import type { LiveRun } from "./live_run.ts";
import type { ErrorData } from "./errors.ts";
import { type HistoryEvent, isCreationEvent } from "./records.ts";
import { isTerminalRun, type RunStatus } from "./states.ts";

/** How a write changes who holds a run. */
export type LeaseChange =
  /** A new run, held by this worker. */
  | { kind: "hold" }
  /** The run waits in the due index until `dueAt`; for a held run, its lease ends. */
  | { kind: "due"; dueAt: number };

const NONE: readonly never[] = Object.freeze([]);

/** History events per KV value, in bytes of JSON (a value holds 64 KiB). */
export const HISTORY_BYTES_PER_KEY = 40_000;

/**
 * Changes to apply in one write; materialised only when committed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Txn } from "./txn.ts";
 * const txn = new Txn();
 * assert.ok(txn.empty);
 * txn.extraSets.push([["k"], 1]);
 * assert.ok(!txn.empty);
 * ```
 */
export class Txn {
  /**
   * Runs whose record is written, with their status before this write
   * (`null` for a run this write creates) and, for a new run, its
   * idempotency key.
   */
  readonly runs = new Map<LiveRun, { fromStatus: RunStatus | null; idem?: string }>();
  /** Step records written, by run. */
  readonly steps = new Map<LiveRun, Set<string>>();
  /** History events appended, by run, oldest first. */
  readonly history = new Map<LiveRun, HistoryEvent[]>();
  /** Other keys written as they are (input chunks). */
  readonly extraSets: [Deno.KvKey, unknown][] = [];
  /** Other keys deleted (events a wait step took). */
  readonly extraDeletes: Deno.KvKey[] = [];
  /** Queue messages sent with the write. */
  readonly enqueues: { value: unknown; delayMs?: number }[] = [];
  // Created when first used: most writes gate, lease and reconsider no run.
  #gated: Set<LiveRun> | undefined;
  #leases: Map<LiveRun, LeaseChange> | undefined;
  #consider: Set<LiveRun> | undefined;
  /** Effects to run once the write is durable, in order. */
  readonly after: (() => void)[] = [];
  /**
   * Whether the write is committed (at once when there was nothing to
   * write). Queued steps keep this small object, not the whole write, so a
   * committed write's contents can be collected.
   */
  readonly status: { durable: boolean } = { durable: false };

  /** Whether the write is committed. */
  get durable(): boolean {
    return this.status.durable;
  }

  /** Marks the run's record as changed; the first call keeps its status before this write. */
  touchRun(live: LiveRun, fromStatus: RunStatus | null = live.record.status): void {
    if (!this.runs.has(live)) this.runs.set(live, { fromStatus });
  }

  /** Marks one step record of the run as changed. */
  touchStep(live: LiveRun, step: string): void {
    let set = this.steps.get(live);
    if (!set) this.steps.set(live, set = new Set());
    set.add(step);
  }

  /** Appends a history event of the run. */
  record(live: LiveRun, event: HistoryEvent): void {
    let list = this.history.get(live);
    if (!list) this.history.set(live, list = []);
    list.push(event);
  }

  /** Marks a run with steps queued for a slot that wait for this write to be durable. */
  gate(live: LiveRun): void {
    (this.#gated ??= new Set()).add(live);
  }

  /** The runs {@linkcode gate} marked. */
  get gated(): Iterable<LiveRun> {
    return this.#gated ?? NONE;
  }

  /**
   * Sets how the write changes who holds a run: a new run held by this
   * worker or put in the due index, or a held run given back to the due
   * index. Runs without one stay as they are.
   */
  setLease(live: LiveRun, change: LeaseChange): void {
    (this.#leases ??= new Map()).set(live, change);
  }

  /** The lease change of a run, if {@linkcode setLease} set one. */
  leaseOf(live: LiveRun): LeaseChange | undefined {
    return this.#leases?.get(live);
  }

  /** Every lease change, in the order set. */
  get leases(): Iterable<[LiveRun, LeaseChange]> {
    return this.#leases ?? NONE;
  }

  /** Marks a run to look at when committing: given back to the due index if nothing of it is in flight. */
  consider(live: LiveRun): void {
    (this.#consider ??= new Set()).add(live);
  }

  /** The runs {@linkcode consider} marked. */
  get considered(): Iterable<LiveRun> {
    return this.#consider ?? NONE;
  }

  /** Every run this write touches in any way: written, leased, gated or considered. */
  get allRuns(): Set<LiveRun> {
    const all = new Set<LiveRun>(this.runs.keys());
    for (const live of this.steps.keys()) all.add(live);
    for (const live of this.history.keys()) all.add(live);
    for (const [live] of this.leases) all.add(live);
    for (const live of this.gated) all.add(live);
    for (const live of this.considered) all.add(live);
    return all;
  }

  /** Whether there is nothing to write. */
  get empty(): boolean {
    return this.runs.size === 0 && this.steps.size === 0 && this.history.size === 0 &&
      this.extraSets.length === 0 && this.extraDeletes.length === 0 &&
      this.enqueues.length === 0 && (this.#leases?.size ?? 0) === 0;
  }
}

/**
 * The KV mutations of `txn`, from the runs' and steps' state at the time of
 * the call: records, indexes, history, the idempotency check of a new run,
 * leases of `owner` taken or given back, and the queue messages.
 *
 * @example A new run writes its record and its indexes
 * ```ts
 * import assert from "node:assert/strict";
 * import { keyLayout } from "./keys.ts";
 * import { newLiveRun } from "./live_run.ts";
 * import { toWriteOp, Txn } from "./txn.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const live = newLiveRun(workflow("wf").step("a", () => 1), {
 *   record: { id: "r1", workflow: "wf", status: "pending", createdAt: 0 },
 *   input: null,
 *   steps: new Map(),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * const txn = new Txn();
 * txn.touchRun(live, null);
 * txn.setLease(live, { kind: "hold" });
 * const op = toWriteOp(txn, keyLayout(["weft"]), "w1");
 * assert.deepEqual(op.sets?.map(([key]) => key.join("/")), [
 *   "weft/run/r1",
 *   "weft/by_wf/wf/r1",
 *   "weft/held/r1",
 * ]);
 * ```
 */
export function toWriteOp(txn: Txn, keys: KeyLayout, owner: string): WriteOp {
  const k = keys;
  const sets: [Deno.KvKey, unknown][] = [...txn.extraSets];
  const deletes: Deno.KvKey[] = [...txn.extraDeletes];
  const checks: Deno.AtomicCheck[] = [];
  // Maps are walked by key: an entries iterator makes an array per entry.
  for (const live of txn.runs.keys()) {
    const { fromStatus, idem } = txn.runs.get(live)!;
    const r = live.record;
    sets.push([k.run(r.id), r]);
    const lease = txn.leaseOf(live);
    if (fromStatus === null) {
      sets.push([k.byWorkflow(r.workflow, r.id), true]);
      // A new run is held by this worker, unless it waits in the due index.
      if (lease?.kind === "due") {
        sets.push([k.active(r.id), { dueAt: lease.dueAt }], [
          k.due(lease.dueAt, r.id),
          { seq: live.nextSeq, wf: r.workflow },
        ]);
      } else {
        sets.push([k.held(r.id), { owner }]);
      }
      if (idem !== undefined) {
        checks.push({ key: k.idempotency(r.workflow, idem), versionstamp: null });
        sets.push([k.idempotency(r.workflow, idem), r.id]);
      }
    }
    // Status indexes hold finished runs only; unfinished ones are listed
    // from the `active` index, so a run's start costs no index writes.
    if (fromStatus !== r.status && isTerminalRun(r.status)) {
      sets.push(
        [k.byStatus(r.status, r.id), true],
        [k.byWorkflowStatus(r.workflow, r.status, r.id), true],
      );
    }
    if (isTerminalRun(r.status)) deletes.push(k.held(r.id));
  }
  for (const [live, lease] of txn.leases) {
    const r = live.record;
    const created = txn.runs.get(live)?.fromStatus === null;
    if (created || lease.kind !== "due" || isTerminalRun(r.status)) continue;
    deletes.push(k.held(r.id));
    // The due entry carries where the run's history goes on: its claimer reads one key less.
    sets.push([k.active(r.id), { dueAt: lease.dueAt }], [
      k.due(lease.dueAt, r.id),
      { seq: live.nextSeq, wf: r.workflow },
    ]);
  }
  for (const live of txn.steps.keys()) {
    const names = txn.steps.get(live)!;
    for (const name of names) sets.push([k.step(live.record.id, name), live.steps.get(name)]);
  }
  for (const live of txn.history.keys()) {
    const events = txn.history.get(live)!;
    // A KV value holds 64 KiB: a run ending with hundreds of steps spans keys.
    let part: HistoryEvent[] = [];
    let bytes = 0;
    for (const event of events) {
      // Implied by the run record; reads of the history put it back.
      if (isCreationEvent(event)) continue;
      // The stack stays in the step's record (bounded there) and in the logs;
      // history keeps the error without it, so retries cost no 4 KB each.
      const stored = event.type === "step" && event.error?.stack !== undefined
        ? { ...event, error: withoutStacks(event.error) }
        : event;
      const size = jsonLength(stored);
      if (part.length > 0 && bytes + size > HISTORY_BYTES_PER_KEY) {
        sets.push([k.history(live.record.id, part[0].seq), part]);
        part = [];
        bytes = 0;
      }
      part.push(stored);
      bytes += size;
    }
    if (part.length > 0) sets.push([k.history(live.record.id, part[0].seq), part]);
  }
  return { sets, deletes, checks, enqueues: txn.enqueues };
}

/**
 * `JSON.stringify(event).length`, counted without building the string for
 * the common event of numbers and plain strings (most writes carry several).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { jsonLength } from "./txn.ts";
 * const event = { type: "run", seq: 0, at: 1700000000000, from: null, to: "pending" } as const;
 * assert.equal(jsonLength(event), JSON.stringify(event).length);
 * ```
 */
export function jsonLength(event: HistoryEvent): number {
  let n = 1; // "{"
  let first = true;
  for (const key in event) {
    const value = (event as unknown as Record<string, unknown>)[key];
    if (value === undefined) continue;
    let size: number;
    if (typeof value === "number") size = numberLength(value);
    else if (typeof value === "string" && isPlain(value)) size = value.length + 2;
    else if (value === null) size = 4;
    else return JSON.stringify(event).length;
    n += (first ? 0 : 1) + key.length + 3 + size; // ,"key":value
    first = false;
  }
  return n + 1; // "}"
}

/** Whether JSON writes `text` as it is: no quote, backslash, control character or surrogate. */
function isPlain(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return false;
  }
  return true;
}

function numberLength(value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) return String(value).length;
  let digits = 1;
  for (let v = value; v >= 10; v = Math.floor(v / 10)) digits++;
  return digits;
}

/** `error` and its causes without their stacks. */
function withoutStacks(error: ErrorData): ErrorData {
  const { stack: _stack, cause, ...rest } = error;
  return cause ? { ...rest, cause: withoutStacks(cause) } : rest;
}

/** The runs of `txn` that are terminal now: the write ends them. */
export function endedRuns(txn: Txn): LiveRun[] {
  const ended: LiveRun[] = [];
  for (const live of txn.runs.keys()) if (isTerminalRun(live.record.status)) ended.push(live);
  return ended;
}

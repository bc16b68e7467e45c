/**
 * The read half of recovery: loads an unfinished run from KV into a
 * {@linkcode LiveRun}. What to do with what was in flight when it was
 * written (an interrupted attempt, a retry timer) is the scheduler's part.
 *
 * @module
 */
import { itemName } from "./keys.ts";
import { type LiveRun, newLiveRun } from "./live_run.ts";
import type { RunRecord } from "./records.ts";
import { isTerminalRun } from "./states.ts";
import type { RunStore } from "./store.ts";
import type { AnyWorkflow } from "../steps/workflow.ts";

/** What {@linkcode loadRun} found. */
export type LoadedRun =
  /** No run has that id. */
  | { kind: "missing" }
  /** The run is terminal: there is nothing to carry on. */
  | { kind: "finished"; record: RunRecord }
  /** The run is unfinished, but of a workflow not among `workflows`. */
  | { kind: "unserved"; record: RunRecord }
  /** The run is held by another worker, or waits in the due index: not this worker's. */
  | { kind: "other" }
  /** The run, ready to carry on. */
  | { kind: "live"; live: LiveRun };

/** Where {@linkcode loadRun} reads from. */
export interface LoadRunOptions {
  /** The run store. */
  store: RunStore;
  /** The workflows served, by name. */
  workflows: ReadonlyMap<string, AnyWorkflow>;
  /** The worker loading it: an unfinished run is loaded only if this worker holds its lease. */
  owner: string;
  /** The `seq` of the run's next history event, when known (a read saved). */
  nextSeq?: number | undefined;
  /** The run's workflow, when known: its records are then read in one `getMany`. */
  workflow?: string | undefined;
}

/**
 * Loads an unfinished run that `owner` holds, with its steps, committed
 * outputs, input and the position of its history. Steps the run has no record of (never written,
 * or declared since) are pending.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keyLayout } from "./keys.ts";
 * import { loadRun } from "./recovery.ts";
 * import { RunStore } from "./store.ts";
 * const kv = await Deno.openKv(":memory:");
 * const store = new RunStore(kv, keyLayout());
 * const loaded = await loadRun("01J0000000000000000000000A", {
 *   store,
 *   workflows: new Map(),
 *   owner: "w1",
 * });
 * assert.equal(loaded.kind, "missing");
 * kv.close();
 * ```
 */
export async function loadRun(runId: string, options: LoadRunOptions): Promise<LoadedRun> {
  const { store } = options;
  const known = options.workflow === undefined
    ? undefined
    : options.workflows.get(options.workflow);
  // A claim knows the workflow: run, lease and up to eight step records in one read.
  const first = known && known.steps.length <= 8
    ? await store.getRunState(runId, known.steps.map((s) => s.name))
    : undefined;
  const [record, sched] = first ? [first.run, first.sched] : await store.getRunAndSched(runId);
  if (!record) return { kind: "missing" };
  if (isTerminalRun(record.status)) return { kind: "finished", record };
  if (!sched || !("owner" in sched) || sched.owner !== options.owner) return { kind: "other" };
  const def = options.workflows.get(record.workflow);
  if (!def) return { kind: "unserved", record };
  const steps = first && def === known ? first.steps : await store.getSteps(runId);
  // A running map's items and their records: each carries on as a step of its own.
  const mapItems = new Map<string, readonly unknown[]>();
  for (const s of def.steps) {
    if (s.kind !== "map" || steps.get(s.name)?.status !== "running") continue;
    mapItems.set(s.name, await store.getMapInput(runId, s.name));
    for (const [i, rec] of await store.getItems(runId, s.name)) steps.set(itemName(s.name, i), rec);
  }
  const results = await store.getOutputs(runId, steps);
  const input = await store.getInput(record);
  // Only a run that may wait for an event (or a child) reads its mailbox.
  const mailbox = def.steps.some((s) => s.kind === "wait" || s.kind === "child")
    ? await store.getEvents(runId)
    : undefined;
  const live = newLiveRun(def, {
    record,
    input,
    steps,
    results,
    nextSeq: options.nextSeq ?? await store.nextHistorySeq(runId),
    mailbox,
    mapItems,
  });
  for (const s of def.steps) {
    if (!steps.has(s.name)) steps.set(s.name, { status: "pending", attempts: 0, errors: [] });
  }
  return { kind: "live", live };
}

/**
 * The whole KV key layout of Weft, in one place. Every key starts with a
 * caller-chosen prefix (default `["weft"]`) so Weft can share a KV database.
 *
 * | key | value |
 * |---|---|
 * | `[p, "run", runId]` | {@linkcode RunRecord} |
 * | `[p, "step", runId, step]` | {@linkcode StepRecord} |
 * | `[p, "in", runId, chunk]` | `Uint8Array`, a slice of a large input's JSON |
 * | `[p, "out", runId, step, attempt, chunk]` | `Uint8Array`, a slice of a large output's JSON |
 * | `[p, "hist", runId, seq]` | {@linkcode HistoryEvent} |
 * | `[p, "held", runId]` | `{ owner }`: an unfinished run leased by the worker `owner` |
 * | `[p, "active", runId]` | `{ dueAt }`: an unfinished run no worker holds, and when it is due |
 * | `[p, "due", dueMs, runId]` | `{ seq, wf }` (next history seq, workflow): a run no worker holds, due at `dueMs` ({@linkcode PARKED_MS} when only an event can wake it) |
 * | `[p, "owned", owner, runId]` | layout 2 only (upgraded away): `true`, a run leased by `owner`, whose `active` named the owner |
 * | `[p, "worker", owner]` | {@linkcode WorkerRecord}: a live worker; its versionstamp is the fence |
 * | `[p, "hb", owner]` | {@linkcode Heartbeat}: the worker's heartbeat |
 * | `[p, "meta", "layout"]` | the layout version written (2); set once a Weft 1 file is upgraded |
 * | `[p, "inbox", owner, runId]` | {@linkcode InboxMessage}: a request for the run's holder (cancel) |
 * | `[p, "item", runId, step, index]` | {@linkcode StepRecord} of one item of a map step (in memory: step `step[index]`) |
 * | `[p, "mapin", runId, step, chunk]` | `Uint8Array`, a slice of a map step's items' JSON |
 * | `[p, "evt", runId, eventId]` | {@linkcode RunEvent}: an event delivered to the run, not yet taken by a wait step |
 * | `[p, "evkey", runId, key]` | the event id delivered with that idempotency key |
 * | `[p, "idem", workflow, key]` | the run id started with that idempotency key |
 * | `[p, "by_wf", workflow, runId]` | `true`: runs of a workflow, ids sort by time |
 * | `[p, "by_status", status, runId]` | `true`: finished runs by final status |
 * | `[p, "by_wf_status", workflow, status, runId]` | `true`: the same per workflow |
 *
 * An unfinished run (pending, running) is in exactly one of two places:
 * held by one worker (`held` names the owner) or waiting in the due index
 * (`active` holds its due time, `due` orders it). The commits that move a
 * run between the two delete the one and write the other, checking what
 * they read, so a run has one holder at most; finding a run's holder is one
 * read of both keys. Unfinished runs are listed from `held` and `active`
 * and filtered, so starting a step writes no index. A run created and held
 * by its worker writes one lease key, and its end deletes that one key.
 *
 * Run ids are ULIDs, so listing any of these by id in reverse is newest first.
 *
 * @module
 */

/**
 * The due time of a run that nothing but an event (or a cancel) wakes: the
 * latest time a `Date` holds. Claim rounds list the due index up to now, so
 * such a run is claimed only when a delivery moves it to now.
 */
export const PARKED_MS = 8_640_000_000_000_000;

/**
 * The name of item `index` of map step `map`, as the engine holds it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { itemName, parseItemName } from "./keys.ts";
 * assert.equal(itemName("fanout", 3), "fanout[3]");
 * assert.deepEqual(parseItemName("fanout[3]"), { map: "fanout", index: 3 });
 * assert.equal(parseItemName("fanout"), undefined);
 * ```
 */
export function itemName(map: string, index: number): string {
  return `${map}[${index}]`;
}

/** The map step and index of an item's name, or `undefined` for a step's name. */
export function parseItemName(name: string): { map: string; index: number } | undefined {
  const m = /^(.+)\[(\d+)\]$/.exec(name);
  return m ? { map: m[1], index: Number(m[2]) } : undefined;
}

/** A KV key prefix. */
export type KeyPrefix = readonly Deno.KvKeyPart[];

/**
 * Builds every key Weft reads or writes under one prefix.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keyLayout } from "./keys.ts";
 * const keys = keyLayout(["weft"]);
 * assert.ok(keys.run("r1").join("/") === "weft/run/r1");
 * ```
 */
export function keyLayout(prefix: KeyPrefix = ["weft"]) {
  const p = [...prefix];
  return {
    prefix: p,
    run: (runId: string): Deno.KvKey => [...p, "run", runId],
    runs: (): Deno.KvKey => [...p, "run"],
    /** A step's record; an item of a map (`name[index]`) lives under `item`. */
    step: (runId: string, step: string): Deno.KvKey => {
      // Only a map item's name ends with "]": the common case skips the parse.
      const item = step.endsWith("]") ? parseItemName(step) : undefined;
      return item ? [...p, "item", runId, item.map, item.index] : [...p, "step", runId, step];
    },
    item: (runId: string, step: string, index: number): Deno.KvKey => [
      ...p,
      "item",
      runId,
      step,
      index,
    ],
    items: (runId: string, step: string): Deno.KvKey => [...p, "item", runId, step],
    mapInput: (runId: string, step: string, chunk: number): Deno.KvKey => [
      ...p,
      "mapin",
      runId,
      step,
      chunk,
    ],
    mapInputs: (runId: string, step: string): Deno.KvKey => [...p, "mapin", runId, step],
    steps: (runId: string): Deno.KvKey => [...p, "step", runId],
    inputChunk: (runId: string, chunk: number): Deno.KvKey => [...p, "in", runId, chunk],
    inputChunks: (runId: string): Deno.KvKey => [...p, "in", runId],
    outputChunk: (runId: string, step: string, attempt: number, chunk: number): Deno.KvKey => [
      ...p,
      "out",
      runId,
      step,
      attempt,
      chunk,
    ],
    outputChunks: (runId: string, step: string, attempt: number): Deno.KvKey => [
      ...p,
      "out",
      runId,
      step,
      attempt,
    ],
    outputs: (runId: string): Deno.KvKey => [...p, "out", runId],
    history: (runId: string, seq: number): Deno.KvKey => [...p, "hist", runId, seq],
    histories: (runId: string): Deno.KvKey => [...p, "hist", runId],
    held: (runId: string): Deno.KvKey => [...p, "held", runId],
    helds: (): Deno.KvKey => [...p, "held"],
    active: (runId: string): Deno.KvKey => [...p, "active", runId],
    actives: (): Deno.KvKey => [...p, "active"],
    due: (dueMs: number, runId: string): Deno.KvKey => [...p, "due", dueMs, runId],
    dueIndex: (): Deno.KvKey => [...p, "due"],
    dueBefore: (ms: number): Deno.KvKey => [...p, "due", ms],
    /** Layout 2's leases, read only to upgrade them. */
    allOwned: (): Deno.KvKey => [...p, "owned"],
    worker: (owner: string): Deno.KvKey => [...p, "worker", owner],
    workers: (): Deno.KvKey => [...p, "worker"],
    heartbeat: (owner: string): Deno.KvKey => [...p, "hb", owner],
    heartbeats: (): Deno.KvKey => [...p, "hb"],
    inbox: (owner: string, runId: string): Deno.KvKey => [...p, "inbox", owner, runId],
    inboxOf: (owner: string): Deno.KvKey => [...p, "inbox", owner],
    inboxes: (): Deno.KvKey => [...p, "inbox"],
    event: (runId: string, eventId: string): Deno.KvKey => [...p, "evt", runId, eventId],
    events: (runId: string): Deno.KvKey => [...p, "evt", runId],
    eventKey: (runId: string, key: string): Deno.KvKey => [...p, "evkey", runId, key],
    eventKeys: (runId: string): Deno.KvKey => [...p, "evkey", runId],
    layoutVersion: (): Deno.KvKey => [...p, "meta", "layout"],
    idempotency: (workflow: string, key: string): Deno.KvKey => [...p, "idem", workflow, key],
    byWorkflow: (workflow: string, runId?: string): Deno.KvKey =>
      runId === undefined ? [...p, "by_wf", workflow] : [...p, "by_wf", workflow, runId],
    byStatus: (status: string, runId?: string): Deno.KvKey =>
      runId === undefined ? [...p, "by_status", status] : [...p, "by_status", status, runId],
    byWorkflowStatus: (workflow: string, status: string, runId?: string): Deno.KvKey =>
      runId === undefined
        ? [...p, "by_wf_status", workflow, status]
        : [...p, "by_wf_status", workflow, status, runId],
  };
}

/** The key builders for one prefix. */
export type KeyLayout = ReturnType<typeof keyLayout>;

import assert from "node:assert/strict";
import type { WriteOp } from "./commit_batcher.ts";
import { keyLayout } from "./keys.ts";
import { type LiveRun, newLiveRun } from "./live_run.ts";
import { creationEvent, type HistoryEvent, type RunRecord, type StepRecord } from "./records.ts";
import { endedRuns, HISTORY_BYTES_PER_KEY, jsonLength, toWriteOp, Txn } from "./txn.ts";
import { workflow } from "../steps/workflow.ts";

const keys = keyLayout(["weft"]);
const wf = workflow("wf").step("a", () => 1).step("b", { needs: ["a"] }, () => 2);

function liveRun(record: Partial<RunRecord> = {}, steps: [string, StepRecord][] = []): LiveRun {
  return newLiveRun(wf, {
    record: { id: "r1", workflow: "wf", status: "pending", createdAt: 0, ...record },
    input: null,
    steps: new Map(steps),
    results: new Map(),
    nextSeq: 0,
  });
}

const setKeys = (op: WriteOp) => (op.sets ?? []).map(([key]) => key.join("/"));
const deleteKeys = (op: WriteOp) => (op.deletes ?? []).map((key) => key.join("/"));
const jsonBytes = (events: HistoryEvent[]) =>
  events.reduce((n, e) => n + JSON.stringify(e).length, 0);

function runEvent(seq: number, to: RunRecord["status"]): HistoryEvent {
  return { type: "run", seq, at: seq, from: "running", to };
}

Deno.test("toWriteOp writes a new run with its workflow index and its lease", () => {
  const live = liveRun();
  const txn = new Txn();
  txn.touchRun(live, null);
  const op = toWriteOp(txn, keys, "w1");
  assert.deepEqual(setKeys(op), [
    "weft/run/r1",
    "weft/by_wf/wf/r1",
    "weft/held/r1",
  ]);
  assert.equal(op.sets![0][1], live.record);
  assert.deepEqual(op.sets![2][1], { owner: "w1" }, "held by the worker that wrote it");
  assert.deepEqual(op.deletes, []);
  assert.deepEqual(op.checks, []);
  assert.deepEqual(op.enqueues, []);
});

Deno.test("toWriteOp claims the idempotency key of a new run with a check", () => {
  const live = liveRun({ idempotencyKey: "k1" });
  const txn = new Txn();
  txn.runs.set(live, { fromStatus: null, idem: "k1" });
  const op = toWriteOp(txn, keys, "w1");
  assert.deepEqual(op.checks, [{ key: ["weft", "idem", "wf", "k1"], versionstamp: null }]);
  assert.deepEqual(setKeys(op), [
    "weft/run/r1",
    "weft/by_wf/wf/r1",
    "weft/held/r1",
    "weft/idem/wf/k1",
  ]);
  assert.equal(op.sets!.at(-1)![1], "r1");
});

Deno.test("toWriteOp writes only the record when an unfinished run changes status", () => {
  const live = liveRun({ status: "running", startedAt: 1 });
  const txn = new Txn();
  txn.touchRun(live, "pending");
  const op = toWriteOp(txn, keys, "w1");
  assert.deepEqual(setKeys(op), ["weft/run/r1"]);
  assert.deepEqual(op.deletes, []);
});

Deno.test("toWriteOp ends a run: status indexes written, its lease deleted", async (t) => {
  await t.step("a run that becomes terminal in this write", () => {
    const live = liveRun({ status: "failed", finishedAt: 5 });
    const txn = new Txn();
    txn.touchRun(live, "running");
    const op = toWriteOp(txn, keys, "w1");
    assert.deepEqual(setKeys(op), [
      "weft/run/r1",
      "weft/by_status/failed/r1",
      "weft/by_wf_status/wf/failed/r1",
    ]);
    assert.deepEqual(deleteKeys(op), ["weft/held/r1"]);
    assert.deepEqual(endedRuns(txn), [live]);
  });
  await t.step("a run created and ended in the same write", () => {
    const live = liveRun({ status: "cancelled", finishedAt: 0 });
    const txn = new Txn();
    txn.touchRun(live, null);
    const op = toWriteOp(txn, keys, "w1");
    assert.deepEqual(setKeys(op), [
      "weft/run/r1",
      "weft/by_wf/wf/r1",
      "weft/held/r1",
      "weft/by_status/cancelled/r1",
      "weft/by_wf_status/wf/cancelled/r1",
    ]);
    assert.deepEqual(deleteKeys(op), ["weft/held/r1"]);
  });
  await t.step("a run already terminal before the write is not indexed again", () => {
    const live = liveRun({ status: "succeeded", finishedAt: 5 });
    const txn = new Txn();
    txn.touchRun(live, "succeeded");
    const op = toWriteOp(txn, keys, "w1");
    assert.deepEqual(setKeys(op), ["weft/run/r1"]);
    assert.deepEqual(deleteKeys(op), ["weft/held/r1"]);
  });
  await t.step("an unfinished run ends nothing", () => {
    const txn = new Txn();
    txn.touchRun(liveRun({ status: "running" }), "pending");
    assert.deepEqual(endedRuns(txn), []);
  });
});

Deno.test("toWriteOp puts a new run in the due index or gives a held run back", async (t) => {
  await t.step("a new run no slot is free for waits in the due index", () => {
    const live = liveRun();
    const txn = new Txn();
    txn.touchRun(live, null);
    txn.setLease(live, { kind: "due", dueAt: 7 });
    const op = toWriteOp(txn, keys, "w1");
    assert.deepEqual(setKeys(op), [
      "weft/run/r1",
      "weft/by_wf/wf/r1",
      "weft/active/r1",
      "weft/due/7/r1",
    ]);
    assert.deepEqual(op.sets![2][1], { dueAt: 7 });
  });
  await t.step("a held run that only waits is given back: lease deleted, due entry written", () => {
    const live = liveRun({ status: "running" });
    const txn = new Txn();
    txn.setLease(live, { kind: "due", dueAt: 9 });
    const op = toWriteOp(txn, keys, "w1");
    assert.deepEqual(deleteKeys(op), ["weft/held/r1"]);
    assert.deepEqual(setKeys(op), ["weft/active/r1", "weft/due/9/r1"]);
  });
});

Deno.test("toWriteOp writes each touched step once, as it is when materialised", () => {
  const live = liveRun({ status: "running" }, [
    ["a", { status: "pending", attempts: 0, errors: [] }],
    ["b", { status: "pending", attempts: 0, errors: [] }],
  ]);
  const txn = new Txn();
  txn.touchStep(live, "a");
  txn.touchStep(live, "a");
  const done: StepRecord = { status: "succeeded", attempts: 1, errors: [], finishedAt: 3 };
  live.steps.set("a", done);
  const op = toWriteOp(txn, keys, "w1");
  assert.deepEqual(setKeys(op), ["weft/step/r1/a"]);
  assert.equal(op.sets![0][1], done);
});

Deno.test("toWriteOp stores a run's history under the seq of its first event", () => {
  const live = liveRun();
  const txn = new Txn();
  txn.record(live, runEvent(4, "running"));
  txn.record(live, runEvent(5, "succeeded"));
  const op = toWriteOp(txn, keys, "w1");
  assert.deepEqual(op.sets, [[["weft", "hist", "r1", 4], [
    runEvent(4, "running"),
    runEvent(5, "succeeded"),
  ]]]);
});

Deno.test("toWriteOp leaves out a run's creation event: the run record implies it", () => {
  const live = liveRun({ status: "pending" });
  const created = new Txn();
  created.touchRun(live, null);
  created.record(live, creationEvent(live.record));
  assert.deepEqual(setKeys(toWriteOp(created, keys, "w1")).filter((k) => k.includes("hist")), []);
  const started = new Txn();
  started.touchRun(live, null);
  started.record(live, creationEvent(live.record));
  started.record(live, runEvent(1, "running"));
  const op = toWriteOp(started, keys, "w1");
  assert.deepEqual(op.sets!.filter(([key]) => key[1] === "hist"), [
    [["weft", "hist", "r1", 1], [runEvent(1, "running")]],
  ]);
});

Deno.test("toWriteOp splits a long history across keys by size, keeping order", () => {
  const live = liveRun();
  const txn = new Txn();
  const big = "x".repeat(9_000);
  const events: HistoryEvent[] = Array.from({ length: 12 }, (_, seq) => ({
    type: "run",
    seq,
    at: 0,
    from: "running",
    to: "failed",
    error: { name: "Error", message: big },
  }));
  for (const e of events) txn.record(live, e);
  const op = toWriteOp(txn, keys, "w1");
  const parts = op.sets!.map(([key, value]) => ({ key, events: value as HistoryEvent[] }));
  assert.ok(parts.length > 1);
  parts.forEach((part, i) => {
    assert.deepEqual(part.key, ["weft", "hist", "r1", part.events[0].seq]);
    assert.ok(jsonBytes(part.events) <= HISTORY_BYTES_PER_KEY);
    // Greedy: a part ends only when the next event would not fit in it.
    const next = parts[i + 1]?.events[0];
    if (next) assert.ok(jsonBytes([...part.events, next]) > HISTORY_BYTES_PER_KEY);
  });
  assert.deepEqual(parts.flatMap((p) => p.events), events);
});

Deno.test("toWriteOp keeps one event larger than a part whole", () => {
  const live = liveRun();
  const txn = new Txn();
  const huge: HistoryEvent = {
    type: "run",
    seq: 0,
    at: 0,
    from: "running",
    to: "failed",
    error: { name: "Error", message: "x".repeat(HISTORY_BYTES_PER_KEY + 1) },
  };
  txn.record(live, huge);
  txn.record(live, runEvent(1, "failed"));
  const op = toWriteOp(txn, keys, "w1");
  assert.deepEqual(op.sets, [
    [["weft", "hist", "r1", 0], [huge]],
    [["weft", "hist", "r1", 1], [runEvent(1, "failed")]],
  ]);
});

Deno.test("toWriteOp puts extra sets first and passes enqueues through", () => {
  const live = liveRun();
  const txn = new Txn();
  const chunk = new Uint8Array([1, 2]);
  txn.extraSets.push([keys.inputChunk("r1", 0), chunk]);
  txn.touchRun(live, null);
  txn.enqueues.push({ value: { weft: "sweep" }, delayMs: 10 });
  const op = toWriteOp(txn, keys, "w1");
  assert.deepEqual(op.sets![0], [["weft", "in", "r1", 0], chunk]);
  assert.equal(op.enqueues, txn.enqueues);
});

Deno.test("Txn keeps the status a run had when first touched", () => {
  const live = liveRun({ status: "running" });
  const txn = new Txn();
  assert.ok(txn.empty);
  txn.touchRun(live);
  live.record = { ...live.record, status: "succeeded" };
  txn.touchRun(live);
  assert.equal(txn.runs.get(live)?.fromStatus, "running");
  assert.ok(!txn.empty);
});

Deno.test("jsonLength counts what JSON.stringify writes, escapes and errors included", () => {
  const events = [
    {
      type: "step",
      seq: 0,
      at: 1796188489120,
      step: "noop",
      from: "pending",
      to: "running",
      attempt: 1,
    },
    { type: "run", seq: 12, at: 0, from: null, to: "pending" },
    {
      type: "run",
      seq: 3,
      at: 5.5,
      from: "running",
      to: "failed",
      durationMs: -3,
      error: { name: "E", message: 'x"y' },
    },
    {
      type: "step",
      seq: 10,
      at: 9,
      step: "a[12]",
      from: "waiting",
      to: "running",
      attempt: 100,
      nextAttemptAt: undefined,
      durationMs: 1e21,
    },
    {
      type: "step",
      seq: 10,
      at: 9,
      step: 'q"\n\u0001\ud800\\',
      from: "waiting",
      to: "running",
      attempt: 9,
      durationMs: 0,
    },
  ] as unknown as HistoryEvent[];
  for (const event of events) assert.equal(jsonLength(event), JSON.stringify(event).length);
});

import assert from "node:assert/strict";
import { FakeClock } from "./clock.ts";
import { PARKED_MS } from "./keys.ts";
import { type LiveRun, newLiveRun, type RunningAttempt } from "./live_run.ts";
import type { StepRecord } from "./records.ts";
import { nextDue, RunLeases, type RunLeasesOptions, SHORT_WAIT_MS } from "./run_leases.ts";
import { Txn } from "./txn.ts";
import { workflow } from "../steps/workflow.ts";

const wf = workflow("wf").step("a", () => 1).step("b", { needs: ["a"] }, () => 2);

function run(id: string, a: StepRecord, b: StepRecord = pending()): LiveRun {
  return newLiveRun(wf, {
    record: { id, workflow: "wf", status: "running", createdAt: 0 },
    input: null,
    steps: new Map([["a", a], ["b", b]]),
    results: new Map(),
    nextSeq: 0,
  });
}

function pending(): StepRecord {
  return { status: "pending", attempts: 0, errors: [] };
}

function waiting(nextAttemptAt: number): StepRecord {
  return { status: "waiting", attempts: 1, errors: [], nextAttemptAt };
}

/** A `RunLeases` on a fake clock at 0 that records what it asks of the scheduler. */
function setup(overrides: Partial<RunLeasesOptions> = {}) {
  const clock = new FakeClock(0);
  const forgotten: string[] = [];
  const sweeps: number[] = [];
  const woken: number[] = [];
  const leases = new RunLeases({
    clock,
    maxIdleRuns: () => 2,
    queuedRuns: () => 0,
    closing: () => false,
    dueAt: (_step, rec) => rec.status === "awaiting" ? Infinity : rec.nextAttemptAt,
    forget: (live) => {
      live.dead = true;
      forgotten.push(live.record.id);
    },
    planSweep: (_txn, dueAt) => sweeps.push(dueAt),
    wakeAt: (dueAt) => woken.push(dueAt),
    ...overrides,
  });
  return { clock, leases, forgotten, sweeps, woken };
}

function settle(leases: RunLeases, ...runs: LiveRun[]): Txn {
  const txn = new Txn();
  for (const live of runs) txn.consider(live);
  leases.settle(txn);
  return txn;
}

const attempt: RunningAttempt = {
  attempt: 1,
  controller: new AbortController(),
  startedAt: 0,
  capKey: "wf/a",
};

Deno.test("nextDue is now, a step's due time, or parked, as the run's steps wait", () => {
  const dueAt = (_step: unknown, rec: StepRecord) =>
    rec.status === "awaiting" ? Infinity : rec.nextAttemptAt;
  const now = 1_000;
  assert.equal(nextDue(run("r", pending()), { now, dueAt }), now, "a step ready to start");
  assert.equal(nextDue(run("r", waiting(5_000)), { now, dueAt }), 5_000);
  assert.equal(nextDue(run("r", waiting(10)), { now, dueAt }), now, "never in the past");
  const queued = run("r", waiting(5_000));
  queued.queued.set("a", { durable: true });
  assert.equal(nextDue(queued, { now, dueAt }), now, "a step queued for a slot");
  const awaiting: StepRecord = { status: "awaiting", attempts: 1, errors: [] };
  assert.equal(nextDue(run("r", awaiting), { now, dueAt }), PARKED_MS, "only an event wakes it");
  const done: StepRecord = { status: "succeeded", attempts: 1, errors: [] };
  assert.equal(
    nextDue(run("r", done, { status: "succeeded", attempts: 1, errors: [] }), { now, dueAt }),
    now,
    "nothing waits",
  );
});

Deno.test("RunLeases keeps a run due within a second on its timer and gives back one due later", async (t) => {
  await t.step("due later: released in the write, woken once it is durable", () => {
    const { leases, forgotten, sweeps, woken } = setup();
    const live = run("late", waiting(SHORT_WAIT_MS + 1));
    const txn = settle(leases, live);
    assert.deepEqual(txn.leaseOf(live), { kind: "due", dueAt: SHORT_WAIT_MS + 1 });
    assert.deepEqual(forgotten, ["late"]);
    assert.deepEqual(sweeps, [SHORT_WAIT_MS + 1]);
    assert.ok(live.released);
    assert.deepEqual(woken, []);
    for (const fn of txn.after) fn();
    assert.ok(!live.released);
    assert.deepEqual(woken, [SHORT_WAIT_MS + 1]);
  });
  await t.step("due soon: held, as many as maxIdleRuns", () => {
    const { leases, forgotten } = setup();
    const runs = ["s1", "s2", "s3"].map((id) => run(id, waiting(SHORT_WAIT_MS)));
    const txn = settle(leases, ...runs);
    assert.equal(txn.leaseOf(runs[0]), undefined);
    assert.equal(txn.leaseOf(runs[1]), undefined);
    assert.deepEqual(txn.leaseOf(runs[2]), { kind: "due", dueAt: SHORT_WAIT_MS });
    assert.deepEqual(forgotten, ["s3"]);
    assert.equal(leases.shortWaits, 2);
    leases.dropped(runs[0]);
    assert.equal(leases.shortWaits, 1);
  });
  await t.step("a parked run goes back without waking anyone", () => {
    const { leases, woken } = setup();
    const live = run("parked", { status: "awaiting", attempts: 1, errors: [] });
    const txn = settle(leases, live);
    assert.deepEqual(txn.leaseOf(live), { kind: "due", dueAt: PARKED_MS });
    for (const fn of txn.after) fn();
    assert.deepEqual(woken, []);
  });
});

Deno.test("RunLeases holds a new run waiting for a slot until the idle runs held exceed maxIdleRuns", () => {
  let queuedRuns = 2;
  const { leases, forgotten } = setup({ queuedRuns: () => queuedRuns });
  const created = () => {
    const live = run(`new${queuedRuns}`, pending());
    live.queued.set("a", { durable: false });
    return live;
  };
  const first = created();
  const txn = new Txn();
  txn.runs.set(first, { fromStatus: null });
  leases.settle(txn);
  assert.deepEqual(txn.leaseOf(first), { kind: "hold" });
  queuedRuns = 3;
  const second = created();
  const again = new Txn();
  again.runs.set(second, { fromStatus: null });
  leases.settle(again);
  assert.deepEqual(again.leaseOf(second), { kind: "due", dueAt: 0 });
  // A run already held keeps its place, however many wait.
  const held = created();
  assert.equal(settle(leases, held).leaseOf(held), undefined);
  assert.deepEqual(forgotten, ["new3"]);
});

Deno.test("RunLeases keeps runs in flight and pinned ones; closing gives back every other", () => {
  let closing = false;
  const { leases, forgotten } = setup({ closing: () => closing });
  const busy = run("busy", waiting(60_000));
  busy.running.set("b", attempt);
  const pinned = run("pinned", waiting(60_000));
  leases.pin(pinned);
  const soon = run("soon", waiting(10));
  let txn = settle(leases, busy, pinned, soon);
  assert.equal(txn.leaseOf(busy), undefined);
  assert.equal(txn.leaseOf(pinned), undefined);
  assert.equal(txn.leaseOf(soon), undefined, "a short wait is held");
  closing = true;
  txn = settle(leases, busy, pinned, soon);
  assert.equal(txn.leaseOf(pinned), undefined, "still pinned");
  assert.deepEqual(txn.leaseOf(soon), { kind: "due", dueAt: 10 });
  leases.unpinAll();
  txn = settle(leases, busy, pinned);
  assert.equal(txn.leaseOf(busy), undefined);
  assert.deepEqual(txn.leaseOf(pinned), { kind: "due", dueAt: 60_000 });
  assert.deepEqual(forgotten, ["soon", "pinned"]);
  const dead = run("dead", waiting(60_000));
  dead.dead = true;
  assert.equal(settle(leases, dead).leaseOf(dead), undefined, "a dropped run is not released");
});

import assert from "node:assert/strict";
import { FakeClock } from "./clock.ts";
import { StepCancelledError } from "./errors.ts";
import { type LiveRun, newLiveRun, type RunningAttempt } from "./live_run.ts";
import { GracePeriod, writeBackRunning } from "./shutdown.ts";
import { Txn } from "./txn.ts";
import { workflow } from "../steps/workflow.ts";

Deno.test("GracePeriod ends when idle, when cut, or at once when cut before it starts", async (t) => {
  await t.step("idle ends it before its time, and clears its timer", async () => {
    const clock = new FakeClock(0);
    const grace = new GracePeriod(clock);
    let over = false;
    const waiting = grace.wait(60_000).then(() => over = true);
    await clock.advance(1_000);
    assert.ok(!over);
    grace.idle();
    await waiting;
    assert.equal(clock.pendingTimers, 0);
    assert.equal(clock.now(), 1_000);
  });
  await t.step("end() cuts a wait in progress, and every later one", async () => {
    const clock = new FakeClock(0);
    const grace = new GracePeriod(clock);
    const waiting = grace.wait(60_000);
    grace.end();
    await waiting;
    assert.equal(clock.pendingTimers, 0);
    await grace.wait(60_000);
    assert.equal(clock.pendingTimers, 0, "a cut grace period sets no timer");
  });
  await t.step("idle() with no wait in progress does not end a later one", async () => {
    const clock = new FakeClock(0);
    const grace = new GracePeriod(clock);
    grace.idle();
    let over = false;
    const waiting = grace.wait(100).then(() => over = true);
    await clock.advance(99);
    assert.ok(!over);
    await clock.advance(1);
    await waiting;
    assert.ok(over);
  });
  await t.step("no grace: at once", async () => {
    const clock = new FakeClock(0);
    await new GracePeriod(clock).wait(0);
    assert.equal(clock.pendingTimers, 0);
  });
});

Deno.test("writeBackRunning records running attempts as due now and uncharged, slot first", () => {
  const wf = workflow("wf").step("a", () => 1).step("b", () => 2).step("c", () => 3);
  const clock = new FakeClock(5_000);
  const live: LiveRun = newLiveRun(wf, {
    record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
    input: null,
    steps: new Map([
      ["a", {
        status: "running",
        attempts: 2,
        errors: [{ attempt: 1, at: 1, error: { name: "Error", message: "x" } }],
        uncharged: 1,
      }],
      ["b", { status: "running", attempts: 1, errors: [] }],
      ["c", { status: "pending", attempts: 0, errors: [] }],
    ]),
    results: new Map(),
    nextSeq: 3,
  });
  const attempts: RunningAttempt[] = [2, 1].map((attempt) => ({
    attempt,
    controller: new AbortController(),
    startedAt: 0,
    capKey: "wf/x",
  }));
  live.running.set("a", attempts[0]);
  live.running.set("b", attempts[1]);
  const finished: string[] = [];
  const txn = new Txn();
  writeBackRunning(txn, [live], {
    clock,
    finishAttempt: (run, step, running) => {
      // The body is still running when its slot is given back.
      assert.ok(!running.controller.signal.aborted);
      run.running.delete(step);
      finished.push(step);
    },
  });
  assert.deepEqual(finished, ["a", "b"]);
  for (const r of attempts) assert.ok(r.controller.signal.reason instanceof StepCancelledError);
  const a = live.steps.get("a")!;
  assert.equal(a.status, "waiting");
  assert.equal(a.attempts, 2, "the attempt count stays");
  assert.equal(a.uncharged, 2);
  assert.equal(a.nextAttemptAt, 5_000);
  assert.equal(a.errors.length, 2);
  assert.equal(a.errors[1].error.name, "AttemptInterruptedError");
  assert.equal(live.steps.get("b")!.uncharged, 1);
  assert.equal(live.steps.get("c")!.status, "pending");
  assert.deepEqual([...txn.steps.get(live)!], ["a", "b"]);
  const history = txn.history.get(live)!;
  assert.deepEqual(history.map((e) => [e.seq, e.type === "step" && e.to]), [
    [3, "waiting"],
    [4, "waiting"],
  ]);
});

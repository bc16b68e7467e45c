import assert from "node:assert/strict";
import { Deadlines, runAttempt } from "./attempt.ts";
import { FakeClock } from "./clock.ts";
import { StepCancelledError, StepTimeoutError } from "./errors.ts";

const spec = (
  body: () => unknown,
  controller = new AbortController(),
  clock = new FakeClock(0),
) => ({
  step: "s",
  attempt: 1,
  timeoutMs: 1_000,
  controller,
  clock,
  body,
});

Deno.test("runAttempt calls the body in a job of its own, so a stack it throws holds its frames only", async () => {
  let called = false;
  const outcome = runAttempt(spec(function throwsAtOnce() {
    called = true;
    throw new Error("boom");
  }));
  assert.ok(!called, "not before runAttempt returns");
  const ended = await outcome;
  assert.ok(called && !ended.ok);
  const frames = (ended.error as Error).stack!.split("\n").filter((l) => /^\s+at /.test(l));
  assert.match(frames[0], /at throwsAtOnce .*attempt_test\.ts/);
  assert.equal(frames.length, 1, `only the body's frame: ${frames.join(" | ")}`);
});

Deno.test("runAttempt never calls the body of an attempt aborted before it started", async (t) => {
  const reason = new StepCancelledError("s", "the run was cancelled");
  for (const when of ["before runAttempt", "before its microtask"]) {
    await t.step(`aborted ${when}`, async () => {
      let called = false, settled = 0;
      const controller = new AbortController();
      if (when === "before runAttempt") controller.abort(reason);
      const outcome = runAttempt({
        ...spec(() => called = true, controller),
        onSettled: () => settled++,
      });
      controller.abort(reason);
      const ended = await outcome;
      assert.ok(!ended.ok && ended.error === reason);
      await new Promise((resolve) => setTimeout(resolve, 0));
      assert.ok(!called);
      assert.equal(settled, 1, "onSettled still called, once");
    });
  }
});

Deno.test("runAttempt calls onSettled when the body settles, even after its outcome", async () => {
  const clock = new FakeClock(0);
  let release = () => {};
  let settled = 0;
  const outcome = runAttempt({
    ...spec(() => new Promise<void>((r) => release = r), new AbortController(), clock),
    onSettled: () => settled++,
  });
  await Promise.resolve();
  await clock.advance(1_000);
  const ended = await outcome;
  assert.ok(!ended.ok && ended.error instanceof StepTimeoutError);
  assert.equal(settled, 0, "the body still runs");
  release();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(settled, 1);
});

Deno.test("runAttempt asks mayStart in the body's job, and waits for its answer", async (t) => {
  await t.step("false: the body is never called", async () => {
    let called = false;
    let asked = false;
    const outcome = await runAttempt({
      ...spec(() => called = true),
      mayStart: () => {
        asked = true;
        return false;
      },
    });
    assert.ok(asked && !called);
    assert.ok(!outcome.ok && /lease was lost/.test(String((outcome.error as Error).message)));
  });
  await t.step("a promise of true: the body runs once it resolves", async () => {
    const order: string[] = [];
    const outcome = await runAttempt({
      ...spec(() => {
        order.push("body");
        return 7;
      }),
      mayStart: () => Promise.resolve().then(() => order.push("confirmed") > 0),
    });
    assert.deepEqual(order, ["confirmed", "body"]);
    assert.ok(outcome.ok && outcome.value === 7);
  });
  await t.step("aborted while it waits: the body is never called", async () => {
    const controller = new AbortController();
    let called = false;
    const outcome = await runAttempt({
      ...spec(() => called = true, controller),
      mayStart: () => {
        controller.abort(new StepCancelledError("s", "fenced"));
        return Promise.resolve(true);
      },
    });
    assert.ok(!called);
    assert.ok(!outcome.ok && outcome.error instanceof StepCancelledError);
  });
});

Deno.test("runAttempt keeps the timeouts of many attempts on one clock timer, and each still times out", async () => {
  const clock = new FakeClock(0);
  const deadlines = new Deadlines(clock);
  const outcomes = Array.from({ length: 50 }, (_, i) =>
    runAttempt({
      ...spec(() => new Promise(() => {}), new AbortController(), clock),
      attempt: i + 1,
      deadlines,
    }));
  assert.equal(clock.pendingTimers, 1, "one timer for 50 attempts");
  assert.equal(deadlines.size, 50);
  await clock.advance(999);
  assert.equal(deadlines.size, 50, "none is due before its timeout");
  await clock.advance(1);
  const ended = await Promise.all(outcomes);
  assert.ok(ended.every((o) => !o.ok && o.error instanceof StepTimeoutError));
  assert.equal(deadlines.size, 0);
  assert.equal(clock.pendingTimers, 0, "no timer is left behind");
});

Deno.test("Deadlines arms its timer for the earliest deadline and leaves none once all are removed", async (t) => {
  await t.step("an earlier deadline re-arms the timer; a later one does not", async () => {
    const clock = new FakeClock(0);
    const deadlines = new Deadlines(clock);
    const due: string[] = [];
    deadlines.add(100, () => due.push("late"));
    deadlines.add(50, () => due.push("early"));
    deadlines.add(70, () => due.push("middle"));
    assert.equal(clock.pendingTimers, 1);
    assert.equal(clock.nextDueAt, 50);
    await clock.advance(50);
    assert.deepEqual(due, ["early"]);
    assert.equal(clock.nextDueAt, 70);
    await clock.advance(50);
    assert.deepEqual(due, ["early", "middle", "late"]);
    assert.equal(clock.pendingTimers, 0);
  });
  await t.step("removing every deadline clears the timer", () => {
    const clock = new FakeClock(0);
    const deadlines = new Deadlines(clock);
    const all = [deadlines.add(10, () => {}), deadlines.add(20, () => {})];
    for (const d of all) deadlines.remove(d);
    assert.equal(deadlines.size, 0);
    assert.equal(clock.pendingTimers, 0);
  });
  await t.step("a removed deadline is never called, the others are", async () => {
    const clock = new FakeClock(0);
    const deadlines = new Deadlines(clock);
    const due: number[] = [];
    const first = deadlines.add(10, () => due.push(10));
    deadlines.add(20, () => due.push(20));
    deadlines.remove(first);
    await clock.advance(30);
    assert.deepEqual(due, [20]);
  });
});

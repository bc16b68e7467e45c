import assert from "node:assert/strict";
import { runAttempt } from "./attempt.ts";
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

import assert from "node:assert/strict";
import { FakeClock } from "./clock.ts";
import { type LiveRun, newLiveRun } from "./live_run.ts";
import { StepTimers } from "./step_timers.ts";
import { workflow } from "../steps/workflow.ts";

/** Timers on a fake clock, a held run, and what fired. */
function fixture(startMs = 0) {
  const clock = new FakeClock(startMs);
  return { clock, timers: new StepTimers(clock), live: held(), fired: [] as string[] };
}

function held(): LiveRun {
  return newLiveRun(workflow("wf").step("a", () => 1).step("b", () => 2), {
    record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
    input: null,
    steps: new Map(),
    results: new Map(),
    nextSeq: 0,
  });
}

Deno.test("step timers: each step's timer fires once, at its time, and is gone after", () => {
  const clock = new FakeClock(1_000);
  const timers = new StepTimers(clock);
  const live = held();
  const fired: [string, number][] = [];
  timers.arm(live, "a", 1_300, () => fired.push(["a", clock.now()]));
  timers.arm(live, "b", 1_100, () => fired.push(["b", clock.now()]));
  assert.deepEqual(timers.armed(live).sort(), ["a", "b"]);
  clock.tick(99);
  assert.deepEqual(fired, []);
  clock.tick(1_000);
  assert.deepEqual(fired, [["b", 1_100], ["a", 1_300]]);
  assert.deepEqual(timers.armed(live), []);
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("step timers: a cleared timer never fires; clearAll disarms every step of the run", () => {
  const { clock, timers, live, fired } = fixture();
  timers.arm(live, "a", 10, () => fired.push("a"));
  timers.arm(live, "b", 20, () => fired.push("b"));
  timers.clear(live, "a");
  timers.clear(live, "a"); // clearing twice is harmless
  assert.deepEqual(timers.armed(live), ["b"]);
  timers.clearAll(live);
  assert.equal(live.retryTimers, undefined);
  clock.tick(100);
  assert.equal(fired.length, 0);
  assert.equal(clock.pendingTimers, 0);
  // Once cleared, a step can be armed again.
  timers.arm(live, "a", 150, () => fired.push("a again"));
  clock.tick(100);
  assert.deepEqual(fired, ["a again"]);
});

Deno.test("step timers: arming a step that has a timer keeps the first one", () => {
  const { clock, timers, live, fired } = fixture();
  timers.arm(live, "a", 100, () => fired.push("first"));
  timers.arm(live, "a", 10, () => fired.push("second"));
  assert.equal(clock.pendingTimers, 1);
  clock.tick(50);
  assert.equal(fired.length, 0);
  clock.tick(50);
  assert.deepEqual(fired, ["first"]);
});

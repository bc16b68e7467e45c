import assert from "node:assert/strict";
import { Activity } from "./activity.ts";
import { EngineClosedError, StorageFullError } from "./errors.ts";
import { type LiveRun, newLiveRun } from "./live_run.ts";
import { RunReloads, type RunReloadsOptions } from "./run_reloads.ts";
import { workflow } from "../steps/workflow.ts";

const wf = workflow("wf").step("a", () => 1).step("b", () => 2).step("c", () => 3);

function run(running: string[] = []): LiveRun {
  const live = newLiveRun(wf, {
    record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
    input: null,
    steps: new Map(wf.steps.map((s) => [s.name, { status: "running", attempts: 1, errors: [] }])),
    results: new Map(),
    nextSeq: 0,
  });
  for (const step of running) {
    live.running.set(step, {
      attempt: 1,
      controller: new AbortController(),
      startedAt: 0,
      capKey: `wf/${step}`,
    });
  }
  return live;
}

/** A `RunReloads` whose scheduler is fakes that record what it is asked. */
function setup(overrides: Partial<RunReloadsOptions> = {}) {
  const activity = new Activity();
  const resumed: string[][] = [];
  const rejected: unknown[] = [];
  const reloads = new RunReloads({
    forget: (live) => {
      live.dead = true;
      live.running.clear();
    },
    resume: (_runId, abandoned) => {
      resumed.push([...abandoned].sort());
      return Promise.resolve();
    },
    lastWrite: () => Promise.resolve(),
    closing: () => false,
    whenWritable: () => Promise.resolve(),
    rejectWaiters: (_runId, reason) => rejected.push(reason),
    activity,
    ...overrides,
  });
  return { activity, reloads, resumed, rejected };
}

Deno.test("RunReloads reloads a run once its last write settles, uncharging the attempts it cut", async (t) => {
  await t.step("after the write in flight, with the running and the written steps", async () => {
    const { activity, reloads, resumed } = setup();
    const live = run(["a"]);
    const { promise, reject } = Promise.withResolvers<void>();
    live.lastCommit = promise;
    reloads.reload(live, new Error("write failed"), new Set(["b"]));
    assert.ok(live.dead);
    await Promise.resolve();
    assert.deepEqual(resumed, [], "not before the run's own write settled");
    reject(new Error("that write failed too"));
    await activity.settled();
    assert.deepEqual(resumed, [["a", "b"]]);
  });
  await t.step("a run dropped already is not reloaded, unless a release dropped it", async () => {
    const { activity, reloads, resumed } = setup();
    const dropped = run();
    dropped.dead = true;
    reloads.reload(dropped, new Error("write failed"));
    await activity.settled();
    assert.deepEqual(resumed, []);
    const released = run();
    released.dead = true;
    released.released = true;
    reloads.reload(released, new Error("write failed"));
    assert.ok(!released.released);
    await activity.settled();
    assert.deepEqual(resumed, [[]]);
  });
});

Deno.test("RunReloads goes again when a write fails during a reload, with the steps of both", async () => {
  let calls = 0;
  const resumed: string[][] = [];
  const { activity, reloads, rejected } = setup({
    resume: (_runId, abandoned) => {
      resumed.push([...abandoned].sort());
      if (calls++ > 0) return Promise.resolve();
      // The reload's own write fails: the scheduler reports it like any other.
      reloads.reload(run(["c"]), new Error("reload write failed"));
      return Promise.reject(new Error("reload write failed"));
    },
  });
  reloads.reload(run(["a"]), new Error("write failed"));
  await activity.settled();
  assert.deepEqual(resumed, [["a"], ["c"]]);
  assert.deepEqual(rejected, []);
});

Deno.test("RunReloads gives up after three failed writes in a row; a full disk does not count", async () => {
  const { activity, reloads, resumed, rejected } = setup();
  const fail = async (error: unknown) => {
    reloads.reload(run(), error);
    await activity.settled();
  };
  for (let i = 0; i < 3; i++) await fail(new Error(`failure ${i}`));
  await fail(new StorageFullError());
  assert.equal(resumed.length, 4);
  assert.deepEqual(rejected, []);
  const fourth = new Error("failure 4");
  await fail(fourth);
  assert.equal(resumed.length, 4, "left as it is on disk");
  assert.deepEqual(rejected, [fourth]);
  reloads.committed([run()]);
  await fail(new Error("after a commit"));
  assert.equal(resumed.length, 5, "a commit starts the count again");
});

Deno.test("RunReloads joins a failure that comes while the run is being reloaded", async () => {
  const { activity, reloads, resumed } = setup();
  reloads.reload(run(), new Error("write failed"), new Set(["a"]));
  reloads.reload(run(), new Error("write failed"), new Set(["b"]));
  await activity.settled();
  // One reload at a time: the second failure's steps go with the first
  // load, and the reload goes once more.
  assert.deepEqual(resumed, [["a", "b"], []]);
});

Deno.test("RunReloads rejects the run's waiters once the engine closes, and reloads nothing", async (t) => {
  await t.step("closing when the write fails", async () => {
    const { activity, reloads, resumed, rejected } = setup({ closing: () => true });
    reloads.reload(run(), new Error("write failed"));
    await activity.settled();
    assert.deepEqual(resumed, []);
    assert.ok(rejected[0] instanceof EngineClosedError);
  });
  await t.step("closing while the reload waits for the disk to take writes", async () => {
    let closing = false;
    const { promise, resolve } = Promise.withResolvers<void>();
    const { activity, reloads, resumed, rejected } = setup({
      closing: () => closing,
      whenWritable: () => promise,
    });
    reloads.reload(run(), new Error("write failed"));
    await Promise.resolve();
    closing = true;
    resolve();
    await activity.settled();
    assert.deepEqual(resumed, []);
    assert.ok(rejected[0] instanceof EngineClosedError);
  });
});

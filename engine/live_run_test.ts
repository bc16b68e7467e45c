import assert from "node:assert/strict";
import { newLiveRun, NO_WRITE } from "./live_run.ts";
import { workflow } from "../steps/workflow.ts";

Deno.test("newLiveRun creates none of the collections a run may never use", () => {
  const wf = workflow("wf").step("a", () => 1);
  const live = newLiveRun(wf, {
    record: { id: "r", workflow: "wf", status: "pending", createdAt: 0 },
    input: null,
    steps: new Map([["a", { status: "pending", attempts: 0, errors: [] }]]),
    results: new Map(),
    nextSeq: 0,
  });
  // Thousands of runs may wait for a slot at once: each holds what it uses.
  assert.equal(live.retryTimers, undefined);
  assert.equal(live.taken, undefined);
  assert.equal(live.failedCompensations, undefined);
  assert.equal(live.mapItems, undefined);
  assert.equal(live.itemDefs, undefined);
  assert.equal(live.lastCommit, NO_WRITE);
  assert.deepEqual([live.running.size, live.queued.size, live.mailbox.length], [0, 0, 0]);
});

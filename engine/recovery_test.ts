import assert from "node:assert/strict";
import { keyLayout } from "./keys.ts";
import type { RunRecord, StepRecord } from "./records.ts";
import { loadRun } from "./recovery.ts";
import { RunStore } from "./store.ts";
import { workflow } from "../steps/workflow.ts";

const keys = keyLayout(["weft"]);
const wf = workflow("wf").step("a", () => 1).step("b", { needs: ["a"] }, () => 2);
const workflows = new Map([[wf.name, wf]]);
const RUN_ID = "01J00000000000000000000001";

function run(status: RunRecord["status"], workflow = "wf"): RunRecord {
  return { id: RUN_ID, workflow, status, createdAt: 0, input: { n: 1 } };
}

Deno.test("loadRun tells a missing, a finished and an unserved run apart", async (t) => {
  using kv = await Deno.openKv(":memory:");
  const store = new RunStore(kv, keys);
  await t.step("no record: missing", async () => {
    assert.deepEqual(await loadRun(RUN_ID, { store, workflows, owner: "w1" }), { kind: "missing" });
  });
  await t.step("a terminal record: finished", async () => {
    await kv.set(keys.run(RUN_ID), run("succeeded"));
    assert.deepEqual(await loadRun(RUN_ID, { store, workflows, owner: "w1" }), {
      kind: "finished",
      record: run("succeeded"),
    });
  });
  await t.step(
    "an unfinished run another worker holds, or nobody does: not this worker's",
    async () => {
      await kv.set(keys.run(RUN_ID), run("running"));
      await kv.set(keys.held(RUN_ID), { owner: "w2" });
      assert.deepEqual(await loadRun(RUN_ID, { store, workflows, owner: "w1" }), { kind: "other" });
      await kv.delete(keys.held(RUN_ID));
      await kv.set(keys.active(RUN_ID), { dueAt: 5 });
      assert.deepEqual(await loadRun(RUN_ID, { store, workflows, owner: "w1" }), { kind: "other" });
    },
  );
  await t.step("an unfinished run of a workflow not served: unserved", async () => {
    await kv.set(keys.held(RUN_ID), { owner: "w1" });
    await kv.set(keys.run(RUN_ID), run("running", "gone"));
    assert.deepEqual(await loadRun(RUN_ID, { store, workflows, owner: "w1" }), {
      kind: "unserved",
      record: run("running", "gone"),
    });
  });
});

Deno.test("loadRun loads an unfinished run with its steps, outputs and history position", async () => {
  using kv = await Deno.openKv(":memory:");
  const store = new RunStore(kv, keys);
  const a: StepRecord = {
    status: "succeeded",
    attempts: 2,
    errors: [],
    output: { kind: "inline", json: '{"x":1}' },
  };
  await kv.atomic()
    .set(keys.run(RUN_ID), run("running"))
    .set(keys.held(RUN_ID), { owner: "w1" })
    .set(keys.step(RUN_ID, "a"), a)
    .set(keys.history(RUN_ID, 0), [
      { type: "run", seq: 0, at: 0, from: null, to: "pending" },
      { type: "run", seq: 1, at: 0, from: "pending", to: "running" },
    ])
    .set(keys.history(RUN_ID, 2), [
      { type: "step", seq: 2, at: 0, step: "a", from: "pending", to: "running", attempt: 1 },
    ])
    .commit();
  const loaded = await loadRun(RUN_ID, { store, workflows, owner: "w1" });
  assert.equal(loaded.kind, "live");
  if (loaded.kind !== "live") return;
  const { live } = loaded;
  assert.equal(live.def, wf);
  assert.deepEqual(live.record, run("running"));
  assert.deepEqual(live.input, { n: 1 });
  assert.deepEqual(live.steps.get("a"), a);
  // A step with no record yet is pending.
  assert.deepEqual(live.steps.get("b"), { status: "pending", attempts: 0, errors: [] });
  assert.deepEqual([...live.results], [["a", { x: 1 }]]);
  assert.equal(live.nextSeq, 3);
  assert.equal(live.running.size + live.queued.size, 0);
  assert.equal(live.dead, false);
});

Deno.test("loadRun goes on after the creation event of a run whose history holds none stored", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(keys.run(RUN_ID), run("pending"));
  await kv.set(keys.held(RUN_ID), { owner: "w1" });
  const loaded = await loadRun(RUN_ID, { store: new RunStore(kv, keys), workflows, owner: "w1" });
  // The creation event took seq 0; it is implied by the run record, not stored.
  assert.ok(loaded.kind === "live" && loaded.live.nextSeq === 1);
});

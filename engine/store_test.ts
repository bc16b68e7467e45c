import assert from "node:assert/strict";
import { keyLayout } from "./keys.ts";
import { creationEvent, type HistoryEvent, type RunRecord } from "./records.ts";
import { RunStore } from "./store.ts";

const keys = keyLayout(["weft"]);
const run: RunRecord = { id: "r1", workflow: "wf", status: "running", createdAt: 1_000 };
const started: HistoryEvent = {
  type: "run",
  seq: 1,
  at: 1_005,
  from: "pending",
  to: "running",
};

Deno.test("getHistory puts back the creation event, which is not stored", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(keys.run("r1"), run);
  const store = new RunStore(kv, keys);
  assert.deepEqual(await store.getHistory("r1"), [creationEvent(run)]);
  assert.equal(await store.nextHistorySeq("r1"), 1);
  await kv.set(keys.history("r1", 1), [started]);
  assert.deepEqual(await store.getHistory("r1"), [creationEvent(run), started]);
  assert.equal(await store.nextHistorySeq("r1"), 2);
});

Deno.test("getHistory reads a creation event stored by an earlier version once", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(keys.run("r1"), run);
  await kv.set(keys.history("r1", 0), [creationEvent(run), started]);
  const store = new RunStore(kv, keys);
  assert.deepEqual(await store.getHistory("r1"), [creationEvent(run), started]);
});

Deno.test("getHistory of an unknown run is empty", async () => {
  using kv = await Deno.openKv(":memory:");
  assert.deepEqual(await new RunStore(kv, keys).getHistory("nope"), []);
});

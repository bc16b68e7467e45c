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

Deno.test("listRuns pages unfinished runs held by workers and waiting in the due index, newest first", async () => {
  using kv = await Deno.openKv(":memory:");
  const ids = ["01A", "01B", "01C", "01D", "01E", "01F", "01G"];
  for (const [i, id] of ids.entries()) {
    const atomic = kv.atomic().set(keys.run(id), { ...run, id, status: "pending" });
    // Held by one of two workers, or due: the three places interleave by id.
    if (i % 3 === 0) atomic.set(keys.active(id), { dueAt: i }).set(keys.due(i, id), true);
    else atomic.set(keys.held(id), { owner: `w${i % 3}` });
    await atomic.commit();
  }
  await kv.set(keys.run("01H"), { ...run, id: "01H", status: "succeeded" });
  const store = new RunStore(kv, keys);
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let page = 0; page < 10; page++) {
    const result = await store.listRuns({ status: "pending", limit: 3, cursor });
    seen.push(...result.runs.map((r) => r.id));
    if (result.nextCursor === null) break;
    cursor = result.nextCursor;
  }
  assert.deepEqual(seen, [...ids].reverse());
  assert.deepEqual((await store.activeRunIds()).sort(), ids);
  await assert.rejects(
    () => store.listRuns({ status: "running", cursor }),
    /'cursor' is not a cursor of this query/,
  );
});

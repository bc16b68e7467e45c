import assert from "node:assert/strict";
import { CommitBatcher } from "./commit_batcher.ts";

Deno.test("CommitBatcher folds concurrent writes into one commit and acks after it", async () => {
  using kv = await Deno.openKv(":memory:");
  const batcher = new CommitBatcher(kv);
  const acks = await Promise.all(
    Array.from({ length: 100 }, (_, i) => batcher.write({ sets: [[["k", i], i]] })),
  );
  assert.ok(acks.every((ok) => ok));
  assert.equal(batcher.commits, 1);
  const stored = await Array.fromAsync(kv.list({ prefix: ["k"] }));
  assert.equal(stored.length, 100);
});

Deno.test("CommitBatcher splits batches at the mutation limit", async () => {
  using kv = await Deno.openKv(":memory:");
  const batcher = new CommitBatcher(kv, { maxMutations: 10 });
  await Promise.all(
    Array.from({ length: 25 }, (_, i) => batcher.write({ sets: [[["k", i], i]] })),
  );
  assert.equal(batcher.commits, 3);
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["k"] }))).length, 25);
});

Deno.test("CommitBatcher fails only the write whose check fails", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(["taken"], 1);
  const batcher = new CommitBatcher(kv);
  const [a, b, c] = await Promise.all([
    batcher.write({ sets: [[["a"], 1]] }),
    batcher.write({ checks: [{ key: ["taken"], versionstamp: null }], sets: [[["b"], 1]] }),
    batcher.write({ sets: [[["c"], 1]] }),
  ]);
  assert.deepEqual([a, b, c], [true, false, true]);
  assert.equal((await kv.get(["a"])).value, 1);
  assert.equal((await kv.get(["b"])).value, null);
  assert.equal((await kv.get(["c"])).value, 1);
});

Deno.test("CommitBatcher rejects only the write KV refuses", async () => {
  using kv = await Deno.openKv(":memory:");
  const batcher = new CommitBatcher(kv);
  const tooBig = new Uint8Array(70_000);
  const results = await Promise.allSettled([
    batcher.write({ sets: [[["ok1"], 1]] }),
    batcher.write({ sets: [[["big"], tooBig]] }),
    batcher.write({ sets: [[["ok2"], 1]] }),
  ]);
  assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
  assert.equal((await kv.get(["ok2"])).value, 1);
  assert.equal((await kv.get(["big"])).value, null);
});

Deno.test("CommitBatcher room() waits while the backlog is over the limit", async () => {
  using kv = await Deno.openKv(":memory:");
  const batcher = new CommitBatcher(kv, { maxMutations: 10 });
  const writes = Array.from({ length: 50 }, (_, i) => batcher.write({ sets: [[["k", i], i]] }));
  assert.equal(batcher.backlog, 50);
  let roomAt = -1;
  await batcher.room(20).then(() => roomAt = batcher.backlog);
  assert.ok(roomAt >= 0 && roomAt < 20, `room came at a backlog of ${roomAt}`);
  await Promise.all(writes);
  assert.equal(batcher.backlog, 0);
  await batcher.room(20); // resolves at once
});

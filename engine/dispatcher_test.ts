import assert from "node:assert/strict";
import { join } from "node:path";
import { FakeClock } from "./clock.ts";
import { CommitBatcher } from "./commit_batcher.ts";
import { type Claim, Dispatcher } from "./dispatcher.ts";
import { keyLayout } from "./keys.ts";

const keys = keyLayout();

/** A dispatcher of worker `w1` with room for 10 runs; `got` lists the runs it claimed. */
function oneWorker(kv: Deno.Kv, clock: FakeClock, batcher: CommitBatcher, pollIntervalMs: number) {
  const got: string[] = [];
  const dispatcher = new Dispatcher({
    kv,
    keys,
    batcher,
    clock,
    owner: () => "w1",
    capacity: () => 10,
    claimed: (claims) => {
      got.push(...claims.map((c) => c.runId));
      return Promise.resolve();
    },
    pollIntervalMs,
  });
  return { got, dispatcher };
}

Deno.test("Dispatcher claims due runs once across two handles racing on one file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_dispatch_" });
  const path = join(dir, "kv.sqlite3");
  const clock = new FakeClock();
  const seed = await Deno.openKv(path);
  const N = 200;
  for (let i = 0; i < N; i += 50) {
    const atomic = seed.atomic();
    for (let j = i; j < i + 50; j++) {
      const id = `r${String(j).padStart(4, "0")}`;
      atomic.set(keys.due(clock.now() - 1, id), { seq: 3, wf: "wf" })
        .set(keys.active(id), { dueAt: clock.now() - 1 });
    }
    await atomic.commit();
  }
  // One entry due later: claimed by nobody now.
  await seed.set(keys.due(clock.now() + 60_000, "later"), true);
  seed.close();
  const kvs = [await Deno.openKv(path), await Deno.openKv(path)];
  const claimed: Claim[][] = [[], []];
  const dispatchers = kvs.map((kv, i) =>
    new Dispatcher({
      kv,
      keys,
      batcher: new CommitBatcher(kv),
      clock,
      owner: () => `w${i}`,
      capacity: () => 150 - claimed[i].length,
      claimed: (claims) => {
        claimed[i].push(...claims);
        return Promise.resolve();
      },
      pollIntervalMs: 1_000,
    })
  );
  try {
    for (const d of dispatchers) d.start();
    for (let i = 0; i < 200 && claimed.flat().length < N; i++) {
      await Promise.all(dispatchers.map((d) => d.wake()));
    }
    const ids = claimed.map((c) => c.map((x) => x.runId));
    const all = [...ids[0], ...ids[1]];
    assert.equal(new Set(all).size, all.length, "no run claimed twice");
    assert.equal(all.length, N, "every due run claimed");
    assert.ok(ids[0].length > 0 && ids[1].length > 0, "both claimed (each has room for 150)");
    assert.ok(!all.includes("later"), "a run due later is not claimed");
    assert.ok(claimed.flat().every((c) => c.nextSeq === 3 && c.workflow === "wf"));
    // Each claim left the lease of its claimer, and no due entry.
    const kv = kvs[0];
    for (const [i, list] of ids.entries()) {
      for (const id of list.slice(0, 5)) {
        assert.deepEqual((await kv.get(keys.held(id))).value, { owner: `w${i}` });
        assert.equal((await kv.get(keys.active(id))).versionstamp, null);
      }
    }
    const left = await Array.fromAsync(kv.list({ prefix: keys.dueIndex() }));
    assert.deepEqual(left.map((e) => e.key.at(-1)), ["later"]);
  } finally {
    for (const d of dispatchers) await d.stop();
    for (const kv of kvs) kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Dispatcher arms a timer for the next due entry and claims it when it is due", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new FakeClock();
  await kv.set(keys.due(clock.now() + 5_000, "r1"), true);
  const { got, dispatcher } = oneWorker(kv, clock, new CommitBatcher(kv), 3_600_000);
  try {
    dispatcher.start();
    await new Promise((r) => setTimeout(r, 5));
    await dispatcher.wake();
    assert.deepEqual(got, [], "nothing is due yet");
    await clock.advance(4_999);
    assert.deepEqual(got, []);
    await clock.advance(1);
    for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 2));
    assert.deepEqual(got, ["r1"], "claimed by the timer armed from the index head");
  } finally {
    await dispatcher.stop();
  }
});

Deno.test("Dispatcher carries on the claims that landed when another claim of the round failed", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new FakeClock();
  for (const id of ["r1", "r2", "r3"]) {
    await kv.atomic().set(keys.due(clock.now() - 1, id), true)
      .set(keys.active(id), { dueAt: clock.now() - 1 }).commit();
  }
  // r2's claim fails, as a write can (a full disk, a lock held too long).
  const batcher = new CommitBatcher(kv);
  const write = batcher.write.bind(batcher);
  batcher.write = (op) =>
    op.deletes?.some((k) => k.at(-1) === "r2")
      ? Promise.reject(new Error("disk I/O error (injected)"))
      : write(op);
  const { got, dispatcher } = oneWorker(kv, clock, batcher, 60_000);
  try {
    dispatcher.start();
    await dispatcher.wake();
    assert.deepEqual(got.toSorted(), ["r1", "r3"], "the leases written are carried on");
    assert.deepEqual((await kv.get(keys.held("r1"))).value, { owner: "w1" });
    assert.equal((await kv.get(keys.held("r2"))).value, null, "r2 still waits in the due index");
    assert.equal((await kv.get(keys.active("r2"))).versionstamp !== null, true);
  } finally {
    await dispatcher.stop();
  }
});

/**
 * The engine below its free-space reserve, with the free space read from a
 * fake `statfs` and the checks driven by the fake clock: new work refused,
 * no claims, no queue listener, and everything back once space returns.
 * `disk_full_test.ts` fills a real filesystem.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import { createEngine, StorageFullError, workflow } from "../mod.ts";
import { attachQueueHandler } from "../engine/queue_listener.ts";
import { StorageGuard } from "../engine/storage.ts";
import { FakeClock } from "../engine/clock.ts";
import { failingCommits, testEngine, waitFor } from "./_helpers.ts";

const MIN = 1_000_000;

function fakeDisk(freeBytes: number) {
  const disk = {
    freeBytes,
    statfs: () => Promise.resolve({ bavail: Math.floor(disk.freeBytes / 4096), bsize: 4096 }),
  };
  return disk;
}

const quick = workflow("quick", { input: z.object({}) }).step("one", () => 1);

Deno.test("engine below the free-space reserve refuses new work and resumes when space returns", async (t) => {
  const disk = fakeDisk(10 * MIN);
  await using te = await testEngine([quick], {
    storage: { path: "/data", minFreeBytes: MIN, checkIntervalMs: 100, statfs: disk.statfs },
  });
  const { engine, clock } = te;
  const first = await engine.start("quick", {});
  assert.equal((await engine.result(first.id)).status, "succeeded");
  assert.equal(engine.stats().storage.status, "ok");

  await t.step("below the reserve: start and cancel reject with StorageFullError", async () => {
    disk.freeBytes = MIN - 1;
    await clock.advance(100);
    await waitFor(() => engine.stats().storage.status === "low", "the guard to see low space");
    assert.deepEqual(engine.stats().storage, {
      status: "low",
      freeBytes: Math.floor((MIN - 1) / 4096) * 4096,
      minFreeBytes: MIN,
    });
    await assert.rejects(engine.start("quick", {}), StorageFullError);
    await assert.rejects(
      engine.start("quick", {}),
      /bytes are free on the KV's disk, below the reserve of 1000000/,
    );
    await assert.rejects(engine.cancel(first.id), StorageFullError);
    // Reads work.
    assert.equal((await engine.get(first.id)).status, "succeeded");
    assert.equal((await engine.list()).runs.length, 1);
  });

  await t.step("space returns: starts work again, without a restart", async () => {
    disk.freeBytes = 2 * MIN;
    await clock.advance(100);
    await waitFor(() => engine.stats().storage.status === "ok", "the guard to see space");
    const again = await engine.start("quick", {});
    assert.equal((await engine.result(again.id)).status, "succeeded");
  });
});

Deno.test("engine started below the reserve attaches its queue listener only once space returns", async () => {
  const disk = fakeDisk(0);
  await using te = await testEngine([quick], {
    storage: { path: "/data", minFreeBytes: MIN, checkIntervalMs: 100, statfs: disk.statfs },
  });
  // Attaching succeeds only while the engine has not attached its own.
  const detach = attachQueueHandler(te.kv, () => {}, () => {});
  detach();
  disk.freeBytes = 2 * MIN;
  await te.clock.advance(100);
  await waitFor(() => te.engine.stats().storage.status === "ok", "the guard to see space");
  await waitFor(() => {
    try {
      attachQueueHandler(te.kv, () => {}, () => {})();
      return false;
    } catch {
      return true;
    }
  }, "the engine to attach its queue listener");
});

Deno.test("StorageGuard marks the store full on a disk-full write error until a look finds space", async () => {
  const disk = fakeDisk(10 * MIN);
  const clock = new FakeClock();
  const guard = new StorageGuard({ path: "/data", minFreeBytes: MIN, clock, statfs: disk.statfs });
  await guard.start();
  assert.ok(guard.writable);
  assert.equal(guard.reportWriteError(new TypeError("database is locked")), false);
  assert.ok(guard.writable);
  assert.equal(guard.reportWriteError(new TypeError("database or disk is full")), true);
  assert.equal(guard.state.status, "full");
  let released = false;
  const waiting = guard.whenWritable().then(() => released = true);
  await clock.advance(999);
  assert.equal(released, false);
  await clock.advance(1);
  await waiting;
  assert.ok(guard.writable && released);
  guard.stop();
  assert.throws(
    () => new StorageGuard({ clock, minFreeBytes: -1 }),
    /'minFreeBytes' must be an integer >= 0: current value is -1/,
  );
});

/** A KV handle whose commits throw `message` while `state.failing`. */
function failingKv(kv: Deno.Kv, message: string) {
  const state = { failing: false };
  const failure = () => state.failing ? new TypeError(message) : undefined;
  return { kv: failingCommits(kv, failure), state };
}

Deno.test("cancel reaches a run this worker still leases after its writes kept failing", async () => {
  const inner = await Deno.openKv(":memory:");
  const { kv, state } = failingKv(inner, "disk I/O error (simulated)");
  const gate = Promise.withResolvers<void>();
  const started = Promise.withResolvers<void>();
  const wf = workflow("stalls", { input: z.object({}) }).step("s", async () => {
    started.resolve();
    await gate.promise;
    return 1;
  });
  const engine = await createEngine({ kv, workflows: [wf], clock: new FakeClock() });
  try {
    const run = await engine.start("stalls", {});
    const waiting = engine.result(run.id);
    await started.promise;
    state.failing = true;
    gate.resolve();
    // Reloads keep failing: the run is left as it is on disk, leased by this worker.
    await assert.rejects(waiting, /disk I\/O error/);
    state.failing = false;
    assert.equal((await engine.get(run.id)).status, "running");
    const cancelled = await engine.cancel(run.id);
    assert.equal(cancelled.status, "cancelled");
    assert.equal((await engine.get(run.id)).status, "cancelled");
  } finally {
    await engine.close({ graceMs: 0 });
    inner.close();
  }
});

Deno.test("StorageGuard deletes its reserve file when space runs low and writes it back after", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_reserve_" });
  const path = `${dir}/kv.sqlite3.reserve`;
  const disk = fakeDisk(10 * MIN);
  const clock = new FakeClock();
  const guard = new StorageGuard({
    path: dir,
    minFreeBytes: MIN,
    clock,
    statfs: disk.statfs,
    reserveFile: { path, bytes: 4096 * 10 },
  });
  const exists = () => Deno.stat(path).then((s) => s.size, () => -1);
  try {
    await guard.start();
    assert.equal(await exists(), 40_960);
    disk.freeBytes = MIN - 4096;
    await clock.advance(1_000);
    await guard.settled();
    assert.equal(guard.state.status, "low");
    assert.equal(await exists(), -1, "deleted to make room");
    // Its own room back is not space back: the reserve must fit again above the minimum.
    disk.freeBytes = MIN + 4096;
    await clock.advance(1_000);
    await guard.settled();
    assert.equal(guard.state.status, "low");
    disk.freeBytes = MIN + 2 * 40_960;
    await clock.advance(1_000);
    await guard.settled();
    assert.equal(guard.state.status, "ok");
    assert.equal(await exists(), 40_960);
    assert.throws(
      () => new StorageGuard({ clock, minFreeBytes: 100, reserveFile: { path, bytes: 100 } }),
      /'reserveFile.bytes' must be an integer from 1 to 'minFreeBytes' - 1 \(99\): current value is 100/,
    );
  } finally {
    guard.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

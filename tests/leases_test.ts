/**
 * Core v2 in one process: what a waiting run costs (counted, not timed),
 * what `createEngine` reads before it returns, and leases between two
 * workers on one KV file, each on its own fake clock, so a worker whose
 * heartbeat stops can be fenced deterministically.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  createEngine,
  type Engine,
  FakeClock,
  FencedError,
  RetryAfterError,
  type RunSnapshot,
  workflow,
} from "../mod.ts";
import { keyLayout } from "../engine/keys.ts";
import { deferred, testEngine, waitFor } from "./_helpers.ts";

const HOUR_MS = 3_600_000;

/** A workflow whose one step waits an hour before its second attempt. */
const later = workflow("later").step("wait", ({ attempt }) => {
  if (attempt === 1) throw new RetryAfterError("come back in an hour", HOUR_MS);
  return attempt;
});

/** Counts the calls an engine makes on its KV, by method. */
function countingKv(kv: Deno.Kv): { kv: Deno.Kv; calls: Map<string, number> } {
  const calls = new Map<string, number>();
  const proxy = new Proxy(kv, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.set(String(name), (calls.get(String(name)) ?? 0) + 1);
        return value.apply(target, args);
      };
    },
  });
  return { kv: proxy, calls };
}

Deno.test("engine holds no run in memory while runs wait for a retry, and reloads none to start", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "weft_leases_" });
  const path = join(dir, "kv.sqlite3");
  const clock = new FakeClock();
  const N = 300;
  try {
    const ids: string[] = [];
    await t.step(`${N} runs go to waiting: none is held`, async () => {
      const kv = await Deno.openKv(path);
      const engine = await createEngine({ kv, workflows: [later], clock });
      for (let i = 0; i < N; i++) ids.push((await engine.start("later", null)).id);
      await waitFor(
        async () => {
          const page = await engine.list({ status: "running", limit: 1000 });
          const snaps = await Promise.all(page.runs.map((r) => engine.get(r.id)));
          return snaps.filter((s) => s.steps.wait.status === "waiting").length === N;
        },
        "every run waiting",
        5_000,
      );
      await waitFor(() => engine.stats().activeRuns === 0, "no run held");
      const stats = engine.stats();
      assert.equal(stats.runningSteps, 0);
      assert.equal(stats.queuedSteps, 0);
      const keys = keyLayout();
      const due = await Array.fromAsync(kv.list({ prefix: keys.dueIndex() }));
      assert.equal(due.length, N, "each waiting run is one due entry");
      assert.ok(due.every((e) => e.key.at(-2) === clock.now() + HOUR_MS), "due in an hour");
      await engine.close();
      kv.close();
    });
    await t.step("createEngine reads nothing of the backlog before it returns", async () => {
      const raw = await Deno.openKv(path);
      const { kv, calls } = countingKv(raw);
      const engine = await createEngine({ kv, workflows: [later], clock });
      const before = new Map(calls);
      assert.equal(before.get("list") ?? 0, 0, "no list before createEngine returned");
      assert.equal(before.get("get") ?? 0, 0, "no get before createEngine returned");
      assert.equal(before.get("getMany") ?? 0, 0);
      assert.equal(before.get("atomic"), 1, "one write: the worker's registration");
      // In the background, it claims nothing: nothing is due for an hour.
      await waitFor(() => (calls.get("list") ?? 0) > 0, "a first look at the due index");
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(engine.stats().claims, 0);
      assert.equal(engine.stats().activeRuns, 0);
      // An hour later every run is claimed and finishes.
      clock.tick(HOUR_MS);
      const done: RunSnapshot[] = await Promise.all(ids.map((id) => engine.result(id)));
      assert.ok(done.every((s) => s.status === "succeeded" && s.output === 2));
      assert.equal(engine.stats().claims, N);
      assert.equal(engine.stats().activeRuns, 0);
      await engine.close();
      raw.close();
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("engine keeps at most maxIdleRuns runs waiting for a slot in memory; the rest wait on disk", async () => {
  const gate = deferred();
  const wf = workflow("busy").step("s", () => gate.promise.then(() => "ok"));
  await using t = await testEngine([wf], { maxConcurrentSteps: 2, maxIdleRuns: 3 });
  const runs = await Promise.all(Array.from({ length: 20 }, () => t.engine.start("busy", null)));
  const stats = t.engine.stats();
  assert.equal(stats.runningSteps, 2);
  assert.equal(stats.queuedSteps, 3, "three wait in memory for a slot");
  assert.equal(stats.activeRuns, 5, "two running and three queued are held");
  const due = await Array.fromAsync(t.kv.list({ prefix: keyLayout().dueIndex() }));
  assert.equal(due.length, 15, "the other fifteen wait in the due index");
  gate.resolve();
  const done = await Promise.all(runs.map((r) => t.engine.result(r.id)));
  assert.ok(done.every((s) => s.status === "succeeded"));
  assert.equal(t.engine.stats().claims, 15);
  assert.equal((await Array.fromAsync(t.kv.list({ prefix: keyLayout().dueIndex() }))).length, 0);
});

Deno.test("engine alone keeps ready runs in memory; beside another worker it leaves them on disk", async () => {
  const gate = deferred();
  const wf = workflow("pool").step("s", () => gate.promise.then(() => "ok"));
  await using t = await testEngine([wf], { maxConcurrentSteps: 2 });
  const due = async () =>
    (await Array.fromAsync(t.kv.list({ prefix: keyLayout().dueIndex() }))).length;
  const first = await Promise.all(Array.from({ length: 100 }, () => t.engine.start("pool", null)));
  assert.equal(t.engine.stats().activeRuns, 100, "alone, every ready run is held");
  assert.equal(await due(), 0, "and none was written to the due index to be claimed back");
  // A second worker joins the KV; the first counts it on its next polls.
  const other = await createEngine({
    kv: t.kv,
    workflows: [wf],
    clock: t.clock,
    random: () => 0.5,
    maxConcurrentSteps: 2,
    useQueue: false, // one handle has one queue listener: the first engine's
  });
  try {
    for (let i = 0; i < 200 && t.engine.stats().otherWorkers === 0; i++) {
      await t.clock.advance(100);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.equal(t.engine.stats().otherWorkers, 1, "the first worker counted the second");
    const second = await Promise.all(
      Array.from({ length: 100 }, () => t.engine.start("pool", null)),
    );
    assert.equal(t.engine.stats().activeRuns, 100, "the new runs were not kept (20 idle at most)");
    assert.equal(
      await due() + other.stats().activeRuns,
      100,
      "they wait where either worker claims them",
    );
    gate.resolve();
    const done = await Promise.all([...first, ...second].map((r) => t.engine.result(r.id)));
    assert.ok(done.every((s) => s.status === "succeeded"));
  } finally {
    await other.close({ graceMs: 0 });
  }
});

/** Two workers on one KV file, each with its own clock. */
async function twoWorkers(dir: string, workflows: Parameters<typeof createEngine>[0]["workflows"]) {
  const path = join(dir, "kv.sqlite3");
  const clocks = [new FakeClock(), new FakeClock()];
  const kvs = [await Deno.openKv(path), await Deno.openKv(path)];
  const engines: Engine[] = [];
  for (let i = 0; i < 2; i++) {
    engines.push(
      await createEngine({
        kv: kvs[i],
        workflows,
        clock: clocks[i],
        heartbeatIntervalMs: 1_000,
        workerTimeoutMs: 5_000,
        pollIntervalMs: 100,
        // Both are this process: only the heartbeat tells them apart.
        detectDeadProcesses: false,
      }),
    );
  }
  return {
    clocks,
    engines,
    async close() {
      for (const e of engines) await e.close({ graceMs: 0 });
      for (const kv of kvs) kv.close();
    },
  };
}

/** The run ended with B's second attempt, once, after A's first was interrupted. */
async function assertTakenOver(b: Engine, runId: string): Promise<void> {
  const done = await b.result(runId);
  assert.equal(done.status, "succeeded");
  assert.equal(done.output, "attempt 2", "the result is B's attempt, never A's");
  const history = await b.history(runId);
  const succeeded = history.filter((e) => e.type === "step" && e.to === "succeeded");
  assert.equal(succeeded.length, 1, "one result committed");
  const interrupted = history.find((e) => e.type === "step" && e.to === "waiting");
  assert.equal(
    interrupted?.type === "step" && interrupted.error?.name,
    "AttemptInterruptedError",
  );
}

Deno.test("a worker whose heartbeat stops is fenced: another carries its run on, its late result is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_fence_" });
  const starts: { worker: string; attempt: number }[] = [];
  const gates: (() => void)[] = [];
  const wf = workflow("long").step("s", { timeoutMs: 3_600_000 }, async ({ attempt }) => {
    starts.push({ worker: "?", attempt });
    await new Promise<void>((resolve) => gates.push(resolve));
    return `attempt ${attempt}`;
  });
  const w = await twoWorkers(dir, [wf]);
  const [a, b] = w.engines;
  try {
    const run = await a.start("long", null);
    await waitFor(() => gates.length === 1, "the first attempt running on A");
    const aId = a.workerId;
    // A's clock stands still (no heartbeat); B's moves past the timeout.
    for (let i = 0; i < 20 && b.stats().fencedOthers === 0; i++) {
      await w.clocks[1].advance(1_000);
      await new Promise((r) => setTimeout(r, 20));
    }
    await waitFor(() => b.stats().fencedOthers === 1, "B declares A dead");
    await waitFor(() => gates.length === 2, "B runs a second attempt", 5_000);
    assert.deepEqual(starts.map((s) => s.attempt), [1, 2]);
    // A's body ends now: its commit must fail on the fence.
    gates[0]();
    await waitFor(() => a.stats().fenced === 1, "A learns it was fenced");
    await waitFor(() => a.workerId !== aId, "A registered again under a new id");
    gates[1]();
    await assertTakenOver(b, run.id);
  } finally {
    for (const g of gates) g();
    await w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a worker starved itself declares nobody dead on waking: silence counts only while it watched", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_starved_" });
  const wf = workflow("idle").step("s", () => "ok");
  const w = await twoWorkers(dir, [wf]);
  const [a, b] = w.engines;
  try {
    // Both have beaten once, and B has looked at A's beat since.
    await a.idle();
    await b.idle();
    await w.clocks[1].advance(1_000);
    await b.idle();
    assert.equal(b.stats().otherWorkers, 1);
    // B's clock jumps 8 s at once, past A's 5 s timeout: to B it is as if
    // its own process had been frozen. A's silence is B's, not A's.
    await w.clocks[1].advance(8_000);
    await b.idle();
    assert.equal(b.stats().fencedOthers, 0, "one late look declares nothing");
    // B beats on, A stays silent: now the silence is A's.
    for (let i = 0; i < 6 && b.stats().fencedOthers === 0; i++) {
      await w.clocks[1].advance(1_000);
      await b.idle();
    }
    assert.equal(b.stats().fencedOthers, 1, "after 5 s of B watching, A is dead");
  } finally {
    await w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * `kv` whose next commit that writes a run record resolves only when
 * `frozen` does: as if the process froze right after that commit was durable.
 */
function freezingAfterRunWrite(kv: Deno.Kv, frozen: Promise<void>): Deno.Kv {
  let armed = true;
  const runs = keyLayout().runs();
  const isRunKey = (key: Deno.KvKey) =>
    key.length === runs.length + 1 && runs.every((part, i) => key[i] === part);
  return new Proxy(kv, {
    get(target, prop) {
      if (prop !== "atomic") {
        const value = Reflect.get(target, prop);
        return typeof value === "function" ? value.bind(target) : value;
      }
      return () => {
        const op = target.atomic();
        let writesRun = false;
        const proxy: Deno.AtomicOperation = new Proxy(op, {
          get(o, p) {
            if (p === "commit") {
              return async () => {
                const result = await o.commit();
                if (armed && writesRun && result.ok) {
                  armed = false;
                  await frozen;
                }
                return result;
              };
            }
            if (p === "set") {
              return (key: Deno.KvKey, value: unknown, options?: { expireIn?: number }) => {
                if (isRunKey(key)) writesRun = true;
                o.set(key, value, options);
                return proxy;
              };
            }
            const value = Reflect.get(o, p);
            if (typeof value !== "function") return value;
            return (...args: unknown[]) => {
              value.apply(o, args);
              return proxy;
            };
          },
        });
        return proxy;
      };
    },
  });
}

Deno.test("a worker frozen between recording an attempt and starting its body starts no body once fenced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_frozen_" });
  const path = join(dir, "kv.sqlite3");
  const starts: number[] = [];
  const gates: (() => void)[] = [];
  const wf = workflow("long").step("s", { timeoutMs: 3_600_000 }, async ({ attempt }) => {
    starts.push(attempt);
    await new Promise<void>((resolve) => gates.push(resolve));
    return `attempt ${attempt}`;
  });
  const frozen = deferred();
  const kvA = await Deno.openKv(path);
  const kvB = await Deno.openKv(path);
  const clockA = new FakeClock();
  const clockB = new FakeClock();
  const settings = {
    workflows: [wf],
    heartbeatIntervalMs: 1_000,
    workerTimeoutMs: 5_000,
    pollIntervalMs: 100,
    detectDeadProcesses: false,
  };
  const a = await createEngine({
    ...settings,
    kv: freezingAfterRunWrite(kvA, frozen.promise),
    clock: clockA,
  });
  const b = await createEngine({ ...settings, kv: kvB, clock: clockB });
  try {
    await a.idle();
    await b.idle();
    // A writes the run with its first attempt running, then "freezes".
    const started = a.start("long", null);
    await waitFor(
      async () => (await Array.fromAsync(kvB.list({ prefix: keyLayout().runs() }))).length === 1,
      "the run and its attempt on disk",
    );
    // B sees A silent past the timeout, fences it and runs attempt 2.
    // (B's idle() would wait for that body: real pauses instead.)
    for (let i = 0; i < 12 && b.stats().fencedOthers === 0; i++) {
      await clockB.advance(1_000);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(b.stats().fencedOthers, 1, "B declared A dead");
    await waitFor(() => starts.includes(2), "B runs attempt 2", 5_000);
    // A wakes 6 s later, its timers due, and carries on from the commit.
    clockA.tick(6_000);
    frozen.resolve();
    const run = await started;
    await waitFor(() => a.stats().fenced === 1, "A learns it was fenced");
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(starts, [2], "attempt 1's body never started: A's lease was gone");
    gates[0]();
    await assertTakenOver(b, run.id);
  } finally {
    for (const g of gates) g();
    frozen.resolve();
    await a.close({ graceMs: 0 });
    await b.close({ graceMs: 0 });
    kvA.close();
    kvB.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A point where a KV call was made to wait: `frozen` once it waits, `release()` to let it go. */
interface Freeze {
  frozen: Promise<void>;
  release(): void;
}

function newFreeze(): Freeze & { hit(): void; released: Promise<void> } {
  const frozen = Promise.withResolvers<void>();
  const released = Promise.withResolvers<void>();
  return {
    frozen: frozen.promise,
    hit: frozen.resolve,
    released: released.promise,
    release: released.resolve,
  };
}

/**
 * `kv` whose calls can be made to wait, as if the process froze right after
 * them: the next `getMany` that reads a given run's record (a claim's load
 * of the run), and the next commit that registers a worker.
 */
function freezingKv(kv: Deno.Kv) {
  const reads = new Map<string, ReturnType<typeof newFreeze>>();
  let registration: ReturnType<typeof newFreeze> | undefined;
  let failRegistrations = 0;
  const runKeyOf = (key: Deno.KvKey) => {
    const runs = keyLayout().runs();
    const isRun = key.length === runs.length + 1 && runs.every((part, i) => key[i] === part);
    return isRun ? String(key.at(-1)) : undefined;
  };
  const atomic = (target: Deno.Kv) => {
    const op = target.atomic();
    let registers = false;
    const proxy: Deno.AtomicOperation = new Proxy(op, {
      get(o, p) {
        if (p === "commit") {
          return async () => {
            if (registers && failRegistrations > 0) {
              failRegistrations--;
              throw new Error("disk I/O error (injected)");
            }
            const freeze = registers ? registration : undefined;
            if (freeze) {
              registration = undefined;
              freeze.hit();
              await freeze.released;
            }
            return o.commit();
          };
        }
        const value = Reflect.get(o, p);
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          // Only a registration writes a worker's key (a reap checks it is absent).
          if (p === "set" && (args[0] as Deno.KvKey)[1] === "worker") registers = true;
          value.apply(o, args);
          return proxy;
        };
      },
    });
    return proxy;
  };
  const proxy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") return () => atomic(target);
      const value = Reflect.get(target, prop);
      if (prop !== "getMany") return typeof value === "function" ? value.bind(target) : value;
      return async (keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
        const entries = await target.getMany(keys, options);
        for (const key of keys) {
          const runId = runKeyOf(key);
          const freeze = runId === undefined ? undefined : reads.get(runId);
          if (!freeze) continue;
          reads.delete(runId!);
          freeze.hit();
          await freeze.released;
        }
        return entries;
      };
    },
  });
  return {
    kv: proxy,
    /** Lets every frozen call go, and freezes nothing more. */
    releaseAll() {
      for (const freeze of reads.values()) freeze.release();
      reads.clear();
      registration?.release();
      registration = undefined;
      failRegistrations = 0;
    },
    /** Freezes the next load of run `runId`, after its read. */
    read(runId: string): Freeze {
      const freeze = newFreeze();
      reads.set(runId, freeze);
      return freeze;
    },
    /** Freezes the next registration's commit, before it is sent. */
    registration(): Freeze {
      return registration = newFreeze();
    },
    /** Makes the next `n` registrations' commits throw. */
    failRegistrations(n: number) {
      failRegistrations = n;
    },
  };
}

/**
 * Moves `clock` a second at a time, with a real pause for what that wakes,
 * until `condition` holds; throws after 10 s of real time.
 */
async function advanceUntil(
  clock: FakeClock,
  condition: () => boolean,
  what: string,
): Promise<void> {
  const until = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`Timed out advancing the clock until ${what}`);
    await clock.advance(1_000);
    await new Promise((r) => setTimeout(r, 10));
  }
}

type SceneWorkflows = Parameters<typeof createEngine>[0]["workflows"];

/**
 * Two workers on one KV file, A's reads and registration able to freeze:
 * the scene of a worker that is fenced while it loads runs it just claimed.
 * `workflows` is called once per worker, with its name.
 */
async function staleLoadScene(dir: string, workflows: (worker: "A" | "B") => SceneWorkflows) {
  const path = join(dir, "kv.sqlite3");
  const kvA = await Deno.openKv(path);
  const kvB = await Deno.openKv(path);
  const freezing = freezingKv(kvA);
  const clocks = { a: new FakeClock(), b: new FakeClock() };
  const settings = {
    heartbeatIntervalMs: 1_000,
    workerTimeoutMs: 5_000,
    pollIntervalMs: 100,
    detectDeadProcesses: false,
    // The due index alone wakes them: no queue message arrives on a real timer.
    useQueue: false,
  };
  const a = await createEngine({
    ...settings,
    workflows: workflows("A"),
    kv: freezing.kv,
    clock: clocks.a,
  });
  const b = await createEngine({
    ...settings,
    workflows: workflows("B"),
    kv: kvB,
    clock: clocks.b,
  });
  await a.idle();
  await b.idle();
  let aId = a.workerId;
  const scene = {
    a,
    b,
    kvB,
    clocks,
    freezing,
    /** B sees A silent past the timeout and declares it dead: A is fenced, its runs due. */
    async fenceA() {
      aId = a.workerId;
      await advanceUntil(clocks.b, () => b.stats().fencedOthers === 1, "B declares A dead");
    },
    /** A's timers fire 6 s late: its heartbeat finds the fence, and it drops everything. */
    wakeA() {
      clocks.a.tick(6_000);
    },
    /**
     * A fencer deletes A's registration, and its reap of A's leases comes
     * later (it is slow, or died just after: the next orphan scan reaps).
     * A learns it on its heartbeat and drops everything; resolves with its
     * new registration frozen before it is sent.
     */
    async fenceAInTheGap(): Promise<Freeze> {
      aId = a.workerId;
      const keys = keyLayout();
      const fenced = await kvB.atomic().delete(keys.worker(aId)).delete(keys.heartbeat(aId))
        .commit();
      assert.ok(fenced.ok);
      const registration = freezing.registration();
      clocks.a.tick(6_000);
      await registration.frozen;
      assert.equal(a.workerId, aId, "A's id is still the old one");
      return registration;
    },
    /** Waits until A registered under a new id. */
    async registeredAgain() {
      await waitFor(() => a.workerId !== aId, "A registered again under a new id");
    },
    /** Waits until A acted on what it was given back, then moves its clock a second on. */
    async settle() {
      await a.idle();
      await clocks.a.advance(1_000);
      await a.idle();
    },
    /** The keys of `watched` whose versionstamp differs from `before`'s. */
    async writtenSince(before: Deno.KvEntryMaybe<unknown>[], watched: Deno.KvKey[]) {
      const after = await kvB.getMany(watched);
      return watched.flatMap((key, i) =>
        after[i].versionstamp === before[i].versionstamp ? [] : [key.join("/")]
      );
    },
    /** Closes both (B may be closed already), letting every frozen call go first. */
    async close() {
      freezing.releaseAll();
      await a.close({ graceMs: 0 });
      await b.close({ graceMs: 0 }).catch(() => {});
      kvA.close();
      kvB.close();
    },
  };
  return scene;
}

/** The run succeeded with `output`, and each step's result is in its history once. */
async function assertEndedOnce(b: Engine, runId: string, output: unknown): Promise<void> {
  const done = await b.result(runId);
  assert.equal(done.status, "succeeded");
  assert.deepEqual(done.output, output);
  const history = await b.history(runId);
  const succeeded = history.flatMap((e) =>
    e.type === "step" && e.to === "succeeded" ? [e.step] : []
  );
  assert.deepEqual(succeeded, [...new Set(succeeded)], `${runId}: a step's result committed twice`);
}

/** Bodies that wait for their gate, recording who started which attempt of which step. */
function gatedBodies() {
  const starts: string[] = [];
  const gates: (() => void)[] = [];
  return {
    starts,
    open: () => gates.forEach((g) => g()),
    /** A body for worker `who` that records `${who}:${step}${attempt}` and waits. */
    body: (who: string, value: unknown) => async (ctx: { step: string; attempt: number }) => {
      starts.push(`${who}:${ctx.step}${ctx.attempt}`);
      await new Promise<void>((resolve) => gates.push(resolve));
      return value;
    },
  };
}

Deno.test("a worker fenced while it loads a claimed run, and registered again, does not carry that run on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_stale_load_" });
  const bodies = gatedBodies();
  const scene = await staleLoadScene(dir, (who) => [
    workflow("later").step("s", { timeoutMs: 3_600_000 }, (ctx) => {
      if (ctx.attempt === 1) throw new RetryAfterError("come back in 3 s", 3_000);
      return bodies.body(who, `attempt ${ctx.attempt}`)(ctx);
    }),
  ]);
  try {
    // Attempt 1 asks for 3 s: the run waits on disk, in the due index.
    const run = await scene.a.start("later", null);
    await waitFor(() => scene.a.stats().activeRuns === 0, "the waiting run on disk only");
    // A claims it when due, and freezes just after reading it.
    const read = scene.freezing.read(run.id);
    await scene.clocks.a.advance(3_000);
    await read.frozen;
    await scene.fenceA();
    await waitFor(() => bodies.starts.length === 1, "B runs attempt 2", 5_000);
    scene.wakeA();
    await scene.registeredAgain();
    // Only now does A's read come back: it was made under A's old id.
    read.release();
    await scene.settle();
    assert.deepEqual(bodies.starts, ["B:s2"], "attempt 2 started once, in B");
    bodies.open();
    await assertEndedOnce(scene.b, run.id, "attempt 2");
    assert.equal(scene.a.stats().activeRuns, 0, "A holds nothing of the run");
  } finally {
    bodies.open();
    await scene.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a claim round's write is refused for the runs it loaded before its worker was fenced", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_stale_round_" });
  const bodies = gatedBodies();
  // A sleep that ends starts the next step in the same write as the claim
  // round's: the write that must not land once the claimer is fenced.
  const scene = await staleLoadScene(dir, (who) => [
    workflow("nap")
      .sleep("nap", { durationMs: 3_000 })
      .step("s", { needs: ["nap"], timeoutMs: 3_600_000 }, bodies.body(who, "done")),
  ]);
  try {
    const first = await scene.a.start("nap", null);
    const second = await scene.a.start("nap", null);
    await waitFor(() => scene.a.stats().activeRuns === 0, "both runs asleep on disk");
    // One claim round takes both; the second's read freezes, the first's
    // run is loaded (under A's old id) and waits for the round's write.
    const read = scene.freezing.read(second.id);
    await scene.clocks.a.advance(3_000);
    await read.frozen;
    await scene.fenceA();
    await waitFor(() => bodies.starts.length === 2, "B carries both runs on", 5_000);
    const keys = keyLayout();
    const watched = [first, second].flatMap((r) => [
      keys.run(r.id),
      keys.step(r.id, "nap"),
      keys.step(r.id, "s"),
    ]);
    const before = await scene.kvB.getMany(watched);
    scene.wakeA();
    await scene.registeredAgain();
    read.release();
    await scene.settle();
    assert.deepEqual(bodies.starts, ["B:s1", "B:s1"], "each s once, in B");
    assert.deepEqual(
      await scene.writtenSince(before, watched),
      [],
      "A wrote nothing of what it loaded before the fence",
    );
    bodies.open();
    await assertEndedOnce(scene.b, first.id, "done");
    await assertEndedOnce(scene.b, second.id, "done");
  } finally {
    bodies.open();
    await scene.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a run whose load ends after its worker dropped everything, before it registered again, is not kept in memory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_stale_gap_" });
  const starts: string[] = [];
  const scene = await staleLoadScene(dir, (who) => [
    workflow("thrice").step("s", ({ attempt }) => {
      starts.push(`${who}:s${attempt}`);
      if (attempt < 3) throw new RetryAfterError("again in 3 s", 3_000);
      return "done";
    }),
  ]);
  try {
    const run = await scene.a.start("thrice", null);
    await waitFor(() => scene.a.stats().activeRuns === 0, "the waiting run on disk only");
    const read = scene.freezing.read(run.id);
    await scene.clocks.a.advance(3_000);
    await read.frozen;
    await scene.fenceA();
    // B runs attempt 2, which asks for 3 s more, and leaves.
    await waitFor(() => starts.includes("B:s2"), "B ran attempt 2");
    await waitFor(() => scene.b.stats().activeRuns === 0, "the run back in the due index");
    await scene.b.close({ graceMs: 0 });
    // A drops everything; while its new registration is being written, the
    // read comes back: the load ends under the old id, still A's current one.
    const registration = scene.freezing.registration();
    scene.wakeA();
    await registration.frozen;
    read.release();
    await scene.a.idle();
    registration.release();
    await scene.registeredAgain();
    // When attempt 3 is due, A claims the run under its new id and ends it
    // (a copy of that load kept in memory would swallow the claim).
    await advanceUntil(scene.clocks.a, () => starts.length === 3, "A runs attempt 3");
    assert.deepEqual(starts, ["A:s1", "B:s2", "A:s3"]);
    const done = await scene.a.result(run.id);
    assert.equal(done.status, "succeeded");
  } finally {
    await scene.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a claim round's release of a run loaded before the new registration landed leaves the new holder's lease alone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_stale_release_" });
  const bodies = gatedBodies();
  const keys = keyLayout();
  const scene = await staleLoadScene(dir, (who) => [
    workflow("retry").step("a", { timeoutMs: 3_600_000 }, (ctx) => {
      if (ctx.attempt === 1) throw new RetryAfterError("again in 60 s", 60_000);
      return bodies.body(who, ctx.attempt)(ctx);
    }),
    workflow("nap")
      .sleep("nap", { durationMs: 3_000 })
      .step("s", { needs: ["nap"], timeoutMs: 3_600_000 }, bodies.body(who, "done")),
  ]);
  try {
    const r1 = await scene.a.start("retry", null);
    const r2 = await scene.a.start("nap", null);
    await waitFor(() => scene.a.stats().activeRuns === 0, "both runs on disk");
    // R1 due in 3 s though its retry is 60 s away, as a reap, an event or an
    // upgrade leaves a run: its load changes nothing, and the round's write
    // would give it back to the due index.
    const active = await scene.kvB.get<{ dueAt: number }>(keys.active(r1.id));
    const due = await scene.kvB.get(keys.due(active.value!.dueAt, r1.id));
    const at = scene.clocks.a.now() + 3_000;
    const moved = await scene.kvB.atomic().check(active, due).delete(due.key)
      .set(keys.due(at, r1.id), due.value).set(keys.active(r1.id), { dueAt: at }).commit();
    assert.ok(moved.ok);
    // One claim round takes both; both loads freeze.
    const read1 = scene.freezing.read(r1.id);
    const read2 = scene.freezing.read(r2.id);
    await scene.clocks.a.advance(3_000);
    await Promise.all([read1.frozen, read2.frozen]);
    await scene.fenceA();
    await waitFor(() => bodies.starts.includes("B:s1"), "B carries R2 on");
    // B's clock reaches R1's retry: B claims it and runs attempt 2.
    await advanceUntil(scene.clocks.b, () => bodies.starts.includes("B:a2"), "B runs R1's a2");
    const before = await scene.kvB.getMany([keys.held(r1.id), keys.step(r1.id, "a")]);
    // A drops everything; R1's load ends before the new registration lands,
    // R2's after; then the round's write goes out.
    const registration = scene.freezing.registration();
    scene.wakeA();
    await registration.frozen;
    read1.release();
    // R1's load ends in the gap (the round then waits for R2's): it began
    // before A learned of the fence, so A drops what it read.
    await new Promise((r) => setTimeout(r, 20));
    registration.release();
    await scene.registeredAgain();
    read2.release();
    await scene.a.idle();
    assert.deepEqual(
      await scene.writtenSince(before, [keys.held(r1.id), keys.step(r1.id, "a")]),
      [],
      "B's lease of R1 and its step stand",
    );
    // Were R1 back in the due index, A would claim it now and start attempt 3.
    await scene.clocks.a.advance(60_000);
    await scene.a.idle();
    assert.deepEqual(bodies.starts.filter((s) => s.includes(":a")), ["B:a2"], "a runs once");
    bodies.open();
    await assertEndedOnce(scene.b, r1.id, 2);
    await assertEndedOnce(scene.b, r2.id, "done");
  } finally {
    bodies.open();
    await scene.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a cancel that arrives after its worker dropped everything, before it registered again, acts under the new registration", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_stale_begin_" });
  const bodies = gatedBodies();
  const scene = await staleLoadScene(dir, (who) => [
    workflow("gated").step("s", { timeoutMs: 3_600_000 }, bodies.body(who, "done")),
  ]);
  try {
    const run = await scene.a.start("gated", null);
    await waitFor(() => bodies.starts.includes("A:s1"), "A runs s1");
    const registration = await scene.fenceAInTheGap();
    // A cancel arrives now, while the run's lease still names A's old id.
    const cancelled = scene.a.cancel(run.id, { reason: "test" }).catch((error) => error);
    // B's orphan scan reaps the lease, and B carries the run on.
    await advanceUntil(scene.clocks.b, () => bodies.starts.includes("B:s2"), "B runs s2");
    registration.release();
    await scene.registeredAgain();
    // (Not `idle()`: A's s1 ignores its abort and waits for its gate.)
    await cancelled;
    assert.deepEqual(bodies.starts, ["A:s1", "B:s2"], "A started nothing after the fence");
    // The cancel reaches B through its inbox: one ending is committed, B's.
    const until = Date.now() + 10_000;
    let status = (await scene.b.get(run.id)).status;
    while (status !== "cancelled" && Date.now() < until) {
      await scene.clocks.b.advance(1_000);
      await new Promise((r) => setTimeout(r, 10));
      status = (await scene.b.get(run.id)).status;
    }
    assert.equal(status, "cancelled", "the cancel reached B");
    const ends = (await scene.b.history(run.id)).filter((e) =>
      e.type === "run" && (e.to === "succeeded" || e.to === "cancelled")
    );
    assert.equal(ends.length, 1, `one ending committed: ${JSON.stringify(ends)}`);
    assert.deepEqual(bodies.starts, ["A:s1", "B:s2"], "and no other body started");
  } finally {
    bodies.open();
    await scene.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("requests that wait for a registration after a fence that does not land are refused within 5 s", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_register_wait_" });
  const scene = await staleLoadScene(dir, () => [workflow("one").step("s", () => "ok")]);
  try {
    const run = await scene.a.start("one", null);
    await scene.a.result(run.id);
    const registration = await scene.fenceAInTheGap();
    // The registration hangs: a start and a cancel get a clear refusal, not a wait for ever.
    const [started, cancelled] = await Promise.allSettled([
      scene.a.start("one", null),
      scene.a.cancel(run.id),
    ]);
    assert.ok(started.status === "rejected" && started.reason instanceof FencedError);
    assert.ok(cancelled.status === "rejected" && cancelled.reason instanceof FencedError);
    registration.release();
    await scene.registeredAgain();
    const after = await scene.a.start("one", null);
    assert.equal((await scene.a.result(after.id)).status, "succeeded");
  } finally {
    await scene.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a worker whose registration after a fence fails tries again until it lands, and works on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_register_again_" });
  const scene = await staleLoadScene(dir, () => [workflow("one").step("s", () => "ok")]);
  try {
    await scene.fenceA();
    scene.freezing.failRegistrations(2);
    scene.wakeA();
    // Two failed tries, 50-200 ms apart on real timers, then it lands.
    await scene.registeredAgain();
    assert.equal(scene.a.stats().fenced, 1);
    const run = await scene.a.start("one", null);
    assert.equal((await scene.a.result(run.id)).status, "succeeded");
  } finally {
    await scene.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cancel of a run held by another worker reaches it through that worker's inbox", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_inbox_" });
  const wf = workflow("held").step(
    "s",
    ({ signal }) =>
      new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason))),
  );
  const w = await twoWorkers(dir, [wf]);
  const [a, b] = w.engines;
  try {
    const run = await a.start("held", null);
    await waitFor(() => a.stats().runningSteps === 1, "running on A");
    const asked = await b.cancel(run.id, { reason: "from B" });
    assert.equal(asked.status, "running", "B only left the request");
    const result = b.result(run.id);
    // A reads its inbox on its poll; B sees the end on its own.
    let settled = false;
    result.finally(() => settled = true);
    for (let i = 0; i < 50 && !settled; i++) {
      await w.clocks[0].advance(100);
      await w.clocks[1].advance(100);
      await new Promise((r) => setTimeout(r, 5));
    }
    const done = await result;
    assert.equal(done.status, "cancelled");
    assert.equal(done.error?.message, "from B");
    assert.equal(done.steps.s.status, "cancelled");
  } finally {
    await w.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cancel claims a run that waits in the due index and ends it", async () => {
  await using t = await testEngine([later]);
  const run = await t.engine.start("later", null);
  await waitFor(() => t.engine.stats().activeRuns === 0, "the run back in the due index");
  const done = await t.engine.cancel(run.id);
  assert.equal(done.status, "cancelled");
  assert.equal(done.steps.wait.status, "cancelled");
  assert.equal((await Array.fromAsync(t.kv.list({ prefix: keyLayout().dueIndex() }))).length, 0);
  assert.equal((await Array.fromAsync(t.kv.list({ prefix: keyLayout().actives() }))).length, 0);
});

/**
 * The records an earlier Weft left for run `runId` of `wf`, killed while step
 * 'a' ran its first attempt; the caller adds that layout's lease keys.
 */
function interruptedRun(kv: Deno.Kv, runId: string, wf: string): Deno.AtomicOperation {
  const keys = keyLayout();
  return kv.atomic()
    .set(keys.run(runId), {
      id: runId,
      workflow: wf,
      status: "running",
      createdAt: 1,
      startedAt: 1,
    })
    .set(keys.step(runId, "a"), {
      status: "running",
      attempts: 1,
      startedAt: 1,
      attemptStartedAt: 1,
      errors: [],
    })
    .set(keys.history(runId, 0), [
      { type: "run", seq: 0, at: 1, from: null, to: "pending" },
      { type: "step", seq: 1, at: 1, step: "a", from: "pending", to: "running", attempt: 1 },
      { type: "run", seq: 2, at: 1, from: "pending", to: "running" },
    ])
    .set(keys.byWorkflow(wf, runId), true);
}

/** Starts an engine on `kv` and checks that it ends the run left by {@linkcode interruptedRun}. */
async function assertCarriedOn(kv: Deno.Kv, runId: string, wf: string): Promise<void> {
  const keys = keyLayout();
  const def = workflow(wf).step("a", ({ attempt }) => attempt);
  const engine = await createEngine({ kv, workflows: [def], clock: new FakeClock() });
  try {
    const done = await engine.result(runId, { signal: AbortSignal.timeout(10_000) });
    assert.equal(done.status, "succeeded");
    assert.equal(done.output, 2, "the interrupted attempt ran again as attempt 2");
    const history = await engine.history(runId);
    assert.deepEqual(
      history.map((e) => e.seq),
      history.map((_, i) => i),
      "history goes on in order",
    );
    // No lease of any layout is left, and the file is marked as upgraded.
    for (const prefix of [keys.allOwned(), keys.actives(), keys.helds(), keys.dueIndex()]) {
      assert.deepEqual(await Array.fromAsync(kv.list({ prefix })), [], JSON.stringify(prefix));
    }
    assert.equal((await kv.get(keys.layoutVersion())).value, 3);
  } finally {
    await engine.close();
    kv.close();
  }
}

Deno.test("engine carries on runs that Weft 1 left unfinished (active = true, no due index)", async () => {
  const kv = await Deno.openKv(":memory:");
  const runId = "01J00000000000000000000001";
  await interruptedRun(kv, runId, "v1").set(keyLayout().active(runId), true).commit();
  await assertCarriedOn(kv, runId, "v1");
});

Deno.test("engine carries on a run that layout 2 left leased to a worker now gone", async () => {
  const kv = await Deno.openKv(":memory:");
  const keys = keyLayout();
  const runId = "01J00000000000000000000002";
  await interruptedRun(kv, runId, "v2")
    .set(keys.active(runId), { owner: "gone" })
    .set([...keys.allOwned(), "gone", runId], true)
    .set(keys.layoutVersion(), 2)
    .commit();
  await assertCarriedOn(kv, runId, "v2");
});

Deno.test("engine claims each run once when its parallel steps wait for slots (maxIdleRuns counts runs)", async () => {
  const wf = workflow("fan")
    .step("a", async () => await Promise.resolve(1))
    .step("b", async () => await Promise.resolve(2))
    .step("c", async () => await Promise.resolve(3))
    .step("d", { needs: ["a", "b", "c"] }, ({ results }) => results.a + results.b + results.c);
  await using t = await testEngine([wf], { maxConcurrentSteps: 4, maxIdleRuns: 4 });
  const runs = await Promise.all(Array.from({ length: 40 }, () => t.engine.start("fan", null)));
  const dueAtStart = (await Array.fromAsync(t.kv.list({ prefix: keyLayout().dueIndex() }))).length;
  assert.ok(dueAtStart > 0, "some runs wait in the due index");
  const done = await Promise.all(runs.map((r) => t.engine.result(r.id)));
  assert.ok(done.every((s) => s.status === "succeeded" && s.output === 6));
  assert.ok(
    t.engine.stats().claims <= dueAtStart,
    `claims ${t.engine.stats().claims} <= runs that waited in the index ${dueAtStart}`,
  );
});

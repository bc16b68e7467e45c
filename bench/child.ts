/**
 * One benchmark pass in a process of its own, started by `run.ts`:
 *
 *   deno run -A bench/child.ts <workload> --kv <file> [--seed <ids file>]
 *   deno run -A bench/child.ts seed --kv <file> --out <ids file> --n <runs>
 *
 * Opens the KV file, creates an engine with the workload's workflows and
 * concurrency (default durability: a write is acknowledged once committed),
 * runs the workload and prints one JSON line on stdout. `seed` stores `n`
 * finished no-op runs for W6 and writes their ids.
 *
 * @module
 */
import { createEngine, type Engine } from "../mod.ts";
import { countingKv, newCounts } from "./_kv_counter.ts";
import { ResourceMeter, round, sleep, summarizeSamples } from "./_stats.ts";
import { RunTracker } from "./_tracker.ts";
import { noopWorkflow, workloadByName } from "./workloads.ts";

/** The workflow name the W6 seed stores runs of; W6 registers the same. */
export const SEED_WORKFLOW = "w6-noop";

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

async function measure(name: string, kvPath: string, idsPath: string | undefined): Promise<void> {
  const workload = workloadByName(name);
  if (!workload) throw new Error(`Unknown workload '${name}'`);
  if (!workload.setup) throw new Error(`Workload '${name}' runs in bench/${workload.script}`);
  const instance = workload.setup();
  const storedIds: string[] = idsPath ? JSON.parse(await Deno.readTextFile(idsPath)) : [];
  const counts = newCounts();
  const raw = await Deno.openKv(kvPath);
  const engine = await createEngine({
    // An ablation for experiments only (WEFT_BENCH_COUNT=0): the raw KV, no counters.
    kv: Deno.env.get("WEFT_BENCH_COUNT") === "0" ? raw : countingKv(raw, counts),
    workflows: [...instance.workflows, noopWorkflow(WARMUP_WORKFLOW)],
    maxConcurrentSteps: workload.concurrency,
    // An ablation for experiments only (WEFT_BENCH_USE_QUEUE=0): no KV queue wake-ups.
    useQueue: Deno.env.get("WEFT_BENCH_USE_QUEUE") !== "0",
    // An ablation for experiments only: the in-memory pool of idle runs.
    ...(Deno.env.get("WEFT_BENCH_MAX_IDLE_RUNS")
      ? { maxIdleRuns: Number(Deno.env.get("WEFT_BENCH_MAX_IDLE_RUNS")) }
      : {}),
  });
  await warmUp(engine);
  Object.assign(counts, newCounts());
  const commitsBefore = engine.stats().commits;
  const tracker = new RunTracker(engine);
  const meter = new ResourceMeter();
  const stopWatchdog = watchdog(workload.name, engine, tracker);
  meter.start();
  const fields = await instance.run({ engine, tracker, storedIds });
  stopWatchdog();
  const usage = meter.stop();
  const stats = engine.stats();
  const runs = tracker.ended;
  const commit = summarizeSamples(counts.commitMs);
  const perRun = (x: number) => round(x / Math.max(1, runs), 2);
  const line = {
    system: "weft",
    version: Deno.env.get("WEFT_BENCH_VERSION") ?? "dev",
    mode: Deno.env.get("WEFT_BENCH_USE_QUEUE") === "0" ? "kv-file-noqueue" : "kv-file",
    workload: workload.name,
    concurrency: workload.concurrency,
    rate: workload.rate,
    ...fields,
    ...usage,
    runs,
    failed_runs: tracker.failed,
    attempts: tracker.attempts,
    kv_commits: counts.commits,
    engine_commits: stats.commits - commitsBefore,
    commits_per_run: perRun(counts.commits),
    commits_per_attempt: round(counts.commits / Math.max(1, tracker.attempts), 3),
    mutations_per_run: perRun(counts.mutations),
    // Which keys those mutations touch, per run: "set run 3, set hist 3, ...".
    mutations_per_run_by_key: [...counts.byKey].sort((a, b) => b[1] - a[1])
      .map(([kind, n]) => `${kind} ${perRun(n)}`).join(", "),
    queue_enqueued: counts.enqueued,
    queue_delayed: counts.delayed,
    queue_delivered: counts.delivered,
    queue_msgs_per_run: perRun(counts.enqueued + counts.delayed),
    commit_p50_ms: commit.p50,
    commit_p99_ms: commit.p99,
    failed_commits: counts.failedCommits + counts.thrownCommits,
    kv_reads: counts.reads,
  };
  console.log(JSON.stringify(line));
  tracker.close();
  await engine.close({ graceMs: 0 });
  raw.close();
}

const WARMUP_WORKFLOW = "bench-warmup";

/**
 * Ends the pass with a diagnostic JSON line (and exit code 3) when no
 * transition has been committed for `WEFT_BENCH_STALL_S` seconds (default
 * 15): a stalled engine then shows up as a failed workload with its
 * counters, not as a suite waiting for its timeout.
 */
function watchdog(name: string, engine: Engine, tracker: RunTracker): () => void {
  const limitS = Number(Deno.env.get("WEFT_BENCH_STALL_S") ?? 15);
  let last = -1, idleS = 0;
  const timer = setInterval(() => {
    idleS = tracker.events === last ? idleS + 1 : 0;
    last = tracker.events;
    if (idleS < limitS) return;
    console.log(JSON.stringify({
      system: "weft",
      version: Deno.env.get("WEFT_BENCH_VERSION") ?? "dev",
      workload: name,
      error: `stalled: no transition committed for ${limitS} s`,
      runs: tracker.ended,
      attempts: tracker.attempts,
      retries: tracker.retries,
      ...Object.fromEntries(Object.entries(engine.stats()).map(([k, v]) => [`stats_${k}`, v])),
    }));
    Deno.exit(3);
  }, 1000);
  return () => clearInterval(timer);
}

/**
 * One run through the engine before the clock starts, as the peer makes its
 * worker `waitUntilReady()` first: the first commit of a process lazily
 * loads KV's code and compiles the engine's hot paths, a one-off cost of a
 * process rather than of the workload. Its commits are not counted.
 */
async function warmUp(engine: Engine): Promise<void> {
  const tracker = new RunTracker(engine);
  await engine.start(WARMUP_WORKFLOW, null);
  await tracker.waitForEnded(1);
  tracker.close();
}

/** Stores `n` finished runs in big concurrent bulks, as fast as the engine goes. */
async function seed(n: number, kvPath: string, idsPath: string): Promise<void> {
  const counts = newCounts();
  const raw = await Deno.openKv(kvPath);
  const engine = await createEngine({
    kv: countingKv(raw, counts),
    workflows: [noopWorkflow(SEED_WORKFLOW)],
    maxConcurrentSteps: 500,
  });
  const tracker = new RunTracker(engine);
  const ids: string[] = [];
  const bulkSize = 5000;
  const t0 = performance.now();
  for (let done = 0; done < n; done += bulkSize) {
    const m = Math.min(bulkSize, n - done);
    const starts = Array.from(
      { length: m },
      (_, i) => engine.start(SEED_WORKFLOW, { i: done + i }),
    );
    for (const r of await Promise.all(starts)) ids.push(r.id);
    await tracker.waitForEnded(done + m);
    console.error(
      `  seeded ${done + m}/${n} runs in ${round((performance.now() - t0) / 1000, 1)} s`,
    );
  }
  // Let the queue deliver the wake-ups, so the cached file brings no backlog into W6.
  const deadline = performance.now() + 60_000;
  while (counts.delivered < counts.enqueued + counts.delayed && performance.now() < deadline) {
    await sleep(100);
  }
  await sleep(500);
  tracker.close();
  await engine.close({ graceMs: 0 });
  raw.close();
  await Deno.writeTextFile(idsPath, JSON.stringify(ids));
}

if (import.meta.main) {
  const [name, ...rest] = Deno.args;
  const kvPath = flag(rest, "kv");
  if (!name || !kvPath) {
    console.error("usage: child.ts <workload|seed> --kv <file> [--seed|--out <file>] [--n <runs>]");
    Deno.exit(2);
  }
  if (name === "seed") {
    const idsPath = flag(rest, "out");
    const n = Number(flag(rest, "n"));
    if (!idsPath || !(n > 0)) {
      console.error("seed needs --out <file> and --n <runs>");
      Deno.exit(2);
    }
    await seed(n, kvPath, idsPath);
  } else {
    await measure(name, kvPath, flag(rest, "seed"));
  }
  // Timers of the KV queue listener would otherwise keep the process a while.
  Deno.exit(0);
}

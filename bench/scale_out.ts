/**
 * W8, scale-out: W2's order DAG (payment, inventory and logistics each
 * await 10 ms, then dispatch reads their results; 1,000 runs submitted at
 * once) run by 1, 2 and 4 worker processes that share one KV file, each
 * with W2's concurrency of 50. Reports runs/s per worker count, the speedup
 * over one worker, and duplicates, which must be 0:
 *
 * - `dup_body_starts`: (run, step, attempt) triples whose body started more
 *   than once, from a side log every worker writes (one line per body start);
 * - `dup_commits`: steps with more than one committed success, and runs with
 *   more than one committed end, from the runs' history in KV;
 * - `missing`: runs that did not succeed exactly once.
 *
 * `reexecuted_steps` (a step that started under more than one attempt number)
 * is reported beside them: a lease taken over from a worker thought dead
 * re-runs a step under a new attempt, which is allowed but should not happen
 * among healthy workers.
 *
 *   deno run -A bench/scale_out.ts w8 --kv <file> [--workers 1,2,4] [--runs 1000]
 *       [--starter first|each] [--step-ms 10]
 *   deno run -A bench/scale_out.ts worker --kv <file> --index <i> --log <file> [--step-ms 10]
 *
 * `--step-ms 100` is a diagnostic: with W2's 10 ms steps one worker already
 * keeps a core busy, so on a 2-core machine more workers can only add
 * throughput while a core is free; with 100 ms steps the slots are the cap,
 * and the speedup shows whether work spreads over the workers.
 *
 * Each worker count gets a fresh KV file beside `--kv`. The runs are started
 * by worker 0 (`--starter first`, the default: work reaches the others only
 * through the store) or split among the workers (`--starter each`).
 *
 * @module
 */
import { dirname } from "node:path";
import process from "node:process";
import { createEngine, type EngineOptions, openKvRetrying, workflow } from "../mod.ts";
import { keyLayout } from "../engine/keys.ts";
import { RunStore } from "../engine/store.ts";
import { countingKv, newCounts } from "./_kv_counter.ts";
import { servedV8Flags } from "./_runtime.ts";
import { round, summarizeSamples } from "./_stats.ts";

const SELF = decodeURIComponent(new URL(import.meta.url).pathname);
const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const ORDER = "w8-order";
const WARMUP = "w8-warmup";
const STEPS = ["payment", "inventory", "logistics", "dispatch"] as const;
/** W2's concurrency, per worker. */
const CONCURRENCY = 50;
/** How long W2's parent steps await. */
const STEP_MS = 10;
/** How often each worker looks at the due index (the engine's default is 250). */
const POLL_INTERVAL_MS = 25;

/** Epoch milliseconds with sub-millisecond precision, comparable across processes. */
const epochNow = () => performance.timeOrigin + performance.now();
const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// --- a worker --------------------------------------------------------------------------------

/** What a worker prints, one JSON object per line. */
type WorkerLine =
  | { ready: number }
  | { ended: string; at: number; status: string }
  | { submitted: [string, number][]; t0: number }
  | { stats: Record<string, number>; kv: Record<string, number>; bodies: number; cpu_s: number };

function emit(line: WorkerLine): void {
  console.log(JSON.stringify(line));
}

/** Options of a worker process. */
interface WorkerOptions {
  /** Where the side log of body starts goes. */
  logPath: string;
  /** How long payment, inventory and logistics await. */
  stepMs: number;
}

async function worker(kvPath: string, index: number, { logPath, stepMs }: WorkerOptions) {
  // The side log: one line per step-body start, written when the worker stops.
  const bodyStarts: string[] = [];
  const started = (runId: string, step: string, attempt: number) =>
    bodyStarts.push(`${runId}\t${step}\t${attempt}\t${index}`);
  const timed =
    (step: string) => async ({ runId, attempt }: { runId: string; attempt: number }) => {
      started(runId, step, attempt);
      await pause(stepMs);
      return { step, ok: true };
    };
  const order = workflow(ORDER)
    .step("payment", timed("payment"))
    .step("inventory", timed("inventory"))
    .step("logistics", timed("logistics"))
    .step(
      "dispatch",
      { needs: ["payment", "inventory", "logistics"] },
      ({ input, results, runId, attempt }) => {
        started(runId, "dispatch", attempt);
        return { run: (input as { run: number }).run, n: Object.keys(results).length };
      },
    );
  const warmup = workflow(WARMUP).step("noop", () => 1);
  let openRetries = 0;
  const raw = await openKvRetrying(kvPath, { onRetry: () => openRetries++ });
  const counts = newCounts();
  const options: EngineOptions = {
    kv: countingKv(raw, counts),
    workflows: [order, warmup],
    maxConcurrentSteps: CONCURRENCY,
    pollIntervalMs: POLL_INTERVAL_MS,
  };
  const engine = await createEngine(options);
  engine.subscribe(({ runId, workflow, event }) => {
    if (workflow !== ORDER || event.type !== "run") return;
    if (event.to === "succeeded" || event.to === "failed" || event.to === "cancelled") {
      emit({ ended: runId, at: epochNow(), status: event.to });
    }
  });
  // One run before the clock starts: KV's code and the engine's hot paths get loaded and compiled.
  const w = await engine.start(WARMUP, { worker: index });
  await engine.result(w.id);
  const cpu0 = process.cpuUsage();
  Object.assign(counts, newCounts());
  emit({ ready: index });
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let buffer = "";
  for await (const chunk of lines) {
    buffer += chunk;
    let nl: number;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const command = JSON.parse(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
      if (command.start !== undefined) {
        const { start: n, from } = command as { start: number; from: number };
        const t0 = epochNow();
        const submitAt: number[] = [];
        const starts: Promise<{ id: string }>[] = [];
        for (let run = from; run < from + n; run++) {
          submitAt.push(epochNow());
          starts.push(engine.start(ORDER, { run }));
        }
        const ids = await Promise.all(starts);
        emit({ submitted: ids.map((r, i) => [r.id, submitAt[i]]), t0 });
      } else if (command.stop) {
        const cpu = process.cpuUsage(cpu0);
        const commit = summarizeSamples(counts.commitMs);
        const kvFields = {
          commits: counts.commits,
          // "database is locked": not applied, retried by the engine.
          locked: counts.thrownCommits,
          check_failed: counts.failedCommits,
          commit_p50_ms: commit.p50,
          commit_p99_ms: commit.p99,
          // Time spent inside commit() calls that returned: the file's write lock and fsync.
          commit_s: round(counts.commitMs.reduce((a, b) => a + b, 0) / 1000, 3),
          reads: counts.reads,
          open_retries: openRetries,
        };
        await engine.close();
        raw.close();
        await Deno.writeTextFile(logPath, bodyStarts.map((l) => l + "\n").join(""));
        emit({
          stats: Object.fromEntries(
            Object.entries(engine.stats()).filter((e): e is [string, number] =>
              typeof e[1] === "number"
            ),
          ),
          kv: kvFields,
          bodies: bodyStarts.length,
          cpu_s: round((cpu.user + cpu.system) / 1e6, 2),
        });
        return;
      }
    }
  }
}

// --- the driver ------------------------------------------------------------------------------

/** A worker subprocess: its JSON lines, and a way to send it commands. */
class WorkerProcess {
  readonly index: number;
  readonly logPath: string;
  readonly ended = new Map<string, { at: number; status: string }>();
  submitted: [string, number][] = [];
  t0 = NaN;
  final?: {
    stats: Record<string, number>;
    kv: Record<string, number>;
    bodies: number;
    cpu_s: number;
  };
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #ready = Promise.withResolvers<void>();
  readonly #submitted = Promise.withResolvers<void>();
  readonly #done: Promise<void>;
  #onEnded: () => void = () => {};

  constructor(kvPath: string, index: number, { logPath, stepMs }: WorkerOptions) {
    this.index = index;
    this.logPath = logPath;
    this.#child = new Deno.Command(Deno.execPath(), {
      // The V8 flags of `deno task worker`: a worker as that task runs one.
      args: [
        "run",
        "-A",
        ...servedV8Flags(),
        SELF,
        "worker",
        "--kv",
        kvPath,
        "--index",
        String(index),
        "--log",
        logPath,
        "--step-ms",
        String(stepMs),
      ],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#stdin = this.#child.stdin.getWriter();
    this.#done = this.#read();
    // Whoever waits sees these rejections; nobody waiting is no crash.
    for (const p of [this.#done, this.#ready.promise, this.#submitted.promise]) p.catch(() => {});
  }

  async #read(): Promise<void> {
    let buffer = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const text = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (!text.startsWith("{")) continue; // the engine's log lines
        const line = JSON.parse(text) as WorkerLine;
        if ("ready" in line) this.#ready.resolve();
        else if ("ended" in line) {
          this.ended.set(line.ended, { at: line.at, status: line.status });
          this.#onEnded();
        } else if ("submitted" in line) {
          this.submitted = line.submitted;
          this.t0 = line.t0;
          this.#submitted.resolve();
        } else if ("stats" in line) this.final = line;
      }
    }
    const status = await this.#child.status;
    const failure = new Error(`worker ${this.index} exited with code ${status.code}`);
    this.#ready.reject(failure);
    this.#submitted.reject(failure);
    if (!this.final && !status.success) throw failure;
  }

  /** Resolves once the worker's engine is up and warmed. */
  ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** Calls `f` after each ended run. */
  onEnded(f: () => void): void {
    this.#onEnded = f;
  }

  async send(command: unknown): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode(JSON.stringify(command) + "\n"));
  }

  /** Asks it to start `n` runs numbered from `from`; resolves once they are committed. */
  async start(n: number, from: number): Promise<void> {
    await this.send({ start: n, from });
    await this.#submitted.promise;
  }

  /** Asks it to close its engine and exit; resolves once it has. */
  async stop(): Promise<void> {
    await this.send({ stop: true }).catch(() => {});
    await this.#stdin.close().catch(() => {});
    const killer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 30_000);
    await this.#done.finally(() => clearTimeout(killer));
  }
}

/** One worker count: runs/s, latency, and the duplicate checks. */
/** Options of one measured worker count. */
interface PassOptions {
  /** Runs started. */
  runs: number;
  /** Who starts them: worker 0, or every worker its share. */
  starter: "first" | "each";
  /** How long payment, inventory and logistics await. */
  stepMs: number;
}

async function measureWorkers(
  kvPath: string,
  workers: number,
  { runs, starter, stepMs }: PassOptions,
): Promise<Record<string, number | string>> {
  const dir = dirname(kvPath);
  // The file and its schema exist before the workers race to open it.
  (await Deno.openKv(kvPath)).close();
  const procs = Array.from(
    { length: workers },
    (_, i) =>
      new WorkerProcess(kvPath, i, { logPath: `${dir}/w8-${workers}w-worker${i}.log`, stepMs }),
  );
  try {
    await Promise.all(procs.map((p) => p.ready()));
    const allEnded = Promise.withResolvers<void>();
    const endedCount = () => {
      const ids = new Set<string>();
      for (const p of procs) for (const id of p.ended.keys()) ids.add(id);
      return ids.size;
    };
    for (const p of procs) p.onEnded(() => endedCount() >= runs && allEnded.resolve());
    const share = starter === "first"
      ? [runs]
      : procs.map((_, i) =>
        Math.floor((runs * (i + 1)) / workers) - Math.floor((runs * i) / workers)
      );
    let from = 0;
    const starting = share.map((n, i) => {
      const s = procs[i].start(n, from);
      from += n;
      return s;
    });
    const limit = setTimeout(() => allEnded.reject(new Error("not done within 120 s")), 120_000);
    await Promise.all(starting);
    await allEnded.promise.finally(() => clearTimeout(limit));
    const t0 = Math.min(...procs.filter((p) => p.submitted.length).map((p) => p.t0));
    const submitAt = new Map(procs.flatMap((p) => p.submitted));
    const ended = new Map<string, number>();
    const endCommits = new Map<string, number>();
    for (const p of procs) {
      for (const [id, e] of p.ended) {
        ended.set(id, Math.max(ended.get(id) ?? 0, e.at));
        endCommits.set(id, (endCommits.get(id) ?? 0) + 1);
      }
    }
    const tEnd = Math.max(...ended.values());
    const wall = (tEnd - t0) / 1000;
    const latency = summarizeSamples([...submitAt].map(([id, at]) => ended.get(id)! - at));
    const endedBy = procs.map((p) => p.ended.size).join("/");
    await Promise.all(procs.map((p) => p.stop()));
    const dup = await duplicates(kvPath, {
      ids: [...submitAt.keys()],
      logs: procs.map((p) => p.logPath),
    });
    const stat = (name: string) => procs.map((p) => p.final?.stats[name] ?? "?").join("/");
    const kvStat = (name: string) => procs.map((p) => p.final?.kv[name] ?? "?").join("/");
    return {
      runs: submitAt.size,
      wall_s: round(wall, 3),
      runs_per_s: round(submitAt.size / wall, 1),
      p50_ms: latency.p50,
      p99_ms: latency.p99,
      cpu_s: round(procs.reduce((s, p) => s + (p.final?.cpu_s ?? NaN), 0), 2),
      // Which worker committed each run's end, and each worker's claims (Core v2's counter).
      ended_by_worker: endedBy,
      claims_by_worker: stat("claims"),
      // KV as each worker saw it, from the warm-up's end: commits that landed, commits that threw
      // "database is locked" (retried), commits whose checks failed (a claim lost to another).
      kv_commits_by_worker: kvStat("commits"),
      kv_locked_by_worker: kvStat("locked"),
      kv_check_failed_by_worker: kvStat("check_failed"),
      commit_p50_ms_by_worker: kvStat("commit_p50_ms"),
      commit_p99_ms_by_worker: kvStat("commit_p99_ms"),
      commit_s_by_worker: kvStat("commit_s"),
      open_retries_by_worker: kvStat("open_retries"),
      body_starts: procs.reduce((s, p) => s + (p.final?.bodies ?? 0), 0),
      // A run's end seen committed by two workers.
      dup_end_events: [...endCommits.values()].filter((n) => n > 1).length,
      ...dup,
    };
  } finally {
    await Promise.all(procs.map((p) => p.stop().catch(() => {})));
  }
}

/** The duplicate checks: the side logs of body starts, and the committed history. */
async function duplicates(
  kvPath: string,
  { ids, logs }: { ids: readonly string[]; logs: readonly string[] },
): Promise<Record<string, number>> {
  const starts = new Map<string, number>();
  const attemptsOf = new Map<string, Set<string>>();
  for (const log of logs) {
    const text = await Deno.readTextFile(log).catch(() => "");
    for (const line of text.split("\n")) {
      if (!line) continue;
      const [run, step, attempt] = line.split("\t");
      const triple = `${run} ${step} ${attempt}`;
      starts.set(triple, (starts.get(triple) ?? 0) + 1);
      const pair = `${run} ${step}`;
      if (!attemptsOf.has(pair)) attemptsOf.set(pair, new Set());
      attemptsOf.get(pair)!.add(attempt);
    }
  }
  const kv = await Deno.openKv(kvPath);
  const store = new RunStore(kv, keyLayout());
  let dupCommits = 0, missing = 0, retried = 0;
  for (const id of ids) {
    const succeeded = new Map<string, number>();
    let runEnds = 0, runSucceeded = 0;
    for (const ev of await store.getHistory(id)) {
      if (ev.type === "step") {
        if (ev.to === "succeeded") succeeded.set(ev.step, (succeeded.get(ev.step) ?? 0) + 1);
        if (ev.to === "waiting") retried++;
      } else if (ev.to === "succeeded" || ev.to === "failed" || ev.to === "cancelled") {
        runEnds++;
        if (ev.to === "succeeded") runSucceeded++;
      }
    }
    for (const step of STEPS) if ((succeeded.get(step) ?? 0) > 1) dupCommits++;
    if (runEnds > 1) dupCommits++;
    if (runSucceeded !== 1 || STEPS.some((s) => succeeded.get(s) !== 1)) missing++;
  }
  kv.close();
  const dupBodies = [...starts.values()].filter((n) => n > 1).length;
  return {
    dup_body_starts: dupBodies,
    dup_commits: dupCommits,
    missing,
    duplicates: dupBodies + dupCommits,
    reexecuted_steps: [...attemptsOf.values()].filter((s) => s.size > 1).length,
    retried_steps: retried,
  };
}

async function pass(kvPath: string, args: string[]): Promise<void> {
  const counts = (flag(args, "workers") ?? "1,2,4").split(",").map(Number);
  const runs = Number(flag(args, "runs") ?? 1000);
  const starter = (flag(args, "starter") ?? "first") as "first" | "each";
  if (starter !== "first" && starter !== "each") {
    throw new Error(`'--starter' must be first or each: current value is ${starter}`);
  }
  const stepMs = Number(flag(args, "step-ms") ?? STEP_MS);
  const t0 = performance.now();
  const line: Record<string, number | string> = {
    system: "weft",
    version: Deno.env.get("WEFT_BENCH_VERSION") ?? "dev",
    mode: "kv-file-shared",
    workload: "w8",
    concurrency: CONCURRENCY,
    rate: 0,
    n: runs,
    starter,
    poll_interval_ms: POLL_INTERVAL_MS,
    step_ms: stepMs,
  };
  let duplicatesAll = 0;
  const perSecond = new Map<number, number>();
  for (const workers of counts) {
    const base = kvPath.replace(/\.sqlite$/, "");
    const fields = await measureWorkers(`${base}-${workers}w.sqlite`, workers, {
      runs,
      starter,
      stepMs,
    });
    console.error(`  w8 ${workers} worker(s): ${JSON.stringify(fields)}`);
    for (const [k, v] of Object.entries(fields)) line[`${k}_${workers}w`] = v;
    duplicatesAll += Number(fields.duplicates);
    perSecond.set(workers, Number(fields.runs_per_s));
  }
  const one = perSecond.get(1);
  for (const [workers, rate] of perSecond) {
    if (workers !== 1 && one) line[`speedup_${workers}w`] = round(rate / one, 3);
  }
  line.duplicates = duplicatesAll;
  line.wall_s = round((performance.now() - t0) / 1000, 2);
  // The generic columns of run.ts's table: the two-worker figures.
  if (line.runs_per_s_2w !== undefined) line.throughput = line.runs_per_s_2w;
  console.log(JSON.stringify(line));
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

if (import.meta.main) {
  const [name, ...rest] = Deno.args;
  const kvPath = flag(rest, "kv");
  if (name === "worker" && kvPath && flag(rest, "index") && flag(rest, "log")) {
    await worker(kvPath, Number(flag(rest, "index")), {
      logPath: flag(rest, "log")!,
      stepMs: Number(flag(rest, "step-ms") ?? STEP_MS),
    });
  } else if (name === "w8" && kvPath) {
    try {
      await pass(kvPath, rest);
    } catch (error) {
      console.log(JSON.stringify({ system: "weft", workload: "w8", error: String(error) }));
      Deno.exit(1);
    }
  } else {
    console.error(
      "usage: scale_out.ts w8 --kv <file> [--workers 1,2,4] [--runs 1000] [--starter first|each]\n" +
        "       scale_out.ts worker --kv <file> --index <i> --log <file> [--step-ms 10]",
    );
    Deno.exit(2);
  }
  Deno.exit(0);
}

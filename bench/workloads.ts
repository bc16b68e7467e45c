/**
 * The benchmark workloads, one entry per workload, defined as the peer's
 * `../shared/peers/run.sh` defines them (W1–W4) plus Weft's own W5 to W8.
 * Most entries build their workflows and a `run` that measures one pass and
 * returns the workload's own fields; the child process adds CPU, memory and
 * KV counts around it. W7 (`backlog.ts`) and W8 (`scale_out.ts`) drive
 * processes of their own, so they name a script instead.
 *
 * @module
 */
import { type AnyWorkflow, type Engine, workflow } from "../mod.ts";
import { round, sleep, summarizeSamples } from "./_stats.ts";
import type { RunTracker } from "./_tracker.ts";

/** What a workload's `run` gets. */
export interface WorkloadContext {
  /** An engine on a fresh file KV, with the workload's workflows and concurrency. */
  engine: Engine;
  /** Sees every committed transition of `engine`. */
  tracker: RunTracker;
  /** Ids of the runs already stored in the KV (W6 only, else empty). */
  storedIds: readonly string[];
}

/** Fields a workload reports, in the peer's names where they overlap. */
export type WorkloadFields = Record<string, number | string>;

/** One instance of a workload: its workflows and its measured pass. */
export interface WorkloadInstance {
  /** Registered with the engine. */
  workflows: AnyWorkflow[];
  /** Runs the workload once; resolves with its fields. */
  run(ctx: WorkloadContext): Promise<WorkloadFields>;
}

/** A workload of the suite. */
export interface Workload {
  /** Its name in the JSON output, as the peer names it where the peer has it. */
  name: string;
  /** One line for humans. */
  description: string;
  /** `maxConcurrentSteps` of the engine, the peer's worker concurrency. */
  concurrency: number;
  /** Arrival rate in runs/s; 0 for all at once. */
  rate: number;
  /** A KV file built before the pass, once, and cached (W6's stored runs, W7's backlog). */
  seed?: SeedSpec;
  /**
   * A module in `bench/` that runs the pass in place of `child.ts`, as
   * `deno run -A bench/<script> <name> --kv <file> [--seed <file>]`, and
   * prints one JSON line. For workloads that drive processes of their own.
   */
  script?: string;
  /** Limit of one pass, in milliseconds. @default {120000} */
  timeoutMs?: number;
  /**
   * Runs the pass with V8's default flags, not those of `deno task serve`
   * (see `_runtime.ts`): what an application embedding the engine without
   * them gets. @default {false}
   */
  v8Defaults?: boolean;
  /** Builds a fresh instance (workflows with their own measurement state); absent with `script`. */
  setup?(): WorkloadInstance;
}

/**
 * How a cached seed is built: `deno run -A bench/<script> seed --kv <file>
 * --out <file> --n <runs>` stores the runs in the KV file and writes a JSON
 * side file (W6: the run ids; W7: facts about the backlog). A side file that
 * is an object with a numeric `validUntilMs` in the past makes the seed stale.
 */
export interface SeedSpec {
  /** The seed's name in the cache (`.bench/<name>-<fingerprint>.sqlite`). */
  name: string;
  /** The module in `bench/` that builds it. */
  script: string;
  /** Runs it stores. */
  runs: number;
  /**
   * The script also answers `shape` with `{"shape": …}`, what the engine
   * writes today; a seed whose side file holds another shape is rebuilt.
   * @default {false}
   */
  shaped?: boolean;
}

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The one-step no-op workflow used by W1 and to seed W6. */
export function noopWorkflow(name: string): AnyWorkflow {
  return workflow(name).step("noop", () => 1);
}

/** Starts `n` runs at once and waits until all have ended: W1 and W4. */
async function bulk(ctx: WorkloadContext, name: string, n: number): Promise<WorkloadFields> {
  const t0 = performance.now();
  const starts: Promise<unknown>[] = new Array(n);
  for (let i = 0; i < n; i++) starts[i] = ctx.engine.start(name, { i });
  await Promise.all(starts);
  const tEnqueued = performance.now();
  await ctx.tracker.waitForEnded(n);
  const wall = (performance.now() - t0) / 1000;
  return {
    n,
    wall_s: round(wall),
    enqueue_s: round((tEnqueued - t0) / 1000),
    jobs_per_s: round(n / wall, 0),
    throughput: round(n / wall, 0),
  };
}

/**
 * The order DAG: payment, inventory and logistics each await 10 ms, then
 * dispatch reads their three results. Latency is from just before `start`
 * to the committed end of the run, as the peer measures from just before
 * `flow.add` to dispatch's `completed` event.
 */
function orderWorkload(rate: number): Workload {
  const workload: Workload = {
    name: rate > 0 ? `w2-rate${rate}` : "w2",
    description: rate > 0
      ? `1,000 order DAG runs submitted at ${rate} runs/s, concurrency 50`
      : "1,000 order DAG runs submitted at once, concurrency 50",
    concurrency: 50,
    rate,
    setup() {
      // For the breakdown: time inside step bodies, and per run the end of
      // its last parent and the start of dispatch (the join hop).
      let bodyMs = 0;
      const bodies: number[] = [];
      const lastParentEnd = new Map<string, number>();
      const firstBodyStart = new Map<string, number>();
      const dispatchStart = new Map<string, number>();
      const dispatchEnd = new Map<string, number>();
      const timed = (step: string) => async ({ runId }: { runId: string }) => {
        const s = performance.now();
        if (!firstBodyStart.has(runId)) firstBodyStart.set(runId, s);
        await pause(10);
        const e = performance.now();
        bodyMs += e - s;
        bodies.push(e - s);
        lastParentEnd.set(runId, Math.max(lastParentEnd.get(runId) ?? 0, e));
        return { step, ok: true };
      };
      const order = workflow("w2-order")
        .step("payment", timed("payment"))
        .step("inventory", timed("inventory"))
        .step("logistics", timed("logistics"))
        .step(
          "dispatch",
          { needs: ["payment", "inventory", "logistics"] },
          ({ input, results, runId }) => {
            dispatchStart.set(runId, performance.now());
            const out = { run: (input as { run: number }).run, n: Object.keys(results).length };
            dispatchEnd.set(runId, performance.now());
            return out;
          },
        );
      return {
        workflows: [order],
        async run({ engine, tracker }) {
          const n = 1000;
          const submitAt = new Array<number>(n);
          const starts: Promise<{ id: string }>[] = [];
          const t0 = performance.now();
          for (let run = 0; run < n; run++) {
            if (rate > 0) {
              const wait = t0 + (run * 1000) / rate - performance.now();
              if (wait > 0) await sleep(wait);
            }
            submitAt[run] = performance.now();
            starts.push(engine.start("w2-order", { run }));
          }
          const ids = await Promise.all(starts);
          const tEnqueued = performance.now();
          await tracker.waitForEnded(n);
          const wall = (performance.now() - t0) / 1000;
          const latencies = ids.map((r, i) => tracker.endedAt.get(r.id)! - submitAt[i]);
          const { p50, p99, max } = summarizeSamples(latencies);
          // The latency of a run in four legs that add up to it.
          const leg = (f: (id: string, i: number) => number) =>
            summarizeSamples(ids.map((r, i) => f(r.id, i)));
          const toFirst = leg((id, i) => firstBodyStart.get(id)! - submitAt[i]);
          const parents = leg((id) => lastParentEnd.get(id)! - firstBodyStart.get(id)!);
          const join = leg((id) => dispatchStart.get(id)! - lastParentEnd.get(id)!);
          const end = leg((id) => tracker.endedAt.get(id)! - dispatchEnd.get(id)!);
          return {
            n,
            wall_s: round(wall),
            enqueue_s: round((tEnqueued - t0) / 1000),
            runs_per_s: round(n / wall, 1),
            throughput: round(n / wall, 1),
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
            // Share of the 50 slots spent inside 10 ms bodies; 1 would be the cap.
            slot_utilization: round(bodyMs / (workload.concurrency * wall * 1000), 3),
            // What `await` of a 10 ms timer really took: the floor under p50_ms.
            step_p50_ms: summarizeSamples(bodies).p50,
            // start() called -> first parent body runs.
            to_first_step_p50_ms: toFirst.p50,
            // first parent body starts -> last parent body ends.
            parents_p50_ms: parents.p50,
            // last parent ends -> dispatch body runs (parents' outputs committed first).
            join_hop_p50_ms: join.p50,
            join_hop_p99_ms: join.p99,
            // dispatch returns -> its output and the run's end are committed.
            end_commit_p50_ms: end.p50,
          };
        },
      };
    },
  };
  return workload;
}

/** W1, with or without the V8 flags of `deno task serve`. */
function bulkWorkload(v8Defaults: boolean): Workload {
  return {
    name: v8Defaults ? "w1-v8-defaults" : "w1",
    description: "10,000 one-step no-op runs started at once, concurrency 50" +
      (v8Defaults ? ", with V8's default flags" : ""),
    concurrency: 50,
    rate: 0,
    v8Defaults,
    setup() {
      return {
        workflows: [noopWorkflow("w1-noop")],
        run: (ctx) => bulk(ctx, "w1-noop", 10_000),
      };
    },
  };
}

/** The workloads, in the order the suite runs them. */
export const WORKLOADS: readonly Workload[] = [
  bulkWorkload(false),
  bulkWorkload(true),
  orderWorkload(0),
  orderWorkload(100),
  {
    name: "w3",
    description: "one run: 100 steps of 1 s each, then a collect step, concurrency 100",
    concurrency: 100,
    rate: 0,
    setup() {
      const steps = 100;
      // For the breakdown: when bodies started and ended, and when collect started.
      const starts: number[] = [];
      const ends: number[] = [];
      let collectAt = NaN;
      let fanout: AnyWorkflow = workflow("w3-fanout");
      const names: string[] = [];
      for (let i = 0; i < steps; i++) {
        names.push(`fetch-${i}`);
        fanout = fanout.step(`fetch-${i}`, async () => {
          starts[i] = performance.now();
          await pause(1000); // a simulated HTTP request
          ends[i] = performance.now();
          return i;
        });
      }
      fanout = fanout.step("collect", { needs: names }, ({ results }) => {
        collectAt = performance.now();
        return Object.keys(results as Record<string, unknown>).length;
      });
      return {
        workflows: [fanout],
        async run({ engine, tracker }) {
          const t0 = performance.now();
          const { id } = await engine.start("w3-fanout", { run: 0 });
          const acked = performance.now();
          await tracker.waitForEnded(1);
          const t1 = tracker.endedAt.get(id)!;
          const wall = (performance.now() - t0) / 1000;
          const ms = (x: number) => round(x, 1);
          return {
            n: 1,
            steps,
            wall_s: round(wall),
            throughput: round(1 / wall, 3),
            // Milliseconds from just before start(): the phases of the run.
            start_acked_ms: ms(acked - t0),
            first_body_ms: ms(Math.min(...starts) - t0),
            last_body_start_ms: ms(Math.max(...starts) - t0),
            last_body_end_ms: ms(Math.max(...ends) - t0),
            // The 1,000 ms sleeps as the bodies saw them: timer lateness and a blocked loop.
            body_max_ms: ms(Math.max(...ends.map((e, i) => e - starts[i]))),
            collect_start_ms: ms(collectAt - t0),
            run_end_ms: ms(t1 - t0),
          };
        },
      };
    },
  },
  {
    name: "w4",
    description: "1,000 runs whose step fails twice then succeeds; backoff 10 ms, x2",
    concurrency: 50,
    rate: 0,
    setup() {
      // BullMQ's exponential backoff from 10 ms waits 10 then 20 ms, with no jitter.
      const flaky = workflow("w4-flaky").step("flaky", {
        retry: { maxAttempts: 3, initialDelayMs: 10, backoffFactor: 2, jitter: 0 },
      }, ({ attempt }) => {
        if (attempt < 3) throw new Error(`transient failure #${attempt}`);
        return "ok";
      });
      return {
        workflows: [flaky],
        async run(ctx) {
          const fields = await bulk(ctx, "w4-flaky", 1000);
          return { ...fields, failed_events: ctx.tracker.retries };
        },
      };
    },
  },
  {
    name: "w5",
    description: "a 20-step chain of no-op steps, 50 runs one after another: per-hop latency",
    concurrency: 50,
    rate: 0,
    setup() {
      const length = 20;
      const runs = 50;
      // Per run: [start of step 0, end of step 0, start of step 1, ...].
      const marks = new Map<string, number[]>();
      const mark = (runId: string) => {
        let list = marks.get(runId);
        if (!list) marks.set(runId, list = []);
        list.push(performance.now());
      };
      let chain: AnyWorkflow = workflow("w5-chain");
      for (let i = 0; i < length; i++) {
        chain = chain.step(`s${i}`, { needs: i === 0 ? [] : [`s${i - 1}`] }, ({ runId }) => {
          mark(runId);
          mark(runId);
          return null;
        });
      }
      return {
        workflows: [chain],
        async run({ engine, tracker }) {
          const hops: number[] = [];
          const runMs: number[] = [];
          const t0 = performance.now();
          for (let r = 0; r < runs; r++) {
            const s = performance.now();
            const { id } = await engine.start("w5-chain", { r });
            await tracker.waitForEnded(r + 1);
            runMs.push(tracker.endedAt.get(id)! - s);
            const m = marks.get(id)!;
            // The hop from step i to i+1: end of i's body to start of i+1's body.
            for (let i = 1; i + 1 < m.length; i += 2) hops.push(m[i + 1] - m[i]);
          }
          const wall = (performance.now() - t0) / 1000;
          const hop = summarizeSamples(hops);
          const run = summarizeSamples(runMs);
          return {
            n: runs,
            steps: length,
            hops: hops.length,
            wall_s: round(wall),
            throughput: round(hops.length / wall, 0),
            p50_ms: hop.p50,
            p99_ms: hop.p99,
            max_ms: hop.max,
            run_p50_ms: run.p50,
            run_p99_ms: run.p99,
          };
        },
      };
    },
  },
  w6(1_000),
  w6(100_000),
  {
    name: "w7",
    description:
      "the real server on 1,000,000 runs waiting on a 1-hour retry: RSS, time to serve, timer lag",
    concurrency: 100,
    rate: 0,
    seed: { name: "w7-backlog-1000000", script: "backlog.ts", runs: 1_000_000, shaped: true },
    script: "backlog.ts",
    timeoutMs: 300_000,
  },
  {
    name: "w8",
    description: "W2 on 1, 2 and 4 worker processes sharing one KV file, concurrency 50 each",
    concurrency: 50,
    rate: 0,
    script: "scale_out.ts",
    timeoutMs: 300_000,
  },
];

/**
 * Start latency (until `start` resolves, i.e. the run is committed) and
 * status-read latency (`engine.get` of a stored, finished run, which reads
 * it from KV) with `stored` runs already in the KV.
 */
function w6(stored: number): Workload {
  return {
    name: `w6-${stored >= 1000 ? `${stored / 1000}k` : stored}`,
    description: `start and status-read latency with ${stored} runs stored`,
    concurrency: 50,
    rate: 0,
    seed: { name: `w6-seed-${stored}`, script: "child.ts", runs: stored },
    setup() {
      return {
        workflows: [noopWorkflow("w6-noop")],
        async run({ engine, tracker, storedIds }) {
          const starts = 1000;
          const gets = 2000;
          const random = mulberry32(42);
          const pick = () => storedIds[Math.floor(random() * storedIds.length)];
          for (let i = 0; i < 20; i++) await engine.start("w6-noop", { warmup: i });
          for (let i = 0; i < 100; i++) await engine.get(pick());
          await tracker.waitForEnded(20);
          const startMs: number[] = [];
          const t0 = performance.now();
          for (let i = 0; i < starts; i++) {
            const s = performance.now();
            await engine.start("w6-noop", { i });
            startMs.push(performance.now() - s);
          }
          await tracker.waitForEnded(20 + starts);
          const getMs: number[] = [];
          for (let i = 0; i < gets; i++) {
            const id = pick();
            const s = performance.now();
            await engine.get(id);
            getMs.push(performance.now() - s);
          }
          const wall = (performance.now() - t0) / 1000;
          const st = summarizeSamples(startMs);
          const gt = summarizeSamples(getMs);
          return {
            n: starts,
            stored_runs: storedIds.length,
            wall_s: round(wall),
            start_p50_ms: st.p50,
            start_p99_ms: st.p99,
            get_p50_ms: gt.p50,
            get_p99_ms: gt.p99,
            p50_ms: st.p50,
            p99_ms: st.p99,
          };
        },
      };
    },
  };
}

/** A small seeded PRNG, so both W6 sizes read the same pattern of ids. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Looks a workload up by name. */
export function workloadByName(name: string): Workload | undefined {
  return WORKLOADS.find((w) => w.name === name);
}

/**
 * Raw Deno KV probes, with no engine in the way: the floors the engine's
 * figures are built on. Each probe prints one JSON line.
 *
 *   deno run -A bench/probe_kv.ts            # every probe
 *   deno run -A bench/probe_kv.ts fsync queue
 *
 * - `fsync`: latency of a one-set commit (the floor of one durable hop).
 * - `mutations`: CPU and wall per mutation in 900-set commits, and the share
 *   of it on the calling (JS) thread.
 * - `queue`: one-set commit latency while the queue is idle, while each
 *   commit also enqueues a message that a listener takes (Weft's wake-up per
 *   commit), and with 2,000 delayed messages pending (W4's retries).
 * - `growth`: on copies of W6's cached seeds (1k and 100k runs), the
 *   latency of a commit shaped like Weft's run creation (7 sets) and of a
 *   status read (one get plus one list), as `engine.get` does.
 *
 * @module
 */
import process from "node:process";
import { monotonicFactory } from "ulid";
import { round, sleep, summarizeSamples } from "./_stats.ts";

const CACHE = decodeURIComponent(new URL("../.bench", import.meta.url).pathname);

async function freshKv(): Promise<{ kv: Deno.Kv; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "weft-probe-" });
  return { kv: await Deno.openKv(`${dir}/kv.sqlite`), dir };
}

async function timeCommits(n: number, build: (i: number) => Deno.AtomicOperation) {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const op = build(i);
    const t = performance.now();
    await op.commit();
    ms.push(performance.now() - t);
  }
  return summarizeSamples(ms);
}

const stepValue = (i: number) => ({
  status: "succeeded",
  attempts: 1,
  startedAt: 1_700_000_000_000 + i,
  attemptStartedAt: 1_700_000_000_000 + i,
  finishedAt: 1_700_000_000_001 + i,
  errors: [],
  output: { kind: "inline", json: "1" },
});

async function fsync() {
  const { kv, dir } = await freshKv();
  const r = await timeCommits(500, (i) => kv.atomic().set(["p", i], i));
  kv.close();
  await Deno.remove(dir, { recursive: true });
  return { probe: "fsync", commits: 500, commit_p50_ms: r.p50, commit_p99_ms: r.p99 };
}

async function mutations() {
  const { kv, dir } = await freshKv();
  const perCommit = 900, commits = 30;
  let jsMs = 0, wallMs = 0;
  const cpu0 = process.cpuUsage();
  for (let c = 0; c < commits; c++) {
    const t0 = performance.now();
    const op = kv.atomic();
    for (let i = 0; i < perCommit; i++) {
      op.set(["weft", "step", `run-${c}-${i}`, "noop"], stepValue(i));
    }
    const promise = op.commit();
    const t1 = performance.now();
    await promise;
    jsMs += t1 - t0;
    wallMs += performance.now() - t0;
  }
  const cpu = process.cpuUsage(cpu0);
  kv.close();
  await Deno.remove(dir, { recursive: true });
  const n = perCommit * commits;
  return {
    probe: "mutations",
    mutations_per_commit: perCommit,
    commit_ms: round(wallMs / commits, 2),
    wall_us_per_mutation: round((wallMs * 1000) / n, 2),
    cpu_us_per_mutation: round((cpu.user + cpu.system) / n, 2),
    js_thread_us_per_mutation: round((jsMs * 1000) / n, 2),
  };
}

async function queue() {
  const { kv, dir } = await freshKv();
  let delivered = 0;
  const listening = kv.listenQueue(() => {
    delivered++;
  });
  const n = 500;
  // CPU (all threads) and latency of n one-set commits, plus whatever the
  // queue does for them until every message has been delivered.
  const phase = async (build: (i: number) => Deno.AtomicOperation, expect: number) => {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const lat = await timeCommits(n, build);
    while (delivered < expect && performance.now() - t0 < 30_000) await sleep(10);
    const cpu = process.cpuUsage(cpu0);
    return { ...lat, cpuUsPerCommit: round((cpu.user + cpu.system) / n, 1) };
  };
  await sleep(200);
  const idle = await phase((i) => kv.atomic().set(["p", i], i), 0);
  const woken = await phase((i) => kv.atomic().set(["q", i], i).enqueue({ wake: i }), n);
  for (let i = 0; i < 2000; i += 100) {
    const op = kv.atomic();
    for (let j = 0; j < 100; j++) op.enqueue({ timer: i + j }, { delay: 60_000 });
    await op.commit();
  }
  const backlog = await phase((i) => kv.atomic().set(["r", i], i), n);
  kv.close();
  await listening.catch(() => {});
  await Deno.remove(dir, { recursive: true });
  return {
    probe: "queue",
    commits_per_phase: n,
    idle_commit_p50_ms: idle.p50,
    idle_commit_p99_ms: idle.p99,
    idle_cpu_us_per_commit: idle.cpuUsPerCommit,
    wake_per_commit_p50_ms: woken.p50,
    wake_per_commit_p99_ms: woken.p99,
    wake_cpu_us_per_commit: woken.cpuUsPerCommit,
    delayed_2000_commit_p50_ms: backlog.p50,
    delayed_2000_commit_p99_ms: backlog.p99,
    delayed_2000_cpu_us_per_commit: backlog.cpuUsPerCommit,
    delivered,
  };
}

async function newestSeed(n: number): Promise<{ kv: string; ids: string } | undefined> {
  let best: { kv: string; ids: string; mtime: number } | undefined;
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const e of Deno.readDir(CACHE)) entries.push(e);
  } catch {
    return undefined;
  }
  for (const e of entries) {
    const m = new RegExp(`^w6-seed-${n}-([0-9a-f]+)\\.sqlite$`).exec(e.name);
    if (!m) continue;
    const kv = `${CACHE}/${e.name}`;
    const mtime = (await Deno.stat(kv)).mtime?.getTime() ?? 0;
    if (!best || mtime > best.mtime) {
      best = { kv, ids: kv.replace(/\.sqlite$/, ".ids.json"), mtime };
    }
  }
  return best;
}

async function growthAt(n: number) {
  const seed = await newestSeed(n);
  if (!seed) {
    return {
      probe: `growth-${n}`,
      skipped: "no cached seed: run `deno task bench w6-1k w6-100k` first",
    };
  }
  const dir = await Deno.makeTempDir({ prefix: "weft-probe-" });
  await Deno.copyFile(seed.kv, `${dir}/kv.sqlite`);
  const ids: string[] = JSON.parse(await Deno.readTextFile(seed.ids));
  const kv = await Deno.openKv(`${dir}/kv.sqlite`);
  const ulid = monotonicFactory();
  const wf = "w6-noop";
  const create = await timeCommits(1000, () => {
    const id = ulid();
    const run = { id, workflow: wf, status: "running", input: { i: 1 }, createdAt: Date.now() };
    return kv.atomic()
      .set(["weft", "run", id], run)
      .set(["weft", "by_wf", wf, id], true)
      .set(["weft", "active", id], true)
      .set(["weft", "by_status", "running", id], true)
      .set(["weft", "by_wf_status", wf, "running", id], true)
      .set(["weft", "step", id, "noop"], stepValue(0))
      .set(["weft", "hist", id, 0], [{
        type: "run",
        seq: 0,
        at: Date.now(),
        from: null,
        to: "pending",
      }]);
  });
  let seed32 = 42;
  const random = () => (seed32 = (seed32 * 1664525 + 1013904223) >>> 0) / 4294967296;
  const readMs: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const id = ids[Math.floor(random() * ids.length)];
    const t = performance.now();
    await kv.get(["weft", "run", id]);
    for await (const _ of kv.list({ prefix: ["weft", "step", id] })) { /* read */ }
    readMs.push(performance.now() - t);
  }
  const read = summarizeSamples(readMs);
  kv.close();
  await Deno.remove(dir, { recursive: true });
  return {
    probe: `growth-${n}`,
    stored_runs: ids.length,
    file_mb: round((await Deno.stat(seed.kv)).size / 1048576, 1),
    create_commit_p50_ms: create.p50,
    create_commit_p99_ms: create.p99,
    read_p50_ms: read.p50,
    read_p99_ms: read.p99,
  };
}

const PROBES: Record<string, () => Promise<unknown>> = {
  fsync,
  mutations,
  queue,
  growth: async () => [await growthAt(1000), await growthAt(100_000)],
};

if (import.meta.main) {
  const names = Deno.args.length ? Deno.args : Object.keys(PROBES);
  for (const name of names) {
    const probe = PROBES[name];
    if (!probe) {
      throw new Error(`Unknown probe '${name}': choose among ${Object.keys(PROBES).join(", ")}`);
    }
    const result = await probe();
    for (const r of Array.isArray(result) ? result : [result]) console.log(JSON.stringify(r));
  }
}

/**
 * W7, the backlog: the real server (`server.ts`) on a KV file that holds
 * 1,000,000 runs waiting on a 1-hour retry. Measures the server's RSS with
 * the backlog loaded, the time from process start to the first answered
 * `GET /healthz` and to the first started run, and the lag of due timers
 * (a retry's body start minus its scheduled `nextAttemptAt`) while the
 * backlog is there. The same figures on an empty KV file are reported
 * beside them (`empty_*`).
 *
 *   deno run -A bench/backlog.ts seed --kv <file> --out <side.json> --n <runs>
 *   deno run -A bench/backlog.ts w7 --kv <copy of the seed> --seed <side.json>
 *   deno run -A bench/backlog.ts shape      # what the engine writes today, to check a cached seed
 *
 * `deno task bench w7` builds the seed once (minutes) and caches it in
 * `.bench/`. The seed is not written through the engine's API, which would
 * take hours: one real run is written by the engine, every key it left is
 * read back, and those keys are cloned for `n` new ids in commits of about
 * 1,000 mutations. The seed therefore follows whatever layout the engine
 * uses; `run.ts` rebuilds the cached seed when `shape` reports a layout other
 * than the one it was built from. Clones are shifted in time so that their retries fall due one after
 * another over one hour that starts {@linkcode HORIZON_MS} after the seed, so
 * a cached seed stays usable for a week; to the engine a run due in a week
 * and one due in an hour differ only in a number.
 *
 * @module
 */
import { dirname } from "node:path";
import { decodeTime, monotonicFactory } from "ulid";
import { createEngine, type EngineOptions } from "../mod.ts";
import { keyLayout } from "../engine/keys.ts";
import type { HistoryEvent } from "../engine/records.ts";
import { RunStore } from "../engine/store.ts";
import { servedV8Flags } from "./_runtime.ts";
import { round, sleep, summarizeSamples } from "./_stats.ts";
import {
  BACKLOG_BODY_MARK,
  BACKLOG_DELAY_MS,
  backlogWorkflow,
  probeWorkflow,
  timerWorkflow,
} from "./backlog_workflows.ts";

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const SERVER = `${ROOT}server.ts`;
const WORKFLOWS = decodeURIComponent(new URL("./backlog_workflows.ts", import.meta.url).pathname);

/** How far ahead of the seed the backlog's hour of due times starts. */
const HORIZON_MS = 7 * 24 * 3_600_000;
/** Mutations per seed commit (KV's limit is 1,000). */
const SEED_MUTATIONS = 1000;
/** Bytes per seed commit, under KV's 800 KiB. */
const SEED_BYTES = 600 * 1024;
/** Timer runs started during a pass, and their retry delays. */
const TIMERS = 300;
const TIMER_RATE = 200;
const TIMER_MIN_MS = 200;
const TIMER_MAX_MS = 1000;

/** The side file of a seed. */
interface BacklogSide {
  runs: number;
  workflow: string;
  templateId: string;
  /** What the engine wrote for the template run: key kinds and value fields ({@linkcode shapeOf}). */
  shape: string;
  /** Keys the engine wrote for one waiting run, by kind (`run`, `step`, `due`, …). */
  keysPerRun: number;
  keyKinds: string;
  /** Whether the engine keeps a due index (Core v2); `false` on the older layout. */
  dueIndex: boolean;
  firstDueMs: number;
  lastDueMs: number;
  validUntilMs: number;
  seededAt: string;
  seedSeconds: number;
  sampleIds: string[];
}

// --- seed ------------------------------------------------------------------------------------

interface Template {
  id: string;
  dueMs: number;
  /** Epoch times between these are the run's own timestamps, shifted in each clone. */
  fromMs: number;
  toMs: number;
  entries: { key: Deno.KvKey; value: unknown }[];
  bytes: number;
}

/** Writes one real waiting run through the engine and reads back every key of it. */
async function writeTemplate(kv: Deno.Kv, options: { quiet?: boolean } = {}): Promise<Template> {
  const keys = keyLayout();
  const engine = await createEngine(
    {
      kv,
      workflows: [backlogWorkflow],
      maxConcurrentSteps: 1,
    } satisfies EngineOptions,
  );
  const waiting = Promise.withResolvers<HistoryEvent>();
  engine.subscribe(({ event }) => {
    if (event.type === "step" && event.to === "waiting") waiting.resolve(event);
  });
  const fromMs = Date.now();
  const { id } = await engine.start(backlogWorkflow.name, { seed: true });
  const event = await waiting.promise;
  await engine.close({ graceMs: 0 });
  if (event.type !== "step" || event.nextAttemptAt === undefined) {
    throw new Error("Cannot seed W7 as the template run's waiting event has no nextAttemptAt");
  }
  const dueMs = event.nextAttemptAt;
  const entries: Template["entries"] = [];
  const others: string[] = [];
  for await (const e of kv.list({ prefix: keys.prefix })) {
    if (e.key.includes(id)) entries.push({ key: e.key, value: e.value });
    else others.push(String(e.key[keys.prefix.length]));
  }
  const kinds = entries.map((e) => String(e.key[keys.prefix.length]));
  // A clone of a run still leased to the seed's engine would be 1M runs to reclaim, not a backlog.
  const leased = entries.find((e) => e.key[keys.prefix.length] === "held");
  if (leased) {
    throw new Error(
      `Cannot seed W7 as the template run is still leased after engine.close(): ${
        JSON.stringify(leased.key)
      }`,
    );
  }
  if (!options.quiet) {
    console.error(
      `  template run ${id}: ${entries.length} keys (${kinds.join(", ")}); ` +
        `other keys left by the engine: ${others.join(", ") || "none"}`,
    );
  }
  return {
    id,
    dueMs,
    fromMs: fromMs - 60_000,
    toMs: dueMs + 60_000,
    entries,
    bytes: entries.reduce((n, e) => n + JSON.stringify(e).length + 64, 0),
  };
}

/** The fields of a stored value, without their values: `{a,b:{c}}`, `[{...}]`, `number`. */
function fieldsOf(x: unknown): string {
  if (Array.isArray(x)) return `[${[...new Set(x.map(fieldsOf))].join("|")}]`;
  if (x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype) {
    return `{${
      Object.entries(x).sort(([a], [b]) => a < b ? -1 : 1).map(([k, v]) => `${k}:${fieldsOf(v)}`)
        .join(",")
    }}`;
  }
  return typeof x;
}

/**
 * The layout the engine writes today for a waiting run: each key's kind and
 * length and its value's fields. `run.ts` compares it with the seed's, so a
 * change of the stored format anywhere in the engine rebuilds the seed.
 */
function shapeOf(t: Template): string {
  return t.entries.map((e) => `${String(e.key[1])}/${e.key.length}=${fieldsOf(e.value)}`).sort()
    .join(";");
}

/** Prints `{"shape": …}` of a template run written to an in-memory KV. */
async function printShape(): Promise<void> {
  const kv = await Deno.openKv(":memory:");
  const template = await writeTemplate(kv, { quiet: true });
  kv.close();
  console.log(JSON.stringify({ shape: shapeOf(template) }));
}

/** A copy of `x` with the template's id replaced and its timestamps shifted by `deltaMs`. */
function remap(x: unknown, t: Template, id: string, deltaMs: number): unknown {
  if (typeof x === "string") return x.includes(t.id) ? x.replaceAll(t.id, id) : x;
  if (typeof x === "number") return x >= t.fromMs && x <= t.toMs ? x + deltaMs : x;
  if (Array.isArray(x)) return x.map((v) => remap(v, t, id, deltaMs));
  if (x !== null && typeof x === "object" && Object.getPrototypeOf(x) === Object.prototype) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(x)) out[k] = remap(v, t, id, deltaMs);
    return out;
  }
  return x;
}

/** Stores `n` clones of a waiting run, due over one hour starting a week from now. */
async function seed(n: number, kvPath: string, outPath: string): Promise<void> {
  const t0 = performance.now();
  const kv = await Deno.openKv(kvPath);
  const keys = keyLayout();
  const template = await writeTemplate(kv);
  const perCommit = Math.max(
    1,
    Math.min(
      Math.floor(SEED_MUTATIONS / template.entries.length),
      Math.floor(SEED_BYTES / template.bytes),
    ),
  );
  const firstDueMs = Date.now() + HORIZON_MS;
  const idTime = decodeTime(template.id);
  const nextId = monotonicFactory();
  const sampleIds: string[] = [];
  const sampleEvery = Math.max(1, Math.floor(n / 20));
  const inflight: Promise<void>[] = [];
  const commit = async (op: Deno.AtomicOperation) => {
    for (let tries = 0;; tries++) {
      try {
        const res = await op.commit();
        if (!res.ok) throw new Error("Cannot seed W7 as a commit without checks failed");
        return;
      } catch (error) {
        // "database is locked" is retryable; anything else after a few tries is not.
        if (tries >= 5) throw error;
        await sleep(10 * (tries + 1));
      }
    }
  };
  for (let done = 0; done < n; done += perCommit) {
    const op = kv.atomic();
    for (let i = done; i < Math.min(n, done + perCommit); i++) {
      const dueMs = firstDueMs + Math.floor((i * BACKLOG_DELAY_MS) / n);
      const deltaMs = dueMs - template.dueMs;
      const id = nextId(idTime + deltaMs);
      if (i % sampleEvery === 0) sampleIds.push(id);
      for (const e of template.entries) {
        op.set(
          remap(e.key, template, id, deltaMs) as Deno.KvKey,
          remap(e.value, template, id, deltaMs),
        );
      }
    }
    inflight.push(commit(op));
    // Two commits in flight: the next one is built while KV's writer thread stores this one.
    if (inflight.length >= 2) await inflight.shift();
    if ((done / perCommit) % 200 === 0) {
      console.error(
        `  seeded ${done.toLocaleString("en")}/${n.toLocaleString("en")} runs in ${
          round((performance.now() - t0) / 1000, 1)
        } s`,
      );
    }
  }
  await Promise.all(inflight);
  // The template was only a pattern: left in, it would come due an hour from now.
  const drop = kv.atomic();
  for (const e of template.entries) drop.delete(e.key);
  await commit(drop);
  // Check what landed: every clone must be in the due index (or, on the old layout, active).
  const kinds = template.entries.map((e) => String(e.key[keys.prefix.length]));
  const dueIndex = kinds.includes("due");
  let indexed = 0;
  for await (const _ of kv.list({ prefix: dueIndex ? keys.dueIndex() : keys.actives() })) {
    indexed++;
  }
  if (indexed !== n) {
    throw new Error(`Cannot seed W7 as ${indexed} runs are indexed, not ${n}`);
  }
  kv.close();
  const counted = new Map<string, number>();
  for (const k of kinds) counted.set(k, (counted.get(k) ?? 0) + 1);
  const side: BacklogSide = {
    runs: n,
    workflow: backlogWorkflow.name,
    templateId: template.id,
    shape: shapeOf(template),
    keysPerRun: template.entries.length,
    keyKinds: [...counted].map(([k, c]) => (c > 1 ? `${k}×${c}` : k)).join(", "),
    dueIndex,
    firstDueMs,
    lastDueMs: firstDueMs + BACKLOG_DELAY_MS,
    validUntilMs: firstDueMs - 3_600_000,
    seededAt: new Date().toISOString(),
    seedSeconds: round((performance.now() - t0) / 1000, 1),
    sampleIds,
  };
  await Deno.writeTextFile(outPath, JSON.stringify(side));
  console.error(
    `  ${n.toLocaleString("en")} runs of ${side.keysPerRun} keys (${side.keyKinds}), ` +
      `${perCommit} per commit, ${indexed.toLocaleString("en")} indexed, in ${side.seedSeconds} s`,
  );
}

// --- the pass --------------------------------------------------------------------------------

/** `/proc/<pid>/status` fields in MB. */
function procMemoryMb(pid: number): { rss: number; hwm: number } {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = (field: string) =>
      Number(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, "m").exec(status)?.[1]);
    return { rss: round(kb("VmRSS") / 1024, 1), hwm: round(kb("VmHWM") / 1024, 1) };
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

/** User plus system CPU seconds of a process, from `/proc/<pid>/stat`. */
function procCpuS(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return NaN;
  }
}

/** The real server as a subprocess, with the times it took to come up. */
class ServerProcess {
  readonly url: URL;
  readonly pid: number;
  /** `Date.now()` just before the spawn. */
  readonly spawnedAtEpoch: number;
  /** `performance.now()` just before the spawn. */
  readonly spawnedAt: number;
  /** From spawn to the "listening" line on stdout. */
  readonly listenMs: number;
  /** From spawn to the first answered `GET /healthz`. */
  readonly healthzMs: number;
  readonly #child: Deno.ChildProcess;
  readonly #stderr: { text: string; marks: number };

  private constructor(
    init: Pick<
      ServerProcess,
      "url" | "pid" | "spawnedAtEpoch" | "spawnedAt" | "listenMs" | "healthzMs"
    >,
    child: Deno.ChildProcess,
    stderr: { text: string; marks: number },
  ) {
    this.url = init.url;
    this.pid = init.pid;
    this.spawnedAtEpoch = init.spawnedAtEpoch;
    this.spawnedAt = init.spawnedAt;
    this.listenMs = init.listenMs;
    this.healthzMs = init.healthzMs;
    this.#child = child;
    this.#stderr = stderr;
  }

  /** Spawns `deno run -A <the V8 flags of deno task serve> server.ts --kv <kvPath> --port 0 --workflows backlog_workflows.ts`. */
  static async start(kvPath: string): Promise<ServerProcess> {
    const spawnedAtEpoch = Date.now();
    const t0 = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      // The V8 flags of `deno task serve`: this is the server as that task runs it.
      args: [
        "run",
        "-A",
        ...servedV8Flags(),
        SERVER,
        "--kv",
        kvPath,
        "--port",
        "0",
        "--workflows",
        WORKFLOWS,
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = { text: "", marks: 0 };
    (async () => {
      for await (const s of child.stderr.pipeThrough(new TextDecoderStream())) {
        stderr.marks += s.split(BACKLOG_BODY_MARK).length - 1;
        stderr.text = (stderr.text + s).slice(-4000);
      }
    })();
    const listening = Promise.withResolvers<URL>();
    (async () => {
      let buffer = "";
      for await (const s of child.stdout.pipeThrough(new TextDecoderStream())) {
        buffer += s;
        const m = /Weft listening on (\S+)/.exec(buffer);
        if (m) listening.resolve(new URL(m[1]));
        // Keep only the unfinished line: the server's JSON logs also go to stdout.
        buffer = buffer.slice(buffer.lastIndexOf("\n") + 1);
      }
      listening.reject(new Error("the server's stdout ended before it listened"));
    })();
    const exited = child.status.then((s) => {
      throw new Error(`the server exited with code ${s.code} before it listened`);
    });
    let url: URL;
    try {
      url = await Promise.race([listening.promise, exited, timeout(120_000, "listening")]);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      throw new Error(`${(error as Error).message}; stderr: ${stderr.text}`);
    }
    const listenMs = performance.now() - t0;
    for (;;) {
      const res = await fetch(new URL("healthz", url)).catch(() => undefined);
      await res?.body?.cancel();
      if (res?.ok) break;
      await sleep(1);
    }
    const healthzMs = performance.now() - t0;
    return new ServerProcess(
      { url, pid: child.pid, spawnedAtEpoch, spawnedAt: t0, listenMs, healthzMs },
      child,
      stderr,
    );
  }

  /** Times a step body of a backlog run started (never, while the backlog waits). */
  get backlogBodies(): number {
    return this.#stderr.marks;
  }

  /** Starts a run over HTTP; resolves with its id. */
  async startRun(workflow: string, input: unknown): Promise<string> {
    const res = await fetch(new URL(`workflows/${workflow}/runs`, this.url), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(input),
    });
    const body = await res.json();
    if (res.status !== 201) {
      throw new Error(`start ${workflow}: ${res.status} ${JSON.stringify(body)}`);
    }
    return body.id;
  }

  /** Waits over HTTP until a run has ended; resolves with its output. */
  async waitRun(id: string): Promise<unknown> {
    for (let i = 0; i < 10; i++) {
      const res = await fetch(new URL(`runs/${id}/wait?timeoutMs=30000`, this.url));
      const run = await res.json();
      if (run.status === "succeeded") return run.output;
      if (run.status === "failed" || run.status === "cancelled" || !res.ok) {
        throw new Error(`run ${id}: ${JSON.stringify(run).slice(0, 500)}`);
      }
    }
    throw new Error(`run ${id} did not end in 300 s`);
  }

  /** SIGTERM, then SIGKILL after 15 s. */
  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      return;
    }
    const killer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 15_000);
    await this.#child.status;
    clearTimeout(killer);
  }
}

function timeout(ms: number, what: string): Promise<never> {
  return new Promise((_, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
    Deno.unrefTimer(t);
  });
}

/** A small seeded PRNG, so every pass asks for the same timer delays. */
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

/** The figures of one server on one KV file. */
async function measureServer(kvPath: string): Promise<Record<string, number>> {
  const server = await ServerProcess.start(kvPath);
  let stopped = false;
  try {
    // The first run after start-up: its body stamps the time it ran.
    const probe = await server.startRun(probeWorkflow.name, {});
    const acked = performance.now() - server.spawnedAt;
    const out = await server.waitRun(probe) as { at: number };
    const firstRunMs = out.at - server.spawnedAtEpoch;
    // The backlog at rest: memory and the CPU of polling it.
    await sleep(2000);
    const cpu0 = procCpuS(server.pid);
    await sleep(3000);
    const idleCpuPct = ((procCpuS(server.pid) - cpu0) / 3) * 100;
    const settled = procMemoryMb(server.pid);
    // Timers: each run's step asks to be retried after 200-1000 ms.
    // Each run is waited for as soon as it is started, as a client would, so the long polls
    // arrive as spread out as the starts.
    const random = mulberry32(7);
    const runs: Promise<{ id: string; at: number }>[] = [];
    const tStart = performance.now();
    for (let i = 0; i < TIMERS; i++) {
      const wait = tStart + (i * 1000) / TIMER_RATE - performance.now();
      if (wait > 0) await sleep(wait);
      const delayMs = Math.round(TIMER_MIN_MS + random() * (TIMER_MAX_MS - TIMER_MIN_MS));
      runs.push((async () => {
        const id = await server.startRun(timerWorkflow.name, { delayMs });
        const out = await server.waitRun(id) as { at: number };
        return { id, at: out.at };
      })());
    }
    const done = await Promise.all(runs);
    const ids = done.map((r) => r.id);
    const outputs = done;
    const after = procMemoryMb(server.pid);
    const backlogBodies = server.backlogBodies;
    await server.stop();
    stopped = true;
    // The schedule each retry was given, from the run's history.
    const kv = await Deno.openKv(kvPath);
    const store = new RunStore(kv, keyLayout());
    const bodyLag: number[] = [], histLag: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      let due: number | undefined, started: number | undefined;
      for (const ev of await store.getHistory(ids[i])) {
        if (ev.type !== "step") continue;
        if (ev.to === "waiting" && ev.attempt === 1) due = ev.nextAttemptAt;
        if (ev.to === "running" && ev.attempt === 2) started = ev.at;
      }
      if (due === undefined || started === undefined) {
        throw new Error(`timer run ${ids[i]} has no retry in its history`);
      }
      bodyLag.push(outputs[i].at - due);
      histLag.push(started - due);
    }
    kv.close();
    const body = summarizeSamples(bodyLag), hist = summarizeSamples(histLag);
    return {
      listen_ms: round(server.listenMs, 1),
      healthz_ms: round(server.healthzMs, 1),
      first_start_acked_ms: round(acked, 1),
      first_run_ms: firstRunMs,
      rss_mb: settled.rss,
      rss_after_timers_mb: after.rss,
      max_rss_mb: after.hwm,
      idle_cpu_pct: round(idleCpuPct, 2),
      timers: ids.length,
      timer_lag_p50_ms: body.p50,
      timer_lag_p99_ms: body.p99,
      timer_lag_max_ms: body.max,
      timer_hist_lag_p50_ms: hist.p50,
      timer_hist_lag_p99_ms: hist.p99,
      backlog_bodies_ran: backlogBodies,
    };
  } finally {
    if (!stopped) await server.stop();
  }
}

async function pass(kvPath: string, sidePath: string): Promise<void> {
  const side: BacklogSide = JSON.parse(await Deno.readTextFile(sidePath));
  const t0 = performance.now();
  const dir = dirname(kvPath);
  let diskBytes = 0;
  for (const suffix of ["", "-wal"]) {
    diskBytes += (await Deno.stat(kvPath + suffix).catch(() => undefined))?.size ?? 0;
  }
  // One start-up on a throwaway file first, so both measured ones find Deno's module cache warm.
  const warm = await ServerProcess.start(`${dir}/warm.sqlite`);
  await warm.stop();
  const empty = await measureServer(`${dir}/empty.sqlite`);
  const backlog = await measureServer(kvPath);
  const line = {
    system: "weft",
    version: Deno.env.get("WEFT_BENCH_VERSION") ?? "dev",
    mode: "server",
    workload: "w7",
    backlog_runs: side.runs,
    backlog_keys_per_run: side.keysPerRun,
    backlog_key_kinds: side.keyKinds,
    backlog_due_index: String(side.dueIndex),
    backlog_due_in_h: round((side.firstDueMs - Date.now()) / 3_600_000, 1),
    backlog_disk_bytes_per_run: Math.round(diskBytes / side.runs),
    wall_s: round((performance.now() - t0) / 1000, 2),
    ...backlog,
    // The generic columns of run.ts's table.
    p50_ms: backlog.timer_lag_p50_ms,
    p99_ms: backlog.timer_lag_p99_ms,
    peak_rss_mb: backlog.max_rss_mb,
    ...Object.fromEntries(Object.entries(empty).map(([k, v]) => [`empty_${k}`, v])),
  };
  console.log(JSON.stringify(line));
}

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

if (import.meta.main) {
  const [name, ...rest] = Deno.args;
  const kvPath = flag(rest, "kv");
  if (name === "shape") {
    await printShape();
  } else if (name === "seed" && kvPath && flag(rest, "out") && Number(flag(rest, "n")) > 0) {
    await seed(Number(flag(rest, "n")), kvPath, flag(rest, "out")!);
  } else if (name === "w7" && kvPath && flag(rest, "seed")) {
    try {
      await pass(kvPath, flag(rest, "seed")!);
    } catch (error) {
      console.log(JSON.stringify({ system: "weft", workload: "w7", error: String(error) }));
      Deno.exit(1);
    }
  } else {
    console.error(
      "usage: backlog.ts seed --kv <file> --out <side.json> --n <runs>\n" +
        "       backlog.ts shape\n" +
        "       backlog.ts w7 --kv <file> --seed <side.json>",
    );
    Deno.exit(2);
  }
  Deno.exit(0);
}

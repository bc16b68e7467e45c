/**
 * The benchmark suite: runs every workload (or those named) in a fresh
 * subprocess on a fresh KV file in a temp folder, prints one JSON line per
 * pass on stdout, then a median table.
 *
 *   deno task bench                      # every workload, once
 *   deno task bench w1 w5 --reps 3       # some workloads, median of 3 passes
 *   deno task bench w1 --profile         # also a CPU profile: top self-time functions
 *   deno task bench --out results.jsonl  # also append the JSON lines to a file
 *   deno task bench --reseed             # rebuild the cached seed files (W6, W7)
 *   deno task bench w7                   # W7 only (seeds 1M runs once, minutes)
 *
 * Seeded KV files (W6's stored runs, W7's backlog) are cached under
 * `.bench/` (git-ignored), keyed by a hash of the files that define the
 * stored format and of the seed's script, and copied into the temp folder
 * for each pass. W7 and W8 run a script of their own (`backlog.ts`,
 * `scale_out.ts`) in place of `child.ts`.
 *
 * @module
 */
import { analyzeProfile, formatProfile } from "./profile.ts";
import { servedV8Flags } from "./_runtime.ts";
import { median, round } from "./_stats.ts";
import { type SeedSpec, type Workload, WORKLOADS } from "./workloads.ts";

/** One JSON line of a pass. */
export type Result = Record<string, number | string>;

/** Options of {@linkcode runSuite}. */
export interface SuiteOptions {
  /** Names of the workloads to run; all when empty. */
  workloads?: string[];
  /** Passes per workload. @default {1} */
  reps?: number;
  /** Records a CPU profile of every pass and prints its top functions. @default {false} */
  profile?: boolean;
  /** Rebuilds the cached seeds (W6, W7). @default {false} */
  reseed?: boolean;
  /** Called with each result as it arrives. */
  onResult?: (result: Result) => void;
  /** Limit of one pass, in milliseconds. @default {the workload's, else 120000} */
  timeoutMs?: number;
}

const ROOT = new URL("../", import.meta.url);
const rootPath = decodeURIComponent(ROOT.pathname);
const CACHE = `${rootPath}.bench`;
const BENCH = decodeURIComponent(new URL("./", import.meta.url).pathname);

/** The commit this suite measures, with `-dirty` when the tree has changes. */
export async function codeVersion(): Promise<string> {
  try {
    const git = (...args: string[]) =>
      new Deno.Command("git", { args, cwd: rootPath, stdout: "piped", stderr: "null" }).output();
    const head = new TextDecoder().decode((await git("rev-parse", "--short", "HEAD")).stdout)
      .trim();
    const dirty = (await git("status", "--porcelain")).stdout.length > 0;
    return head ? `${head}${dirty ? "-dirty" : ""}` : "unknown";
  } catch {
    return "unknown";
  }
}

/** Bump when a seed script (`seed` in child.ts or backlog.ts) changes what it stores. */
const SEED_VERSION = "2";

/**
 * A fingerprint of what a seeded KV file depends on: the key layout, the
 * stored records and their reader, the seed's script and version, Deno's
 * version. An engine change that alters the stored format elsewhere needs
 * `--reseed`.
 */
async function seedFingerprint(spec: SeedSpec): Promise<string> {
  const files = [
    "engine/keys.ts",
    "engine/records.ts",
    "engine/states.ts",
    "engine/store.ts",
    `bench/${spec.script}`,
  ];
  let text = `${SEED_VERSION} ${Deno.version.deno}`;
  for (const f of files) text += await Deno.readTextFile(`${rootPath}${f}`).catch(() => "");
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].slice(0, 6).map((b) => b.toString(16).padStart(2, "0"))
    .join("");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a seed's side file says it is still usable: W7's due times are
 * absolute (`validUntilMs`), and a shaped seed must match what the engine
 * writes today (its script's `shape`).
 */
async function stillValid(spec: SeedSpec, sidePath: string): Promise<boolean> {
  let side;
  try {
    side = JSON.parse(await Deno.readTextFile(sidePath));
  } catch {
    return false;
  }
  if (typeof side?.validUntilMs === "number" && side.validUntilMs <= Date.now()) {
    console.error(`${spec.name}: the cached seed's due times are too close; rebuilding it`);
    return false;
  }
  if (!spec.shaped) return true;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${rootPath}bench/${spec.script}`, "shape"],
    cwd: rootPath,
    stdout: "piped",
    stderr: "null",
  }).output();
  const line = new TextDecoder().decode(out.stdout).split("\n").find((l) => l.startsWith("{"));
  const shape = line ? JSON.parse(line).shape : undefined;
  if (!out.success || shape === undefined) throw new Error(`${spec.script} shape failed`);
  if (shape === side.shape) return true;
  console.error(`${spec.name}: the engine now writes another layout than the cached seed's`);
  return false;
}

/** Returns the cached seed (KV file and side file) of `spec`, building it if missing or stale. */
async function seedFor(spec: SeedSpec, reseed: boolean): Promise<{ kv: string; side: string }> {
  await Deno.mkdir(CACHE, { recursive: true });
  const fp = await seedFingerprint(spec);
  const base = `${CACHE}/${spec.name}-${fp}`;
  const kv = `${base}.sqlite`, side = `${base}.json`;
  if (!reseed && await exists(kv) && await stillValid(spec, side)) return { kv, side };
  // Drop seeds of other fingerprints (or this one, when reseeding or stale).
  for await (const e of Deno.readDir(CACHE)) {
    if (e.name.startsWith(`${spec.name}-`)) await Deno.remove(`${CACHE}/${e.name}`);
  }
  console.error(`seeding ${spec.runs.toLocaleString("en")} runs for ${spec.name} into ${kv}`);
  const tmp = `${base}.tmp`;
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      `${rootPath}bench/${spec.script}`,
      "seed",
      "--kv",
      `${tmp}.sqlite`,
      "--out",
      side,
      "--n",
      `${spec.runs}`,
    ],
    cwd: rootPath,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`Seeding ${spec.name} failed with code ${out.code}`);
  for (const suffix of ["", "-wal", "-shm"]) {
    if (await exists(`${tmp}.sqlite${suffix}`)) {
      await Deno.rename(`${tmp}.sqlite${suffix}`, kv + suffix);
    }
  }
  console.error(`seeded in ${round((performance.now() - t0) / 1000, 1)} s`);
  return { kv, side };
}

/**
 * Copies a KV file with its WAL and shared-memory files, if any, and flushes
 * the copy to disk: W7's 1.8 GB of dirty pages would otherwise be written
 * back during the pass, by the kernel or by SQLite's first checkpoint.
 */
async function copyKv(from: string, to: string): Promise<void> {
  for (const suffix of ["", "-wal", "-shm"]) {
    if (!await exists(from + suffix)) continue;
    await Deno.copyFile(from + suffix, to + suffix);
    using file = await Deno.open(to + suffix, { read: true, write: true });
    await file.sync();
  }
}

async function newestProfile(dir: string): Promise<string | undefined> {
  let best: { path: string; mtime: number } | undefined;
  for await (const e of Deno.readDir(dir)) {
    if (!e.name.endsWith(".cpuprofile")) continue;
    const path = `${dir}/${e.name}`;
    const mtime = (await Deno.stat(path)).mtime?.getTime() ?? 0;
    if (!best || mtime > best.mtime) best = { path, mtime };
  }
  return best?.path;
}

/** Runs one pass of `workload` in a subprocess; resolves with its JSON line. */
async function runPass(
  workload: Workload,
  options: SuiteOptions,
  version: string,
): Promise<Result> {
  const dir = await Deno.makeTempDir({ prefix: "weft-bench-" });
  try {
    const kvPath = `${dir}/kv.sqlite`;
    const childArgs = [workload.name, "--kv", kvPath];
    if (workload.seed) {
      const seed = await seedFor(workload.seed, options.reseed ?? false);
      await copyKv(seed.kv, kvPath);
      childArgs.push("--seed", seed.side);
    }
    // Measured as `deno task serve` runs the engine, unless the workload says otherwise.
    const denoArgs = ["run", "--allow-all", ...(workload.v8Defaults ? [] : servedV8Flags())];
    let profileDir: string | undefined;
    if (options.profile) {
      profileDir = `${CACHE}/profiles/${workload.name}-${Date.now()}`;
      await Deno.mkdir(profileDir, { recursive: true });
      denoArgs.push("--cpu-prof", `--cpu-prof-dir=${profileDir}`);
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...denoArgs, `${BENCH}${workload.script ?? "child.ts"}`, ...childArgs],
      cwd: rootPath,
      // The child inherits the environment, so WEFT_BENCH_USE_QUEUE=0 reaches it.
      env: { WEFT_BENCH_VERSION: version },
      stdout: "piped",
      stderr: "inherit",
      signal: AbortSignal.timeout(options.timeoutMs ?? workload.timeoutMs ?? 120_000),
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    const line = text.split("\n").find((l) => l.trim().startsWith("{"));
    if (!out.success || !line) {
      // A failed pass is a result too: the suite goes on, the table shows it.
      const reason = line
        ? JSON.parse(line).error
        : `exit code ${out.code} (${out.signal ?? "no signal"})`;
      console.error(`${workload.name} failed: ${line ?? reason}`);
      return { system: "weft", version, workload: workload.name, error: String(reason) };
    }
    const result: Result = JSON.parse(line);
    if (profileDir) {
      const file = await newestProfile(profileDir);
      if (file) {
        const report = formatProfile(analyzeProfile(JSON.parse(await Deno.readTextFile(file))));
        await Deno.writeTextFile(`${file}.txt`, report);
        console.error(`\nCPU profile of ${workload.name}: ${file}\n${report}`);
        result.profile = file;
      }
    }
    return result;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Runs the suite; resolves with every pass's JSON line. */
export async function runSuite(options: SuiteOptions = {}): Promise<Result[]> {
  // Fails before any pass when the flags cannot be known (DENO_V8_FLAGS set, say).
  servedV8Flags();
  const names = options.workloads?.length ? options.workloads : WORKLOADS.map((w) => w.name);
  const selected = names.map((n) => {
    const w = WORKLOADS.find((x) => x.name === n);
    if (!w) {
      throw new Error(
        `Unknown workload '${n}': choose among ${WORKLOADS.map((x) => x.name).join(", ")}`,
      );
    }
    return w;
  });
  const version = await codeVersion();
  const results: Result[] = [];
  for (const workload of selected) {
    for (let rep = 0; rep < (options.reps ?? 1); rep++) {
      console.error(`running ${workload.name}: ${workload.description}`);
      const result = await runPass(workload, options, version);
      results.push(result);
      options.onResult?.(result);
    }
  }
  return results;
}

/** The median of every numeric field, per workload, in the order first seen. */
export function medians(results: readonly Result[]): Map<string, Result> {
  const groups = new Map<string, Result[]>();
  for (const r of results) {
    const key = String(r.workload);
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key)!.push(r);
  }
  const out = new Map<string, Result>();
  for (const [key, all] of groups) {
    const rs = all.filter((r) => r.error === undefined);
    if (rs.length === 0) {
      out.set(key, { ...all[0], reps: 0 });
      continue;
    }
    const m: Result = { ...rs[0], reps: rs.length };
    if (rs.length < all.length) m.failed_passes = all.length - rs.length;
    for (const field of Object.keys(rs[0])) {
      const xs = rs.map((r) => r[field]).filter((x): x is number => typeof x === "number");
      if (xs.length === rs.length) m[field] = round(median(xs), 3);
    }
    out.set(key, m);
  }
  return out;
}

const COLUMNS = [
  "reps",
  "wall_s",
  "throughput",
  "p50_ms",
  "p99_ms",
  "get_p50_ms",
  "get_p99_ms",
  "cpu_s",
  "peak_rss_mb",
  "commits_per_run",
  "commits_per_attempt",
  "queue_msgs_per_run",
  "commit_p50_ms",
];

/** Figures of the workloads that drive processes of their own, which the columns above miss. */
const OWN_FIELDS: Record<string, readonly string[]> = {
  w7: [
    "backlog_runs",
    "rss_mb",
    "max_rss_mb",
    "healthz_ms",
    "first_run_ms",
    "timer_lag_p50_ms",
    "timer_lag_p99_ms",
    "empty_rss_mb",
    "empty_healthz_ms",
  ],
  w8: [
    "runs_per_s_1w",
    "runs_per_s_2w",
    "runs_per_s_4w",
    "speedup_2w",
    "speedup_4w",
    "duplicates",
  ],
};

/** A markdown table of the medians, then one line per workload with figures of its own. */
export function formatMedians(results: readonly Result[]): string {
  const rows = [
    `| workload | ${COLUMNS.join(" | ")} |`,
    `|---|${COLUMNS.map(() => "---:").join("|")}|`,
  ];
  const own: string[] = [];
  for (const [name, m] of medians(results)) {
    if (m.error !== undefined) rows.push(`| ${name} | failed: ${m.error} |`);
    else rows.push(`| ${name} | ${COLUMNS.map((c) => m[c] ?? "").join(" | ")} |`);
    const fields = OWN_FIELDS[name]?.filter((f) => m[f] !== undefined);
    if (fields?.length) own.push(`${name}: ${fields.map((f) => `${f} ${m[f]}`).join(", ")}`);
  }
  return [...rows, ...(own.length ? ["", ...own] : [])].join("\n");
}

function parseArgs(args: string[]) {
  const options: SuiteOptions & { out?: string } = { workloads: [] };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--reps") options.reps = Number(args[++i]);
    else if (a === "--out") options.out = args[++i];
    else if (a === "--profile") options.profile = true;
    else if (a === "--reseed") options.reseed = true;
    else if (a === "--help" || a === "-h") {
      console.log(
        `usage: deno task bench [${WORKLOADS.map((w) => w.name).join("|")} ...] ` +
          "[--reps N] [--profile] [--out file.jsonl] [--reseed]",
      );
      Deno.exit(0);
    } else if (a.startsWith("--")) throw new Error(`Unknown option '${a}'`);
    else options.workloads!.push(a.toLowerCase());
  }
  if (!(Number.isInteger(options.reps ?? 1) && (options.reps ?? 1) >= 1)) {
    throw new Error(`'--reps' must be an integer >= 1: current value is ${options.reps}`);
  }
  return options;
}

if (import.meta.main) {
  const options = parseArgs(Deno.args);
  const results = await runSuite({
    ...options,
    onResult: (r) => {
      const line = JSON.stringify(r);
      console.log(line);
      if (options.out) Deno.writeTextFileSync(options.out, line + "\n", { append: true });
    },
  });
  console.log();
  console.log(formatMedians(results));
}

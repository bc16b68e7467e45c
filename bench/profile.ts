/**
 * Reads a V8 `.cpuprofile` (from `deno run --cpu-prof`) and reports where
 * the main thread spent its time: the top functions by self time, and self
 * time per source file. KV's SQLite writer thread is not in the profile; its
 * cost shows in a pass's `cpu_s` beyond the profile's busy time.
 *
 *   deno run -A bench/profile.ts <file.cpuprofile> [--top 25]
 *
 * @module
 */

/** The parts of a V8 CPU profile this reads. */
export interface CpuProfile {
  /** Call tree nodes. */
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
    children?: number[];
  }[];
  /** Start and end, in microseconds. */
  startTime: number;
  /** End, in microseconds. */
  endTime: number;
  /** The node on top of the stack at each sample. */
  samples: number[];
  /** Microseconds before each sample. */
  timeDeltas: number[];
}

/** Self time of one function or file. */
export interface ProfileRow {
  /** `name (file:line)` or a file. */
  name: string;
  /** Milliseconds. */
  selfMs: number;
  /** Share of the profile's busy (non-idle) time, in %. */
  pct: number;
}

/** What {@linkcode analyzeProfile} finds. */
export interface ProfileReport {
  /** Length of the profile, in ms. */
  totalMs: number;
  /** Time not idle, in ms (GC and "(program)" included). */
  busyMs: number;
  /** Top functions by self time. */
  functions: ProfileRow[];
  /** Self time per source file (dependencies by package). */
  files: ProfileRow[];
}

function shortUrl(url: string): string {
  if (!url) return "(native)";
  const npm = /registry\.npmjs\.org\/((?:@[^/]+\/)?[^/]+)\/[^/]+\/(.*)$/.exec(url);
  if (npm) return `npm:${npm[1]}/${npm[2]}`;
  const local = /\/work\/main\/(.*)$/.exec(url);
  if (local) return local[1];
  return url.replace(/^.*\/ext:/, "ext:").replace(/^file:\/\//, "");
}

/**
 * Sums self time per function and per file.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { analyzeProfile } from "./profile.ts";
 * const report = analyzeProfile({
 *   nodes: [{ id: 1, callFrame: { functionName: "f", url: "file:///a.ts", lineNumber: 0, columnNumber: 0 } }],
 *   startTime: 0, endTime: 1000, samples: [1, 1], timeDeltas: [0, 1000],
 * });
 * assert.ok(report.functions[0].selfMs === 1);
 * ```
 */
export function analyzeProfile(profile: CpuProfile, top = 25): ProfileReport {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i + 1] is the time the stack of sample i was on the CPU.
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + dt);
  }
  const fns = new Map<string, number>();
  const files = new Map<string, number>();
  let idle = 0, total = 0;
  for (const [id, us] of selfUs) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    total += us;
    if (functionName === "(idle)") {
      idle += us;
      continue;
    }
    const file = shortUrl(url);
    const fn = url ? `${functionName || "(anonymous)"} (${file}:${lineNumber + 1})` : functionName;
    fns.set(fn, (fns.get(fn) ?? 0) + us);
    const fileKey = url ? file.replace(/:\d+$/, "") : functionName;
    files.set(fileKey, (files.get(fileKey) ?? 0) + us);
  }
  const busy = total - idle;
  const rows = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([name, us]) => ({
      name,
      selfMs: Math.round(us / 1000),
      pct: Math.round((us / Math.max(1, busy)) * 1000) / 10,
    }));
  return {
    totalMs: Math.round(total / 1000),
    busyMs: Math.round(busy / 1000),
    functions: rows(fns),
    files: rows(files),
  };
}

/** The report as markdown tables. */
export function formatProfile(report: ProfileReport): string {
  const table = (title: string, rows: ProfileRow[]) =>
    [
      `| ${title} | self ms | % of busy |`,
      "|---|---:|---:|",
      ...rows.map((r) => `| ${r.name.replaceAll("|", "\\|")} | ${r.selfMs} | ${r.pct} |`),
    ].join("\n");
  return [
    `main thread: ${report.totalMs} ms profiled, ${report.busyMs} ms busy`,
    "",
    table("function (self time)", report.functions),
    "",
    table("file or package (self time)", report.files),
    "",
  ].join("\n");
}

if (import.meta.main) {
  const file = Deno.args.find((a) => !a.startsWith("--"));
  const i = Deno.args.indexOf("--top");
  if (!file) {
    console.error("usage: profile.ts <file.cpuprofile> [--top N]");
    Deno.exit(2);
  }
  const top = i >= 0 ? Number(Deno.args[i + 1]) : 25;
  console.log(formatProfile(analyzeProfile(JSON.parse(await Deno.readTextFile(file)), top)));
}

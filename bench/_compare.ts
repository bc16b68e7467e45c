/**
 * The side-by-side table of Weft against the peer (BullMQ + Redis), with the
 * ratio for every figure and the targets of issue 5. Pure functions over
 * the JSON lines both suites print. Only `bench/` imports this file.
 *
 * @module
 */
import { medians, type Result } from "./run.ts";
import { round } from "./_stats.ts";

/** The peer's JSON lines, keyed as Weft names its workloads. */
export function peerMedians(lines: readonly Result[]): Map<string, Result> {
  const renamed = lines.map((r) => ({
    ...r,
    workload: r.workload === "w2" && Number(r.rate) > 0 ? `w2-rate${r.rate}` : r.workload,
  }));
  return medians(renamed);
}

interface Row {
  figure: string;
  peer?: number;
  weft?: number | string;
  ratio?: number;
  ratioNote?: string;
  target?: string;
  met?: boolean;
}

const num = (r: Result | undefined, field: string): number | undefined => {
  const v = r?.[field];
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
};

const sum = (...xs: (number | undefined)[]) =>
  xs.some((x) => x === undefined) ? undefined : xs.reduce((a, b) => a! + b!, 0);

const div = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined || b === 0 ? undefined : a / b;

function fmt(x: number | string | undefined, integer = false): string {
  if (x === undefined) return "—";
  if (typeof x === "string") return x;
  if (integer) return Math.round(x).toLocaleString("en-US");
  const abs = Math.abs(x);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return round(x, digits).toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** Builds the rows: every figure both suites measure, then Weft's own. */
function rows(weft: Map<string, Result>, peer: Map<string, Result>): Row[] {
  const w = (name: string) => weft.get(name);
  const p = (name: string) => peer.get(name);
  const out: Row[] = [];
  const vs = (
    figure: string,
    name: string,
    weftField: string,
    peerValue: number | undefined,
    target?: { text: string; met: (ratio: number, weft: number) => boolean },
  ) => {
    const error = w(name)?.error;
    if (error !== undefined) {
      out.push({
        figure,
        peer: peerValue,
        weft: `failed: ${error}`,
        target: target?.text,
        met: target && false,
      });
      return;
    }
    const wv = num(w(name), weftField);
    const ratio = div(wv, peerValue);
    out.push({
      figure,
      peer: peerValue,
      weft: wv,
      ratio,
      target: target?.text,
      met: target && wv !== undefined ? target.met(ratio ?? NaN, wv) : undefined,
    });
  };
  const cpu = (name: string) => sum(num(p(name), "node_cpu_s"), num(p(name), "redis_cpu_s"));

  vs("W1 throughput, runs/s (BullMQ jobs/s)", "w1", "jobs_per_s", num(p("w1"), "jobs_per_s"), {
    text: "≥ 1.5× BullMQ",
    met: (r) => r >= 1.5,
  });
  vs("W1 wall, s", "w1", "wall_s", num(p("w1"), "wall_s"));
  vs("W1 CPU, s (BullMQ: node + redis)", "w1", "cpu_s", cpu("w1"));
  vs("W1 peak RSS, MB (BullMQ: node only)", "w1", "peak_rss_mb", num(p("w1"), "node_peak_rss_mb"), {
    text: "≤ 0.5× BullMQ",
    met: (r) => r <= 0.5,
  });
  // The same W1 with V8's default flags, as an application embedding the engine gets it.
  vs(
    "W1 peak RSS, MB, Weft with V8's default flags (`w1-v8-defaults`)",
    "w1-v8-defaults",
    "peak_rss_mb",
    num(p("w1"), "node_peak_rss_mb"),
  );
  vs(
    "W1 throughput, runs/s, Weft with V8's default flags",
    "w1-v8-defaults",
    "jobs_per_s",
    num(p("w1"), "jobs_per_s"),
  );
  vs("W2 burst throughput, runs/s", "w2", "runs_per_s", num(p("w2"), "runs_per_s"), {
    text: "≥ 1,500 (90 % of the 1,667 cap)",
    met: (_r, v) => v >= 1500,
  });
  vs("W2 burst latency p50, ms", "w2", "p50_ms", num(p("w2"), "p50_ms"));
  vs("W2 burst latency p99, ms", "w2", "p99_ms", num(p("w2"), "p99_ms"));
  vs("W2 burst CPU, s (BullMQ: node + redis)", "w2", "cpu_s", cpu("w2"));
  vs("W2 @100/s latency p50, ms", "w2-rate100", "p50_ms", num(p("w2-rate100"), "p50_ms"), {
    text: "≤ 11 ms",
    met: (_r, v) => v <= 11,
  });
  vs("W2 @100/s latency p99, ms", "w2-rate100", "p99_ms", num(p("w2-rate100"), "p99_ms"), {
    text: "≤ 15 ms",
    met: (_r, v) => v <= 15,
  });
  vs("W2 @100/s CPU, s (BullMQ: node + redis)", "w2-rate100", "cpu_s", cpu("w2-rate100"));
  vs("W3 wall, s (1.0 ideal)", "w3", "wall_s", num(p("w3"), "wall_s"), {
    text: "≤ 1.02 s",
    met: (_r, v) => v <= 1.02,
  });
  vs("W4 wall, s", "w4", "wall_s", num(p("w4"), "wall_s"), {
    text: "≤ 0.5× BullMQ",
    met: (r) => r <= 0.5,
  });
  vs("W4 CPU, s (BullMQ: node + redis)", "w4", "cpu_s", cpu("w4"));
  vs("W5 per-hop latency p50, ms", "w5", "p50_ms", undefined, {
    text: "≤ 1 ms",
    met: (_r, v) => v <= 1,
  });
  vs("W5 per-hop latency p99, ms", "w5", "p99_ms", undefined);
  const growth = (figure: string, field: string, target?: string) => {
    const a = num(w("w6-1k"), field), b = num(w("w6-100k"), field);
    const g = div(b, a);
    out.push({
      figure,
      weft: a === undefined || b === undefined ? undefined : `${fmt(a)} → ${fmt(b)}`,
      ratio: g,
      ratioNote: "100k ÷ 1k",
      target,
      met: target && g !== undefined ? g <= 1.2 : undefined,
    });
  };
  growth("W6 start latency p50, ms, 1k → 100k stored", "start_p50_ms");
  growth("W6 start latency p99, ms, 1k → 100k stored", "start_p99_ms", "growth ≤ 1.2×");
  growth("W6 status read p50, ms, 1k → 100k stored", "get_p50_ms");
  growth("W6 status read p99, ms, 1k → 100k stored", "get_p99_ms", "growth ≤ 1.2×");

  // W7: Weft holds 1,000,000 waiting runs, BullMQ 200,000 delayed jobs, so sizes get no ratio.
  const sized = (figure: string, weftField: string, peerValue: number | undefined, target?: {
    text: string;
    met: (v: number) => boolean;
  }) => {
    vs(
      figure,
      "w7",
      weftField,
      peerValue,
      target && { text: target.text, met: (_r, v) => target.met(v) },
    );
    const row = out.at(-1)!;
    row.ratio = undefined;
  };
  const bq = p("w7");
  sized(
    "W7 RSS with the backlog, MB (Weft: server, 1M runs; BullMQ: Redis + worker, 200k jobs)",
    "rss_mb",
    sum(num(bq, "redis_rss_mb"), num(bq, "worker_rss_mb")),
    { text: "< 100 MB", met: (v) => v < 100 },
  );
  sized(
    "W7 bytes per waiting run (Weft: on disk; BullMQ: Redis memory)",
    "backlog_disk_bytes_per_run",
    num(bq, "redis_bytes_per_job"),
  );
  vs(
    "W7 start to first GET /healthz, ms (BullMQ: worker ready)",
    "w7",
    "healthz_ms",
    num(bq, "worker_ready_ms"),
    {
      text: "≤ 1,000 ms",
      met: (_r, v) => v <= 1000,
    },
  );
  vs(
    "W7 start to first run's body, ms (BullMQ: first job)",
    "w7",
    "first_run_ms",
    num(bq, "first_job_ms"),
  );
  vs(
    "W7 timer lag p50, ms, with the backlog",
    "w7",
    "timer_lag_p50_ms",
    num(bq, "timer_lag_p50_ms"),
  );
  vs(
    "W7 timer lag p99, ms, with the backlog",
    "w7",
    "timer_lag_p99_ms",
    num(bq, "timer_lag_p99_ms"),
    {
      text: "< 50 ms",
      met: (_r, v) => v < 50,
    },
  );
  vs("W7 timer lag p99, ms, empty KV (Weft only)", "w7", "empty_timer_lag_p99_ms", undefined);

  // W8: Weft only; the ratio column holds the speedup over one worker.
  for (const workers of [1, 2, 4]) {
    vs(
      `W8 runs/s, ${workers} worker${workers > 1 ? "s" : ""}`,
      "w8",
      `runs_per_s_${workers}w`,
      undefined,
    );
  }
  const speedup = num(w("w8"), "speedup_2w");
  out.push({
    figure: "W8 speedup, 2 workers ÷ 1",
    weft: speedup,
    target: "≥ 1.8×",
    met: speedup === undefined ? undefined : speedup >= 1.8,
  });
  const dups = num(w("w8"), "duplicates");
  out.push({
    figure: "W8 duplicates (bodies started twice + results committed twice), 1/2/4 workers",
    weft: dups === undefined ? undefined : String(dups),
    target: "0",
    met: dups === undefined ? undefined : dups === 0,
  });
  return out;
}

/**
 * The side-by-side markdown table. The ratio is Weft ÷ BullMQ unless the row
 * says otherwise; "met" compares against issue 5's target.
 */
export function compareTable(weft: Map<string, Result>, peer: Map<string, Result>): string {
  const lines = [
    "| figure | BullMQ + Redis | Weft | ratio (Weft ÷ BullMQ) | target | met? |",
    "|---|---:|---:|---:|---|---|",
  ];
  for (const r of rows(weft, peer)) {
    const ratio = r.ratio === undefined
      ? "—"
      : `${fmt(r.ratio)}×${r.ratioNote ? ` (${r.ratioNote})` : ""}`;
    const met = r.met === undefined ? "" : r.met ? "met" : "**not met**";
    lines.push(
      `| ${r.figure} | ${fmt(r.peer)} | ${fmt(r.weft)} | ${ratio} | ${r.target ?? ""} | ${met} |`,
    );
  }
  return lines.join("\n");
}

const COUNTER_COLUMNS = [
  ["runs", "runs"],
  ["attempts", "attempts"],
  ["commits/run", "commits_per_run"],
  ["commits/attempt", "commits_per_attempt"],
  ["KV mutations/run", "mutations_per_run"],
  ["queue msgs/run", "queue_msgs_per_run"],
  ["commit p50 ms", "commit_p50_ms"],
  ["commit p99 ms", "commit_p99_ms"],
  ["CPU s", "cpu_s"],
  ["peak RSS MB", "peak_rss_mb"],
  ["peak heap MB", "peak_heap_mb"],
] as const;

/** Weft's engine counters per workload: commits, mutations and queue messages. */
export function countersTable(weft: Map<string, Result>): string {
  const lines = [
    `| workload | ${COUNTER_COLUMNS.map(([h]) => h).join(" | ")} |`,
    `|---|${COUNTER_COLUMNS.map(() => "---:").join("|")}|`,
  ];
  for (const [name, r] of weft) {
    const cells = COUNTER_COLUMNS.map(([, f]) => fmt(num(r, f), f === "runs" || f === "attempts"));
    lines.push(`| ${name} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

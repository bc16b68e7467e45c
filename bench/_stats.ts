/**
 * Measurement helpers of the benchmark: percentiles, CPU time and peak RSS.
 * Only `bench/` imports this file.
 *
 * @module
 */
import process from "node:process";

/**
 * The nearest-rank percentile of an ascending array, as the peer's
 * `common.js` computes it, so both sides read the same rank.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { percentile } from "./_stats.ts";
 * assert.ok(percentile([1, 2, 3, 4], 50) === 2);
 * ```
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/** p50, p99 and max of unsorted samples, in their own unit, rounded to 0.01. */
export function summarizeSamples(samples: readonly number[]): {
  p50: number;
  p99: number;
  max: number;
} {
  const s = [...samples].sort((a, b) => a - b);
  return {
    p50: round(percentile(s, 50), 2),
    p99: round(percentile(s, 99), 2),
    max: round(s.at(-1) ?? NaN, 2),
  };
}

/** The median of numbers (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Rounds to `digits` decimals. */
export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The kernel's high-water mark of this process's RSS (`VmHWM`), in MB; NaN off Linux. */
export function kernelPeakRssMb(): number {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const kb = Number(/^VmHWM:\s+(\d+)\s+kB/m.exec(status)?.[1]);
    return kb / 1024;
  } catch {
    return NaN;
  }
}

/** What a {@linkcode ResourceMeter} saw between `start()` and `stop()`. */
export interface ResourceUsage {
  /** User plus system CPU of the whole process (every thread, KV's writer included). */
  cpu_s: number;
  /** Largest `Deno.memoryUsage().rss` sampled. */
  peak_rss_mb: number;
  /** The kernel's RSS high-water mark over the process's life, as the peer's `maxRSS`. */
  max_rss_mb: number;
  /** Largest V8 `heapUsed` sampled: how much of the RSS is JS objects. */
  peak_heap_mb: number;
}

/**
 * CPU seconds and peak RSS of this process over an interval. RSS is sampled
 * on a timer, so a spike shorter than the interval can be missed; the
 * kernel's high-water mark is reported beside it for that reason.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ResourceMeter } from "./_stats.ts";
 * const meter = new ResourceMeter();
 * meter.start();
 * const usage = meter.stop();
 * assert.ok(usage.peak_rss_mb > 0);
 * ```
 */
export class ResourceMeter {
  readonly #intervalMs: number;
  #peakBytes = 0;
  #peakHeap = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #cpu0: ReturnType<typeof process.cpuUsage> | undefined;

  /** Samples every `intervalMs` (default 20). */
  constructor(intervalMs = 20) {
    this.#intervalMs = intervalMs;
  }

  /** Starts counting. */
  start(): void {
    this.#cpu0 = process.cpuUsage();
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), this.#intervalMs);
  }

  /** Stops and reports. */
  stop(): ResourceUsage {
    this.#sample();
    clearInterval(this.#timer);
    const cpu = process.cpuUsage(this.#cpu0);
    return {
      cpu_s: round((cpu.user + cpu.system) / 1e6, 2),
      peak_rss_mb: round(this.#peakBytes / 1048576, 1),
      max_rss_mb: round(kernelPeakRssMb(), 1),
      peak_heap_mb: round(this.#peakHeap / 1048576, 1),
    };
  }

  #sample(): void {
    const { rss, heapUsed } = Deno.memoryUsage();
    if (rss > this.#peakBytes) this.#peakBytes = rss;
    if (heapUsed > this.#peakHeap) this.#peakHeap = heapUsed;
  }
}

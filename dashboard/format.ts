/**
 * Human-readable times, durations and JSON for the dashboard pages.
 *
 * @module
 */

/**
 * A duration such as `31 ms`, `1.2 s`, `2m 05s` or `3h 04m`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDuration } from "./format.ts";
 * assert.ok(formatDuration(1_250) === "1.3 s");
 * assert.ok(formatDuration(125_000) === "2m 05s");
 * ```
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1_000).toFixed(1)} s`;
  const s = Math.floor(ms / 1_000);
  if (s < 3_600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  const m = Math.floor(s / 60);
  if (m < 24 * 60) return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(m / 1_440)}d ${String(Math.floor(m / 60) % 24).padStart(2, "0")}h`;
}

/**
 * How long ago an ISO time was, as of `nowMs`: `4s ago`, `3m ago`, `2h ago`, `5d ago`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatAge } from "./format.ts";
 * assert.ok(formatAge("1970-01-01T00:00:00.000Z", 90_000) === "1m ago");
 * ```
 */
export function formatAge(iso: string, nowMs: number): string {
  const ms = nowMs - Date.parse(iso);
  if (!Number.isFinite(ms)) return "—";
  if (ms < 1_000) return "just now";
  const s = Math.floor(ms / 1_000);
  if (s < 60) return `${s}s ago`;
  if (s < 3_600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86_400) return `${Math.floor(s / 3_600)}h ago`;
  return `${Math.floor(s / 86_400)}d ago`;
}

/**
 * The time part of an ISO timestamp with milliseconds, `14:03:07.215`, in UTC.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatTime } from "./format.ts";
 * assert.ok(formatTime("2025-01-02T14:03:07.215Z") === "14:03:07.215");
 * ```
 */
export function formatTime(iso: string | undefined): string {
  if (iso === undefined) return "—";
  return iso.slice(11, 23);
}

/**
 * A date and time to the minute, `2025-01-04 10:00 UTC`, for times that may
 * be days away (a sleep's or a wait's `resumeAt`).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatDateTime } from "./format.ts";
 * assert.ok(formatDateTime("2025-01-04T10:00:59.999Z") === "2025-01-04 10:00 UTC");
 * ```
 */
export function formatDateTime(iso: string | undefined): string {
  if (iso === undefined || Number.isNaN(Date.parse(iso))) return "—";
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/**
 * How far ahead an ISO time is, as of `nowMs`: `in 3d 00h`, or `due` once passed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatUntil } from "./format.ts";
 * assert.ok(formatUntil("1970-01-01T00:02:05.000Z", 0) === "in 2m 05s");
 * assert.ok(formatUntil("1970-01-01T00:00:00.000Z", 5) === "due");
 * ```
 */
export function formatUntil(iso: string, nowMs: number): string {
  const ms = Date.parse(iso) - nowMs;
  if (!Number.isFinite(ms)) return "—";
  return ms <= 0 ? "due" : `in ${formatDuration(ms)}`;
}

/**
 * Indented JSON for a `<pre>`; `undefined` and unserializable values read as such.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { prettyJson } from "./format.ts";
 * assert.ok(prettyJson({ a: 1 }) === '{\n  "a": 1\n}');
 * ```
 */
export function prettyJson(value: unknown): string {
  if (value === undefined) return "undefined";
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

/** Options of {@linkcode boundedJson}. */
export interface BoundedJsonOptions {
  /** Levels pretty-printed; deeper values are printed on one line. @default {8} */
  maxDepth?: number;
  /** Characters shown; the rest is cut. @default {20000} */
  maxChars?: number;
}

/** What {@linkcode boundedJson} printed. */
export interface BoundedJson {
  /** The text to show. */
  text: string;
  /** Whether values past `maxDepth` were put on one line. */
  collapsed: boolean;
  /** Whether the text was cut at `maxChars`. */
  truncated: boolean;
}

/** Past this depth, even a one-line value is shown as `…`: the stack stays small. */
const MAX_PRINT_DEPTH = 200;

/**
 * JSON for a page, bounded whatever the value: indented for `maxDepth`
 * levels and on one line below them (indentation of deep values would grow
 * quadratically), and cut after `maxChars` characters. The work done is
 * bounded by `maxChars` too: nothing past the cut is printed.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { boundedJson } from "./format.ts";
 * assert.deepEqual(boundedJson({ a: [1, [2]] }, { maxDepth: 2 }), {
 *   text: '{\n  "a": [\n    1,\n    [2]\n  ]\n}',
 *   collapsed: true,
 *   truncated: false,
 * });
 * assert.ok(boundedJson("x".repeat(100), { maxChars: 10 }).truncated);
 * ```
 */
export function boundedJson(value: unknown, options: BoundedJsonOptions = {}): BoundedJson {
  const maxDepth = options.maxDepth ?? 8;
  const maxChars = options.maxChars ?? 20_000;
  const parts: string[] = [];
  let size = 0;
  let collapsed = false;
  let truncated = false;
  const put = (s: string) => {
    if (truncated) return;
    if (size + s.length > maxChars) {
      parts.push(s.slice(0, maxChars - size));
      size = maxChars;
      truncated = true;
      return;
    }
    parts.push(s);
    size += s.length;
  };
  const scalar = (v: unknown): string | undefined => {
    if (v === null || typeof v !== "object") {
      try {
        return JSON.stringify(v) ?? (v === undefined ? "undefined" : String(v));
      } catch {
        return String(v);
      }
    }
    return undefined;
  };
  const print = (v: unknown, depth: number, pretty: boolean) => {
    if (truncated) return;
    const s = scalar(v);
    if (s !== undefined) return put(s);
    if (depth >= MAX_PRINT_DEPTH) {
      put("…");
      truncated = true;
      return;
    }
    if (pretty && depth >= maxDepth) {
      collapsed = true;
      pretty = false;
    }
    const arr = Array.isArray(v);
    const entries: [string | undefined, unknown][] = arr
      ? (v as unknown[]).map((x) => [undefined, x])
      : Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    if (entries.length === 0) return put(arr ? "[]" : "{}");
    const pad = pretty ? "\n" + "  ".repeat(depth + 1) : "";
    put(arr ? "[" : "{");
    entries.forEach(([k, x], i) => {
      if (truncated) return;
      put((i > 0 ? "," : "") + pad);
      if (k !== undefined) put(JSON.stringify(k) + (pretty ? ": " : ":"));
      print(x, depth + 1, pretty);
    });
    put((pretty ? "\n" + "  ".repeat(depth) : "") + (arr ? "]" : "}"));
  };
  print(value, 0, true);
  return { text: parts.join(""), collapsed, truncated };
}

/**
 * Step outputs: checked to be JSON, capped in size, and split across KV keys
 * when larger than one value can hold.
 *
 * @module
 */
import { withArticle } from "./english.ts";
import { OutputError } from "./errors.ts";
import type { OutputRef } from "./records.ts";

/** Outputs up to this many bytes of JSON are stored inside the step record. */
export const INLINE_OUTPUT_BYTES = 16 * 1024;
/** Larger outputs are cut into chunks of this size (KV values are at most 64 KiB). */
export const CHUNK_BYTES = 60_000;
/** The default cap on one output. */
export const DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;

/** An output ready to store. */
export interface EncodedOutput {
  /** What the step record keeps. */
  ref: OutputRef;
  /** Chunks to store under the attempt's output keys (empty when inline). */
  chunks: Uint8Array[];
  /** The value as every reader will see it: `JSON.parse(JSON.stringify(value))`. */
  value: unknown;
}

function describe(value: unknown): string {
  if (typeof value === "object" && value !== null) {
    const name = Object.getPrototypeOf(value)?.constructor?.name;
    return name ? withArticle(name) : "an object";
  }
  if (typeof value === "number") return `the number ${value}`;
  return withArticle(typeof value);
}

/** Finds the first value JSON would silently change or refuse. */
function findUnserializable(value: unknown, path: string, seen: Set<object>): string | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined;
    case "number":
      return Number.isFinite(value) ? undefined : `${describe(value)} at ${path}`;
    case "undefined":
    case "function":
    case "symbol":
    case "bigint":
      return `${describe(value)} at ${path}`;
  }
  if (value === null) return undefined;
  const obj = value as Record<string, unknown>;
  if (typeof obj.toJSON === "function") return undefined;
  if (seen.has(obj)) return `a circular reference at ${path}`;
  seen.add(obj);
  try {
    if (Array.isArray(obj)) {
      for (let i = 0; i < obj.length; i++) {
        // JSON writes undefined (and a hole) in an array as null: keep that too.
        if (obj[i] === undefined) continue;
        const problem = findUnserializable(obj[i], `${path}[${i}]`, seen);
        if (problem) return problem;
      }
      return undefined;
    }
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) return `${describe(obj)} at ${path}`;
    for (const [k, v] of Object.entries(obj)) {
      // JSON drops undefined properties; that is the documented behaviour of JSON, keep it.
      if (v === undefined) continue;
      const problem = findUnserializable(v, `${path}.${k}`, seen);
      if (problem) return problem;
    }
    return undefined;
  } finally {
    seen.delete(obj);
  }
}

/**
 * Checks and encodes a step's return value. A step that returns nothing
 * stores `null`.
 *
 * @throws {OutputError} when the value is not JSON or is over `maxBytes`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeOutput } from "./output.ts";
 * const out = encodeOutput("s", 1, { a: 1 }, 1024);
 * assert.ok(out.ref.kind === "inline");
 * ```
 */
export function encodeOutput(
  step: string,
  attempt: number,
  value: unknown,
  maxBytes: number,
): EncodedOutput {
  if (value === undefined) value = null;
  const problem = findUnserializable(value, "output", new Set());
  if (problem) throw new OutputError(step, `not JSON-serializable: ${problem}`);
  const json = JSON.stringify(value);
  const bytes = new TextEncoder().encode(json);
  if (bytes.byteLength > maxBytes) {
    throw new OutputError(step, `too large: ${bytes.byteLength} bytes, limit ${maxBytes}`);
  }
  const parsed = JSON.parse(json);
  if (bytes.byteLength <= INLINE_OUTPUT_BYTES) {
    return { ref: { kind: "inline", json }, chunks: [], value: parsed };
  }
  const chunks = splitJson(json);
  return {
    ref: { kind: "chunks", attempt, chunks: chunks.length, bytes: bytes.byteLength },
    chunks,
    value: parsed,
  };
}

/**
 * Cuts JSON text into chunks that each fit in one KV value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { splitJson } from "./output.ts";
 * assert.ok(splitJson("[1]").length === 1);
 * ```
 */
export function splitJson(json: string): Uint8Array[] {
  const bytes = new TextEncoder().encode(json);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.byteLength; i += CHUNK_BYTES) {
    chunks.push(bytes.subarray(i, i + CHUNK_BYTES));
  }
  return chunks;
}

/**
 * Joins chunks made by {@linkcode splitJson} and parses them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { joinJson, splitJson } from "./output.ts";
 * assert.ok(joinJson(splitJson('{"a":1}')).a === 1);
 * ```
 */
// deno-lint-ignore no-explicit-any
export function joinJson(chunks: Uint8Array[]): any {
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    all.set(c, offset);
    offset += c.byteLength;
  }
  return JSON.parse(new TextDecoder().decode(all));
}

/**
 * Rebuilds an output from its reference and, when chunked, its chunks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodeOutput } from "./output.ts";
 * assert.ok(decodeOutput({ kind: "inline", json: "[1]" }, []).length === 1);
 * ```
 */
// deno-lint-ignore no-explicit-any
export function decodeOutput(ref: OutputRef, chunks: Uint8Array[]): any {
  if (ref.kind === "inline") return JSON.parse(ref.json);
  if (ref.kind === "items") throw new Error("A map step's output is read from its items");
  if (chunks.length !== ref.chunks) {
    throw new Error(`Output is missing chunks: found ${chunks.length} of ${ref.chunks}`);
  }
  return joinJson(chunks);
}

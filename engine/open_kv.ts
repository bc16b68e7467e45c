/**
 * Opening one KV file from several processes at once.
 *
 * @module
 */

/** How {@linkcode openKvRetrying} retries. */
export interface OpenKvOptions {
  /**
   * How long to keep trying while the file is locked. Each open itself waits
   * up to 5 s in SQLite's busy handler before it throws. @default {30_000}
   */
  timeoutMs?: number;
  /** Called before each retry, with the error that caused it. @default {undefined} */
  onRetry?: (error: Error) => void;
}

/** Whether `error` is SQLite's lock contention, which leaves nothing changed. */
export function isLockedError(error: unknown): error is Error {
  return error instanceof Error && /database is locked|database is busy/i.test(error.message);
}

/**
 * `Deno.openKv(path)`, tried again while it throws SQLite's "database is
 * locked": several processes opening one new file at once (N workers
 * started together) can see it while one of them creates the file. Such an
 * open changed nothing, so it is retried with 10-50 ms of jitter while less
 * than `timeoutMs` has passed (each open first waits up to 5 s in SQLite's
 * busy handler); any other error is thrown at once.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openKvRetrying } from "./open_kv.ts";
 * const kv = await openKvRetrying(":memory:");
 * assert.equal((await kv.get(["missing"])).value, null);
 * kv.close();
 * ```
 */
export async function openKvRetrying(path: string, options: OpenKvOptions = {}): Promise<Deno.Kv> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const start = Date.now();
  for (;;) {
    try {
      return await Deno.openKv(path);
    } catch (error) {
      if (!isLockedError(error) || Date.now() - start > timeoutMs) throw error;
      options.onRetry?.(error);
      await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 40));
    }
  }
}

/**
 * Group commit for Deno KV. A local KV file does one fsync per commit and no
 * group commit of its own, so concurrent writers gain nothing; folding many
 * callers' writes into one atomic commit does. Each caller's promise settles
 * only after the commit holding its write, so an acknowledged write is on
 * disk.
 *
 * @module
 */

/** One caller's write: applied all-or-nothing. */
export interface WriteOp {
  /** Keys to set. */
  sets?: [Deno.KvKey, unknown][];
  /** Keys to delete. */
  deletes?: Deno.KvKey[];
  /** Checks that must hold, or the write is not applied and resolves `false`. */
  checks?: Deno.AtomicCheck[];
  /** Queue messages to enqueue with the write. */
  enqueues?: { value: unknown; delayMs?: number }[];
}

/** Limits of one batched commit, under the KV's own (1,000 mutations, 800 KiB, 100 checks). */
export interface CommitBatcherOptions {
  /** @default {900} */
  maxMutations?: number;
  /** @default {700000} */
  maxBytes?: number;
  /** @default {90} */
  maxChecks?: number;
}

interface Pending {
  op: WriteOp;
  mutations: number;
  bytes: number;
  checks: number;
  resolve: (ok: boolean) => void;
  reject: (error: unknown) => void;
}

/**
 * Rough serialized size of a value, for batching; exactness is not needed.
 * Walks the value instead of stringifying it, so it allocates nothing.
 */
function approxBytes(value: unknown, depth = 0): number {
  if (value instanceof Uint8Array) return value.byteLength + 16;
  if (typeof value === "string") return value.length * 3 + 8;
  if (value === null || typeof value !== "object") return 16;
  if (depth > 32) return 1024;
  let n = 16;
  if (Array.isArray(value)) {
    for (const item of value) n += approxBytes(item, depth + 1);
    return n;
  }
  for (const key in value) {
    n += key.length + 8 + approxBytes((value as Record<string, unknown>)[key], depth + 1);
  }
  return n;
}

function keyBytes(key: Deno.KvKey): number {
  let n = 0;
  for (const part of key) n += typeof part === "string" ? part.length * 3 + 2 : 10;
  return n;
}

const isLocked = (error: unknown) =>
  error instanceof Error && /database is locked|busy/i.test(error.message);

/**
 * Folds concurrent writes into few atomic commits, in arrival order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { CommitBatcher } from "./commit_batcher.ts";
 * const kv = await Deno.openKv(":memory:");
 * const batcher = new CommitBatcher(kv);
 * const [a, b] = await Promise.all([
 *   batcher.write({ sets: [[["a"], 1]] }),
 *   batcher.write({ sets: [[["b"], 2]] }),
 * ]);
 * assert.ok(a && b && batcher.commits === 1);
 * kv.close();
 * ```
 */
export class CommitBatcher {
  readonly #kv: Deno.Kv;
  readonly #maxMutations: number;
  readonly #maxBytes: number;
  readonly #maxChecks: number;
  #queue: Pending[] = [];
  #roomWaiters: (() => void)[] = [];
  #backlogLimit = Infinity;
  #flushing: Promise<void> | undefined;
  /** Atomic commits made so far. */
  commits = 0;
  /** Writes acknowledged so far. */
  writes = 0;

  /** Creates a batcher writing to `kv`. */
  constructor(kv: Deno.Kv, options: CommitBatcherOptions = {}) {
    this.#kv = kv;
    this.#maxMutations = options.maxMutations ?? 900;
    this.#maxBytes = options.maxBytes ?? 700_000;
    this.#maxChecks = options.maxChecks ?? 90;
  }

  /**
   * Queues a write; resolves `true` once committed, `false` if one of its
   * checks failed (nothing of it was written), rejects if KV refused it.
   */
  write(op: WriteOp): Promise<boolean> {
    let bytes = 0;
    for (const [key, value] of op.sets ?? []) bytes += keyBytes(key) + approxBytes(value);
    for (const key of op.deletes ?? []) bytes += keyBytes(key);
    for (const e of op.enqueues ?? []) bytes += approxBytes(e.value);
    const mutations = (op.sets?.length ?? 0) + (op.deletes?.length ?? 0) +
      (op.enqueues?.length ?? 0);
    return new Promise<boolean>((resolve, reject) => {
      this.#queue.push({ op, mutations, bytes, checks: op.checks?.length ?? 0, resolve, reject });
      this.#flushing ??= this.#flush();
    });
  }

  /**
   * Resolves at once while fewer than `maxBacklog` writes wait, else when
   * the queue has drained below it. Callers that create work in bulk await
   * it to bound the memory of writes not yet committed.
   */
  room(maxBacklog = 4_000): Promise<void> {
    if (this.#queue.length < maxBacklog) return Promise.resolve();
    this.#backlogLimit = maxBacklog;
    return new Promise((resolve) => this.#roomWaiters.push(resolve));
  }

  /** Writes queued and not yet committed. */
  get backlog(): number {
    return this.#queue.length;
  }

  /** Resolves when every write queued so far has settled. */
  async drain(): Promise<void> {
    while (this.#flushing) await this.#flushing;
  }

  async #flush(): Promise<void> {
    // Let writes queued in the same tick join this commit.
    await Promise.resolve();
    try {
      while (this.#queue.length > 0) {
        let count = 0, mutations = 0, bytes = 0, checks = 0;
        for (const next of this.#queue) {
          const fits = mutations + next.mutations <= this.#maxMutations &&
            bytes + next.bytes <= this.#maxBytes && checks + next.checks <= this.#maxChecks;
          if (count > 0 && !fits) break;
          count++;
          mutations += next.mutations;
          bytes += next.bytes;
          checks += next.checks;
        }
        // One splice per commit: shifting one by one is quadratic on a long queue.
        await this.#commitBatch(this.#queue.splice(0, count));
        if (this.#roomWaiters.length > 0 && this.#queue.length < this.#backlogLimit) {
          for (const wake of this.#roomWaiters.splice(0)) wake();
        }
      }
    } finally {
      this.#flushing = undefined;
    }
  }

  async #commitBatch(batch: Pending[]): Promise<void> {
    let result: Deno.KvCommitResult | Deno.KvCommitError;
    try {
      result = await this.#commitWithRetry(batch.map((p) => p.op));
    } catch (error) {
      if (batch.length === 1) return batch[0].reject(error);
      // Find the write KV refuses; the others are fine on their own.
      for (const p of batch) await this.#commitBatch([p]);
      return;
    }
    if (result.ok) {
      this.writes += batch.length;
      for (const p of batch) p.resolve(true);
      return;
    }
    if (batch.length === 1) return batch[0].resolve(false);
    for (const p of batch) await this.#commitBatch([p]);
  }

  async #commitWithRetry(ops: WriteOp[]): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    for (let tries = 0;; tries++) {
      const atomic = this.#kv.atomic();
      for (const op of ops) {
        for (const check of op.checks ?? []) atomic.check(check);
        for (const [key, value] of op.sets ?? []) atomic.set(key, value);
        for (const key of op.deletes ?? []) atomic.delete(key);
        for (const e of op.enqueues ?? []) atomic.enqueue(e.value, { delay: e.delayMs ?? 0 });
      }
      try {
        const result = await atomic.commit();
        this.commits++;
        return result;
      } catch (error) {
        // A commit that throws "database is locked" was not applied: safe to retry.
        if (!isLocked(error) || tries >= 50) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(50, 2 ** tries)));
      }
    }
  }
}

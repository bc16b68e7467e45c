/**
 * Group commit for Deno KV. A local KV file does one fsync per commit and no
 * group commit of its own, so concurrent writers gain nothing; folding many
 * callers' writes into one atomic commit does. Each caller's promise settles
 * only after the commit holding its write, so an acknowledged write is on
 * disk.
 *
 * @module
 */
import type { Activity } from "./activity.ts";
import { FencedError, StorageFullError } from "./errors.ts";
import { isDiskFullError } from "./storage.ts";

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

/**
 * A worker's fence: the versionstamp of its registration, checked by every
 * commit it makes. Another worker that declares it dead deletes the
 * registration, and every later commit of the fenced worker fails.
 */
export interface Fence {
  /** The worker. */
  workerId: string;
  /** The registration key and the versionstamp it was written with. */
  check: Deno.AtomicCheck;
}

/** Limits of one batched commit, under the KV's own (1,000 mutations, 800 KiB, 100 checks). */
export interface CommitBatcherOptions {
  /** @default {900} */
  maxMutations?: number;
  /** @default {700000} */
  maxBytes?: number;
  /** @default {90} */
  maxChecks?: number;
  /** Called once per fence when a commit finds it broken. */
  onFenced?: (fence: Fence) => void;
  /** Counts a flush in progress as work in flight. @default {undefined} */
  activity?: Activity;
  /**
   * Called when a commit fails because the disk is full; the batch's writes
   * are rejected with a {@linkcode StorageFullError}.
   */
  onDiskFull?: (error: unknown) => void;
}

interface Pending {
  op: WriteOp;
  mutations: number;
  bytes: number;
  checks: number;
  fence: Fence | undefined;
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
 * How long a commit that keeps throwing "database is locked" is retried. A
 * thrown commit was not applied, and a completion that gives up orphans its
 * lease, so this is long; several processes on one file see the error on
 * most commits under contention (see KV_FACTS).
 */
const LOCKED_RETRY_MS = 60_000;

/**
 * Commits `atomic()` as built by `build`, retrying while SQLite says the
 * database is locked, with jittered backoff of 1 to 64 ms.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { commitRetryingLocked } from "./commit_batcher.ts";
 * const kv = await Deno.openKv(":memory:");
 * const result = await commitRetryingLocked(kv, (a) => a.set(["k"], 1));
 * assert.ok(result.ok);
 * kv.close();
 * ```
 */
export async function commitRetryingLocked(
  kv: Deno.Kv,
  build: (atomic: Deno.AtomicOperation) => void,
): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
  const start = Date.now();
  for (let tries = 0;; tries++) {
    const atomic = kv.atomic();
    build(atomic);
    try {
      return await atomic.commit();
    } catch (error) {
      if (!isLocked(error) || Date.now() - start > LOCKED_RETRY_MS) throw error;
      const capMs = Math.min(64, 2 ** Math.min(tries, 6));
      await new Promise((resolve) => setTimeout(resolve, 1 + Math.random() * capMs));
    }
  }
}

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
  #fence: Fence | undefined;
  readonly #broken = new WeakSet<Fence>();
  readonly #onFenced: (fence: Fence) => void;
  readonly #activity: Activity | undefined;
  readonly #onDiskFull: (error: unknown) => void;
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
    this.#onFenced = options.onFenced ?? (() => {});
    this.#activity = options.activity;
    this.#onDiskFull = options.onDiskFull ?? (() => {});
  }

  /**
   * The fence every later write checks. A write keeps the fence that was set
   * when it was queued: a write computed by a fenced worker never lands
   * under the worker's next registration.
   */
  set fence(fence: Fence | undefined) {
    this.#fence = fence;
  }

  /** The fence of new writes. */
  get fence(): Fence | undefined {
    return this.#fence;
  }

  /**
   * Queues a write; resolves `true` once committed, `false` if one of its
   * checks failed (nothing of it was written), rejects if KV refused it.
   */
  write(op: WriteOp): Promise<boolean> {
    let bytes = 0;
    // Pairs are read by index: destructuring each one costs an iterator per mutation.
    for (const set of op.sets ?? []) bytes += keyBytes(set[0]) + approxBytes(set[1]);
    for (const key of op.deletes ?? []) bytes += keyBytes(key);
    for (const e of op.enqueues ?? []) bytes += approxBytes(e.value);
    const mutations = (op.sets?.length ?? 0) + (op.deletes?.length ?? 0) +
      (op.enqueues?.length ?? 0);
    return new Promise<boolean>((resolve, reject) => {
      const fence = this.#fence;
      const checks = (op.checks?.length ?? 0) + (fence ? 1 : 0);
      this.#queue.push({ op, mutations, bytes, checks, fence, resolve, reject });
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
    const end = this.#activity?.begin();
    // Let writes queued in the same tick join this commit.
    await Promise.resolve();
    try {
      while (this.#queue.length > 0) {
        let count = 0, mutations = 0, bytes = 0, checks = 0;
        for (const next of this.#queue) {
          const fits = mutations + next.mutations <= this.#maxMutations &&
            bytes + next.bytes <= this.#maxBytes && checks + next.checks <= this.#maxChecks;
          if (count > 0 && (!fits || next.fence !== this.#queue[0].fence)) break;
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
      end?.();
    }
  }

  async #commitBatch(batch: Pending[]): Promise<void> {
    const fence = batch[0].fence;
    if (fence && this.#broken.has(fence)) {
      for (const p of batch) p.reject(new FencedError(fence.workerId));
      return;
    }
    let result: Deno.KvCommitResult | Deno.KvCommitError;
    try {
      result = await this.#commitWithRetry(batch.map((p) => p.op), fence);
    } catch (error) {
      if (isDiskFullError(error)) {
        // No write of the batch fits: splitting it would only fail again.
        this.#onDiskFull(error);
        const full = new StorageFullError("the disk holding the KV is full", { cause: error });
        for (const p of batch) p.reject(full);
        return;
      }
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
    if (fence && await this.#isBroken(fence)) {
      for (const p of batch) p.reject(new FencedError(fence.workerId));
      return;
    }
    if (batch.length === 1) return batch[0].resolve(false);
    for (const p of batch) await this.#commitBatch([p]);
  }

  /** Whether a failed commit failed on its fence; tells `onFenced` the first time. */
  async #isBroken(fence: Fence): Promise<boolean> {
    if (this.#broken.has(fence)) return true;
    const entry = await this.#kv.get(fence.check.key);
    if (entry.versionstamp === fence.check.versionstamp) return false;
    this.#broken.add(fence);
    this.#onFenced(fence);
    return true;
  }

  async #commitWithRetry(
    ops: WriteOp[],
    fence: Fence | undefined,
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    const result = await commitRetryingLocked(this.#kv, (atomic) => {
      if (fence) atomic.check(fence.check);
      for (const op of ops) {
        for (const check of op.checks ?? []) atomic.check(check);
        for (const set of op.sets ?? []) atomic.set(set[0], set[1]);
        for (const key of op.deletes ?? []) atomic.delete(key);
        for (const e of op.enqueues ?? []) atomic.enqueue(e.value, { delay: e.delayMs ?? 0 });
      }
    });
    this.commits++;
    return result;
  }
}

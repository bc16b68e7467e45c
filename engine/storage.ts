/**
 * Watches the free space of the filesystem holding the KV file, so that the
 * engine stops taking work before SQLite runs out of room. On a full disk
 * Deno's KV queue thread panics as soon as it has a message to move (see
 * KV_FACTS), which no code can catch: the engine keeps a reserve of free
 * space, below which it refuses new runs, claims nothing, enqueues nothing
 * and does not start its queue listener. A commit that fails because the
 * disk is full marks the store full at once, whatever the last check said.
 *
 * With a reserve file, the guard also keeps a file of zeros next to the KV
 * while space is ample, and deletes it as soon as space runs low: what it
 * frees is room for the writes that cannot be stopped (Deno's queue thread
 * moving a message enqueued earlier, the commits of steps in flight) when
 * another program fills the disk. It is written again once space returns.
 *
 * @module
 */
import { open, stat, statfs, unlink } from "node:fs/promises";
import { getLogger } from "@logtape/logtape";
import type { Clock, TimerHandle } from "./clock.ts";

const log = getLogger(["weft", "storage"]);

/** The default reserve of free space: 64 MiB. */
export const DEFAULT_MIN_FREE_BYTES = 64 * 1024 * 1024;

/** The default time between two looks at the free space: 1 s. */
export const DEFAULT_STORAGE_CHECK_MS = 1_000;

/**
 * How the store is for writing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { StorageStatus } from "./storage.ts";
 * assert.equal(StorageStatus.Low, "low");
 * ```
 */
export const StorageStatus = {
  /** Free space is above the reserve. */
  Ok: "ok",
  /** Free space is below the reserve: no new work is taken. */
  Low: "low",
  /** A write failed because the disk is full. */
  Full: "full",
} as const;
/** One of the {@linkcode StorageStatus} values. */
export type StorageStatus = typeof StorageStatus[keyof typeof StorageStatus];

/** What the guard last saw. */
export interface StorageState {
  /** Whether new work may be taken. */
  status: StorageStatus;
  /** Free bytes for this process at the last look, or `null` when not watched or unreadable. */
  freeBytes: number | null;
  /** The reserve. */
  minFreeBytes: number;
}

/** Reads a filesystem's free blocks and block size, as `node:fs` `statfs` does. */
export type StatFs = (path: string) => Promise<{ bavail: number | bigint; bsize: number | bigint }>;

/** Options of {@linkcode StorageGuard}. */
export interface StorageGuardOptions {
  /**
   * A file or folder on the filesystem to watch (the KV file's folder). Without
   * it, free space is not watched and only failed writes mark the store full.
   * @default {undefined}
   */
  path?: string;
  /** Below this many free bytes, no new work is taken. @default {67108864} (64 MiB) */
  minFreeBytes?: number;
  /** Time between two looks at the free space. @default {1000} */
  checkIntervalMs?: number;
  /** The clock of the checks. */
  clock: Clock;
  /** Reads free space. @default {statfs of node:fs/promises} */
  statfs?: StatFs;
  /**
   * A file kept while space is ample and deleted when it runs low, to free
   * room on a full disk; `bytes` must be less than `minFreeBytes`.
   * @default {undefined} (none)
   */
  reserveFile?: { path: string; bytes: number };
}

/**
 * Whether an error is SQLite's (or the system's) "out of space".
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isDiskFullError } from "./storage.ts";
 * assert.ok(isDiskFullError(new TypeError("database or disk is full")));
 * assert.ok(!isDiskFullError(new TypeError("database is locked")));
 * ```
 */
export function isDiskFullError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return /database or disk is full|no space left on device|SQLITE_FULL|ENOSPC/i.test(
    error.message,
  ) || error.name === "StorageFullError";
}

/**
 * Free space of the KV's filesystem, looked at every `checkIntervalMs`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 * import { StorageGuard } from "./storage.ts";
 * let free = 10_000;
 * const guard = new StorageGuard({
 *   path: "/data",
 *   minFreeBytes: 4_096,
 *   clock: new FakeClock(),
 *   statfs: () => Promise.resolve({ bavail: free / 1024, bsize: 1024 }),
 * });
 * await guard.check();
 * assert.ok(guard.writable);
 * free = 1_024;
 * await guard.check();
 * assert.equal(guard.state.status, "low");
 * ```
 */
export class StorageGuard {
  readonly #path: string | undefined;
  readonly #minFreeBytes: number;
  readonly #checkMs: number;
  readonly #clock: Clock;
  readonly #statfs: StatFs;
  #status: StorageStatus = StorageStatus.Ok;
  #freeBytes: number | null = null;
  #timer: TimerHandle | undefined;
  #stopped = true;
  #checking: Promise<void> | undefined;
  #unreadable = false;
  #waiters: (() => void)[] = [];
  readonly #reserve: { path: string; bytes: number } | undefined;
  /** Whether the reserve file is not on disk now (deleted, or not written yet). */
  #reserveOut = true;
  #reserving: Promise<void> = Promise.resolve();
  #listeners = new Set<(state: StorageState) => void>();

  /** Creates a guard; nothing is read until {@linkcode start} or {@linkcode check}. */
  constructor(options: StorageGuardOptions) {
    const min = options.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    if (!Number.isSafeInteger(min) || min < 0) {
      throw new RangeError(
        `Cannot watch free space as 'minFreeBytes' must be an integer >= 0: current value is ${min}`,
      );
    }
    const every = options.checkIntervalMs ?? DEFAULT_STORAGE_CHECK_MS;
    if (!Number.isSafeInteger(every) || every < 1) {
      throw new RangeError(
        `Cannot watch free space as 'checkIntervalMs' must be an integer >= 1: current value is ${every}`,
      );
    }
    this.#path = options.path;
    this.#minFreeBytes = min;
    this.#checkMs = every;
    this.#clock = options.clock;
    this.#statfs = options.statfs ?? statfs;
    const reserve = options.reserveFile;
    if (
      reserve && (!Number.isSafeInteger(reserve.bytes) || reserve.bytes < 1 || reserve.bytes >= min)
    ) {
      throw new RangeError(
        `Cannot watch free space as 'reserveFile.bytes' must be an integer from 1 to 'minFreeBytes' - 1 (${
          min - 1
        }): current value is ${reserve?.bytes}`,
      );
    }
    this.#reserve = reserve;
  }

  /** Whether new work may be taken and written. */
  get writable(): boolean {
    return this.#status === StorageStatus.Ok;
  }

  /** What the guard last saw. */
  get state(): StorageState {
    return { status: this.#status, freeBytes: this.#freeBytes, minFreeBytes: this.#minFreeBytes };
  }

  /** Calls `listener` on each change of status; returns an unsubscribe function. */
  onChange(listener: (state: StorageState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Resolves at once while writable, else once the store is writable again. */
  whenWritable(): Promise<void> {
    if (this.writable) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Looks at the free space now, then every `checkIntervalMs`. */
  async start(): Promise<void> {
    this.#stopped = false;
    await this.check();
    if (this.writable) await this.#writeReserve();
    this.#schedule();
  }

  /** Resolves once the reserve file has been written or deleted as last decided. */
  settled(): Promise<void> {
    return this.#reserving;
  }

  /** Stops looking; whoever waits for space is released (the engine is closing). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /**
   * Tells the guard a write failed; returns whether it failed for want of
   * space, in which case the store is full until a look finds the reserve free.
   */
  reportWriteError(error: unknown): boolean {
    if (!isDiskFullError(error)) return false;
    this.#set(StorageStatus.Full);
    return true;
  }

  /** Looks at the free space once (looks already in flight are shared). */
  check(): Promise<void> {
    this.#checking ??= this.#look().finally(() => this.#checking = undefined);
    return this.#checking;
  }

  async #look(): Promise<void> {
    if (this.#path === undefined) {
      // Nothing to look at: a full store recovers by trying again.
      if (this.#status === StorageStatus.Full) this.#set(StorageStatus.Ok);
      return;
    }
    let free: number;
    try {
      const s = await this.#statfs(this.#path);
      free = Number(s.bavail) * Number(s.bsize);
    } catch (error) {
      if (!this.#unreadable) {
        log.warn(
          "Could not read the free space of {path}; only failed writes are noticed: {error}",
          {
            path: this.#path,
            error,
          },
        );
      }
      this.#unreadable = true;
      this.#freeBytes = null;
      if (this.#status === StorageStatus.Full) this.#set(StorageStatus.Ok);
      return;
    }
    this.#unreadable = false;
    this.#freeBytes = free;
    // With the reserve file deleted, space is back once it can be written again.
    const needed = this.#minFreeBytes +
      (this.#reserve && this.#reserveOut ? this.#reserve.bytes : 0);
    const enough = this.#status === StorageStatus.Ok ? free >= this.#minFreeBytes : free >= needed;
    this.#set(enough && free > 0 ? StorageStatus.Ok : StorageStatus.Low);
  }

  #writeReserve(): Promise<void> {
    const reserve = this.#reserve;
    if (!reserve) return Promise.resolve();
    this.#reserving = this.#reserving.then(async () => {
      if (!this.writable || !this.#reserveOut) return;
      try {
        const existing = await stat(reserve.path).catch(() => undefined);
        if (existing && existing.size === reserve.bytes) {
          this.#reserveOut = false; // written by an earlier start
          return;
        }
        const file = await open(reserve.path, "w");
        try {
          const zeros = new Uint8Array(Math.min(reserve.bytes, 1 << 20));
          for (let written = 0; written < reserve.bytes;) {
            const { bytesWritten } = await file.write(
              zeros,
              0,
              Math.min(zeros.length, reserve.bytes - written),
            );
            written += bytesWritten;
          }
          await file.sync();
        } finally {
          await file.close();
        }
        this.#reserveOut = false;
      } catch (error) {
        await unlink(reserve.path).catch(() => {});
        log.warn("Could not write the reserve file {path}: {error}", { path: reserve.path, error });
      }
    });
    return this.#reserving;
  }

  #releaseReserve(): Promise<void> {
    const reserve = this.#reserve!;
    this.#reserving = this.#reserving.then(async () => {
      if (this.#reserveOut) return;
      try {
        await unlink(reserve.path);
        this.#reserveOut = true;
        log.warn(
          "Deleted the reserve file {path} ({bytes} bytes), so that writes already under way have room",
          { path: reserve.path, bytes: reserve.bytes },
        );
      } catch (error) {
        if ((error as { code?: string }).code === "ENOENT") this.#reserveOut = true;
        else {log.warn("Could not delete the reserve file {path}: {error}", {
            path: reserve.path,
            error,
          });}
      }
    });
    return this.#reserving;
  }

  #schedule(): void {
    if (this.#stopped || this.#timer) return;
    // Without a path there is nothing to watch: look again only while full
    // (a fake clock's days then carry no timer per second).
    if (this.#path === undefined && this.#status !== StorageStatus.Full) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.check().finally(() => this.#schedule());
    }, this.#checkMs);
  }

  #set(status: StorageStatus): void {
    const before = this.#status;
    if (before === status) return;
    this.#status = status;
    if (status === StorageStatus.Full && !this.#stopped) this.#schedule();
    const state = this.state;
    const fields = { path: this.#path ?? "(not watched)", ...state };
    if (this.#reserve) {
      if (status === StorageStatus.Ok) void this.#writeReserve();
      else if (before === StorageStatus.Ok) void this.#releaseReserve();
    }
    if (status === StorageStatus.Ok) {
      log.info(
        "Storage is writable again ({freeBytes} bytes free on {path}): new runs and claims resume",
        fields,
      );
      for (const wake of this.#waiters.splice(0)) wake();
    } else if (status === StorageStatus.Full) {
      log.error(
        "A KV write failed because the disk holding {path} is full: new runs are refused " +
          "(503) and claims stop until free space is above {minFreeBytes} bytes",
        fields,
      );
    } else if (before === StorageStatus.Ok) {
      log.error(
        "Free space on {path} is {freeBytes} bytes, below the reserve of {minFreeBytes}: " +
          "new runs are refused (503) and claims stop until space returns",
        fields,
      );
    }
    for (const listener of this.#listeners) listener(state);
  }
}

/**
 * Workers on one KV: each engine registers as a worker, beats a heartbeat,
 * and watches the others'. A worker whose heartbeat has not changed for
 * `workerTimeoutMs` (as this worker sees it, on its own clock, so clock skew
 * between machines does not matter), or whose process is gone from this
 * host, is declared dead: its registration is deleted, which fences it (every
 * commit of a worker checks its registration's versionstamp), and the runs
 * it held go back to the due index, for any worker to claim.
 *
 * @module
 */
import process from "node:process";
import { getLogger } from "@logtape/logtape";
import { monotonicFactory } from "ulid";
import type { Activity } from "./activity.ts";
import type { Clock, TimerHandle } from "./clock.ts";
import { type CommitBatcher, commitRetryingLocked, type Fence } from "./commit_batcher.ts";
import type { KeyLayout } from "./keys.ts";
import { heartbeatSchema, type WorkerRecord, workerRecordSchema } from "./records.ts";

const log = getLogger(["weft", "workers"]);

/** Orphaned leases are looked for on this many heartbeats even when nobody died. */
const ORPHAN_SCAN_EVERY = 10;

/** Leases moved back to the due index per write. */
const REAP_BATCH = 40;

/** What {@linkcode Membership} works with. */
export interface MembershipOptions {
  /** The KV. */
  kv: Deno.Kv;
  /** The key layout. */
  keys: KeyLayout;
  /** Every fenced write goes through it; registration sets its fence. */
  batcher: CommitBatcher;
  /** The source of time. */
  clock: Clock;
  /** How often the heartbeat is written. */
  heartbeatIntervalMs: number;
  /** How long a heartbeat may stay unchanged before its worker is dead. */
  workerTimeoutMs: number;
  /** Called when a heartbeat finds this worker's own fence broken. */
  onFenced(fence: Fence): void;
  /** Called after runs of dead workers were moved back to the due index. */
  onReaped(count: number): void;
  /** Where this process runs; `undefined` turns off the same-host process check. @default {thisProcess()} */
  process?: ProcessIdentity | undefined;
  /** Counts a tick in progress as work in flight. @default {undefined} */
  activity?: Activity;
}

/** Which process a worker is, to tell at once that it died on this host. */
export interface ProcessIdentity {
  /** The host (name and boot), as this process sees it. */
  host: string;
  /** The process id. */
  pid: number;
}

/**
 * Whether process `pid` exists on this host: `true`, `false`, or `undefined`
 * when this process may not ask (Deno's `--allow-run` is needed for the
 * signal-0 probe). Only `false` is acted on, and it is certain: no process of
 * that pid exists, so the worker that had it is dead.
 */
function processExists(pid: number): boolean | undefined {
  try {
    return process.kill(pid, 0);
  } catch (error) {
    if ((error as { code?: string }).code === "ESRCH") return false;
    return undefined;
  }
}

/**
 * This process's identity, when the host name can be read (`--allow-sys`);
 * `undefined` otherwise, and then dead workers are found by their heartbeat
 * only.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { thisProcess } from "./membership.ts";
 * const me = thisProcess();
 * assert.ok(me === undefined || me.pid === Deno.pid);
 * ```
 */
export function thisProcess(): ProcessIdentity | undefined {
  try {
    return { host: Deno.hostname(), pid: Deno.pid };
  } catch {
    return undefined;
  }
}

/**
 * This engine's registration as a worker, its heartbeat, and the watch over
 * the other workers. Built by `createEngine`.
 */
export class Membership {
  readonly #kv: Deno.Kv;
  readonly #keys: KeyLayout;
  readonly #batcher: CommitBatcher;
  readonly #clock: Clock;
  readonly #heartbeatMs: number;
  readonly #timeoutMs: number;
  readonly #onFenced: (fence: Fence) => void;
  readonly #onReaped: (count: number) => void;
  readonly #process: ProcessIdentity | undefined;
  readonly #activity: Activity | undefined;
  #endFirst: (() => void) | undefined;
  readonly #ulid = monotonicFactory();
  /**
   * Other workers' heartbeats as last seen: versionstamp, and for how long
   * this worker has watched it stay unchanged.
   */
  readonly #seen = new Map<string, { versionstamp: string | null; silentMs: number }>();
  /** When this worker last looked at the others' heartbeats, on its clock. */
  #lastLookAt: number | undefined;
  /** When the last heartbeat (or the registration) that landed was sent, on this worker's clock. */
  #beatSentAt = -Infinity;
  #fence: Fence | undefined;
  #beat = 0;
  #ticks = 0;
  #timer: TimerHandle | undefined;
  #first: ReturnType<typeof setTimeout> | undefined;
  #stopped = false;
  #ticking: Promise<void> | undefined;
  /** Workers this one declared dead. */
  fencedOthers = 0;
  /** Other workers registered at the last look. */
  others = 0;
  /** Leases of dead workers moved back to the due index by this one. */
  reaped = 0;

  /** Creates the membership; nothing is written until {@linkcode register}. */
  constructor(options: MembershipOptions) {
    this.#kv = options.kv;
    this.#keys = options.keys;
    this.#batcher = options.batcher;
    this.#clock = options.clock;
    this.#heartbeatMs = options.heartbeatIntervalMs;
    this.#timeoutMs = options.workerTimeoutMs;
    this.#onFenced = options.onFenced;
    this.#onReaped = options.onReaped;
    this.#process = "process" in options ? options.process : thisProcess();
    this.#activity = options.activity;
  }

  /** This worker's id; a new one after each registration. */
  get id(): string {
    if (!this.#fence) throw new Error("Worker is not registered");
    return this.#fence.workerId;
  }

  /** The current fence. */
  get fence(): Fence | undefined {
    return this.#fence;
  }

  /** Registers a new worker id, and fences the batcher's writes with it. */
  async register(): Promise<string> {
    const id = `w${this.#ulid(this.#clock.now())}`;
    const record: WorkerRecord = { id, startedAt: this.#clock.now() };
    if (this.#process) {
      record.host = this.#process.host;
      record.pid = this.#process.pid;
    }
    const key = this.#keys.worker(id);
    const sentAt = this.#clock.now();
    const result = await commitRetryingLocked(this.#kv, (a) =>
      a.check({ key, versionstamp: null })
        .set(key, record)
        .set(this.#keys.heartbeat(id), { at: this.#clock.now(), beat: 0 }));
    if (!result.ok) throw new Error(`Cannot register worker '${id}': the id is taken`);
    this.#fence = { workerId: id, check: { key, versionstamp: result.versionstamp } };
    this.#batcher.fence = this.#fence;
    this.#beat = 0;
    this.#beatSentAt = sentAt;
    // A worker registering again was fenced: what it saw of the others is old.
    this.#seen.clear();
    this.#lastLookAt = undefined;
    log.debug("Worker {workerId} registered", { workerId: id });
    return id;
  }

  /** Starts beating and watching: the first tick runs on the next turn of the event loop. */
  start(): void {
    this.#stopped = false;
    const end = this.#activity?.begin();
    this.#endFirst = end;
    this.#first = setTimeout(() => {
      this.#first = undefined;
      this.tick().finally(() => this.#schedule(this.#heartbeatMs));
      end?.();
    }, 0);
  }

  /**
   * Whether no other worker can have declared this one dead yet: its last
   * heartbeat that landed was sent less than half the death timeout ago.
   * Others count silence only from their first look at that heartbeat, so
   * until then this worker's leases are its own (clocks running at the same
   * rate).
   */
  fresh(): boolean {
    return this.#clock.now() - this.#beatSentAt < this.#timeoutMs / 2;
  }

  /**
   * Writes a new heartbeat, started after any in flight (which may have been
   * sent before a freeze); resolves once it landed, or once this worker
   * learned it was fenced.
   *
   * @throws {Error} when the heartbeat could not be written (this worker
   * then cannot know whether its leases are still its own).
   */
  async confirm(): Promise<void> {
    await this.#ticking;
    const fence = this.#fence;
    await this.tick();
    if (this.#fence === fence && !this.fresh()) {
      throw new Error("this worker's heartbeat could not be written");
    }
  }

  /** One heartbeat and one look at the other workers; exposed for tests. */
  tick(): Promise<void> {
    if (!this.#ticking) {
      const ticking = this.#tick();
      this.#activity?.track(ticking);
      this.#ticking = ticking.finally(() => this.#ticking = undefined);
    }
    return this.#ticking;
  }

  /**
   * Moves the leases of unregistered owners back to the due index now,
   * without waiting for the next scan (after an upgrade brought leases in).
   */
  reapOrphans(): Promise<void> {
    const reaping = this.#reapOrphans();
    this.#activity?.track(reaping);
    return reaping;
  }

  /** Stops beating; the registration stays until {@linkcode leave}. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#first);
    this.#endFirst?.();
    if (this.#timer) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#ticking;
  }

  /**
   * Counts the other workers registered now (one small `list`), between
   * heartbeats: a worker that joins is known within a poll or two, not a
   * heartbeat interval later.
   */
  async countOthers(): Promise<number> {
    const me = this.#fence?.workerId;
    let n = 0;
    for await (const e of this.#kv.list({ prefix: this.#keys.workers() })) {
      if (String(e.key.at(-1)) !== me) n++;
    }
    return this.others = n;
  }

  /** Deletes this worker's registration and heartbeat (after its leases were released). */
  async leave(): Promise<void> {
    const fence = this.#fence;
    if (!fence) return;
    await commitRetryingLocked(
      this.#kv,
      (a) =>
        a.check(fence.check).delete(fence.check.key).delete(this.#keys.heartbeat(fence.workerId)),
    );
  }

  #schedule(delayMs: number): void {
    if (this.#stopped) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.tick().finally(() => this.#schedule(this.#heartbeatMs));
    }, delayMs);
  }

  async #tick(): Promise<void> {
    try {
      await this.#heartbeat();
      const died = await this.#fenceDead();
      if (died > 0 || this.#ticks++ % ORPHAN_SCAN_EVERY === 0) await this.#reapOrphans();
    } catch (error) {
      log.error("Worker heartbeat or watch failed: {error}", { error });
    }
  }

  async #heartbeat(): Promise<void> {
    const fence = this.#fence;
    if (!fence) return;
    const beat = ++this.#beat;
    const sentAt = this.#clock.now();
    const result = await commitRetryingLocked(
      this.#kv,
      (a) =>
        a.check(fence.check).set(this.#keys.heartbeat(fence.workerId), {
          at: this.#clock.now(),
          beat,
        }),
    );
    if (result.ok) this.#beatSentAt = Math.max(this.#beatSentAt, sentAt);
    else if (this.#fence === fence) this.#onFenced(fence);
  }

  /** Whether a worker's process is known to be gone from this host. */
  #processGone(record: WorkerRecord): boolean {
    const me = this.#process;
    if (!me || record.host !== me.host || record.pid === undefined) return false;
    return processExists(record.pid) === false;
  }

  /** Fences every worker found dead; resolves how many. */
  async #fenceDead(): Promise<number> {
    const me = this.#fence?.workerId;
    const now = this.#clock.now();
    // Silence counts only while this worker watched: the time since its last
    // look, but no more than two heartbeat intervals. A watcher that was
    // itself frozen, starved, or blocked on the write lock saw nothing of
    // that time, and declares nobody dead on its first late look.
    const watchedMs = this.#lastLookAt === undefined
      ? 0
      : Math.min(Math.max(0, now - this.#lastLookAt), 2 * this.#heartbeatMs);
    this.#lastLookAt = now;
    const beats = new Map<string, string>();
    for await (const e of this.#kv.list({ prefix: this.#keys.heartbeats() })) {
      if (heartbeatSchema.safeParse(e.value).success) {
        beats.set(String(e.key.at(-1)), e.versionstamp);
      }
    }
    let died = 0;
    const present = new Set<string>();
    for await (const e of this.#kv.list({ prefix: this.#keys.workers() })) {
      const id = String(e.key.at(-1));
      present.add(id);
      if (id === me) continue;
      const parsed = workerRecordSchema.safeParse(e.value);
      const versionstamp = beats.get(id) ?? null;
      const seen = this.#seen.get(id);
      if (!seen || seen.versionstamp !== versionstamp) {
        this.#seen.set(id, { versionstamp, silentMs: 0 });
      } else seen.silentMs += watchedMs;
      const silentMs = this.#seen.get(id)!.silentMs;
      const gone = parsed.success && this.#processGone(parsed.data);
      if (!gone && silentMs < this.#timeoutMs) continue;
      const fenced = await commitRetryingLocked(
        this.#kv,
        (a) =>
          a.check({ key: e.key, versionstamp: e.versionstamp })
            .check({ key: this.#keys.heartbeat(id), versionstamp })
            .delete(e.key)
            .delete(this.#keys.heartbeat(id)),
      );
      if (!fenced.ok) continue;
      died++;
      this.fencedOthers++;
      this.#seen.delete(id);
      log.warn("Worker {deadWorker} declared dead ({why}); its runs go back to the due index", {
        deadWorker: id,
        why: gone ? "its process is gone" : `no heartbeat for ${silentMs} ms`,
        workerId: me,
      });
    }
    for (const id of this.#seen.keys()) if (!present.has(id)) this.#seen.delete(id);
    this.others = [...present].filter((id) => id !== me).length - died;
    return died;
  }

  /**
   * Moves every lease whose owner has no registration (declared dead, or a
   * worker that died while reaping) back to the due index, due now. Each move
   * checks that the lease is as read and its owner still unregistered, so two
   * workers reaping at once, or a worker that registers meanwhile, never make
   * a run due twice.
   */
  async #reapOrphans(): Promise<void> {
    const me = this.#fence?.workerId;
    const live = new Set<string>();
    for await (const e of this.#kv.list({ prefix: this.#keys.workers() })) {
      live.add(String(e.key.at(-1)));
    }
    let batch: Promise<boolean>[] = [];
    let moved = 0;
    const flush = async () => {
      moved += (await Promise.all(batch.map((p) => p.catch(() => false)))).filter(Boolean).length;
      batch = [];
    };
    // Held runs are few (each is in a worker's memory): one scan finds a dead owner's.
    for await (const e of this.#kv.list({ prefix: this.#keys.helds() })) {
      const owner = ownerOf(e.value);
      const runId = String(e.key.at(-1));
      if (owner === undefined || owner === me || live.has(owner)) continue;
      const now = this.#clock.now();
      batch.push(this.#batcher.write({
        checks: [
          { key: e.key, versionstamp: e.versionstamp },
          { key: this.#keys.worker(owner), versionstamp: null },
        ],
        deletes: [e.key],
        sets: [
          [this.#keys.active(runId), { dueAt: now }],
          [this.#keys.due(now, runId), true],
        ],
      }));
      if (batch.length >= REAP_BATCH) await flush();
    }
    await flush();
    for await (const e of this.#kv.list({ prefix: this.#keys.inboxes() })) {
      const owner = String(e.key.at(-2));
      // The id is read as each write is queued: a move names the id whose fence it checks.
      const to = this.#fence?.workerId;
      if (!to || owner === to || owner === me || live.has(owner)) continue;
      // Requests to a dead worker come to this one, which finds the run due;
      // only while that owner is unregistered: one that registered after the
      // list of workers above was read keeps its requests.
      await this.#batcher.write({
        // A note already waiting for this worker stays (it is read on the
        // next poll, and this one moves on a later scan).
        checks: [
          { key: e.key, versionstamp: e.versionstamp },
          { key: this.#keys.worker(owner), versionstamp: null },
          { key: this.#keys.inbox(to, String(e.key.at(-1))), versionstamp: null },
        ],
        deletes: [e.key],
        sets: [[this.#keys.inbox(to, String(e.key.at(-1))), e.value]],
      }).catch(() => false);
    }
    if (moved > 0) {
      this.reaped += moved;
      log.info("Moved {moved} runs of dead workers back to the due index", {
        moved,
        workerId: me,
      });
      this.#onReaped(moved);
    }
  }
}

/** The owner a `held` entry names, or `undefined` for a value that is not a lease. */
function ownerOf(value: unknown): string | undefined {
  const owner = (value as { owner?: unknown } | null)?.owner;
  return typeof owner === "string" ? owner : undefined;
}

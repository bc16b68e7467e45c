/**
 * The engine: starts runs, schedules their steps under the concurrency caps,
 * runs attempts with timeouts and retries, commits every transition to KV
 * before acting on it, and resumes unfinished runs after a restart.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { monotonicFactory } from "ulid";
import { type Clock, systemClock, type TimerHandle } from "./clock.ts";
import { CommitBatcher } from "./commit_batcher.ts";
import {
  AttemptInterruptedError,
  EngineClosedError,
  type ErrorData,
  InputTooLargeError,
  InvalidArgumentError,
  InvalidInputError,
  NonRetryableError,
  OutputError,
  RetryAfterError,
  RunFinishedError,
  RunNotFoundError,
  StepCancelledError,
  StepTimeoutError,
  toErrorData,
  UnknownWorkflowError,
  WorkflowDefinitionError,
  WorkflowNotServedError,
} from "./errors.ts";
import { keyLayout, type KeyPrefix } from "./keys.ts";
import {
  DEFAULT_MAX_OUTPUT_BYTES,
  type EncodedOutput,
  encodeOutput,
  INLINE_OUTPUT_BYTES,
  splitJson,
} from "./output.ts";
import {
  type HistoryEvent,
  queueMessageSchema,
  type RunRecord,
  type StepRecord,
} from "./records.ts";
import { backoffDelayMs } from "./retry.ts";
import { type AttemptOutcome, runAttempt } from "./attempt.ts";
import { Slots } from "./slots.ts";
import { attachQueueHandler } from "./queue_listener.ts";
import {
  isTerminalRun,
  isTerminalStep,
  type RunStatus,
  type StepStatus,
  transitionRun,
  transitionStep,
} from "./states.ts";
import { type RunSnapshot, type RunSummary, snapshotOf, summarize } from "./snapshot.ts";
import { type ListRunsOptions, RunStore } from "./store.ts";
import { type AnyWorkflow, NAME_PATTERN, type StepDefinition } from "../steps/workflow.ts";

/** Options of {@linkcode createEngine}. */
export interface EngineOptions {
  /** The KV database holding every run. The engine takes its queue listener. */
  kv: Deno.Kv;
  /** The workflows this engine runs; names must be unique. */
  workflows: readonly AnyWorkflow[];
  /** Most step attempts in flight at once in this engine. @default {100} */
  maxConcurrentSteps?: number;
  /** Largest step output stored, in bytes of JSON. @default {1048576} */
  maxOutputBytes?: number;
  /** Largest run input accepted, in bytes of JSON. @default {262144} */
  maxInputBytes?: number;
  /** How long `close()` waits for attempts in flight. @default {10000} */
  shutdownGraceMs?: number;
  /** Prefix of every KV key Weft uses. @default {["weft"]} */
  keyPrefix?: KeyPrefix;
  /** The source of time; tests pass a `FakeClock`. @default {systemClock} */
  clock?: Clock;
  /** Random numbers in [0, 1) for backoff jitter. @default {Math.random} */
  random?: () => number;
  /**
   * Whether to listen on the KV queue for wake-ups. Turn off only when the
   * KV does not support queues (KV Connect); recovery then happens at start.
   * @default {true}
   */
  useQueue?: boolean;
}

/** Options of {@linkcode Engine.start}. */
export interface StartOptions {
  /** Starting twice with the same key and workflow returns the first run. */
  idempotencyKey?: string;
}

/** What {@linkcode Engine.start} returns. */
export interface StartResult extends RunSummary {
  /** `false` when the idempotency key matched an earlier run. */
  created: boolean;
}

/** A committed transition, as delivered to subscribers. */
export interface EngineEvent {
  /** The run. */
  runId: string;
  /** Its workflow. */
  workflow: string;
  /** The transition. */
  event: HistoryEvent;
}

/** Live counters of an engine. */
export interface EngineStats {
  /** Runs not yet terminal, held by this engine. */
  activeRuns: number;
  /** Attempts in flight. */
  runningSteps: number;
  /** Steps waiting for a backoff timer. */
  waitingRetries: number;
  /** Ready steps waiting for a concurrency slot. */
  queuedSteps: number;
  /** The engine-wide cap. */
  maxConcurrentSteps: number;
  /** KV commits made. */
  commits: number;
}

/** Options of {@linkcode Engine.close}. */
export interface CloseOptions {
  /** Overrides the engine's `shutdownGraceMs`. */
  graceMs?: number;
}

/**
 * A running Weft engine. Create one with {@linkcode createEngine}.
 */
export interface Engine {
  /** The workflows it runs. */
  readonly workflows: readonly AnyWorkflow[];
  /**
   * Validates the input, stores the run and starts its first steps. Resolves
   * once the run is committed to KV.
   *
   * @throws {UnknownWorkflowError} when no workflow has that name.
   * @throws {InvalidInputError} when the input does not match the schema.
   * @throws {InputTooLargeError} when the input is over `maxInputBytes`.
   * @throws {EngineClosedError} after `close()`.
   */
  start(workflow: string, input: unknown, options?: StartOptions): Promise<StartResult>;
  /**
   * The current state of a run.
   *
   * @throws {RunNotFoundError} for an unknown id.
   */
  get(runId: string): Promise<RunSnapshot>;
  /**
   * Resolves with the run's snapshot once it is terminal (succeeded, failed
   * or cancelled); rejects with the signal's reason if `signal` aborts first.
   *
   * @throws {RunNotFoundError} for an unknown id.
   * @throws {WorkflowNotServedError} for an unfinished run of a workflow this engine lacks.
   */
  result(runId: string, options?: { signal?: AbortSignal }): Promise<RunSnapshot>;
  /**
   * Cancels a run: aborts its running steps, starts nothing new, and ends it
   * as cancelled.
   *
   * @throws {RunNotFoundError} for an unknown id.
   * @throws {RunFinishedError} when the run is already terminal.
   * @throws {WorkflowNotServedError} for a run of a workflow this engine lacks.
   */
  cancel(runId: string, options?: { reason?: string }): Promise<RunSnapshot>;
  /** One page of runs, newest first. */
  list(options?: ListRunsOptions): Promise<{ runs: RunSummary[]; nextCursor: string | null }>;
  /** Every recorded transition of a run, oldest first. */
  history(runId: string): Promise<HistoryEvent[]>;
  /** Calls `listener` after each committed transition; returns an unsubscribe function. */
  subscribe(listener: (event: EngineEvent) => void): () => void;
  /** Live counters. */
  stats(): EngineStats;
  /**
   * Stops taking work, waits up to the grace period for attempts in flight,
   * abandons the rest (they resume as new attempts on the next start), and
   * flushes every pending write. Does not close the KV.
   */
  close(options?: CloseOptions): Promise<void>;
}

interface RunningAttempt {
  attempt: number;
  controller: AbortController;
  startedAt: number;
  capKey: string;
}

/** A caller of `result()` waiting for a run to end. */
interface Waiter {
  resolve(snapshot: RunSnapshot): void;
  reject(error: unknown): void;
}

interface LiveRun {
  def: AnyWorkflow;
  record: RunRecord;
  /** The input as steps see it: what JSON keeps of the parsed input. */
  input: unknown;
  steps: Map<string, StepRecord>;
  results: Map<string, unknown>;
  nextSeq: number;
  running: Map<string, RunningAttempt>;
  retryTimers: Map<string, TimerHandle>;
  queued: Set<string>;
  waiters: Set<Waiter>;
  /** The write that made a queued or waiting step ready, until it starts. */
  readyBy: Map<string, Txn>;
  /** Writes of this run not yet committed, and the latest of them. */
  uncommitted: number;
  lastCommit: Promise<unknown>;
  /** Dropped from memory (a failed write); nothing of it may act any more. */
  dead: boolean;
}

function newLiveRun(
  def: AnyWorkflow,
  record: RunRecord,
  input: unknown,
  steps: Map<string, StepRecord>,
  results: Map<string, unknown>,
  nextSeq: number,
): LiveRun {
  return {
    def,
    record,
    input,
    steps,
    results,
    nextSeq,
    running: new Map(),
    retryTimers: new Map(),
    queued: new Set(),
    waiters: new Set(),
    readyBy: new Map(),
    uncommitted: 0,
    lastCommit: Promise.resolve(),
    dead: false,
  };
}

/** Changes to apply in one write; materialised only when committed. */
class Txn {
  readonly runs = new Map<LiveRun, { fromStatus: RunStatus | null; idem?: string }>();
  readonly steps = new Map<LiveRun, Set<string>>();
  readonly history = new Map<LiveRun, HistoryEvent[]>();
  readonly extraSets: [Deno.KvKey, unknown][] = [];
  readonly enqueues: { value: unknown; delayMs?: number }[] = [];
  readonly after: (() => void)[] = [];
  /** Set once committed (at once when there was nothing to write). */
  durable = false;

  touchRun(live: LiveRun, fromStatus: RunStatus | null = live.record.status): void {
    if (!this.runs.has(live)) this.runs.set(live, { fromStatus });
  }

  touchStep(live: LiveRun, step: string): void {
    let set = this.steps.get(live);
    if (!set) this.steps.set(live, set = new Set());
    set.add(step);
  }

  record(live: LiveRun, event: HistoryEvent): void {
    let list = this.history.get(live);
    if (!list) this.history.set(live, list = []);
    list.push(event);
  }

  get empty(): boolean {
    return this.runs.size === 0 && this.steps.size === 0 && this.history.size === 0 &&
      this.extraSets.length === 0 && this.enqueues.length === 0;
  }
}

const log = getLogger(["weft", "engine"]);

/** Run ids are ULIDs: 26 characters of Crockford's base32. */
const RUN_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Anything that is not a run id names no run (and never reaches KV as an oversized key). */
function checkRunId(runId: string): void {
  if (typeof runId !== "string" || !RUN_ID_PATTERN.test(runId)) {
    throw new RunNotFoundError(String(runId).slice(0, 80));
  }
}

/** Output chunks of 60 KB per write keep each write well under KV's 800 KiB commit limit. */
const OUTPUT_CHUNKS_PER_WRITE = 8;
/** The longest delay Deno KV's queue accepts: 30 days. */
const MAX_QUEUE_DELAY_MS = 30 * 24 * 3600 * 1000;
/** History events per KV value, in bytes of JSON (a value holds 64 KiB). */
const HISTORY_BYTES_PER_KEY = 40_000;
/** A step record keeps its newest attempt errors within this many bytes of JSON. */
const MAX_ERRORS_BYTES = 24_000;

/** Keeps the newest errors that fit in {@linkcode MAX_ERRORS_BYTES}, the last one always. */
function boundErrors(errors: StepRecord["errors"]): StepRecord["errors"] {
  let bytes = 0;
  let keep = 0;
  for (let i = errors.length - 1; i >= 0; i--) {
    bytes += JSON.stringify(errors[i]).length;
    if (keep > 0 && bytes > MAX_ERRORS_BYTES) break;
    keep++;
  }
  return errors.slice(errors.length - keep);
}

/**
 * Creates an engine, resumes every run left unfinished in `kv` by an earlier
 * process, and starts listening on the KV queue.
 *
 * @example Run a workflow to the end
 * ```ts
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * const hello = workflow("hello", { input: z.object({ name: z.string() }) })
 *   .step("greet", ({ input }) => `hello ${input.name}`);
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const run = await engine.start("hello", { name: "ada" });
 * const done = await engine.result(run.id);
 * console.assert(done.status === "succeeded" && done.output === "hello ada");
 * await engine.close();
 * kv.close();
 * ```
 */
export async function createEngine(options: EngineOptions): Promise<Engine> {
  const engine = new WeftEngine(options);
  await engine.recover();
  return engine;
}

class WeftEngine implements Engine {
  readonly workflows: readonly AnyWorkflow[];
  readonly #kv: Deno.Kv;
  readonly #defs = new Map<string, AnyWorkflow>();
  readonly #keys;
  readonly #store: RunStore;
  readonly #batcher: CommitBatcher;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #slots: Slots;
  readonly #maxOutputBytes: number;
  readonly #maxInputBytes: number;
  readonly #graceMs: number;
  readonly #live = new Map<string, LiveRun>();
  readonly #pendingStarts = new Map<string, Promise<StartResult>>();
  readonly #listeners = new Set<(event: EngineEvent) => void>();
  readonly #ulid = monotonicFactory();
  #closing = false;
  #stopped = false;
  #pumpScheduled = false;
  #idleWaiters = new Set<() => void>();
  readonly #resyncing = new Set<string>();
  readonly #commitFailures = new Map<string, number>();
  #detachQueue: () => void = () => {};
  #useQueue: boolean;
  /** When the earliest sweep message still on the queue is due, if any. */
  #sweepDueAt: number | undefined;

  constructor(options: EngineOptions) {
    this.#kv = options.kv;
    this.workflows = Object.freeze([...options.workflows]);
    for (const wf of options.workflows) {
      if (this.#defs.has(wf.name)) {
        throw new InvalidArgumentError(
          `Cannot create engine as workflow '${wf.name}' is registered twice`,
        );
      }
      if (wf.steps.length === 0) {
        throw new WorkflowDefinitionError(wf.name, undefined, "it has no steps");
      }
      this.#defs.set(wf.name, wf);
    }
    const max = options.maxConcurrentSteps ?? 100;
    if (!Number.isInteger(max) || max < 1) {
      throw new InvalidArgumentError(
        `Cannot create engine as 'maxConcurrentSteps' must be an integer >= 1: current value is ${max}`,
      );
    }
    this.#keys = keyLayout(options.keyPrefix);
    this.#store = new RunStore(this.#kv, this.#keys);
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#slots = new Slots(max);
    this.#maxOutputBytes = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
    this.#maxInputBytes = options.maxInputBytes ?? 256 * 1024;
    this.#graceMs = options.shutdownGraceMs ?? 10_000;
    const useQueue = options.useQueue ?? true;
    this.#batcher = new CommitBatcher(this.#kv);
    this.#useQueue = useQueue;
    if (useQueue) {
      this.#detachQueue = attachQueueHandler(
        this.#kv,
        (message) => this.#onQueueMessage(message),
        (error) => log.error("Queue listener stopped: {error}", { error }),
      );
    }
  }

  // ---------------------------------------------------------------- public API

  start(workflow: string, input: unknown, options: StartOptions = {}): Promise<StartResult> {
    if (this.#closing) return Promise.reject(new EngineClosedError());
    const def = this.#defs.get(workflow);
    if (!def) return Promise.reject(new UnknownWorkflowError(workflow));
    const parsed = def.input.safeParse(input);
    if (!parsed.success) {
      return Promise.reject(
        new InvalidInputError(
          workflow,
          parsed.error.issues.map((i) => ({
            code: i.code,
            path: i.path.map((p) => typeof p === "symbol" ? String(p) : p),
            message: i.message,
          })),
        ),
      );
    }
    let json: string;
    try {
      json = JSON.stringify(parsed.data) ?? "null";
    } catch (error) {
      return Promise.reject(
        new InvalidInputError(workflow, [{
          code: "invalid_type",
          path: [],
          message: `Input is not JSON-serializable: ${(error as Error).message}`,
        }]),
      );
    }
    const size = new TextEncoder().encode(json).byteLength;
    if (size > this.#maxInputBytes) {
      return Promise.reject(new InputTooLargeError(workflow, size, this.#maxInputBytes));
    }
    const key = options.idempotencyKey;
    if (key === undefined) return this.#create(def, json, undefined);
    if (typeof key !== "string" || key.length === 0 || key.length > 512) {
      return Promise.reject(
        new InvalidArgumentError(
          `Cannot start run as 'idempotencyKey' must be a string of 1 to 512 characters`,
        ),
      );
    }
    const slot = `${workflow}\u0000${key}`;
    const inFlight = this.#pendingStarts.get(slot);
    if (inFlight) return inFlight.then((r) => ({ ...r, created: false }));
    const promise = (async () => {
      const existing = await this.#store.getIdempotent(workflow, key);
      if (existing) return await this.#existing(existing);
      return await this.#create(def, json, key);
    })().finally(() => this.#pendingStarts.delete(slot));
    this.#pendingStarts.set(slot, promise);
    return promise;
  }

  async get(runId: string): Promise<RunSnapshot> {
    checkRunId(runId);
    const live = this.#live.get(runId);
    if (live) {
      // Show only what is on disk: wait for the run's writes in flight.
      for (let i = 0; i < 10 && live.uncommitted > 0; i++) await live.lastCommit.catch(() => {});
      if (this.#live.get(runId) === live || isTerminalRun(live.record.status)) {
        return this.#snapshot(live);
      }
    }
    const run = await this.#store.getRun(runId);
    if (!run) throw new RunNotFoundError(runId);
    const steps = await this.#store.getSteps(runId);
    const outputs = await this.#store.getOutputs(runId, steps);
    const input = await this.#store.getInput(run);
    return snapshotOf(run, input, steps, outputs, this.#defs.get(run.workflow));
  }

  async result(runId: string, options: { signal?: AbortSignal } = {}): Promise<RunSnapshot> {
    checkRunId(runId);
    const { signal } = options;
    signal?.throwIfAborted();
    const live = this.#live.get(runId);
    if (!live) {
      const snapshot = await this.get(runId);
      if (isTerminalRun(snapshot.status)) return snapshot;
      throw new WorkflowNotServedError(runId, snapshot.workflow);
    }
    return await new Promise<RunSnapshot>((resolve, reject) => {
      const onAbort = () => {
        live.waiters.delete(waiter);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        resolve: (snapshot) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(snapshot);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      live.waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  async cancel(runId: string, options: { reason?: string } = {}): Promise<RunSnapshot> {
    checkRunId(runId);
    const live = this.#live.get(runId);
    if (!live || isTerminalRun(live.record.status)) {
      const run = live?.record ?? await this.#store.getRun(runId);
      if (!run) throw new RunNotFoundError(runId);
      if (isTerminalRun(run.status)) throw new RunFinishedError(runId, run.status);
      throw new WorkflowNotServedError(runId, run.workflow);
    }
    const reason = options.reason ?? "cancelled by request";
    const txn = new Txn();
    this.#endRun(txn, live, "cancelled", { name: "RunCancelledError", message: reason });
    const snapshot = this.#snapshot(live);
    await this.#commit(txn);
    return snapshot;
  }

  async list(options: ListRunsOptions = {}) {
    if (options.workflow !== undefined && !NAME_PATTERN.test(options.workflow)) {
      throw new InvalidArgumentError(
        `Cannot list runs as 'workflow' is not a workflow name: current value is ${
          JSON.stringify(options.workflow.slice(0, 80))
        }`,
      );
    }
    const page = await this.#store.listRuns(options);
    return {
      runs: page.runs.map((r) => summarize(this.#live.get(r.id)?.record ?? r)),
      nextCursor: page.nextCursor,
    };
  }

  async history(runId: string): Promise<HistoryEvent[]> {
    checkRunId(runId);
    if (!this.#live.has(runId) && !(await this.#store.getRun(runId))) {
      throw new RunNotFoundError(runId);
    }
    return await this.#store.getHistory(runId);
  }

  subscribe(listener: (event: EngineEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  stats(): EngineStats {
    let running = 0, waiting = 0;
    for (const live of this.#live.values()) {
      running += live.running.size;
      waiting += live.retryTimers.size;
    }
    return {
      activeRuns: this.#live.size,
      runningSteps: running,
      waitingRetries: waiting,
      queuedSteps: this.#slots.waiting,
      maxConcurrentSteps: this.#slots.max,
      commits: this.#batcher.commits,
    };
  }

  async close(options: CloseOptions = {}): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    const graceMs = options.graceMs ?? this.#graceMs;
    if (this.#runningCount() > 0 && graceMs > 0) {
      let timer: TimerHandle | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#idleWaiters.add(resolve)),
        new Promise<void>((resolve) => timer = this.#clock.setTimeout(resolve, graceMs)),
      ]);
      if (timer) this.#clock.clearTimeout(timer);
      this.#idleWaiters.clear();
    }
    // Attempts still running are abandoned: they are written back as due
    // now, without counting against maxAttempts, so the next start reruns
    // them and a deploy costs no step an attempt.
    const txn = new Txn();
    const now = this.#clock.now();
    for (const live of this.#live.values()) {
      for (const [name, r] of live.running) {
        const rec = live.steps.get(name)!;
        const error = toErrorData(new AttemptInterruptedError(name, r.attempt, "engine shut down"));
        this.#setStep(txn, live, name, {
          ...rec,
          status: transitionStep(rec.status, "waiting"),
          errors: boundErrors([...rec.errors, { attempt: r.attempt, at: now, error }]),
          nextAttemptAt: now,
          uncharged: (rec.uncharged ?? 0) + 1,
        }, { attempt: r.attempt, error, nextAttemptAt: now });
      }
    }
    await this.#commit(txn).catch(() => {});
    await this.#batcher.drain();
    this.#stopped = true;
    const closed = new EngineClosedError();
    for (const live of this.#live.values()) {
      for (const t of live.retryTimers.values()) this.#clock.clearTimeout(t);
      live.retryTimers.clear();
      for (const [name, r] of live.running) {
        r.controller.abort(new StepCancelledError(name, "engine closed"));
      }
      for (const w of live.waiters) w.reject(closed);
      live.waiters.clear();
    }
    this.#live.clear();
    await this.#batcher.drain();
    this.#detachQueue();
    log.info("Engine closed");
  }

  // ---------------------------------------------------------------- recovery

  /** Loads every unfinished run and carries it on. */
  async recover(): Promise<void> {
    let ids: string[];
    try {
      ids = await this.#store.activeRunIds();
    } catch (error) {
      this.#detachQueue();
      throw error;
    }
    let resumed = 0;
    for (const runId of ids) {
      try {
        if (await this.#resume(runId)) resumed++;
      } catch (error) {
        // One unreadable run must not keep every other run from resuming.
        log.error("Run {runId} could not be resumed and is left as it is: {error}", {
          runId,
          error,
        });
      }
    }
    if (ids.length > 0) {
      log.info("Recovered {resumed} of {found} unfinished runs", { resumed, found: ids.length });
    }
  }

  /**
   * Loads a run from KV and carries it on; `waiters` of an earlier copy of
   * it (see `#resync`) move over. Resolves whether the run was resumed.
   */
  async #resume(
    runId: string,
    waiters: Iterable<Waiter> = [],
  ): Promise<boolean> {
    const record = await this.#store.getRun(runId);
    if (!record || isTerminalRun(record.status)) {
      if (record) {
        const snapshot = await this.get(runId);
        for (const w of waiters) w.resolve(snapshot);
      }
      return false;
    }
    const def = this.#defs.get(record.workflow);
    if (!def) {
      log.warn("Run {runId} of unknown workflow {workflow} left as it is", {
        runId,
        workflow: record.workflow,
      });
      return false;
    }
    const steps = await this.#store.getSteps(runId);
    const results = await this.#store.getOutputs(runId, steps);
    const history = await this.#store.getHistory(runId);
    const input = await this.#store.getInput(record);
    const live = newLiveRun(def, record, input, steps, results, (history.at(-1)?.seq ?? -1) + 1);
    for (const w of waiters) live.waiters.add(w);
    for (const s of def.steps) {
      if (!steps.has(s.name)) steps.set(s.name, { status: "pending", attempts: 0, errors: [] });
    }
    this.#live.set(runId, live);
    const txn = new Txn();
    const now = this.#clock.now();
    const interrupted = new Set<string>();
    for (const s of def.steps) {
      const rec = steps.get(s.name)!;
      if (rec.status === "running") {
        interrupted.add(s.name);
        // The process that ran this attempt is gone; its result was never committed.
        log.warn("Recovering step {step} of run {runId}: attempt {attempt} was interrupted", {
          workflow: def.name,
          runId,
          step: s.name,
          attempt: rec.attempts,
        });
        this.#attemptFailed(
          txn,
          live,
          s,
          rec.attempts,
          new AttemptInterruptedError(s.name, rec.attempts),
          0,
        );
      }
    }
    if (!isTerminalRun(live.record.status)) {
      for (const s of def.steps) {
        const rec = steps.get(s.name)!;
        if (rec.status === "waiting" && !interrupted.has(s.name)) {
          this.#armRetry(txn, live, s, rec.nextAttemptAt ?? now);
        } else if (rec.status === "pending" && this.#needsMet(live, s)) {
          this.#tryStart(txn, live, s);
        }
      }
      if (def.steps.every((s) => steps.get(s.name)!.status === "succeeded")) {
        this.#setRunStatus(txn, live, "succeeded");
      }
    }
    await this.#commit(txn);
    return true;
  }

  // ---------------------------------------------------------------- creating runs

  async #existing(runId: string): Promise<StartResult> {
    const live = this.#live.get(runId);
    const record = live?.record ?? await this.#store.getRun(runId);
    if (!record) throw new RunNotFoundError(runId);
    return { ...summarize(record), created: false };
  }

  async #create(def: AnyWorkflow, inputJson: string, idempotencyKey: string | undefined) {
    const now = this.#clock.now();
    const id = this.#ulid(now);
    const input = JSON.parse(inputJson);
    const record: RunRecord = { id, workflow: def.name, status: "pending", createdAt: now };
    const txn = new Txn();
    if (inputJson.length <= INLINE_OUTPUT_BYTES) {
      record.input = input;
    } else {
      const chunks = splitJson(inputJson);
      record.inputChunks = chunks.length;
      record.inputBytes = chunks.reduce((n, c) => n + c.byteLength, 0);
      chunks.forEach((c, i) => txn.extraSets.push([this.#keys.inputChunk(id, i), c]));
    }
    if (idempotencyKey !== undefined) record.idempotencyKey = idempotencyKey;
    const live = newLiveRun(
      def,
      record,
      input,
      new Map(def.steps.map((s) => [s.name, { status: "pending", attempts: 0, errors: [] }])),
      new Map(),
      0,
    );
    this.#live.set(id, live);
    txn.runs.set(live, { fromStatus: null, idem: idempotencyKey });
    txn.record(live, { type: "run", seq: live.nextSeq++, at: now, from: null, to: "pending" });
    for (const s of def.steps) if (s.needs.length === 0) this.#tryStart(txn, live, s);
    const summary = summarize(record);
    const ok = await this.#commit(txn);
    if (!ok) {
      // Another writer took the idempotency key first: undo and return its run.
      this.#forget(live);
      const existing = await this.#store.getIdempotent(def.name, idempotencyKey!);
      return await this.#existing(existing!);
    }
    return { ...summary, status: live.record.status, created: true };
  }

  // ---------------------------------------------------------------- scheduling

  #needsMet(live: LiveRun, step: StepDefinition): boolean {
    return step.needs.every((n) => live.steps.get(n)?.status === "succeeded");
  }

  /**
   * Starts `step` in this write if a slot is free and no other work waits
   * for one; otherwise queues it (FIFO) for a slot once this write is on disk.
   */
  #tryStart(txn: Txn, live: LiveRun, step: StepDefinition): void {
    if (this.#closing || isTerminalRun(live.record.status)) return;
    if (live.running.has(step.name) || live.queued.has(step.name)) return;
    const capKey = `${live.def.name}/${step.name}`;
    if (this.#slots.waiting === 0 && this.#slots.tryAcquire(capKey, step.concurrency)) {
      this.#beginAttempt(txn, live, step, capKey);
      return;
    }
    live.readyBy.set(step.name, txn);
    live.queued.add(step.name);
    this.#slots.enqueue({ runId: live.record.id, step: step.name, capKey, cap: step.concurrency });
    txn.after.push(() => this.#schedulePump());
  }

  /** Records a new attempt as running (slot already taken); launches it once committed. */
  #beginAttempt(txn: Txn, live: LiveRun, step: StepDefinition, capKey: string): void {
    const now = this.#clock.now();
    const rec = live.steps.get(step.name)!;
    const attempt = rec.attempts + 1;
    const next: StepRecord = {
      ...rec,
      status: transitionStep(rec.status, "running"),
      attempts: attempt,
      startedAt: rec.startedAt ?? now,
      attemptStartedAt: now,
    };
    delete next.nextAttemptAt;
    this.#setStep(txn, live, step.name, next, { attempt });
    if (live.record.status === "pending") this.#setRunStatus(txn, live, "running");
    const running: RunningAttempt = {
      attempt,
      controller: new AbortController(),
      startedAt: now,
      capKey,
    };
    live.running.set(step.name, running);
    live.readyBy.delete(step.name);
    this.#planSweep(txn, this.#clock.now());
    // The body runs only once its attempt is on disk, so a crash at any
    // moment finds the attempt recorded and reruns it as a new one.
    txn.after.push(() => this.#launch(live, step, running));
  }

  #launch(live: LiveRun, step: StepDefinition, running: RunningAttempt): void {
    if (live.dead || this.#stopped || live.running.get(step.name) !== running) return;
    const { attempt, controller } = running;
    const stepLog = getLogger(["weft", "step"]).with({
      workflow: live.def.name,
      runId: live.record.id,
      step: step.name,
      attempt,
    });
    const results: Record<string, unknown> = {};
    for (const n of step.needs) results[n] = live.results.get(n);
    runAttempt({
      step: step.name,
      attempt,
      timeoutMs: step.timeoutMs,
      controller,
      clock: this.#clock,
      body: () =>
        step.fn({
          input: live.input,
          results,
          signal: controller.signal,
          attempt,
          runId: live.record.id,
          workflow: live.def.name,
          step: step.name,
          log: stepLog,
        }),
    }).then((outcome) => this.#onAttemptDone(live, step, running, outcome));
  }

  /** Gives the attempt's slot back; true if it was still the current attempt. */
  #finishAttempt(live: LiveRun, step: string, running?: RunningAttempt): boolean {
    const current = live.running.get(step);
    if (!current || (running && current !== running)) return false;
    live.running.delete(step);
    this.#slots.release(current.capKey);
    this.#schedulePump();
    if (this.#runningCount() === 0) { for (const w of this.#idleWaiters) w(); }
    return true;
  }

  #onAttemptDone(
    live: LiveRun,
    step: StepDefinition,
    running: RunningAttempt,
    outcome: AttemptOutcome,
  ): void {
    // A late result of an abandoned or superseded attempt never touches state.
    if (this.#stopped || live.running.get(step.name) !== running) return;
    if (!outcome.ok) return this.#settle(live, step, running, outcome);
    let encoded: EncodedOutput;
    try {
      encoded = encodeOutput(step.name, running.attempt, outcome.value, this.#maxOutputBytes);
    } catch (error) {
      return this.#settle(live, step, running, { ok: false, error });
    }
    if (encoded.chunks.length === 0) {
      return this.#settle(live, step, running, { ok: true, encoded });
    }
    // A large output goes to disk before the record that points at it, in
    // writes that each fit in one commit. An attempt that dies in between
    // leaves chunks under its own attempt number that nothing references.
    const writes: Promise<boolean>[] = [];
    for (let i = 0; i < encoded.chunks.length; i += OUTPUT_CHUNKS_PER_WRITE) {
      writes.push(this.#batcher.write({
        sets: encoded.chunks.slice(i, i + OUTPUT_CHUNKS_PER_WRITE).map((chunk, j) => [
          this.#keys.outputChunk(live.record.id, step.name, running.attempt, i + j),
          chunk,
        ]),
      }));
    }
    Promise.all(writes).then(
      () => this.#settle(live, step, running, { ok: true, encoded }),
      (error) => this.#settle(live, step, running, { ok: false, error }),
    );
  }

  /** Commits an attempt's end: its result and what it makes ready, or its failure. */
  #settle(
    live: LiveRun,
    step: StepDefinition,
    running: RunningAttempt,
    result: { ok: true; encoded: EncodedOutput } | { ok: false; error: unknown },
  ): void {
    if (this.#stopped || !this.#finishAttempt(live, step.name, running)) return;
    if (isTerminalRun(live.record.status)) return;
    const txn = new Txn();
    if (result.ok) {
      const { encoded } = result;
      const now = this.#clock.now();
      const rec = live.steps.get(step.name)!;
      this.#setStep(txn, live, step.name, {
        ...rec,
        status: transitionStep(rec.status, "succeeded"),
        finishedAt: now,
        output: encoded.ref,
      }, { attempt: running.attempt, durationMs: now - running.startedAt });
      live.results.set(step.name, encoded.value);
      for (const child of live.def.steps) {
        if (
          child.needs.includes(step.name) && live.steps.get(child.name)!.status === "pending" &&
          this.#needsMet(live, child)
        ) {
          this.#tryStart(txn, live, child);
        }
      }
      if (live.def.steps.every((s) => live.steps.get(s.name)!.status === "succeeded")) {
        this.#setRunStatus(txn, live, "succeeded");
      }
    } else {
      this.#attemptFailed(txn, live, step, running.attempt, result.error);
    }
    this.#background(txn);
  }

  /** Records a failed attempt: schedules the retry, or fails the step and the run. */
  #attemptFailed(
    txn: Txn,
    live: LiveRun,
    step: StepDefinition,
    attempt: number,
    error: unknown,
    delayOverrideMs?: number,
  ): void {
    const now = this.#clock.now();
    const data = toErrorData(error);
    const rec = live.steps.get(step.name)!;
    const errors = boundErrors([...rec.errors, { attempt, at: now, error: data }]);
    const attemptMs = rec.status === "running" && rec.attemptStartedAt !== undefined
      ? now - rec.attemptStartedAt
      : undefined;
    const nonRetryable = error instanceof NonRetryableError || error instanceof OutputError;
    // Attempts abandoned by a graceful shutdown do not count.
    if (!nonRetryable && attempt - (rec.uncharged ?? 0) < step.retry.maxAttempts) {
      const delayMs = delayOverrideMs ??
        (error instanceof RetryAfterError
          ? error.delayMs
          : backoffDelayMs(step.retry, attempt + 1, this.#random));
      this.#setStep(txn, live, step.name, {
        ...rec,
        status: transitionStep(rec.status, "waiting"),
        errors,
        nextAttemptAt: now + delayMs,
      }, { attempt, error: data, nextAttemptAt: now + delayMs, durationMs: attemptMs });
      live.readyBy.set(step.name, txn);
      this.#armRetry(txn, live, step, now + delayMs);
      return;
    }
    this.#setStep(txn, live, step.name, {
      ...rec,
      status: transitionStep(rec.status, "failed"),
      errors,
      finishedAt: now,
    }, { attempt, error: data, durationMs: attemptMs });
    const reason = error instanceof StepTimeoutError
      ? "timed out"
      : nonRetryable
      ? "failed with a non-retryable error"
      : `failed after ${attempt} attempt${attempt === 1 ? "" : "s"}`;
    this.#endRun(txn, live, "failed", {
      name: "StepFailedError",
      message: `Step '${step.name}' ${reason}: ${data.message}`,
      details: { step: step.name, attempt },
      cause: data,
    }, step.name);
  }

  /**
   * Arms the in-process timer for a retry due at `dueAt` (absolute, so a
   * late arm or a restart keeps the schedule); the KV queue carries a backup
   * wake-up.
   */
  #armRetry(txn: Txn, live: LiveRun, step: StepDefinition, dueAt: number): void {
    if (this.#closing) return;
    const delayMs = Math.max(0, dueAt - this.#clock.now());
    if (delayMs === 0) return this.#tryStart(txn, live, step);
    this.#planSweep(txn, dueAt);
    txn.after.push(() => {
      if (this.#closing || live.dead || live.retryTimers.has(step.name)) return;
      const timer = this.#clock.setTimeout(() => {
        live.retryTimers.delete(step.name);
        this.#retryDue(live, step);
      }, dueAt - this.#clock.now());
      live.retryTimers.set(step.name, timer);
    });
  }

  /**
   * Makes sure a sweep message is on the KV queue, written with `txn`, due
   * no later than `dueAt`. Sweeps are the queue's copy of the engine's work:
   * a sweep that finds the work already in hand does nothing. One message
   * covers every run, so the queue holds a handful of messages, not one per
   * step or timer (a large queue slows every delivery; see KV_FACTS).
   */
  #planSweep(txn: Txn, dueAt: number): void {
    if (!this.#useQueue || this.#closing) return;
    if (this.#sweepDueAt !== undefined && this.#sweepDueAt <= dueAt) return;
    this.#sweepDueAt = dueAt;
    const delayMs = Math.min(MAX_QUEUE_DELAY_MS, Math.max(0, dueAt - this.#clock.now()));
    txn.enqueues.push({ value: { weft: "sweep" }, delayMs });
  }

  #retryDue(live: LiveRun, step: StepDefinition): void {
    if (this.#closing || this.#live.get(live.record.id) !== live) return;
    if (live.steps.get(step.name)?.status !== "waiting") return;
    const txn = new Txn();
    this.#tryStart(txn, live, step);
    this.#background(txn);
  }

  /** Ends a run: aborts running attempts, cancels waits, skips what never started. */
  #endRun(
    txn: Txn,
    live: LiveRun,
    status: "failed" | "cancelled",
    error: ErrorData,
    failedStep?: string,
  ): void {
    const now = this.#clock.now();
    for (const s of live.def.steps) {
      const rec = live.steps.get(s.name)!;
      if (isTerminalStep(rec.status)) continue;
      const running = live.running.get(s.name);
      if (running) {
        this.#finishAttempt(live, s.name, running);
        running.controller.abort(
          new StepCancelledError(s.name, status === "cancelled" ? "run cancelled" : "run failed"),
        );
      }
      const timer = live.retryTimers.get(s.name);
      if (timer) {
        this.#clock.clearTimeout(timer);
        live.retryTimers.delete(s.name);
      }
      const to: StepStatus = rec.status === "pending" ? "skipped" : "cancelled";
      this.#setStep(txn, live, s.name, {
        ...rec,
        status: transitionStep(rec.status, to),
        finishedAt: now,
      }, { attempt: rec.attempts });
    }
    for (const step of live.queued) this.#slots.forget(live.record.id, step);
    live.queued.clear();
    live.record = { ...live.record, error };
    if (failedStep) live.record.failedStep = failedStep;
    this.#setRunStatus(txn, live, status, error);
  }

  #schedulePump(): void {
    if (this.#pumpScheduled || this.#closing) return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      if (this.#closing) return;
      // Work whose ready record is still being written would only hold a
      // slot while it waits; durable work goes first.
      const granted = this.#slots.takeFitting((r) =>
        this.#live.get(r.runId)?.readyBy.get(r.step)?.durable ?? true
      );
      if (granted.length === 0) return;
      const txn = new Txn();
      for (const g of granted) {
        const live = this.#live.get(g.runId);
        const step = live?.def.getStep(g.step);
        if (!live || !step || !live.queued.delete(g.step) || isTerminalRun(live.record.status)) {
          this.#slots.release(g.capKey);
          continue;
        }
        this.#beginAttempt(txn, live, step, g.capKey);
      }
      this.#background(txn);
    });
  }

  #runningCount(): number {
    // A slot is held exactly while an attempt is in `live.running`.
    return this.#slots.inUse;
  }

  // ---------------------------------------------------------------- queue

  #onQueueMessage(message: unknown): void {
    if (this.#closing) return;
    const parsed = queueMessageSchema.safeParse(message);
    if (!parsed.success) {
      log.warn("Ignored a queue message that is not Weft's: {issues}", {
        issues: parsed.error.issues,
      });
      return;
    }
    const now = this.#clock.now();
    if (this.#sweepDueAt !== undefined && this.#sweepDueAt <= now) this.#sweepDueAt = undefined;
    const runs = parsed.data.weft === "sweep"
      ? [...this.#live.values()]
      : parsed.data.runIds.flatMap((id) => this.#live.get(id) ?? []);
    const txn = new Txn();
    let later: number | undefined;
    for (const live of runs) {
      if (isTerminalRun(live.record.status)) continue;
      // Everything here is normally already in hand; this finds what was not.
      for (const s of live.def.steps) {
        const rec = live.steps.get(s.name)!;
        if (rec.status === "pending" && this.#needsMet(live, s)) this.#tryStart(txn, live, s);
        if (rec.status !== "waiting" || live.queued.has(s.name)) continue;
        const due = rec.nextAttemptAt ?? 0;
        if (due > now) {
          later = Math.min(later ?? due, due);
          continue;
        }
        // Due, whether or not its in-process timer has fired yet.
        const timer = live.retryTimers.get(s.name);
        if (timer) this.#clock.clearTimeout(timer);
        live.retryTimers.delete(s.name);
        this.#tryStart(txn, live, s);
      }
    }
    if (later !== undefined) this.#planSweep(txn, later);
    this.#background(txn);
  }

  // ---------------------------------------------------------------- state changes

  #setStep(
    txn: Txn,
    live: LiveRun,
    name: string,
    next: StepRecord,
    extra: {
      attempt: number;
      error?: ErrorData;
      nextAttemptAt?: number;
      durationMs?: number;
    },
  ): void {
    const from = live.steps.get(name)!.status;
    live.steps.set(name, next);
    txn.touchStep(live, name);
    const event: HistoryEvent = {
      type: "step",
      seq: live.nextSeq++,
      at: this.#clock.now(),
      step: name,
      from,
      to: next.status,
      attempt: extra.attempt,
    };
    if (extra.error) event.error = extra.error;
    if (extra.nextAttemptAt !== undefined) event.nextAttemptAt = extra.nextAttemptAt;
    if (extra.durationMs !== undefined) event.durationMs = extra.durationMs;
    txn.record(live, event);
  }

  #setRunStatus(txn: Txn, live: LiveRun, to: RunStatus, error?: ErrorData): void {
    const from = live.record.status;
    txn.touchRun(live);
    const now = this.#clock.now();
    const record = { ...live.record, status: transitionRun(from, to) };
    if (to === "running") record.startedAt = now;
    if (isTerminalRun(to)) record.finishedAt = now;
    live.record = record;
    const event: HistoryEvent = { type: "run", seq: live.nextSeq++, at: now, from, to };
    if (error) event.error = error;
    if (isTerminalRun(to)) event.durationMs = now - record.createdAt;
    txn.record(live, event);
  }

  /** Writes a transaction; effects run only once it is durable. */
  async #commit(txn: Txn): Promise<boolean> {
    if (txn.empty) {
      txn.durable = true;
      for (const fn of txn.after) fn();
      return true;
    }
    const k = this.#keys;
    const sets: [Deno.KvKey, unknown][] = [...txn.extraSets];
    const deletes: Deno.KvKey[] = [];
    const checks: Deno.AtomicCheck[] = [];
    const terminal: LiveRun[] = [];
    for (const [live, { fromStatus, idem }] of txn.runs) {
      const r = live.record;
      sets.push([k.run(r.id), r]);
      if (fromStatus === null) {
        sets.push([k.byWorkflow(r.workflow, r.id), true], [k.active(r.id), true]);
        if (idem !== undefined) {
          checks.push({ key: k.idempotency(r.workflow, idem), versionstamp: null });
          sets.push([k.idempotency(r.workflow, idem), r.id]);
        }
      }
      // Status indexes hold finished runs only; unfinished ones are listed
      // from the `active` index, so a run's start costs no index writes.
      if (fromStatus !== r.status && isTerminalRun(r.status)) {
        sets.push(
          [k.byStatus(r.status, r.id), true],
          [k.byWorkflowStatus(r.workflow, r.status, r.id), true],
        );
      }
      if (isTerminalRun(r.status)) {
        deletes.push(k.active(r.id));
        terminal.push(live);
      }
    }
    for (const [live, names] of txn.steps) {
      for (const name of names) sets.push([k.step(live.record.id, name), live.steps.get(name)]);
    }
    for (const [live, events] of txn.history) {
      // A KV value holds 64 KiB: a run ending with hundreds of steps spans keys.
      let part: HistoryEvent[] = [];
      let bytes = 0;
      for (const event of events) {
        const size = JSON.stringify(event).length;
        if (part.length > 0 && bytes + size > HISTORY_BYTES_PER_KEY) {
          sets.push([k.history(live.record.id, part[0].seq), part]);
          part = [];
          bytes = 0;
        }
        part.push(event);
        bytes += size;
      }
      sets.push([k.history(live.record.id, part[0].seq), part]);
    }
    const touched = new Set([...txn.runs.keys(), ...txn.steps.keys()]);
    const write = this.#batcher.write({
      sets,
      deletes,
      checks,
      enqueues: txn.enqueues,
    });
    for (const live of touched) {
      live.uncommitted++;
      live.lastCommit = write;
    }
    let ok: boolean;
    try {
      ok = await write;
    } catch (error) {
      log.error("A KV commit failed; affected runs are reloaded from KV: {error}", { error });
      for (const live of touched) live.uncommitted--;
      for (const live of touched) this.#resync(live, error);
      throw error;
    }
    for (const live of touched) live.uncommitted--;
    if (!ok) return false;
    txn.durable = true;
    if (this.#commitFailures.size > 0) {
      for (const live of touched) this.#commitFailures.delete(live.record.id);
    }
    for (const fn of txn.after) fn();
    for (const [live, events] of txn.history) {
      for (const event of events) this.#emit(live, event);
    }
    for (const live of terminal) {
      if (this.#live.get(live.record.id) === live) this.#live.delete(live.record.id);
      if (live.waiters.size === 0) continue;
      const snapshot = this.#snapshot(live);
      for (const w of live.waiters) w.resolve(snapshot);
      live.waiters.clear();
    }
    return true;
  }

  /** Commits without waiting; a failure is logged and its runs reloaded by `#commit`. */
  #background(txn: Txn): void {
    this.#commit(txn).catch(() => {});
  }

  /**
   * After a failed write, drops the run from memory and reloads it from KV
   * once its other queued writes have settled; once per run at a time, and
   * not again after three failures in a row (the run then stays as it is on
   * disk until the next start, and its waiters are rejected with the error).
   */
  #resync(live: LiveRun, error: unknown): void {
    if (live.dead) return;
    const runId = live.record.id;
    this.#forget(live);
    if (this.#closing || this.#resyncing.has(runId)) return;
    const failures = (this.#commitFailures.get(runId) ?? 0) + 1;
    this.#commitFailures.set(runId, failures);
    if (failures > 3) {
      log.error("Run {runId} is stuck: its writes keep failing ({error}); left as it is on disk", {
        runId,
        error,
      });
      for (const w of live.waiters) w.reject(error);
      return;
    }
    this.#resyncing.add(runId);
    (async () => {
      await this.#batcher.drain();
      if (!this.#closing) await this.#resume(runId, live.waiters);
    })().catch((e) => log.error("Run {runId} could not be reloaded: {error}", { runId, error: e }))
      .finally(() => this.#resyncing.delete(runId));
  }

  /** Drops a run from memory without writing anything. */
  #forget(live: LiveRun): void {
    live.dead = true;
    for (const [name, r] of live.running) {
      this.#finishAttempt(live, name, r);
      r.controller.abort(new StepCancelledError(name, "run reloaded"));
    }
    for (const t of live.retryTimers.values()) this.#clock.clearTimeout(t);
    live.retryTimers.clear();
    for (const step of live.queued) this.#slots.forget(live.record.id, step);
    live.queued.clear();
    if (this.#live.get(live.record.id) === live) this.#live.delete(live.record.id);
  }

  #snapshot(live: LiveRun): RunSnapshot {
    return snapshotOf(live.record, live.input, live.steps, live.results, live.def);
  }

  #emit(live: LiveRun, event: HistoryEvent): void {
    const e: EngineEvent = { runId: live.record.id, workflow: live.def.name, event };
    logEvent(e);
    for (const listener of this.#listeners) {
      try {
        listener(e);
      } catch (error) {
        log.error("An event listener threw: {error}", { error });
      }
    }
  }
}

const RUN_MESSAGES: Record<RunStatus, string> = {
  pending: "Run {runId} created",
  running: "Run {runId} started",
  succeeded: "Run {runId} succeeded in {durationMs} ms",
  failed: "Run {runId} failed in {durationMs} ms: {error.message}",
  cancelled: "Run {runId} cancelled: {error.message}",
};

/** One structured record per committed transition. */
function logEvent({ runId, workflow, event }: EngineEvent): void {
  if (event.type === "run") {
    const props = {
      workflow,
      runId,
      status: event.to,
      durationMs: event.durationMs,
      error: event.error,
    };
    if (event.to === "failed") log.warn(RUN_MESSAGES.failed, props);
    else log.info(RUN_MESSAGES[event.to], props);
    return;
  }
  const props = {
    workflow,
    runId,
    step: event.step,
    attempt: event.attempt,
    durationMs: event.durationMs,
    error: event.error,
    status: event.to,
  };
  const timedOut = event.error?.name === StepTimeoutError.name;
  const interrupted = event.error?.name === AttemptInterruptedError.name;
  switch (event.to) {
    case "running":
      log.debug("Step {step} attempt {attempt} started", props);
      break;
    case "succeeded":
      log.info("Step {step} succeeded in {durationMs} ms", props);
      break;
    case "waiting":
      if (interrupted) log.warn("Step {step} attempt {attempt} was interrupted; recovering", props);
      else if (timedOut) log.warn("Step {step} attempt {attempt} timed out; retrying", props);
      else log.warn("Step {step} attempt {attempt} failed, retrying: {error.message}", props);
      break;
    case "failed":
      if (timedOut) log.error("Step {step} attempt {attempt} timed out; giving up", props);
      else log.error("Step {step} failed: {error.message}", props);
      break;
    default:
      log.info(`Step {step} ${event.to}`, props);
  }
}

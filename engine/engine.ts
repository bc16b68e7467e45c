/**
 * The engine's public face: {@linkcode createEngine} and the
 * {@linkcode Engine} it returns. It validates what callers pass, reads runs
 * from KV, and hands every change of state to the {@linkcode Scheduler},
 * which commits each transition to KV before acting on it and resumes
 * unfinished runs after a restart.
 *
 * | module | part |
 * |---|---|
 * | `scheduler.ts` | starting, retrying, failing and ending runs' steps; commits |
 * | `step_execution.ts` | running one attempt's body and storing its output |
 * | `transitions.ts` | recording one transition in memory and in its write |
 * | `txn.ts` | the changes of one write, and their KV mutations |
 * | `live_run.ts` | an unfinished run in memory |
 * | `recovery.ts` | loading a leased run from KV |
 * | `dispatcher.ts` | claiming due runs from the due index |
 * | `membership.ts` | this worker's registration and heartbeat; fencing dead workers |
 * | `waiters.ts` | callers of `result()` |
 * | `events.ts` | logging and fanning out committed transitions |
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { trace, type TracerProvider } from "@opentelemetry/api";
import { Activity } from "./activity.ts";
import { Admission } from "./admission.ts";
import { isTraceparent, Tracing } from "./tracing.ts";
import { type Clock, systemClock } from "./clock.ts";
import { CommitBatcher, type Fence } from "./commit_batcher.ts";
import { type Claim, claimOp, Dispatcher } from "./dispatcher.ts";
import { Membership } from "./membership.ts";
import { upgradeLayout } from "./upgrade.ts";
import { inboxMessageSchema, schedRecordSchema } from "./records.ts";
import { type Waiter, WaiterRegistry } from "./waiters.ts";
import {
  EngineClosedError,
  FencedError,
  InputTooLargeError,
  InvalidArgumentError,
  InvalidInputError,
  RunFinishedError,
  RunNotFoundError,
  StorageFullError,
  toInputIssues,
  UnknownEventError,
  UnknownWorkflowError,
  WorkflowDefinitionError,
  WorkflowNotServedError,
} from "./errors.ts";
import { type EngineEvent, EventHub } from "./events.ts";
import { monotonicFactory } from "ulid";
import { type KeyLayout, keyLayout, type KeyPrefix } from "./keys.ts";
import { liveSnapshot } from "./live_run.ts";
import { DEFAULT_MAX_OUTPUT_BYTES } from "./output.ts";
import type { HistoryEvent } from "./records.ts";
import { Scheduler } from "./scheduler.ts";
import { Slots } from "./slots.ts";
import { type StatFs, StorageGuard, type StorageState } from "./storage.ts";
import { attachQueueHandler } from "./queue_listener.ts";
import { isTerminalRun, type RunStatus } from "./states.ts";
import { type RunSnapshot, type RunSummary, snapshotOf, summarize } from "./snapshot.ts";
import { type ListRunsOptions, RunStore } from "./store.ts";
import { type AnyWorkflow, NAME_PATTERN } from "../steps/workflow.ts";
import { builtinKinds } from "../steps/kinds/mod.ts";

export type { EngineEvent } from "./events.ts";

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
   * KV does not support queues (KV Connect); wake-ups then come from polling
   * the due index.
   * @default {true}
   */
  useQueue?: boolean;
  /**
   * How often this worker writes its heartbeat. Several workers may share
   * one KV; each one's liveness is its heartbeat.
   * @default {5000}
   */
  heartbeatIntervalMs?: number;
  /**
   * How long another worker's heartbeat may stay unchanged, as this worker
   * sees it, before that worker is declared dead: it is fenced (its later
   * commits fail) and its runs go back to the due index. A worker whose
   * process is gone from this host is declared dead at once.
   * @default {20000}
   */
  workerTimeoutMs?: number;
  /**
   * How often the due index (and this worker's inbox) is polled; this is how
   * work that other processes make due, or runs they end, are seen.
   * @default {250}
   */
  pollIntervalMs?: number;
  /**
   * Whether a worker whose process is gone from this host is declared dead
   * at once (by its host name and pid, probed with signal 0; needs Deno's
   * `--allow-sys=hostname` and `--allow-run`, and is skipped without them).
   * Turn it off when processes in separate pid namespaces that share a host
   * name share a KV file.
   * @default {true}
   */
  detectDeadProcesses?: boolean;
  /**
   * Runs held in memory with nothing running, waiting for a slot; beyond
   * them a ready run waits in the due index, on disk only. While other
   * workers share the KV, a worker holds at most `10 * maxConcurrentSteps`
   * of them (fewer if this is lower), so that the rest wait where any worker
   * can claim them; alone, writing a ready run out only to claim it back
   * would cost a claim and a reload per run for nothing.
   * @default {10000}
   */
  maxIdleRuns?: number;
  /**
   * Where spans of runs and step attempts go (OpenTelemetry). The default is
   * the global provider of `@opentelemetry/api`, which Deno sets up and
   * exports over OTLP with `OTEL_DENO=true`; without it, spans are dropped.
   * Any `TracerProvider` of `@opentelemetry/api` (typed here by the one
   * method Weft calls).
   * @default {trace.getTracerProvider()}
   */
  tracerProvider?: { getTracer(name: string): unknown };
  /**
   * The free space kept on the KV's disk. Below `minFreeBytes` the engine
   * takes no new work: `start` and `cancel` reject with
   * {@linkcode StorageFullError}, nothing is claimed or enqueued, and the
   * queue listener is not started; work carries on by itself once space
   * returns. A write that fails because the disk is full has the same
   * effect until a look finds the reserve free. Without `path` (an
   * in-memory or remote KV) only failed writes are noticed.
   * @default {{ minFreeBytes: 67108864, checkIntervalMs: 1000 }}
   */
  storage?: {
    /** The KV file (or its folder): free space of its filesystem is watched. */
    path?: string;
    /** The reserve, in bytes. @default {67108864} (64 MiB) */
    minFreeBytes?: number;
    /** Time between two looks at the free space, on the engine's clock. @default {1000} */
    checkIntervalMs?: number;
    /** Reads free space, for tests. @default {statfs of node:fs/promises} */
    statfs?: StatFs;
    /**
     * A file of `bytes` zeros kept while space is ample and deleted when it
     * runs low, freeing room for writes already under way (such as Deno's
     * queue thread moving a message enqueued earlier); less than `minFreeBytes`.
     * @default {undefined} (none)
     */
    reserveFile?: { path: string; bytes: number };
  };
}

/** Options of {@linkcode Engine.start}. */
export interface StartOptions {
  /** Starting twice with the same key and workflow returns the first run. */
  idempotencyKey?: string;
  /**
   * The W3C trace context to continue when no span is active, such as the
   * `traceparent` header of the request that starts the run (the HTTP API
   * passes it). The run's spans join that trace, in every worker.
   * @default {undefined} (the active span's trace, or a new one)
   */
  traceparent?: string;
  /** The `tracestate` that came with `traceparent`. @default {undefined} */
  tracestate?: string;
}

/** Options of {@linkcode Engine.signal}. */
export interface SignalOptions {
  /**
   * Makes the delivery idempotent: a second event with the same key for the
   * same run is not delivered again (1-512 characters).
   */
  key?: string;
}

/** What {@linkcode Engine.signal} did. */
export interface SignalResult {
  /** The run. */
  runId: string;
  /** The event's name. */
  event: string;
  /** The id of the event in the run's mailbox (a ULID). */
  eventId: string;
  /** Whether an event with the same key was delivered before, and this one was not. */
  duplicate: boolean;
}

/** What {@linkcode Engine.start} returns. */
export interface StartResult extends RunSummary {
  /** `false` when the idempotency key matched an earlier run. */
  created: boolean;
}

/** Live counters of an engine. */
export interface EngineStats {
  /** Runs not yet terminal held in this worker's memory (leased, with work in flight or queued). */
  activeRuns: number;
  /** Attempts in flight. */
  runningSteps: number;
  /**
   * Steps this worker moved to `waiting` (a retry scheduled) less those it
   * moved on from there. Each transition is committed by one worker, so the
   * sum over workers is the number of retries waiting; a worker that starts
   * again counts from 0.
   */
  waitingRetries: number;
  /** Ready steps waiting for a concurrency slot. */
  queuedSteps: number;
  /** The engine-wide cap. */
  maxConcurrentSteps: number;
  /** KV commits made. */
  commits: number;
  /** This worker's id (a new one after it was fenced). */
  workerId: string;
  /** Times this worker found itself fenced by another. */
  fenced: number;
  /** Runs claimed from the due index. */
  claims: number;
  /** Other workers registered on the KV at this worker's last look (every few polls). */
  otherWorkers: number;
  /** Other workers this one declared dead. */
  fencedOthers: number;
  /** Runs of dead workers this one moved back to the due index. */
  reaped: number;
  /** The free space of the KV's disk as last seen, and whether new work is taken. */
  storage: StorageState;
}

/** Options of {@linkcode Engine.close}. */
export interface CloseOptions {
  /**
   * Overrides the engine's `shutdownGraceMs`. Calling `close({ graceMs: 0 })`
   * while an earlier `close()` waits for its grace period ends that wait at
   * once; the attempts cut short are still written back, uncharged.
   */
  graceMs?: number;
}

/**
 * A running Weft engine. Create one with {@linkcode createEngine}.
 */
export interface Engine {
  /** The workflows it runs. */
  readonly workflows: readonly AnyWorkflow[];
  /** This worker's id on the KV; a new one after it was fenced. */
  readonly workerId: string;
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
  /**
   * Sends an event to a run. Its payload is checked against the schema of
   * the run's wait steps for that event, then stored in the run's mailbox
   * before this resolves: a wait step that waits for it now ends with it,
   * and one that starts later finds it. Each event is taken by one wait step.
   *
   * @throws {RunNotFoundError} for an unknown id.
   * @throws {UnknownEventError} when no step of the run's workflow waits for `event`.
   * @throws {InvalidInputError} when the payload does not match the schema.
   * @throws {RunFinishedError} when the run has finished (nothing can wait any more).
   * @throws {WorkflowNotServedError} for a run of a workflow this engine lacks.
   */
  signal(
    runId: string,
    event: string,
    payload?: unknown,
    options?: SignalOptions,
  ): Promise<SignalResult>;
  /** One page of runs, newest first. */
  list(options?: ListRunsOptions): Promise<{ runs: RunSummary[]; nextCursor: string | null }>;
  /** Every recorded transition of a run, oldest first. */
  history(runId: string): Promise<HistoryEvent[]>;
  /** Calls `listener` after each committed transition; returns an unsubscribe function. */
  subscribe(listener: (event: EngineEvent) => void): () => void;
  /** Live counters. */
  stats(): EngineStats;
  /**
   * Resolves once this engine has no work in flight: no commit being
   * written, no claim round, poll or heartbeat, and no step body running
   * (a body waiting in `ctx.sleep` waits for the clock, not for work).
   * With a fake clock nothing new starts until the clock moves, which is
   * what `weft/testing` builds on; with the real clock, new work may start
   * at any moment after.
   */
  idle(): Promise<void>;
  /**
   * Stops taking work, waits up to the grace period for attempts in flight,
   * abandons the rest (they resume as new attempts on the next start), and
   * flushes every pending write. Does not close the KV.
   */
  close(options?: CloseOptions): Promise<void>;
}
const log = getLogger(["weft", "engine"]);

/**
 * Writes waiting to commit beyond which `start` waits (about four commits'
 * worth of starts).
 */
const WRITE_BACKLOG = 400;

/** How long a request waits for the registration after a fence before it is refused. */
const REGISTER_WAIT_MS = 5_000;

/**
 * Starts admitted and not yet committed: as many as the engine has slots,
 * within 50..400. The starts of one commit can just fill the slots, so a
 * run admitted while a slot is free takes the fast path (its first step is
 * recorded in its creation write); more would only wait in memory, each a
 * separate write later. Measured on W1 (10,000 starts at once, 50 slots,
 * `deno task bench w1`): 400 gave 12.0 KV mutations per run and ~210 MB of
 * peak RSS, 50 gave 11.0 and ~180 MB, at a higher rate; 25 was slower.
 */
function startBacklog(slots: number): number {
  return Math.min(400, Math.max(50, slots));
}

/** Run ids are ULIDs: 26 characters of Crockford's base32. */
const RUN_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/**
 * The UTF-8 size of `text`, exact when it may exceed `limit`; otherwise a
 * bound under it, found without encoding (a UTF-16 unit is at most 3 bytes).
 */
function utf8Bytes(text: string, limit: number): number {
  if (text.length * 3 <= limit) return text.length;
  return new TextEncoder().encode(text).byteLength;
}

/** Anything that is not a run id names no run (and never reaches KV as an oversized key). */
function checkRunId(runId: string): void {
  if (typeof runId !== "string" || !RUN_ID_PATTERN.test(runId)) {
    throw new RunNotFoundError(String(runId).slice(0, 80), { malformed: true });
  }
}

/**
 * Creates an engine: registers it as a worker on `kv` and returns at once,
 * whatever the backlog. Runs left unfinished by an earlier process, or held
 * by workers found dead, are carried on in the background, claimed from the
 * due index in bounded batches.
 *
 * @example Run a workflow to the end
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * const hello = workflow("hello", { input: z.object({ name: z.string() }) })
 *   .step("greet", ({ input }) => `hello ${input.name}`);
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const run = await engine.start("hello", { name: "ada" });
 * const done = await engine.result(run.id);
 * assert.ok(done.status === "succeeded" && done.output === "hello ada");
 * await engine.close();
 * kv.close();
 * ```
 */
export async function createEngine(options: EngineOptions): Promise<Engine> {
  const engine = new WeftEngine(options);
  await engine.open();
  return engine;
}

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) {
    throw new InvalidArgumentError(
      `Cannot create engine as '${name}' must be an integer >= 1: current value is ${v}`,
    );
  }
  return v;
}

class WeftEngine implements Engine {
  readonly workflows: readonly AnyWorkflow[];
  readonly #kv: Deno.Kv;
  readonly #keys: KeyLayout;
  readonly #clock: Clock;
  readonly #defs = new Map<string, AnyWorkflow>();
  readonly #store: RunStore;
  readonly #batcher: CommitBatcher;
  readonly #slots: Slots;
  readonly #events = new EventHub();
  readonly #activity = new Activity();
  readonly #tracing: Tracing;
  readonly #waiters = new WaiterRegistry();
  readonly #scheduler: Scheduler;
  readonly #membership: Membership;
  readonly #dispatcher: Dispatcher;
  readonly #maxInputBytes: number;
  readonly #graceMs: number;
  readonly #useQueue: boolean;
  readonly #pendingStarts = new Map<string, Promise<StartResult>>();
  readonly #admission: Admission;
  #registering: Promise<unknown> | undefined;
  /** Whether a registration after a fence has not landed yet. */
  #registerPending = false;
  #fencedCount = 0;
  #closing = false;
  #closed: Promise<void> | undefined;
  readonly #storage: StorageGuard;
  /** Retries this worker scheduled, less those it started or ended (see `stats`). */
  #retriesWaiting = 0;
  #polls = 0;
  #upgrading: Promise<void> = Promise.resolve();
  readonly #fencesHandled = new WeakSet<Fence>();
  #detachQueue: () => void = () => {};
  readonly #ulid = monotonicFactory();

  constructor(options: EngineOptions) {
    const kv = options.kv;
    this.#kv = kv;
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
    for (const wf of options.workflows) {
      for (const s of wf.steps) {
        const child = s.child?.workflow;
        if (child && !this.#defs.has(child.name)) {
          throw new WorkflowDefinitionError(
            wf.name,
            s.name,
            `it runs workflow '${child.name}' as a child, which this engine is not given: add it to 'workflows'`,
          );
        }
      }
    }
    const max = positiveInteger("maxConcurrentSteps", options.maxConcurrentSteps, 100);
    this.#admission = new Admission(startBacklog(max));
    const heartbeatIntervalMs = positiveInteger(
      "heartbeatIntervalMs",
      options.heartbeatIntervalMs,
      5_000,
    );
    const workerTimeoutMs = positiveInteger("workerTimeoutMs", options.workerTimeoutMs, 20_000);
    if (workerTimeoutMs <= heartbeatIntervalMs) {
      throw new InvalidArgumentError(
        `Cannot create engine as 'workerTimeoutMs' must be longer than 'heartbeatIntervalMs' (${heartbeatIntervalMs}): current value is ${workerTimeoutMs}`,
      );
    }
    const pollIntervalMs = positiveInteger("pollIntervalMs", options.pollIntervalMs, 250);
    const maxIdleRuns = options.maxIdleRuns ?? 10_000;
    if (!Number.isInteger(maxIdleRuns) || maxIdleRuns < 0) {
      throw new InvalidArgumentError(
        `Cannot create engine as 'maxIdleRuns' must be an integer >= 0: current value is ${maxIdleRuns}`,
      );
    }
    // Alone, a worker keeps ready runs in memory; sharing the KV, it leaves most on disk for others.
    const idleLimit = () =>
      this.#membership.others > 0 ? Math.min(maxIdleRuns, 10 * max) : maxIdleRuns;
    const keys = keyLayout(options.keyPrefix);
    this.#keys = keys;
    const clock = options.clock ?? systemClock;
    this.#clock = clock;
    this.#tracing = new Tracing(
      (options.tracerProvider as TracerProvider | undefined) ?? trace.getTracerProvider(),
      clock,
    );
    this.#store = new RunStore(kv, keys);
    this.#slots = new Slots(max);
    this.#maxInputBytes = options.maxInputBytes ?? 256 * 1024;
    this.#graceMs = options.shutdownGraceMs ?? 10_000;
    this.#useQueue = options.useQueue ?? true;
    this.#storage = new StorageGuard({ ...options.storage, clock });
    this.#batcher = new CommitBatcher(kv, {
      onFenced: (fence) => this.#onFenced(fence),
      activity: this.#activity,
      onDiskFull: (error) => this.#storage.reportWriteError(error),
    });
    this.#dispatcher = new Dispatcher({
      kv,
      keys,
      batcher: this.#batcher,
      clock,
      owner: () => this.#membership.id,
      // Room for a run per free slot, and for the idle runs kept ready
      // behind them, so claims come in batches. A claimed run that waits for
      // a slot stays held: the pool may exceed maxIdleRuns by one batch.
      capacity: () =>
        this.#scheduler.closing || !this.#storage.writable
          ? 0
          : this.#slots.max + idleLimit() - this.#slots.inUse - this.#scheduler.queuedRuns,
      claimed: (claims) => this.#claimed(claims),
      onPoll: () => this.#poll(),
      pollIntervalMs,
      activity: this.#activity,
    });
    this.#membership = new Membership({
      kv,
      keys,
      batcher: this.#batcher,
      clock,
      heartbeatIntervalMs,
      workerTimeoutMs,
      onFenced: (fence) => this.#onFenced(fence),
      onReaped: () => this.#dispatcher.wake(),
      activity: this.#activity,
      ...(options.detectDeadProcesses === false ? { process: undefined } : {}),
    });
    this.#scheduler = new Scheduler({
      workflows: this.#defs,
      store: this.#store,
      keys,
      batcher: this.#batcher,
      slots: this.#slots,
      events: this.#events,
      clock,
      random: options.random ?? Math.random,
      maxOutputBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
      useQueue: this.#useQueue,
      kinds: builtinKinds(),
      waiters: this.#waiters,
      owner: () => this.#membership.id,
      dispatch: {
        wakeAt: (dueAt) => this.#dispatcher.wakeAt(dueAt),
        nudge: () => this.#dispatcher.nudge(),
      },
      maxIdleRuns: idleLimit,
      children: {
        ended: (parentRunId) =>
          void this.#deliver(parentRunId).catch((error) =>
            log.warn("Could not wake parent run {runId}: {error}", { runId: parentRunId, error })
          ),
        cancel: (childRunId, reason) =>
          void this.cancel(childRunId, { reason }).catch((error) => {
            if (!(error instanceof RunFinishedError || error instanceof EngineClosedError)) {
              log.warn("Could not cancel child run {runId}: {error}", { runId: childRunId, error });
            }
          }),
      },
      activity: this.#activity,
      tracing: this.#tracing,
      whenWritable: () => this.#storage.whenWritable(),
      queueAllowed: () => this.#storage.writable,
      lease: this.#membership,
    });
    this.#events.subscribe((e) => this.#countRetries(e));
    this.#events.subscribe((e) => this.#traceRunEnd(e));
    this.#storage.onChange((state) => {
      if (state.status === "ok") this.#dispatcher.wake();
    });
  }

  #countRetries(e: EngineEvent): void {
    if (e.event.type !== "step") return;
    if (e.event.to === "waiting") this.#retriesWaiting++;
    if (e.event.from === "waiting") this.#retriesWaiting = Math.max(0, this.#retriesWaiting - 1);
  }

  /** A run's span, once it has ended: its record is still held while the end is announced. */
  #traceRunEnd(e: EngineEvent): void {
    if (e.event.type !== "run" || !isTerminalRun(e.event.to)) return;
    const live = this.#scheduler.runs.get(e.runId);
    if (live) this.#tracing.runEnded(live.record);
  }

  get workerId(): string {
    return this.#membership.id;
  }

  /** Registers the worker and starts its heartbeat, claims and queue listener; reads nothing else. */
  async open(): Promise<void> {
    await this.#storage.start();
    await this.#membership.register();
    if (this.#useQueue) {
      // On a full disk, Deno's queue thread panics as soon as it has a
      // message to move: the listener starts only with the reserve free.
      const attach = () => {
        if (this.#closing) return;
        this.#detachQueue = attachQueueHandler(
          this.#kv,
          (message) => this.#scheduler.onQueueMessage(message),
          (error) => log.error("Queue listener stopped: {error}", { error }),
        );
      };
      if (this.#storage.writable) attach();
      else this.#storage.whenWritable().then(attach);
    }
    this.#membership.start();
    this.#dispatcher.start();
    // In the background: createEngine reads nothing of the backlog.
    this.#upgrading = this.#activity.track(
      new Promise<void>((resolve) => setTimeout(resolve, 0))
        .then(() => upgradeLayout(this.#kv, this.#keys, this.#batcher, () => this.#clock.now()))
        .then(async (moved) => {
          if (moved === 0) return;
          // Leases of an earlier layout whose owners are gone are due at once.
          await this.#membership.reapOrphans();
          this.#dispatcher.wake();
        })
        .catch((error) => log.error("Could not upgrade the KV layout: {error}", { error })),
    );
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
          toInputIssues(parsed.error.issues),
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
    const size = utf8Bytes(json, this.#maxInputBytes);
    if (size > this.#maxInputBytes) {
      return Promise.reject(new InputTooLargeError(workflow, size, this.#maxInputBytes));
    }
    if (options.traceparent !== undefined && !isTraceparent(options.traceparent)) {
      return Promise.reject(
        new InvalidArgumentError(
          `Cannot start run as 'traceparent' is not a W3C traceparent: current value is ${
            JSON.stringify(String(options.traceparent).slice(0, 80))
          }`,
        ),
      );
    }
    const key = options.idempotencyKey;
    if (key === undefined) return this.#create(def, json, undefined, options);
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
      return await this.#create(def, json, key, options);
    })().finally(() => this.#pendingStarts.delete(slot));
    this.#pendingStarts.set(slot, promise);
    return promise;
  }

  async get(runId: string): Promise<RunSnapshot> {
    checkRunId(runId);
    const runs = this.#scheduler.runs;
    const live = runs.get(runId);
    if (live) {
      // Show only what is on disk: wait for the run's writes in flight.
      for (let i = 0; i < 10 && live.uncommitted > 0; i++) await live.lastCommit.catch(() => {});
      if (runs.get(runId) === live || isTerminalRun(live.record.status)) {
        return liveSnapshot(live);
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
    if (this.#closing) {
      const snapshot = await this.get(runId);
      if (isTerminalRun(snapshot.status)) return snapshot;
      throw new EngineClosedError();
    }
    let remove = () => {};
    const done = new Promise<RunSnapshot>((resolve, reject) => {
      // Added before the run is read, so an end committed meanwhile is not missed.
      if (!signal) {
        remove = this.#waiters.add(runId, { resolve, reject });
        return;
      }
      const onAbort = () => {
        remove();
        reject(signal.reason);
      };
      const waiter: Waiter = {
        resolve: (snapshot) => {
          signal.removeEventListener("abort", onAbort);
          resolve(snapshot);
        },
        reject: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      remove = this.#waiters.add(runId, waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    if (!this.#scheduler.runs.has(runId)) {
      // One read of the record: a caller waiting for thousands of runs reads
      // each run's steps once, when it has ended.
      let run;
      try {
        run = await this.#store.getRunCoalesced(runId);
        if (!run) throw new RunNotFoundError(runId);
        if (isTerminalRun(run.status)) this.#waiters.resolve(runId, await this.get(runId));
      } catch (error) {
        remove();
        throw error;
      }
      if (!isTerminalRun(run.status) && !this.#defs.has(run.workflow)) {
        remove();
        throw new WorkflowNotServedError(runId, run.workflow);
      }
    }
    return await done;
  }

  async cancel(runId: string, options: { reason?: string } = {}): Promise<RunSnapshot> {
    checkRunId(runId);
    const reason = options.reason ?? "cancelled by request";
    if (this.#closing) throw new EngineClosedError();
    if (!this.#storage.writable) throw this.#storageError();
    // After a fence, act under the new registration: until it lands,
    // nothing this worker writes lands.
    await this.#registered();
    // A run is acted on by the worker that holds it: claim it if nobody
    // does, or leave the request in its holder's inbox.
    for (let tries = 0; tries < 8; tries++) {
      const live = this.#scheduler.runs.get(runId);
      if (live && !isTerminalRun(live.record.status)) {
        return await this.#scheduler.cancel(live, reason);
      }
      const run = await this.#store.getRun(runId);
      if (!run) throw new RunNotFoundError(runId);
      if (isTerminalRun(run.status)) throw new RunFinishedError(runId, run.status);
      if (!this.#defs.has(run.workflow)) throw new WorkflowNotServedError(runId, run.workflow);
      const holder = await this.#store.getHolder(runId);
      if (!holder) continue;
      const { sched, entry } = holder;
      if ("dueAt" in sched) {
        const due = await this.#kv.get(this.#keys.due(sched.dueAt, runId));
        if (due.versionstamp === null) continue;
        // The id is read as the write is queued: the lease names the id whose fence it checks.
        if (!(await this.#batcher.write(claimOp(this.#keys, this.#membership.id, due)))) continue;
        const held = await this.#scheduler.resume(runId, new Set(), { pin: true });
        if (held && !isTerminalRun(held.record.status)) {
          return await this.#scheduler.cancel(held, reason);
        }
        continue;
      }
      if (sched.owner === this.#membership.id) {
        // Being loaded by this worker right now, or left leased after its
        // writes kept failing: after a short wait, load it here (a load in
        // flight is not duplicated) and cancel it.
        if (tries < 3) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        const held = await this.#scheduler.resume(runId, new Set(), { pin: true });
        if (held && !isTerminalRun(held.record.status)) {
          return await this.#scheduler.cancel(held, reason);
        }
        continue;
      }
      const ok = await this.#batcher.write({
        checks: [{ key: entry.key, versionstamp: entry.versionstamp }],
        sets: [[this.#keys.inbox(sched.owner, runId), {
          kind: "cancel",
          reason,
          at: Date.now(),
        }]],
      });
      if (ok) return await this.get(runId);
    }
    return await this.get(runId);
  }

  async signal(
    runId: string,
    event: string,
    payload: unknown = null,
    options: SignalOptions = {},
  ): Promise<SignalResult> {
    checkRunId(runId);
    if (this.#closing) throw new EngineClosedError();
    const { key } = options;
    if (key !== undefined && (typeof key !== "string" || key.length === 0 || key.length > 512)) {
      throw new InvalidArgumentError(
        `Cannot send event as 'key' must be a string of 1 to 512 characters`,
      );
    }
    const first = this.#scheduler.runs.get(runId)?.record ?? await this.#store.getRun(runId);
    if (!first) throw new RunNotFoundError(runId);
    const def = this.#defs.get(first.workflow);
    if (!def) throw new WorkflowNotServedError(runId, first.workflow);
    const wait = def.steps.find((s) => s.wait?.event === event)?.wait;
    if (!wait) throw new UnknownEventError(def.name, event);
    const parsed = wait.schema.safeParse(payload);
    const subject = `payload for event '${event}' of workflow '${def.name}'`;
    if (!parsed.success) {
      throw new InvalidInputError(
        def.name,
        toInputIssues(parsed.error.issues),
        subject,
      );
    }
    let json: string;
    try {
      json = JSON.stringify(parsed.data) ?? "null";
    } catch (error) {
      throw new InvalidInputError(def.name, [{
        code: "invalid_type",
        path: [],
        message: `Payload is not JSON-serializable: ${(error as Error).message}`,
      }], subject);
    }
    // An event is stored in one KV value, with room for its envelope.
    const limit = Math.min(this.#maxInputBytes, 60_000);
    const size = utf8Bytes(json, limit);
    if (size > limit) throw new InputTooLargeError(def.name, size, limit);
    const value = JSON.parse(json);
    const action = `send event '${event}' to run '${runId}'`;
    for (let tries = 0; tries < 16; tries++) {
      const [runEntry, keyEntry, heldEntry, dueEntry] = await this.#kv.getMany([
        this.#keys.run(runId),
        this.#keys.eventKey(runId, key ?? ""),
        this.#keys.held(runId),
        this.#keys.active(runId),
      ]);
      // A run is held or due, never both: whichever key is there says which.
      const activeEntry = heldEntry.value !== null ? heldEntry : dueEntry;
      if (key !== undefined && typeof keyEntry.value === "string") {
        // Delivered before, or stored by a process that died before it could
        // deliver it: hand it over again (the wake is idempotent).
        await this.#deliver(runId).catch(() => {});
        return { runId, event, eventId: keyEntry.value, duplicate: true };
      }
      const run = runEntry.value as { status?: RunStatus } | null;
      if (!run) throw new RunNotFoundError(runId);
      if (run.status && (isTerminalRun(run.status) || run.status === "compensating")) {
        throw new RunFinishedError(runId, run.status, action);
      }
      const eventId = this.#ulid(this.#clock.now());
      const checks: Deno.AtomicCheck[] = [runEntry];
      const sets: [Deno.KvKey, unknown][] = [[this.#keys.event(runId, eventId), {
        event,
        payload: value,
        ...(key !== undefined ? { key } : {}),
        at: this.#clock.now(),
      }]];
      if (key !== undefined) {
        checks.push(keyEntry);
        sets.push([this.#keys.eventKey(runId, key), eventId]);
      }
      // The same write wakes the run, so an event on disk is never left
      // unseen by a crash right after it: a run waiting in the due index is
      // made due now, and the worker holding one finds a note in its inbox.
      const deletes: Deno.KvKey[] = [];
      if (activeEntry.value !== null) {
        const sched = schedRecordSchema.parse(activeEntry.value);
        checks.push(activeEntry);
        const now = this.#clock.now();
        if ("dueAt" in sched) {
          if (sched.dueAt > now) {
            const due = await this.#kv.get(this.#keys.due(sched.dueAt, runId));
            if (due.versionstamp === null) continue;
            checks.push(due);
            deletes.push(due.key);
            sets.push([this.#keys.active(runId), { dueAt: now }], [
              this.#keys.due(now, runId),
              due.value,
            ]);
          }
        } else if (sched.owner !== this.#membership.id) {
          // (This worker delivers to its own runs below; should it die first,
          // loading the run again reads the mailbox.)
          const inbox = await this.#kv.get(this.#keys.inbox(sched.owner, runId));
          // A note already there (a cancel, or other events) covers this one.
          if (inbox.versionstamp === null) {
            checks.push(inbox);
            sets.push([inbox.key, { kind: "event", at: Date.now() }]);
          }
        }
      }
      // The run's record did not change meanwhile: it had not finished when this landed.
      if (!(await this.#batcher.write({ checks, sets, deletes }))) continue;
      await this.#deliver(runId).catch((error) =>
        log.warn("Event {eventId} for run {runId} is stored; its delivery waits: {error}", {
          runId,
          eventId,
          error,
        })
      );
      return { runId, event, eventId, duplicate: false };
    }
    throw new RunFinishedError(runId, "changing too often", action);
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
    const runs = this.#scheduler.runs;
    return {
      runs: page.runs.map((r) => summarize(runs.get(r.id)?.record ?? r)),
      nextCursor: page.nextCursor,
    };
  }

  async history(runId: string): Promise<HistoryEvent[]> {
    checkRunId(runId);
    if (!this.#scheduler.runs.has(runId) && !(await this.#store.getRun(runId))) {
      throw new RunNotFoundError(runId);
    }
    return await this.#store.getHistory(runId);
  }

  subscribe(listener: (event: EngineEvent) => void): () => void {
    return this.#events.subscribe(listener);
  }

  stats(): EngineStats {
    const runs = this.#scheduler.runs;
    let running = 0;
    for (const live of runs.values()) running += live.running.size;
    return {
      activeRuns: runs.size,
      runningSteps: running,
      waitingRetries: this.#retriesWaiting,
      queuedSteps: this.#slots.waiting,
      maxConcurrentSteps: this.#slots.max,
      commits: this.#batcher.commits,
      workerId: this.#membership.id,
      fenced: this.#fencedCount,
      claims: this.#dispatcher.claims,
      otherWorkers: this.#membership.others,
      fencedOthers: this.#membership.fencedOthers,
      reaped: this.#membership.reaped,
      storage: this.#storage.state,
    };
  }

  async idle(): Promise<void> {
    for (;;) {
      await this.#activity.settled();
      const begun = this.#activity.begun;
      // What just settled carries on in promise callbacks, which may begin
      // more work; they have all run by the next macrotask.
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (this.#activity.busy === 0 && this.#activity.begun === begun) return;
    }
  }

  close(options: CloseOptions = {}): Promise<void> {
    if (this.#closed) {
      if (options.graceMs === 0) this.#scheduler.endGrace();
      return this.#closed;
    }
    this.#closed = this.#close(options.graceMs ?? this.#graceMs);
    return this.#closed;
  }

  async #close(graceMs: number): Promise<void> {
    this.#closing = true;
    await this.#dispatcher.stop();
    await this.#scheduler.shutdown(graceMs);
    this.#storage.stop();
    await this.#membership.stop();
    await this.#registering?.catch(() => {});
    await this.#upgrading;
    // Everything held went back to the due index: leave, so nobody waits to
    // declare this worker dead.
    await this.#membership.leave().catch((error) =>
      log.error("Could not remove this worker's registration: {error}", { error })
    );
    this.#detachQueue();
    log.info("Engine closed");
  }

  // ---------------------------------------------------------------- workers

  /** Carries on runs just claimed from the due index. */
  async #claimed(claims: Claim[]): Promise<void> {
    await this.#scheduler.resumeClaimed(claims).catch(() => {});
  }

  /** On each poll: runs ended elsewhere, and requests in this worker's inbox. */
  async #poll(): Promise<void> {
    // Who else is here decides how many ready runs this worker keeps (see `maxIdleRuns`).
    const poll = this.#polls++;
    if (poll % 4 === 0) await this.#membership.countOthers();
    // Alone on the KV, this worker ends every run it waits for itself; it
    // still looks now and then, for a worker that came and went.
    const alone = this.#membership.others === 0 && poll % 20 !== 0;
    if (this.#waiters.size > 0 && !alone) {
      await this.#waiters.poll({
        statuses: async (ids) =>
          (await this.#kv.getMany(ids.map((id) => this.#keys.run(id)))).map((e) =>
            (e.value as { status?: RunStatus } | null)?.status
          ),
        snapshot: (id) => this.get(id),
        holds: (id) => this.#scheduler.runs.has(id),
      });
    }
    if (this.#scheduler.closing || !this.#storage.writable) return;
    const me = this.#membership.id;
    for await (const entry of this.#kv.list({ prefix: this.#keys.inboxOf(me) }, { limit: 100 })) {
      const runId = String(entry.key.at(-1));
      const done = await this.#batcher.write({
        checks: [{ key: entry.key, versionstamp: entry.versionstamp }],
        deletes: [entry.key],
      });
      const message = inboxMessageSchema.safeParse(entry.value);
      if (!done || !message.success) continue;
      if (message.data.kind === "event") {
        await this.#deliver(runId).catch((error) =>
          log.warn("Could not deliver events to run {runId}: {error}", { runId, error })
        );
        continue;
      }
      const reason = message.data.reason;
      await this.cancel(runId, { reason }).catch((error) => {
        if (!(error instanceof RunFinishedError || error instanceof RunNotFoundError)) {
          log.warn("Could not cancel run {runId} as asked: {error}", { runId, error });
        }
      });
    }
  }

  /**
   * Hands the events in a run's mailbox to the worker that holds the run:
   * this one (its wait steps look at once), nobody (this worker claims the
   * run, and loading it reads the mailbox), or another (told through its inbox).
   */
  async #deliver(runId: string): Promise<void> {
    await this.#registered();
    for (let tries = 0; tries < 8; tries++) {
      if (this.#scheduler.closing) return;
      const live = this.#scheduler.runs.get(runId);
      if (live && !live.dead) {
        return await this.#scheduler.deliver(live, await this.#store.getEvents(runId));
      }
      const holder = await this.#store.getHolder(runId);
      if (!holder) return; // finished meanwhile
      const { sched, entry } = holder;
      if ("dueAt" in sched) {
        const due = await this.#kv.get(this.#keys.due(sched.dueAt, runId));
        if (due.versionstamp === null) continue;
        // The id is read as the write is queued: the lease names the id whose fence it checks.
        if (!(await this.#batcher.write(claimOp(this.#keys, this.#membership.id, due)))) continue;
        await this.#scheduler.resume(runId);
        return;
      }
      if (sched.owner === this.#membership.id) {
        // Being loaded by this worker right now; loading reads the mailbox.
        await new Promise((resolve) => setTimeout(resolve, 5));
        continue;
      }
      const inbox = this.#keys.inbox(sched.owner, runId);
      // A request already waiting there (a cancel, or events) covers these events too.
      const ok = await this.#batcher.write({
        checks: [{ key: entry.key, versionstamp: entry.versionstamp }, {
          key: inbox,
          versionstamp: null,
        }],
        sets: [[inbox, { kind: "event", at: Date.now() }]],
      });
      if (ok || (await this.#kv.get(inbox)).versionstamp !== null) return;
    }
  }

  /** This worker was declared dead by another: drop everything and register anew. */
  #onFenced(fence: Fence): void {
    // Writes queued under the old fence fail while the new registration is
    // being written: one fence is handled once.
    if (this.#membership.fence !== fence || this.#scheduler.closing) return;
    if (this.#fencesHandled.has(fence)) return;
    this.#fencesHandled.add(fence);
    this.#fencedCount++;
    log.error(
      "Worker {workerId} was fenced by another worker (it missed its heartbeats); " +
        "its runs are carried on elsewhere, and it registers again",
      { workerId: fence.workerId },
    );
    this.#scheduler.dropAll();
    this.#registerPending = true;
    this.#registering = this.#registerAgain().finally(() => this.#registerPending = false);
  }

  /**
   * Resolves at once unless this worker is registering again after a fence;
   * then waits for that, up to {@linkcode REGISTER_WAIT_MS}.
   *
   * @throws {EngineClosedError} if the engine closed meanwhile.
   * @throws {FencedError} if the registration has not landed by then: the
   * request is refused whole (HTTP 503, `Retry-After`), not left waiting.
   */
  async #registered(): Promise<void> {
    if (!this.#registerPending) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#registering,
      new Promise((resolve) => timer = setTimeout(resolve, REGISTER_WAIT_MS)),
    ]);
    clearTimeout(timer);
    if (this.#closing) throw new EngineClosedError();
    if (this.#registerPending) throw new FencedError(this.#membership.id);
  }

  /**
   * Registers under a new id after a fence, trying again (up to 2 s apart)
   * until it lands or the engine closes: until then this worker claims and
   * starts nothing.
   */
  async #registerAgain(): Promise<void> {
    for (let tries = 1;; tries++) {
      if (this.#closing) return;
      try {
        await this.#membership.register();
        this.#dispatcher.wake();
        return;
      } catch (error) {
        log.error("Could not register again after a fence (try {tries}); trying again: {error}", {
          tries,
          error,
        });
      }
      const delayMs = Math.min(2_000, 50 * 2 ** tries) * (0.5 + Math.random() / 2);
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      if (this.#closing) return;
    }
  }

  /** Why nothing can be written now. */
  #storageError(): StorageFullError {
    const { status, freeBytes, minFreeBytes } = this.#storage.state;
    return new StorageFullError(
      status === "full" || freeBytes === null
        ? "the disk holding the KV is full; reads still work, and writes resume once space is freed"
        : `${freeBytes} bytes are free on the KV's disk, below the reserve of ${minFreeBytes}; ` +
          "reads still work, and writes resume once space is freed",
    );
  }

  // ---------------------------------------------------------------- creating runs

  async #existing(runId: string): Promise<StartResult> {
    const live = this.#scheduler.runs.get(runId);
    const record = live?.record ?? await this.#store.getRun(runId);
    if (!record) throw new RunNotFoundError(runId);
    return { ...summarize(record), created: false };
  }

  /**
   * Creates a run once the admission gate lets it in. Backpressure: a flood
   * of starts waits for earlier ones (and other writes) to commit instead of
   * holding thousands of uncommitted runs in memory. The gate counts starts,
   * since a burst made in one tick finds the write queue still empty.
   */
  #create(
    def: AnyWorkflow,
    inputJson: string,
    idempotencyKey: string | undefined,
    traceOptions: Pick<StartOptions, "traceparent" | "tracestate">,
  ): Promise<StartResult> {
    return this.#admission.run(() =>
      this.#createAdmitted(def, inputJson, idempotencyKey, traceOptions)
    );
  }

  async #createAdmitted(
    def: AnyWorkflow,
    inputJson: string,
    idempotencyKey: string | undefined,
    traceOptions: Pick<StartOptions, "traceparent" | "tracestate">,
  ): Promise<StartResult> {
    await this.#batcher.room(WRITE_BACKLOG);
    await this.#registered();
    if (this.#closing) throw new EngineClosedError();
    if (!this.#storage.writable) throw this.#storageError();
    const started = this.#tracing.startRun(def.name, traceOptions);
    let summary: RunSummary | undefined;
    try {
      summary = await this.#scheduler.create(def, inputJson, {
        idempotencyKey,
        trace: started.trace,
      });
    } catch (error) {
      started.end(undefined, error);
      throw error;
    }
    started.end(summary?.id);
    if (summary) return Object.assign(summary, { created: true });
    // Another writer took the idempotency key first: return its run.
    const existing = await this.#store.getIdempotent(def.name, idempotencyKey!);
    return await this.#existing(existing!);
  }
}

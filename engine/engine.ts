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
 * | `recovery.ts` | loading an unfinished run from KV |
 * | `events.ts` | logging and fanning out committed transitions |
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Clock, systemClock } from "./clock.ts";
import { CommitBatcher } from "./commit_batcher.ts";
import {
  EngineClosedError,
  InputTooLargeError,
  InvalidArgumentError,
  InvalidInputError,
  RunFinishedError,
  RunNotFoundError,
  UnknownWorkflowError,
  WorkflowDefinitionError,
  WorkflowNotServedError,
} from "./errors.ts";
import { type EngineEvent, EventHub } from "./events.ts";
import { keyLayout, type KeyPrefix } from "./keys.ts";
import { liveSnapshot, type Waiter } from "./live_run.ts";
import { DEFAULT_MAX_OUTPUT_BYTES } from "./output.ts";
import type { HistoryEvent } from "./records.ts";
import { Scheduler } from "./scheduler.ts";
import { Slots } from "./slots.ts";
import { attachQueueHandler } from "./queue_listener.ts";
import { isTerminalRun } from "./states.ts";
import { type RunSnapshot, type RunSummary, snapshotOf, summarize } from "./snapshot.ts";
import { type ListRunsOptions, RunStore } from "./store.ts";
import { type AnyWorkflow, NAME_PATTERN } from "../steps/workflow.ts";

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
const log = getLogger(["weft", "engine"]);

/** Writes waiting to commit beyond which `start` waits (about four commits' worth of starts). */
const START_BACKLOG = 400;

/** Run ids are ULIDs: 26 characters of Crockford's base32. */
const RUN_ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Anything that is not a run id names no run (and never reaches KV as an oversized key). */
function checkRunId(runId: string): void {
  if (typeof runId !== "string" || !RUN_ID_PATTERN.test(runId)) {
    throw new RunNotFoundError(String(runId).slice(0, 80));
  }
}

/**
 * Creates an engine, resumes every run left unfinished in `kv` by an earlier
 * process, and starts listening on the KV queue.
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
  await engine.recover();
  return engine;
}

class WeftEngine implements Engine {
  readonly workflows: readonly AnyWorkflow[];
  readonly #defs = new Map<string, AnyWorkflow>();
  readonly #store: RunStore;
  readonly #batcher: CommitBatcher;
  readonly #slots: Slots;
  readonly #events = new EventHub();
  readonly #scheduler: Scheduler;
  readonly #maxInputBytes: number;
  readonly #graceMs: number;
  readonly #pendingStarts = new Map<string, Promise<StartResult>>();
  #detachQueue: () => void = () => {};

  constructor(options: EngineOptions) {
    const kv = options.kv;
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
    const keys = keyLayout(options.keyPrefix);
    this.#store = new RunStore(kv, keys);
    this.#slots = new Slots(max);
    this.#maxInputBytes = options.maxInputBytes ?? 256 * 1024;
    this.#graceMs = options.shutdownGraceMs ?? 10_000;
    const useQueue = options.useQueue ?? true;
    this.#batcher = new CommitBatcher(kv);
    this.#scheduler = new Scheduler({
      workflows: this.#defs,
      store: this.#store,
      keys,
      batcher: this.#batcher,
      slots: this.#slots,
      events: this.#events,
      clock: options.clock ?? systemClock,
      random: options.random ?? Math.random,
      maxOutputBytes: options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
      useQueue,
      readSnapshot: (runId) => this.get(runId),
    });
    if (useQueue) {
      this.#detachQueue = attachQueueHandler(
        kv,
        (message) => this.#scheduler.onQueueMessage(message),
        (error) => log.error("Queue listener stopped: {error}", { error }),
      );
    }
  }

  // ---------------------------------------------------------------- public API

  start(workflow: string, input: unknown, options: StartOptions = {}): Promise<StartResult> {
    if (this.#scheduler.closing) return Promise.reject(new EngineClosedError());
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
    const live = this.#scheduler.runs.get(runId);
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
    const live = this.#scheduler.runs.get(runId);
    if (!live || isTerminalRun(live.record.status)) {
      const run = live?.record ?? await this.#store.getRun(runId);
      if (!run) throw new RunNotFoundError(runId);
      if (isTerminalRun(run.status)) throw new RunFinishedError(runId, run.status);
      throw new WorkflowNotServedError(runId, run.workflow);
    }
    return await this.#scheduler.cancel(live, options.reason ?? "cancelled by request");
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
    let running = 0, waiting = 0;
    for (const live of runs.values()) {
      running += live.running.size;
      waiting += live.retryTimers.size;
    }
    return {
      activeRuns: runs.size,
      runningSteps: running,
      waitingRetries: waiting,
      queuedSteps: this.#slots.waiting,
      maxConcurrentSteps: this.#slots.max,
      commits: this.#batcher.commits,
    };
  }

  async close(options: CloseOptions = {}): Promise<void> {
    if (this.#scheduler.closing) return;
    await this.#scheduler.shutdown(options.graceMs ?? this.#graceMs);
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
        if (await this.#scheduler.resume(runId)) resumed++;
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

  // ---------------------------------------------------------------- creating runs

  async #existing(runId: string): Promise<StartResult> {
    const live = this.#scheduler.runs.get(runId);
    const record = live?.record ?? await this.#store.getRun(runId);
    if (!record) throw new RunNotFoundError(runId);
    return { ...summarize(record), created: false };
  }

  async #create(
    def: AnyWorkflow,
    inputJson: string,
    idempotencyKey: string | undefined,
  ): Promise<StartResult> {
    // Backpressure: a flood of starts waits for earlier writes to commit
    // instead of holding thousands of uncommitted runs in memory.
    await this.#batcher.room(START_BACKLOG);
    if (this.#scheduler.closing) throw new EngineClosedError();
    const summary: RunSummary | undefined = await this.#scheduler.create(def, inputJson, {
      idempotencyKey,
    });
    if (summary) return { ...summary, created: true };
    // Another writer took the idempotency key first: return its run.
    const existing = await this.#store.getIdempotent(def.name, idempotencyKey!);
    return await this.#existing(existing!);
  }
}

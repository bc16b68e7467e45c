/**
 * The scheduling core of the engine. For every unfinished run it holds, it
 * decides what happens next (start a step under the concurrency caps, retry
 * it after a backoff, fail or end the run), records each decision in a
 * {@linkcode Txn}, commits it, and acts on it only once it is on disk. It
 * also carries on runs loaded from KV, answers the KV queue's sweeps, and
 * shuts down. Reads, validation and the public API are the engine's; which
 * runs it keeps holding is `run_leases.ts`'s, reloads after a failed write
 * are `run_reloads.ts`'s, and the grace period and the write-back of cut
 * attempts are `shutdown.ts`'s.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { monotonicFactory } from "ulid";
import type { Activity } from "./activity.ts";
import { Deadlines } from "./attempt.ts";
import type { RunTrace, Tracing } from "./tracing.ts";
import type { Clock } from "./clock.ts";
import type { CommitBatcher, Fence } from "./commit_batcher.ts";
import {
  EngineClosedError,
  type ErrorData,
  FencedError,
  StepCancelledError,
  toErrorData,
} from "./errors.ts";
import type { EventHub } from "./events.ts";
import type { KeyLayout } from "./keys.ts";
import { KindContext, type KindOps } from "./kind_context.ts";
import {
  type LiveRun,
  liveSnapshot,
  newLiveRun,
  NO_WRITE,
  type RunningAttempt,
  stepsOf,
} from "./live_run.ts";
import { itemName } from "./keys.ts";
import { INLINE_OUTPUT_BYTES, splitJson } from "./output.ts";
import { readiness, runOutcome } from "./readiness.ts";
import { RunLeases } from "./run_leases.ts";
import { RunReloads } from "./run_reloads.ts";
import { GracePeriod, writeBackRunning } from "./shutdown.ts";
import {
  creationEvent,
  queueMessageSchema,
  type RunEvent,
  type RunRecord,
  type StepRecord,
} from "./records.ts";
import { loadRun } from "./recovery.ts";
import type { WaiterRegistry } from "./waiters.ts";
import type { MapItemsContext, StepKind, StepKindContext } from "./step_kind.ts";
import type { Slots } from "./slots.ts";
import { type RunSnapshot, type RunSummary, summarize } from "./snapshot.ts";
import { isTerminalRun, isTerminalStep, type StepStatus, transitionStep } from "./states.ts";
import {
  type AttemptResult,
  launchAttempt,
  type LaunchOptions,
  type LeaseCheck,
} from "./step_execution.ts";
import type { RunStore } from "./store.ts";
import { StepTimers } from "./step_timers.ts";
import { SweepAlarm } from "./sweep_alarm.ts";
import { recordRunStatus, recordStep } from "./transitions.ts";
import { endedRuns, toWriteOp, Txn } from "./txn.ts";
import type { AnyWorkflow, StepDefinition } from "../steps/workflow.ts";
import { childEndedEvent } from "../steps/kinds/child.ts";

const log = getLogger(["weft", "engine"]);

/** What a {@linkcode Scheduler} works with; the engine builds and owns each of them. */
export interface SchedulerOptions {
  /** The workflows served, by name. */
  workflows: ReadonlyMap<string, AnyWorkflow>;
  /** Reads of runs, for loading a run to carry it on. */
  store: RunStore;
  /** The key layout. */
  keys: KeyLayout;
  /** Every write goes through it. */
  batcher: CommitBatcher;
  /** The concurrency caps. */
  slots: Slots;
  /** Where committed transitions are announced. */
  events: EventHub;
  /** The source of time. */
  clock: Clock;
  /** Random numbers in [0, 1) for backoff jitter. */
  random: () => number;
  /** Largest step output stored, in bytes of JSON. */
  maxOutputBytes: number;
  /** Whether the KV queue carries sweep messages (and the engine listens to it). */
  useQueue: boolean;
  /** The kinds of step, by name: what a step's events mean. */
  kinds: ReadonlyMap<string, StepKind>;
  /** Callers of `result()`, resolved when this worker ends their run. */
  waiters: WaiterRegistry;
  /** This worker's id: the owner of the leases it writes. */
  owner(): string;
  /** Claims of due work, told when this worker makes work due. */
  dispatch: {
    /** A run of this worker's is due at `dueAt`. */
    wakeAt(dueAt: number): void;
    /** A slot is free: claim if anything may be due. */
    nudge(): void;
  };
  /** What a child run's end and a parent's cancel ask of the engine, once on disk. */
  children: {
    /** A child of `parentRunId` ended: deliver its mailbox to whoever holds it. */
    ended(parentRunId: string): void;
    /** Cancel a child run (its parent was cancelled or failed). */
    cancel(childRunId: string, reason: string): void;
  };
  /**
   * Runs held with nothing in flight, waiting for a slot, beyond which a run
   * goes back to the due index instead (its steps wait on disk only).
   */
  maxIdleRuns: () => number;
  /** Counts step bodies and reloads as work in flight. @default {undefined} */
  activity?: Activity;
  /** Spans of step attempts. @default {undefined} (none) */
  tracing?: Tracing;
  /** Resolves once the store takes writes again after a full disk. @default {at once} */
  whenWritable?: () => Promise<void>;
  /** Whether sweep messages may be enqueued now (free space is above the reserve). @default {always} */
  queueAllowed?: () => boolean;
  /** Checked just before each step body starts. @default {always fresh} */
  lease?: LeaseCheck;
}

/** How long a run of a workflow this worker does not serve waits before it is offered again. */
const UNSERVED_RETRY_MS = 10_000;
/** How long a run that could not be read waits before it is tried again. */
const UNREADABLE_RETRY_MS = 60_000;

/**
 * Holds the unfinished runs of one engine and moves them on. Built by
 * `createEngine`, which is where to look for an example.
 */
export class Scheduler {
  readonly #defs: ReadonlyMap<string, AnyWorkflow>;
  readonly #store: RunStore;
  readonly #keys: KeyLayout;
  readonly #batcher: CommitBatcher;
  readonly #slots: Slots;
  readonly #events: EventHub;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #waiters: WaiterRegistry;
  readonly #kinds: ReadonlyMap<string, StepKind>;
  readonly #owner: () => string;
  /**
   * Times this worker learned it was fenced and dropped everything. A run
   * created or loaded under an earlier fence is never written: in the gap
   * until the new registration lands its writes fail on the old fence, and
   * after it they are refused before they are sent.
   */
  #fencesLearned = 0;
  /** The fence this worker last learned was broken: nothing is loaded under it. */
  #brokenFence: Fence | undefined;
  readonly #dispatch: SchedulerOptions["dispatch"];
  readonly #maxIdleRuns: () => number;
  readonly #children: SchedulerOptions["children"];
  /** Runs held with at least one step waiting for a slot (what `maxIdleRuns` bounds). */
  #queuedRuns = 0;
  readonly #leases: RunLeases;
  readonly #launch: LaunchOptions;
  readonly #live = new Map<string, LiveRun>();
  readonly #ulid = monotonicFactory();
  #closing = false;
  readonly #grace: GracePeriod;
  #stopped = false;
  #pumpScheduled = false;
  /** Map items whose attempts the reload in progress abandoned, by run. */
  readonly #reloadedItems = new Map<string, ReadonlySet<string>>();
  readonly #reloads: RunReloads;
  readonly #alarm: SweepAlarm;
  readonly #timers: StepTimers;
  readonly #activity: Activity | undefined;

  /** Creates a scheduler holding no run yet. */
  constructor(options: SchedulerOptions) {
    this.#defs = options.workflows;
    this.#store = options.store;
    this.#keys = options.keys;
    this.#batcher = options.batcher;
    this.#slots = options.slots;
    this.#events = options.events;
    this.#clock = options.clock;
    this.#random = options.random;
    this.#timers = new StepTimers(options.clock);
    this.#alarm = new SweepAlarm({
      enabled: options.useQueue,
      allowed: options.queueAllowed,
      clock: options.clock,
    });
    this.#waiters = options.waiters;
    this.#kinds = options.kinds;
    this.#owner = options.owner;
    this.#dispatch = options.dispatch;
    this.#maxIdleRuns = options.maxIdleRuns;
    this.#children = options.children;
    this.#launch = {
      clock: options.clock,
      batcher: options.batcher,
      keys: options.keys,
      maxOutputBytes: options.maxOutputBytes,
      stopped: () => this.#stopped,
      settle: (t, result) => this.#settle(t.live, t.step, t.running, result),
      activity: options.activity,
      tracing: options.tracing,
      lease: options.lease,
      deadlines: new Deadlines(options.clock),
    };
    this.#activity = options.activity;
    this.#grace = new GracePeriod(options.clock);
    this.#reloads = new RunReloads({
      forget: (live) => this.#forget(live),
      resume: (runId, abandoned) => this.resume(runId, abandoned),
      lastWrite: (runId) => this.#live.get(runId)?.lastCommit ?? Promise.resolve(),
      closing: () => this.#closing,
      whenWritable: options.whenWritable ?? (() => Promise.resolve()),
      rejectWaiters: (runId, reason) => this.#waiters.reject(runId, reason),
      activity: options.activity,
    });
    this.#leases = new RunLeases({
      clock: options.clock,
      maxIdleRuns: options.maxIdleRuns,
      queuedRuns: () => this.#queuedRuns,
      closing: () => this.#closing,
      dueAt: (step, rec) => this.#kindOf(step).dueAt(rec),
      forget: (live) => this.#forget(live),
      planSweep: (txn, dueAt) => this.#planSweep(txn, dueAt),
      wakeAt: (dueAt) => this.#dispatch.wakeAt(dueAt),
    });
  }

  /** The unfinished runs held, by id. */
  get runs(): ReadonlyMap<string, LiveRun> {
    return this.#live;
  }

  /** Runs held with a step waiting for a slot. */
  get queuedRuns(): number {
    return this.#queuedRuns;
  }

  /** Whether `shutdown()` was called: nothing new starts. */
  get closing(): boolean {
    return this.#closing;
  }

  // ---------------------------------------------------------------- creating and ending runs

  /**
   * Stores a new run of `def` and starts its first steps. Resolves with its
   * summary once committed, or `undefined` when another writer took the
   * idempotency key first (the run is then dropped).
   */
  async create(
    def: AnyWorkflow,
    inputJson: string,
    options: { idempotencyKey?: string; trace?: RunTrace } = {},
  ): Promise<RunSummary | undefined> {
    const txn = new Txn();
    const live = this.#newRun(txn, def, inputJson, options);
    const summary = summarize(live.record);
    const ok = await this.#commit(txn);
    if (!ok) {
      // Another writer took the idempotency key first: undo; the caller returns its run.
      this.#forget(live);
      return undefined;
    }
    summary.status = live.record.status;
    return summary;
  }

  /** Records a new run of `def` in `txn`, held by this worker, and starts its first steps. */
  #newRun(
    txn: Txn,
    def: AnyWorkflow,
    inputJson: string,
    options: { idempotencyKey?: string; parent?: RunRecord["parent"]; trace?: RunTrace },
  ): LiveRun {
    const { idempotencyKey } = options;
    const now = this.#clock.now();
    const id = this.#ulid(now);
    const input = JSON.parse(inputJson);
    const record: RunRecord = { id, workflow: def.name, status: "pending", createdAt: now };
    if (options.parent) record.parent = options.parent;
    if (inputJson.length <= INLINE_OUTPUT_BYTES) {
      record.input = input;
    } else {
      const chunks = splitJson(inputJson);
      record.inputChunks = chunks.length;
      record.inputBytes = chunks.reduce((n, c) => n + c.byteLength, 0);
      chunks.forEach((c, i) => txn.extraSets.push([this.#keys.inputChunk(id, i), c]));
    }
    if (idempotencyKey !== undefined) record.idempotencyKey = idempotencyKey;
    if (options.trace) record.trace = options.trace;
    const live = newLiveRun(def, {
      record,
      input,
      steps: new Map(
        def.steps.map((s) => [s.name, { status: "pending", attempts: 0, errors: [] }]),
      ),
      results: new Map(),
      nextSeq: 0,
    });
    live.fence = this.#batcher.fence;
    this.#live.set(id, live);
    txn.runs.set(live, { fromStatus: null, idem: idempotencyKey });
    live.nextSeq++;
    txn.record(live, creationEvent(record));
    for (const s of def.steps) this.#evaluate(txn, live, s);
    this.#checkComplete(txn, live);
    txn.consider(live);
    return live;
  }

  /**
   * Ends a live, unfinished run as cancelled (after its compensations);
   * resolves with its snapshot once committed. A run already compensating
   * carries on as it is.
   */
  async cancel(live: LiveRun, reason: string): Promise<RunSnapshot> {
    const txn = new Txn();
    this.#endRun(txn, live, "cancelled", { name: "RunCancelledError", message: reason });
    const snapshot = liveSnapshot(live);
    await this.#commit(txn);
    return snapshot;
  }

  /**
   * Stops taking work, waits up to `graceMs` for attempts in flight, writes
   * the rest back as due, rejects every waiter, drops every run, and flushes
   * every pending write.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.#closing = true;
    if (this.#runningCount() > 0) await this.#grace.wait(graceMs);
    // Attempts still running are abandoned: they are written back as due
    // now, without counting against maxAttempts, so the next start reruns
    // them and a deploy costs no step an attempt.
    const txn = new Txn();
    writeBackRunning(txn, this.#live.values(), {
      clock: this.#clock,
      finishAttempt: (live, step, running) => this.#finishAttempt(live, step, running),
    });
    // Every run held goes back to the due index, so any worker (this one's
    // next start included) carries it on at once, without waiting for this
    // worker to be declared dead.
    this.#leases.unpinAll();
    for (const live of [...this.#live.values()]) this.#leases.release(txn, live);
    await this.#commit(txn).catch(() => {});
    await this.#batcher.drain();
    this.#stopped = true;
    const closed = new EngineClosedError();
    for (const live of this.#live.values()) this.#timers.clearAll(live);
    this.#waiters.rejectAll(closed);
    this.#live.clear();
    await this.#batcher.drain();
  }

  /**
   * Ends the grace period of a `shutdown` now (or makes the coming one
   * empty): the attempts still running are written back as it does.
   */
  endGrace(): void {
    this.#grace.end();
  }

  /**
   * Drops every run held, writing nothing: this worker was fenced, and the
   * worker that fenced it gives its runs to whoever claims them.
   */
  dropAll(): void {
    this.#fencesLearned++;
    this.#brokenFence = this.#batcher.fence;
    this.#leases.unpinAll();
    for (const live of [...this.#live.values()]) this.#forget(live);
    this.#live.clear();
    this.#alarm.forget();
  }

  // ---------------------------------------------------------------- recovery

  /**
   * Loads a run this worker has leased (claimed from the due index, or held
   * before a failed write) and carries it on. Resolves with the run if this
   * worker now holds it. With `pin`, the run stays in memory even if it only
   * waits (a cancel acts on it next).
   */
  async resume(
    runId: string,
    abandoned: ReadonlySet<string> = new Set(),
    options: {
      pin?: boolean;
      nextSeq?: number | undefined;
      workflow?: string | undefined;
      txn?: Txn;
    } = {},
  ): Promise<LiveRun | undefined> {
    const owner = this.#owner();
    const fence = this.#batcher.fence;
    const learned = this.#fencesLearned;
    // Whether no fence was learned since the load began (a new registration
    // only ever follows one).
    const unchanged = () => this.#fencesLearned === learned;
    // Until the new registration lands, a load would read under a fence
    // known to be broken: nothing it read could be written.
    if (fence !== undefined && fence === this.#brokenFence) throw new FencedError(owner);
    // A run this worker already holds is never loaded twice: one copy acts.
    const held = this.#live.get(runId);
    if (held && !held.dead && held.fence === fence) return held;
    let loaded;
    try {
      loaded = await loadRun(runId, {
        store: this.#store,
        workflows: this.#defs,
        owner,
        nextSeq: options.nextSeq,
        workflow: options.workflow,
      });
    } catch (error) {
      log.error("Run {runId} could not be read; it is tried again later: {error}", {
        runId,
        error,
      });
      // Fenced meanwhile, the lease is not this worker's to give back.
      if (unchanged()) {
        await this.#putBack(runId, this.#clock.now() + UNREADABLE_RETRY_MS);
      }
      throw error;
    }
    // Fenced while reading: the lease read was the old id's, and another
    // worker may carry the run on by now. What was read is not this worker's.
    if (loaded.kind === "other" || !unchanged()) return undefined;
    if (loaded.kind === "missing" || loaded.kind === "finished") {
      // A lease without a run to carry on: drop it.
      await this.#batcher.write({
        deletes: [this.#keys.held(runId)],
      });
      return undefined;
    }
    if (loaded.kind === "unserved") {
      log.warn("Run {runId} of workflow {workflow} is not served here; offered again later", {
        runId,
        workflow: loaded.record.workflow,
      });
      await this.#putBack(runId, this.#clock.now() + UNSERVED_RETRY_MS);
      return undefined;
    }
    const { live } = loaded;
    live.fence = fence;
    const { def, steps } = live;
    const other = this.#live.get(runId);
    if (other && !other.dead && other.fence === fence) return other;
    this.#live.set(runId, live);
    if (options.pin) this.#leases.pin(live);
    const txn = options.txn ?? new Txn();
    // What was loaded: a step that an earlier one's recovery changed (a sleep
    // that ended starts the steps that need it) is not recovered again.
    const asLoaded = new Map(steps);
    for (const s of def.steps) {
      if (isTerminalRun(live.record.status)) break;
      const rec = steps.get(s.name)!;
      if (rec !== asLoaded.get(s.name)) continue;
      if (rec.status === "running") {
        log.warn("Recovering step {step} of run {runId}: attempt {attempt} was interrupted", {
          workflow: def.name,
          runId,
          step: s.name,
          attempt: rec.attempts,
        });
      }
      if (rec.status === "pending") {
        this.#evaluate(txn, live, s);
      } else if (!isTerminalStep(rec.status)) {
        this.#reloadedItems.set(runId, abandoned);
        try {
          this.#kindOf(s).recover(this.#ctx(txn, live, s), { reloaded: abandoned.has(s.name) });
        } finally {
          this.#reloadedItems.delete(runId);
        }
      }
    }
    this.#checkComplete(txn, live);
    txn.consider(live);
    if (options.txn) return live;
    await this.#commit(txn);
    return this.#live.get(runId) === live ? live : undefined;
  }

  /**
   * Adds events read from the run's mailbox to the held run, and lets its
   * waiting steps look at them; resolves once that is committed.
   */
  async deliver(live: LiveRun, events: readonly RunEvent[]): Promise<void> {
    if (live.dead || isTerminalRun(live.record.status)) return;
    const known = new Set(live.mailbox.map((e) => e.id));
    for (const e of events) if (!known.has(e.id) && !live.taken?.has(e.id)) live.mailbox.push(e);
    live.mailbox.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    const txn = new Txn();
    for (const s of live.def.steps) {
      if (live.steps.get(s.name)!.status !== "awaiting") continue;
      this.#kindOf(s).eventArrived?.(this.#ctx(txn, live, s));
    }
    txn.consider(live);
    await this.#commit(txn);
  }

  /**
   * Loads runs just claimed and carries them all on in one write: a round
   * of claims costs one commit, not one per run.
   */
  async resumeClaimed(
    claims: readonly { runId: string; nextSeq?: number; workflow?: string }[],
  ): Promise<void> {
    const txn = new Txn();
    await Promise.all(
      claims.map((c) =>
        this.resume(c.runId, new Set(), { nextSeq: c.nextSeq, workflow: c.workflow, txn })
          .catch(() => undefined)
      ),
    );
    await this.#commit(txn);
  }

  /** Gives a leased run that is not held in memory back to the due index. */
  async #putBack(runId: string, dueAt: number): Promise<void> {
    const txn = new Txn();
    this.#planSweep(txn, dueAt);
    await this.#batcher.write({
      deletes: [this.#keys.held(runId)],
      sets: [[this.#keys.active(runId), { dueAt }], [this.#keys.due(dueAt, runId), true]],
      enqueues: txn.enqueues,
    });
    this.#dispatch.wakeAt(dueAt);
  }

  // ---------------------------------------------------------------- scheduling

  /**
   * Starts `step` in this write if a slot is free and no other work waits
   * for one; otherwise queues it (FIFO) for a slot once this write is on disk.
   */
  #tryStart(txn: Txn, live: LiveRun, step: StepDefinition): void {
    if (this.#closing || isTerminalRun(live.record.status)) return;
    if (live.running.has(step.name) || live.queued.has(step.name)) return;
    // A map's items share their step's cap.
    const capKey = `${live.def.name}/${step.itemOf?.map ?? step.name}`;
    if (this.#slots.waiting === 0 && this.#slots.tryAcquire(capKey, step.concurrency)) {
      this.#beginAttempt(txn, live, step, capKey);
      return;
    }
    txn.gate(live);
    if (live.queued.size === 0) this.#queuedRuns++;
    live.queued.set(step.name, txn.status);
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
    this.#recordStep(txn, live, { step: step.name, next, attempt, at: this.#clock.now() });
    const running: RunningAttempt = {
      attempt,
      controller: new AbortController(),
      startedAt: now,
      capKey,
    };
    live.running.set(step.name, running);
    // The body runs only once its attempt is on disk, so a crash at any
    // moment finds the attempt recorded and reruns it as a new one.
    txn.after.push(() => launchAttempt({ live, step, running }, this.#launch));
  }

  /** Gives the attempt's slot back; true if it was still the current attempt. */
  #finishAttempt(live: LiveRun, step: string, running?: RunningAttempt): boolean {
    const current = live.running.get(step);
    if (!current || (running && current !== running)) return false;
    live.running.delete(step);
    this.#slots.release(current.capKey);
    this.#schedulePump();
    if (this.#runningCount() === 0) this.#grace.idle();
    return true;
  }

  /** Commits an attempt's end, as its step's kind decides. */
  #settle(
    live: LiveRun,
    step: StepDefinition,
    running: RunningAttempt,
    result: AttemptResult,
  ): void {
    if (this.#stopped || !this.#finishAttempt(live, step.name, running)) return;
    if (isTerminalRun(live.record.status)) return;
    const txn = new Txn();
    this.#kindOf(step).attemptEnded(
      this.#ctx(txn, live, step),
      running.attempt,
      result.ok
        ? { ok: true, output: result.encoded.ref, value: result.encoded.value }
        : { ok: false, error: result.error },
    );
    this.#background(txn);
  }

  // ---------------------------------------------------------------- step kinds

  #kindOf(step: StepDefinition): StepKind {
    const kind = this.#kinds.get(step.kind);
    if (!kind) throw new Error(`No step kind '${step.kind}' (step '${step.name}')`);
    return kind;
  }

  /** What a step's kind may do to it, recorded in `txn`. */
  #ctx(txn: Txn, live: LiveRun, step: StepDefinition): StepKindContext {
    return new KindContext(this.#kindOps, txn, live, step);
  }

  /** What every {@linkcode KindContext} of this scheduler reaches of it. */
  readonly #kindOps: KindOps = {
    now: () => this.#clock.now(),
    random: () => this.#random(),
    resultsOf: (live, names) => this.#resultsOf(live, names),
    recordStep: (txn, live, change) => this.#recordStep(txn, live, change),
    tryStart: (txn, live, step) => this.#tryStart(txn, live, step),
    startChild: (txn, live, step, childDef, input) => {
      // The served definition of that name (a test may serve a stubbed copy).
      const def = this.#defs.get(childDef.name);
      if (!def) {
        throw new Error(`this engine does not serve the child's workflow '${childDef.name}'`);
      }
      const child = this.#newRun(txn, def, JSON.stringify(input) ?? "null", {
        parent: { runId: live.record.id, step: step.name },
        // A child's spans belong to its parent's trace.
        ...(live.record.trace ? { trace: live.record.trace } : {}),
      });
      return child.record.id;
    },
    armTimer: (txn, live, step, atMs) => this.#armTimer(txn, live, step, atMs),
    eventKey: (runId, eventId) => this.#keys.event(runId, eventId),
    itemEnded: (txn, live, item, outcome) => this.#itemEnded(txn, live, item, outcome),
    resolved: (txn, live, step) => this.#resolved(txn, live, step),
    items: (txn, live, map) => this.#itemsCtx(txn, live, map),
    failRun: (txn, live, error, step) => this.#endRun(txn, live, "failed", error, step),
  };

  /** A step's definition, or a map item's, by name. */
  #stepDef(live: LiveRun, name: string): StepDefinition | undefined {
    return live.def.getStep(name) ?? live.itemDefs?.get(name);
  }

  /** An item of a map step ended for good: its map step decides what follows. */
  #itemEnded(
    txn: Txn,
    live: LiveRun,
    item: StepDefinition,
    outcome: { ok: true } | { ok: false; error: ErrorData },
  ): void {
    const map = live.def.getStep(item.itemOf!.map)!;
    this.#kindOf(map).itemEnded?.(this.#ctx(txn, live, map), item.itemOf!.index, outcome);
  }

  /** The definition item `index` of map step `map` runs as: a task whose body gets the item. */
  #itemDef(live: LiveRun, map: StepDefinition, index: number): StepDefinition {
    const name = itemName(map.name, index);
    const known = live.itemDefs?.get(name);
    if (known) return known;
    const item = live.mapItems?.get(map.name)?.[index];
    const def: StepDefinition = Object.freeze({
      name,
      kind: "task" as const,
      phase: "forward" as const,
      needs: Object.freeze([]),
      reads: map.needs,
      skippedNeeds: "run" as const,
      timeoutMs: map.timeoutMs,
      retry: map.retry,
      concurrency: Infinity,
      itemOf: Object.freeze({ map: map.name, index }),
      // deno-lint-ignore no-explicit-any
      fn: (ctx: any) => map.fn({ ...ctx, item, index, step: map.name }),
    });
    (live.itemDefs ??= new Map()).set(name, def);
    return def;
  }

  /** What a map step may do with its items, in `txn`. */
  #itemsCtx(txn: Txn, live: LiveRun, map: StepDefinition): MapItemsContext {
    if (map.kind !== "map") throw new Error(`Step '${map.name}' is not a map step`);
    const runId = live.record.id;
    return {
      store: (items) => {
        (live.mapItems ??= new Map()).set(map.name, items);
        splitJson(JSON.stringify(items)).forEach((chunk, i) =>
          txn.extraSets.push([this.#keys.mapInput(runId, map.name, i), chunk])
        );
      },
      count: () => live.mapItems?.get(map.name)?.length ?? 0,
      record: (index) => live.steps.get(itemName(map.name, index)),
      value: (index) => live.results.get(itemName(map.name, index)),
      start: (index) => {
        const def = this.#itemDef(live, map, index);
        const rec: StepRecord = { status: "pending", attempts: 0, errors: [] };
        live.steps.set(def.name, rec);
        this.#kindOf(def).ready(this.#ctx(txn, live, def));
      },
      recover: (index) => {
        const def = this.#itemDef(live, map, index);
        this.#kindOf(def).recover(this.#ctx(txn, live, def), {
          reloaded: this.#reloadedItems.get(runId)?.has(def.name) ?? false,
        });
      },
    };
  }

  /** The committed results of `names` (absent for a skipped step). */
  #resultsOf(live: LiveRun, names: readonly string[]): Record<string, unknown> {
    const results: Record<string, unknown> = {};
    for (const n of names) if (live.results.has(n)) results[n] = live.results.get(n);
    return results;
  }

  /** Records a step's change; a run's first step to leave `pending` starts the run. */
  #recordStep(txn: Txn, live: LiveRun, change: Parameters<typeof recordStep>[2]): void {
    recordStep(txn, live, change);
    if (live.record.status === "pending" && change.next.status !== "skipped") {
      recordRunStatus(txn, live, { to: "running", at: change.at });
    }
  }

  /**
   * Starts `step` if it is pending and may start: skipped when a step it
   * needs was skipped or its condition is false, failed (and the run with
   * it) when its condition throws, else handed to its kind.
   */
  #evaluate(txn: Txn, live: LiveRun, step: StepDefinition): void {
    if (isTerminalRun(live.record.status)) return;
    const rec = live.steps.get(step.name)!;
    if (rec.status !== "pending") return;
    const r = readiness(live, step);
    if (r.kind === "wait") return;
    if (r.kind === "skip") return this.#skip(txn, live, step, r.reason);
    if (step.when) {
      let holds: unknown;
      try {
        holds = step.when({ input: live.input, results: this.#resultsOf(live, step.needs) });
      } catch (e) {
        const error = toErrorData(e);
        this.#recordStep(txn, live, {
          step: step.name,
          next: {
            ...rec,
            status: transitionStep(rec.status, "failed"),
            finishedAt: this.#clock.now(),
          },
          attempt: 0,
          error,
          at: this.#clock.now(),
        });
        return this.#endRun(txn, live, "failed", {
          name: "StepFailedError",
          message: `Step '${step.name}' failed: its condition threw: ${error.message}`,
          details: { step: step.name, attempt: 0 },
          cause: error,
        }, step.name);
      }
      if (holds !== true) {
        const reason = holds === false
          ? "its condition is false"
          : `its condition returned ${JSON.stringify(holds) ?? String(holds)}, not true`;
        return this.#skip(txn, live, step, reason);
      }
    }
    this.#kindOf(step).ready(this.#ctx(txn, live, step));
  }

  #skip(txn: Txn, live: LiveRun, step: StepDefinition, reason: string): void {
    const rec = live.steps.get(step.name)!;
    recordStep(txn, live, {
      step: step.name,
      next: { ...rec, status: transitionStep(rec.status, "skipped"), skipReason: reason },
      attempt: rec.attempts,
      at: this.#clock.now(),
    });
    this.#resolved(txn, live, step);
  }

  /** A step ended: the steps that need it may start, and the run may be done. */
  #resolved(txn: Txn, live: LiveRun, step: StepDefinition): void {
    for (const child of live.def.steps) {
      if (child.needs.includes(step.name)) this.#evaluate(txn, live, child);
    }
    this.#checkComplete(txn, live);
  }

  /** Ends the run if its steps say it is done (succeeded, or compensated). */
  #checkComplete(txn: Txn, live: LiveRun): void {
    if (isTerminalRun(live.record.status)) return;
    const outcome = runOutcome(live);
    if (outcome === undefined) return;
    const now = this.#clock.now();
    if (outcome === "succeeded") {
      // Compensations never run: they end skipped, with the run.
      for (const s of live.def.steps) {
        const rec = live.steps.get(s.name)!;
        if (s.phase !== "compensation" || rec.status !== "pending") continue;
        recordStep(txn, live, {
          step: s.name,
          next: { ...rec, status: "skipped", skipReason: "the run succeeded" },
          attempt: 0,
          at: now,
        });
      }
      return recordRunStatus(txn, live, { to: "succeeded", at: now });
    }
    const { endsAs = "failed", ...record } = live.record;
    let error = record.error;
    if (live.failedCompensations && live.failedCompensations.size > 0 && error) {
      const names = [...live.failedCompensations];
      error = {
        ...error,
        message: `${error.message} (compensation${names.length === 1 ? "" : "s"} ${
          names.map((n) => `'${n}'`).join(", ")
        } failed too)`,
        details: { ...error.details, failedCompensations: names },
      };
    }
    live.record = { ...record, ...(error ? { error } : {}) };
    recordRunStatus(txn, live, { to: endsAs, error, at: now });
  }

  /**
   * Calls the step kind's `timerDue` at `dueAt` (absolute, so a late arm or
   * a restart keeps the schedule): at once if it is due, else from an
   * in-process timer while the run is held, with the KV queue's alarm and
   * the due index as the backup once it is not.
   */
  #armTimer(txn: Txn, live: LiveRun, step: StepDefinition, dueAt: number): void {
    if (this.#closing) return;
    if (dueAt <= this.#clock.now()) {
      return this.#kindOf(step).timerDue(this.#ctx(txn, live, step));
    }
    this.#planSweep(txn, dueAt);
    txn.after.push(() => {
      if (this.#closing || live.dead) return;
      this.#timers.arm(live, step.name, dueAt, () => this.#timerDue(live, step));
    });
  }

  /** Makes sure a sweep message, written with `txn`, comes no later than `dueAt` (see `SweepAlarm`). */
  #planSweep(txn: Txn, dueAt: number): void {
    if (!this.#closing) this.#alarm.plan(txn.enqueues, dueAt);
  }

  #timerDue(live: LiveRun, step: StepDefinition): void {
    if (this.#closing || this.#live.get(live.record.id) !== live) return;
    if (isTerminalStep(live.steps.get(step.name)!.status)) return;
    const txn = new Txn();
    this.#kindOf(step).timerDue(this.#ctx(txn, live, step));
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
    // A compensating run is ending already: its compensations carry on.
    if (live.record.status === "compensating") return;
    const now = this.#clock.now();
    for (const s of stepsOf(live)) {
      const rec = live.steps.get(s.name)!;
      if (isTerminalStep(rec.status) || s.phase === "compensation") continue;
      const running = live.running.get(s.name);
      if (running) {
        this.#finishAttempt(live, s.name, running);
        running.controller.abort(
          new StepCancelledError(s.name, status === "cancelled" ? "run cancelled" : "run failed"),
        );
      }
      this.#timers.clear(live, s.name);
      if (rec.status === "awaiting" && rec.childRunId !== undefined) {
        // Cancelling the parent cancels the child, once this write is on disk.
        const childRunId = rec.childRunId;
        txn.after.push(() => this.#children.cancel(childRunId, `parent run ${status}`));
      }
      const to: StepStatus = rec.status === "pending" ? "skipped" : "cancelled";
      const next: StepRecord = { ...rec, status: transitionStep(rec.status, to), finishedAt: now };
      if (to === "skipped") next.skipReason = "the run ended first";
      recordStep(txn, live, { step: s.name, next, attempt: rec.attempts, at: this.#clock.now() });
    }
    for (const step of live.queued.keys()) this.#slots.forget(live.record.id, step);
    if (live.queued.size > 0) this.#queuedRuns--;
    live.queued.clear();
    live.record = { ...live.record, error };
    if (failedStep) live.record.failedStep = failedStep;
    if (!live.def.steps.some((s) => s.phase === "compensation")) {
      return recordRunStatus(txn, live, { to: status, error, at: this.#clock.now() });
    }
    // Compensations of the steps that succeeded run first, in reverse
    // dependency order, then `onFailure`; the run ends once they have.
    live.record.endsAs = status;
    recordRunStatus(txn, live, { to: "compensating", error, at: this.#clock.now() });
    for (const s of live.def.steps) if (s.phase === "compensation") this.#evaluate(txn, live, s);
    this.#checkComplete(txn, live);
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
        this.#live.get(r.runId)?.queued.get(r.step)?.durable ?? true
      );
      // Fewer than half the idle runs kept are left: claim more, in a batch.
      if (this.#queuedRuns * 2 <= this.#maxIdleRuns() && this.#slots.inUse < this.#slots.max) {
        this.#dispatch.nudge();
      }
      if (granted.length === 0) return;
      const txn = new Txn();
      for (const g of granted) {
        const live = this.#live.get(g.runId);
        const step = live && this.#stepDef(live, g.step);
        if (!live || !step || !live.queued.delete(g.step) || isTerminalRun(live.record.status)) {
          this.#slots.release(g.capKey);
          continue;
        }
        if (live.queued.size === 0) this.#queuedRuns--;
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

  /**
   * Handles a message from the KV queue: the durable alarm. The due index,
   * not the message, says what runs; the message only makes sure a claim
   * round happens even if this process's timers were lost.
   */
  onQueueMessage(message: unknown): void {
    if (this.#closing) return;
    const parsed = queueMessageSchema.safeParse(message);
    if (!parsed.success) {
      log.warn("Ignored a queue message that is not Weft's: {issues}", {
        issues: parsed.error.issues,
      });
      return;
    }
    const now = this.#clock.now();
    this.#alarm.arrived(now);
    // Held runs' timers may be lost too: fire those that are due.
    for (const live of [...this.#live.values()]) {
      for (const name of this.#timers.armed(live)) {
        const step = this.#stepDef(live, name);
        if (!step) continue;
        const due = this.#kindOf(step).dueAt(live.steps.get(name)!);
        if (due === undefined || due > now) continue;
        this.#timers.clear(live, name);
        this.#timerDue(live, step);
      }
    }
    this.#dispatch.wakeAt(now);
  }

  // ---------------------------------------------------------------- commits

  /** Writes a transaction; effects run only once it is durable. */
  async #commit(txn: Txn): Promise<boolean> {
    this.#refuseStale(txn);
    this.#leases.settle(txn);
    if (txn.empty) {
      txn.status.durable = true;
      for (const fn of txn.after) fn();
      return true;
    }
    // Which runs this write ends is read now: it is what the write holds.
    const terminal = endedRuns(txn);
    for (const live of terminal) this.#tellParent(txn, live);
    const op = toWriteOp(txn, this.#keys, this.#owner());
    const touched = new Set(txn.runs.keys());
    for (const live of txn.steps.keys()) touched.add(live);
    const write = this.#batcher.write(op);
    for (const live of touched) {
      live.uncommitted++;
      live.lastCommit = write;
    }
    let ok: boolean;
    try {
      ok = await write;
    } catch (error) {
      for (const live of touched) live.uncommitted--;
      if (error instanceof FencedError) {
        // A fenced worker's runs are no longer its own: nothing to reload.
        // Those read after it dropped everything, before it learned why
        // its writes fail, go too.
        for (const live of txn.allRuns) this.#forget(live);
        throw error;
      }
      log.error("A KV commit failed; affected runs are reloaded from KV: {error}", { error });
      if (txn.enqueues.length > 0) this.#alarm.forget();
      // Runs whose queued steps wait for this write to be durable are reloaded
      // too, or they would wait for ever.
      const affected = new Set(touched);
      for (const live of txn.gated) affected.add(live);
      for (const live of affected) this.#reloads.reload(live, error, txn.steps.get(live));
      throw error;
    }
    for (const live of touched) {
      live.uncommitted--;
      // A settled write holds its commit's result: let it go.
      if (live.lastCommit === write) live.lastCommit = NO_WRITE;
    }
    if (!ok) {
      if (txn.enqueues.length > 0) this.#alarm.forget();
      return false;
    }
    txn.status.durable = true;
    this.#reloads.committed(touched);
    for (const fn of txn.after) fn();
    for (const live of txn.history.keys()) {
      for (const event of txn.history.get(live)!) {
        this.#events.emit({ runId: live.record.id, workflow: live.def.name, event }, {
          trace: live.record.trace,
        });
      }
    }
    for (const live of terminal) {
      const parent = live.record.parent;
      if (parent) this.#children.ended(parent.runId);
      if (this.#live.get(live.record.id) === live) this.#live.delete(live.record.id);
      this.#leases.unpin(live);
      if (this.#waiters.has(live.record.id)) {
        this.#waiters.resolve(live.record.id, liveSnapshot(live));
      }
    }
    return true;
  }

  /**
   * Puts a child run's outcome in its parent's mailbox, in the write that
   * ends the child: the parent's child step takes it from there.
   */
  #tellParent(txn: Txn, live: LiveRun): void {
    const parent = live.record.parent;
    if (!parent) return;
    const outcome: Record<string, unknown> = { runId: live.record.id, status: live.record.status };
    if (live.record.status === "succeeded") {
      outcome.results = this.#resultsOf(live, live.def.forwardSteps.map((s) => s.name));
    } else if (live.record.error) outcome.error = live.record.error;
    let value: RunEvent | Omit<RunEvent, "id"> = {
      event: childEndedEvent(parent.step),
      payload: outcome,
      at: this.#clock.now(),
    };
    // An event is one KV value: a child whose results do not fit fails its step.
    if (JSON.stringify(value).length > 60_000) {
      value = {
        ...value,
        payload: {
          runId: live.record.id,
          status: "failed",
          error: {
            name: "OutputError",
            message:
              `the child's results are too large to pass to its parent (over 60000 bytes of JSON); return less from its steps`,
          },
        },
      };
    }
    txn.extraSets.push([this.#keys.event(parent.runId, this.#ulid(this.#clock.now())), value]);
  }

  /**
   * Throws {@linkcode FencedError}, writing nothing, if the transaction
   * touches a run created or loaded under an earlier fence than this
   * worker's registration now: the new registration's fence would let that
   * write land, though the run's lease went with the old id. Such a run is
   * dropped; a run of the current registration in the same transaction is
   * reloaded from KV, as after a failed write.
   */
  #refuseStale(txn: Txn): void {
    // Until the first fence every run is of the only registration.
    if (this.#fencesLearned === 0) return;
    const fence = this.#batcher.fence;
    const all = txn.allRuns;
    let stale = false;
    for (const live of all) stale ||= live.fence !== fence;
    if (!stale) return;
    const error = new FencedError(this.#owner());
    for (const live of all) {
      if (live.fence !== fence) this.#forget(live);
      else this.#reloads.reload(live, error, txn.steps.get(live));
    }
    throw error;
  }

  /** Commits without waiting; a failure is logged and its runs reloaded by `#commit`. */
  #background(txn: Txn): void {
    this.#commit(txn).catch(() => {});
  }

  /** Drops a run from memory without writing anything. */
  #forget(live: LiveRun): void {
    live.dead = true;
    this.#leases.dropped(live);
    for (const [name, r] of live.running) {
      this.#finishAttempt(live, name, r);
      r.controller.abort(new StepCancelledError(name, "run reloaded"));
    }
    this.#timers.clearAll(live);
    for (const step of live.queued.keys()) this.#slots.forget(live.record.id, step);
    if (live.queued.size > 0) this.#queuedRuns--;
    live.queued.clear();
    if (this.#live.get(live.record.id) === live) this.#live.delete(live.record.id);
  }
}

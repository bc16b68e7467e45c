/**
 * Executes one recorded attempt of a step for a live run: gives the body its
 * context (input, results of the steps it needs, signal, logger), runs it
 * under its timeout, encodes the output and writes a large one to KV, then
 * hands the result back to the scheduler to commit. Nothing here changes the
 * run's state.
 *
 * @module
 */
import { getLogger, type Logger } from "@logtape/logtape";
import { context } from "@opentelemetry/api";
import { type Activity, BodyActivity } from "./activity.ts";
import { type Deadlines, runAttempt } from "./attempt.ts";
import { type Clock, sleepOn } from "./clock.ts";
import type { CommitBatcher } from "./commit_batcher.ts";
import type { KeyLayout } from "./keys.ts";
import type { LiveRun, RunningAttempt } from "./live_run.ts";
import { type EncodedOutput, encodeOutput } from "./output.ts";
import type { Tracing } from "./tracing.ts";
import type { StepDefinition } from "../steps/workflow.ts";

const stepLogger = getLogger(["weft", "step"]);

/** Output chunks of 60 KB per write keep each write well under KV's 800 KiB commit limit. */
const OUTPUT_CHUNKS_PER_WRITE = 8;

/** Where a step context keeps the function that builds its logger. */
const LOGGER = Symbol("weft.logger");

/**
 * The `log` of a step context: one getter shared by every context. A getter
 * written in the context's literal is a new function per attempt, and V8
 * then gives each context a hidden class of its own, made in the old
 * generation (some 1.7 KB per attempt that only a full collection frees).
 */
const LOG_PROPERTY: PropertyDescriptor = Object.freeze({
  get(this: { [LOGGER]: () => Logger }): Logger {
    return this[LOGGER]();
  },
  enumerable: true,
  configurable: true,
});

/** One attempt of one step of a live run. */
export interface AttemptTarget {
  /** The run. */
  live: LiveRun;
  /** The step. */
  step: StepDefinition;
  /** The attempt, as recorded in `live.running`. */
  running: RunningAttempt;
}

/** How an attempt ended, ready to commit: its encoded output (already on disk if large), or why it failed. */
export type AttemptResult =
  | { ok: true; encoded: EncodedOutput }
  | { ok: false; error: unknown };

/** What {@linkcode launchAttempt} needs of the engine. */
export interface LaunchOptions {
  /** The source of time, for the attempt's timeout. */
  clock: Clock;
  /** Writes the chunks of a large output. */
  batcher: CommitBatcher;
  /** The key layout, for the chunks of a large output. */
  keys: KeyLayout;
  /** Largest output stored, in bytes of JSON. */
  maxOutputBytes: number;
  /** Whether the engine has stopped: a stopped engine acts on no attempt. */
  stopped(): boolean;
  /** Commits how the attempt ended; not called for an attempt that was superseded. */
  settle(target: AttemptTarget, result: AttemptResult): void;
  /** Counts the body as work in flight while it runs, not while it sleeps. @default {undefined} */
  activity?: Activity;
  /** Keeps the attempts' timeouts. @default {a timer per attempt} */
  deadlines?: Deadlines;
  /** Gives each attempt a span. @default {undefined} (none) */
  tracing?: Tracing;
  /** Checked just before each body starts (see {@linkcode LeaseCheck}). @default {always fresh} */
  lease?: LeaseCheck;
}

/**
 * How a worker knows, just before a step body starts, that the run's lease
 * is still its own. A process frozen (SIGSTOP, a VM pause, a long GC)
 * between the commit that recorded an attempt and the call of its body may
 * have been declared dead meanwhile, and the attempt given to another
 * worker: the body must not start then.
 */
export interface LeaseCheck {
  /** True while no other worker can have declared this one dead (its last heartbeat is recent). */
  fresh(): boolean;
  /** Writes a heartbeat now; this worker's fenced handler has run if it was fenced. */
  confirm(): Promise<void>;
}

/**
 * Runs the attempt unless it is no longer the step's current one, and calls
 * `settle` with its result unless it was superseded by the time it ended.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { systemClock } from "./clock.ts";
 * import { CommitBatcher } from "./commit_batcher.ts";
 * import { keyLayout } from "./keys.ts";
 * import { newLiveRun } from "./live_run.ts";
 * import { type AttemptResult, launchAttempt } from "./step_execution.ts";
 * import { workflow } from "../steps/workflow.ts";
 * const wf = workflow("wf").step("a", ({ input }) => `hi ${input}`);
 * const live = newLiveRun(wf, {
 *   record: { id: "r", workflow: "wf", status: "running", createdAt: 0 },
 *   input: "ada",
 *   steps: new Map(),
 *   results: new Map(),
 *   nextSeq: 0,
 * });
 * const running = { attempt: 1, controller: new AbortController(), startedAt: 0, capKey: "wf/a" };
 * live.running.set("a", running);
 * const kv = await Deno.openKv(":memory:");
 * const result = await new Promise<AttemptResult>((settle) =>
 *   launchAttempt({ live, step: wf.getStep("a")!, running }, {
 *     clock: systemClock,
 *     batcher: new CommitBatcher(kv),
 *     keys: keyLayout(),
 *     maxOutputBytes: 1024,
 *     stopped: () => false,
 *     settle: (_, result) => settle(result),
 *   })
 * );
 * assert.ok(result.ok && result.encoded.value === "hi ada");
 * kv.close();
 * ```
 */
export function launchAttempt(target: AttemptTarget, options: LaunchOptions): void {
  const { live, step, running } = target;
  // Whether this is still the step's attempt, in a live engine, in a run still held.
  const current = () => !live.dead && !options.stopped() && live.running.get(step.name) === running;
  if (!current()) return;
  const { attempt, controller } = running;
  const traced = options.tracing?.startAttempt(live.record, step.name, attempt);
  // Built when the body first reads `log`: most bodies never do.
  let stepLog: Logger | undefined;
  const logger = () => {
    if (stepLog) return stepLog;
    const spanContext = traced?.span.spanContext();
    return stepLog = stepLogger.with({
      workflow: live.def.name,
      runId: live.record.id,
      step: step.name,
      attempt,
      ...(traced && traced.span.isRecording()
        ? { traceId: spanContext!.traceId, spanId: spanContext!.spanId }
        : {}),
    });
  };
  const results: Record<string, unknown> = {};
  // A skipped step's result is absent, not `undefined`.
  for (const n of step.reads ?? step.needs) {
    if (live.results.has(n)) results[n] = live.results.get(n);
  }
  const { clock, activity, lease } = options;
  // The body counts as work from its launch (it starts a microtask later)
  // until it settles, except while it sleeps.
  const busy = activity && new BodyActivity(activity);
  const sleep = (ms: number, signal: AbortSignal = controller.signal) => {
    busy?.park();
    const slept = sleepOn(clock, ms, signal);
    slept.then(() => busy?.unpark(), () => busy?.unpark());
    return slept;
  };
  const fields = {
    input: live.input,
    results,
    signal: controller.signal,
    attempt,
    runId: live.record.id,
    workflow: live.def.name,
    step: step.name,
    now: () => clock.now(),
    sleep,
    [LOGGER]: logger,
    // A compensation and `onFailure` learn why the run is ending.
    ...(step.phase === "compensation"
      ? { failedStep: live.record.failedStep, error: live.record.error }
      : {}),
  };
  const ctx = Object.defineProperty(fields, "log", LOG_PROPERTY) as typeof fields & {
    readonly log: Logger;
  };
  // The body's own spans (a fetch, say) are children of the attempt's. It
  // is bound, not wrapped: a stack it throws at once holds its frames only.
  const inContext = traced?.context;
  runAttempt({
    step: step.name,
    attempt,
    timeoutMs: step.timeoutMs,
    controller,
    clock,
    deadlines: options.deadlines,
    body: inContext ? () => context.with(inContext, step.fn, step, ctx) : step.fn.bind(step, ctx),
    onSettled: () => busy?.done(),
    // After a freeze longer than half the death timeout, a heartbeat first:
    // a fenced worker drops the run, and the body never starts.
    mayStart: lease && (() => lease.fresh() || lease.confirm().then(current)),
  }).then((outcome) => {
    if (traced) options.tracing!.endAttempt(traced.span, outcome);
    // A late result of an abandoned or superseded attempt never touches state.
    if (options.stopped() || live.running.get(step.name) !== running) return;
    if (!outcome.ok) return options.settle(target, outcome);
    let encoded: EncodedOutput;
    try {
      encoded = encodeOutput(step.name, running.attempt, outcome.value, options.maxOutputBytes);
    } catch (error) {
      return options.settle(target, { ok: false, error });
    }
    if (encoded.chunks.length === 0) return options.settle(target, { ok: true, encoded });
    // A large output goes to disk before the record that points at it, in
    // writes that each fit in one commit. An attempt that dies in between
    // leaves chunks under its own attempt number that nothing references.
    const writes: Promise<boolean>[] = [];
    for (let i = 0; i < encoded.chunks.length; i += OUTPUT_CHUNKS_PER_WRITE) {
      writes.push(options.batcher.write({
        sets: encoded.chunks.slice(i, i + OUTPUT_CHUNKS_PER_WRITE).map((chunk, j) => [
          options.keys.outputChunk(live.record.id, step.name, running.attempt, i + j),
          chunk,
        ]),
      }));
    }
    Promise.all(writes).then(
      () => options.settle(target, { ok: true, encoded }),
      (error) => options.settle(target, { ok: false, error }),
    );
  });
}

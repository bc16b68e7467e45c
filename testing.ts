/**
 * The test kit of Weft (`weft/testing`): an engine on an in-memory KV with a
 * fake clock that only moves when the test moves it. Days of retries,
 * backoffs, timeouts and `ctx.sleep` pass in milliseconds, and every call
 * resolves once the work it caused has settled, so a test never polls.
 *
 * - {@linkcode createTestEngine} builds the engine; `advance(ms)` moves
 *   time, `runUntilIdle()` waits for work in flight, `runToEnd(id)` moves
 *   time timer by timer until a run ends.
 * - {@linkcode stub} replaces a step's body for one test.
 * - `path(id)` and {@linkcode assertPath} tell which steps ran, how they
 *   ended and after how many attempts.
 *
 * @example Test the order workflow through days of fake time
 * ```ts
 * import assert from "node:assert/strict";
 * import { RetryAfterError } from "./mod.ts";
 * import { assertPath, createTestEngine, stub } from "./testing.ts";
 * import { order } from "./workflows/order.ts";
 *
 * const DAY = 24 * 60 * 60 * 1000;
 * await using t = await createTestEngine({
 *   workflows: [order],
 *   stubs: [
 *     // The gateway is down for two days: retry once a day.
 *     stub(order, "payment", ({ attempt, input }) => {
 *       if (attempt < 3) throw new RetryAfterError("gateway down", DAY);
 *       return { charged: input.amount, transactionId: `tx-${attempt}` };
 *     }),
 *   ],
 * });
 * const run = await t.start("order", { orderId: "A1", amount: 30 });
 * await t.advance(DAY);
 * assert.equal((await t.get(run.id)).steps.payment.status, "waiting");
 * const done = await t.runToEnd(run.id);
 * assert.equal(done.status, "succeeded");
 * assertPath(await t.path(run.id), [
 *   { step: "payment", status: "succeeded", attempts: 3 },
 *   "inventory",
 *   "logistics",
 *   { step: "dispatch", status: "succeeded", attempts: 1 },
 * ]);
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  type AnyWorkflow,
  createEngine,
  type Engine,
  type EngineOptions,
  FakeClock,
  InvalidArgumentError,
  isTerminalRun,
  type RunSnapshot,
  type StartOptions,
  type StartResult,
  type StepFn,
  type StepStatus,
  type Workflow,
} from "./mod.ts";

/** A step body that replaces a step's own in a test; made by {@linkcode stub}. */
export interface StepStub {
  /** The workflow's name. */
  readonly workflow: string;
  /** The step's name. */
  readonly step: string;
  /** The body run instead of the step's own. */
  // deno-lint-ignore no-explicit-any
  readonly fn: StepFn<any, any, unknown>;
}

/**
 * A body for step `step` of `workflow`, typed like the step: it gets the
 * workflow's input and must return what the step returns. `results` holds
 * the outputs of the steps the real step needs (typed as possibly missing).
 *
 * @example
 * ```ts
 * import { stub } from "./testing.ts";
 * import { order } from "./workflows/order.ts";
 * const declined = stub(order, "payment", () => {
 *   throw new Error("declined");
 * });
 * console.assert(declined.step === "payment");
 * ```
 */
export function stub<I, R extends Record<string, unknown>, const S extends keyof R & string>(
  workflow: Workflow<I, R>,
  step: S,
  fn: StepFn<I, Partial<R>, R[S]>,
): StepStub {
  return Object.freeze({ workflow: workflow.name, step, fn });
}

/** Options of {@linkcode createTestEngine}. */
export interface TestEngineOptions {
  /** The workflows under test. */
  workflows: readonly AnyWorkflow[];
  /** Step bodies to replace, each made with {@linkcode stub}. @default {[]} */
  stubs?: readonly StepStub[];
  /** Where the fake clock starts, in epoch milliseconds. @default {Date.UTC(2026, 0, 1)} */
  startMs?: number;
  /**
   * The KV to run on; the kit closes only a KV it opened itself.
   * @default {an in-memory KV}
   */
  kv?: Deno.Kv;
  /**
   * More engine options, such as `maxConcurrentSteps`. The kit sets
   * `random` to `() => 0.5` (backoff without jitter), turns off the KV
   * queue (its delays are real time), and polls and beats once an hour of
   * fake time, which is enough for one engine alone on its KV.
   * @default {{}}
   */
  engine?: Omit<Partial<EngineOptions>, "kv" | "workflows" | "clock">;
  /**
   * How long, in real milliseconds, waiting for the engine to be idle may
   * take before it fails: a step body that waits for something other than
   * `ctx.sleep` (a promise that never settles) keeps the engine busy.
   * @default {30000}
   */
  idleTimeoutMs?: number;
}

/** One step of a run that started at least one attempt, as {@linkcode TestEngine.path} lists it. */
export interface PathEntry {
  /** The step's name. */
  step: string;
  /** Its status now. */
  status: StepStatus;
  /** Attempts started. */
  attempts: number;
  /** The error name of each failed attempt, oldest first. */
  errors: string[];
}

/** What {@linkcode assertPath} expects of one step: its name, or the fields to compare. */
export type ExpectedStep = string | ({ step: string } & Partial<Omit<PathEntry, "step">>);

/** An engine under test, on a fake clock. Dispose of it (`await using`) or call `close()`. */
export interface TestEngine extends AsyncDisposable {
  /** The engine; after {@linkcode TestEngine.restart}, the new one. */
  readonly engine: Engine;
  /** The KV it runs on. */
  readonly kv: Deno.Kv;
  /** The fake clock: `now()` is the engine's and the steps' time. */
  readonly clock: FakeClock;
  /** Starts a run (as `engine.start`), then waits until the engine is idle. */
  start(workflow: string, input: unknown, options?: StartOptions): Promise<StartResult>;
  /** A run's snapshot, as `engine.get`. */
  get(runId: string): Promise<RunSnapshot>;
  /**
   * Resolves once every commit and step body in flight has settled, without
   * moving the clock. A body waiting in `ctx.sleep` waits for the clock.
   */
  runUntilIdle(): Promise<void>;
  /**
   * Moves the clock forward by `ms`, firing each timer due on the way in
   * order (retries, timeouts, `ctx.sleep`) and letting the work it causes
   * settle before the next one fires.
   *
   * @throws {InvalidArgumentError} when `ms` is not a finite number >= 0.
   */
  advance(ms: number): Promise<void>;
  /**
   * Moves the clock timer by timer until the run is terminal; resolves
   * with its snapshot.
   *
   * @throws {Error} when the run is not terminal within `withinMs` of fake
   * time (default 30 days), or waits for nothing the clock can bring.
   */
  runToEnd(runId: string, options?: { withinMs?: number }): Promise<RunSnapshot>;
  /** The steps of a run that started an attempt, in the order of their first attempt. */
  path(runId: string): Promise<PathEntry[]>;
  /**
   * Closes the engine at once (steps in flight are abandoned, as in a
   * deploy) and opens a new one on the same KV and clock.
   */
  restart(): Promise<void>;
  /** Closes the engine, and the KV if the kit opened it. */
  close(): Promise<void>;
}

const HOUR_MS = 60 * 60 * 1000;
const DEFAULT_RUN_TO_END_MS = 30 * 24 * HOUR_MS;

/** The workflows with the stubs' bodies in place of their steps' own. */
function withStubs(
  workflows: readonly AnyWorkflow[],
  stubs: readonly StepStub[],
): AnyWorkflow[] {
  const byWorkflow = new Map<string, Map<string, StepStub>>();
  for (const s of stubs) {
    const wf = workflows.find((w) => w.name === s.workflow);
    if (!wf) {
      throw new InvalidArgumentError(
        `Cannot stub step '${s.step}' of workflow '${s.workflow}' as that workflow is not in 'workflows'`,
      );
    }
    if (!wf.getStep(s.step)) {
      throw new InvalidArgumentError(
        `Cannot stub step '${s.step}' of workflow '${s.workflow}' as it has no such step: its steps are ${
          wf.steps.map((x) => x.name).join(", ")
        }`,
      );
    }
    if (typeof s.fn !== "function") {
      throw new InvalidArgumentError(
        `Cannot stub step '${s.step}' of workflow '${s.workflow}' as the stub's body is not a function`,
      );
    }
    const own = byWorkflow.get(s.workflow) ?? new Map<string, StepStub>();
    if (own.has(s.step)) {
      throw new InvalidArgumentError(
        `Cannot stub step '${s.step}' of workflow '${s.workflow}' twice`,
      );
    }
    own.set(s.step, s);
    byWorkflow.set(s.workflow, own);
  }
  return workflows.map((wf) => {
    const own = byWorkflow.get(wf.name);
    if (!own) return wf;
    return wf.withBodies(new Map([...own].map(([name, r]) => [name, r.fn])));
  });
}

/**
 * Opens an engine for a test: an in-memory KV, a {@linkcode FakeClock}, and
 * the workflows with their stubs in place. Nothing moves until the test
 * calls `advance`, `runToEnd` or `start`.
 *
 * @throws {InvalidArgumentError} when a stub names a workflow or step that is not there.
 *
 * @example Skip an hour-long `ctx.sleep`
 * ```ts
 * import assert from "node:assert/strict";
 * import { workflow } from "./mod.ts";
 * import { createTestEngine } from "./testing.ts";
 * const HOUR = 60 * 60 * 1000;
 * // The sleep counts against the attempt's timeout.
 * const reminder = workflow("reminder")
 *   .step("wait", { timeoutMs: 2 * HOUR }, async ({ sleep, now }) => {
 *     const from = now();
 *     await sleep(HOUR);
 *     return now() - from;
 *   });
 * await using t = await createTestEngine({ workflows: [reminder] });
 * const run = await t.start("reminder", null);
 * await t.advance(HOUR);
 * const done = await t.get(run.id);
 * assert.equal(done.status, "succeeded");
 * assert.equal(done.steps.wait.output, HOUR);
 * ```
 */
export async function createTestEngine(options: TestEngineOptions): Promise<TestEngine> {
  const workflows = withStubs(options.workflows, options.stubs ?? []);
  const idleTimeoutMs = options.idleTimeoutMs ?? 30_000;
  if (!(Number.isFinite(idleTimeoutMs) && idleTimeoutMs > 0)) {
    throw new InvalidArgumentError(
      `Cannot create test engine as 'idleTimeoutMs' must be a finite number > 0: current value is ${idleTimeoutMs}`,
    );
  }
  const ownKv = options.kv === undefined;
  const kv = options.kv ?? await Deno.openKv(":memory:");
  const clock = new FakeClock(options.startMs);
  const open = () =>
    createEngine({
      random: () => 0.5,
      useQueue: false,
      pollIntervalMs: HOUR_MS,
      heartbeatIntervalMs: HOUR_MS,
      workerTimeoutMs: 3 * HOUR_MS,
      ...options.engine,
      kv,
      workflows,
      clock,
    });
  let engine = await open();
  let closed = false;

  const runUntilIdle = async () => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tooLong = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const { runningSteps } = engine.stats();
        reject(
          new Error(
            `The engine is still busy after ${idleTimeoutMs} ms of real time, with ${runningSteps} step attempt(s) in flight: a step body that waits for something other than ctx.sleep keeps it busy`,
          ),
        );
      }, idleTimeoutMs);
    });
    try {
      await Promise.race([engine.idle(), tooLong]);
    } finally {
      clearTimeout(timer);
    }
  };

  /** Fires the timers due up to `target` one due time at a time, settling in between. */
  const advanceTo = async (target: number, stop?: () => Promise<boolean>) => {
    await runUntilIdle();
    for (;;) {
      if (stop && await stop()) return;
      const next = clock.nextDueAt;
      if (next === undefined || next > target) break;
      clock.tick(Math.max(0, next - clock.now()));
      await runUntilIdle();
    }
    if (target > clock.now()) clock.tick(target - clock.now());
  };

  const t: TestEngine = {
    get engine() {
      return engine;
    },
    kv,
    clock,
    async start(workflow, input, startOptions) {
      const run = await engine.start(workflow, input, startOptions);
      await runUntilIdle();
      return run;
    },
    get: (runId) => engine.get(runId),
    runUntilIdle,
    async advance(ms) {
      if (typeof ms !== "number" || !(Number.isFinite(ms) && ms >= 0)) {
        throw new InvalidArgumentError(
          `Cannot advance the clock as 'ms' must be a finite number >= 0: current value is ${ms}`,
        );
      }
      await advanceTo(clock.now() + ms);
    },
    async runToEnd(runId, { withinMs = DEFAULT_RUN_TO_END_MS } = {}) {
      const deadline = clock.now() + withinMs;
      const ended = async () => isTerminalRun((await engine.get(runId)).status);
      await advanceTo(deadline, ended);
      const snapshot = await engine.get(runId);
      if (isTerminalRun(snapshot.status)) return snapshot;
      const waiting = Object.entries(snapshot.steps)
        .filter(([, s]) => !["succeeded", "failed", "skipped", "cancelled"].includes(s.status))
        .map(([name, s]) => `${name} (${s.status})`).join(", ");
      throw new Error(
        `Run '${runId}' is still ${snapshot.status} after ${withinMs} ms of fake time; unfinished steps: ${waiting}`,
      );
    },
    async path(runId) {
      const [history, snapshot] = await Promise.all([engine.history(runId), engine.get(runId)]);
      const order: string[] = [];
      for (const e of history) {
        if (e.type === "step" && e.to === "running" && !order.includes(e.step)) order.push(e.step);
      }
      return order.map((step) => {
        const s = snapshot.steps[step];
        return {
          step,
          status: s.status,
          attempts: s.attempts,
          errors: s.errors.map((e) => e.error.name),
        };
      });
    },
    async restart() {
      await engine.close({ graceMs: 0 });
      engine = await open();
      await runUntilIdle();
    },
    async close() {
      if (closed) return;
      closed = true;
      await engine.close({ graceMs: 0 });
      if (ownKv) kv.close();
    },
    [Symbol.asyncDispose]: () => t.close(),
  };
  await runUntilIdle();
  return t;
}

/**
 * Asserts a run's path: the steps that started an attempt, in the order of
 * their first attempt, each compared on the fields `expected` gives (a bare
 * name compares the name only).
 *
 * @throws {assert.AssertionError} naming what differs.
 *
 * @example
 * ```ts
 * import { assertPath } from "./testing.ts";
 * assertPath(
 *   [{ step: "payment", status: "succeeded", attempts: 2, errors: ["Error"] }],
 *   [{ step: "payment", attempts: 2, errors: ["Error"] }],
 * );
 * ```
 */
export function assertPath(
  actual: readonly PathEntry[],
  expected: readonly ExpectedStep[],
): void {
  const wanted = expected.map((e) => typeof e === "string" ? { step: e } : e);
  const seen = actual.map((entry, i) => {
    const keys = Object.keys(wanted[i] ?? { step: "" }) as (keyof PathEntry)[];
    return Object.fromEntries(keys.map((k) => [k, entry[k]]));
  });
  assert.deepStrictEqual(
    seen,
    wanted,
    `The run's path differs: it ran ${
      actual.map((e) => `${e.step} (${e.status}, ${e.attempts} attempt(s))`).join(" → ") ||
      "no step"
    }`,
  );
}

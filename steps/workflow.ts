/**
 * The workflow definition model: an immutable builder that declares a DAG of
 * async steps, checked when the module that defines it is loaded.
 *
 * @module
 */
import { z } from "zod";

/** One problem a schema found, as zod reports it. */
export interface SchemaIssue {
  /** The kind of problem, such as `"invalid_type"`. */
  readonly code: string;
  /** Where in the value. */
  readonly path: readonly PropertyKey[];
  /** What is wrong. */
  readonly message: string;
}

/**
 * What Weft needs of an input schema: zod's `safeParse`. Any zod schema is
 * one; the HTTP API also renders zod schemas as JSON Schema.
 */
export interface InputSchema<T> {
  /** Parses a value without throwing. */
  safeParse(
    value: unknown,
  ):
    | { success: true; data: T }
    | { success: false; error: { issues: readonly SchemaIssue[] } };
}
import { type ErrorData, WorkflowDefinitionError } from "../engine/errors.ts";
import {
  DEFAULT_RETRY,
  type ResolvedRetryPolicy,
  type RetryPolicy,
  retryPolicyProblem,
} from "../engine/retry.ts";
import { kindOptionProblems, stepOptionProblems, workflowOptionProblems } from "./options.ts";

/**
 * The logger a step gets. Records carry the run's fields; messages may use
 * LogTape's `{property}` placeholders.
 */
export interface StepLogger {
  /** Logs at debug level. */
  debug(message: string, properties?: Record<string, unknown>): void;
  /** Logs at info level. */
  info(message: string, properties?: Record<string, unknown>): void;
  /** Logs at warning level. */
  warn(message: string, properties?: Record<string, unknown>): void;
  /** Logs at error level. */
  error(message: string, properties?: Record<string, unknown>): void;
}

/** What a step function receives. */
export interface StepContext<I, R> {
  /** The run's input, as parsed by the workflow's schema. */
  input: I;
  /** The committed outputs of the steps this step `needs`, by name. */
  results: R;
  /** Aborts on timeout, cancellation, run failure or engine shutdown. */
  signal: AbortSignal;
  /** This attempt's number, 1-based. */
  attempt: number;
  /** The run's id. */
  runId: string;
  /** The workflow's name. */
  workflow: string;
  /** This step's name. */
  step: string;
  /** A logger whose records carry `workflow`, `runId`, `step` and `attempt`. */
  log: StepLogger;
  /**
   * The engine's clock in epoch milliseconds: `Date.now()` in production,
   * the fake clock under `weft/testing`.
   */
  now(): number;
  /**
   * Waits `ms` milliseconds of the engine's clock, so that a test can skip
   * the wait; rejects with the signal's reason when `signal` (by default
   * this attempt's `signal`) aborts. The wait counts against `timeoutMs`.
   */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** A step's body. Its return value must be JSON-serializable. */
export type StepFn<I, R, O> = (ctx: StepContext<I, R>) => Promise<O> | O;

/** What a step's condition (`when`) sees. */
export interface ConditionContext<I, R> {
  /** The run's input. */
  input: I;
  /** The committed outputs of the steps it `needs`. */
  results: R;
}

/** What a step's compensation receives: its step's context, and what the step returned. */
export interface CompensationContext<I, R> extends StepContext<I, R> {
  /** The committed output of the step being compensated. */
  output: unknown;
  /** The step being compensated. */
  compensates: string;
}

/** What a workflow's `onFailure` handler receives. */
export interface FailureContext<I, R> extends StepContext<I, R> {
  /** The step whose failure failed the run. */
  failedStep: string | undefined;
  /** Why the run failed. */
  error: ErrorData | undefined;
}

/** Options every kind of step takes. */
export interface CommonStepOptions<
  I = unknown,
  R = unknown,
  Needs extends readonly string[] = readonly string[],
> {
  /** Steps that must end before this one starts; only earlier steps. @default {[]} */
  needs?: Needs;
  /**
   * A condition, evaluated once when every step it needs has ended; when it
   * is false the step ends `skipped`, and so do the steps that need it
   * (unless they set `skippedNeeds: "run"`).
   */
  when?: (ctx: ConditionContext<I, R>) => boolean;
  /**
   * What this step does when a step it needs was skipped: be skipped too
   * (`"skip"`), or run anyway and see that step's result as absent (`"run"`).
   * @default {"skip"}
   */
  skippedNeeds?: "skip" | "run";
}

/** Options of one step. */
export interface StepOptions<Needs extends readonly string[] = readonly string[]> {
  /** Steps that must succeed before this one starts; only earlier steps. @default {[]} */
  needs?: Needs;
  /** See {@linkcode CommonStepOptions.when}. */
  // deno-lint-ignore no-explicit-any
  when?: (ctx: ConditionContext<any, any>) => boolean;
  /** See {@linkcode CommonStepOptions.skippedNeeds}. @default {"skip"} */
  skippedNeeds?: "skip" | "run";
  /**
   * Undoes the step's effect when the run fails or is cancelled after the
   * step succeeded. Compensations run in reverse dependency order, each with
   * the step's timeout and retry policy, durably.
   */
  // deno-lint-ignore no-explicit-any
  compensate?: (ctx: CompensationContext<any, any>) => unknown;
  /** Limit of one attempt, in milliseconds. @default {30000} (or the workflow's) */
  timeoutMs?: number;
  /** How failed attempts are retried. Fields not set come from the workflow's defaults. */
  retry?: RetryPolicy;
  /** Most attempts of this step running at once in the engine. @default {Infinity} */
  concurrency?: number;
}

/** Defaults a workflow sets for all of its steps. */
export interface StepDefaults {
  /** Limit of one attempt, in milliseconds. @default {30000} */
  timeoutMs?: number;
  /** Merged field by field under each step's own `retry`. */
  retry?: RetryPolicy;
}

/** Options of a workflow. */
export interface WorkflowOptions<I> {
  /** The schema every run's input must match, usually a zod schema. @default {z.unknown()} */
  input?: InputSchema<I>;
  /** Defaults for every step of this workflow. */
  defaults?: StepDefaults;
  /** A human description, shown by the HTTP API. */
  description?: string;
}

/** Options of a sleep step: a duration, or a time computed from the input and results. */
export type SleepOptions<I, R, Needs extends readonly string[]> =
  & CommonStepOptions<I, R, Needs>
  & (
    | { durationMs: number | ((ctx: ConditionContext<I, R>) => number); until?: never }
    | { until: (ctx: ConditionContext<I, R>) => Date | number; durationMs?: never }
  );

/** What a sleep step returns. */
export interface SleepResult {
  /** When the sleep ended (ISO 8601). */
  until: string;
}

/** Options of a step that waits for an event. */
export interface WaitOptions<I, R, Needs extends readonly string[], P>
  extends CommonStepOptions<I, R, Needs> {
  /** The event's name, as senders name it. */
  event: string;
  /** The schema every payload must match (a zod schema). @default {z.unknown()} */
  schema?: InputSchema<P>;
  /** How long to wait before ending with `{ timedOut: true }`. @default {Infinity} */
  timeoutMs?: number;
}

/** What a wait step returns: the event's payload, or that its timeout passed first. */
export type WaitResult<P> =
  | { timedOut: false; payload: P; at: string }
  | { timedOut: true; at: string };

/** Options of a step that runs a child workflow and waits for it. */
export interface ChildOptions<I, R, Needs extends readonly string[], CI>
  extends CommonStepOptions<I, R, Needs> {
  /** The workflow to run; the engine must serve it too. */
  // deno-lint-ignore no-explicit-any
  workflow: Workflow<CI, any>;
  /** The child's input, from the parent's input and results; checked by the child's schema. */
  input: (ctx: ConditionContext<I, R>) => CI;
}

/** What a child step returns: the child run's id and its steps' results. */
export interface ChildResult<CR> {
  /** The child run. */
  runId: string;
  /** The child's committed results, by step name (a skipped step's is absent). */
  results: CR;
}

/** What a child step is, resolved. */
export interface ChildSpec {
  /** The child's workflow. */
  readonly workflow: AnyWorkflow;
  /** Its input. */
  input(ctx: ConditionContext<unknown, unknown>): unknown;
}

/** What a map step's body receives: a step's context, and its item. */
export interface MapItemContext<I, R, T> extends StepContext<I, R> {
  /** The item. */
  item: T;
  /** Its position among the items, from 0. */
  index: number;
}

/** Options of a map step: where its items come from, and how they run. */
export interface MapOptions<I, R, Needs extends readonly string[], T>
  extends CommonStepOptions<I, R, Needs> {
  /** The items, from the run's input and results: one durable child attempt each. */
  items: (ctx: ConditionContext<I, R>) => readonly T[];
  /** Most items of this step running at once in one run. @default {10} */
  concurrency?: number;
  /** Limit of one item's attempt, in milliseconds. @default {30000} (or the workflow's) */
  timeoutMs?: number;
  /** How an item's failed attempts are retried. */
  retry?: RetryPolicy;
  /**
   * When `true`, an item that fails after its retries does not fail the step:
   * the output holds `{ ok: false, error }` in its place and `{ ok: true,
   * value }` for the others. @default {false}
   */
  tolerateFailures?: boolean;
}

/** One item's outcome in the output of a map step that tolerates failures. */
export type MapItemResult<O> = { ok: true; value: O } | { ok: false; error: ErrorData | null };

/** The most items a map step may have. */
export const MAX_MAP_ITEMS = 100_000;

/** What a map step is, resolved. */
export interface MapSpec {
  /** Its items. */
  items(ctx: ConditionContext<unknown, unknown>): readonly unknown[];
  /** Most items running at once per run. */
  readonly concurrency: number;
  /** Whether failed items leave the step succeeding. */
  readonly tolerateFailures: boolean;
}

/** The kinds of step: what a step does (see `steps/kinds/`). */
export const STEP_KINDS = ["task", "sleep", "wait", "child", "map"] as const;
/** One of {@linkcode STEP_KINDS}. */
export type StepKindName = typeof STEP_KINDS[number];

/** What a sleep step is, resolved. */
export interface SleepSpec {
  /** When the sleep ends, in epoch milliseconds, from the step's start time. */
  until(ctx: ConditionContext<unknown, unknown>, startedAt: number): number;
}

/** What a wait step is, resolved. */
export interface WaitSpec {
  /** The event's name. */
  readonly event: string;
  /** Its payload schema. */
  readonly schema: InputSchema<unknown>;
  /** How long it waits; `Infinity` for ever. */
  readonly timeoutMs: number;
}

/** A step as the engine sees it: every option resolved. */
export interface StepDefinition {
  /** Unique within its workflow; URL-safe (compensations: `<step>~compensate`). */
  readonly name: string;
  /** The kind of step (see `steps/kinds/`): what its start, end, timer and recovery do. */
  readonly kind: StepKindName;
  /**
   * `"forward"` for the steps the workflow declares; `"compensation"` for
   * the compensations and the `onFailure` handler, which run only while the
   * run is `compensating`.
   */
  readonly phase: "forward" | "compensation";
  /** Names of earlier steps this one waits for. */
  readonly needs: readonly string[];
  /** The steps whose results its body sees; `needs` unless set. */
  readonly reads?: readonly string[];
  /** Its condition, if any. */
  // deno-lint-ignore no-explicit-any
  readonly when?: (ctx: ConditionContext<any, any>) => boolean;
  /** What it does when a step it needs was skipped. */
  readonly skippedNeeds: "skip" | "run";
  /** For a compensation: the step it compensates. */
  readonly compensates?: string;
  /** For a sleep step. */
  readonly sleep?: SleepSpec;
  /** For a wait step. */
  readonly wait?: WaitSpec;
  /** For a child step. */
  readonly child?: ChildSpec;
  /** For a map step. */
  readonly map?: MapSpec;
  /** For one item of a map step, as the engine runs it: the map and the index. */
  readonly itemOf?: { readonly map: string; readonly index: number };
  /** Limit of one attempt. */
  readonly timeoutMs: number;
  /** The full retry policy. */
  readonly retry: ResolvedRetryPolicy;
  /** Most attempts running at once, engine-wide; `Infinity` for no limit. */
  readonly concurrency: number;
  /** The step's body. */
  // deno-lint-ignore no-explicit-any
  readonly fn: StepFn<any, any, unknown>;
}

/** The most steps a workflow may have. */
export const MAX_STEPS = 400;

/** The default per-attempt timeout. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** What workflow and step names look like: 1-64 URL-safe characters. */
export const NAME_PATTERN: RegExp = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** The results of a workflow with no steps yet. */
export type EmptyResults = Record<never, never>;

const WORKFLOW_BRAND = Symbol.for("weft.workflow");

/**
 * A workflow: a name, an input schema and a DAG of steps. Immutable: every
 * {@linkcode Workflow.step} call returns a new workflow.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { workflow } from "./workflow.ts";
 * const greet = workflow("greet", { input: z.object({ name: z.string() }) })
 *   .step("hello", ({ input }) => `hello ${input.name}`)
 *   .step("shout", { needs: ["hello"] }, ({ results }) => results.hello.toUpperCase());
 * assert.ok(greet.steps.length === 2);
 * ```
 */
export class Workflow<I = unknown, R extends Record<string, unknown> = EmptyResults> {
  /** The workflow's URL-safe name. */
  readonly name: string;
  /** The input schema. */
  readonly input: InputSchema<I>;
  /** The steps in declaration order (a topological order of the DAG). */
  readonly steps: readonly StepDefinition[];
  /** Defaults for steps. */
  readonly defaults: Readonly<StepDefaults>;
  /** A human description. */
  readonly description?: string;
  /** Marks Weft workflows across copies of this module; see {@linkcode isWorkflow}. */
  readonly [WORKFLOW_BRAND] = true;
  /** The steps the workflow declares, without its compensations. */
  readonly forwardSteps: readonly StepDefinition[];
  /** Phantom field carrying the result types; never set. */
  declare readonly __results?: R;
  readonly #onFailure: StepFn<I, unknown, unknown> | undefined;

  /** Prefer {@linkcode workflow}. */
  constructor(
    name: string,
    input: InputSchema<I>,
    defaults: StepDefaults,
    steps: readonly StepDefinition[],
    description?: string,
    // deno-lint-ignore no-explicit-any
    onFailure?: (ctx: FailureContext<I, any>) => unknown,
  ) {
    this.name = name;
    this.input = input;
    this.defaults = defaults;
    this.forwardSteps = Object.freeze([...steps]);
    this.#onFailure = onFailure as StepFn<I, unknown, unknown> | undefined;
    this.steps = Object.freeze([...steps, ...compensationSteps(steps, onFailure)]);
    this.description = description;
    Object.freeze(this);
  }

  /**
   * Sets the handler that runs when a run fails, after the compensations of
   * its succeeded steps; it sees the results that were committed (any may
   * be absent), the failed step and the error. It runs as a step named
   * `~onFailure`, with the workflow's default timeout and retry policy.
   */
  onFailure(fn: (ctx: FailureContext<I, Partial<R>>) => unknown): Workflow<I, R> {
    if (typeof fn !== "function") {
      throw new WorkflowDefinitionError(this.name, undefined, "'onFailure' must be a function");
    }
    if (this.#onFailure) {
      throw new WorkflowDefinitionError(this.name, undefined, "'onFailure' is already set");
    }
    return new Workflow(
      this.name,
      this.input,
      this.defaults,
      this.forwardSteps,
      this.description,
      fn,
    );
  }

  /**
   * Adds a durable sleep: the step waits for `durationMs`, or until the time
   * `until` computes, and costs no memory meanwhile. Its result is
   * `{ until }`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { workflow } from "./workflow.ts";
   * const drip = workflow("drip")
   *   .step("welcome", () => "sent")
   *   .sleep("pause", { needs: ["welcome"], durationMs: 3 * 24 * 3600_000 })
   *   .step("follow-up", { needs: ["pause"] }, () => "sent");
   * assert.equal(drip.getStep("pause")?.kind, "sleep");
   * ```
   */
  sleep<const N extends string, const Needs extends readonly (keyof R & string)[] = []>(
    name: N,
    options: SleepOptions<I, Pick<R, Needs[number]>, Needs>,
  ): Workflow<I, R & { [K in N]: SleepResult }> {
    const fail = (problem: string): never => {
      throw new WorkflowDefinitionError(this.name, String(name), problem);
    };
    if (typeof options !== "object" || options === null) fail("sleep options are missing");
    const optionProblem = kindOptionProblems("sleep", options).join("; ");
    if (optionProblem) fail(optionProblem);
    const { durationMs, until } = options as { durationMs?: unknown; until?: unknown };
    if ((durationMs === undefined) === (until === undefined)) {
      fail("a sleep takes exactly one of 'durationMs' and 'until'");
    }
    if (until !== undefined && typeof until !== "function") {
      fail("'until' must be a function of { input, results } returning a Date or epoch ms");
    }
    if (
      typeof durationMs === "number" && !(Number.isFinite(durationMs) && durationMs >= 0)
    ) fail(`'durationMs' must be a finite number >= 0: current value is ${durationMs}`);
    if (durationMs !== undefined && !["number", "function"].includes(typeof durationMs)) {
      fail("'durationMs' must be a number or a function of { input, results }");
    }
    const spec: SleepSpec = {
      until: (ctx, startedAt) => {
        if (typeof until === "function") {
          const at = until(ctx);
          const ms = at instanceof Date ? at.getTime() : at;
          if (typeof ms !== "number" || !Number.isFinite(ms)) {
            throw new TypeError(`'until' returned ${String(at)}, not a Date or epoch ms`);
          }
          return ms;
        }
        const ms = typeof durationMs === "function" ? durationMs(ctx) : durationMs;
        if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
          throw new TypeError(`'durationMs' returned ${String(ms)}, not a number >= 0`);
        }
        return startedAt + ms;
      },
    };
    return this.#add(name, options, { kind: "sleep", sleep: spec }) as never;
  }

  /**
   * Adds a step that waits for an event sent to the run (`engine.signal`,
   * or `POST /runs/:id/events/:event`), checked against `schema`. Its
   * result is `{ timedOut: false, payload }`, or `{ timedOut: true }` once
   * `timeoutMs` passes first. An event sent before the step starts is kept
   * for it; each event is taken by one wait step.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { z } from "zod";
   * import { workflow } from "./workflow.ts";
   * const approval = workflow("approval")
   *   .waitForEvent("decision", {
   *     event: "approved",
   *     schema: z.object({ by: z.string() }),
   *     timeoutMs: 3 * 24 * 3600_000,
   *   })
   *   .step("notify", { needs: ["decision"] }, ({ results }) =>
   *     results.decision.timedOut ? "expired" : `approved by ${results.decision.payload.by}`);
   * assert.equal(approval.getStep("decision")?.wait?.event, "approved");
   * ```
   */
  waitForEvent<
    const N extends string,
    P = unknown,
    const Needs extends readonly (keyof R & string)[] = [],
  >(
    name: N,
    options: WaitOptions<I, Pick<R, Needs[number]>, Needs, P>,
  ): Workflow<I, R & { [K in N]: WaitResult<P> }> {
    const fail = (problem: string): never => {
      throw new WorkflowDefinitionError(this.name, String(name), problem);
    };
    if (typeof options !== "object" || options === null) fail("wait options are missing");
    const optionProblem = kindOptionProblems("wait", options).join("; ");
    if (optionProblem) fail(optionProblem);
    if (typeof options.event !== "string" || !NAME_PATTERN.test(options.event)) {
      fail(
        "'event' must be 1-64 characters of letters, digits, '_', '.' or '-', starting with a letter or digit",
      );
    }
    const schema = (options.schema ?? z.unknown()) as InputSchema<unknown>;
    if (typeof schema?.safeParse !== "function") fail("'schema' must be a zod schema");
    const timeoutMs = options.timeoutMs ?? Infinity;
    if (!(typeof timeoutMs === "number" && timeoutMs > 0)) {
      fail(`'timeoutMs' must be a number > 0: current value is ${timeoutMs}`);
    }
    const wait: WaitSpec = Object.freeze({ event: options.event, schema, timeoutMs });
    return this.#add(name, options, { kind: "wait", wait }) as never;
  }

  /**
   * Adds a step that starts a run of another workflow (served by the same
   * engine) and waits for it, costing no memory meanwhile. The child links
   * to its parent; cancelling the parent cancels it. Its result is the
   * child's id and results, typed from its definition; a child that fails
   * or is cancelled fails this step. The child is started in the same write
   * that records this step's start, so a crash never starts two.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { z } from "zod";
   * import { workflow } from "./workflow.ts";
   * const invoice = workflow("invoice", { input: z.object({ total: z.number() }) })
   *   .step("pdf", ({ input }) => `invoice-${input.total}.pdf`);
   * const order = workflow("order2", { input: z.object({ total: z.number() }) })
   *   .child("invoice", { workflow: invoice, input: ({ input }) => ({ total: input.total }) })
   *   .step("mail", { needs: ["invoice"] }, ({ results }) => results.invoice.results.pdf);
   * assert.equal(order.getStep("invoice")?.child?.workflow, invoice);
   * ```
   */
  child<
    const N extends string,
    CI,
    CR extends Record<string, unknown>,
    const Needs extends readonly (keyof R & string)[] = [],
  >(
    name: N,
    options: ChildOptions<I, Pick<R, Needs[number]>, Needs, CI> & { workflow: Workflow<CI, CR> },
  ): Workflow<I, R & { [K in N]: ChildResult<CR> }> {
    const fail = (problem: string): never => {
      throw new WorkflowDefinitionError(this.name, String(name), problem);
    };
    if (typeof options !== "object" || options === null) fail("child options are missing");
    const optionProblem = kindOptionProblems("child", options).join("; ");
    if (optionProblem) fail(optionProblem);
    if (!isWorkflow(options.workflow)) fail("'workflow' must be a workflow");
    if (options.workflow.name === this.name) fail("a workflow cannot run itself as a child");
    if (typeof options.input !== "function") {
      fail("'input' must be a function of { input, results } returning the child's input");
    }
    const child: ChildSpec = Object.freeze({
      workflow: options.workflow,
      input: options.input as ChildSpec["input"],
    });
    return this.#add(name, options, { kind: "child", child }) as never;
  }

  /**
   * Adds a map step: a dynamic fan-out. Its items come from the run's input
   * and results when it starts; each item runs `fn` as a durable attempt of
   * its own, with the step's timeout and retry policy, at most `concurrency`
   * at once in the run. Its result is the items' outputs in item order. An
   * item that fails after its retries fails the step, unless it sets
   * `tolerateFailures`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { z } from "zod";
   * import { workflow } from "./workflow.ts";
   * const batch = workflow("batch", { input: z.object({ ids: z.array(z.string()) }) })
   *   .map("charge", { items: ({ input }) => input.ids, concurrency: 5 }, ({ item }) => ({
   *     id: item,
   *     ok: true,
   *   }))
   *   .step("total", { needs: ["charge"] }, ({ results }) => results.charge.length);
   * assert.equal(batch.getStep("charge")?.map?.concurrency, 5);
   * ```
   */
  map<const N extends string, T, O, const Needs extends readonly (keyof R & string)[] = []>(
    name: N,
    options: MapOptions<I, Pick<R, Needs[number]>, Needs, T> & { tolerateFailures: true },
    fn: (ctx: MapItemContext<I, Pick<R, Needs[number]>, T>) => Promise<O> | O,
  ): Workflow<I, R & { [K in N]: MapItemResult<Awaited<O>>[] }>;
  /** Adds a map step whose result is its items' outputs, in item order. */
  map<const N extends string, T, O, const Needs extends readonly (keyof R & string)[] = []>(
    name: N,
    options: MapOptions<I, Pick<R, Needs[number]>, Needs, T>,
    fn: (ctx: MapItemContext<I, Pick<R, Needs[number]>, T>) => Promise<O> | O,
  ): Workflow<I, R & { [K in N]: Awaited<O>[] }>;
  map(
    name: string,
    // deno-lint-ignore no-explicit-any
    options: MapOptions<any, any, readonly string[], unknown>,
    // deno-lint-ignore no-explicit-any
    fn: (ctx: MapItemContext<any, any, unknown>) => unknown,
  ): Workflow<I, Record<string, unknown>> {
    const fail = (problem: string): never => {
      throw new WorkflowDefinitionError(this.name, String(name), problem);
    };
    if (typeof options !== "object" || options === null) fail("map options are missing");
    const optionProblem = kindOptionProblems("map", options).join("; ");
    if (optionProblem) fail(optionProblem);
    const common = this.#checkCommon(name, options, fail, () => []);
    if (typeof options.items !== "function") {
      fail("'items' must be a function of { input, results } returning an array");
    }
    if (typeof fn !== "function") fail("the step function is missing");
    const concurrency = options.concurrency ?? 10;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      fail(`'concurrency' must be an integer >= 1: current value is ${concurrency}`);
    }
    const timeoutMs = options.timeoutMs ?? this.defaults.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      fail(`'timeoutMs' must be a finite number > 0: current value is ${timeoutMs}`);
    }
    const problem = retryPolicyProblem(options.retry ?? {});
    if (problem) fail(problem);
    const map: MapSpec = Object.freeze({
      items: options.items as MapSpec["items"],
      concurrency,
      tolerateFailures: options.tolerateFailures === true,
    });
    const step: StepDefinition = Object.freeze({
      name,
      kind: "map" as const,
      phase: "forward" as const,
      ...common,
      timeoutMs,
      retry: Object.freeze({ ...DEFAULT_RETRY, ...this.defaults.retry, ...options.retry }),
      concurrency: Infinity,
      map,
      fn: fn as StepFn<unknown, unknown, unknown>,
    });
    return this.#with(step);
  }

  /** Checks and adds a sleep, wait or child step. */
  #add(
    name: string,
    // deno-lint-ignore no-explicit-any
    options: CommonStepOptions<any, any>,
    spec:
      | { kind: "sleep"; sleep: SleepSpec }
      | { kind: "wait"; wait: WaitSpec }
      | { kind: "child"; child: ChildSpec },
  ): Workflow<I, Record<string, unknown>> {
    const fail = (problem: string): never => {
      throw new WorkflowDefinitionError(this.name, String(name), problem);
    };
    // Its options were checked by the builder method, against its kind's list.
    const common = this.#checkCommon(name, options, fail, () => []);
    const step: StepDefinition = Object.freeze({
      name,
      ...spec,
      phase: "forward" as const,
      ...common,
      timeoutMs: DEFAULT_TIMEOUT_MS,
      retry: Object.freeze({ ...DEFAULT_RETRY }),
      concurrency: Infinity,
      fn: () => {
        throw new Error(`Step '${name}' is a ${spec.kind} step: it has no body`);
      },
    });
    return this.#with(step);
  }

  /** Checks what every kind of step takes: its name, `needs`, `when`, `skippedNeeds`. */
  #checkCommon(
    name: string,
    // deno-lint-ignore no-explicit-any
    options: CommonStepOptions<any, any>,
    fail: (problem: string) => never,
    optionProblems: (options: unknown) => string[],
  ): Pick<StepDefinition, "needs" | "when" | "skippedNeeds"> {
    if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
      fail(
        `a step name must be 1-64 characters of letters, digits, '_', '.' or '-', starting with a letter or digit`,
      );
    }
    const optionProblem = optionProblems(options).join("; ");
    if (optionProblem) fail(optionProblem);
    if (this.steps.some((s) => s.name === name)) fail("a step of that name is already declared");
    if (this.forwardSteps.length >= MAX_STEPS) {
      fail(`a workflow has at most ${MAX_STEPS} steps, as ending a run writes them in one commit`);
    }
    const needs = [...(options.needs ?? [])];
    for (const need of needs) {
      if (need === name) fail(`'needs' names the step itself`);
      if (!this.forwardSteps.some((s) => s.name === need)) {
        fail(`'needs' names '${need}', which is not a step declared before this one`);
      }
    }
    if (new Set(needs).size !== needs.length) fail(`'needs' names a step twice`);
    if (options.when !== undefined && typeof options.when !== "function") {
      fail("'when' must be a function of { input, results } returning a boolean");
    }
    const skippedNeeds = options.skippedNeeds ?? "skip";
    if (skippedNeeds !== "skip" && skippedNeeds !== "run") {
      fail(`'skippedNeeds' must be "skip" or "run": current value is ${String(skippedNeeds)}`);
    }
    const common: Pick<StepDefinition, "needs" | "when" | "skippedNeeds"> = {
      needs: Object.freeze(needs),
      skippedNeeds,
    };
    if (options.when) (common as { when?: unknown }).when = options.when;
    return common;
  }

  #with(step: StepDefinition): Workflow<I, Record<string, unknown>> {
    return new Workflow(
      this.name,
      this.input,
      this.defaults,
      [...this.forwardSteps, step],
      this.description,
      this.#onFailure,
    );
  }

  /** Adds a step with default options that starts when the run starts. */
  step<const N extends string, O>(
    name: N,
    fn: StepFn<I, EmptyResults, O>,
  ): Workflow<I, R & { [K in N]: Awaited<O> }>;
  /**
   * Adds a step that runs even when a step it needs was skipped; it sees
   * those results as absent.
   */
  step<const N extends string, const Needs extends readonly (keyof R & string)[], O>(
    name: N,
    options: StepOptions<Needs> & { skippedNeeds: "run" },
    fn: StepFn<I, Partial<Pick<R, Needs[number]>>, O>,
  ): Workflow<I, R & { [K in N]: Awaited<O> }>;
  /** Adds a step with options; `needs` may only name steps declared earlier. */
  step<const N extends string, const Needs extends readonly (keyof R & string)[], O>(
    name: N,
    options: StepOptions<Needs>,
    fn: StepFn<I, Pick<R, Needs[number]>, O>,
  ): Workflow<I, R & { [K in N]: Awaited<O> }>;
  step(
    name: string,
    // deno-lint-ignore no-explicit-any
    optionsOrFn: StepOptions | StepFn<I, any, unknown>,
    // deno-lint-ignore no-explicit-any
    maybeFn?: StepFn<I, any, unknown>,
  ): Workflow<I, Record<string, unknown>> {
    const options: StepOptions = typeof optionsOrFn === "function" ? {} : optionsOrFn ?? {};
    const fn = typeof optionsOrFn === "function" ? optionsOrFn : maybeFn;
    const fail = (problem: string): never => {
      throw new WorkflowDefinitionError(this.name, String(name), problem);
    };
    const common = this.#checkCommon(name, options, fail, stepOptionProblems);
    if (typeof fn !== "function") fail("the step function is missing");
    if (options.compensate !== undefined && typeof options.compensate !== "function") {
      fail("'compensate' must be a function");
    }
    const timeoutMs = options.timeoutMs ?? this.defaults.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      fail(`'timeoutMs' must be a finite number > 0: current value is ${timeoutMs}`);
    }
    const stepRetry = options.retry ?? {};
    const problem = retryPolicyProblem(stepRetry);
    if (problem) fail(problem);
    const retry: ResolvedRetryPolicy = { ...DEFAULT_RETRY, ...this.defaults.retry, ...stepRetry };
    const concurrency = options.concurrency ?? Infinity;
    if (!(concurrency === Infinity || (Number.isInteger(concurrency) && concurrency >= 1))) {
      fail(`'concurrency' must be an integer >= 1: current value is ${concurrency}`);
    }
    const step: StepDefinition & { compensate?: unknown } = Object.freeze({
      name,
      kind: "task" as const,
      phase: "forward" as const,
      ...common,
      timeoutMs,
      retry: Object.freeze(retry),
      concurrency,
      fn: fn!,
      ...(options.compensate ? { compensate: options.compensate } : {}),
    });
    return this.#with(step);
  }

  /**
   * A copy of this workflow whose named steps run other bodies, for tests
   * (see `weft/testing`); everything else, compensations included, stays.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { workflow } from "./workflow.ts";
   * const wf = workflow("w").step("a", () => 1);
   * const stubbed = wf.withBodies(new Map([["a", () => 2]]));
   * assert.equal(stubbed.getStep("a")?.fn({} as never), 2);
   * ```
   */
  // deno-lint-ignore no-explicit-any
  withBodies(bodies: ReadonlyMap<string, StepFn<I, any, unknown>>): Workflow<I, R> {
    const steps = this.forwardSteps.map((s) => {
      const fn = bodies.get(s.name);
      return fn ? Object.freeze({ ...s, fn }) : s;
    });
    return new Workflow(
      this.name,
      this.input,
      this.defaults,
      steps,
      this.description,
      this.#onFailure,
    );
  }

  /** The step of that name, or `undefined`. */
  getStep(name: string): StepDefinition | undefined {
    return this.steps.find((s) => s.name === name);
  }
}

/** The suffix of a compensation step's name: `payment~compensate`. */
export const COMPENSATE_SUFFIX = "~compensate";
/** The name of the step that runs a workflow's `onFailure` handler. */
export const ON_FAILURE_STEP = "~onFailure";

/**
 * The compensation steps of `steps` and the `onFailure` step: each
 * compensation needs the compensations of the nearest compensated steps that
 * depend on its step (reverse dependency order); `onFailure` needs them all.
 */
function compensationSteps(
  steps: readonly (StepDefinition & { compensate?: unknown })[],
  // deno-lint-ignore no-explicit-any
  onFailure: ((ctx: FailureContext<any, any>) => unknown) | undefined,
): StepDefinition[] {
  const compensated = new Set(steps.filter((s) => s.compensate).map((s) => s.name));
  const nearest = (name: string, seen = new Set<string>()): string[] => {
    const out: string[] = [];
    for (const s of steps) {
      if (!s.needs.includes(name) || seen.has(s.name)) continue;
      seen.add(s.name);
      if (compensated.has(s.name)) out.push(s.name + COMPENSATE_SUFFIX);
      else out.push(...nearest(s.name, seen));
    }
    return out;
  };
  const out: StepDefinition[] = [];
  for (const s of steps) {
    if (!s.compensate) continue;
    const compensate = s.compensate as (ctx: CompensationContext<unknown, unknown>) => unknown;
    const target = s.name;
    const targetNeeds = s.needs;
    out.push(Object.freeze({
      name: target + COMPENSATE_SUFFIX,
      kind: "task" as const,
      phase: "compensation" as const,
      needs: Object.freeze([...new Set(nearest(target))]),
      reads: Object.freeze([...targetNeeds, target]),
      skippedNeeds: "run" as const,
      compensates: target,
      timeoutMs: s.timeoutMs,
      retry: s.retry,
      concurrency: Infinity,
      fn: (ctx: StepContext<unknown, Record<string, unknown>>) => {
        const results: Record<string, unknown> = {};
        for (const n of targetNeeds) results[n] = ctx.results[n];
        return compensate({ ...ctx, results, output: ctx.results[target], compensates: target });
      },
    }));
  }
  if (onFailure) {
    const first = steps[0];
    out.push(Object.freeze({
      name: ON_FAILURE_STEP,
      kind: "task" as const,
      phase: "compensation" as const,
      needs: Object.freeze(out.map((s) => s.name)),
      reads: Object.freeze(steps.map((s) => s.name)),
      skippedNeeds: "run" as const,
      timeoutMs: first?.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      retry: Object.freeze({ ...DEFAULT_RETRY }),
      concurrency: Infinity,
      fn: onFailure as StepFn<unknown, unknown, unknown>,
    }));
  }
  return out;
}

/**
 * Any workflow, whatever its input and result types.
 */
// deno-lint-ignore no-explicit-any
export type AnyWorkflow = Workflow<any, any>;

/**
 * Starts the definition of a workflow.
 *
 * @param name 1-64 URL-safe characters: letters, digits, `_`, `.`, `-`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { workflow } from "./workflow.ts";
 * const order = workflow("order", {
 *   input: z.object({ orderId: z.string() }),
 *   defaults: { timeoutMs: 5_000, retry: { maxAttempts: 5 } },
 * }).step("payment", async ({ input }) => ({ paid: input.orderId }));
 * assert.ok(order.getStep("payment")?.retry.maxAttempts === 5);
 * ```
 */
export function workflow<I = unknown>(
  name: string,
  options: WorkflowOptions<I> = {},
): Workflow<I, EmptyResults> {
  if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
    throw new WorkflowDefinitionError(
      String(name),
      undefined,
      "a workflow name must be 1-64 characters of letters, digits, '_', '.' or '-', starting with a letter or digit",
    );
  }
  const optionProblem = workflowOptionProblems(options).join("; ");
  if (optionProblem) throw new WorkflowDefinitionError(name, undefined, optionProblem);
  const defaults = options.defaults ?? {};
  if (
    defaults.timeoutMs !== undefined &&
    !(Number.isFinite(defaults.timeoutMs) && defaults.timeoutMs > 0)
  ) {
    throw new WorkflowDefinitionError(
      name,
      undefined,
      `'defaults.timeoutMs' must be a finite number > 0: current value is ${defaults.timeoutMs}`,
    );
  }
  const problem = defaults.retry ? retryPolicyProblem(defaults.retry) : undefined;
  if (problem) throw new WorkflowDefinitionError(name, undefined, `defaults: ${problem}`);
  const input = (options.input ?? z.unknown()) as InputSchema<I>;
  return new Workflow(name, input, Object.freeze({ ...defaults }), [], options.description);
}

/**
 * Whether a value is a Weft workflow, also one built by another copy of
 * Weft (a module that imports Weft from a different URL).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isWorkflow, workflow } from "./workflow.ts";
 * assert.ok(isWorkflow(workflow("w")) && !isWorkflow({ name: "w" }));
 * ```
 */
export function isWorkflow(value: unknown): value is AnyWorkflow {
  return typeof value === "object" && value !== null &&
    (value as Record<symbol, unknown>)[WORKFLOW_BRAND] === true;
}

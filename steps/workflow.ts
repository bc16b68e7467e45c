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
import { WorkflowDefinitionError } from "../engine/errors.ts";
import {
  DEFAULT_RETRY,
  type ResolvedRetryPolicy,
  type RetryPolicy,
  retryPolicyProblem,
} from "../engine/retry.ts";

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

/** Options of one step. */
export interface StepOptions<Needs extends readonly string[] = readonly string[]> {
  /** Steps that must succeed before this one starts; only earlier steps. @default {[]} */
  needs?: Needs;
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

/** A step as the engine sees it: every option resolved. */
export interface StepDefinition {
  /** Unique within its workflow; URL-safe. */
  readonly name: string;
  /** The kind of step (see `steps/kinds/`): what its start, end, timer and recovery do. */
  readonly kind: "task";
  /** Names of earlier steps this one waits for. */
  readonly needs: readonly string[];
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
  /** Phantom field carrying the result types; never set. */
  declare readonly __results?: R;

  /** Prefer {@linkcode workflow}. */
  constructor(
    name: string,
    input: InputSchema<I>,
    defaults: StepDefaults,
    steps: readonly StepDefinition[],
    description?: string,
  ) {
    this.name = name;
    this.input = input;
    this.defaults = defaults;
    this.steps = Object.freeze([...steps]);
    this.description = description;
    Object.freeze(this);
  }

  /** Adds a step with default options that starts when the run starts. */
  step<const N extends string, O>(
    name: N,
    fn: StepFn<I, EmptyResults, O>,
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
    if (typeof name !== "string" || !NAME_PATTERN.test(name)) {
      fail(
        `a step name must be 1-64 characters of letters, digits, '_', '.' or '-', starting with a letter or digit`,
      );
    }
    if (typeof fn !== "function") fail("the step function is missing");
    if (this.steps.some((s) => s.name === name)) fail("a step of that name is already declared");
    if (this.steps.length >= MAX_STEPS) {
      fail(`a workflow has at most ${MAX_STEPS} steps, as ending a run writes them in one commit`);
    }
    const needs = [...(options.needs ?? [])];
    for (const need of needs) {
      if (need === name) fail(`'needs' names the step itself`);
      if (!this.steps.some((s) => s.name === need)) {
        fail(`'needs' names '${need}', which is not a step declared before this one`);
      }
    }
    if (new Set(needs).size !== needs.length) fail(`'needs' names a step twice`);
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
    const step: StepDefinition = Object.freeze({
      name,
      kind: "task" as const,
      needs: Object.freeze(needs),
      timeoutMs,
      retry: Object.freeze(retry),
      concurrency,
      fn: fn!,
    });
    return new Workflow(
      this.name,
      this.input,
      this.defaults,
      [...this.steps, step],
      this.description,
    );
  }

  /** The step of that name, or `undefined`. */
  getStep(name: string): StepDefinition | undefined {
    return this.steps.find((s) => s.name === name);
  }
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

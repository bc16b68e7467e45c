/**
 * Every option of a workflow and of a step, with the zod schema of its type,
 * checked when `workflow()` and `.step()` are called, that is when the module
 * that defines the workflow loads. An unknown option is an error that
 * suggests the closest known name; an option of the wrong type is an error
 * naming what it must be.
 *
 * **Adding an option** is one line in the shape it belongs to
 * ({@linkcode STEP_OPTIONS}, {@linkcode RETRY_OPTIONS},
 * {@linkcode STEP_DEFAULT_OPTIONS} or {@linkcode WORKFLOW_OPTIONS}), beside
 * its field in the matching interface of `workflow.ts`:
 *
 * ```ts ignore
 * export const STEP_OPTIONS: Readonly<OptionShape> = Object.freeze({
 *   // ...
 *   when: z.function(), // a new option: nothing else to change here
 * });
 * ```
 *
 * A new kind of step whose builder method takes other options (say
 * `.sleep(name, options)`) gets a shape of its own and a two-line
 * `...OptionProblems` function like {@linkcode stepOptionProblems}. The
 * schemas only validate: the builder keeps reading the options object it
 * was given, never zod's parsed copy.
 *
 * Each schema says only what type an option has; every option is optional.
 * Ranges (`timeoutMs > 0`, `maxAttempts >= 1`) and rules that span steps
 * (`needs` naming earlier steps) stay with the builder in `workflow.ts`,
 * whose messages name the bound. Numbers are checked with
 * {@linkcode anyNumber}, which lets `NaN` and `Infinity` through to those
 * range checks instead of calling them "not a number".
 *
 * @module
 */
import leven from "leven";
import { z } from "zod";
import { withArticle } from "../engine/english.ts";

/** The options of one options object: each name with the schema of its type. */
export type OptionShape = Record<string, z.ZodType>;

/**
 * Any JavaScript number, `NaN` and `Infinity` included (`z.number()` refuses
 * both); ranges are checked where the option is used.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { anyNumber } from "./options.ts";
 * assert.ok(anyNumber.safeParse(Infinity).success && !anyNumber.safeParse("1").success);
 * ```
 */
export const anyNumber: z.ZodType<number> = z.custom<number>((v) => typeof v === "number", {
  params: { expected: "number" },
});

/** What a workflow's `input` must be: anything with zod's `safeParse`. */
const inputSchema = z.custom<unknown>(
  (v) =>
    typeof v === "object" && v !== null &&
    typeof (v as { safeParse?: unknown }).safeParse === "function",
  { params: { expected: "zod schema (an object with safeParse)" } },
);

/** The fields of a retry policy (`retry` of a step, and of a workflow's `defaults`). */
export const RETRY_OPTIONS: Readonly<OptionShape> = Object.freeze({
  maxAttempts: anyNumber,
  initialDelayMs: anyNumber,
  backoffFactor: anyNumber,
  maxDelayMs: anyNumber,
  jitter: anyNumber,
});

/** The options of `.step(name, options, fn)`. */
/** A function, any arity. */
const fn = z.custom<(...args: unknown[]) => unknown>((v) => typeof v === "function", {
  params: { expected: "function" },
});

/** The options every kind of step takes. */
export const COMMON_STEP_OPTIONS: Readonly<OptionShape> = Object.freeze({
  needs: z.array(z.string()),
  when: fn,
  skippedNeeds: z.enum(["skip", "run"]),
});

/** The options of `.step()`. */
export const STEP_OPTIONS: Readonly<OptionShape> = Object.freeze({
  ...COMMON_STEP_OPTIONS,
  timeoutMs: anyNumber,
  retry: strictOptions(RETRY_OPTIONS),
  concurrency: anyNumber,
  compensate: fn,
});

/** The fields of a workflow's `defaults`, applied to each of its steps. */
export const STEP_DEFAULT_OPTIONS: Readonly<OptionShape> = Object.freeze({
  timeoutMs: anyNumber,
  retry: strictOptions(RETRY_OPTIONS),
});

/** The options of `workflow(name, options)`. */
export const WORKFLOW_OPTIONS: Readonly<OptionShape> = Object.freeze({
  input: inputSchema,
  defaults: strictOptions(STEP_DEFAULT_OPTIONS),
  description: z.string(),
});

/** An options object of `shape`: every field optional, any other key an error. */
function strictOptions(shape: Readonly<OptionShape>): z.ZodType {
  return z.strictObject(
    Object.fromEntries(Object.entries(shape).map(([name, schema]) => [name, schema.optional()])),
  );
}

/** The options of `.sleep()`, `.waitForEvent()`, `.child()` and `.map()`, by kind. */
export const KIND_OPTIONS: Readonly<Record<string, Readonly<OptionShape>>> = Object.freeze({
  sleep: { ...COMMON_STEP_OPTIONS, durationMs: z.union([anyNumber, fn]), until: fn },
  wait: { ...COMMON_STEP_OPTIONS, event: z.string(), schema: inputSchema, timeoutMs: anyNumber },
  child: { ...COMMON_STEP_OPTIONS, workflow: z.custom((v) => typeof v === "object"), input: fn },
  map: {
    ...STEP_OPTIONS,
    items: fn,
    tolerateFailures: z.boolean(),
  },
});

const kindSchemas = Object.fromEntries(
  Object.entries(KIND_OPTIONS).map(([kind, shape]) => [kind, strictOptions(shape)]),
);

/**
 * The problems with the options of a step of another kind than a task.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { kindOptionProblems } from "./options.ts";
 * assert.deepEqual(kindOptionProblems("sleep", { duration: 5 }), [
 *   "'duration' is not a sleep option; did you mean 'durationMs'?",
 * ]);
 * ```
 */
export function kindOptionProblems(kind: string, options: unknown): string[] {
  const schema = kindSchemas[kind];
  return schema ? problems(schema, options, kind) : [];
}

const stepOptionsSchema = strictOptions(STEP_OPTIONS);
const workflowOptionsSchema = strictOptions(WORKFLOW_OPTIONS);

/**
 * The problems with a step's options, one sentence each, or `[]` when they
 * are all known and of the right type.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { stepOptionProblems } from "./options.ts";
 * assert.deepEqual(stepOptionProblems({ timeout: 5_000 }), [
 *   "'timeout' is not a step option; did you mean 'timeoutMs'?",
 * ]);
 * assert.deepEqual(stepOptionProblems({ needs: ["payment"], retry: { jitter: 0 } }), []);
 * ```
 */
export function stepOptionProblems(options: unknown): string[] {
  return problems(stepOptionsSchema, options, "step");
}

/**
 * The problems with a workflow's options, one sentence each, or `[]`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { workflowOptionProblems } from "./options.ts";
 * assert.deepEqual(workflowOptionProblems({ defaults: { retry: { maxAttempt: 5 } } }), [
 *   "'defaults.retry.maxAttempt' is not a retry option; did you mean 'maxAttempts'?",
 * ]);
 * ```
 */
export function workflowOptionProblems(options: unknown): string[] {
  return problems(workflowOptionsSchema, options, "workflow");
}

function problems(schema: z.ZodType, options: unknown, what: string): string[] {
  const result = schema.safeParse(options);
  if (result.success) return [];
  return result.error.issues.flatMap((issue) => describeIssue(schema, options, issue, what));
}

/** One sentence per problem, in the house style of definition errors. */
function describeIssue(
  root: z.ZodType,
  options: unknown,
  issue: z.core.$ZodIssue,
  what: string,
): string[] {
  const path = issue.path.filter((p): p is string | number => typeof p !== "symbol");
  if (issue.code === "unrecognized_keys") {
    const shape = objectShapeAt(root, path);
    const label = path.length === 0 ? what : String(path[path.length - 1]);
    return issue.keys.map((key) =>
      `'${showPath([...path, key])}' is not ${withArticle(label)} option${suggestion(key, shape)}`
    );
  }
  const value = valueAt(options, path);
  if (path.length === 0) {
    return [`the ${what} options must be an object: current value is ${showValue(value)}`];
  }
  const expected = issue.code === "invalid_type"
    ? issue.expected
    : (issue as { params?: { expected?: string } }).params?.expected;
  const must = expected ? withArticle(expected) : issue.message;
  return [`'${showPath(path)}' must be ${must}: current value is ${showValue(value)}`];
}

/**
 * `; did you mean 'x'?` for a close name, or for a field of a nested object
 * of that very name (`maxAttempts` for `retry.maxAttempts`), else the list of
 * names.
 */
function suggestion(key: string, shape: OptionShape): string {
  const known = Object.keys(shape);
  const closest = closestName(key, known);
  if (closest !== undefined) return `; did you mean '${closest}'?`;
  for (const name of known) {
    if (Object.hasOwn(objectShapeAt(shape[name], []), key)) {
      return `; did you mean '${name}.${key}'?`;
    }
  }
  return `: the options are ${known.map((k) => `'${k}'`).join(", ")}`;
}

/**
 * The known name closest to `name` by edit distance, ignoring case, within
 * TypeScript's bound for spelling suggestions (0.4 of the length, plus 1).
 */
function closestName(name: string, known: readonly string[]): string | undefined {
  const maxDistance = Math.floor(name.length * 0.4) + 1;
  let best: string | undefined;
  let bestDistance = maxDistance + 1;
  for (const candidate of known) {
    // Past its bound, leven answers the bound itself: ask one further to tell them apart.
    const distance = leven(name.toLowerCase(), candidate.toLowerCase(), {
      maxDistance: maxDistance + 1,
    });
    if (distance <= maxDistance && distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  // A longer name that starts with this one ('timeout' for 'timeoutMs') is as good.
  return best ?? known.find((k) => k.toLowerCase().startsWith(name.toLowerCase()) && name !== "");
}

/** The keys of the object schema at `path`, through the optional wrappers. */
function objectShapeAt(schema: z.ZodType, path: readonly (string | number)[]): OptionShape {
  let current: z.ZodType = schema;
  for (const key of [...path, undefined]) {
    while (current instanceof z.ZodOptional) current = current.unwrap() as z.ZodType;
    if (!(current instanceof z.ZodObject)) return {};
    if (key === undefined) return current.shape as OptionShape;
    current = (current.shape as OptionShape)[String(key)];
  }
  return {};
}

function valueAt(value: unknown, path: readonly (string | number)[]): unknown {
  let current = value;
  for (const key of path) {
    if (typeof current !== "object" || current === null) return undefined;
    current = (current as Record<string | number, unknown>)[key];
  }
  return current;
}

function showPath(path: readonly (string | number)[]): string {
  return path.map((p, i) => typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`).join("");
}

function showValue(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  }
  if (typeof value === "function") return "a function";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object" && value !== null) return "an object";
  return String(value);
}

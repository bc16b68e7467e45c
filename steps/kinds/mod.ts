/**
 * The kinds of step the engine knows, by name.
 *
 * @module
 */
import type { StepKind } from "../../engine/step_kind.ts";
import { childKind } from "./child.ts";
import { mapKind } from "./map.ts";
import { sleepKind } from "./sleep.ts";
import { taskKind } from "./task.ts";
import { waitKind } from "./wait.ts";

/**
 * Every built-in kind, by name.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { builtinKinds } from "./mod.ts";
 * assert.ok(builtinKinds().has("task"));
 * ```
 */
export function builtinKinds(): ReadonlyMap<string, StepKind> {
  return new Map([taskKind, sleepKind, waitKind, childKind, mapKind].map((k) => [k.name, k]));
}

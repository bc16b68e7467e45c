/**
 * Weft: durable workflows for Deno. Declare a workflow as a DAG of async
 * steps, each with its own timeout and retry policy; the engine keeps every
 * run in Deno KV so runs survive crashes and restarts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { createEngine, workflow } from "./mod.ts";
 *
 * const order = workflow("order", { input: z.object({ orderId: z.string() }) })
 *   .step("payment", ({ input }) => ({ paid: input.orderId }))
 *   .step("inventory", () => ({ available: true }))
 *   .step("dispatch", { needs: ["payment", "inventory"] }, ({ results }) => ({
 *     shipped: results.inventory.available,
 *   }));
 *
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [order] });
 * const run = await engine.start("order", { orderId: "A1" }, { idempotencyKey: "A1" });
 * const done = await engine.result(run.id);
 * assert.ok(done.status === "succeeded");
 * await engine.close();
 * kv.close();
 * ```
 *
 * @module
 */
export {
  type AnyWorkflow,
  type ChildOptions,
  type ChildResult,
  type ChildSpec,
  type CommonStepOptions,
  COMPENSATE_SUFFIX,
  type CompensationContext,
  type ConditionContext,
  DEFAULT_TIMEOUT_MS,
  type EmptyResults,
  type FailureContext,
  type InputSchema,
  isWorkflow,
  type MapItemContext,
  type MapItemResult,
  type MapOptions,
  type MapSpec,
  MAX_MAP_ITEMS,
  MAX_STEPS,
  NAME_PATTERN,
  ON_FAILURE_STEP,
  type SchemaIssue,
  type SleepOptions,
  type SleepResult,
  type SleepSpec,
  STEP_KINDS,
  type StepContext,
  type StepDefaults,
  type StepDefinition,
  type StepFn,
  type StepKindName,
  type StepLogger,
  type StepOptions,
  type WaitOptions,
  type WaitResult,
  type WaitSpec,
  Workflow,
  workflow,
  type WorkflowOptions,
} from "./steps/workflow.ts";
export {
  type CloseOptions,
  createEngine,
  type Engine,
  type EngineEvent,
  type EngineOptions,
  type EngineStats,
  type SignalOptions,
  type SignalResult,
  type StartOptions,
  type StartResult,
} from "./engine/engine.ts";
export {
  AttemptInterruptedError,
  EngineClosedError,
  type ErrorData,
  FencedError,
  type InputIssue,
  InputTooLargeError,
  InvalidArgumentError,
  InvalidInputError,
  MAX_STACK_BYTES,
  NonRetryableError,
  OutputError,
  RetryAfterError,
  RunFinishedError,
  RunNotFoundError,
  StepCancelledError,
  StepTimeoutError,
  StorageFullError,
  toErrorData,
  UnknownEventError,
  UnknownWorkflowError,
  WeftError,
  WorkflowDefinitionError,
  WorkflowNotServedError,
} from "./engine/errors.ts";
export { type Clock, FakeClock, sleepOn, systemClock, type TimerHandle } from "./engine/clock.ts";
export { isTraceparent, type RunTrace, TraceAttribute } from "./engine/tracing.ts";
export {
  backoffDelayMs,
  DEFAULT_RETRY,
  type ResolvedRetryPolicy,
  type RetryPolicy,
} from "./engine/retry.ts";
export type { KeyPrefix } from "./engine/keys.ts";
export { isLockedError, type OpenKvOptions, openKvRetrying } from "./engine/open_kv.ts";
export {
  isTerminalRun,
  isTerminalStep,
  RunStatus,
  StepStatus,
  TERMINAL_RUN_STATUSES,
  TERMINAL_STEP_STATUSES,
} from "./engine/states.ts";
export type {
  AttemptErrorSnapshot,
  RunSnapshot,
  RunSummary,
  StepSnapshot,
} from "./engine/snapshot.ts";
export type { HistoryEvent, RunHistoryEvent, StepHistoryEvent } from "./engine/records.ts";
export type { ListRunsOptions } from "./engine/store.ts";
export { DEFAULT_MAX_OUTPUT_BYTES } from "./engine/output.ts";
export {
  DEFAULT_MIN_FREE_BYTES,
  type StatFs,
  type StorageState,
  StorageStatus,
} from "./engine/storage.ts";

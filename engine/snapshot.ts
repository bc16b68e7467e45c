/**
 * The public, JSON-ready view of a run: what `engine.get` returns and the
 * HTTP API serves.
 *
 * @module
 */
import type { ErrorData } from "./errors.ts";
import type { RunStatus, StepStatus } from "./states.ts";
import type { AttemptError, RunRecord, StepRecord } from "./records.ts";
import type { AnyWorkflow, StepKindName } from "../steps/workflow.ts";
import { parseItemName } from "./keys.ts";

/** One failed attempt of a step. */
export interface AttemptErrorSnapshot {
  /** The attempt, 1-based. */
  attempt: number;
  /** When it failed (ISO 8601). */
  at: string;
  /** Why. */
  error: ErrorData;
}

/** The state of one step of a run. */
export interface StepSnapshot {
  /** The step's state. */
  status: StepStatus;
  /**
   * Its kind: a `task` runs a body; a `sleep` waits for a time; a `wait` for
   * an event; a `child` for a run of another workflow; a `map` runs its body
   * once per item.
   */
  kind?: StepKindName;
  /** For a compensation or the `onFailure` handler: `"compensation"`. */
  phase?: "compensation";
  /** Why it was skipped. */
  skipReason?: string;
  /** While `sleeping` or `awaiting`: when it resumes (ISO 8601). */
  resumeAt?: string;
  /** For a wait step: the event it waits for. */
  event?: string;
  /** For a child step: the child run. */
  childRunId?: string;
  /** For a map step that started: its items, and how many succeeded, failed, are running. */
  map?: { total: number; succeeded: number; failed: number; running: number };
  /** Attempts started so far. */
  attempts: number;
  /** The steps it waits for. */
  needs: string[];
  /** When its first attempt started (ISO 8601). */
  startedAt?: string;
  /** When it reached a terminal state. */
  finishedAt?: string;
  /** When its next attempt is due, while `waiting`. */
  nextAttemptAt?: string;
  /** From first start to finish. */
  durationMs?: number;
  /** The committed output, once `succeeded`. */
  output?: unknown;
  /** The last attempt's error, if it failed. */
  error?: ErrorData;
  /** Every failed attempt's error, oldest first. */
  errors: AttemptErrorSnapshot[];
}

/** The state of a run. */
export interface RunSnapshot {
  /** The run's id (a ULID: sorts by creation time). */
  id: string;
  /** The workflow's name. */
  workflow: string;
  /** The run's state. */
  status: RunStatus;
  /** The input as parsed by the workflow's schema. */
  input: unknown;
  /**
   * Once succeeded: the output of the workflow's last step, or, when several
   * steps have no dependents, an object of their outputs by step name.
   */
  output?: unknown;
  /** Why the run failed or was cancelled. */
  error?: ErrorData;
  /** The step whose failure failed the run. */
  failedStep?: string;
  /** For a child run: the run and step that started it. */
  parent?: { runId: string; step: string };
  /** The idempotency key it was started with. */
  idempotencyKey?: string;
  /** When it was stored (ISO 8601). */
  createdAt: string;
  /** When its first step started. */
  startedAt?: string;
  /** When it ended. */
  finishedAt?: string;
  /** From creation to end. */
  durationMs?: number;
  /** Every step by name, in declaration order. */
  steps: Record<string, StepSnapshot>;
}

/** A run without its steps, for lists. */
export type RunSummary = Omit<RunSnapshot, "steps" | "input" | "output">;

const iso = (ms: number | undefined) => ms === undefined ? undefined : new Date(ms).toISOString();

/**
 * `obj` without its undefined fields, in a new object: deleting them in
 * place would turn every snapshot into a slow dictionary-mode object.
 */
function compact<T extends object>(obj: T): T {
  const out = {} as T;
  for (const k in obj) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

function attemptError(e: AttemptError): AttemptErrorSnapshot {
  return { attempt: e.attempt, at: iso(e.at)!, error: e.error };
}

/**
 * Builds a summary from a stored run.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { summarize } from "./snapshot.ts";
 * const s = summarize({ id: "r", workflow: "w", status: "pending", createdAt: 0 });
 * assert.ok(s.createdAt === "1970-01-01T00:00:00.000Z");
 * ```
 */
export function summarize(run: RunRecord): RunSummary {
  return compact({
    id: run.id,
    workflow: run.workflow,
    status: run.status,
    error: run.error,
    failedStep: run.failedStep,
    parent: run.parent,
    idempotencyKey: run.idempotencyKey,
    createdAt: iso(run.createdAt)!,
    startedAt: iso(run.startedAt),
    finishedAt: iso(run.finishedAt),
    durationMs: run.finishedAt === undefined ? undefined : run.finishedAt - run.createdAt,
  });
}

/**
 * Builds the full snapshot from stored records, the input and committed outputs.
 *
 * @param def The workflow, for step order and `needs`; steps it no longer
 * declares are still shown, after the declared ones.
 */
export function snapshotOf(
  run: RunRecord,
  input: unknown,
  steps: ReadonlyMap<string, StepRecord>,
  outputs: ReadonlyMap<string, unknown>,
  def: AnyWorkflow | undefined,
): RunSnapshot {
  const names = def ? def.steps.map((s) => s.name) : [];
  // A map's items are counted on their step, not shown one by one.
  for (const name of steps.keys()) {
    if (!names.includes(name) && !parseItemName(name)) names.push(name);
  }
  const stepViews: Record<string, StepSnapshot> = {};
  for (const name of names) {
    const rec = steps.get(name);
    const step = def?.getStep(name);
    const needs = [...(step?.needs ?? [])];
    const shape = compact({
      kind: step?.kind,
      phase: step?.phase === "compensation" ? "compensation" as const : undefined,
      event: step?.wait?.event,
    });
    if (!rec) {
      stepViews[name] = { status: "pending", ...shape, attempts: 0, needs, errors: [] };
      continue;
    }
    const last = rec.errors.at(-1);
    stepViews[name] = compact({
      status: rec.status,
      ...shape,
      skipReason: rec.status === "skipped" ? rec.skipReason : undefined,
      resumeAt: rec.status === "sleeping" || (rec.status === "awaiting" && step?.kind === "wait")
        ? iso(rec.resumeAt)
        : undefined,
      childRunId: rec.childRunId,
      map: rec.map
        ? {
          total: rec.map.total,
          succeeded: rec.map.succeeded,
          failed: rec.map.failed,
          running: rec.map.started - rec.map.succeeded - rec.map.failed,
        }
        : undefined,
      attempts: rec.attempts,
      needs,
      startedAt: iso(rec.startedAt),
      finishedAt: iso(rec.finishedAt),
      nextAttemptAt: rec.status === "waiting" ? iso(rec.nextAttemptAt) : undefined,
      durationMs: rec.finishedAt !== undefined && rec.startedAt !== undefined
        ? rec.finishedAt - rec.startedAt
        : undefined,
      output: rec.status === "succeeded" ? outputs.get(name) : undefined,
      error: rec.status === "succeeded" ? undefined : last?.error,
      errors: rec.errors.map(attemptError),
    });
  }
  let output: unknown;
  if (run.status === "succeeded" && def) {
    const forward = def.forwardSteps;
    const needed = new Set(forward.flatMap((s) => s.needs));
    const sinks = forward.filter((s) => !needed.has(s.name)).map((s) => s.name);
    output = sinks.length === 1
      ? outputs.get(sinks[0])
      : Object.fromEntries(sinks.map((s) => [s, outputs.get(s)]));
  }
  const summary = summarize(run);
  return compact({ ...summary, input, output, steps: stepViews });
}

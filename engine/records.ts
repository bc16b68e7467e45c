/**
 * What Weft stores in KV and sends on the KV queue, as zod schemas. Every
 * read from KV is parsed with these, so a corrupt or foreign value is a clear
 * error instead of undefined behaviour.
 *
 * @module
 */
import { z } from "zod";
import { RunStatus, StepStatus } from "./states.ts";
import type { ErrorData } from "./errors.ts";

const runStatus = z.enum(Object.values(RunStatus) as [RunStatus, ...RunStatus[]]);
const stepStatus = z.enum(Object.values(StepStatus) as [StepStatus, ...StepStatus[]]);

/** Schema of {@linkcode ErrorData}. */
export const errorDataSchema: z.ZodType<ErrorData> = z.lazy(() =>
  z.object({
    name: z.string(),
    message: z.string(),
    nonRetryable: z.boolean().optional(),
    details: z.record(z.string(), z.unknown()).optional(),
    cause: errorDataSchema.optional(),
    stack: z.string().optional(),
  })
);

/** A run as stored at `[p, "run", id]`. Times are epoch milliseconds. */
export const runRecordSchema = z.object({
  id: z.string(),
  workflow: z.string(),
  status: runStatus,
  /** The input, when small enough to keep in the record. */
  input: z.unknown().optional(),
  /** Where a larger input's JSON is split: `[p, "in", runId, i]` for i < inputChunks. */
  inputChunks: z.number().optional(),
  inputBytes: z.number().optional(),
  idempotencyKey: z.string().optional(),
  createdAt: z.number(),
  startedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  error: errorDataSchema.optional(),
  failedStep: z.string().optional(),
  /** While `compensating`: the status the run ends with once its compensations are done. */
  endsAs: z.enum(["failed", "cancelled"]).optional(),
  /** For a child run: the run and step that started it. */
  parent: z.object({ runId: z.string(), step: z.string() }).optional(),
  /** The W3C trace context of the run's start span; absent in records older than tracing. */
  trace: z.object({ traceparent: z.string(), tracestate: z.string().optional() }).optional(),
});
/** A stored run. */
export type RunRecord = z.infer<typeof runRecordSchema>;

/** Where a committed output lives. */
export const outputRefSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("inline"), json: z.string() }),
  z.object({
    kind: z.literal("chunks"),
    attempt: z.number(),
    chunks: z.number(),
    bytes: z.number(),
  }),
  /** A map step's output: its items' outputs, in item order, read from their records. */
  z.object({ kind: z.literal("items"), count: z.number(), tolerant: z.boolean() }),
]);
/** A reference to a committed output. */
export type OutputRef = z.infer<typeof outputRefSchema>;

/** One failed attempt, kept on the step. */
export const attemptErrorSchema = z.object({
  attempt: z.number(),
  at: z.number(),
  error: errorDataSchema,
});
/** One failed attempt. */
export type AttemptError = z.infer<typeof attemptErrorSchema>;

/** A step of a run as stored at `[p, "step", runId, name]`. */
export const stepRecordSchema = z.object({
  status: stepStatus,
  /** Attempts started so far. */
  attempts: z.number(),
  startedAt: z.number().optional(),
  attemptStartedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  nextAttemptAt: z.number().optional(),
  errors: z.array(attemptErrorSchema),
  output: outputRefSchema.optional(),
  /** Attempts abandoned by a graceful shutdown; they do not count against maxAttempts. */
  uncharged: z.number().optional(),
  /** While `sleeping` or `awaiting`: when it resumes (the sleep's end, the wait's timeout). */
  resumeAt: z.number().optional(),
  /** Why it was `skipped`. */
  skipReason: z.string().optional(),
  /** For a child step: the child run it started. */
  childRunId: z.string().optional(),
  /** For a map step: how many items it has, and how many started, succeeded, failed. */
  map: z.object({
    total: z.number(),
    started: z.number(),
    succeeded: z.number(),
    failed: z.number(),
  }).optional(),
});
/** A stored step. */
export type StepRecord = z.infer<typeof stepRecordSchema>;

/** A run's transition. */
export interface RunHistoryEvent {
  /** Discriminator. */
  type: "run";
  /** Position in the run's history, from 0. */
  seq: number;
  /** When, in epoch milliseconds. */
  at: number;
  /** The state before; `null` when the run was created. */
  from: RunStatus | null;
  /** The state after. */
  to: RunStatus;
  /** Why the run failed or was cancelled. */
  error?: ErrorData;
  /** From creation to end, on a terminal transition. */
  durationMs?: number;
}

/** A step's transition. */
export interface StepHistoryEvent {
  /** Discriminator. */
  type: "step";
  /** Position in the run's history, from 0. */
  seq: number;
  /** When, in epoch milliseconds. */
  at: number;
  /** The step. */
  step: string;
  /** The state before. */
  from: StepStatus;
  /** The state after. */
  to: StepStatus;
  /** The attempt this transition belongs to (0 if none started). */
  attempt: number;
  /** The attempt's error, when it failed. */
  error?: ErrorData;
  /** When the next attempt is due, when it will be retried. */
  nextAttemptAt?: number;
  /** How long the attempt ran, when it ended (succeeded or failed). */
  durationMs?: number;
}

/** One transition in a run's history. */
export type HistoryEvent = RunHistoryEvent | StepHistoryEvent;

/**
 * A run's first history event: created, `pending`. It says nothing its run
 * record does not (`createdAt`), so it is not stored; reads of the history
 * put it back.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { creationEvent, isCreationEvent } from "./records.ts";
 * const event = creationEvent({ id: "r", workflow: "wf", status: "running", createdAt: 7 });
 * assert.deepEqual(event, { type: "run", seq: 0, at: 7, from: null, to: "pending" });
 * assert.ok(isCreationEvent(event));
 * ```
 */
export function creationEvent(run: RunRecord): RunHistoryEvent {
  return { type: "run", seq: 0, at: run.createdAt, from: null, to: "pending" };
}

/** Whether `event` is a run's {@linkcode creationEvent}. */
export function isCreationEvent(event: HistoryEvent): boolean {
  return event.type === "run" && event.from === null;
}

/** Schema of {@linkcode HistoryEvent}; history is stored at `[p, "hist", runId, seq]`. */
export const historyEventSchema: z.ZodType<HistoryEvent> = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("run"),
    seq: z.number(),
    at: z.number(),
    from: runStatus.nullable(),
    to: runStatus,
    error: errorDataSchema.optional(),
    durationMs: z.number().optional(),
  }),
  z.object({
    type: z.literal("step"),
    seq: z.number(),
    at: z.number(),
    step: z.string(),
    from: stepStatus,
    to: stepStatus,
    attempt: z.number(),
    error: errorDataSchema.optional(),
    nextAttemptAt: z.number().optional(),
    durationMs: z.number().optional(),
  }),
]);

/**
 * Who holds an unfinished run, stored at `[p, "active", runId]`: a worker
 * (`owner`), or nobody, with the run waiting in the due index until `dueAt`.
 * Legacy files of Weft 1 hold `true` here; they read as due at once.
 */
export const schedRecordSchema = z.union([
  z.object({ owner: z.string() }),
  z.object({ dueAt: z.number() }),
  z.literal(true).transform(() => ({ dueAt: 0 })),
]);
/** Who holds an unfinished run. */
export type SchedRecord = { owner: string } | { dueAt: number };

/** A live worker, at `[p, "worker", id]`. Its versionstamp is the worker's fence. */
export const workerRecordSchema = z.object({
  id: z.string(),
  /** Where it runs, to tell a dead process on this host at once. */
  host: z.string().optional(),
  pid: z.number().optional(),
  startedAt: z.number(),
});
/** A live worker. */
export type WorkerRecord = z.infer<typeof workerRecordSchema>;

/** A worker's heartbeat, at `[p, "hb", id]`: it changes every beat. */
export const heartbeatSchema = z.object({ at: z.number(), beat: z.number() });
/** A worker's heartbeat. */
export type Heartbeat = z.infer<typeof heartbeatSchema>;

/** A request to the worker that holds a run, at `[p, "inbox", owner, runId]`. */
export const inboxMessageSchema = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("cancel"), reason: z.string(), at: z.number() }),
  /** Events were delivered to the run: its wait steps look at its mailbox. */
  z.object({ kind: z.literal("event"), at: z.number() }),
]);
/** A request to the worker that holds a run. */
export type InboxMessage = z.infer<typeof inboxMessageSchema>;

/**
 * An event delivered to a run and not yet taken by a wait step, at
 * `[p, "evt", runId, eventId]` (ids are ULIDs: oldest first).
 */
export const runEventSchema = z.object({
  /** The event's name, as a wait step names it. */
  event: z.string(),
  /** The payload, as the wait step's schema parsed it. */
  payload: z.unknown(),
  /** The sender's idempotency key, if any. */
  key: z.string().optional(),
  /** When it was delivered, in epoch milliseconds. */
  at: z.number(),
});
/** An event waiting in a run's mailbox. */
export type RunEvent = z.infer<typeof runEventSchema> & { id: string };

/** Messages on the KV queue. */
export const queueMessageSchema = z.discriminatedUnion("weft", [
  /** Look at every unfinished run and start whatever is ready or due. */
  z.object({ weft: z.literal("sweep") }),
  /** Look at these runs and start whatever is ready or due. */
  z.object({ weft: z.literal("wake"), runIds: z.array(z.string()) }),
]);
/** A message on the KV queue. */
export type QueueMessage = z.infer<typeof queueMessageSchema>;

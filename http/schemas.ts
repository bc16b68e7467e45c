/**
 * The zod schemas of the HTTP API: path and query parameters and headers
 * (which validate requests) and response bodies (which document them). The
 * OpenAPI document is generated from these same schemas.
 *
 * @module
 */
import { z } from "zod";
import {
  type ErrorData,
  NAME_PATTERN,
  type RunSnapshot,
  RunStatus,
  type RunSummary,
  STEP_KINDS,
  type StepSnapshot,
  StepStatus,
} from "../mod.ts";
import { ErrorCode } from "./errors.ts";

/** Metadata of the API's schemas: `id` makes a schema a named OpenAPI component. */
export interface ApiSchemaMeta {
  /** The component name, such as `"RunSnapshot"`. */
  id?: string;
  /** What the schema describes. */
  description?: string;
}

/**
 * The registry holding the API's component names and descriptions. It is
 * filled once, when this module loads, and only read afterwards.
 */
export const apiRegistry: z.core.$ZodRegistry<ApiSchemaMeta> = z.registry<ApiSchemaMeta>();

function meta<T extends z.ZodType>(schema: T, data: ApiSchemaMeta): T {
  apiRegistry.add(schema, data);
  return schema;
}

/** The pattern of workflow names (and step names), as the engine enforces it. */
export const WORKFLOW_NAME_PATTERN: RegExp = NAME_PATTERN;
/** The pattern of run ids: ULIDs, 26 characters of Crockford's base32. */
export const RUN_ID_PATTERN: RegExp = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** A workflow name. */
export const WorkflowName = meta(
  z.string().regex(WORKFLOW_NAME_PATTERN, "Must be a workflow name: 1-64 URL-safe characters"),
  { description: "A workflow name: letters, digits, '_', '.' and '-', 1 to 64 characters" },
);

/** A run id. */
export const RunId = meta(
  z.string().regex(RUN_ID_PATTERN, "Must be a run id: a ULID of 26 characters"),
  { description: "A run id: a ULID (26 characters of Crockford's base32, upper case)" },
);

/** A decimal integer in a query string, from `min` to `max`. */
function queryInt(min: number, max: number) {
  return z.string()
    .regex(/^(0|[1-9][0-9]{0,8})$/, "Must be a decimal integer")
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));
}

/** Path parameters of `/workflows/{name}` routes. */
export const WorkflowParams = z.strictObject({ name: WorkflowName });
/**
 * A run id in a path. Not checked against the ULID pattern here: an id that
 * names no run, malformed or not, is a 404 (the engine's `RunNotFoundError`,
 * whose message then says what run ids look like), never a 400.
 */
export const RunIdParam = meta(z.string(), {
  description: "A run id: a ULID (26 characters of Crockford's base32, upper case). " +
    "Any other value names no run and is answered 404",
});

/** Path parameters of `/runs/{id}/events/{event}`. */
export const EventParams = z.strictObject({
  id: RunIdParam,
  event: meta(
    z.string().regex(WORKFLOW_NAME_PATTERN, "Must be an event name: 1-64 URL-safe characters"),
    { description: "The event's name, as the workflow's wait step names it" },
  ),
});
/** The headers of `POST /runs/{id}/events/{event}`. */
export const EventHeaders = z.object({
  "Idempotency-Key": meta(z.string().min(1).max(512).optional(), {
    description: "Sending again with the same key to the same run delivers nothing (200)",
  }),
});
/** The body of `POST /runs/{id}/events/{event}`. */
export const EventPayload = meta(z.unknown(), {
  id: "EventPayload",
  description: "The event's payload, checked against the wait step's schema",
});
/** The answer of `POST /runs/{id}/events/{event}`. */
export const SignalResultSchema = meta(
  z.object({
    runId: RunId,
    event: z.string(),
    eventId: z.string(),
    duplicate: z.boolean(),
  }),
  { id: "SignalResult", description: "The event stored in the run's mailbox" },
);
/** Path parameters of `/runs/{id}` routes. */
export const RunParams = z.strictObject({ id: RunIdParam });
/** The query of routes that take none: any parameter is an error. */
export const NoQuery = z.strictObject({});

/** The default page size of `GET /runs`. */
export const DEFAULT_LIST_LIMIT = 50;

/** The query of `GET /runs`. */
export const ListRunsQuery = z.strictObject({
  workflow: WorkflowName.optional(),
  status: meta(z.enum(RunStatus).optional(), { description: "Only runs in this state" }),
  limit: meta(queryInt(1, 1000).optional(), {
    description: `Page size, 1 to 1000; ${DEFAULT_LIST_LIMIT} when absent`,
  }),
  cursor: meta(z.string().min(1).max(2048).optional(), {
    description: "The `nextCursor` of the previous page, with the same filters",
  }),
});

/** The default time `GET /runs/{id}/wait` waits. */
export const DEFAULT_WAIT_MS = 30_000;
/** The longest `GET /runs/{id}/wait` waits; larger `timeoutMs` values are capped to it. */
export const MAX_WAIT_MS = 60_000;

/** The query of `GET /runs/{id}/wait`. */
export const WaitQuery = z.strictObject({
  timeoutMs: meta(
    z.string()
      .regex(/^(0|[1-9][0-9]{0,8})$/, "Must be a decimal integer")
      .transform((s) => Math.min(Number(s), MAX_WAIT_MS)),
    {
      description:
        `How long to wait for the run to end, in ms; ${DEFAULT_WAIT_MS} when absent, at most ${MAX_WAIT_MS}`,
    },
  ).optional(),
});

/** The headers `POST /workflows/{name}/runs` reads. */
export const StartHeaders = z.object({
  "Idempotency-Key": meta(z.string().min(1).max(512).optional(), {
    description:
      "Starting again with the same key and workflow returns the first run (200) instead of creating one",
  }),
});

// ---------------------------------------------------------------- bodies

/** A run's input: any JSON value, checked against the workflow's input schema. */
export const RunInput = meta(z.unknown(), {
  id: "RunInput",
  description:
    "The run's input: any JSON value, validated against the workflow's `inputSchema` (see GET /workflows/{name})",
});

/** An error stored by the engine, as data, with where it was thrown. */
export const ErrorDataSchema = meta(
  z.object({
    name: z.string(),
    message: z.string(),
    nonRetryable: z.boolean().optional(),
    details: z.record(z.string(), z.unknown()).optional(),
    get cause(): z.ZodOptional<typeof ErrorDataSchema> {
      return ErrorDataSchema.optional();
    },
    stack: z.string().optional().meta({
      description:
        "Where it was thrown (at most 4 KB with its causes'). The API is only open to authenticated clients when a token is set.",
    }),
  }),
  { id: "ErrorData", description: "An error of a step or run, as data" },
);

const isoTime = z.iso.datetime();

/** The state of one step of a run. */
export const StepSnapshotSchema = meta(
  z.object({
    status: z.enum(StepStatus),
    kind: meta(z.enum(STEP_KINDS).optional(), {
      description:
        "task: runs a body; sleep: waits for a time; wait: waits for an event; child: runs another workflow; map: runs its body per item",
    }),
    phase: meta(z.literal("compensation").optional(), {
      description: "Set on compensations and the onFailure handler",
    }),
    skipReason: meta(z.string().optional(), { description: "Why the step was skipped" }),
    resumeAt: meta(isoTime.optional(), {
      description:
        "While sleeping or awaiting: when the step resumes (the sleep's end, the wait's timeout)",
    }),
    event: meta(z.string().optional(), { description: "The event a wait step waits for" }),
    childRunId: meta(RunId.optional(), { description: "The child run a child step started" }),
    map: meta(
      z.object({
        total: z.number().int(),
        succeeded: z.number().int(),
        failed: z.number().int(),
        running: z.number().int(),
      }).optional(),
      { description: "A map step's items: how many in all, succeeded, failed, in flight" },
    ),
    attempts: z.number().int(),
    needs: z.array(z.string()),
    startedAt: isoTime.optional(),
    finishedAt: isoTime.optional(),
    nextAttemptAt: isoTime.optional(),
    durationMs: z.number().optional(),
    output: z.unknown().optional(),
    error: ErrorDataSchema.optional(),
    errors: z.array(z.object({ attempt: z.number().int(), at: isoTime, error: ErrorDataSchema })),
  }),
  { id: "StepSnapshot", description: "The state of one step; `output` once succeeded" },
);

const runSummaryShape = {
  id: RunId,
  workflow: z.string(),
  status: z.enum(RunStatus),
  error: ErrorDataSchema.optional(),
  failedStep: z.string().optional(),
  parent: meta(z.object({ runId: RunId, step: z.string() }).optional(), {
    description: "For a child run: the run and step that started it",
  }),
  idempotencyKey: z.string().optional(),
  createdAt: isoTime,
  startedAt: isoTime.optional(),
  finishedAt: isoTime.optional(),
  durationMs: z.number().optional(),
};

/** A run without its steps, input and output. */
export const RunSummarySchema = meta(z.object(runSummaryShape), {
  id: "RunSummary",
  description: "A run without its steps, input and output",
});

/** The full state of a run. */
export const RunSnapshotSchema = meta(
  z.object({
    ...runSummaryShape,
    input: z.unknown(),
    output: z.unknown().optional(),
    steps: z.record(z.string(), StepSnapshotSchema),
  }),
  { id: "RunSnapshot", description: "The state of a run and of each of its steps, by name" },
);

/** One page of runs, newest first. */
export const RunPageSchema = meta(
  z.object({ runs: z.array(RunSummarySchema), nextCursor: z.string().nullable() }),
  { id: "RunPage", description: "One page of runs, newest first; `nextCursor` is null at the end" },
);

/** A step as `GET /workflows` describes it. */
export const StepInfoSchema = meta(
  z.object({
    name: z.string(),
    needs: z.array(z.string()),
    timeoutMs: z.number(),
    retry: z.object({
      maxAttempts: z.number().int(),
      initialDelayMs: z.number(),
      backoffFactor: z.number(),
      maxDelayMs: z.number(),
      jitter: z.number(),
    }),
    concurrency: z.number().int().nullable(),
    kind: meta(z.enum(STEP_KINDS), {
      description:
        "task: runs a body; sleep: waits for a time; wait: waits for an event; child: runs another workflow; map: runs its body per item",
    }),
    childWorkflow: meta(z.string().optional(), {
      description: "The workflow a child step runs",
    }),
    phase: meta(z.enum(["forward", "compensation"]), {
      description: "compensation: a compensation or the onFailure handler, run when the run fails",
    }),
    conditional: meta(z.boolean(), { description: "Whether the step has a condition (`when`)" }),
    skippedNeeds: meta(z.enum(["skip", "run"]), {
      description: "What the step does when a step it needs was skipped",
    }),
    compensates: meta(z.string().optional(), { description: "The step a compensation undoes" }),
    event: meta(z.string().optional(), { description: "The event a wait step waits for" }),
    eventSchema: meta(z.record(z.string(), z.unknown()).optional(), {
      description: "The JSON Schema of the event's payload",
    }),
    waitTimeoutMs: meta(z.number().nullable().optional(), {
      description: "How long a wait step waits; null for ever",
    }),
  }),
  { id: "StepInfo", description: "A step's definition; `concurrency` is null when unlimited" },
);

/** A workflow as `GET /workflows` describes it. */
export const WorkflowInfoSchema = meta(
  z.object({
    name: z.string(),
    description: z.string().optional(),
    steps: z.array(StepInfoSchema),
    inputSchema: z.record(z.string(), z.unknown()),
  }),
  {
    id: "WorkflowInfo",
    description: "A served workflow; `inputSchema` is the JSON Schema of its input",
  },
);

/** The body of `GET /workflows`. */
export const WorkflowListSchema = meta(z.object({ workflows: z.array(WorkflowInfoSchema) }), {
  id: "WorkflowList",
  description: "Every served workflow",
});

/** The body of `GET /healthz`. */
export const HealthSchema = meta(
  z.object({
    ok: z.literal(true),
    status: z.enum(["ok", "degraded"]).describe(
      "`degraded` while the store takes no new work (its disk is full or below the reserve)",
    ),
    storage: z.object({
      status: z.enum(["ok", "low", "full"]),
      freeBytes: z.number().int().nullable().describe("Free bytes at the last look, if watched"),
      minFreeBytes: z.number().int().describe("The reserve below which no new work is taken"),
    }),
  }),
  {
    id: "Health",
    description: "The server is alive; reads answer even when it is degraded",
  },
);

/** The body of `GET /openapi.json`. */
export const OpenApiDocumentSchema = meta(z.record(z.string(), z.unknown()), {
  id: "OpenApiDocument",
  description: "An OpenAPI 3.1 document",
});

/** The body of every error response. */
export const ErrorBodySchema = meta(
  z.object({
    error: z.object({
      code: z.enum(ErrorCode),
      message: z.string(),
      issues: z.array(z.object({
        code: z.string(),
        path: z.array(z.union([z.string(), z.number()])),
        message: z.string(),
      })).optional(),
    }),
  }),
  { id: "ErrorBody", description: "An error; `issues` lists zod's issues for invalid input" },
);

// The response schemas must describe exactly what the engine returns: these
// fail to compile when the engine's types and the schemas drift apart.
type Same<A, B> = [A, keyof A] extends [B, keyof B]
  ? ([B, keyof B] extends [A, keyof A] ? true : false)
  : false;
const _errorDataMatches: Same<z.output<typeof ErrorDataSchema>, ErrorData> = true;
const _stepMatches: Same<z.output<typeof StepSnapshotSchema>, StepSnapshot> = true;
const _summaryMatches: Same<z.output<typeof RunSummarySchema>, RunSummary> = true;
const _snapshotMatches: Same<z.output<typeof RunSnapshotSchema>, RunSnapshot> = true;

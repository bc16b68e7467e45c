/**
 * The API's routes: health, workflows, runs. Each is a documented
 * {@linkcode RouteSpec} plus a handler that calls the engine.
 *
 * @module
 */
import type { Hono } from "hono";
import { z } from "zod";
import {
  type AnyWorkflow,
  type Engine,
  isTerminalRun,
  isTraceparent,
  type RunSnapshot,
} from "../mod.ts";
import { readJsonBody } from "./body.ts";
import { ApiError, ErrorCode } from "./errors.ts";
import { addRoute, type ResponseSpec, type RouteSpec } from "./route.ts";
import {
  DEFAULT_LIST_LIMIT,
  DEFAULT_WAIT_MS,
  ErrorBodySchema,
  EventHeaders,
  EventParams,
  EventPayload,
  HealthSchema,
  ListRunsQuery,
  MAX_WAIT_MS,
  RunInput,
  RunPageSchema,
  RunParams,
  RunSnapshotSchema,
  RunSummarySchema,
  SignalResultSchema,
  StartHeaders,
  WaitQuery,
  WorkflowInfoSchema,
  WorkflowListSchema,
  WorkflowParams,
} from "./schemas.ts";

/** What the routes need. */
export interface RouteDeps {
  /** The engine that runs the workflows. */
  engine: Engine;
  /** Aborts long polls, so that a shutting-down server need not wait for them. */
  shutdownSignal?: AbortSignal;
}

/** A workflow as `GET /workflows` describes it. */
export type WorkflowInfo = z.output<typeof WorkflowInfoSchema>;

function inputJsonSchema(schema: unknown): Record<string, unknown> {
  // Only zod schemas can be rendered; any other `safeParse` schema accepts "anything" here.
  if (!(schema instanceof z.core.$ZodType)) return {};
  try {
    return z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as Record<
      string,
      unknown
    >;
  } catch {
    return {};
  }
}

/**
 * Describes a workflow for `GET /workflows`: its steps' options and the JSON
 * Schema of its input (`{}` when the schema cannot be rendered).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { workflow } from "../mod.ts";
 * import { describeWorkflow } from "./routes.ts";
 * const wf = workflow("hello", { input: z.object({ name: z.string() }) }).step("greet", () => 1);
 * assert.ok(describeWorkflow(wf).steps[0].name === "greet");
 * ```
 */
export function describeWorkflow(wf: AnyWorkflow): WorkflowInfo {
  return {
    name: wf.name,
    ...(wf.description === undefined ? {} : { description: wf.description }),
    steps: wf.steps.map((s) => ({
      name: s.name,
      needs: [...s.needs],
      timeoutMs: s.timeoutMs,
      retry: { ...s.retry },
      concurrency: Number.isFinite(s.concurrency) ? s.concurrency : null,
      kind: s.kind,
      phase: s.phase,
      conditional: s.when !== undefined,
      skippedNeeds: s.skippedNeeds,
      ...(s.compensates === undefined ? {} : { compensates: s.compensates }),
      ...(s.wait
        ? {
          event: s.wait.event,
          eventSchema: inputJsonSchema(s.wait.schema),
          waitTimeoutMs: Number.isFinite(s.wait.timeoutMs) ? s.wait.timeoutMs : null,
        }
        : {}),
    })),
    inputSchema: inputJsonSchema(wf.input),
  };
}

const error = (description: string): ResponseSpec => ({ description, schema: ErrorBodySchema });

const NO_SUCH_RUN =
  "No run has that id, well-formed or not (the message says when it is not a 26-character ULID)";

/**
 * Registers every API route on `app` and returns their specs, in the order of
 * the API's table.
 */
export function addApiRoutes(app: Hono, deps: RouteDeps): RouteSpec[] {
  const { engine } = deps;
  const infos = new Map(engine.workflows.map((wf) => [wf.name, describeWorkflow(wf)]));

  /** Refuses to wait for or cancel a live run that this server cannot drive. */
  const requireServed = (run: RunSnapshot, action: string) => {
    if (!isTerminalRun(run.status) && !infos.has(run.workflow)) {
      throw new ApiError(
        409,
        ErrorCode.Conflict,
        `Cannot ${action} run '${run.id}' as this server does not serve its workflow '${run.workflow}'`,
      );
    }
  };

  const specs: RouteSpec[] = [];

  specs.push(addRoute(app, {
    method: "get",
    path: "/healthz",
    operationId: "health",
    summary: "Liveness",
    description: "Answers without a token, for load balancers and orchestrators. " +
      "It answers 200 while degraded too: reads still work, and a restart would not free space.",
    auth: false,
    responses: { 200: { description: "The server is alive", schema: HealthSchema } },
  }, (c) => {
    const { storage } = engine.stats();
    return c.json({
      ok: true as const,
      status: storage.status === "ok" ? "ok" as const : "degraded" as const,
      storage,
    });
  }));

  specs.push(addRoute(app, {
    method: "get",
    path: "/workflows",
    operationId: "listWorkflows",
    summary: "List served workflows",
    responses: {
      200: { description: "Every served workflow", schema: WorkflowListSchema },
      400: error("A query parameter was given"),
    },
  }, (c) => c.json({ workflows: [...infos.values()] })));

  specs.push(addRoute(app, {
    method: "get",
    path: "/workflows/{name}",
    operationId: "getWorkflow",
    summary: "One workflow",
    params: WorkflowParams,
    responses: {
      200: { description: "The workflow", schema: WorkflowInfoSchema },
      400: error("The name is not a valid workflow name, or a query parameter was given"),
      404: error("No served workflow has that name"),
    },
  }, (c, { params }) => {
    const info = infos.get(params.name);
    if (!info) throw new ApiError(404, ErrorCode.NotFound, `Unknown workflow '${params.name}'`);
    return c.json(info);
  }));

  specs.push(addRoute(app, {
    method: "post",
    path: "/workflows/{name}/runs",
    operationId: "startRun",
    summary: "Start a run",
    description:
      "The body is the run's input as JSON. It is accepted with a JSON content type, with none, " +
      "or with `application/x-www-form-urlencoded` or `text/plain` (what curl's `-d` and " +
      "`fetch` send by default); other content types are refused with `invalid_json`.",
    params: WorkflowParams,
    headers: StartHeaders,
    body: { schema: RunInput, required: true, description: "The run's input" },
    responses: {
      201: {
        description: "The run was created",
        schema: RunSummarySchema,
        headers: { Location: "The run's URL: /runs/{id}" },
      },
      200: {
        description: "The idempotency key was used before: the run it started",
        schema: RunSummarySchema,
        headers: { Location: "The run's URL: /runs/{id}" },
      },
      400: error(
        "Invalid JSON (`invalid_json`) or invalid input, name or header (`invalid_input`, with zod's issues)",
      ),
      403: error("A cross-origin request from a browser"),
      404: error("No served workflow has that name"),
      413: error("The body or the input is larger than the limit"),
      503: error("The store is out of space (or the server is shutting down): nothing was stored"),
    },
  }, async (c, { params, headers }) => {
    if (!infos.has(params.name)) {
      throw new ApiError(404, ErrorCode.NotFound, `Unknown workflow '${params.name}'`);
    }
    const input = await readJsonBody(c);
    // A malformed trace context is ignored, as W3C Trace Context asks.
    const traceparent = c.req.header("traceparent");
    const { created, ...summary } = await engine.start(params.name, input, {
      idempotencyKey: headers["Idempotency-Key"],
      ...(isTraceparent(traceparent)
        ? { traceparent, tracestate: c.req.header("tracestate")?.slice(0, 512) }
        : {}),
    });
    c.header("Location", `/runs/${summary.id}`);
    return c.json(summary, created ? 201 : 200);
  }));

  specs.push(addRoute(app, {
    method: "get",
    path: "/runs/{id}",
    operationId: "getRun",
    summary: "A run's status, output and steps",
    params: RunParams,
    responses: {
      200: { description: "The run", schema: RunSnapshotSchema },
      400: error("A query parameter was given"),
      404: error(NO_SUCH_RUN),
    },
  }, async (c, { params }) => c.json(await engine.get(params.id))));

  specs.push(addRoute(app, {
    method: "get",
    path: "/runs",
    operationId: "listRuns",
    summary: "List runs, newest first",
    description: `Pages of ${DEFAULT_LIST_LIMIT} runs unless \`limit\` says otherwise.`,
    query: ListRunsQuery,
    responses: {
      200: { description: "One page of runs", schema: RunPageSchema },
      400: error("A bad filter, limit or cursor, or an unknown query parameter"),
    },
  }, async (c, { query }) => c.json(await engine.list(query))));

  specs.push(addRoute(app, {
    method: "get",
    path: "/runs/{id}/wait",
    operationId: "waitForRun",
    summary: "Long-poll until the run ends or the timeout passes",
    description:
      `Answers with the run as soon as it is terminal, or as it is when \`timeoutMs\` passes ` +
      `(default ${DEFAULT_WAIT_MS}, at most ${MAX_WAIT_MS}).`,
    params: RunParams,
    query: WaitQuery,
    responses: {
      200: { description: "The run, terminal or not", schema: RunSnapshotSchema },
      400: error("timeoutMs is invalid, or an unknown query parameter"),
      404: error(NO_SUCH_RUN),
      409: error("The run is live but this server does not serve its workflow"),
    },
  }, async (c, { params, query }) => {
    const run = await engine.get(params.id);
    const timeoutMs = query.timeoutMs ?? DEFAULT_WAIT_MS;
    if (isTerminalRun(run.status) || timeoutMs === 0) return c.json(run);
    requireServed(run, "wait for");
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), timeoutMs);
    const signals = [timeout.signal, c.req.raw.signal];
    if (deps.shutdownSignal) signals.push(deps.shutdownSignal);
    const signal = AbortSignal.any(signals);
    try {
      return c.json(await engine.result(params.id, { signal }));
    } catch (e) {
      if (signal.aborted) return c.json(await engine.get(params.id));
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }));

  specs.push(addRoute(app, {
    method: "post",
    path: "/runs/{id}/cancel",
    operationId: "cancelRun",
    summary: "Cancel a run",
    description: "Aborts its running steps and starts no more. Any request body is ignored.",
    params: RunParams,
    responses: {
      202: { description: "The run, now cancelled", schema: RunSnapshotSchema },
      400: error("A query parameter was given"),
      403: error("A cross-origin request from a browser"),
      404: error(NO_SUCH_RUN),
      409: error("The run has already finished, or this server does not serve its workflow"),
      503: error("The store is out of space (or the server is shutting down)"),
    },
  }, async (c, { params }) => {
    requireServed(await engine.get(params.id), "cancel");
    return c.json(await engine.cancel(params.id), 202);
  }));

  // The payload schemas of every event a served workflow waits for, for the document.
  const eventSchemas = [...infos.values()].flatMap((wf) =>
    wf.steps.filter((s) => s.event !== undefined).map((s) => ({
      title: `${wf.name} / ${s.event}`,
      ...s.eventSchema,
    }))
  );
  specs.push(addRoute(app, {
    method: "post",
    path: "/runs/{id}/events/{event}",
    operationId: "sendEvent",
    summary: "Send an event to a run",
    description:
      "Stores the event in the run's mailbox: a wait step for it that is waiting ends with " +
      "its payload, and one that starts later finds it. The body is the payload as JSON, " +
      "checked against the schema of the wait step (one schema per workflow and event, " +
      "listed here and in `GET /workflows`).",
    params: EventParams,
    headers: EventHeaders,
    body: {
      schema: EventPayload,
      required: true,
      description: "The event's payload",
      jsonSchema: eventSchemas.length > 0 ? { anyOf: eventSchemas } : {},
    },
    responses: {
      202: { description: "The event was stored for the run", schema: SignalResultSchema },
      200: {
        description: "The Idempotency-Key was used before for this run: nothing was delivered",
        schema: SignalResultSchema,
      },
      400: error("Invalid JSON, or a payload that does not match the schema (with zod's issues)"),
      403: error("A cross-origin request from a browser"),
      404: error("No run has that id, or its workflow has no step that waits for the event"),
      409: error("The run has finished, or this server does not serve its workflow"),
      413: error("The payload is larger than the limit"),
    },
  }, async (c, { params, headers }) => {
    const payload = await readJsonBody(c);
    const result = await engine.signal(params.id, params.event, payload, {
      key: headers["Idempotency-Key"],
    });
    return c.json(result, result.duplicate ? 200 : 202);
  }));

  return specs;
}

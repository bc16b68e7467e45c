/**
 * The web dashboard as a Hono app: the run list at `GET /`, run pages under
 * `/ui/runs/:id` (with the cancel and send-event forms), the start form at
 * `/ui/start`, and their static assets.
 * Server-rendered with Hono's JSX; the run page's only script follows
 * `GET /runs/:id/events` (see `observability/events.ts`).
 *
 * @module
 */
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { getCookie } from "hono/cookie";
import { csrf } from "hono/csrf";
import type { HtmlEscapedString } from "hono/utils/html";
import {
  type Engine,
  InputTooLargeError,
  InvalidArgumentError,
  InvalidInputError,
  isTerminalRun,
  RunFinishedError,
  RunNotFoundError,
  type RunSnapshot,
  RunStatus,
  StorageFullError,
  UnknownEventError,
  UnknownWorkflowError,
} from "../mod.ts";
import { SESSION_COOKIE } from "../http/auth.ts";
import { exceedsDepth, MAX_JSON_DEPTH } from "../http/body.ts";
import { FAVICON_SVG, RUN_JS, STYLE_CSS } from "./assets.ts";
import { exampleOf, inputJsonSchema, jsonSchemaOf } from "./input_schema.ts";
import {
  ErrorPage,
  type EventFormProps,
  type FormIssue,
  RunBody,
  type RunBodyProps,
  RunPage,
  RunPart,
  RunsPage,
  SignedIn,
  StartPage,
} from "./pages.tsx";

/** What the dashboard needs of an engine. */
export type DashboardEngine = Pick<
  Engine,
  "workflows" | "list" | "get" | "start" | "cancel" | "signal"
>;

/** Options of {@linkcode dashboardRoutes}. */
export interface DashboardOptions {
  /** The clock for ages, in epoch milliseconds. @default {Date.now} */
  now?: () => number;
  /** Runs per page of the list. @default {25} */
  pageSize?: number;
  /** Largest start-form or event-form body accepted, in bytes. @default {1048576} */
  maxFormBytes?: number;
}

/** The headers of every dashboard page: only its own script, style and forms. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; " +
    "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; " +
    "frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "same-origin",
  "Cache-Control": "no-store",
};

type Status = 200 | 400 | 404 | 409 | 413 | 422 | 503;

/** The most child runs whose status a parent's page reads. */
const MAX_CHILD_LOOKUPS = 50;

const runHref = (id: string) => `/ui/runs/${encodeURIComponent(id)}`;

async function page(
  c: Context,
  node: HtmlEscapedString | Promise<HtmlEscapedString>,
  status: Status = 200,
): Promise<Response> {
  // The auth middleware, which runs first, has checked the cookie when a token is set.
  const signedIn = getCookie(c, SESSION_COOKIE) !== undefined;
  return c.html(
    await <SignedIn.Provider value={signedIn}>{node}</SignedIn.Provider>,
    status,
    SECURITY_HEADERS,
  );
}

/**
 * The dashboard's routes. Mount with `app.route("/", dashboardRoutes(engine))`
 * next to the run events route; the form posts are guarded against
 * cross-site requests by Hono's `csrf` middleware (same origin only).
 *
 * @throws {InvalidArgumentError} on a page size outside 1..1000.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * import { dashboardRoutes } from "./routes.tsx";
 * const hello = workflow("hello", { input: z.object({}) }).step("greet", () => "hi");
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const res = await dashboardRoutes(engine).request("/");
 * assert.ok(res.status === 200 && (await res.text()).includes("<h1>Runs</h1>"));
 * await engine.close();
 * kv.close();
 * ```
 */
export function dashboardRoutes(engine: DashboardEngine, options: DashboardOptions = {}): Hono {
  const now = options.now ?? Date.now;
  const pageSize = options.pageSize ?? 25;
  if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000) {
    throw new InvalidArgumentError(
      `Cannot create dashboard as 'pageSize' must be an integer from 1 to 1000: current value is ${pageSize}`,
    );
  }
  const workflowNames = () => engine.workflows.map((w) => w.name);
  const app = new Hono();

  app.use("/ui/*", csrf());

  app.get("/", async (c) => {
    const workflow = c.req.query("workflow") || undefined;
    const rawStatus = c.req.query("status") || undefined;
    const cursor = c.req.query("cursor") || undefined;
    const base = { workflows: workflowNames(), workflow, status: rawStatus, nowMs: now() };
    if (rawStatus && !(Object.values(RunStatus) as string[]).includes(rawStatus)) {
      return page(
        c,
        <RunsPage
          {...base}
          runs={[]}
          nextCursor={null}
          error={`Unknown status '${rawStatus}': use one of ${Object.values(RunStatus).join(", ")}`}
        />,
        400,
      );
    }
    try {
      const { runs, nextCursor } = await engine.list({
        workflow,
        status: rawStatus as RunStatus | undefined,
        cursor,
        limit: pageSize,
      });
      return page(c, <RunsPage {...base} runs={runs} cursor={cursor} nextCursor={nextCursor} />);
    } catch (error) {
      if (!(error instanceof InvalidArgumentError)) throw error;
      return page(
        c,
        <RunsPage {...base} runs={[]} nextCursor={null} error={error.message} />,
        400,
      );
    }
  });

  app.get("/ui", (c) => c.redirect("/", 302));

  /**
   * What the run page shows besides the run: a send-event form per event a
   * step awaits (`sent` replaces the defaults of the one just submitted) and
   * the status of each child run.
   */
  async function runView(run: RunSnapshot, sent?: EventFormProps): Promise<RunBodyProps> {
    const def = engine.workflows.find((w) => w.name === run.workflow);
    const events: EventFormProps[] = [];
    for (const [step, s] of Object.entries(run.steps)) {
      if (s.status !== "awaiting" || !s.event || events.some((e) => e.event === s.event)) continue;
      const schema = jsonSchemaOf(def?.getStep(step)?.wait?.schema);
      events.push(
        sent?.event === s.event ? { ...sent, step, schema } : {
          event: s.event,
          step,
          schema,
          payloadText: JSON.stringify(schema ? exampleOf(schema) ?? {} : {}, null, 2),
        },
      );
    }
    // A submission for an event no step awaits (a typo) is shown again, to fix.
    if (sent && !events.some((e) => e.event === sent.event)) {
      const i = events.findIndex((e) => e.step === sent.step);
      if (i >= 0) events[i] = { ...sent, schema: events[i].schema };
      else events.unshift(sent);
    }
    const childStatuses: Record<string, string> = {};
    const childIds = Object.values(run.steps).flatMap((s) => {
      const id = (s as { childRunId?: unknown }).childRunId;
      return typeof id === "string" ? [id] : [];
    });
    // A parent page looks up at most this many children, each one KV read.
    await Promise.all(
      childIds.slice(0, MAX_CHILD_LOOKUPS).map(async (id) => {
        try {
          childStatuses[id] = (await engine.get(id)).status;
        } catch (error) {
          if (!(error instanceof RunNotFoundError)) throw error;
        }
      }),
    );
    return { run, nowMs: now(), events, childStatuses };
  }

  app.get("/ui/runs/:id", async (c) => {
    const runId = c.req.param("id");
    try {
      const run = await engine.get(runId);
      return page(c, <RunPage {...await runView(run)} />);
    } catch (error) {
      return notFound(c, error);
    }
  });

  app.get("/ui/runs/:id/fragment", async (c) => {
    try {
      const run = await engine.get(c.req.param("id"));
      // What one transition changed: a step's row and details, or the run's head.
      const step = c.req.query("step");
      if (step !== undefined && run.steps[step] !== undefined) {
        return page(c, <RunPart {...await runView(run)} step={step} />);
      }
      if (step !== undefined) return c.html("", 404, SECURITY_HEADERS);
      if (c.req.query("part") === "head") return page(c, <RunPart {...await runView(run)} />);
      return page(c, <RunBody {...await runView(run)} />);
    } catch (error) {
      if (!(error instanceof RunNotFoundError)) throw error;
      return c.html("", 404, SECURITY_HEADERS);
    }
  });

  app.post("/ui/runs/:id/cancel", async (c) => {
    const runId = c.req.param("id");
    try {
      await engine.cancel(runId, { reason: "cancelled from the dashboard" });
      return c.redirect(runHref(runId), 303);
    } catch (error) {
      if (error instanceof RunFinishedError || error instanceof InvalidArgumentError) {
        const run = await engine.get(runId);
        return page(c, <RunPage {...await runView(run)} notice={error.message} />, 409);
      }
      if (error instanceof StorageFullError) {
        const run = await engine.get(runId);
        return page(c, <RunPage {...await runView(run)} notice={error.message} />, 503);
      }
      return notFound(c, error);
    }
  });

  app.post(
    "/ui/runs/:id/events",
    bodyLimit({
      maxSize: options.maxFormBytes ?? 1024 * 1024,
      onError: (c) => page(c, <ErrorPage title="Too large" message="The form is too large" />, 413),
    }),
    async (c) => {
      const runId = c.req.param("id");
      const form = await c.req.parseBody();
      const text = (name: string) => typeof form[name] === "string" ? form[name] as string : "";
      const event = text("event").trim();
      const payloadText = text("payload");
      const key = text("key").trim();
      let run: RunSnapshot;
      try {
        run = await engine.get(runId);
      } catch (error) {
        return notFound(c, error);
      }
      const step = Object.entries(run.steps).find(([, s]) => s.event === event)?.[0] ??
        Object.entries(run.steps).find(([, s]) => s.status === "awaiting")?.[0] ?? "";
      const again = async (status: Status, error: string, issues?: readonly FormIssue[]) => {
        const fresh = await engine.get(runId).catch(() => run);
        const sent = { event, step, payloadText, idempotencyKey: key, error, issues };
        const view = await runView(fresh, sent);
        const notice = isTerminalRun(fresh.status) ? error : undefined;
        return page(c, <RunPage {...view} notice={notice} />, status);
      };
      if (!event) return again(400, "Name the event to send");
      let payload: unknown;
      try {
        payload = JSON.parse(payloadText);
      } catch (error) {
        return again(400, "The payload is not valid JSON", [
          { path: [], message: (error as Error).message },
        ]);
      }
      try {
        const result = await engine.signal(runId, event, payload, key ? { key } : {});
        if (result.duplicate) {
          const view = await runView(await engine.get(runId));
          return page(
            c,
            <RunPage
              {...view}
              info={`An event with key '${key}' was already sent to this run; this one was not delivered again`}
            />,
          );
        }
        return c.redirect(runHref(runId), 303);
      } catch (error) {
        if (error instanceof InvalidInputError) {
          return again(
            400,
            `The payload does not match the schema of event '${event}'`,
            error.issues,
          );
        }
        if (error instanceof UnknownEventError) return again(404, error.message);
        if (error instanceof RunFinishedError) return again(409, error.message);
        if (error instanceof InputTooLargeError) return again(413, error.message);
        if (error instanceof InvalidArgumentError) return again(400, error.message);
        return notFound(c, error);
      }
    },
  );

  const startForm = (workflow: string | undefined, extra: {
    inputText?: string;
    idempotencyKey?: string;
    error?: string;
    issues?: readonly FormIssue[];
  } = {}) => {
    const def = engine.workflows.find((w) => w.name === workflow);
    const schema = def ? inputJsonSchema(def) : undefined;
    return (
      <StartPage
        workflows={engine.workflows.map((w) => ({ name: w.name, description: w.description }))}
        workflow={def?.name}
        schema={schema}
        inputText={extra.inputText ??
          JSON.stringify(schema ? exampleOf(schema) ?? {} : {}, null, 2)}
        idempotencyKey={extra.idempotencyKey}
        error={extra.error ??
          (workflow !== undefined && !def ? `Unknown workflow '${workflow}'` : undefined)}
        issues={extra.issues}
      />
    );
  };

  app.get("/ui/start", (c) => {
    const workflow = c.req.query("workflow") ??
      (engine.workflows.length === 1 ? engine.workflows[0].name : undefined);
    const known = workflow === undefined || workflowNames().includes(workflow);
    return page(c, startForm(workflow), known ? 200 : 404);
  });

  app.post(
    "/ui/runs",
    bodyLimit({
      maxSize: options.maxFormBytes ?? 1024 * 1024,
      onError: (c) => page(c, <ErrorPage title="Too large" message="The form is too large" />, 413),
    }),
    async (c) => {
      const form = await c.req.parseBody();
      const workflow = typeof form.workflow === "string" ? form.workflow : "";
      const inputText = typeof form.input === "string" ? form.input : "";
      const keyText = typeof form.idempotencyKey === "string" ? form.idempotencyKey.trim() : "";
      const again = (status: Status, error: string, issues?: readonly FormIssue[]) =>
        page(
          c,
          startForm(workflow, { inputText, idempotencyKey: keyText, error, issues }),
          status,
        );
      // The same limits as the API's body: its size (the app's body limit and
      // this route's) and its nesting, checked before anything is built.
      if (exceedsDepth(inputText, MAX_JSON_DEPTH)) {
        return again(
          400,
          `The input nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`,
        );
      }
      let input: unknown;
      try {
        input = JSON.parse(inputText);
      } catch (error) {
        return again(400, "The input is not valid JSON", [
          { path: [], message: (error as Error).message },
        ]);
      }
      try {
        const run = await engine.start(
          workflow,
          input,
          keyText ? { idempotencyKey: keyText } : {},
        );
        return c.redirect(`/ui/runs/${encodeURIComponent(run.id)}`, 303);
      } catch (error) {
        if (error instanceof InvalidInputError) {
          return again(422, "The input does not match the workflow's schema", error.issues);
        }
        if (error instanceof UnknownWorkflowError) return again(404, error.message);
        if (error instanceof InputTooLargeError) return again(413, error.message);
        if (error instanceof InvalidArgumentError) return again(400, error.message);
        if (error instanceof StorageFullError) return again(503, error.message);
        throw error;
      }
    },
  );

  app.get("/ui/assets/style.css", (c) =>
    c.body(STYLE_CSS, 200, {
      "Content-Type": "text/css; charset=utf-8",
      "Cache-Control": "public, max-age=300",
    }));
  app.get("/ui/assets/run.js", (c) =>
    c.body(RUN_JS, 200, {
      "Content-Type": "text/javascript; charset=utf-8",
      "Cache-Control": "public, max-age=300",
    }));

  app.get("/ui/assets/favicon.svg", (c) =>
    c.body(FAVICON_SVG, 200, {
      "Content-Type": "image/svg+xml",
      "Cache-Control": "public, max-age=86400",
    }));

  function notFound(c: Context, error: unknown): Promise<Response> {
    if (!(error instanceof RunNotFoundError)) throw error;
    return page(c, <ErrorPage title="Run not found" message={error.message} />, 404);
  }

  return app;
}

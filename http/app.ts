/**
 * The HTTP API's app factory: guards, routes, the OpenAPI document and one
 * error mapping, on a Hono app that other modules can add routes to.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Context, Hono } from "hono";
import type { Engine } from "../mod.ts";
import {
  isDashboardPage,
  LOGIN_PATH,
  LOGIN_PUBLIC_PATHS,
  loginRoutes,
} from "../dashboard/login.tsx";
import { accessLog, type AccessRecord } from "./access_log.ts";
import {
  bearerAuth,
  createSessions,
  loopbackHostsOnly,
  remoteAddress,
  sameOriginWrites,
} from "./auth.ts";
import { bodyTimeout, DEFAULT_BODY_TIMEOUT_MS, DEFAULT_MAX_BODY_BYTES, limitBody } from "./body.ts";
import { createLoginThrottle, type LoginThrottleOptions } from "./throttle.ts";
import { ApiError, ErrorCode, toApiError } from "./errors.ts";
import { openApiDocument } from "./openapi.ts";
import { addRoute } from "./route.ts";
import { addApiRoutes } from "./routes.ts";
import { OpenApiDocumentSchema } from "./schemas.ts";

/** Options of {@linkcode createApp}. */
export interface AppOptions {
  /** The engine whose workflows and runs the API serves. */
  engine: Engine;
  /**
   * When set, every route but `/healthz` and the login page requires
   * `Authorization: Bearer <token>` or a browser session cookie, got by
   * signing in with the token at `/login` (see {@linkcode createSessions}).
   * @default {undefined} (no authentication)
   */
  token?: string;
  /** The clock that browser sessions expire by, in epoch milliseconds. @default {Date.now} */
  now?: () => number;
  /** Largest request body, in bytes. @default {1048576} */
  maxBodyBytes?: number;
  /** How long a request body may take to arrive in full (408 after). @default {30000} */
  bodyTimeoutMs?: number;
  /**
   * Without a token: host names accepted in `Host` besides loopback ones
   * (`"*"` for any). Requests for other hosts get 403 (against DNS
   * rebinding). Not used with a token. @default {[]}
   */
  allowedHosts?: readonly string[];
  /**
   * The throttle of wrong tokens per client address (with a token), or
   * `false` for none. Its clock defaults to `now`. @default {{}} (see `createLoginThrottle`)
   */
  loginThrottle?: LoginThrottleOptions | false;
  /**
   * The client's address, for throttling and logs.
   * @default {the address `Deno.serve` passes, else "unknown"}
   */
  clientAddress?: (c: Context) => string;
  /** Whether 500 responses carry the error's message and stack. @default {false} */
  debug?: boolean;
  /**
   * Aborts long polls (`/runs/{id}/wait`) at once, so that shutting the
   * server down need not wait for them. @default {undefined}
   */
  shutdownSignal?: AbortSignal;
  /**
   * Called with every error that becomes a 500, for logging.
   * @default {logging it with LogTape under ["weft", "http"]}
   */
  onUnexpectedError?: (error: unknown) => void;
  /**
   * Receives one record per request: method, route pattern, status, duration.
   * @default {logging it with LogTape under ["weft", "http"], at info (debug for /healthz and /metrics)}
   */
  onRequest?: (record: AccessRecord) => void;
  /**
   * Adds more routes after the API's own, such as a dashboard or metrics.
   * They get the same guards (token, body limit), error mapping and 404.
   * @default {undefined}
   */
  mount?: (app: Hono) => void;
}

const log = getLogger(["weft", "http"]);

/**
 * The headers of every response that does not set its own: `nosniff`
 * everywhere, and for what is not an HTML page (JSON, event streams, text)
 * a policy that lets nothing load or frame it, no referrer and no caching.
 */
function securityHeaders() {
  const defaults: [string, string][] = [
    ["X-Content-Type-Options", "nosniff"],
    ["Referrer-Policy", "same-origin"],
    ["Cache-Control", "no-store"],
  ];
  return async (c: Context, next: () => Promise<void>) => {
    await next();
    let res = c.res;
    const set = (name: string, value: string) => {
      if (res.headers.has(name)) return;
      try {
        res.headers.set(name, value);
      } catch {
        // Immutable headers (a fetched response): copy it once.
        res = new Response(res.body, res);
        res.headers.set(name, value);
      }
    };
    for (const [name, value] of defaults) set(name, value);
    if (!(res.headers.get("content-type") ?? "").startsWith("text/html")) {
      set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
    }
    if (res !== c.res) c.res = res;
  };
}

/**
 * Builds the Hono app of the HTTP API on an engine. Nothing listens yet: pass
 * `app.fetch` to `Deno.serve`, or call `app.request()` in tests.
 *
 * Routes can also be added to the returned app afterwards; they run behind
 * the same guards, and unmatched requests get a JSON 404.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { createEngine, workflow } from "../mod.ts";
 * import { createApp } from "./app.ts";
 * const hello = workflow("hello", { input: z.object({ name: z.string() }) })
 *   .step("greet", ({ input }) => `hello ${input.name}`);
 * const kv = await Deno.openKv(":memory:");
 * const engine = await createEngine({ kv, workflows: [hello] });
 * const app = createApp({ engine });
 * const res = await app.request("/workflows/hello/runs", {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: JSON.stringify({ name: "ada" }),
 * });
 * assert.ok(res.status === 201);
 * const { id } = await res.json();
 * await (await app.request(`/runs/${id}/wait`)).body?.cancel();
 * await engine.close();
 * kv.close();
 * ```
 */
export function createApp(options: AppOptions): Hono {
  const { engine, token, debug = false } = options;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const onUnexpectedError = options.onUnexpectedError ??
    ((error: unknown) =>
      log.error("Unexpected error while handling a request: {error}", { error }));
  if (token !== undefined && token.length === 0) {
    throw new RangeError("Cannot create the app as 'token' is empty: omit it to disable auth");
  }

  const app = new Hono();

  app.onError((error, c) => {
    const mapped = toApiError(error);
    if (mapped) return mapped.getResponse();
    onUnexpectedError(error);
    const err = error instanceof Error ? error : new Error(String(error));
    const body = {
      error: {
        code: ErrorCode.Internal,
        message: debug ? `${err.name}: ${err.message}` : "Internal server error",
        ...(debug && err.stack ? { stack: err.stack } : {}),
      },
    };
    return c.json(body, 500);
  });

  app.notFound((c) =>
    new ApiError(404, ErrorCode.NotFound, `No route for ${c.req.method} ${c.req.path}`)
      .getResponse()
  );

  app.use("*", accessLog({ write: options.onRequest }));
  app.use("*", securityHeaders());
  if (token === undefined) {
    app.use(
      "*",
      loopbackHostsOnly({ allowedHosts: options.allowedHosts, publicPaths: ["/healthz"] }),
    );
  }
  app.use("*", sameOriginWrites());
  const sessions = token === undefined ? undefined : createSessions(token, { now: options.now });
  const clientAddress = options.clientAddress ?? remoteAddress;
  const throttle = options.loginThrottle === false
    ? undefined
    : createLoginThrottle({ now: options.now, ...options.loginThrottle });
  if (token !== undefined) {
    app.use(
      "*",
      bearerAuth(token, {
        publicPaths: ["/healthz", ...LOGIN_PUBLIC_PATHS],
        sessions,
        loginRedirect: { path: LOGIN_PATH, isPage: isDashboardPage },
        throttle,
        clientAddress,
      }),
    );
  }
  app.use("*", bodyTimeout(options.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS));
  app.use("*", limitBody(maxBodyBytes));
  if (sessions) app.route("/", loginRoutes(sessions, { throttle, clientAddress }));

  const specs = addApiRoutes(app, { engine, shutdownSignal: options.shutdownSignal });
  let document: Record<string, unknown> | undefined;
  specs.push(addRoute(app, {
    method: "get",
    path: "/openapi.json",
    operationId: "openapi",
    summary: "This document",
    responses: {
      200: { description: "The OpenAPI 3.1 document", schema: OpenApiDocumentSchema },
    },
  }, (c) => {
    document ??= openApiDocument(specs, { bearerAuth: token !== undefined });
    return c.json(document);
  }));

  options.mount?.(app);
  return app;
}

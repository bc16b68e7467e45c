/**
 * One access record per HTTP request: method, route pattern, status and
 * duration, logged through LogTape under `["weft", "http"]`.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { Context, MiddlewareHandler } from "hono";
import { matchedRoutes } from "hono/route";

/** The fields of one access record. */
export interface AccessRecord {
  /** The request method, such as `"GET"`. */
  method: string;
  /** The pattern of the route that answered, such as `"/runs/:id"`; absent when none matched. */
  route?: string;
  /** The request path without its query, cut to 200 characters. */
  path: string;
  /** The response status. */
  status: number;
  /**
   * From the request reaching the app to the response's headers, in
   * milliseconds (for an event stream: to its first byte, not its end).
   */
  durationMs: number;
}

/** Options of {@linkcode accessLog}. */
export interface AccessLogOptions {
  /**
   * Receives each record. @default {logging it under ["weft", "http"]: at
   * debug for `/healthz` and `/metrics`, which probes and scrapers call every
   * few seconds, at info for every other request}
   */
  write?: (record: AccessRecord) => void;
  /** The clock durations are measured with, in milliseconds. @default {performance.now} */
  now?: () => number;
}

const log = getLogger(["weft", "http"]);
const QUIET_PATHS = new Set(["/healthz", "/metrics"]);
const MAX_PATH_CHARS = 200;

/**
 * Middleware that records every request once its response is ready, also
 * when a later middleware or handler answered with an error. Add it first so
 * that refusals (401, 403, 413) are recorded too.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { type AccessRecord, accessLog } from "./access_log.ts";
 * const records: AccessRecord[] = [];
 * const app = new Hono();
 * app.use("*", accessLog({ write: (r) => records.push(r) }));
 * app.get("/runs/:id", (c) => c.json({ id: c.req.param("id") }));
 * await (await app.request("/runs/r1")).body?.cancel();
 * assert.equal(records[0].route, "/runs/:id");
 * assert.equal(records[0].status, 200);
 * ```
 */
export function accessLog(options: AccessLogOptions = {}): MiddlewareHandler {
  const write = options.write ?? logAccess;
  const now = options.now ?? (() => performance.now());
  return async (c, next) => {
    const start = now();
    await next();
    const route = routePattern(c);
    write({
      method: c.req.method,
      ...(route === undefined ? {} : { route }),
      path: c.req.path.slice(0, MAX_PATH_CHARS),
      status: c.res.status,
      durationMs: Math.round((now() - start) * 100) / 100,
    });
  };
}

/**
 * The pattern of the last route that matched and is a handler: middleware
 * (registered with `use`, hence for every method) matches every path and
 * names none.
 */
function routePattern(c: Context): string | undefined {
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    if (routes[i].method !== "ALL") return routes[i].path;
  }
  return undefined;
}

function logAccess(record: AccessRecord): void {
  const { method, route, path, status, durationMs } = record;
  const line = `${method} ${route ?? `${path} (no route)`} answered ${status} in ${durationMs} ms`;
  // Rendered here rather than from placeholders, which would quote each string.
  const message = line.replaceAll("{", "{{").replaceAll("}", "}}");
  if (QUIET_PATHS.has(record.path)) log.debug(message, { ...record });
  else log.info(message, { ...record });
}

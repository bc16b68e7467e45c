/**
 * Documented routes: one spec per route holds the zod schemas that validate
 * its path parameters, query and headers, and the responses the OpenAPI
 * document lists. {@linkcode addRoute} registers the handler behind that
 * validation, so the document and the checks cannot disagree.
 *
 * @module
 */
import type { Context, Hono } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { z } from "zod";
import { ApiError, ErrorCode, toApiIssues } from "./errors.ts";
import { NoQuery } from "./schemas.ts";

/** A zod object schema of string-valued request parts. */
// deno-lint-ignore no-explicit-any
export type PartSchema = z.ZodType<any, any>;

/** One documented response of a route. */
export interface ResponseSpec {
  /** What it means. */
  description: string;
  /** The JSON body; must be a schema registered with an `id` in `apiRegistry`. */
  schema?: z.ZodType;
  /** Response headers, by name, with their descriptions. */
  headers?: Record<string, string>;
}

/** A route: its method, path, request schemas and responses. */
export interface RouteSpec<
  P extends PartSchema = PartSchema,
  Q extends PartSchema = PartSchema,
  H extends PartSchema = PartSchema,
> {
  /** The HTTP method. */
  method: "get" | "post";
  /** The path in OpenAPI form, such as `/runs/{id}`. */
  path: string;
  /** A unique name of the operation. */
  operationId: string;
  /** One line on what it does. */
  summary: string;
  /** More detail. */
  description?: string;
  /** Whether the bearer token, when one is configured, is required. @default {true} */
  auth?: boolean;
  /** The path parameters; required when the path has any. */
  params?: P;
  /** The query parameters. @default {NoQuery} (any parameter is an error) */
  query?: Q;
  /** The request headers read. */
  headers?: H;
  /** The request body, for the document; the handler reads it. */
  body?: {
    schema: z.ZodType;
    required: boolean;
    description: string;
    /** The JSON Schema to document instead of the schema's (one built at run time). */
    jsonSchema?: Record<string, unknown>;
  };
  /** Every response, by status code. */
  responses: Partial<Record<ContentfulStatusCode, ResponseSpec>>;
}

/** What a handler receives besides the context: the validated request parts. */
export interface RouteInput<P extends PartSchema, Q extends PartSchema, H extends PartSchema> {
  /** The path parameters. */
  params: z.output<P>;
  /** The query parameters. */
  query: z.output<Q>;
  /** The headers declared in the spec. */
  headers: z.output<H>;
}

/** A route's handler. */
export type RouteHandler<P extends PartSchema, Q extends PartSchema, H extends PartSchema> = (
  c: Context,
  input: RouteInput<P, Q, H>,
) => Response | Promise<Response>;

function parsePart<S extends PartSchema>(schema: S, value: unknown, what: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = toApiIssues(result.error.issues);
  const first = issues[0];
  const where = first.path.length > 0 ? ` '${first.path.join(".")}'` : "";
  throw new ApiError(400, ErrorCode.InvalidInput, `Invalid ${what}${where}: ${first.message}`, {
    issues,
  });
}

function queryObject(c: Context): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  // A repeated parameter stays a list, which the string schemas refuse.
  for (const [key, values] of Object.entries(c.req.queries())) {
    out[key] = values.length === 1 ? values[0] : values;
  }
  return out;
}

function headerObject(c: Context, schema: PartSchema): Record<string, string> {
  const out: Record<string, string> = {};
  // Only the headers the schema names are read; there are always others.
  const shape = (schema as { shape?: Record<string, unknown> }).shape ?? {};
  for (const name of Object.keys(shape)) {
    const value = c.req.header(name);
    if (value !== undefined) out[name] = value;
  }
  return out;
}

/** Turns `/runs/{id}` into Hono's `/runs/:id`. */
export function honoPath(path: string): string {
  return path.replace(/\{([A-Za-z0-9_]+)\}/g, ":$1");
}

/**
 * Registers `handler` on `app` behind validation of the spec's path
 * parameters, query (unknown parameters are refused) and headers, each a
 * 400 `invalid_input` with zod's issues when wrong. Returns the spec, for the
 * OpenAPI document.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { addRoute } from "./route.ts";
 * import { RunParams } from "./schemas.ts";
 * const app = new Hono();
 * addRoute(app, {
 *   method: "get",
 *   path: "/runs/{id}",
 *   operationId: "getRun",
 *   summary: "A run",
 *   params: RunParams,
 *   responses: { 200: { description: "The run" } },
 * }, (c, { params }) => c.json({ id: params.id }));
 * const res = await app.request("/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV?verbose=1");
 * assert.ok(res.status === 400); // an unknown query parameter
 * ```
 */
export function addRoute<
  P extends PartSchema = typeof NoQuery,
  Q extends PartSchema = typeof NoQuery,
  H extends PartSchema = typeof NoQuery,
>(app: Hono, spec: RouteSpec<P, Q, H>, handler: RouteHandler<P, Q, H>): RouteSpec {
  // Without a schema, a part must be empty: NoQuery is the strict empty object.
  const params = (spec.params ?? NoQuery) as P;
  const query = (spec.query ?? NoQuery) as Q;
  const headers = (spec.headers ?? NoQuery) as H;
  app.on(spec.method.toUpperCase(), honoPath(spec.path), (c) => {
    const input: RouteInput<P, Q, H> = {
      params: parsePart(params, c.req.param(), "path parameter"),
      query: parsePart(query, queryObject(c), "query parameter"),
      headers: parsePart(headers, headerObject(c, headers), "header"),
    };
    return handler(c, input);
  });
  return spec as unknown as RouteSpec;
}

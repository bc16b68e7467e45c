/**
 * The OpenAPI 3.1 document, generated from the route specs and their zod
 * schemas with zod's own `z.toJSONSchema` (JSON Schema 2020-12, the dialect
 * OpenAPI 3.1 uses, so no conversion layer is needed).
 *
 * @module
 */
import { z } from "zod";
import type { PartSchema, RouteSpec } from "./route.ts";
import { apiRegistry } from "./schemas.ts";

/** Options of {@linkcode openApiDocument}. */
export interface OpenApiOptions {
  /** The API's title. @default {"Weft"} */
  title?: string;
  /** The API's version. @default {"1.0.0"} */
  version?: string;
  /** Whether routes need a bearer token. @default {false} */
  bearerAuth?: boolean;
}

type JsonSchema = Record<string, unknown>;

const COMPONENT_PREFIX = "#/components/schemas/";

function clean(schema: JsonSchema): JsonSchema {
  const { $schema: _s, $id: _i, ...rest } = schema;
  return rest;
}

function componentSchemas(): Record<string, JsonSchema> {
  const { schemas } = z.toJSONSchema(apiRegistry, {
    metadata: apiRegistry,
    io: "output",
    unrepresentable: "any",
    uri: (id) => `${COMPONENT_PREFIX}${id}`,
  });
  return Object.fromEntries(
    Object.entries(schemas).map(([id, schema]) => [id, clean(schema as JsonSchema)]),
  );
}

function ref(schema: z.ZodType): JsonSchema {
  const id = apiRegistry.get(schema)?.id;
  if (id === undefined) {
    throw new Error("Cannot document a body whose schema has no 'id' in apiRegistry");
  }
  return { $ref: `${COMPONENT_PREFIX}${id}` };
}

function parameters(schema: PartSchema | undefined, location: "path" | "query" | "header") {
  if (!schema) return [];
  const json = z.toJSONSchema(schema, {
    io: "input",
    unrepresentable: "any",
    metadata: apiRegistry,
  }) as { properties?: Record<string, JsonSchema>; required?: string[] };
  return Object.entries(json.properties ?? {}).map(([name, property]) => {
    const { description, ...propertySchema } = property;
    return {
      name,
      in: location,
      required: location === "path" || (json.required ?? []).includes(name),
      ...(description === undefined ? {} : { description }),
      schema: propertySchema,
    };
  });
}

/**
 * Builds the OpenAPI 3.1 document of `routes`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { openApiDocument } from "./openapi.ts";
 * import { HealthSchema } from "./schemas.ts";
 * const doc = openApiDocument([{
 *   method: "get",
 *   path: "/healthz",
 *   operationId: "health",
 *   summary: "Liveness",
 *   responses: { 200: { description: "Alive", schema: HealthSchema } },
 * }]);
 * assert.ok(doc.openapi === "3.1.0");
 * ```
 */
export function openApiDocument(
  routes: readonly RouteSpec[],
  options: OpenApiOptions = {},
): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of routes) {
    const responses: Record<string, unknown> = {};
    for (const [status, response] of Object.entries(route.responses)) {
      if (!response) continue;
      responses[status] = {
        description: response.description,
        ...(response.headers && {
          headers: Object.fromEntries(
            Object.entries(response.headers).map(([name, description]) => [
              name,
              { description, schema: { type: "string" } },
            ]),
          ),
        }),
        ...(response.schema && {
          content: { "application/json": { schema: ref(response.schema) } },
        }),
      };
    }
    const secured = options.bearerAuth === true && route.auth !== false;
    if (secured) {
      responses["401"] ??= {
        description: "Missing or wrong bearer token",
        content: { "application/json": { schema: { $ref: `${COMPONENT_PREFIX}ErrorBody` } } },
      };
    }
    const operation = {
      operationId: route.operationId,
      summary: route.summary,
      ...(route.description && { description: route.description }),
      parameters: [
        ...parameters(route.params, "path"),
        ...parameters(route.query, "query"),
        ...parameters(route.headers, "header"),
      ],
      ...(route.body && {
        requestBody: {
          description: route.body.description,
          required: route.body.required,
          content: {
            "application/json": { schema: route.body.jsonSchema ?? ref(route.body.schema) },
          },
        },
      }),
      responses,
      security: secured ? [{ bearer: [] }] : [],
    };
    (paths[route.path] ??= {})[route.method] = operation;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: options.title ?? "Weft",
      version: options.version ?? "1.0.0",
      description: "Start, watch and cancel durable workflow runs.",
    },
    paths,
    components: {
      schemas: componentSchemas(),
      ...(options.bearerAuth && {
        securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      }),
    },
  };
}

/**
 * A workflow's input schema as JSON Schema, and an example value built from
 * it to pre-fill the dashboard's start form.
 *
 * @module
 */
import { z } from "zod";
import type { AnyWorkflow } from "../mod.ts";

/** A JSON Schema document, loosely typed: only the keywords read here matter. */
export type JsonSchema = Record<string, unknown>;

/**
 * The JSON Schema of a workflow's input (as accepted, so fields with
 * defaults are optional), or `undefined` when the schema is not zod's or
 * cannot be rendered.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { workflow } from "../mod.ts";
 * import { inputJsonSchema } from "./input_schema.ts";
 * const wf = workflow("w", { input: z.object({ n: z.number() }) }).step("s", () => 1);
 * assert.ok(inputJsonSchema(wf)?.type === "object");
 * ```
 */
export function inputJsonSchema(def: AnyWorkflow): JsonSchema | undefined {
  return jsonSchemaOf(def.input);
}

/**
 * The JSON Schema of any zod schema, such as a wait step's event payload
 * schema (as accepted), or `undefined` when it is not zod's or cannot be
 * rendered.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { jsonSchemaOf } from "./input_schema.ts";
 * assert.ok(jsonSchemaOf(z.object({ by: z.string() }))?.type === "object");
 * assert.ok(jsonSchemaOf({ safeParse: () => ({ success: true }) }) === undefined);
 * ```
 */
export function jsonSchemaOf(schema: unknown): JsonSchema | undefined {
  if (!(schema instanceof z.ZodType)) return undefined;
  try {
    return z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchema;
  } catch {
    return undefined;
  }
}

/**
 * A value that satisfies the simple constraints of a JSON Schema: required
 * properties and those with defaults, types, `const`, `enum`, string
 * lengths, number bounds and minimum array sizes. Patterns and formats
 * beyond a few common ones are not honoured; the server validates anyway.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exampleOf } from "./input_schema.ts";
 * const value = exampleOf({
 *   type: "object",
 *   properties: { id: { type: "string", minLength: 1 }, n: { type: "number", exclusiveMinimum: 0 } },
 *   required: ["id", "n"],
 * });
 * assert.ok(JSON.stringify(value) === '{"id":"example","n":1}');
 * ```
 */
export function exampleOf(schema: unknown, depth = 0): unknown {
  if (typeof schema !== "object" || schema === null || depth > 8) return null;
  const s = schema as JsonSchema;
  if ("default" in s) return s.default;
  if (Array.isArray(s.examples) && s.examples.length > 0) return s.examples[0];
  if ("const" in s) return s.const;
  if (Array.isArray(s.enum) && s.enum.length > 0) return s.enum[0];
  for (const key of ["anyOf", "oneOf"]) {
    const options = s[key];
    if (Array.isArray(options) && options.length > 0) return exampleOf(options[0], depth + 1);
  }
  if (Array.isArray(s.allOf) && s.allOf.length > 0) return exampleOf(s.allOf[0], depth + 1);
  const type = Array.isArray(s.type) ? s.type.find((t) => t !== "null") ?? s.type[0] : s.type;
  switch (type) {
    case "object": {
      const out: Record<string, unknown> = {};
      const props = (s.properties ?? {}) as Record<string, JsonSchema>;
      const required = new Set(Array.isArray(s.required) ? s.required as string[] : []);
      for (const [name, prop] of Object.entries(props)) {
        if (required.has(name) || "default" in prop) out[name] = exampleOf(prop, depth + 1);
      }
      return out;
    }
    case "array": {
      const min = typeof s.minItems === "number" ? s.minItems : 0;
      return Array.from({ length: Math.min(min, 10) }, () => exampleOf(s.items, depth + 1));
    }
    case "string":
      return exampleString(s);
    case "integer":
    case "number":
      return exampleNumber(s, type === "integer");
    case "boolean":
      return false;
    case "null":
      return null;
    default:
      return {};
  }
}

function exampleString(s: JsonSchema): string {
  switch (s.format) {
    case "email":
      return "someone@example.com";
    case "uri":
    case "url":
      return "https://example.com/";
    case "uuid":
      return "00000000-0000-4000-8000-000000000000";
    case "date-time":
      return "2025-01-01T00:00:00Z";
    case "date":
      return "2025-01-01";
  }
  let text = "example";
  const min = typeof s.minLength === "number" ? s.minLength : 0;
  const max = typeof s.maxLength === "number" ? s.maxLength : Infinity;
  while (text.length < min) text += "x";
  return text.slice(0, max);
}

function exampleNumber(s: JsonSchema, integer: boolean): number {
  const num = (v: unknown) => typeof v === "number" ? v : undefined;
  const min = num(s.minimum);
  const xmin = num(s.exclusiveMinimum);
  const max = num(s.maximum) ?? num(s.exclusiveMaximum);
  let value = min ?? (xmin !== undefined ? (integer ? Math.floor(xmin) + 1 : xmin + 1) : 1);
  if (max !== undefined && value > max) value = min ?? max;
  return integer ? Math.ceil(value) : value;
}

/**
 * What the handler tests of the HTTP API (`http_test.ts`,
 * `events_endpoint_test.ts`) share: the app over an engine on an in-memory
 * KV, driven through `app.request()`, and the checks of a JSON answer.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Hono } from "hono";
import type { z } from "zod";
import { type AnyWorkflow, createEngine, type Engine, type EngineOptions } from "../mod.ts";
import { type AppOptions, createApp } from "../http/app.ts";
import { ErrorBodySchema } from "../http/schemas.ts";

/** The bearer token of the tests that turn auth on. */
export const TOKEN = "s3cret-token";
/** A well-formed run id that no run has. */
export const UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

/** An app under test, the engine and KV behind it, and the gate its test workflows wait on. */
export interface AppHarness extends AsyncDisposable {
  app: Hono;
  engine: Engine;
  kv: Deno.Kv;
  /** Lets the steps waiting on the gate finish. */
  openGate(): void;
}

/** Workflows made for one test, and the gate some of their steps wait on. */
export interface GatedWorkflows {
  gate: PromiseWithResolvers<void>;
  workflows: AnyWorkflow[];
}

/**
 * The app over an engine that runs `made.workflows` on an in-memory KV, with
 * small limits (2 KB inputs, 8 KB bodies) the tests reach. Disposing opens
 * the gate, then closes the engine and the KV.
 */
export async function appHarness(
  made: GatedWorkflows,
  options: Omit<AppOptions, "engine"> = {},
  engineOptions: Partial<EngineOptions> = {},
): Promise<AppHarness> {
  const { gate, workflows } = made;
  const kv = await Deno.openKv(":memory:");
  const engine = await createEngine({ kv, workflows, maxInputBytes: 2048, ...engineOptions });
  const app = createApp({ engine, maxBodyBytes: 8192, ...options });
  return {
    app,
    engine,
    kv,
    openGate: () => gate.resolve(),
    async [Symbol.asyncDispose]() {
      gate.resolve();
      await engine.close();
      kv.close();
    },
  };
}

/** Asserts a JSON answer with `status` and returns its body, parsed by `schema`. */
export async function ok<T extends z.ZodType>(
  res: Response,
  status: number,
  schema: T,
): Promise<z.output<T>> {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${text}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  return schema.parse(JSON.parse(text));
}

/**
 * Asserts an error answer: its status, JSON content type, code, a message,
 * and the exact shape of the body (`error` with `code`, `message` and maybe
 * `issues`, nothing else). Returns the error.
 */
export async function fails(res: Response, status: number, code: string) {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status} ${code}, got ${res.status}: ${text}`);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(text);
  assert.deepEqual(Object.keys(body), ["error"]);
  for (const key of Object.keys(body.error)) assert.ok(["code", "message", "issues"].includes(key));
  const { error } = ErrorBodySchema.parse(body);
  assert.equal(error.code, code);
  assert.ok(error.message.length > 0);
  return error;
}

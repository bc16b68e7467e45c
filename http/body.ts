/**
 * Request bodies: a size limit enforced before anything is parsed, and a JSON
 * reader that refuses wrong content types, bad UTF-8 and deep nesting.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { ApiError, ErrorCode } from "./errors.ts";

/** The default largest request body, in bytes: 1 MiB. */
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/** The deepest nesting of arrays and objects a JSON body may have. */
export const MAX_JSON_DEPTH = 64;

/**
 * Rejects bodies larger than `maxBytes` with 413 `payload_too_large`, by
 * `Content-Length` when given, else while streaming, before any parsing.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { limitBody } from "./body.ts";
 * const app = new Hono().use("*", limitBody(4)).post("/", (c) => c.text("ok"));
 * const res = await app.request("/", { method: "POST", body: "12345" });
 * assert.ok(res.status === 413);
 * ```
 */
export function limitBody(maxBytes: number): MiddlewareHandler {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) {
    throw new RangeError(
      `Cannot limit bodies as 'maxBytes' must be an integer >= 1: current value is ${maxBytes}`,
    );
  }
  return bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw new ApiError(
        413,
        ErrorCode.PayloadTooLarge,
        `Request body is larger than the limit of ${maxBytes} bytes`,
      );
    },
  });
}

/**
 * Media types accepted as JSON: JSON itself, and what curl (`-d`) and
 * `fetch` (a string body) send when the caller sets none. The body must
 * parse as JSON whatever the type says.
 */
const ACCEPTED_TYPES = new Set([
  "",
  "application/json",
  "application/x-www-form-urlencoded",
  "text/plain",
]);

function isAcceptedType(contentType: string | undefined): boolean {
  const type = (contentType ?? "").split(";")[0].trim().toLowerCase();
  return ACCEPTED_TYPES.has(type) || /^application\/[a-z0-9.+-]+\+json$/.test(type);
}

const invalidJson = (message: string) => new ApiError(400, ErrorCode.InvalidJson, message);

/**
 * Whether `text` nests arrays and objects deeper than `maxDepth`, counted
 * outside strings. Runs before `JSON.parse` so hostile nesting is never built.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { exceedsDepth } from "./body.ts";
 * assert.ok(exceedsDepth("[[[1]]]", 2) && !exceedsDepth('["[[["]', 1));
 * ```
 */
export function exceedsDepth(text: string, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === 0x5c) escaped = true;
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) {
      inString = true;
    } else if (ch === 0x5b || ch === 0x7b) {
      if (++depth > maxDepth) return true;
    } else if (ch === 0x5d || ch === 0x7d) {
      depth--;
    }
  }
  return false;
}

/**
 * Reads the request body as JSON, or throws a 400 `invalid_json`
 * {@linkcode ApiError} when the content type is not accepted (JSON, no type,
 * `application/x-www-form-urlencoded` or `text/plain`), the body is empty or
 * not UTF-8, nests deeper than {@linkcode MAX_JSON_DEPTH}, or is not JSON.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { readJsonBody } from "./body.ts";
 * const app = new Hono().post("/", async (c) => c.json(await readJsonBody(c)));
 * const res = await app.request("/", { method: "POST", body: '{"a":1}' });
 * assert.ok((await res.json()).a === 1);
 * ```
 */
export async function readJsonBody(c: Context): Promise<unknown> {
  const contentType = c.req.header("content-type");
  if (!isAcceptedType(contentType)) {
    throw invalidJson(
      `Request body must be JSON: content type '${contentType}' is not accepted`,
    );
  }
  // A body that stalls or is too large fails here with its own error (408, 413).
  const bytes = await c.req.arrayBuffer();
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw invalidJson("Request body is not valid UTF-8");
  }
  if (text.trim() === "") {
    throw invalidJson("Request body is empty: send JSON, such as {}");
  }
  if (exceedsDepth(text, MAX_JSON_DEPTH)) {
    throw invalidJson(`Request body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalidJson(`Request body is not valid JSON: ${(error as Error).message}`);
  }
}

/** The default time a request body may take to arrive in full: 30 s. */
export const DEFAULT_BODY_TIMEOUT_MS = 30_000;

/**
 * Fails the reading of a request body that has not fully arrived within
 * `timeoutMs` of the request's start with 408 `request_timeout`, so a body
 * shorter than its `Content-Length`, or one that stalls, does not hold the
 * request for ever. Requests without a body (event streams, long polls) are
 * not affected.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { bodyTimeout } from "./body.ts";
 * const app = new Hono().use("*", bodyTimeout(1_000)).post("/", async (c) => c.text(await c.req.text()));
 * const res = await app.request("/", { method: "POST", body: "hello" });
 * assert.equal(await res.text(), "hello");
 * ```
 */
export function bodyTimeout(timeoutMs: number): MiddlewareHandler {
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1) {
    throw new RangeError(
      `Cannot time request bodies as 'timeoutMs' must be an integer >= 1: current value is ${timeoutMs}`,
    );
  }
  return async (c, next) => {
    const source = c.req.raw.body;
    if (source === null) return await next();
    const reader = source.getReader();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new ApiError(
            408,
            ErrorCode.RequestTimeout,
            `Request body did not arrive within ${timeoutMs} ms`,
          ),
        );
        reader.cancel().catch(() => {});
      }, timeoutMs);
    });
    timedOut.catch(() => {});
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { done, value } = await Promise.race([reader.read(), timedOut]);
          if (done) {
            clearTimeout(timer);
            controller.close();
          } else controller.enqueue(value);
        } catch (error) {
          clearTimeout(timer);
          controller.error(error);
        }
      },
      cancel(reason) {
        clearTimeout(timer);
        return reader.cancel(reason);
      },
    });
    c.req.raw = new Request(c.req.raw, { body, duplex: "half" } as RequestInit);
    try {
      await next();
    } finally {
      clearTimeout(timer);
    }
  };
}

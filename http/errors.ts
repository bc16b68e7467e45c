/**
 * The one HTTP error type of the API and the mapping of engine errors to
 * status codes. Every error response has the shape
 * `{ "error": { "code", "message", "issues"? } }`.
 *
 * @module
 */
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import {
  EngineClosedError,
  FencedError,
  InputTooLargeError,
  InvalidArgumentError,
  InvalidInputError,
  RunFinishedError,
  RunNotFoundError,
  StorageFullError,
  UnknownEventError,
  UnknownWorkflowError,
  WorkflowNotServedError,
} from "../mod.ts";

/**
 * The stable, machine-readable codes of error responses.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ErrorCode } from "./errors.ts";
 * assert.ok(ErrorCode.NotFound === "not_found");
 * ```
 */
export const ErrorCode = {
  /** No such route, workflow or run. */
  NotFound: "not_found",
  /** A path parameter, query parameter, header or run input is invalid. */
  InvalidInput: "invalid_input",
  /** The body is not JSON: malformed, empty, too deep or of a wrong content type. */
  InvalidJson: "invalid_json",
  /** The run is in a state that does not allow it, such as cancelling a finished run. */
  Conflict: "conflict",
  /** The body or the run input is larger than the limit. */
  PayloadTooLarge: "payload_too_large",
  /** The bearer token is missing or wrong. */
  Unauthorized: "unauthorized",
  /** A cross-origin browser request tried to change something, or the Host is not allowed. */
  Forbidden: "forbidden",
  /** The request body did not arrive in time. */
  RequestTimeout: "request_timeout",
  /** Too many wrong tokens from this client: wait as `Retry-After` says. */
  TooManyRequests: "too_many_requests",
  /** The engine is shutting down, or its store is out of space. */
  Unavailable: "unavailable",
  /** Anything unexpected; details are only shown in debug mode. */
  Internal: "internal",
} as const;
/** One of the {@linkcode ErrorCode} values. */
export type ErrorCode = typeof ErrorCode[keyof typeof ErrorCode];

/** One problem in a request, as zod reports it. */
export interface ApiIssue {
  /** zod's issue code, such as `"invalid_type"`. */
  code: string;
  /** Where the problem is, relative to the part of the request that was checked. */
  path: (string | number)[];
  /** What is wrong there. */
  message: string;
}

/** Options of {@linkcode ApiError}. */
export interface ApiErrorOptions {
  /** The problems found, for `invalid_input`. */
  issues?: ApiIssue[];
  /** Extra response headers, such as `WWW-Authenticate`. */
  headers?: Record<string, string>;
  /** The error this one maps. */
  cause?: unknown;
}

/**
 * An error that becomes an error response with its status and code. Throw it
 * from a handler or middleware; the app's `onError` renders it.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ApiError } from "./errors.ts";
 * const err = new ApiError(404, "not_found", "Unknown workflow 'x'");
 * assert.ok(err.status === 404 && err.code === "not_found");
 * ```
 */
export class ApiError extends HTTPException {
  /** The stable code. */
  readonly code: ErrorCode;
  /** The problems found, if any. */
  readonly issues?: ApiIssue[];
  /** Extra response headers. */
  readonly headers: Record<string, string>;

  /** Creates the error. */
  constructor(
    status: ContentfulStatusCode,
    code: ErrorCode,
    message: string,
    options: ApiErrorOptions = {},
  ) {
    super(status, { message, cause: options.cause });
    this.name = "ApiError";
    this.code = code;
    this.issues = options.issues;
    this.headers = options.headers ?? {};
  }

  /** The JSON body of the response. */
  toBody(): ErrorBody {
    const error: ErrorBody["error"] = { code: this.code, message: this.message };
    if (this.issues) error.issues = this.issues;
    return { error };
  }

  /** The JSON error response, with the extra headers. */
  override getResponse(): Response {
    return Response.json(this.toBody(), { status: this.status, headers: this.headers });
  }
}

/** The body of every error response. */
export interface ErrorBody {
  /** What went wrong. */
  error: {
    /** The stable code. */
    code: ErrorCode;
    /** A human-readable message. */
    message: string;
    /** The problems found, for `invalid_input`. */
    issues?: ApiIssue[];
    /** Only in debug mode, for `internal` errors. */
    stack?: string;
  };
}

const STATUS_CODES: Partial<Record<number, ErrorCode>> = {
  400: ErrorCode.InvalidInput,
  401: ErrorCode.Unauthorized,
  403: ErrorCode.Forbidden,
  404: ErrorCode.NotFound,
  408: ErrorCode.RequestTimeout,
  409: ErrorCode.Conflict,
  413: ErrorCode.PayloadTooLarge,
  415: ErrorCode.InvalidJson,
  429: ErrorCode.TooManyRequests,
  503: ErrorCode.Unavailable,
};

/**
 * Maps an error thrown while handling a request to an {@linkcode ApiError},
 * or returns `undefined` when it is unexpected (a 500).
 *
 * Engine errors: unknown workflow or run → 404; invalid input → 400 with
 * zod's issues; input over the engine's size limit → 413; a live run whose
 * workflow this server lacks → 409; cancelling a
 * finished run → 409; a bad argument (limit, cursor) → 400; a closed engine,
 * a store out of space or a worker that was just fenced → 503. Hono's own `HTTPException`s keep their status.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FencedError, RunNotFoundError } from "../mod.ts";
 * import { toApiError } from "./errors.ts";
 * assert.ok(toApiError(new RunNotFoundError("r1"))?.status === 404);
 * assert.ok(toApiError(new TypeError("boom")) === undefined);
 * assert.ok(toApiError(new FencedError("w1"))?.status === 503);
 * ```
 */
export function toApiError(error: unknown): ApiError | undefined {
  if (error instanceof ApiError) return error;
  if (
    error instanceof UnknownWorkflowError || error instanceof RunNotFoundError ||
    error instanceof UnknownEventError
  ) {
    return new ApiError(404, ErrorCode.NotFound, error.message, { cause: error });
  }
  if (error instanceof InputTooLargeError) {
    return new ApiError(413, ErrorCode.PayloadTooLarge, error.message, { cause: error });
  }
  if (error instanceof WorkflowNotServedError) {
    return new ApiError(409, ErrorCode.Conflict, error.message, { cause: error });
  }
  if (error instanceof InvalidInputError) {
    const issues = error.issues.map(({ code, path, message }) => ({ code, path, message }));
    return new ApiError(400, ErrorCode.InvalidInput, error.message, { issues, cause: error });
  }
  if (error instanceof RunFinishedError) {
    return new ApiError(409, ErrorCode.Conflict, error.message, { cause: error });
  }
  if (error instanceof InvalidArgumentError) {
    return new ApiError(400, ErrorCode.InvalidInput, error.message, { cause: error });
  }
  if (error instanceof EngineClosedError) {
    return new ApiError(503, ErrorCode.Unavailable, "The server is shutting down", {
      cause: error,
    });
  }
  if (error instanceof FencedError) {
    // Nothing of the request was written; the worker registers again at once.
    return new ApiError(
      503,
      ErrorCode.Unavailable,
      "This worker was declared dead by another and is registering again; the request " +
        "was not carried out, retry it",
      { cause: error, headers: { "Retry-After": "1" } },
    );
  }
  if (error instanceof StorageFullError) {
    return new ApiError(503, ErrorCode.Unavailable, error.message, {
      cause: error,
      headers: { "Retry-After": "30" },
    });
  }
  if (error instanceof HTTPException) {
    const code = STATUS_CODES[error.status];
    if (code === undefined || error.status >= 500) return undefined;
    return new ApiError(error.status, code, error.message || `HTTP ${error.status}`, {
      cause: error,
    });
  }
  return undefined;
}

/**
 * Maps zod's issues to the API's issue shape: code, path and message only.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { z } from "zod";
 * import { toApiIssues } from "./errors.ts";
 * const result = z.object({ n: z.number() }).safeParse({ n: "1" });
 * assert.ok(!result.success && toApiIssues(result.error.issues)[0].path[0] === "n");
 * ```
 */
export function toApiIssues(
  issues: readonly { code: string; path: readonly PropertyKey[]; message: string }[],
): ApiIssue[] {
  return issues.map((i) => ({
    code: i.code,
    path: i.path.map((p) => typeof p === "number" ? p : String(p)),
    message: i.message,
  }));
}

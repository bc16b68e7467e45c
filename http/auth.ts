/**
 * Request guards: a bearer token compared in constant time, and a check that
 * browsers on other origins cannot change anything.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { ApiError, ErrorCode } from "./errors.ts";

/** Options of {@linkcode bearerAuth}. */
export interface BearerAuthOptions {
  /** Paths served without a token, matched exactly. @default {[]} */
  publicPaths?: readonly string[];
}

const digest = (value: string) => createHash("sha256").update(value, "utf8").digest();

/**
 * Requires `Authorization: Bearer <token>` on every request but the public
 * paths; answers 401 `unauthorized` otherwise. Both tokens are hashed first so
 * the comparison takes the same time whatever their lengths and contents.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { bearerAuth } from "./auth.ts";
 * const app = new Hono();
 * app.use("*", bearerAuth("s3cret", { publicPaths: ["/healthz"] }));
 * app.get("/private", (c) => c.text("ok"));
 * const res = await app.request("/private", { headers: { authorization: "Bearer s3cret" } });
 * console.assert(res.status === 200);
 * ```
 */
export function bearerAuth(token: string, options: BearerAuthOptions = {}): MiddlewareHandler {
  if (token.length === 0) {
    throw new RangeError("Cannot require a bearer token as 'token' is empty");
  }
  const expected = digest(token);
  const publicPaths = new Set(options.publicPaths ?? []);
  return async (c, next) => {
    if (publicPaths.has(c.req.path)) return await next();
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer[ ]+(\S+)[ ]*$/i.exec(header);
    const given = match ? digest(match[1]) : undefined;
    if (!given || !timingSafeEqual(given, expected)) {
      throw new ApiError(
        401,
        ErrorCode.Unauthorized,
        header === "" ? "Missing 'Authorization: Bearer <token>' header" : "Invalid bearer token",
        { headers: { "WWW-Authenticate": 'Bearer realm="weft"' } },
      );
    }
    await next();
  };
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * Refuses requests that change state (anything but GET, HEAD and OPTIONS)
 * when a browser says they come from another site, with 403 `forbidden`.
 *
 * The API accepts bodies without a JSON content type (curl's `-d` sends
 * `application/x-www-form-urlencoded`), which browsers may send cross-origin
 * without a preflight; this check stops a web page from starting or
 * cancelling runs on a server without a token on the user's machine.
 * Clients that are not browsers send no `Origin` and are not affected.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { sameOriginWrites } from "./auth.ts";
 * const app = new Hono().use("*", sameOriginWrites()).post("/x", (c) => c.text("ok"));
 * const res = await app.request("/x", { method: "POST", headers: { origin: "https://evil.example" } });
 * console.assert(res.status === 403);
 * ```
 */
export function sameOriginWrites(): MiddlewareHandler {
  return async (c, next) => {
    if (SAFE_METHODS.has(c.req.method)) return await next();
    const site = c.req.header("sec-fetch-site");
    const origin = c.req.header("origin");
    let crossOrigin = site === "cross-site" || site === "same-site";
    if (!crossOrigin && origin !== undefined) {
      try {
        crossOrigin = new URL(origin).host !== new URL(c.req.url).host;
      } catch {
        crossOrigin = true; // "null" or garbage: an opaque origin
      }
    }
    if (crossOrigin) {
      throw new ApiError(
        403,
        ErrorCode.Forbidden,
        `Cross-origin ${c.req.method} requests are refused: origin is ${origin ?? site}`,
      );
    }
    await next();
  };
}

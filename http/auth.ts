/**
 * Request guards: a bearer token compared in constant time, browser sessions
 * signed with a key derived from that token, and a check that browsers on
 * other origins cannot change anything.
 *
 * @module
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { getLogger } from "@logtape/logtape";
import type { Context, MiddlewareHandler } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { ApiError, ErrorCode } from "./errors.ts";
import type { LoginThrottle } from "./throttle.ts";

const log = getLogger(["weft", "auth"]);

/**
 * The client address of a request as `Deno.serve` passes it (the app's
 * `env`), or `"unknown"`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { remoteAddress } from "./auth.ts";
 * const app = new Hono().get("/", (c) => c.text(remoteAddress(c)));
 * assert.equal(await (await app.request("/")).text(), "unknown");
 * ```
 */
export function remoteAddress(c: Context): string {
  const addr = (c.env as { remoteAddr?: { hostname?: unknown } } | undefined)?.remoteAddr;
  return typeof addr?.hostname === "string" ? addr.hostname : "unknown";
}

/** A 429 for a client that guessed too many tokens. */
export function throttled(retryAfterMs: number): ApiError {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new ApiError(
    429,
    ErrorCode.TooManyRequests,
    `Too many wrong tokens from this address: try again in ${seconds} s`,
    { headers: { "Retry-After": String(seconds) } },
  );
}

/** Where to send browsers that ask for an HTML page without auth. */
export interface LoginRedirect {
  /** The login page's path, such as `/login`. */
  path: string;
  /** Whether a path is an HTML page that a browser may navigate to. */
  isPage: (path: string) => boolean;
}

/** Options of {@linkcode bearerAuth}. */
export interface BearerAuthOptions {
  /** Paths served without a token, matched exactly. @default {[]} */
  publicPaths?: readonly string[];
  /**
   * Also accepts a session cookie issued by these sessions (see
   * {@linkcode createSessions}), so that browsers, which cannot send the
   * bearer header, can sign in. @default {undefined} (the header only)
   */
  sessions?: Sessions;
  /**
   * Redirects (303) a browser's GET of an HTML page without auth to the
   * login page, with the page as `next`, instead of answering 401.
   * @default {undefined} (always 401)
   */
  loginRedirect?: LoginRedirect;
  /**
   * Throttles wrong tokens per client address: a client past its free
   * failures is answered 429 with `Retry-After`, its token unchecked.
   * @default {undefined} (no throttling)
   */
  throttle?: LoginThrottle;
  /** The client's address, for the throttle and the log. @default {remoteAddress} */
  clientAddress?: (c: Context) => string;
}

const digest = (value: string) => createHash("sha256").update(value, "utf8").digest();

/**
 * Whether `given` is the secret whose digest is `expected`. Both are hashed
 * so the comparison takes the same time whatever their lengths and contents.
 */
const sameSecret = (given: string, expected: Buffer) => timingSafeEqual(digest(given), expected);

/** The name of the browser session cookie. */
export const SESSION_COOKIE = "weft_session";

/** How long a browser session lasts by default: 12 hours. */
export const DEFAULT_SESSION_MAX_AGE_MS = 12 * 60 * 60 * 1000;

/** Options of {@linkcode createSessions}. */
export interface SessionOptions {
  /** How long a session lasts after signing in, in milliseconds. @default {43200000} (12 h) */
  maxAgeMs?: number;
  /** The clock that sessions expire by, in epoch milliseconds. @default {Date.now} */
  now?: () => number;
}

/** Browser sessions for one token: see {@linkcode createSessions}. */
export interface Sessions {
  /** How long a session lasts after signing in, in milliseconds. */
  readonly maxAgeMs: number;
  /** Whether `given` is the token, compared in constant time. */
  checkToken(given: string): boolean;
  /** The cookie value of a new session: a random id and its expiry, signed. */
  issue(): string;
  /** Whether a cookie value is a session issued for this token that has not expired. */
  verify(value: string | undefined): boolean;
}

const SESSION_VALUE = /^v1\.([A-Za-z0-9_-]{22})\.([0-9]{1,16})\.([A-Za-z0-9_-]{43})$/;

/**
 * Browser sessions signed for a token. A cookie value is
 * `v1.<random id>.<expiry in epoch ms>.<HMAC-SHA256 of the rest>`, keyed by a
 * key derived from the token: it never holds the token, it cannot be made
 * or extended without the token, and changing the token ends every session.
 * Sessions are not stored on the server, so one cannot be revoked before
 * it expires except by changing the token.
 *
 * @throws {RangeError} when the token is empty or `maxAgeMs` is not a positive integer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createSessions } from "./auth.ts";
 * let nowMs = 0;
 * const sessions = createSessions("s3cret", { maxAgeMs: 1_000, now: () => nowMs });
 * const cookie = sessions.issue();
 * assert.ok(sessions.verify(cookie) && !cookie.includes("s3cret"));
 * nowMs = 1_000;
 * assert.ok(!sessions.verify(cookie));
 * ```
 */
export function createSessions(token: string, options: SessionOptions = {}): Sessions {
  if (token.length === 0) {
    throw new RangeError("Cannot create sessions as 'token' is empty");
  }
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_SESSION_MAX_AGE_MS;
  if (!Number.isSafeInteger(maxAgeMs) || maxAgeMs < 1000) {
    throw new RangeError(
      `Cannot create sessions as 'maxAgeMs' must be an integer >= 1000: current value is ${maxAgeMs}`,
    );
  }
  const now = options.now ?? Date.now;
  const expected = digest(token);
  const key = createHmac("sha256", token).update("weft session key v1", "utf8").digest();
  const sign = (payload: string) =>
    createHmac("sha256", key).update(payload, "utf8").digest("base64url");
  return {
    maxAgeMs,
    checkToken: (given) => sameSecret(given, expected),
    issue() {
      const payload = `v1.${randomBytes(16).toString("base64url")}.${now() + maxAgeMs}`;
      return `${payload}.${sign(payload)}`;
    },
    verify(value) {
      const match = value === undefined ? null : SESSION_VALUE.exec(value);
      if (!match) return false;
      const payload = `v1.${match[1]}.${match[2]}`;
      return sameSecret(match[3], digest(sign(payload))) && now() < Number(match[2]);
    },
  };
}

function isHttps(c: Context): boolean {
  if (new URL(c.req.url).protocol === "https:") return true;
  // Behind a TLS proxy; a client that lies only makes its own cookie stricter.
  const forwarded = c.req.header("x-forwarded-proto")?.split(",")[0].trim().toLowerCase();
  return forwarded === "https";
}

/**
 * Starts a session: sets the session cookie on the response, `HttpOnly`,
 * `SameSite=Strict`, `Path=/`, `Max-Age` the session's length, and `Secure`
 * when the request came over https.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { createSessions, setSessionCookie } from "./auth.ts";
 * const sessions = createSessions("s3cret");
 * const app = new Hono().post("/login", (c) => {
 *   setSessionCookie(c, sessions);
 *   return c.body(null, 204);
 * });
 * const res = await app.request("/login", { method: "POST" });
 * assert.ok(res.headers.get("set-cookie")!.includes("SameSite=Strict"));
 * ```
 */
export function setSessionCookie(c: Context, sessions: Sessions): void {
  setCookie(c, SESSION_COOKIE, sessions.issue(), {
    httpOnly: true,
    sameSite: "Strict",
    path: "/",
    secure: isHttps(c),
    maxAge: Math.floor(sessions.maxAgeMs / 1000),
  });
}

/**
 * Ends the browser's session: expires the session cookie.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { clearSessionCookie } from "./auth.ts";
 * const app = new Hono().post("/logout", (c) => {
 *   clearSessionCookie(c);
 *   return c.body(null, 204);
 * });
 * const res = await app.request("/logout", { method: "POST" });
 * assert.ok(res.headers.get("set-cookie")!.includes("Max-Age=0"));
 * ```
 */
export function clearSessionCookie(c: Context): void {
  deleteCookie(c, SESSION_COOKIE, {
    httpOnly: true,
    sameSite: "Strict",
    path: "/",
    secure: isHttps(c),
  });
}

function wantsPage(c: Context, redirect: LoginRedirect): boolean {
  return (c.req.method === "GET" || c.req.method === "HEAD") &&
    (c.req.header("accept") ?? "").includes("text/html") && redirect.isPage(c.req.path);
}

/**
 * Requires `Authorization: Bearer <token>`, or with `sessions` a valid
 * session cookie, on every request but the public paths; answers 401
 * `unauthorized` otherwise, or with `loginRedirect` sends a browser asking
 * for an HTML page to the login page. Both tokens are hashed first so the
 * comparison takes the same time whatever their lengths and contents.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { bearerAuth } from "./auth.ts";
 * const app = new Hono();
 * app.use("*", bearerAuth("s3cret", { publicPaths: ["/healthz"] }));
 * app.get("/private", (c) => c.text("ok"));
 * const res = await app.request("/private", { headers: { authorization: "Bearer s3cret" } });
 * assert.ok(res.status === 200);
 * ```
 */
export function bearerAuth(token: string, options: BearerAuthOptions = {}): MiddlewareHandler {
  if (token.length === 0) {
    throw new RangeError("Cannot require a bearer token as 'token' is empty");
  }
  const expected = digest(token);
  const { sessions, loginRedirect, throttle } = options;
  const clientAddress = options.clientAddress ?? remoteAddress;
  const publicPaths = new Set(options.publicPaths ?? []);
  return async (c, next) => {
    if (publicPaths.has(c.req.path)) return await next();
    const header = c.req.header("authorization") ?? "";
    if (header !== "") {
      const client = clientAddress(c);
      const verdict = throttle?.check(client);
      if (verdict && !verdict.allowed) throw throttled(verdict.retryAfterMs);
      const match = /^Bearer[ ]+(\S+)[ ]*$/i.exec(header);
      if (match && sameSecret(match[1], expected)) {
        throttle?.succeed(client);
        return await next();
      }
      const failed = throttle?.fail(client);
      log.warn("Wrong bearer token from {client} for {method} {path} ({failures} in a row)", {
        client,
        method: c.req.method,
        path: c.req.path,
        failures: failed?.failures ?? null,
      });
    }
    const cookie = sessions ? getCookie(c, SESSION_COOKIE) : undefined;
    if (sessions?.verify(cookie)) return await next();
    if (loginRedirect && wantsPage(c, loginRedirect)) {
      const { pathname, search } = new URL(c.req.url);
      const target = pathname + search;
      const query = target === "/" ? "" : `?${new URLSearchParams({ next: target })}`;
      return c.redirect(`${loginRedirect.path}${query}`, 303);
    }
    throw new ApiError(
      401,
      ErrorCode.Unauthorized,
      header !== ""
        ? "Invalid bearer token"
        : cookie !== undefined
        ? "Invalid or expired session: sign in again"
        : "Missing 'Authorization: Bearer <token>' header",
      { headers: { "WWW-Authenticate": 'Bearer realm="weft"' } },
    );
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
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { sameOriginWrites } from "./auth.ts";
 * const app = new Hono().use("*", sameOriginWrites()).post("/x", (c) => c.text("ok"));
 * const res = await app.request("/x", { method: "POST", headers: { origin: "https://evil.example" } });
 * assert.ok(res.status === 403);
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

/** The host part of a `Host` header value, lowercased, without port or brackets. */
function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith("[")) return h.slice(1, h.indexOf("]") < 0 ? undefined : h.indexOf("]"));
  const colon = h.lastIndexOf(":");
  return colon >= 0 && /^[0-9]*$/.test(h.slice(colon + 1)) ? h.slice(0, colon) : h;
}

/**
 * Whether a host name is loopback: `localhost`, a name under `.localhost`,
 * an address in 127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isLoopbackHost } from "./auth.ts";
 * assert.ok(isLoopbackHost("localhost") && isLoopbackHost("127.0.0.2") && isLoopbackHost("::1"));
 * assert.ok(!isLoopbackHost("evil.example") && !isLoopbackHost("127.0.0.1.evil.example"));
 * ```
 */
export function isLoopbackHost(name: string): boolean {
  const h = name.replace(/\.$/, "");
  if (h === "localhost" || h.endsWith(".localhost")) return true;
  if (h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = /^(?:::ffff:)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return v4 !== null && v4[1] === "127" && v4.slice(2).every((p) => Number(p) <= 255);
}

/** Options of {@linkcode loopbackHostsOnly}. */
export interface HostCheckOptions {
  /** More host names accepted (without port); `"*"` accepts any. @default {[]} */
  allowedHosts?: readonly string[];
  /** Paths served whatever the `Host`, matched exactly. @default {[]} */
  publicPaths?: readonly string[];
}

/**
 * Refuses, with 403 `forbidden`, requests whose `Host` is not a loopback
 * name or address nor one of `allowedHosts`. A server without a token trusts
 * whoever can reach it; this stops a web page from reaching it through DNS
 * rebinding (a hostname of the attacker's that resolves to 127.0.0.1), where
 * the browser sends the attacker's hostname as `Host` and counts the page
 * as same-origin.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Hono } from "hono";
 * import { loopbackHostsOnly } from "./auth.ts";
 * const app = new Hono().use("*", loopbackHostsOnly()).get("/", (c) => c.text("ok"));
 * assert.equal((await app.request("http://localhost:8000/")).status, 200);
 * assert.equal((await app.request("http://rebound.example:8000/")).status, 403);
 * ```
 */
export function loopbackHostsOnly(options: HostCheckOptions = {}): MiddlewareHandler {
  const allowed = new Set((options.allowedHosts ?? []).map((h) => hostName(h)));
  const any = allowed.has("*");
  const publicPaths = new Set(options.publicPaths ?? []);
  return async (c, next) => {
    if (any || publicPaths.has(c.req.path)) return await next();
    const host = c.req.header("host") ?? new URL(c.req.url).host;
    const name = hostName(host);
    if (!isLoopbackHost(name) && !allowed.has(name)) {
      throw new ApiError(
        403,
        ErrorCode.Forbidden,
        `Host '${host.slice(0, 100)}' is not allowed: this server has no token and answers ` +
          "only loopback hosts; add the name with --allowed-hosts (or set a token)",
      );
    }
    await next();
  };
}

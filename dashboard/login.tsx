/**
 * Signing in from a browser when the server has a token: browsers cannot
 * send the bearer header, so `POST /login` checks the token typed into a
 * form and sets a session cookie (see `createSessions` in `http/auth.ts`),
 * which the auth middleware then accepts like the header. `POST /logout`
 * clears it.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { type Context, Hono } from "hono";
import {
  clearSessionCookie,
  remoteAddress,
  type Sessions,
  setSessionCookie,
} from "../http/auth.ts";
import type { LoginThrottle } from "../http/throttle.ts";
import { Layout, type Markup, Notice } from "./pages.tsx";
import { SECURITY_HEADERS } from "./routes.tsx";

/** The login page's path. */
export const LOGIN_PATH = "/login";

/** The logout action's path. */
export const LOGOUT_PATH = "/logout";

/**
 * What a browser needs before it has signed in: the login page and logout
 * action, and the stylesheet and icon the login page shows.
 */
export const LOGIN_PUBLIC_PATHS: readonly string[] = [
  LOGIN_PATH,
  LOGOUT_PATH,
  "/ui/assets/style.css",
  "/ui/assets/favicon.svg",
];

/**
 * Whether a path is one of the dashboard's HTML pages (`/` and `/ui/...`
 * but its assets), which a browser without a session is sent to sign in for.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isDashboardPage } from "./login.tsx";
 * assert.ok(isDashboardPage("/ui/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV"));
 * assert.ok(!isDashboardPage("/runs") && !isDashboardPage("/ui/assets/run.js"));
 * ```
 */
export function isDashboardPage(path: string): boolean {
  return path === "/" || path === "/ui" ||
    (path.startsWith("/ui/") && !path.startsWith("/ui/assets/"));
}

const BASE = "http://weft.invalid";

/** The page to go to after signing in: a dashboard page on this server, else `/`. */
function nextPage(next: unknown): string {
  if (typeof next !== "string" || !next.startsWith("/")) return "/";
  try {
    const url = new URL(next, BASE);
    return url.origin === BASE && isDashboardPage(url.pathname) ? url.pathname + url.search : "/";
  } catch {
    return "/";
  }
}

/** `GET /login`: one password field for the server's token. */
export function LoginPage(props: { next: string; error?: string }): Markup {
  return (
    <Layout title="Sign in" nav={false}>
      <h1>Sign in</h1>
      {props.error && <Notice title={props.error} />}
      <form class="login" method="post" action={LOGIN_PATH}>
        <input type="hidden" name="next" value={props.next} />
        <label>
          Token
          <input
            type="password"
            name="token"
            autocomplete="current-password"
            required
            autofocus
          />
        </label>
        <p>
          <button type="submit">Sign in</button>
        </p>
        <p class="muted">
          The token the server was started with (<code>--token</code> or <code>WEFT_TOKEN</code>).
        </p>
      </form>
    </Layout>
  );
}

const log = getLogger(["weft", "auth"]);

async function loginPage(
  c: Context,
  next: string,
  error?: string,
  retryAfterMs?: number,
): Promise<Response> {
  const retryAfter = retryAfterMs === undefined
    ? undefined
    : String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
  return c.html(
    await <LoginPage next={next} error={error} />,
    retryAfter ? 429 : error ? 401 : 200,
    {
      ...SECURITY_HEADERS,
      ...(error && !retryAfter ? { "WWW-Authenticate": 'Bearer realm="weft"' } : {}),
      ...(retryAfter ? { "Retry-After": retryAfter } : {}),
    },
  );
}

/** Options of {@linkcode loginRoutes}. */
export interface LoginRoutesOptions {
  /** Throttles wrong tokens per client address. @default {undefined} */
  throttle?: LoginThrottle;
  /** The client's address. @default {remoteAddress} */
  clientAddress?: (c: Context) => string;
}

/**
 * `GET /login`, `POST /login` and `POST /logout` for `sessions`. Mount them
 * behind `sameOriginWrites` (so that another site cannot post the form),
 * with their paths public in `bearerAuth`; `createApp` does both when it
 * has a token.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createSessions } from "../http/auth.ts";
 * import { loginRoutes } from "./login.tsx";
 * const app = loginRoutes(createSessions("s3cret"));
 * const res = await app.request("/login", {
 *   method: "POST",
 *   body: new URLSearchParams({ token: "s3cret" }),
 * });
 * assert.ok(res.status === 303 && res.headers.has("set-cookie"));
 * ```
 */
export function loginRoutes(sessions: Sessions, options: LoginRoutesOptions = {}): Hono {
  const { throttle } = options;
  const clientAddress = options.clientAddress ?? remoteAddress;
  const app = new Hono();

  app.get(LOGIN_PATH, (c) => loginPage(c, nextPage(c.req.query("next"))));

  app.post(LOGIN_PATH, async (c) => {
    const form = await c.req.parseBody();
    const next = nextPage(form.next);
    const token = typeof form.token === "string" ? form.token : "";
    if (token === "") return loginPage(c, next, "Enter the token");
    const client = clientAddress(c);
    const verdict = throttle?.check(client);
    if (verdict && !verdict.allowed) {
      const seconds = Math.max(1, Math.ceil(verdict.retryAfterMs / 1000));
      return loginPage(
        c,
        next,
        `Too many wrong tokens: try again in ${seconds} s`,
        verdict.retryAfterMs,
      );
    }
    if (!sessions.checkToken(token)) {
      const failed = throttle?.fail(client);
      log.warn("Sign-in with a wrong token from {client} ({failures} in a row)", {
        client,
        failures: failed?.failures ?? null,
      });
      return loginPage(c, next, "Wrong token");
    }
    throttle?.succeed(client);
    log.info("Signed in from {client}", { client });
    setSessionCookie(c, sessions);
    return c.redirect(next, 303);
  });

  app.post(LOGOUT_PATH, (c) => {
    clearSessionCookie(c);
    return c.redirect(LOGIN_PATH, 303);
  });

  return app;
}

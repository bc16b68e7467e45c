/**
 * Browser sign-in with a token, through `app.request()`: the login page,
 * the session cookie and what it grants, tampered and expired cookies,
 * logout, and the cross-origin guard.
 */
import assert from "node:assert/strict";
import type { Hono } from "hono";
import { z } from "zod";
import { type AnyWorkflow, workflow } from "../mod.ts";
import { createApp } from "../http/app.ts";
import { createSessions, DEFAULT_SESSION_MAX_AGE_MS, SESSION_COOKIE } from "../http/auth.ts";
import { ErrorBodySchema } from "../http/schemas.ts";
import { mountObservability, type Observability } from "../observability/mod.ts";
import { testEngine } from "./_helpers.ts";

const TOKEN = "s3cret-token";
const ORIGIN = "http://localhost";
const HTML = { accept: "text/html,application/xhtml+xml,*/*;q=0.8" };

function quick(): AnyWorkflow {
  return workflow("quick", { input: z.object({ n: z.number().int() }) })
    .step("one", ({ input }) => input.n * 2);
}

/** An app with the dashboard mounted, a token, and a session clock the test moves. */
async function setup({ token }: { token?: string } = { token: TOKEN }) {
  const te = await testEngine([quick()]);
  let nowMs = Date.UTC(2026, 0, 1);
  let observability: Observability | undefined;
  const app = createApp({
    engine: te.engine,
    token,
    now: () => nowMs,
    mount: (app) => {
      observability = mountObservability(app, { engine: te.engine });
    },
  });
  return {
    te,
    app,
    /** Moves the session clock forward. */
    tick(ms: number) {
      nowMs += ms;
    },
    async [Symbol.asyncDispose]() {
      observability?.close();
      await te[Symbol.asyncDispose]();
    },
  };
}

function login(
  app: Hono,
  fields: Record<string, string>,
  headers: Record<string, string> = { origin: ORIGIN },
  url = "/login",
) {
  return app.request(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: new URLSearchParams(fields).toString(),
  });
}

/** Signs in and answers the `Cookie` header that carries the session. */
async function signIn(app: Hono): Promise<string> {
  const res = await login(app, { token: TOKEN });
  assert.equal(res.status, 303);
  const cookie = res.headers.get("set-cookie")?.split(";")[0];
  assert.ok(cookie?.startsWith(`${SESSION_COOKIE}=`), `a session cookie: ${cookie}`);
  return cookie!;
}

/** Asserts the API's JSON 401. */
async function unauthorized(res: Response): Promise<string> {
  const text = await res.text();
  assert.equal(res.status, 401, text);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(text);
  assert.deepEqual(Object.keys(body.error).sort(), ["code", "message"]);
  const { error } = ErrorBodySchema.parse(body);
  assert.equal(error.code, "unauthorized");
  return error.message;
}

Deno.test("login: a browser without a session is sent to the login page, API clients get 401", async (t) => {
  await using s = await setup();
  const { app } = s;

  await t.step("dashboard pages redirect (303) to /login with the page as next", async () => {
    const home = await app.request("/", { headers: HTML });
    assert.equal(home.status, 303);
    assert.equal(home.headers.get("location"), "/login");
    const run = await app.request("/ui/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV?x=1", { headers: HTML });
    assert.equal(run.status, 303);
    assert.equal(
      run.headers.get("location"),
      `/login?next=${encodeURIComponent("/ui/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV?x=1")}`,
    );
    const start = await app.request("/ui/start", { headers: HTML });
    assert.equal(start.headers.get("location"), "/login?next=%2Fui%2Fstart");
  });

  await t.step("the login page: a password field, the dashboard's look, no cookie", async () => {
    const res = await app.request("/login?next=%2Fui%2Fstart", { headers: HTML });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-security-policy")!, /form-action 'self'/);
    assert.equal(res.headers.get("set-cookie"), null);
    const html = await res.text();
    assert.match(html, /<link rel="stylesheet" href="\/ui\/assets\/style.css"/);
    assert.match(html, /<form class="login" method="post" action="\/login">/);
    assert.match(html, /<input type="password" name="token"/);
    assert.match(html, /<input type="hidden" name="next" value="\/ui\/start"/);
    assert.doesNotMatch(html, /Start a run|Log out/, "no navigation before signing in");
    const css = await app.request("/ui/assets/style.css");
    assert.equal(css.status, 200, "the login page's stylesheet needs no session");
    await css.body?.cancel();
  });

  await t.step(
    "API routes, scripts, metrics, posts and non-HTML requests get the JSON 401",
    async () => {
      for (
        const [path, init] of [
          ["/runs", { headers: HTML }],
          ["/", {}],
          ["/", { headers: { accept: "application/json" } }],
          ["/ui/assets/run.js", { headers: HTML }],
          ["/metrics", {}],
          ["/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV/events", { headers: { accept: "text/event-stream" } }],
          ["/ui/runs", {
            method: "POST",
            headers: {
              ...HTML,
              origin: ORIGIN,
              "content-type": "application/x-www-form-urlencoded",
            },
            body: "workflow=quick&input=%7B%7D",
          }],
        ] as [string, RequestInit][]
      ) {
        const message = await unauthorized(await app.request(path, init));
        assert.match(message, /Missing 'Authorization: Bearer <token>' header/, path);
      }
    },
  );
});

Deno.test("login: a wrong token is a 401 page and sets no cookie", async () => {
  await using s = await setup();
  for (const token of ["wrong", `${TOKEN}x`, TOKEN.slice(0, -1), "", ` ${TOKEN}`]) {
    const res = await login(s.app, { token, next: "/ui/start" });
    assert.equal(res.status, 401, JSON.stringify(token));
    assert.equal(res.headers.get("set-cookie"), null);
    assert.match(res.headers.get("content-type")!, /^text\/html/);
    const html = await res.text();
    assert.match(html, token === "" ? /Enter the token/ : /Wrong token/);
    assert.match(html, /name="next" value="\/ui\/start"/, "next is kept for the next try");
  }
  const noField = await login(s.app, {});
  assert.equal(noField.status, 401);
  assert.equal(noField.headers.get("set-cookie"), null);
  await noField.body?.cancel();
});

Deno.test("login: the token sets an HttpOnly, SameSite=Strict session cookie that grants access", async (t) => {
  await using s = await setup();
  const { app, te } = s;
  const run = await te.engine.start("quick", { n: 21 });
  await te.engine.result(run.id);

  let cookie = "";
  await t.step("the cookie's flags, and no token in it", async () => {
    const res = await login(app, { token: TOKEN });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get("location"), "/");
    const setCookie = res.headers.get("set-cookie")!;
    const [pair, ...flags] = setCookie.split("; ");
    assert.deepEqual(flags.sort(), ["HttpOnly", "Max-Age=43200", "Path=/", "SameSite=Strict"]);
    assert.match(pair, new RegExp(`^${SESSION_COOKIE}=v1\\.[\\w-]{22}\\.\\d+\\.[\\w-]{43}$`));
    assert.ok(!pair.includes(TOKEN));
    cookie = pair;
    const again = (await signIn(app)).split("=")[1];
    assert.notEqual(again.split(".")[1], pair.split("=")[1].split(".")[1], "a new id each time");
  });

  await t.step("Secure when the request is https", async () => {
    for (
      const [url, headers] of [
        ["https://weft.example/login", { origin: "https://weft.example" }],
        ["/login", { origin: ORIGIN, "x-forwarded-proto": "https" }],
      ] as [string, Record<string, string>][]
    ) {
      const res = await login(app, { token: TOKEN }, headers, url);
      assert.equal(res.status, 303);
      assert.match(res.headers.get("set-cookie")!, /; Secure(;|$)/);
    }
  });

  await t.step("it opens the JSON API, the event stream, metrics and the dashboard", async () => {
    const headers = { cookie };
    const runs = await app.request("/runs", { headers });
    assert.equal(runs.status, 200);
    assert.equal((await runs.json()).runs[0].id, run.id);
    const started = await app.request("/workflows/quick/runs", {
      method: "POST",
      headers: { ...headers, origin: ORIGIN, "content-type": "application/json" },
      body: JSON.stringify({ n: 1 }),
    });
    assert.equal(started.status, 201);
    await te.engine.result((await started.json()).id);
    const events = await app.request(`/runs/${run.id}/events`, { headers });
    assert.equal(events.status, 200);
    assert.match(await events.text(), /event: end/);
    const metrics = await app.request("/metrics", { headers });
    assert.equal(metrics.status, 200);
    await metrics.body?.cancel();

    const home = await app.request("/", { headers: { ...HTML, ...headers } });
    assert.equal(home.status, 200);
    const html = await home.text();
    assert.match(html, /<h1>Runs<\/h1>/);
    assert.match(html, new RegExp(`<tr data-run-id="${run.id}"`));
    assert.match(html, /<form class="logout" method="post" action="\/logout">/);
    const page = await app.request(`/ui/runs/${run.id}`, { headers: { ...HTML, ...headers } });
    assert.equal(page.status, 200);
    await page.body?.cancel();
  });

  await t.step("the bearer header still works, and shows no logout button", async () => {
    const res = await app.request("/", { headers: { ...HTML, authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    assert.doesNotMatch(await res.text(), /Log out/);
  });

  await t.step(
    "after signing in, the browser goes to next: a page of this dashboard only",
    async () => {
      const cases: [string, string][] = [
        [`/ui/runs/${run.id}`, `/ui/runs/${run.id}`],
        ["/?status=succeeded", "/?status=succeeded"],
        ["//evil.example/", "/"],
        ["https://evil.example/", "/"],
        ["/\\evil.example", "/"],
        ["/\t/evil.example", "/"],
        ["/runs", "/"],
        ["/logout", "/"],
      ];
      for (const [next, location] of cases) {
        const res = await login(app, { token: TOKEN, next });
        assert.equal(res.status, 303);
        assert.equal(res.headers.get("location"), location, next);
      }
    },
  );
});

Deno.test("login: tampered, expired, foreign and raw-token cookies are refused", async (t) => {
  await using s = await setup();
  const { app } = s;
  const cookie = await signIn(app);
  const [name, value] = cookie.split("=");
  const [version, id, expiry, mac] = value.split(".");
  const flip = (text: string) => (text[0] === "A" ? "B" : "A") + text.slice(1);

  const refused = async (label: string, candidate: string) => {
    const api = await app.request("/runs", { headers: { cookie: candidate } });
    assert.match(await unauthorized(api), /Invalid or expired session/, label);
    const page = await app.request("/", { headers: { ...HTML, cookie: candidate } });
    assert.equal(page.status, 303, label);
    assert.equal(page.headers.get("location"), "/login", label);
  };

  await t.step("tampered", async () => {
    const later = String(Number(expiry) + DEFAULT_SESSION_MAX_AGE_MS);
    for (
      const [label, forged] of [
        ["id", [version, flip(id), expiry, mac]],
        ["expiry extended", [version, id, later, mac]],
        ["mac", [version, id, expiry, flip(mac)]],
        ["version", ["v2", id, expiry, mac]],
        ["mac missing", [version, id, expiry]],
      ] as [string, string[]][]
    ) {
      await refused(label, `${name}=${forged.join(".")}`);
    }
    await refused("the raw token", `${name}=${TOKEN}`);
    await refused("empty", `${name}=`);
  });

  await t.step("signed for another token", async () => {
    const other = createSessions(`${TOKEN}-other`, { now: () => Number(expiry) - 1000 });
    await refused("another token", `${name}=${other.issue()}`);
  });

  await t.step("expired after 12 hours, valid until then", async () => {
    s.tick(DEFAULT_SESSION_MAX_AGE_MS - 1);
    const still = await app.request("/runs", { headers: { cookie } });
    assert.equal(still.status, 200);
    await still.body?.cancel();
    s.tick(1);
    await refused("expired", cookie);
  });
});

Deno.test("login: logout clears the cookie", async () => {
  await using s = await setup();
  const cookie = await signIn(s.app);
  const res = await s.app.request("/logout", {
    method: "POST",
    headers: { origin: ORIGIN, cookie },
  });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/login");
  const cleared = res.headers.get("set-cookie")!;
  assert.match(cleared, new RegExp(`^${SESSION_COOKIE}=;`));
  assert.match(cleared, /Max-Age=0/);
  assert.match(cleared, /HttpOnly/);
  assert.match(cleared, /SameSite=Strict/);
  assert.match(cleared, /Path=\//);
  // Without a cookie, logging out again still answers.
  const again = await s.app.request("/logout", { method: "POST", headers: { origin: ORIGIN } });
  assert.equal(again.status, 303);
  await again.body?.cancel();
});

Deno.test("login: cross-origin posts to /login and /logout are refused", async () => {
  await using s = await setup();
  for (
    const headers of [
      { origin: "https://evil.example" },
      { origin: "http://localhost:8001" },
      { origin: "null" },
      { "sec-fetch-site": "cross-site" },
      { "sec-fetch-site": "same-site" },
    ] as Record<string, string>[]
  ) {
    const res = await login(s.app, { token: TOKEN }, headers);
    const body = await res.json();
    assert.equal(res.status, 403, JSON.stringify(headers));
    assert.equal(body.error.code, "forbidden");
    assert.equal(res.headers.get("set-cookie"), null);
    const logout = await s.app.request("/logout", { method: "POST", headers });
    assert.equal(logout.status, 403);
    assert.equal(logout.headers.get("set-cookie"), null);
    await logout.body?.cancel();
  }
});

Deno.test("login: without a token nothing changes", async () => {
  await using s = await setup({ token: undefined });
  const home = await s.app.request("/", { headers: HTML });
  assert.equal(home.status, 200);
  assert.doesNotMatch(await home.text(), /Log out/);
  for (const [method, path] of [["GET", "/login"], ["POST", "/login"], ["POST", "/logout"]]) {
    const res = await s.app.request(path, { method, headers: { origin: ORIGIN } });
    assert.equal(res.status, 404, `${method} ${path}`);
    assert.equal(res.headers.get("set-cookie"), null);
    await res.body?.cancel();
  }
  const runs = await s.app.request("/runs");
  assert.equal(runs.status, 200);
  await runs.body?.cancel();
});

Deno.test("createSessions refuses an empty token and a bad maxAgeMs", () => {
  assert.throws(() => createSessions(""), RangeError);
  for (const maxAgeMs of [0, 999, 1.5e3 + 0.5, Number.NaN]) {
    assert.throws(
      () => createSessions(TOKEN, { maxAgeMs }),
      (e: Error) =>
        e instanceof RangeError && /'maxAgeMs' must be an integer >= 1000/.test(e.message),
    );
  }
});

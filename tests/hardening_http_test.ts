/**
 * The HTTP guards added against hostile clients: the `Host` check of a
 * server without a token (DNS rebinding), the throttle of wrong tokens on a
 * fake clock, and the security headers of every response.
 */
import assert from "node:assert/strict";
import { reset } from "@logtape/logtape";
import { z } from "zod";
import { workflow } from "../mod.ts";
import { createApp } from "../http/app.ts";
import { mountObservability } from "../observability/mod.ts";
import { configureLogging } from "../observability/mod.ts";
import { testEngine } from "./_helpers.ts";

const quick = workflow("quick", { input: z.object({ n: z.number() }) })
  .step("double", ({ input }) => input.n * 2);
const TOKEN = "s3cret-token";

async function errorOf(res: Response, status: number) {
  const text = await res.text();
  assert.equal(res.status, status, text);
  return JSON.parse(text).error as { code: string; message: string };
}

Deno.test("without a token, only loopback hosts (and --allowed-hosts) are answered", async (t) => {
  await using te = await testEngine([quick]);
  const plain = createApp({ engine: te.engine });
  const post = (app: typeof plain, url: string, headers: Record<string, string> = {}) =>
    app.request(url, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ n: 1 }),
    });

  await t.step("a rebound hostname is refused, reads and writes alike", async () => {
    const read = await errorOf(await plain.request("http://rebound.example:8000/runs"), 403);
    assert.equal(read.code, "forbidden");
    assert.match(read.message, /Host 'rebound\.example:8000' is not allowed/);
    assert.match(read.message, /--allowed-hosts/);
    // What a rebinding page sends: its own hostname as Host and as Origin.
    const write = await post(plain, "http://rebound.example:8000/workflows/quick/runs", {
      origin: "http://rebound.example:8000",
    });
    assert.equal((await errorOf(write, 403)).code, "forbidden");
    assert.equal((await te.engine.list()).runs.length, 0, "nothing was started");
    // A name that only starts like a loopback address is not one.
    await errorOf(await plain.request("http://127.0.0.1.rebound.example/runs"), 403);
  });

  await t.step("loopback names and addresses are answered", async () => {
    for (
      const host of [
        "localhost:8000",
        "127.0.0.1:8000",
        "127.8.9.10",
        "[::1]:8000",
        "app.localhost",
      ]
    ) {
      const res = await plain.request(`http://${host}/runs`);
      assert.equal(res.status, 200, host);
      await res.body?.cancel();
    }
    assert.equal((await post(plain, "http://localhost:8000/workflows/quick/runs")).status, 201);
  });

  await t.step("/healthz answers any host, for load balancers", async () => {
    assert.equal((await plain.request("http://10.0.0.5:8000/healthz")).status, 200);
  });

  await t.step("allowedHosts adds names; '*' turns the check off", async () => {
    const allowed = createApp({ engine: te.engine, allowedHosts: ["Weft.Internal"] });
    const ok = await allowed.request("http://weft.internal:8000/runs");
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    await errorOf(await allowed.request("http://rebound.example/runs"), 403);
    const any = createApp({ engine: te.engine, allowedHosts: ["*"] });
    const anyRes = await any.request("http://rebound.example/runs");
    assert.equal(anyRes.status, 200);
    await anyRes.body?.cancel();
  });

  await t.step("with a token, the Host is not checked: the token is the guard", async () => {
    const guarded = createApp({ engine: te.engine, token: TOKEN });
    const res = await guarded.request("http://rebound.example/runs", {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
    await errorOf(await guarded.request("http://rebound.example/runs"), 401);
  });
});

Deno.test("wrong tokens are throttled per client address with a growing delay", async (t) => {
  await using te = await testEngine([quick]);
  let nowMs = 1_000_000;
  const lines: string[] = [];
  await configureLogging({ format: "json", level: "info", write: (l) => lines.push(l) });
  try {
    const app = createApp({
      engine: te.engine,
      token: TOKEN,
      now: () => nowMs,
      loginThrottle: { freeFailures: 2, baseDelayMs: 1_000, maxDelayMs: 4_000 },
      clientAddress: (c) => c.req.header("x-test-client") ?? "none",
    });
    const tryToken = (token: string, client = "10.0.0.1") =>
      app.request("/runs", {
        headers: { authorization: `Bearer ${token}`, "x-test-client": client },
      });
    const login = (token: string, client = "10.0.0.1") =>
      app.request("/login", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", "x-test-client": client },
        body: new URLSearchParams({ token, next: "/" }),
      });

    await t.step("after the free failures, every try waits, the right token too", async () => {
      for (let i = 0; i < 3; i++) await errorOf(await tryToken("guess"), 401);
      const limited = await tryToken(TOKEN);
      assert.equal((await errorOf(limited, 429)).code, "too_many_requests");
      assert.equal(limited.headers.get("retry-after"), "1");
      // The sign-in form shares the throttle.
      const page = await login(TOKEN);
      assert.equal(page.status, 429);
      assert.equal(page.headers.get("retry-after"), "1");
      assert.match(await page.text(), /Too many wrong tokens: try again in 1 s/);
      // Another address is not affected.
      const other = await tryToken(TOKEN, "10.0.0.2");
      assert.equal(other.status, 200);
      await other.body?.cancel();
    });

    await t.step("each further wrong token doubles the delay, up to the cap", async () => {
      nowMs += 1_000;
      await errorOf(await tryToken("guess"), 401);
      assert.equal((await tryToken("guess")).headers.get("retry-after"), "2");
      nowMs += 2_000;
      await errorOf(await tryToken("guess"), 401);
      assert.equal((await tryToken("guess")).headers.get("retry-after"), "4");
      nowMs += 4_000;
      await errorOf(await tryToken("guess"), 401);
      assert.equal((await tryToken("guess")).headers.get("retry-after"), "4", "capped");
      nowMs += 3_999;
      assert.equal((await tryToken(TOKEN)).status, 429);
    });

    await t.step("the right token, once allowed, clears the address's record", async () => {
      nowMs += 1;
      const res = await login(TOKEN);
      assert.equal(res.status, 303);
      for (let i = 0; i < 3; i++) await errorOf(await tryToken("guess"), 401);
      assert.equal((await tryToken(TOKEN)).status, 429);
    });

    await t.step("sign-ins and wrong tokens are logged with the client address", () => {
      const records = lines.map((l) => JSON.parse(l));
      const wrong = records.filter((r) => /^Wrong bearer token from/.test(r.message));
      assert.ok(wrong.length >= 6, `${wrong.length} wrong-token records`);
      assert.equal(wrong[0].properties.client, "10.0.0.1");
      assert.equal(wrong[0].level, "WARN");
      const signedIn = records.find((r) => r.message.startsWith("Signed in from"));
      assert.equal(signedIn?.properties.client, "10.0.0.1");
    });
  } finally {
    await reset();
  }
});

Deno.test("every response carries nosniff; API responses the policy headers too", async () => {
  await using te = await testEngine([quick]);
  let observability;
  const app = createApp({
    engine: te.engine,
    mount: (a) => observability = mountObservability(a, { engine: te.engine }),
  });
  try {
    const check = async (path: string, status: number) => {
      const res = await app.request(path);
      assert.equal(res.status, status, path);
      assert.equal(res.headers.get("x-content-type-options"), "nosniff", path);
      await res.body?.cancel();
      return res.headers;
    };
    for (
      const [path, status] of [["/runs", 200], ["/nope", 404], ["/runs/x", 404], [
        "/runs?limit=x",
        400,
      ]] as const
    ) {
      const h = await check(path, status);
      assert.equal(h.get("content-security-policy"), "default-src 'none'; frame-ancestors 'none'");
      assert.equal(h.get("cache-control"), "no-store");
      assert.equal(h.get("referrer-policy"), "same-origin");
    }
    await check("/metrics", 200);
    await check("/openapi.json", 200);
    // A dashboard page keeps its own policy; a static asset its own caching.
    const page = await check("/", 200);
    assert.match(page.get("content-security-policy")!, /script-src 'self'/);
    const css = await check("/ui/assets/style.css", 200);
    assert.equal(css.get("cache-control"), "public, max-age=300");
  } finally {
    // deno-lint-ignore no-explicit-any
    (observability as any)?.close();
  }
});

/**
 * End-to-end tests of `server.ts` as a real process on a real port: the order
 * example over HTTP to `succeeded`, a SIGKILL and a restart on the same KV
 * file, several servers and a worker on one KV file, graceful shutdown, and
 * startup failures.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parseConfig, UsageError } from "../server.ts";
import { json, logLines, ROOT, SERVE, ServerProcess } from "./_server.ts";

const MOD_URL = new URL("../mod.ts", import.meta.url).href;

/** Runs `server.ts` to its end and returns its exit code and output. */
async function runServer(args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [...SERVE, ...args],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return { code, stdout: decoder.decode(stdout), stderr: decoder.decode(stderr) };
}

Deno.test("server runs the order workflow over HTTP and keeps its runs across a SIGKILL", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "weft_e2e_" });
  const kvPath = join(dir, "nested", "weft.sqlite3");
  try {
    let runId = "";
    let finished: unknown;
    let inFlightId = "";

    await t.step("first start: drive an order to succeeded, then SIGKILL", async () => {
      await using server = await ServerProcess.serve(kvPath);
      assert.notEqual(server.url.port, "0");
      assert.equal(server.url.hostname, "127.0.0.1");
      const [banner] = logLines(server.stdout);
      assert.equal(banner.logger, "weft.server");
      assert.equal(banner.level, "INFO");
      assert.equal(banner.properties.url, server.url.href);
      assert.equal(banner.properties.kvPath, kvPath);
      // Every example of workflows/, as the README lists them.
      assert.deepEqual(banner.properties.workflows, [
        { name: "approval", file: "workflows/approval.ts" },
        { name: "batch", file: "workflows/batch.ts" },
        { name: "checkout", file: "workflows/checkout.ts" },
        { name: "order", file: "workflows/order.ts" },
      ]);
      assert.equal(banner.properties.tokenRequired, false);
      assert.ok(banner.message.startsWith(`Weft listening on ${server.url.href} · KV ${kvPath}`));
      assert.match(banner.message, /order \(workflows\/order\.ts\)/);
      assert.match(banner.message, /no token: bound to 127\.0\.0\.1 only, without auth/);

      // Exactly what the README's curl sends: -d, so a form content type.
      const res = await server.fetch("/workflows/order/runs", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: '{"orderId":"A1","amount":30}',
      });
      const location = res.headers.get("location");
      const created = await json(res, 201);
      runId = created.id;
      assert.equal(location, `/runs/${runId}`);
      assert.equal(created.workflow, "order");

      const done = await json(await server.fetch(`/runs/${runId}/wait?timeoutMs=20000`), 200);
      assert.equal(done.status, "succeeded");
      for (const step of ["payment", "inventory", "logistics", "dispatch"]) {
        assert.equal(done.steps[step].status, "succeeded", step);
        assert.ok(done.steps[step].output, step);
      }
      assert.deepEqual(done.output, {
        orderId: "A1",
        shipped: true,
        carrier: "post",
        transactionId: "tx-A1-1",
      });
      finished = done;

      // Killed right after it is stored: it resumes (or has finished) on the next start.
      const inFlight = await json(
        await server.post("/workflows/order/runs", { orderId: "B2", amount: 5 }),
        201,
      );
      inFlightId = inFlight.id;
      const status = await server.stop("SIGKILL");
      assert.equal(status.success, false);
      assert.equal(status.signal, "SIGKILL");
      assert.equal(server.stderr, "");
    });

    await t.step("second start on the same KV: the same run, then SIGTERM exits 0", async () => {
      await using server = await ServerProcess.serve(kvPath);
      const again = await json(await server.fetch(`/runs/${runId}`), 200);
      assert.deepEqual(again, finished);
      const resumed = await json(
        await server.fetch(`/runs/${inFlightId}/wait?timeoutMs=20000`),
        200,
      );
      assert.equal(resumed.status, "succeeded");
      assert.equal(resumed.output.orderId, "B2");
      const page = await json(await server.fetch("/runs?workflow=order"), 200);
      assert.deepEqual(page.runs.map((r: { id: string }) => r.id), [inFlightId, runId]);

      const status = await server.stop("SIGTERM");
      assert.equal(status.code, 0, server.stderr);
      assert.equal(server.stderr, "");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server with a token refuses requests without it and SIGINT exits 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_e2e_" });
  try {
    await using server = await ServerProcess.serve(join(dir, "kv.sqlite3"), [
      "--token",
      "e2e-secret",
    ]);
    assert.match(server.stdout, /bearer token required/);
    assert.equal((await json(await server.fetch("/healthz"), 200)).ok, true);
    const refused = await json(await server.fetch("/workflows"), 401);
    assert.equal(refused.error.code, "unauthorized");
    const allowed = await json(
      await server.fetch("/workflows", { headers: { authorization: "Bearer e2e-secret" } }),
      200,
    );
    assert.deepEqual(
      allowed.workflows.map((w: { name: string }) => w.name),
      ["approval", "batch", "checkout", "order"],
    );
    const status = await server.stop("SIGINT");
    assert.equal(status.code, 0, server.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server in JSON mode writes only JSON lines to stdout: start, access, retry and failure records", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "weft_e2e_" });
  try {
    await using server = await ServerProcess.serve(join(dir, "kv.sqlite3"));
    const start = async (input: unknown) =>
      (await json(await server.post("/workflows/order/runs", input), 201)).id as string;
    const flaky = await start({ orderId: "flaky-1", amount: 5 });
    const declined = await start({ orderId: "D1", amount: 20_000 });
    const wait = async (id: string) =>
      (await json(await server.fetch(`/runs/${id}/wait?timeoutMs=20000`), 200)).status;
    assert.equal(await wait(flaky), "succeeded");
    assert.equal(await wait(declined), "failed");
    await json(await server.fetch("/runs/does-not-exist"), 404);
    await json(await server.fetch("/no/such/route"), 404);
    await json(await server.fetch("/healthz"), 200);
    assert.equal((await server.stop("SIGTERM")).code, 0, server.stderr);

    // What `deno task serve | jq -c .` needs: every line of stdout is one JSON value.
    assert.ok(server.stdout.endsWith("\n"));
    const records = logLines(server.stdout);
    assert.equal(records[0].logger, "weft.server", "the start line is the first record");

    await t.step("access records", () => {
      const access = records.filter((r) => r.logger === "weft.http");
      const find = (method: string, route: string | undefined, status: number) =>
        access.find((r) =>
          r.properties.method === method && r.properties.route === route &&
          r.properties.status === status
        );
      const started = find("POST", "/workflows/:name/runs", 201);
      assert.ok(started, JSON.stringify(access));
      assert.equal(started.level, "INFO");
      assert.equal(started.properties.path, "/workflows/order/runs");
      assert.equal(typeof started.properties.durationMs, "number");
      assert.match(started.message, /^POST \/workflows\/:name\/runs answered 201 in [\d.]+ ms$/);
      assert.ok(find("GET", "/runs/:id/wait", 200));
      assert.equal(find("GET", "/runs/:id", 404)?.properties.path, "/runs/does-not-exist");
      const unrouted = find("GET", undefined, 404);
      assert.equal(unrouted?.properties.path, "/no/such/route");
      // Probes are logged at debug, below the default level.
      assert.ok(!access.some((r) => r.properties.path === "/healthz"));
    });

    await t.step("the retry record says when and after how long", () => {
      const retry = records.find((r) =>
        r.properties.runId === flaky && r.properties.status === "waiting"
      );
      assert.ok(retry);
      const { nextAttemptAt, delayMs } = retry.properties as {
        nextAttemptAt: string;
        delayMs: number;
      };
      assert.equal(typeof delayMs, "number");
      assert.ok(delayMs >= 40 && delayMs <= 60, `backoff of 50 ms ± 20 %: ${delayMs}`);
      assert.match(nextAttemptAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
      assert.ok(Date.parse(nextAttemptAt) - Date.parse(retry["@timestamp"]) <= delayMs);
      assert.match(retry.message, new RegExp(`retrying in ${delayMs} ms`));
    });

    await t.step("the run-failed record names the failed step at top level", () => {
      const failed = records.find((r) =>
        r.properties.runId === declined && r.properties.status === "failed" &&
        r.properties.step === undefined
      );
      assert.ok(failed);
      assert.equal(failed.properties.failedStep, "payment");
      assert.equal(failed.level, "WARN");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("servers and a worker share one KV file: a run started on one ends on another", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_e2e_" });
  try {
    const kvPath = join(dir, "kv.sqlite3");
    await using first = await ServerProcess.serve(kvPath);
    await using second = await ServerProcess.serve(kvPath);
    // A run started on the first is read, and waited for, through the second.
    const created = await json(
      await first.post("/workflows/order/runs", { orderId: "S1", amount: 7 }),
      201,
    );
    const done = await json(await second.fetch(`/runs/${created.id}/wait?timeoutMs=20000`), 200);
    assert.equal(done.status, "succeeded");
    assert.equal(done.output.orderId, "S1");
    // A worker process without HTTP joins the same file.
    await using worker = await ServerProcess.start(["--worker", "--kv", kvPath]);
    assert.doesNotMatch(worker.stdout, /listening/);
    // The first server dies with a run in flight; the others carry it on.
    const inFlight = await json(
      await first.post("/workflows/order/runs", { orderId: "S2", amount: 8 }),
      201,
    );
    await first.stop("SIGKILL");
    const carried = await json(
      await second.fetch(`/runs/${inFlight.id}/wait?timeoutMs=20000`),
      200,
    );
    assert.equal(carried.status, "succeeded");
    assert.equal(carried.output.orderId, "S2");
    assert.equal((await worker.stop("SIGTERM")).code, 0, worker.stderr);
    assert.equal((await second.stop("SIGTERM")).code, 0, second.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server stops at startup, naming the file, when a workflow module is broken", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "weft_e2e_" });
  const kvPath = join(dir, "data", "kv.sqlite3");
  try {
    await t.step("a definition error exits 1 and names the file and the step", async () => {
      const file = join(dir, "bad_definition.ts");
      await Deno.writeTextFile(
        file,
        `import { workflow } from "${MOD_URL}";\n` +
          `export const broken = workflow("broken").step("charge", { timeoutMs: -1 }, () => 1);\n`,
      );
      const { code, stdout, stderr } = await runServer(["--kv", kvPath, "--workflows", file]);
      assert.equal(code, 1, stderr);
      assert.equal(stdout, "");
      assert.match(stderr, /bad_definition\.ts/);
      assert.match(stderr, /Invalid step 'charge' in workflow 'broken': 'timeoutMs' must be/);
      // Nothing was opened or created.
      await assert.rejects(Deno.stat(kvPath), Deno.errors.NotFound);
    });
    await t.step("an unknown option exits 1 and suggests the close name", async () => {
      const file = join(dir, "typo.ts");
      await Deno.writeTextFile(
        file,
        `import { workflow } from "${MOD_URL}";\n` +
          `export const typo = workflow("typo").step("charge", { timeout: 5000 }, () => 1);\n`,
      );
      const { code, stderr } = await runServer(["--kv", kvPath, "--workflows", file]);
      assert.equal(code, 1, stderr);
      assert.match(
        stderr,
        /typo\.ts: WorkflowDefinitionError: Invalid step 'charge' in workflow 'typo': 'timeout' is not a step option; did you mean 'timeoutMs'\?/,
      );
      await Deno.remove(file);
    });
    await t.step("a module that does not load exits 1 and names the file", async () => {
      const file = join(dir, "syntax.ts");
      await Deno.writeTextFile(file, "export const = ;\n");
      const { code, stderr } = await runServer(["--kv", kvPath, "--workflows", dir]);
      assert.equal(code, 1, stderr);
      assert.match(stderr, /Cannot load workflows from .*(bad_definition|syntax)\.ts/);
    });
    await t.step("a file that exports no workflow, and a missing path, exit 1", async () => {
      const file = join(dir, "empty.ts");
      await Deno.writeTextFile(file, "export const answer = 42;\n");
      const empty = await runServer(["--kv", kvPath, "--workflows", file]);
      assert.equal(empty.code, 1);
      assert.match(empty.stderr, /empty\.ts: it exports no workflow/);
      const missing = await runServer(["--kv", kvPath, "--workflows", join(dir, "nope")]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /Cannot load workflows from .*nope/);
    });
    await t.step("bad flags exit 2; --help prints every flag and exits 0", async () => {
      const bad = await runServer(["--port", "http"]);
      assert.equal(bad.code, 2);
      assert.match(
        bad.stderr,
        /'--port' must be an integer from 0 to 65535: current value is http/,
      );
      const unknown = await runServer(["--bogus"]);
      assert.equal(unknown.code, 2);
      const help = await runServer(["--help"]);
      assert.equal(help.code, 0);
      for (const flag of ["--port", "--hostname", "--kv", "--workflows", "--token", "WEFT_TOKEN"]) {
        assert.ok(help.stdout.includes(flag), flag);
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("parseConfig takes flags over environment variables over defaults", () => {
  assert.deepEqual(parseConfig([], {}), {
    port: 8000,
    hostname: "127.0.0.1",
    kvPath: "data/weft.sqlite3",
    workflowPaths: ["workflows/"],
    token: undefined,
    maxBodyBytes: 1024 * 1024,
    graceMs: 10_000,
    debug: false,
    worker: false,
    minFreeBytes: 64 * 1024 * 1024,
    allowedHosts: [],
    headerTimeoutMs: 10_000,
    bodyTimeoutMs: 30_000,
  });
  assert.equal((parseConfig(["--worker"], {}) as { worker: boolean }).worker, true);
  assert.equal((parseConfig([], { WEFT_WORKER: "1" }) as { worker: boolean }).worker, true);
  const env = {
    WEFT_PORT: "9000",
    WEFT_HOSTNAME: "0.0.0.0",
    WEFT_KV: "/var/lib/weft.sqlite3",
    WEFT_WORKFLOWS: "a.ts, flows/",
    WEFT_TOKEN: "from-env",
    WEFT_MAX_BODY_BYTES: "2048",
    WEFT_GRACE_MS: "500",
    WEFT_DEBUG: "true",
    WEFT_MIN_FREE_BYTES: "1048576",
    WEFT_ALLOWED_HOSTS: "weft.internal, 10.0.0.5",
    WEFT_HEADER_TIMEOUT_MS: "2000",
    WEFT_BODY_TIMEOUT_MS: "3000",
  };
  assert.deepEqual(parseConfig([], env), {
    port: 9000,
    hostname: "0.0.0.0",
    kvPath: "/var/lib/weft.sqlite3",
    workflowPaths: ["a.ts", "flows/"],
    token: "from-env",
    maxBodyBytes: 2048,
    graceMs: 500,
    debug: true,
    worker: false,
    minFreeBytes: 1024 * 1024,
    allowedHosts: ["weft.internal", "10.0.0.5"],
    headerTimeoutMs: 2_000,
    bodyTimeoutMs: 3_000,
  });
  const flags = parseConfig(
    ["--port", "0", "--workflows", "x.ts", "--workflows", "y/", "--token", "flag", "--kv", "k"],
    env,
  );
  assert.ok(flags !== "help");
  assert.equal(flags.port, 0);
  assert.deepEqual(flags.workflowPaths, ["x.ts", "y/"]);
  assert.equal(flags.token, "flag");
  assert.equal(flags.kvPath, "k");
  assert.equal(parseConfig(["--help"], env), "help");
  assert.throws(() => parseConfig([], { WEFT_TOKEN: "" }), UsageError);
  assert.throws(() => parseConfig([], { WEFT_PORT: "65536" }), /'--port' must be an integer/);
  assert.throws(() => parseConfig(["extra"], {}), UsageError);
});

import assert from "node:assert/strict";
import { reset } from "@logtape/logtape";
import { z } from "zod";
import { InvalidArgumentError, NonRetryableError, workflow } from "../mod.ts";
import { createApp } from "../http/app.ts";
import { configureLogging, loggingOptionsFrom } from "../observability/mod.ts";
import { testEngine, waitFor } from "./_helpers.ts";

const greet = workflow("greet", { input: z.object({ name: z.string() }) })
  .step("hello", ({ input, log }) => {
    log.info("Greeting {name}", { name: input.name });
    return `hello ${input.name}`;
  })
  .step("shout", { needs: ["hello"] }, ({ results }) => results.hello.toUpperCase());

interface JsonRecord {
  level: string;
  message: string;
  logger: string;
  properties: Record<string, unknown>;
}

Deno.test("logging writes engine and step records as JSON lines with run fields", async () => {
  const lines: string[] = [];
  await configureLogging({ format: "json", level: "debug", write: (l) => lines.push(l) });
  try {
    await using te = await testEngine([greet]);
    const run = await te.engine.start("greet", { name: "ada" });
    await te.engine.result(run.id);
    const records: JsonRecord[] = lines.map((l) => JSON.parse(l));
    assert.ok(lines.every((l) => !l.includes("\n")), "one record per line");
    const find = (message: string) => records.find((r) => r.message === message);

    const stepLog = find('Greeting "ada"');
    assert.ok(stepLog, "a step's own log is in the stream");
    assert.equal(stepLog.logger, "weft.step");
    assert.deepEqual(
      { ...stepLog.properties },
      { workflow: "greet", runId: run.id, step: "hello", attempt: 1, name: "ada" },
    );

    const started = records.find((r) =>
      r.properties.step === "hello" && r.properties.status === "running"
    );
    assert.ok(started, "attempt started, at debug level");
    assert.equal(started.level, "DEBUG");
    const succeeded = records.find((r) =>
      r.properties.step === "shout" && r.properties.status === "succeeded"
    );
    assert.ok(succeeded);
    assert.equal(succeeded.logger, "weft.engine");
    assert.equal(succeeded.properties.workflow, "greet");
    assert.equal(succeeded.properties.runId, run.id);
    assert.equal(succeeded.properties.attempt, 1);
    assert.equal(typeof succeeded.properties.durationMs, "number");
    const runDone = records.find((r) =>
      r.properties.runId === run.id && r.properties.status === "succeeded" &&
      r.properties.step === undefined
    );
    assert.ok(runDone, "the run's end");
    assert.match(runDone.message, new RegExp(`^Run "${run.id}" succeeded in \\d+ ms$`));
    assert.equal(typeof runDone.properties.durationMs, "number");
  } finally {
    await reset();
  }
});

Deno.test("logging at info leaves out debug records", async () => {
  const lines: string[] = [];
  await configureLogging({ write: (l) => lines.push(l) });
  try {
    await using te = await testEngine([greet]);
    await te.engine.result((await te.engine.start("greet", { name: "bo" })).id);
    const levels = new Set(lines.map((l) => JSON.parse(l).level));
    assert.ok(levels.has("INFO"));
    assert.ok(!levels.has("DEBUG"));
  } finally {
    await reset();
  }
});

Deno.test("logging pretty lines show the run fields the message leaves out", async () => {
  const lines: string[] = [];
  await configureLogging({ format: "pretty", write: (l) => lines.push(l) });
  try {
    await using te = await testEngine([greet]);
    const run = await te.engine.start("greet", { name: "cy" });
    await te.engine.result(run.id);
    // deno-lint-ignore no-control-regex
    const plain = lines.map((l) => l.replace(/\x1b\[[0-9;]*m/g, ""));
    const line = plain.find((l) =>
      l.includes("Step") && l.includes("shout") && l.includes("succeeded")
    );
    assert.ok(line, plain.join("\n"));
    assert.match(line, /weft·engine: Step "shout" succeeded in \d+ ms/);
    assert.match(line, new RegExp(`workflow=greet runId=${run.id} attempt=1$`));
    assert.ok(!line.startsWith("{"));
  } finally {
    await reset();
  }
});

Deno.test("logging refuses an unknown format or level", async () => {
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    configureLogging({ format: "xml" as any }),
    (e) =>
      e instanceof InvalidArgumentError && /'format' must be "json" or "pretty"/.test(e.message),
  );
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    configureLogging({ level: "loud" as any }),
    (e) => e instanceof InvalidArgumentError && /'level' must be one of/.test(e.message),
  );
});

Deno.test("logging options come from flags first, then the environment", () => {
  assert.deepEqual(loggingOptionsFrom([], {}), { format: "json", level: "info" });
  assert.deepEqual(loggingOptionsFrom(["--log-format", "pretty"], { format: "json" }), {
    format: "pretty",
    level: "info",
  });
  assert.deepEqual(loggingOptionsFrom(["--log-level=debug"], { format: "pretty" }), {
    format: "pretty",
    level: "debug",
  });
  assert.throws(
    () => loggingOptionsFrom(["--log-format", "yaml"], {}),
    /'--log-format' must be "json" or "pretty": current value is "yaml"/,
  );
});

Deno.test("logging writes one access record per request with the route pattern, status and duration", async () => {
  const lines: string[] = [];
  await configureLogging({ level: "debug", write: (l) => lines.push(l) });
  try {
    await using te = await testEngine([greet]);
    const app = createApp({ engine: te.engine, token: "s3cret" });
    const auth = { headers: { authorization: "Bearer s3cret" } };
    const requests: [string, RequestInit?][] = [
      ["/workflows/greet", auth],
      ["/workflows/greet"], // refused by the auth middleware: still recorded, with its route
      ["/runs/01ARZ3NDEKTSV4RRFFQ69G5FAV", auth], // the engine's error, mapped by onError
      ["/no/such/route", auth],
      ["/healthz"],
    ];
    for (const [path, init] of requests) await (await app.request(path, init)).body?.cancel();
    const access = lines.map((l) => JSON.parse(l)).filter((r) => r.logger === "weft.http");
    const summary = access.map((
      r,
    ) => [r.level, r.properties.method, r.properties.route, r.properties.status]);
    assert.deepEqual(summary, [
      ["INFO", "GET", "/workflows/:name", 200],
      ["INFO", "GET", "/workflows/:name", 401],
      ["INFO", "GET", "/runs/:id", 404],
      ["INFO", "GET", undefined, 404],
      ["DEBUG", "GET", "/healthz", 200],
    ]);
    assert.ok(access.every((r) => typeof r.properties.durationMs === "number"));
    assert.equal(access[3].properties.path, "/no/such/route");
    assert.equal(
      access[3].message,
      "GET /no/such/route (no route) answered 404 in " +
        `${access[3].properties.durationMs} ms`,
    );
  } finally {
    await reset();
  }
});

Deno.test("logging: the retry record carries nextAttemptAt and delayMs, the run-failed record failedStep", async () => {
  const lines: string[] = [];
  await configureLogging({ write: (l) => lines.push(l) });
  try {
    const flaky = workflow("flaky")
      .step("prepare", () => 1)
      .step("charge", { needs: ["prepare"], retry: { initialDelayMs: 1_500, jitter: 0 } }, (
        { attempt },
      ) => {
        if (attempt === 1) throw new Error("gateway down");
        throw new NonRetryableError("declined");
      });
    await using te = await testEngine([flaky]);
    const t0 = te.clock.now();
    const run = await te.engine.start("flaky", null);
    const records = () => lines.map((l) => JSON.parse(l));
    await waitFor(() => records().some((r) => r.properties.status === "waiting"), "the retry");
    const retry = records().find((r) => r.properties.status === "waiting");
    assert.equal(retry.properties.delayMs, 1_500);
    assert.equal(retry.properties.nextAttemptAt, new Date(t0 + 1_500).toISOString());
    assert.equal(
      retry.message,
      'Step "charge" attempt 1 failed, retrying in 1500 ms: "gateway down"',
    );
    te.clock.advance(1_500);
    assert.equal((await te.engine.result(run.id)).status, "failed");
    const failed = records().find((r) =>
      r.properties.status === "failed" && r.properties.step === undefined
    );
    assert.equal(failed.properties.failedStep, "charge");
    assert.equal(failed.properties.runId, run.id);
  } finally {
    await reset();
  }
});

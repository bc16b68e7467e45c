/** OpenTelemetry spans of runs and attempts, one trace across a restart; trace ids in logs. */
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import {
  type Context,
  context,
  type ContextManager,
  ROOT_CONTEXT,
  trace,
} from "@opentelemetry/api";
import { reset } from "@logtape/logtape";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { InvalidArgumentError, RetryAfterError, TraceAttribute, workflow } from "../mod.ts";
import { createApp } from "../http/app.ts";
import { configureLogging } from "../observability/logging.ts";
import { createTestEngine } from "../testing.ts";

const HOUR = 60 * 60 * 1000;
const TRACE_ID = "0af7651916cd43dd8448eb211c80319c";
const REQUEST_SPAN = "b7ad6b7169203331";
const TRACEPARENT = `00-${TRACE_ID}-${REQUEST_SPAN}-01`;

function inMemoryTracing() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { exporter, provider };
}

const traced = workflow("traced")
  .step("a", ({ log }) => {
    log.info("a runs");
    return 1;
  })
  .step("b", { needs: ["a"] }, ({ attempt }) => {
    if (attempt === 1) throw new RetryAfterError("not yet", HOUR);
    return 2;
  });

const attrs = (span: ReadableSpan) => span.attributes;
const parentOf = (span: ReadableSpan) => span.parentSpanContext?.spanId;

Deno.test("a run's spans are in the trace of the request that started it, across a restart on the same KV file", async (t) => {
  const dir = await Deno.makeTempDir();
  const kv = await Deno.openKv(`${dir}/weft.sqlite3`);
  const first = inMemoryTracing();
  const second = inMemoryTracing();
  try {
    let runId = "";
    let endedAt = 0;
    await t.step("worker 1 starts the run from an HTTP request with a traceparent", async () => {
      await using kit = await createTestEngine({
        workflows: [traced],
        kv,
        engine: { tracerProvider: first.provider },
      });
      const app = createApp({ engine: kit.engine });
      const res = await app.request("/workflows/traced/runs", {
        method: "POST",
        headers: { "content-type": "application/json", traceparent: TRACEPARENT },
        body: "null",
      });
      assert.equal(res.status, 201);
      runId = (await res.json()).id;
      await kit.runUntilIdle();
      assert.equal((await kit.get(runId)).steps.b.status, "waiting");
      endedAt = kit.clock.now();
    });
    const start = first.exporter.getFinishedSpans().find((s) => s.name === "start traced");
    await t.step("worker 1 exported the start span and the attempts it ran", () => {
      assert.ok(start, "a start span");
      assert.equal(start.spanContext().traceId, TRACE_ID);
      assert.equal(parentOf(start), REQUEST_SPAN);
      assert.equal(attrs(start)[TraceAttribute.RunId], runId);
      const names = first.exporter.getFinishedSpans().map((s) => s.name).sort();
      assert.deepEqual(names, ["start traced", "step traced/a", "step traced/b"]);
      const b1 = first.exporter.getFinishedSpans().find((s) => s.name === "step traced/b")!;
      assert.deepEqual(
        [attrs(b1)[TraceAttribute.Attempt], attrs(b1)[TraceAttribute.Outcome]],
        [1, "failed"],
      );
      assert.equal(attrs(b1)[TraceAttribute.ErrorType], "RetryAfterError");
      assert.equal(b1.status.code, 2 /* ERROR */);
    });
    await t.step("worker 2, a new engine on the same file, continues the same trace", async () => {
      await using kit = await createTestEngine({
        workflows: [traced],
        kv,
        startMs: endedAt,
        engine: { tracerProvider: second.provider },
      });
      const done = await kit.runToEnd(runId);
      assert.equal(done.status, "succeeded");
      const spans = second.exporter.getFinishedSpans();
      assert.deepEqual(spans.map((s) => s.name).sort(), ["run traced", "step traced/b"]);
      for (const span of spans) {
        assert.equal(span.spanContext().traceId, TRACE_ID, span.name);
        assert.equal(parentOf(span), start!.spanContext().spanId, span.name);
        assert.equal(attrs(span)[TraceAttribute.RunId], runId);
        assert.equal(attrs(span)[TraceAttribute.Workflow], "traced");
      }
      const b2 = spans.find((s) => s.name === "step traced/b")!;
      assert.deepEqual(
        [attrs(b2)[TraceAttribute.Step], attrs(b2)[TraceAttribute.Attempt]],
        ["b", 2],
      );
      assert.equal(attrs(b2)[TraceAttribute.Outcome], "succeeded");
      const run = spans.find((s) => s.name === "run traced")!;
      assert.equal(attrs(run)[TraceAttribute.Outcome], "succeeded");
      // The run's span covers the run, from its creation on worker 1 (fake clock times).
      const ms = (t: [number, number]) => t[0] * 1000 + t[1] / 1e6;
      assert.equal(ms(run.endTime) - ms(run.startTime), HOUR);
    });
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a step's log records carry its attempt's trace and span ids", async () => {
  const { exporter, provider } = inMemoryTracing();
  const lines: string[] = [];
  await configureLogging({ format: "json", write: (line) => lines.push(line) });
  try {
    await using kit = await createTestEngine({
      workflows: [traced],
      engine: { tracerProvider: provider },
    });
    const run = await kit.start("traced", null, { traceparent: TRACEPARENT });
    const a = exporter.getFinishedSpans().find((s) => s.name === "step traced/a")!;
    const records = lines.map((l) => JSON.parse(l));
    const own = records.find((r) => r.message === "a runs");
    assert.equal(own.properties.traceId, TRACE_ID);
    assert.equal(own.properties.spanId, a.spanContext().spanId);
    const retry = records.find((r) =>
      r.properties.step === "b" && r.properties.status === "waiting"
    );
    assert.equal(retry.properties.traceId, TRACE_ID, "transition records carry the run's trace");
    assert.equal(retry.properties.runId, run.id);
  } finally {
    await reset();
  }
});

Deno.test("a traceparent that is not W3C is an error from the engine and ignored by the API", async () => {
  const { exporter, provider } = inMemoryTracing();
  await using kit = await createTestEngine({
    workflows: [traced],
    engine: { tracerProvider: provider },
  });
  await assert.rejects(
    kit.engine.start("traced", null, { traceparent: "00-nope" }),
    (e: unknown) => e instanceof InvalidArgumentError && /'traceparent'/.test(e.message),
  );
  const app = createApp({ engine: kit.engine });
  const res = await app.request("/workflows/traced/runs", {
    method: "POST",
    headers: { traceparent: "00-nope" },
    body: "null",
  });
  assert.equal(res.status, 201);
  await kit.runUntilIdle();
  const start = exporter.getFinishedSpans().find((s) => s.name === "start traced")!;
  assert.notEqual(start.spanContext().traceId, TRACE_ID);
  assert.equal(parentOf(start), undefined, "a new trace");
});

Deno.test("without a tracer provider set up, runs store no trace and still run", async () => {
  await using kit = await createTestEngine({ workflows: [traced] });
  const run = await kit.start("traced", null, { traceparent: TRACEPARENT });
  const done = await kit.runToEnd(run.id);
  assert.equal(done.status, "succeeded");
});

/** The smallest context manager: the active context lives in an AsyncLocalStorage. */
class StorageContextManager implements ContextManager {
  readonly #storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.#storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    ctx: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.#storage.run(ctx, () => fn.apply(thisArg, args));
  }
  bind<T>(ctx: Context, target: T): T {
    if (typeof target !== "function") return target;
    return ((...args: unknown[]) =>
      this.with(ctx, target as (...a: unknown[]) => unknown, undefined, ...args)) as T;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    return this;
  }
}

Deno.test("a step body runs in its attempt's span once a context manager is registered", async (t) => {
  const { exporter, provider } = inMemoryTracing();
  const seen: (string | undefined)[] = [];
  const wf = workflow("in-span").step("a", async () => {
    seen.push(trace.getActiveSpan()?.spanContext().spanId);
    await Promise.resolve();
    provider.getTracer("body").startSpan("fetch").end();
    return 1;
  });
  await using kit = await createTestEngine({
    workflows: [wf],
    engine: { tracerProvider: provider },
  });
  await t.step(
    "without one, the body sees no active span (entering one would change nothing)",
    async () => {
      const run = await kit.start("in-span", null);
      await kit.runToEnd(run.id);
      assert.deepEqual(seen, [undefined]);
    },
  );
  await t.step(
    "with one, the body's span and its own spans are the attempt's children",
    async () => {
      assert.ok(context.setGlobalContextManager(new StorageContextManager()));
      try {
        exporter.reset();
        const run = await kit.start("in-span", null);
        await kit.runToEnd(run.id);
        const attempt = exporter.getFinishedSpans().find((s) => s.name === "step in-span/a")!;
        const fetch = exporter.getFinishedSpans().find((s) => s.name === "fetch")!;
        assert.equal(seen[1], attempt.spanContext().spanId);
        assert.equal(parentOf(fetch), attempt.spanContext().spanId);
        assert.equal(fetch.spanContext().traceId, attempt.spanContext().traceId);
      } finally {
        context.disable();
      }
    },
  );
});

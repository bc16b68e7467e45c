/** Stack traces of failed attempts: stored bounded, retried, shown on the page, in logs and the API. */
import assert from "node:assert/strict";
import { reset } from "@logtape/logtape";
import { Hono } from "hono";
import {
  AttemptInterruptedError,
  MAX_STACK_BYTES,
  NonRetryableError,
  RetryAfterError,
  StepTimeoutError,
  toErrorData,
  workflow,
} from "../mod.ts";
import { createApp } from "../http/app.ts";
import { RunSnapshotSchema } from "../http/schemas.ts";
import { configureLogging } from "../observability/logging.ts";
import { mountObservability } from "../observability/mod.ts";
import { createTestEngine } from "../testing.ts";

function buggyStep(input: { items?: string[] }): number {
  // A bug: `items` may be missing.
  return input.items!.length;
}

const buggy = workflow("buggy")
  .step("count", { retry: { maxAttempts: 2 } }, ({ input }) => buggyStep(input as never));

const bytes = (text: string) => new TextEncoder().encode(text).byteLength;

Deno.test("a TypeError is retried by default and its stack is stored with each attempt", async () => {
  await using kit = await createTestEngine({ workflows: [buggy] });
  const run = await kit.start("buggy", {});
  const done = await kit.runToEnd(run.id);
  assert.equal(done.status, "failed");
  const step = done.steps.count;
  assert.equal(step.attempts, 2, "retried, as any other error");
  for (const { error } of step.errors) {
    assert.equal(error.name, "TypeError");
    assert.ok(!error.nonRetryable);
    assert.match(error.stack!, /^TypeError: /);
    assert.match(error.stack!, /at buggyStep \(.*stacks_test\.ts:\d+:\d+\)/);
  }
  // The run's error carries the last attempt's, stack included.
  assert.match(done.error!.cause!.stack!, /buggyStep/);
});

Deno.test("a stored stack holds the step's own frames only, none of the engine that ran it", async () => {
  await using kit = await createTestEngine({ workflows: [buggy] });
  const run = await kit.start("buggy", {});
  const done = await kit.runToEnd(run.id);
  for (const { error } of done.steps.count.errors) {
    const frames = error.stack!.split("\n").filter((line) => /^\s+at /.test(line));
    assert.match(frames[0], /at buggyStep \(.*stacks_test\.ts/);
    assert.equal(frames.length, 2, "buggyStep, then the step's body");
    assert.ok(frames.every((f) => /stacks_test\.ts/.test(f)), error.stack);
  }
});

Deno.test("wrapping a TypeError in NonRetryableError fails the step at once, keeping both stacks", async () => {
  const strict = workflow("strict").step("count", ({ input }) => {
    try {
      return buggyStep(input as never);
    } catch (cause) {
      throw new NonRetryableError("a bug: not retried", { cause });
    }
  });
  await using kit = await createTestEngine({ workflows: [strict] });
  const run = await kit.start("strict", {});
  const done = await kit.runToEnd(run.id);
  assert.equal(done.steps.count.attempts, 1);
  const error = done.steps.count.errors[0].error;
  assert.match(error.stack!, /^NonRetryableError: a bug/);
  assert.match(error.cause!.stack!, /at buggyStep/);
});

Deno.test("stored stacks are cut to 4 KB in all, causes included, and engine errors have none", () => {
  const cause = new Error("inner");
  cause.stack = "Error: inner\n" + "    at deep (é.ts:1:1)\n".repeat(300);
  const outer = new Error("outer", { cause });
  outer.stack = "Error: outer\n" + "    at top (ü.ts:1:1)\n".repeat(150);
  const data = toErrorData(outer);
  const outerBytes = bytes(data.stack!);
  assert.ok(outerBytes > 3_000 && outerBytes <= MAX_STACK_BYTES, `outer ${outerBytes}`);
  const total = outerBytes + bytes(data.cause?.stack ?? "");
  assert.ok(total <= MAX_STACK_BYTES, `total ${total}`);
  assert.ok(data.cause!.stack!.startsWith("Error: inner"), "the cause gets what is left");
  assert.ok(!data.stack!.endsWith("\uFFFD"), "cut on a character boundary");
  const huge = new Error("huge");
  huge.stack = "x".repeat(100_000);
  assert.equal(bytes(toErrorData(huge).stack!), MAX_STACK_BYTES);
  assert.equal(toErrorData(new StepTimeoutError("s", 1, 10)).stack, undefined);
  assert.equal(toErrorData(new AttemptInterruptedError("s", 1)).stack, undefined);
});

Deno.test("a stack is formatted once for an error that keeps it, and never for one that does not", () => {
  const reads = new Map<Error, number>();
  const counted = <E extends Error>(error: E): E => {
    const stack = error.stack;
    reads.set(error, 0);
    Object.defineProperty(error, "stack", {
      get: () => (reads.set(error, reads.get(error)! + 1), stack),
    });
    return error;
  };
  const kept = counted(new TypeError("bug"));
  assert.match(toErrorData(kept).stack!, /^TypeError: bug/);
  assert.equal(reads.get(kept), 1);
  for (
    const error of [
      counted(new RetryAfterError("not yet", 1_000)),
      counted(new StepTimeoutError("s", 1, 10)),
      counted(new AttemptInterruptedError("s", 1)),
    ]
  ) {
    assert.equal(toErrorData(error).stack, undefined);
    assert.equal(reads.get(error), 0, `${error.name}'s stack is not formatted`);
  }
});

Deno.test("the run page shows a failed attempt's stack, escaped", async () => {
  await using kit = await createTestEngine({ workflows: [buggy] });
  const page = new Hono();
  const observability = mountObservability(page, { engine: kit.engine });
  try {
    const run = await kit.start("buggy", {});
    await kit.runToEnd(run.id);
    const html = await (await page.request(`/ui/runs/${run.id}`)).text();
    const stack = html.match(/<details class="stack">[\s\S]*?<pre>([\s\S]*?)<\/pre>/)?.[1];
    assert.ok(stack, "a stack block");
    assert.match(stack, /^TypeError: /);
    assert.match(stack, /at buggyStep/);
    assert.match(stack, /\(reading &#39;length&#39;\)/, "quotes escaped");
  } finally {
    observability.close();
  }
});

Deno.test("the failed attempt's log record carries its stack", async () => {
  const lines: string[] = [];
  await configureLogging({ format: "json", write: (line) => lines.push(line) });
  try {
    await using kit = await createTestEngine({ workflows: [buggy] });
    const run = await kit.start("buggy", {});
    await kit.runToEnd(run.id);
    const records = lines.map((line) => JSON.parse(line));
    const retried = records.find((r) => r.properties.status === "waiting");
    const failed = records.find((r) => r.properties.status === "failed" && r.properties.step);
    for (const record of [retried, failed]) {
      assert.ok(record, "a record");
      assert.match(record.properties.error.stack, /at buggyStep/);
    }
  } finally {
    await reset();
  }
});

Deno.test("the API returns stacks to authenticated clients, and to anyone only without a token", async (t) => {
  await using kit = await createTestEngine({ workflows: [buggy] });
  const run = await kit.start("buggy", {});
  await kit.runToEnd(run.id);
  const stackOf = async (res: Response) => {
    assert.equal(res.status, 200);
    const body = RunSnapshotSchema.parse(await res.json());
    return body.steps.count.errors[0].error.stack;
  };
  await t.step("with a token: 401 and no run data without it, the stack with it", async () => {
    const app = createApp({ engine: kit.engine, token: "s3cret" });
    const anonymous = await app.request(`/runs/${run.id}`);
    assert.equal(anonymous.status, 401);
    assert.doesNotMatch(await anonymous.text(), /buggyStep|TypeError/);
    const authed = await app.request(`/runs/${run.id}`, {
      headers: { authorization: "Bearer s3cret" },
    });
    assert.match((await stackOf(authed))!, /at buggyStep/);
  });
  await t.step("without a token: everyone gets the stack", async () => {
    const app = createApp({ engine: kit.engine });
    assert.match((await stackOf(await app.request(`/runs/${run.id}`)))!, /at buggyStep/);
  });
});

Deno.test("stacks are kept on the step, not in stored history; RetryAfterError stores none", async () => {
  let tries = 0;
  const wf = workflow("stack-store")
    .step("boom", { retry: { maxAttempts: 2, initialDelayMs: 1 } }, () => {
      throw new TypeError("boom");
    })
    .step("later", () => {
      if (tries++ === 0) throw new RetryAfterError("not yet", 1);
      return "ok";
    });
  await using kit = await createTestEngine({ workflows: [wf] });
  const run = await kit.start("stack-store", {});
  const done = await kit.runToEnd(run.id);
  assert.ok(done.steps.boom.errors.every((e) => e.error.stack?.includes("TypeError: boom")));
  assert.equal(done.steps.later.errors[0].error.stack, undefined);
  const stored =
    (await Array.fromAsync(kit.kv.list<unknown[]>({ prefix: ["weft", "hist", run.id] })))
      .flatMap((e) => e.value) as { error?: { name: string; stack?: string } }[];
  assert.ok(stored.some((e) => e.error?.name === "TypeError"));
  assert.ok(stored.every((e) => e.error?.stack === undefined), "no stack in stored history");
});

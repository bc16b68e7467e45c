/**
 * The public test kit, used as a user would: only `../testing.ts` and
 * `../mod.ts`, on the example workflow of `workflows/order.ts`.
 */
import assert from "node:assert/strict";
import {
  InvalidArgumentError,
  NonRetryableError,
  RetryAfterError,
  StepTimeoutError,
  workflow,
} from "../mod.ts";
import { assertPath, createTestEngine, stub } from "../testing.ts";
import { order } from "../workflows/order.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

Deno.test("test kit runs the order workflow's own bodies on fake time", async (t) => {
  await using kit = await createTestEngine({ workflows: [order] });
  const run = await kit.start("order", { orderId: "A1", amount: 30 });
  await t.step("the first steps wait in ctx.sleep until the clock moves", async () => {
    const snapshot = await kit.get(run.id);
    assert.equal(snapshot.status, "running");
    for (const step of ["payment", "inventory", "logistics"]) {
      assert.equal(snapshot.steps[step].status, "running", step);
    }
    assert.equal(snapshot.steps.dispatch.status, "pending");
  });
  await t.step("advance(29) leaves payment (a 30 ms call) running", async () => {
    await kit.advance(29);
    const snapshot = await kit.get(run.id);
    assert.equal(snapshot.steps.payment.status, "running");
    assert.equal(snapshot.steps.inventory.status, "succeeded");
    assert.equal(snapshot.steps.logistics.status, "succeeded");
  });
  await t.step("advance(1) ends the run, dispatch included, with no wait", async () => {
    await kit.advance(1);
    const done = await kit.get(run.id);
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.output, {
      orderId: "A1",
      shipped: true,
      carrier: "post",
      transactionId: "tx-A1-1",
    });
    assertPath(await kit.path(run.id), [
      "payment",
      "inventory",
      "logistics",
      { step: "dispatch", status: "succeeded", attempts: 1, errors: [] },
    ]);
  });
});

Deno.test("test kit skips a retry's backoff: a flaky payment succeeds on attempt 2", async () => {
  await using kit = await createTestEngine({ workflows: [order] });
  const run = await kit.start("order", { orderId: "flaky-1", amount: 5 });
  const done = await kit.runToEnd(run.id);
  assert.equal(done.status, "succeeded");
  assertPath(await kit.path(run.id), [
    { step: "payment", status: "succeeded", attempts: 2, errors: ["Error"] },
    "inventory",
    "logistics",
    "dispatch",
  ]);
  // 30 ms call, 50 ms backoff (no jitter in the kit), 30 ms call again.
  assert.equal(Date.parse(done.finishedAt!) - Date.parse(done.createdAt), 110);
});

Deno.test("test kit simulates days: retries a fake day apart until the policy gives up", async (t) => {
  const calls: number[] = [];
  await using kit = await createTestEngine({
    workflows: [order],
    stubs: [
      stub(order, "payment", ({ attempt, input, now }) => {
        calls.push(now());
        if (attempt <= 3) throw new RetryAfterError("gateway down", DAY);
        return { charged: input.amount, transactionId: `tx-late-${attempt}` };
      }),
    ],
    engine: { maxConcurrentSteps: 10 },
  });
  // The default retry policy of payment allows 3 attempts; this stub needs 4.
  // RetryAfterError still counts as an attempt, so the run fails on day 2.
  const run = await kit.start("order", { orderId: "A2", amount: 30 });
  const start = kit.clock.now();
  await t.step("each attempt comes a fake day after the last", async () => {
    const done = await kit.runToEnd(run.id, { withinMs: 7 * DAY });
    assert.equal(done.status, "failed");
    assert.equal(done.failedStep, "payment");
    assert.deepEqual(calls.map((at) => at - start), [0, DAY, 2 * DAY]);
    assertPath(await kit.path(run.id), [
      {
        step: "payment",
        status: "failed",
        attempts: 3,
        errors: ["RetryAfterError", "RetryAfterError", "RetryAfterError"],
      },
      { step: "inventory", status: "succeeded" },
      { step: "logistics", status: "succeeded" },
    ]);
    assert.equal(done.steps.dispatch.status, "skipped");
  });
});

Deno.test("test kit: an attempt that hangs times out on the fake clock and is retried", async () => {
  await using kit = await createTestEngine({
    workflows: [order],
    stubs: [stub(order, "payment", async ({ sleep }) => {
      await sleep(Infinity); // a call that never answers; aborts on timeout
      throw new Error("unreachable");
    })],
  });
  const run = await kit.start("order", { orderId: "A3", amount: 30 });
  const done = await kit.runToEnd(run.id);
  assert.equal(done.status, "failed");
  assert.equal(done.error?.cause?.name, StepTimeoutError.name);
  assertPath(await kit.path(run.id), [
    {
      step: "payment",
      status: "failed",
      attempts: 3,
      errors: ["StepTimeoutError", "StepTimeoutError", "StepTimeoutError"],
    },
    "inventory",
    "logistics",
  ]);
  // Three 2 s timeouts, with 50 ms and 100 ms of backoff between them.
  assert.equal(Date.parse(done.finishedAt!) - Date.parse(done.createdAt), 6_150);
});

Deno.test("test kit: a step that sleeps for hours in its body, across a restart", async (t) => {
  const remind = workflow("remind")
    .step("wait", { timeoutMs: 2 * DAY }, async ({ sleep, now, attempt }) => {
      const from = now();
      await sleep(8 * HOUR);
      return { sleptMs: now() - from, attempt };
    })
    .step("send", { needs: ["wait"] }, ({ results }) => `sent after ${results.wait.sleptMs} ms`);
  await using kit = await createTestEngine({ workflows: [order, remind] });
  const run = await kit.start("remind", null);
  await t.step("one minute short of eight hours, it still sleeps", async () => {
    await kit.advance(8 * HOUR - MINUTE);
    assert.equal((await kit.get(run.id)).steps.wait.status, "running");
  });
  await t.step("a restart abandons the attempt; the next one sleeps again", async () => {
    await kit.restart();
    await kit.advance(MINUTE);
    const snapshot = await kit.get(run.id);
    assert.equal(snapshot.steps.wait.status, "running");
    assert.equal(snapshot.steps.wait.attempts, 2);
  });
  await t.step("eight hours later the run ends", async () => {
    await kit.advance(8 * HOUR);
    const done = await kit.get(run.id);
    assert.equal(done.status, "succeeded");
    assert.equal(done.output, `sent after ${8 * HOUR} ms`);
    assertPath(await kit.path(run.id), [
      { step: "wait", status: "succeeded", attempts: 2, errors: ["AttemptInterruptedError"] },
      "send",
    ]);
  });
});

Deno.test("test kit waits for a step body's real I/O before it reports idle", async () => {
  const slow = workflow("slow").step("io", async () => {
    await new Promise((resolve) => setTimeout(resolve, 30)); // real time, not the clock
    return "done";
  });
  await using kit = await createTestEngine({ workflows: [slow] });
  const run = await kit.start("slow", null);
  // No advance: start() resolved once the body and its commit had settled.
  assert.equal((await kit.get(run.id)).status, "succeeded");
});

Deno.test("test kit rejects stubs of steps or workflows it does not have", async () => {
  await assert.rejects(
    createTestEngine({
      workflows: [order],
      stubs: [{ workflow: "order", step: "paymnt", fn: () => null }],
    }),
    (error: unknown) =>
      error instanceof InvalidArgumentError &&
      error.message ===
        "Cannot stub step 'paymnt' of workflow 'order' as it has no such step: its steps are payment, inventory, logistics, dispatch",
  );
  await assert.rejects(
    createTestEngine({ workflows: [], stubs: [stub(order, "payment", () => null as never)] }),
    /of workflow 'order' as that workflow is not in 'workflows'/,
  );
  await assert.rejects(
    createTestEngine({
      workflows: [order],
      stubs: [
        stub(order, "inventory", () => {
          throw new NonRetryableError("x");
        }),
        stub(order, "inventory", () => {
          throw new NonRetryableError("y");
        }),
      ],
    }),
    /Cannot stub step 'inventory' of workflow 'order' twice/,
  );
});

Deno.test("test kit assertPath names the path it saw when it differs", () => {
  const seen = [{ step: "payment", status: "failed" as const, attempts: 3, errors: [] }];
  assert.throws(
    () => assertPath(seen, [{ step: "payment", status: "succeeded" }]),
    /it ran payment \(failed, 3 attempt\(s\)\)/,
  );
  assert.throws(() => assertPath(seen, ["payment", "dispatch"]), assert.AssertionError);
});

Deno.test("the README's testing example is the doc-tested example of testing.ts", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("## Testing your workflows"));
  const fromReadme = section.match(/```ts\n([\s\S]*?)```/)?.[1];
  const kit = await Deno.readTextFile(new URL("../testing.ts", import.meta.url));
  const example = kit.match(/@example Test the order workflow[^\n]*\n \* ```ts\n([\s\S]*?) \* ```/)
    ?.[1];
  assert.ok(fromReadme && example, "both examples are there");
  const fromKit = example.split("\n").map((line) => line.replace(/^ \* ?/, "")).join("\n");
  assert.equal(fromReadme, fromKit);
});

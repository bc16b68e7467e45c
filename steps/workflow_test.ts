import assert from "node:assert/strict";
import { z } from "zod";
import { DEFAULT_RETRY, workflow, WorkflowDefinitionError } from "../mod.ts";

const noop = () => null;

Deno.test("workflow() builds an immutable DAG with resolved options", () => {
  const base = workflow("order", {
    input: z.object({ id: z.string() }),
    defaults: { timeoutMs: 5_000, retry: { maxAttempts: 5 } },
  });
  const one = base.step("a", noop);
  const two = one.step("b", { needs: ["a"], retry: { jitter: 0 }, concurrency: 2 }, noop);
  assert.equal(base.steps.length, 0);
  assert.equal(one.steps.length, 1);
  assert.equal(two.steps.length, 2);
  const b = two.getStep("b")!;
  assert.deepEqual(b.needs, ["a"]);
  assert.equal(b.timeoutMs, 5_000);
  assert.deepEqual(b.retry, { ...DEFAULT_RETRY, maxAttempts: 5, jitter: 0 });
  assert.equal(b.concurrency, 2);
  assert.equal(two.getStep("a")!.concurrency, Infinity);
  assert.throws(() => (two.steps as unknown[]).push(1), TypeError);
});

Deno.test("workflow() reports each definition mistake naming the workflow and step", async (t) => {
  const cases: [string, () => unknown, RegExp][] = [
    [
      "duplicate step",
      () => workflow("w").step("a", noop).step("a", noop),
      /Invalid step 'a' in workflow 'w': a step of that name is already declared/,
    ],
    [
      "needs an unknown step",
      () => workflow("w").step("a", noop).step("b", { needs: ["nope" as "a"] }, noop),
      /Invalid step 'b' in workflow 'w': 'needs' names 'nope', which is not a step declared before this one/,
    ],
    [
      "needs a later step",
      () => workflow("w").step("a", { needs: ["b" as never] }, noop).step("b", noop),
      /Invalid step 'a' in workflow 'w': 'needs' names 'b'/,
    ],
    [
      "negative timeout",
      () => workflow("w").step("a", { timeoutMs: -1 }, noop),
      /Invalid step 'a' in workflow 'w': 'timeoutMs' must be a finite number > 0: current value is -1/,
    ],
    [
      "maxAttempts below 1",
      () => workflow("w").step("a", { retry: { maxAttempts: 0 } }, noop),
      /Invalid step 'a' in workflow 'w': 'retry.maxAttempts' must be an integer >= 1: current value is 0/,
    ],
    [
      "jitter outside 0..1",
      () => workflow("w").step("a", { retry: { jitter: 1.5 } }, noop),
      /'retry.jitter' must be between 0 and 1: current value is 1.5/,
    ],
    [
      "workflow name not URL-safe",
      () => workflow("../etc/passwd"),
      /Invalid workflow '\.\.\/etc\/passwd': a workflow name must be/,
    ],
    [
      "step name not URL-safe",
      () => workflow("w").step("a b", noop),
      /Invalid step 'a b' in workflow 'w'/,
    ],
    [
      "bad concurrency",
      () => workflow("w").step("a", { concurrency: 0 }, noop),
      /'concurrency' must be an integer >= 1: current value is 0/,
    ],
    [
      "bad workflow default",
      () => workflow("w", { defaults: { retry: { backoffFactor: 0.5 } } }),
      /Invalid workflow 'w': defaults: 'retry.backoffFactor' must be a finite number >= 1/,
    ],
  ];
  for (const [name, define, message] of cases) {
    await t.step(name, () => {
      assert.throws(define, (err: unknown) => {
        assert.ok(err instanceof WorkflowDefinitionError, `not a WorkflowDefinitionError: ${err}`);
        assert.match(err.message, message);
        return true;
      });
    });
  }
});

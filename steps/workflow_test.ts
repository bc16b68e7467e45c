import assert from "node:assert/strict";
import { z } from "zod";
import {
  DEFAULT_RETRY,
  type RetryPolicy,
  type StepDefaults,
  type StepOptions,
  workflow,
  WorkflowDefinitionError,
  type WorkflowOptions,
} from "../mod.ts";

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
    [
      "unknown step option",
      () => workflow("w").step("a", { timeout: 5_000 } as never, noop),
      /^Invalid step 'a' in workflow 'w': 'timeout' is not a step option; did you mean 'timeoutMs'\?$/,
    ],
    [
      "misspelt needs",
      () => workflow("w").step("a", noop).step("b", { need: ["a"] } as never, noop),
      /Invalid step 'b' in workflow 'w': 'need' is not a step option; did you mean 'needs'\?/,
    ],
    [
      "unknown retry field",
      () => workflow("w").step("a", { retry: { maxAttempt: 5 } } as never, noop),
      /Invalid step 'a' in workflow 'w': 'retry.maxAttempt' is not a retry option; did you mean 'maxAttempts'\?/,
    ],
    [
      "an option with no close name lists the options",
      () => workflow("w").step("a", { banana: 1 } as never, noop),
      /'banana' is not a step option: the options are 'needs', 'when', 'skippedNeeds', 'timeoutMs', 'retry', 'concurrency', 'compensate'/,
    ],
    [
      "a retry field given as a step option",
      () => workflow("w").step("a", { maxAttempts: 5 } as never, noop),
      /'maxAttempts' is not a step option; did you mean 'retry.maxAttempts'\?/,
    ],
    [
      "needs as a string is not split into characters",
      () => workflow("w").step("payment", noop).step("b", { needs: "payment" } as never, noop),
      /Invalid step 'b' in workflow 'w': 'needs' must be an array: current value is "payment"/,
    ],
    [
      "a need that is not a string",
      () => workflow("w").step("a", { needs: [1] } as never, noop),
      /'needs\[0\]' must be a string: current value is 1/,
    ],
    [
      "timeoutMs as a string",
      () => workflow("w").step("a", { timeoutMs: "5s" } as never, noop),
      /Invalid step 'a' in workflow 'w': 'timeoutMs' must be a number: current value is "5s"/,
    ],
    [
      "retry that is not an object",
      () => workflow("w").step("a", { retry: 3 } as never, noop),
      /'retry' must be an object: current value is 3/,
    ],
    [
      "options that are not an object",
      () => workflow("w").step("a", "fast" as never, noop),
      /Invalid step 'a' in workflow 'w': the step options must be an object: current value is "fast"/,
    ],
    [
      "every problem at once",
      () => workflow("w").step("a", { timeout: 1, concurrency: "2" } as never, noop),
      /'concurrency' must be a number: current value is "2"; 'timeout' is not a step option/,
    ],
    [
      "unknown workflow option",
      () => workflow("w", { default: {} } as never),
      /^Invalid workflow 'w': 'default' is not a workflow option; did you mean 'defaults'\?$/,
    ],
    [
      "unknown nested default",
      () => workflow("w", { defaults: { timeout: 1, retry: { jiter: 0 } } } as never),
      /'defaults.retry.jiter' is not a retry option; did you mean 'jitter'\?; 'defaults.timeout' is not a defaults option; did you mean 'timeoutMs'\?/,
    ],
    [
      "an input that is not a schema",
      () => workflow("w", { input: { type: "object" } } as never),
      /Invalid workflow 'w': 'input' must be a zod schema \(an object with safeParse\): current value is an object/,
    ],
    [
      "a description that is not a string",
      () => workflow("w", { description: 42 } as never),
      /'description' must be a string: current value is 42/,
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

Deno.test("workflow() accepts every documented option, Infinity concurrency included", () => {
  // Typed as Required<...>: a field added to an options interface fails to type-check here
  // until it is given, and then fails at run time until steps/options.ts has its schema.
  const retry: Required<RetryPolicy> = {
    maxAttempts: 2,
    initialDelayMs: 1,
    backoffFactor: 3,
    maxDelayMs: 9,
    jitter: 0,
  };
  const defaults: Required<StepDefaults> = { timeoutMs: 1_000, retry };
  const options: Required<WorkflowOptions<unknown>> = {
    input: z.object({}),
    description: "all of them",
    defaults,
  };
  const step: Required<StepOptions<readonly ["a"]>> = {
    needs: ["a"],
    timeoutMs: 50,
    retry: { ...retry, maxAttempts: 1, jitter: 1 },
    concurrency: Infinity,
    when: () => true,
    skippedNeeds: "run",
    compensate: () => {},
  };
  const wf = workflow("w", options).step("a", noop).step("b", step, noop);
  assert.equal(wf.getStep("b")!.timeoutMs, 50);
  assert.equal(wf.getStep("b")!.concurrency, Infinity);
  assert.equal(wf.getStep("b")!.retry.jitter, 1);
  assert.equal(wf.getStep("a")!.retry.backoffFactor, 3);
});

Deno.test("sleep, waitForEvent and child check their options like steps do", () => {
  const noop = () => 1;
  const wf = workflow("kinds").step("a", noop);
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => wf.sleep("s", { duration: 5 } as any),
    /step 's' in workflow 'kinds': 'duration' is not a sleep option; did you mean 'durationMs'\?/,
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => wf.waitForEvent("w", { event: "go", timeout: 5 } as any),
    /'timeout' is not a wait option; did you mean 'timeoutMs'\?/,
  );
  assert.throws(
    () => wf.sleep("s", { durationMs: 5, until: () => 1 } as never),
    /a sleep takes exactly one of 'durationMs' and 'until'/,
  );
  assert.throws(
    () => wf.waitForEvent("w", { event: "not valid!" }),
    /'event' must be 1-64 characters/,
  );
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => wf.child("c", { workflow: {} as any, input: () => ({}) }),
    /'workflow' must be a workflow/,
  );
  assert.throws(
    () => wf.step("b", { needs: ["a"], when: true as never }, noop),
    /'when' must be a function/,
  );
});

import assert from "node:assert/strict";
import { backoffDelayMs, DEFAULT_RETRY, retryPolicyProblem } from "./retry.ts";

Deno.test("backoffDelayMs grows exponentially and is capped", () => {
  const policy = {
    maxAttempts: 10,
    initialDelayMs: 50,
    backoffFactor: 2,
    maxDelayMs: 300,
    jitter: 0,
  };
  assert.deepEqual([2, 3, 4, 5, 6].map((n) => backoffDelayMs(policy, n)), [50, 100, 200, 300, 300]);
});

Deno.test("backoffDelayMs spreads by at most the jitter fraction either way", () => {
  const policy = { ...DEFAULT_RETRY, initialDelayMs: 1_000, jitter: 0.2 };
  assert.equal(backoffDelayMs(policy, 2, () => 0), 800);
  assert.equal(backoffDelayMs(policy, 2, () => 0.5), 1_000);
  assert.equal(backoffDelayMs(policy, 2, () => 0.999999), 1_200);
  const seen = new Set<number>();
  for (let i = 0; i < 200; i++) {
    const d = backoffDelayMs(policy, 2);
    assert.ok(d >= 800 && d <= 1_200, `delay ${d} outside jitter band`);
    seen.add(d);
  }
  assert.ok(seen.size > 10, "jitter does not vary the delay");
});

Deno.test("retryPolicyProblem names the field and value", () => {
  assert.equal(retryPolicyProblem({}), undefined);
  assert.match(retryPolicyProblem({ maxAttempts: 1.5 })!, /'retry.maxAttempts'.*1.5/);
  assert.match(retryPolicyProblem({ initialDelayMs: -1 })!, /'retry.initialDelayMs'.*-1/);
  assert.match(retryPolicyProblem({ maxDelayMs: NaN })!, /'retry.maxDelayMs'.*NaN/);
  assert.match(retryPolicyProblem({ jitter: -0.1 })!, /between 0 and 1: current value is -0.1/);
});

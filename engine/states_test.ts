import assert from "node:assert/strict";
import { InvalidTransitionError, transitionRun, transitionStep } from "./states.ts";

Deno.test("transitionRun allows only forward moves", () => {
  assert.equal(transitionRun("pending", "running"), "running");
  assert.equal(transitionRun("running", "cancelled"), "cancelled");
  assert.throws(() => transitionRun("succeeded", "running"), InvalidTransitionError);
  assert.throws(() => transitionRun("running", "pending"), InvalidTransitionError);
});

Deno.test("transitionStep allows retries and forbids leaving terminal states", () => {
  assert.equal(transitionStep("running", "waiting"), "waiting");
  assert.equal(transitionStep("waiting", "running"), "running");
  assert.equal(transitionStep("pending", "skipped"), "skipped");
  assert.throws(() => transitionStep("succeeded", "running"), InvalidTransitionError);
  assert.throws(() => transitionStep("pending", "succeeded"), InvalidTransitionError);
  assert.throws(() => transitionStep("failed", "waiting"), InvalidTransitionError);
});

/**
 * The example workflows of `workflows/`, driven through the public test kit
 * only: days of waiting take milliseconds of fake time.
 */
import assert from "node:assert/strict";
import { assertPath, createTestEngine } from "../testing.ts";
import { approval } from "../workflows/approval.ts";
import { batch } from "../workflows/batch.ts";
import { checkout } from "../workflows/checkout.ts";

const HOUR = 3_600_000;

Deno.test("approval example: answered on day one, no reminder", async () => {
  await using kit = await createTestEngine({ workflows: [approval] });
  const run = await kit.start("approval", { documentId: "D1", approver: "ada" });
  assert.equal((await kit.get(run.id)).steps.answer.status, "awaiting");
  await kit.advance(5 * HOUR);
  await kit.engine.signal(run.id, "decision", { approved: true, by: "ada" });
  await kit.runUntilIdle();
  const done = await kit.get(run.id);
  assert.equal(done.status, "succeeded");
  assert.deepEqual(done.output, { status: "approved", by: "ada", reminded: false });
  assert.equal(done.steps.reminder.status, "skipped");
  assert.equal(done.steps["late-answer"].skipReason, "step 'reminder' it needs was skipped");
});

Deno.test("approval example: reminded after 24 h, answered on day two", async () => {
  await using kit = await createTestEngine({ workflows: [approval] });
  const run = await kit.start("approval", { documentId: "D2", approver: "bo" });
  await kit.advance(24 * HOUR);
  const reminded = await kit.get(run.id);
  assert.equal(reminded.steps.reminder.status, "succeeded");
  assert.equal(reminded.steps["late-answer"].status, "awaiting");
  await kit.advance(10 * HOUR);
  await kit.engine.signal(run.id, "decision", { approved: false, by: "bo", comment: "no" });
  await kit.runUntilIdle();
  const done = await kit.get(run.id);
  assert.deepEqual(done.output, { status: "rejected", by: "bo", reminded: true });
});

Deno.test("approval example: expires after 3 days without an answer", async () => {
  await using kit = await createTestEngine({ workflows: [approval] });
  const run = await kit.start("approval", { documentId: "D3", approver: "cy" });
  const done = await kit.runToEnd(run.id, { withinMs: 4 * 24 * HOUR });
  assert.deepEqual(done.output, { status: "expired" });
  assert.equal(Date.parse(done.finishedAt!) - Date.parse(done.createdAt), 72 * HOUR);
  assertPath(await kit.path(run.id), ["request", "answer", "reminder", "late-answer", "outcome"]);
});

Deno.test("checkout example: out of stock refunds the payment and tells the customer", async () => {
  await using kit = await createTestEngine({ workflows: [checkout] });
  const run = await kit.start("checkout", { orderId: "C1", amount: 80, sku: "out-of-stock" });
  const done = await kit.runToEnd(run.id);
  assert.equal(done.status, "failed");
  assert.equal(done.failedStep, "inventory");
  assert.equal(done.steps["payment~compensate"].status, "succeeded");
  assert.equal(done.steps["inventory~compensate"].status, "skipped");
  assert.equal(done.steps["~onFailure"].status, "succeeded");
  assert.equal(done.steps.dispatch.status, "skipped");
});

Deno.test("checkout example: the insurance step runs only for orders over 500", async () => {
  await using kit = await createTestEngine({ workflows: [checkout] });
  const small = await kit.runToEnd((await kit.start("checkout", { orderId: "S", amount: 30 })).id);
  assert.equal(small.status, "succeeded");
  assert.equal(small.steps.insurance.skipReason, "its condition is false");
  assert.equal((small.output as { insured: boolean }).insured, false);
  const big = await kit.runToEnd((await kit.start("checkout", { orderId: "B", amount: 900 })).id);
  assert.equal(big.status, "succeeded");
  assert.equal((big.output as { insured: boolean }).insured, true);
  assert.equal(big.steps["payment~compensate"].skipReason, "the run succeeded");
});

Deno.test("batch example: a fan-out over orders, with a failed one counted in the aggregate", async () => {
  await using kit = await createTestEngine({ workflows: [batch] });
  const orders = Array.from({ length: 40 }, (_, i) => ({
    id: `o${i}`,
    amount: i === 7 ? -1 : i * 100,
  }));
  const done = await kit.runToEnd((await kit.start("batch", { orders })).id);
  assert.equal(done.status, "succeeded");
  assert.deepEqual(done.steps.score.map, { total: 40, succeeded: 39, failed: 1, running: 0 });
  const out = done.output as { orders: number; failed: number; total: number; highRisk: string[] };
  assert.equal(out.orders, 40);
  assert.equal(out.failed, 1);
  assert.equal(out.total, orders.filter((o) => o.amount >= 0).reduce((n, o) => n + o.amount, 0));
  assert.deepEqual(out.highRisk, orders.filter((o) => o.amount > 1_000).map((o) => o.id));
});

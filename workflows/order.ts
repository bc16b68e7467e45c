/**
 * The e-commerce order pipeline: payment, inventory and logistics run in
 * parallel, then dispatch runs only if payment went through and the stock is
 * there. The services are simulated so the example runs anywhere: each
 * "call" is a `ctx.sleep` on the engine's clock, which a test skips with
 * `weft/testing`. Swap the bodies for real calls (pass `signal` to `fetch`
 * so timeouts abort them).
 *
 * Try it: `{"orderId":"A1","amount":30}` succeeds; an amount over 10000 is
 * declined (no retries); a `sku` of `"out-of-stock"` fails inventory; an
 * orderId starting with `"flaky"` makes payment fail its first attempt and
 * succeed on the retry.
 *
 * @module
 */
import { z } from "zod";
import { NonRetryableError, workflow } from "../mod.ts";

/** The order workflow of the README. */
export const order = workflow("order", {
  description: "Charge, reserve stock and book a carrier in parallel, then dispatch",
  input: z.object({
    orderId: z.string().min(1).max(100),
    amount: z.number().positive(),
    sku: z.string().max(100).default("sku-1"),
  }),
  defaults: { timeoutMs: 5_000 },
})
  .step("payment", {
    timeoutMs: 2_000,
    retry: { maxAttempts: 3, initialDelayMs: 50, backoffFactor: 2, maxDelayMs: 1_000, jitter: 0.2 },
  }, async ({ input, sleep, attempt, log }) => {
    await sleep(30);
    if (input.amount > 10_000) throw new NonRetryableError("card declined: amount over limit");
    if (input.orderId.startsWith("flaky") && attempt === 1) {
      throw new Error("payment gateway unavailable");
    }
    log.info("Charged {amount}", { amount: input.amount });
    return { charged: input.amount, transactionId: `tx-${input.orderId}-${attempt}` };
  })
  .step("inventory", async ({ input, sleep }) => {
    await sleep(20);
    if (input.sku === "out-of-stock") {
      throw new NonRetryableError(`sku ${input.sku} is out of stock`);
    }
    return { available: true, sku: input.sku, warehouse: "north" };
  })
  .step("logistics", { concurrency: 5 }, async ({ sleep }) => {
    await sleep(25);
    return { carrier: "post", etaDays: 2 };
  })
  .step(
    "dispatch",
    { needs: ["payment", "inventory", "logistics"] },
    ({ input, results }) => ({
      orderId: input.orderId,
      shipped: results.inventory.available,
      carrier: results.logistics.carrier,
      transactionId: results.payment.transactionId,
    }),
  );

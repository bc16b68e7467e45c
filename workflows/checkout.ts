/**
 * The order pipeline as a saga: `order` (in `order.ts`) with the article's
 * condition and compensations. Payment, inventory and logistics run in
 * parallel, then dispatch runs only if payment went through and the stock is
 * there. The services are simulated so the example runs anywhere: each
 * "call" is a `ctx.sleep` on the engine's clock, which a test skips with
 * `weft/testing`. Swap the bodies for real calls (pass `signal` to `fetch`
 * so timeouts abort them).
 *
 * When the run fails after payment went through (say the stock is not
 * there), the succeeded steps are compensated in reverse order (the stock
 * reservation released, the payment refunded) and the customer is told
 * (`onFailure`). Orders over 500 are insured first: a conditional step that
 * is skipped for small orders, which dispatch does not wait for.
 *
 * Try it: `{"orderId":"A1","amount":30}` succeeds; an amount over 10000 is
 * declined (no retries); a `sku` of `"out-of-stock"` fails inventory, and the
 * payment is refunded; an orderId starting with `"flaky"` makes payment fail
 * its first attempt and succeed on the retry; an amount over 500 adds the
 * insurance step.
 *
 * @module
 */
import { bookCarrier, charge, orderInput, paymentPolicy, reserveStock } from "./order.ts";
import { workflow } from "../mod.ts";

/** The checkout workflow of the README: the order pipeline with compensations. */
export const checkout = workflow("checkout", {
  description:
    "The order pipeline with compensations: refund and release the stock when it fails, insure orders over 500",
  input: orderInput,
  defaults: { timeoutMs: 5_000 },
})
  .step("payment", {
    ...paymentPolicy,
    // Runs only if the order fails after the charge went through.
    compensate: async ({ output, sleep, log }) => {
      await sleep(10);
      log.info("Refunded {transactionId}", output as { transactionId: string });
    },
  }, charge)
  .step("inventory", {
    compensate: async ({ input, sleep, log }) => {
      await sleep(10);
      log.info("Released the stock of {sku}", { sku: input.sku });
    },
  }, reserveStock(40)) // after the charge: a failure here is refunded
  .step("logistics", { concurrency: 5 }, bookCarrier)
  .step("insurance", {
    needs: ["logistics"],
    // The article's condition, as a step: only valuable parcels are insured.
    when: ({ input }) => input.amount > 500,
  }, async ({ input, sleep }) => {
    await sleep(15);
    return { policy: `ins-${input.orderId}`, cover: input.amount };
  })
  .step(
    "dispatch",
    // Dispatch waits for insurance when there is one, and runs without it when it was skipped.
    { needs: ["payment", "inventory", "logistics", "insurance"], skippedNeeds: "run" },
    ({ input, results }) => ({
      orderId: input.orderId,
      shipped: results.inventory!.available,
      carrier: results.logistics!.carrier,
      transactionId: results.payment!.transactionId,
      insured: results.insurance !== undefined,
    }),
  )
  .onFailure(({ input, failedStep, error, log }) => {
    log.warn("Told the customer of order {orderId} that it failed at {failedStep}: {reason}", {
      orderId: input.orderId,
      failedStep,
      reason: error?.message,
    });
  });

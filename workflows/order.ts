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
 * The input schema, the payment policy and the step bodies are exported:
 * `checkout.ts` builds the same pipeline with compensations from them.
 *
 * @module
 */
import { z } from "zod";
import { NonRetryableError, type StepContext, workflow } from "../mod.ts";

/** What an order run takes: the same for `order` and `checkout`. */
export const orderInput = z.object({
  orderId: z.string().min(1).max(100),
  amount: z.number().positive(),
  sku: z.string().max(100).default("sku-1"),
});

/** An order run's input, as parsed by {@linkcode orderInput}. */
export type OrderInput = z.output<typeof orderInput>;

/** What the order's step bodies use of their context. */
export type OrderStepContext = Pick<
  StepContext<OrderInput, unknown>,
  "input" | "sleep" | "attempt" | "log"
>;

/** The payment step's timeout and retry policy: a flaky gateway is retried twice. */
export const paymentPolicy = {
  timeoutMs: 2_000,
  retry: { maxAttempts: 3, initialDelayMs: 50, backoffFactor: 2, maxDelayMs: 1_000, jitter: 0.2 },
};

/**
 * Charges the order (a simulated 30 ms call). Over 10000 it is declined for
 * good; an orderId starting with `"flaky"` fails its first attempt.
 *
 * @example
 * ```ts
 * import { workflow } from "../mod.ts";
 * import { charge, orderInput, paymentPolicy } from "./order.ts";
 * workflow("pay", { input: orderInput }).step("payment", paymentPolicy, charge);
 * ```
 */
export async function charge({ input, sleep, attempt, log }: OrderStepContext) {
  await sleep(30);
  if (input.amount > 10_000) throw new NonRetryableError("card declined: amount over limit");
  if (input.orderId.startsWith("flaky") && attempt === 1) {
    throw new Error("payment gateway unavailable");
  }
  log.info("Charged {amount}", { amount: input.amount });
  return { charged: input.amount, transactionId: `tx-${input.orderId}-${attempt}` };
}

/**
 * The body that reserves the order's stock, as a simulated call of `callMs`;
 * a `sku` of `"out-of-stock"` fails it for good.
 *
 * @example
 * ```ts
 * import { workflow } from "../mod.ts";
 * import { orderInput, reserveStock } from "./order.ts";
 * workflow("stock", { input: orderInput }).step("inventory", reserveStock(20));
 * ```
 */
export function reserveStock(callMs: number) {
  return async ({ input, sleep }: OrderStepContext) => {
    await sleep(callMs);
    if (input.sku === "out-of-stock") {
      throw new NonRetryableError(`sku ${input.sku} is out of stock`);
    }
    return { available: true, sku: input.sku, warehouse: "north" };
  };
}

/**
 * Books a carrier (a simulated 25 ms call).
 *
 * @example
 * ```ts
 * import { workflow } from "../mod.ts";
 * import { bookCarrier } from "./order.ts";
 * workflow("ship").step("logistics", { concurrency: 5 }, bookCarrier);
 * ```
 */
export async function bookCarrier({ sleep }: Pick<OrderStepContext, "sleep">) {
  await sleep(25);
  return { carrier: "post", etaDays: 2 };
}

/** The order workflow of the README. */
export const order = workflow("order", {
  description: "Charge, reserve stock and book a carrier in parallel, then dispatch",
  input: orderInput,
  defaults: { timeoutMs: 5_000 },
})
  .step("payment", paymentPolicy, charge)
  .step("inventory", reserveStock(20))
  .step("logistics", { concurrency: 5 }, bookCarrier)
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

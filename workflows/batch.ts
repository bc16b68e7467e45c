/**
 * Batch processing of many orders, as a dynamic fan-out: the list of orders
 * comes from the input, each order is scored as a durable item of its own
 * (retried alone, at most 5 at once in the run), and an aggregate step sums
 * the results. A failing order does not fail the batch: the map tolerates
 * failures, and the aggregate counts them.
 *
 * Try it: `{"orders":[{"id":"A","amount":30},{"id":"B","amount":-1}]}`.
 *
 * @module
 */
import { z } from "zod";
import { NonRetryableError, workflow } from "../mod.ts";

/** The batch workflow of the README. */
export const batch = workflow("batch", {
  description: "Score many orders in parallel, 5 at a time, then aggregate",
  input: z.object({
    orders: z.array(z.object({ id: z.string().min(1).max(100), amount: z.number() })).max(10_000),
  }),
})
  .map("score", {
    items: ({ input }) => input.orders,
    concurrency: 5,
    tolerateFailures: true,
    retry: { maxAttempts: 3, initialDelayMs: 100 },
  }, async ({ item, sleep }) => {
    await sleep(20);
    if (item.amount < 0) throw new NonRetryableError(`order ${item.id} has a negative amount`);
    return { id: item.id, risk: item.amount > 1_000 ? "high" : "low", amount: item.amount };
  })
  .step("aggregate", { needs: ["score"] }, ({ results }) => {
    const scored = results.score.filter((r) => r.ok).map((r) => r.ok ? r.value : undefined!);
    return {
      orders: results.score.length,
      failed: results.score.length - scored.length,
      total: scored.reduce((n, s) => n + s.amount, 0),
      highRisk: scored.filter((s) => s.risk === "high").map((s) => s.id),
    };
  });

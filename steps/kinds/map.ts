/**
 * The map kind: a dynamic fan-out. When the step becomes ready it computes
 * its items from the run's input and results and stores them with the write
 * that starts it; each item then runs the step's body as a durable attempt
 * of its own (a record per item, with the step's timeout and retry policy),
 * at most `concurrency` at once in the run. The step's record counts the
 * items started, succeeded and failed; its output is the items' outputs in
 * item order, read from their records (nothing is copied). An item that
 * fails after its retries fails the step, unless it tolerates failures.
 *
 * Items start in index order, and the write that starts one also moves the
 * step's `started` count, so after a crash every item below it has a record
 * (or is started again) and none above it ran: finished items are never
 * redone, and an item's result is committed once, as a task's is.
 *
 * @module
 */
import type { ItemOutcome, StepKind, StepKindContext } from "../../engine/step_kind.ts";
import { transitionStep } from "../../engine/states.ts";
import { MAX_MAP_ITEMS } from "../workflow.ts";
import { failWith } from "./_outcome.ts";

/** The largest items list, in bytes of JSON: it is stored with one write. */
export const MAX_ITEMS_BYTES = 600_000;

type Counts = { total: number; started: number; succeeded: number; failed: number };

function counts(ctx: StepKindContext): Counts {
  return ctx.record().map ?? { total: 0, started: 0, succeeded: 0, failed: 0 };
}

function failStep(ctx: StepKindContext, message: string, cause?: unknown): void {
  failWith(ctx, message, cause ?? new Error(message));
}

/** Starts items, in order, while fewer than `concurrency` are in flight. */
function topUp(ctx: StepKindContext): void {
  const c = counts(ctx);
  let started = c.started;
  const items = ctx.items();
  while (started - c.succeeded - c.failed < ctx.step.map!.concurrency && started < c.total) {
    items.start(started++);
  }
  if (started !== c.started) ctx.update({ ...ctx.record(), map: { ...c, started } });
}

function finish(ctx: StepKindContext): void {
  const c = counts(ctx);
  const items = ctx.items();
  const tolerant = ctx.step.map!.tolerateFailures;
  const values: unknown[] = [];
  for (let i = 0; i < c.total; i++) {
    const rec = items.record(i);
    if (!tolerant) values.push(items.value(i));
    else if (rec?.status === "succeeded") values.push({ ok: true, value: items.value(i) });
    else values.push({ ok: false, error: rec?.errors.at(-1)?.error ?? null });
  }
  const rec = ctx.record();
  const now = ctx.now();
  ctx.transition(
    {
      ...rec,
      status: transitionStep(rec.status, "succeeded"),
      finishedAt: now,
      output: { kind: "items", count: c.total, tolerant },
    },
    { attempt: rec.attempts, durationMs: now - (rec.startedAt ?? now) },
  );
  ctx.succeeded(values);
}

/**
 * The map kind.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { mapKind } from "./map.ts";
 * assert.equal(mapKind.dueAt({ status: "running", attempts: 1, errors: [] }), undefined);
 * ```
 */
export const mapKind: StepKind = {
  name: "map",
  ready(ctx) {
    let items: readonly unknown[];
    try {
      items = ctx.step.map!.items({ input: ctx.input(), results: ctx.results() });
    } catch (error) {
      return failStep(ctx, `its items could not be computed: ${(error as Error)?.message}`, error);
    }
    if (!Array.isArray(items)) {
      return failStep(ctx, `'items' returned ${typeof items}, not an array`);
    }
    if (items.length > MAX_MAP_ITEMS) {
      return failStep(ctx, `it has ${items.length} items, more than ${MAX_MAP_ITEMS}`);
    }
    let bytes: number;
    try {
      bytes = new TextEncoder().encode(JSON.stringify(items)).byteLength;
    } catch (error) {
      return failStep(ctx, `its items are not JSON-serializable: ${(error as Error).message}`);
    }
    if (bytes > MAX_ITEMS_BYTES) {
      return failStep(
        ctx,
        `its items are ${bytes} bytes of JSON, over ${MAX_ITEMS_BYTES}: pass ids and load the data in the body`,
      );
    }
    ctx.items().store(items);
    const rec = ctx.record();
    const now = ctx.now();
    ctx.transition(
      {
        ...rec,
        status: transitionStep(rec.status, "running"),
        attempts: 1,
        startedAt: now,
        map: { total: items.length, started: 0, succeeded: 0, failed: 0 },
      },
      { attempt: 1 },
    );
    if (items.length === 0) return finish(ctx);
    topUp(ctx);
  },
  attemptEnded() {
    // A map's body runs per item; items end through `itemEnded`.
  },
  itemEnded(ctx, _index, outcome: ItemOutcome) {
    const rec = ctx.record();
    if (rec.status !== "running") return;
    const c = counts(ctx);
    const next = {
      ...c,
      succeeded: c.succeeded + (outcome.ok ? 1 : 0),
      failed: c.failed + (outcome.ok ? 0 : 1),
    };
    ctx.update({ ...rec, map: next });
    if (!outcome.ok && !ctx.step.map!.tolerateFailures) {
      // "Step 'x[3]' failed after 2 attempts: ..." reads "item 3 failed after 2 attempts: ...".
      const why = outcome.error.message.replace(/^Step '[^']*' /, "");
      return failStep(ctx, `item ${_index} ${why}`, outcome.error);
    }
    if (next.succeeded + next.failed === next.total) return finish(ctx);
    topUp(ctx);
  },
  timerDue() {
    // Items keep their own timers.
  },
  recover(ctx) {
    if (ctx.record().status !== "running") return;
    const c = counts(ctx);
    const items = ctx.items();
    for (let i = 0; i < c.started; i++) {
      const rec = items.record(i);
      if (!rec) items.start(i);
      else if (!["succeeded", "failed", "skipped", "cancelled"].includes(rec.status)) {
        items.recover(i);
      }
    }
    if (c.succeeded + c.failed === c.total) return finish(ctx);
    topUp(ctx);
  },
  dueAt() {
    // When it next needs a worker is its items' business.
    return undefined;
  },
};

/**
 * Control-flow kinds on the engine, with the fake clock: conditional steps,
 * durable sleep, wait-for-event, compensation and `onFailure`. Sleeps and
 * waits of days take no real time.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import {
  InvalidInputError,
  isTerminalRun,
  NonRetryableError,
  RunFinishedError,
  UnknownEventError,
  workflow,
} from "../mod.ts";
import { testEngine, waitFor } from "./_helpers.ts";
import { approvalWorkflow, lateWaitWorkflow } from "./fixtures/wait_workflows.ts";

const DAY = 24 * 3600_000;

Deno.test("conditional steps: a false condition skips the step and, by default, what needs it", async () => {
  const ran: string[] = [];
  const wf = workflow("cond", { input: z.object({ express: z.boolean() }) })
    .step("quote", ({ input }) => {
      ran.push("quote");
      return { express: input.express, price: 10 };
    })
    .step(
      "express",
      { needs: ["quote"], when: ({ results }) => results.quote.express },
      () => {
        ran.push("express");
        return "courier";
      },
    )
    .step("label", { needs: ["express"] }, () => {
      ran.push("label");
      return "printed";
    })
    .step("notify", { needs: ["express"], skippedNeeds: "run" }, ({ results }) => {
      ran.push("notify");
      return { sawExpress: "express" in results, express: results.express ?? null };
    });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("cond", { express: false });
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.deepEqual(ran, ["quote", "notify"]);
  assert.equal(done.steps.express.status, "skipped");
  assert.equal(done.steps.express.skipReason, "its condition is false");
  assert.equal(done.steps.label.status, "skipped");
  assert.equal(done.steps.label.skipReason, "step 'express' it needs was skipped");
  assert.deepEqual(done.steps.notify.output, { sawExpress: false, express: null });

  ran.length = 0;
  const other = await t.engine.result((await t.engine.start("cond", { express: true })).id);
  assert.equal(other.status, "succeeded");
  assert.deepEqual(ran.sort(), ["express", "label", "notify", "quote"]);
  assert.deepEqual(other.steps.notify.output, { sawExpress: true, express: "courier" });
});

Deno.test("conditional steps: a condition that throws fails the run at that step", async () => {
  const wf = workflow("cond-throws")
    .step("a", () => 1)
    .step("b", {
      needs: ["a"],
      when: () => {
        throw new TypeError("no such field");
      },
    }, () => 2);
  await using t = await testEngine([wf]);
  const done = await t.engine.result((await t.engine.start("cond-throws", {})).id);
  assert.equal(done.status, "failed");
  assert.equal(done.failedStep, "b");
  assert.match(done.error!.message, /condition threw: no such field/);
  assert.equal(done.steps.b.status, "failed");
});

Deno.test("durable sleep: a 3-day sleep holds no run in memory and resumes on time", async () => {
  let followedAt = 0;
  const wf = workflow("drip")
    .step("welcome", () => "sent")
    .sleep("pause", { needs: ["welcome"], durationMs: 3 * DAY })
    .step("follow-up", { needs: ["pause"] }, ({ results }) => {
      followedAt = Date.parse(results.pause.until);
      return "sent";
    });
  await using t = await testEngine([wf]);
  const started = t.clock.now();
  const run = await t.engine.start("drip", {});
  await waitFor(async () => (await t.engine.get(run.id)).steps.pause.status === "sleeping");
  await waitFor(() => t.engine.stats().activeRuns === 0, "the sleeping run to leave memory");
  const sleeping = await t.engine.get(run.id);
  assert.equal(sleeping.steps.pause.resumeAt, new Date(started + 3 * DAY).toISOString());
  await t.clock.advance(3 * DAY - 1);
  assert.equal((await t.engine.get(run.id)).steps["follow-up"].status, "pending");
  await t.clock.advance(1);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(followedAt, started + 3 * DAY);
});

Deno.test("durable sleep: until a computed time, past the KV queue's 30-day limit, across a restart", async () => {
  const wf = workflow("renewal", { input: z.object({ at: z.number() }) })
    .sleep("until-renewal", { until: ({ input }) => new Date(input.at) })
    .step("renew", () => "renewed");
  await using t = await testEngine([wf]);
  const at = t.clock.now() + 45 * DAY;
  const run = await t.engine.start("renewal", { at });
  await waitFor(async () =>
    (await t.engine.get(run.id)).steps["until-renewal"].status === "sleeping"
  );
  await t.restart();
  for (let day = 0; day < 44; day++) await t.clock.advance(DAY);
  assert.equal((await t.engine.get(run.id)).status, "running");
  await t.clock.advance(DAY);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.steps["until-renewal"].output?.valueOf() !== undefined, true);
  assert.deepEqual(done.steps["until-renewal"].output, { until: new Date(at).toISOString() });
});

const approval = approvalWorkflow({ timeoutMs: 3 * DAY });

Deno.test("wait for an event: a signal ends the wait with its payload; the run waits on disk", async () => {
  await using t = await testEngine([approval]);
  const run = await t.engine.start("approval", { doc: "d1" });
  await waitFor(async () => (await t.engine.get(run.id)).steps.decision.status === "awaiting");
  await waitFor(() => t.engine.stats().activeRuns === 0, "the waiting run to leave memory");
  await t.clock.advance(DAY);
  const sent = await t.engine.signal(run.id, "decided", { approved: true, by: "ada" });
  assert.equal(sent.duplicate, false);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.steps.record.output, "approved by ada");
  assert.deepEqual((done.steps.decision.output as { payload: unknown }).payload, {
    approved: true,
    by: "ada",
  });
  // The event was taken: the mailbox is empty.
  const left = await Array.fromAsync(t.kv.list({ prefix: ["weft", "evt", run.id] }));
  assert.equal(left.length, 0);
});

Deno.test("wait for an event: its timeout ends it with a timed-out marker", async () => {
  await using t = await testEngine([approval]);
  const run = await t.engine.start("approval", { doc: "d2" });
  await waitFor(async () => (await t.engine.get(run.id)).steps.decision.status === "awaiting");
  await t.clock.advance(3 * DAY - 1);
  assert.equal((await t.engine.get(run.id)).steps.decision.status, "awaiting");
  await t.clock.advance(1);
  const done = await t.engine.result(run.id);
  assert.equal(done.steps.record.output, "expired");
  assert.equal((done.steps.decision.output as { timedOut: boolean }).timedOut, true);
});

Deno.test("wait for an event: one sent before the wait starts is kept for it", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const wf = lateWaitWorkflow("early", gate);
  await using t = await testEngine([wf]);
  const run = await t.engine.start("early", {});
  await waitFor(async () => (await t.engine.get(run.id)).steps.slow.status === "running");
  await t.engine.signal(run.id, "go", { n: 7 });
  release();
  const done = await t.engine.result(run.id);
  assert.equal(done.steps.after.output, 7);
});

Deno.test("wait for an event: bad payloads, unknown events, finished runs and repeated keys", async (t) => {
  await using te = await testEngine([approval]);
  const run = await te.engine.start("approval", { doc: "d3" });
  await waitFor(async () => (await te.engine.get(run.id)).steps.decision.status === "awaiting");
  await t.step("a payload that does not match the schema is refused, with its issues", async () => {
    const error = await te.engine.signal(run.id, "decided", { approved: "yes" }).catch((e) => e);
    assert.ok(error instanceof InvalidInputError);
    assert.match(error.message, /payload for event 'decided' of workflow 'approval' at 'approved'/);
    assert.deepEqual(error.issues.map((i) => i.path), [["approved"], ["by"]]);
  });
  await t.step("an event no step waits for is unknown", async () => {
    const error = await te.engine.signal(run.id, "approved", {}).catch((e) => e);
    assert.ok(error instanceof UnknownEventError);
    assert.match(error.message, /no step that waits for event 'approved'/);
  });
  await t.step("a key makes the delivery idempotent: one event, taken once", async () => {
    const first = await te.engine.signal(run.id, "decided", { approved: false, by: "bo" }, {
      key: "k1",
    });
    const again = await te.engine.signal(run.id, "decided", { approved: true, by: "cy" }, {
      key: "k1",
    });
    assert.equal(again.duplicate, true);
    assert.equal(again.eventId, first.eventId);
    const done = await te.engine.result(run.id);
    assert.equal(done.steps.record.output, "rejected by bo");
  });
  await t.step("a finished run takes no event", async () => {
    const error = await te.engine.signal(run.id, "decided", { approved: true, by: "x" }).catch((
      e,
    ) => e);
    assert.ok(error instanceof RunFinishedError);
    assert.match(error.message, /Cannot send event 'decided' to run .* already finished/);
  });
});

Deno.test("wait for an event: 10,000 waiting runs hold no run in memory", async () => {
  const wf = workflow("many-waits")
    .waitForEvent("w", { event: "go" })
    .step("done", { needs: ["w"] }, () => "ok");
  await using t = await testEngine([wf], { maxConcurrentSteps: 50 });
  const ids: string[] = [];
  for (let i = 0; i < 10_000; i += 500) {
    const batch = await Promise.all(
      Array.from({ length: 500 }, () => t.engine.start("many-waits", null)),
    );
    ids.push(...batch.map((r) => r.id));
  }
  await waitFor(
    () => t.engine.stats().activeRuns === 0,
    "every waiting run to leave memory",
    20_000,
  );
  assert.equal(t.engine.stats().runningSteps, 0);
  const parked = await Array.fromAsync(t.kv.list({ prefix: ["weft", "due"] }));
  assert.equal(parked.length, 10_000);
  await t.engine.signal(ids[1234], "go", 1);
  const done = await t.engine.result(ids[1234]);
  assert.equal(done.status, "succeeded");
  assert.equal((await t.engine.get(ids[0])).steps.w.status, "awaiting");
});

const order = (log: string[], failDispatch: boolean) =>
  workflow("saga", { input: z.object({ id: z.string() }) })
    .step("payment", {
      compensate: ({ output }) => void log.push(`refund ${(output as { charge: string }).charge}`),
    }, ({ input }) => {
      log.push("charge");
      return { charge: `ch_${input.id}` };
    })
    .step("inventory", {
      compensate: () => void log.push("release stock"),
    }, () => {
      log.push("reserve");
      return { reserved: 2 };
    })
    .step("ship", {
      needs: ["payment", "inventory"],
      compensate: () => void log.push("recall"),
      retry: { maxAttempts: 1 },
    }, () => {
      log.push("ship");
      if (failDispatch) throw new NonRetryableError("courier refused the parcel");
      return "shipped";
    })
    .onFailure(({ failedStep, error, results }) =>
      void log.push(`notify ${failedStep}: ${error?.message} (paid: ${"payment" in results})`)
    );

Deno.test("compensation: a failed run undoes its succeeded steps in reverse order, then onFailure", async () => {
  const log: string[] = [];
  await using t = await testEngine([order(log, true)]);
  const done = await t.engine.result((await t.engine.start("saga", { id: "o1" })).id);
  assert.equal(done.status, "failed");
  assert.equal(done.failedStep, "ship");
  assert.deepEqual(log.slice(0, 3).sort(), ["charge", "reserve", "ship"]);
  // ship failed: it is not compensated; the others are, then onFailure.
  assert.deepEqual(log.slice(3, 5).sort(), ["refund ch_o1", "release stock"]);
  assert.match(log[5], /^notify ship: Step 'ship' failed with a non-retryable error/);
  assert.match(log[5], /paid: true/);
  assert.equal(done.steps["payment~compensate"].status, "succeeded");
  assert.equal(done.steps["ship~compensate"].status, "skipped");
  assert.equal(done.steps["ship~compensate"].skipReason, "step 'ship' did not succeed");
  assert.equal(done.steps["~onFailure"].status, "succeeded");
  const history = await t.engine.history(done.id);
  const runPath = history.filter((e) => e.type === "run").map((e) => e.to);
  assert.deepEqual(runPath, ["pending", "running", "compensating", "failed"]);
});

Deno.test("compensation: compensations run after the steps that need theirs are undone", async () => {
  const log: string[] = [];
  const wf = workflow("chain")
    .step("a", { compensate: () => void log.push("undo a") }, () => log.push("a"))
    .step("b", { needs: ["a"] }, () => log.push("b"))
    .step("c", { needs: ["b"], compensate: () => void log.push("undo c") }, () => log.push("c"))
    .step("d", { needs: ["c"] }, () => {
      throw new NonRetryableError("boom");
    });
  assert.deepEqual(wf.getStep("a~compensate")?.needs, ["c~compensate"]);
  await using t = await testEngine([wf]);
  const done = await t.engine.result((await t.engine.start("chain", {})).id);
  assert.equal(done.status, "failed");
  assert.deepEqual(log, ["a", "b", "c", "undo c", "undo a"]);
});

Deno.test("compensation: a cancelled run is compensated, skips onFailure, and ends cancelled", async () => {
  const log: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const wf = workflow("cancel-saga")
    .step("book", { compensate: () => void log.push("unbook") }, () => log.push("book"))
    .step("wait", { needs: ["book"] }, async ({ signal }) => {
      await Promise.race([gate, new Promise((r) => signal.addEventListener("abort", r))]);
    })
    .onFailure(() => void log.push("onFailure"));
  await using t = await testEngine([wf]);
  const run = await t.engine.start("cancel-saga", {});
  await waitFor(async () => (await t.engine.get(run.id)).steps.wait.status === "running");
  await t.engine.cancel(run.id, { reason: "customer changed their mind" });
  const done = await t.engine.result(run.id);
  release();
  assert.equal(done.status, "cancelled");
  assert.deepEqual(log, ["book", "unbook"]);
  assert.equal(done.steps["~onFailure"].status, "skipped");
  assert.equal(done.steps.wait.status, "cancelled");
});

Deno.test("compensation: one that keeps failing is retried, then named in the run's error", async () => {
  let tries = 0;
  const wf = workflow("bad-undo")
    .step("a", {
      retry: { maxAttempts: 3, initialDelayMs: 1_000 },
      compensate: () => {
        tries++;
        throw new Error("refund API down");
      },
    }, () => 1)
    .step("b", { needs: ["a"] }, () => {
      throw new NonRetryableError("boom");
    });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("bad-undo", {});
  await waitFor(() => tries === 1);
  await t.clock.advance(1_000);
  await waitFor(() => tries === 2);
  await t.clock.advance(2_000);
  const done = await t.engine.result(run.id);
  assert.equal(tries, 3);
  assert.equal(done.status, "failed");
  assert.equal(done.failedStep, "b");
  assert.match(done.error!.message, /compensation 'a~compensate' failed too/);
  assert.equal(done.steps["a~compensate"].status, "failed");
  assert.equal(done.steps["a~compensate"].attempts, 3);
});

Deno.test("compensation: a successful run skips every compensation", async () => {
  const log: string[] = [];
  await using t = await testEngine([order(log, false)]);
  const done = await t.engine.result((await t.engine.start("saga", { id: "o2" })).id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.output, "shipped");
  assert.equal(done.steps["payment~compensate"].skipReason, "the run succeeded");
  assert.ok(!log.some((l) => l.startsWith("refund")));
});

const invoice = workflow("invoice", { input: z.object({ total: z.number() }) })
  .step("pdf", ({ input }) => {
    if (input.total < 0) throw new NonRetryableError("negative total");
    return { file: `invoice-${input.total}.pdf` };
  })
  .sleep("cool-off", { needs: ["pdf"], durationMs: DAY });
const billing = workflow("billing", { input: z.object({ total: z.number() }) })
  .step("price", ({ input }) => ({ total: input.total * 2 }))
  .child("invoice", {
    needs: ["price"],
    workflow: invoice,
    input: ({ results }) => ({ total: results.price.total }),
  })
  .step(
    "mail",
    { needs: ["invoice"] },
    ({ results }) => `mailed ${results.invoice.results.pdf.file}`,
  );

Deno.test("sub-workflows: a step runs a child run, linked both ways, and gets its typed results", async () => {
  await using t = await testEngine([billing, invoice]);
  const run = await t.engine.start("billing", { total: 21 });
  await waitFor(async () => (await t.engine.get(run.id)).steps.invoice.status === "awaiting");
  const parent = await t.engine.get(run.id);
  const childId = parent.steps.invoice.childRunId!;
  assert.ok(childId);
  await waitFor(async () => (await t.engine.get(childId)).steps["cool-off"].status === "sleeping");
  const child = await t.engine.get(childId);
  assert.deepEqual(child.parent, { runId: run.id, step: "invoice" });
  assert.deepEqual(child.input, { total: 42 });
  await waitFor(() => t.engine.stats().activeRuns === 0, "parent and child to wait on disk");
  await t.clock.advance(DAY);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.output, "mailed invoice-42.pdf");
  assert.equal((await t.engine.get(childId)).status, "succeeded");
  // One child only.
  const children = (await t.engine.list({ workflow: "invoice" })).runs;
  assert.equal(children.length, 1);
});

Deno.test("sub-workflows: a failed child fails its step; cancelling the parent cancels the child", async (t) => {
  await using te = await testEngine([billing, invoice]);
  await t.step("failure", async () => {
    const run = await te.engine.start("billing", { total: -1 });
    const done = await te.engine.result(run.id);
    assert.equal(done.status, "failed");
    assert.equal(done.failedStep, "invoice");
    assert.match(done.error!.message, /child run '.*' failed: .*negative total/);
  });
  await t.step("cancel", async () => {
    const run = await te.engine.start("billing", { total: 5 });
    await waitFor(async () => (await te.engine.get(run.id)).steps.invoice.status === "awaiting");
    const childId = (await te.engine.get(run.id)).steps.invoice.childRunId!;
    await waitFor(async () =>
      (await te.engine.get(childId)).steps["cool-off"].status === "sleeping"
    );
    await te.engine.cancel(run.id, { reason: "order withdrawn" });
    await waitFor(
      async () => (await te.engine.get(childId)).status === "cancelled",
      "the child to be cancelled",
    );
    assert.match((await te.engine.get(childId)).error!.message, /parent run cancelled/);
  });
});

Deno.test("sub-workflows: a child workflow the engine is not given is refused at start", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const { createEngine } = await import("../mod.ts");
    await assert.rejects(
      () => createEngine({ kv, workflows: [billing] }),
      /step 'invoice' in workflow 'billing': it runs workflow 'invoice' as a child, which this engine is not given/,
    );
  } finally {
    kv.close();
  }
});

Deno.test("dynamic fan-out: a map runs one durable attempt per item, in order, with its concurrency", async () => {
  let inFlight = 0;
  let most = 0;
  const wf = workflow("fanout", { input: z.object({ n: z.number() }) })
    .step("list", ({ input }) => ({ items: Array.from({ length: input.n }, (_, i) => i) }))
    .map("square", {
      needs: ["list"],
      items: ({ results }) => results.list.items,
      concurrency: 3,
      retry: { maxAttempts: 3, initialDelayMs: 10 },
    }, async ({ item, attempt, index }) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight--;
      if (item === 4 && attempt === 1) throw new Error("flaky");
      return { index, square: item * item };
    })
    .step(
      "sum",
      { needs: ["square"] },
      ({ results }) => results.square.reduce((n, r) => n + r.square, 0),
    );
  await using t = await testEngine([wf]);
  const run = await t.engine.start("fanout", { n: 20 });
  // Item 4's first attempt fails; its retry waits on the fake clock. Move
  // the clock only once that retry is scheduled, and until the run ends.
  await waitFor(
    async () =>
      (await t.engine.history(run.id)).some((e) =>
        e.type === "step" && e.step === "square[4]" && e.to === "waiting"
      ),
    "item 4's retry scheduled",
  );
  for (let i = 0; i < 50 && !isTerminalRun((await t.engine.get(run.id)).status); i++) {
    await t.clock.advance(10);
  }
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.output, Array.from({ length: 20 }, (_, i) => i * i).reduce((a, b) => a + b));
  assert.equal(most, 3);
  const square = done.steps.square;
  assert.deepEqual(square.map, { total: 20, succeeded: 20, failed: 0, running: 0 });
  assert.deepEqual(
    (square.output as { index: number }[]).map((o) => o.index),
    Array.from({ length: 20 }, (_, i) => i),
  );
  // The page shows the map's counts, not one entry per item.
  assert.deepEqual(Object.keys(done.steps), ["list", "square", "sum"]);
  const history = await t.engine.history(run.id);
  const item4 = history.filter((e) => e.type === "step" && e.step === "square[4]").map((e) =>
    e.type === "step" ? e.to : ""
  );
  assert.deepEqual(item4, ["running", "waiting", "running", "succeeded"]);
});

Deno.test("dynamic fan-out: a failed item fails the map, unless it tolerates failures", async (t) => {
  const make = (tolerate: boolean) =>
    workflow(tolerate ? "tolerant" : "strict")
      .map(
        "check",
        {
          items: () => ["a", "b", "c"],
          retry: { maxAttempts: 1 },
          ...(tolerate ? { tolerateFailures: true as const } : {}),
        },
        ({ item }) => {
          if (item === "b") throw new Error(`bad item ${item}`);
          return item.toUpperCase();
        },
      );
  await using te = await testEngine([make(false), make(true)]);
  await t.step("strict", async () => {
    const done = await te.engine.result((await te.engine.start("strict", {})).id);
    assert.equal(done.status, "failed");
    assert.equal(done.failedStep, "check");
    assert.match(
      done.error!.message,
      /Step 'check' failed: item 1 failed after 1 attempt: bad item b/,
    );
  });
  await t.step("tolerant", async () => {
    const done = await te.engine.result((await te.engine.start("tolerant", {})).id);
    assert.equal(done.status, "succeeded");
    const out = done.output as { ok: boolean; value?: string; error?: { message: string } }[];
    assert.deepEqual(out.map((o) => o.ok), [true, false, true]);
    assert.equal(out[0].value, "A");
    assert.match(out[1].error!.message, /bad item b/);
    assert.deepEqual(done.steps.check.map, { total: 3, succeeded: 2, failed: 1, running: 0 });
  });
});

Deno.test("dynamic fan-out: 10,000 items complete, across a restart mid-way, none redone", async () => {
  const ran = new Map<number, number>();
  const wf = workflow("big-map")
    .map(
      "touch",
      { items: () => Array.from({ length: 10_000 }, (_, i) => i), concurrency: 50 },
      ({ item }) => {
        ran.set(item, (ran.get(item) ?? 0) + 1);
        return item % 7;
      },
    )
    .step("count", { needs: ["touch"] }, ({ results }) => results.touch.length);
  await using t = await testEngine([wf], { maxConcurrentSteps: 100 });
  const run = await t.engine.start("big-map", {});
  await waitFor(
    async () => ((await t.engine.get(run.id)).steps.touch.map?.succeeded ?? 0) > 2_000,
    "2,000 items",
    20_000,
  );
  await t.restart();
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.output, 10_000);
  assert.deepEqual(done.steps.touch.map, {
    total: 10_000,
    succeeded: 10_000,
    failed: 0,
    running: 0,
  });
  // Finished items were not redone; at most the ones in flight at the restart ran twice.
  const twice = [...ran.values()].filter((n) => n > 1).length;
  assert.ok(twice <= 50, `${twice} items ran twice`);
  assert.equal(ran.size, 10_000);
  const committed = (await t.engine.history(run.id)).filter((e) =>
    e.type === "step" && e.to === "succeeded" && e.step.startsWith("touch[")
  );
  assert.equal(committed.length, 10_000);
  assert.equal(new Set(committed.map((e) => e.type === "step" && e.step)).size, 10_000);
});

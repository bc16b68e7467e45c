// The first test copies the issue's usage verbatim, async steps without await included.
// deno-lint-ignore-file require-await
import assert from "node:assert/strict";
import { z } from "zod";
import {
  AttemptInterruptedError,
  createEngine,
  EngineClosedError,
  FakeClock,
  InvalidInputError,
  NonRetryableError,
  RetryAfterError,
  RunFinishedError,
  RunNotFoundError,
  type StepContext,
  UnknownWorkflowError,
  workflow,
} from "../mod.ts";
import { deferred, failingCommits, testEngine, waitFor } from "./_helpers.ts";

Deno.test("engine runs the issue's order usage as written, with typed results", async () => {
  const realFetch = globalThis.fetch;
  const charged: string[] = [];
  globalThis.fetch = (input: string | URL | Request) => {
    charged.push(String(input));
    return Promise.resolve(new Response("{}", { status: 200 }));
  };
  try {
    const order = workflow("order", {
      input: z.object({ orderId: z.string(), amount: z.number().positive() }),
    })
      .step("payment", {
        timeoutMs: 2_000,
        retry: {
          maxAttempts: 3,
          initialDelayMs: 50,
          backoffFactor: 2,
          maxDelayMs: 1_000,
          jitter: 0.2,
        },
      }, async ({ input, signal, attempt }) => {
        const res = await fetch(`https://payments.example/charge/${input.orderId}`, { signal });
        if (res.status === 402) throw new NonRetryableError("card declined");
        return { charged: input.amount, attempt };
      })
      .step("inventory", async ({ input }) => ({ available: true, sku: input.orderId }))
      .step("logistics", { concurrency: 5 }, async () => ({ carrier: "post" }))
      .step("dispatch", { needs: ["payment", "inventory", "logistics"] }, async ({ results }) => {
        return { shipped: results.inventory.available, carrier: results.logistics.carrier };
      });
    await using t = await testEngine([order]);
    const run = await t.engine.start("order", { orderId: "A1", amount: 30 }, {
      idempotencyKey: "A1",
    });
    assert.equal(run.created, true);
    const done = await t.engine.result(run.id);
    assert.equal(done.status, "succeeded");
    assert.deepEqual(done.output, { shipped: true, carrier: "post" });
    assert.deepEqual(done.steps.payment.output, { charged: 30, attempt: 1 });
    assert.deepEqual(charged, ["https://payments.example/charge/A1"]);
    assert.deepEqual(Object.keys(done.steps), ["payment", "inventory", "logistics", "dispatch"]);
    const again = await t.engine.start("order", { orderId: "A1", amount: 30 }, {
      idempotencyKey: "A1",
    });
    assert.equal(again.id, run.id);
    assert.equal(again.created, false);
  } finally {
    globalThis.fetch = realFetch;
  }
});

Deno.test("engine runs independent steps in parallel and gives a step its context", async () => {
  const gates = { a: deferred(), b: deferred(), c: deferred() };
  const started: string[] = [];
  let seen: StepContext<{ n: number }, unknown> | undefined;
  const wf = workflow("par", { input: z.object({ n: z.number() }) })
    .step("a", async ({ step }) => {
      started.push(step);
      await gates.a.promise;
      return 1;
    })
    .step("b", async ({ step }) => {
      started.push(step);
      await gates.b.promise;
      return 2;
    })
    .step("c", async ({ step }) => {
      started.push(step);
      await gates.c.promise;
      return 3;
    })
    .step("sum", { needs: ["a", "b", "c"] }, (ctx) => {
      seen = ctx as typeof seen;
      return ctx.results.a + ctx.results.b + ctx.results.c + ctx.input.n;
    });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("par", { n: 10 });
  await waitFor(() => started.length === 3, "three parallel starts");
  assert.equal((await t.engine.get(run.id)).status, "running");
  gates.c.resolve();
  gates.a.resolve();
  gates.b.resolve();
  const done = await t.engine.result(run.id);
  assert.equal(done.output, 16);
  assert.equal(seen!.runId, run.id);
  assert.equal(seen!.attempt, 1);
  assert.equal(seen!.step, "sum");
  assert.equal(seen!.workflow, "par");
  assert.deepEqual(seen!.results, { a: 1, b: 2, c: 3 });
  assert.ok(seen!.signal instanceof AbortSignal);
  assert.equal(typeof seen!.log.info, "function");
});

Deno.test("engine validates input with zod before storing anything", async () => {
  const wf = workflow("v", { input: z.object({ amount: z.number().positive() }) }).step(
    "s",
    () => 1,
  );
  await using t = await testEngine([wf]);
  await assert.rejects(
    () => t.engine.start("v", { amount: -1 }),
    (e: unknown) => {
      assert.ok(e instanceof InvalidInputError);
      assert.equal(e.issues[0].code, "too_small");
      assert.deepEqual(e.issues[0].path, ["amount"]);
      assert.match(e.message, /Invalid input for workflow 'v' at 'amount'/);
      return true;
    },
  );
  await assert.rejects(() => t.engine.start("nope", {}), UnknownWorkflowError);
  assert.equal((await t.engine.list()).runs.length, 0);
  // Only the worker's own registration and heartbeat are stored.
  const stored = await Array.fromAsync(t.kv.list({ prefix: [] }));
  assert.deepEqual(stored.map((e) => e.key[1]).filter((k) => k !== "meta").sort(), [
    "hb",
    "worker",
  ]);
});

Deno.test("engine idempotent start creates one run even for concurrent callers", async () => {
  const wf = workflow("idem").step("s", () => 1);
  await using t = await testEngine([wf]);
  const results = await Promise.all(
    Array.from({ length: 5 }, () => t.engine.start("idem", null, { idempotencyKey: "k" })),
  );
  assert.equal(new Set(results.map((r) => r.id)).size, 1);
  assert.equal(results.filter((r) => r.created).length, 1);
  await t.engine.result(results[0].id);
  const later = await t.engine.start("idem", null, { idempotencyKey: "k" });
  assert.equal(later.id, results[0].id);
  assert.equal(later.status, "succeeded");
  const other = await t.engine.start("idem", null, { idempotencyKey: "k2" });
  assert.notEqual(other.id, later.id);
  assert.equal((await t.engine.list()).runs.length, 2);
});

Deno.test("engine times out an attempt, aborts its signal, and ignores its late result", async () => {
  const late = deferred<string>();
  const signals: AbortSignal[] = [];
  const wf = workflow("slow").step("s", {
    timeoutMs: 1_000,
    retry: { maxAttempts: 2, initialDelayMs: 100, jitter: 0 },
  }, ({ attempt, signal }) => {
    signals.push(signal);
    // Attempt 1 ignores its signal; attempt 2 answers at once.
    return attempt === 1 ? late.promise : "second";
  });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("slow", null);
  await waitFor(() => signals.length === 1, "attempt 1");
  await t.clock.advance(999);
  assert.equal((await t.engine.get(run.id)).steps.s.status, "running");
  await t.clock.advance(1);
  assert.ok(signals[0].aborted);
  assert.equal(signals[0].reason.name, "StepTimeoutError");
  await waitFor(async () => (await t.engine.get(run.id)).steps.s.status === "waiting", "waiting");
  await t.clock.advance(100);
  const done = await t.engine.result(run.id);
  assert.equal(done.steps.s.output, "second");
  late.resolve("first, too late");
  await new Promise((r) => setTimeout(r, 10));
  const after = await t.engine.get(run.id);
  assert.equal(after.steps.s.output, "second");
  assert.equal(after.steps.s.attempts, 2);
  assert.equal(after.steps.s.errors[0].error.name, "StepTimeoutError");
  assert.deepEqual(after.steps.s.errors[0].error.details, {
    step: "s",
    attempt: 1,
    timeoutMs: 1_000,
  });
});

Deno.test("engine retries with exponential backoff on the clock and keeps every error", async () => {
  const attemptsAt: number[] = [];
  const wf = workflow("flaky").step("s", {
    retry: { maxAttempts: 4, initialDelayMs: 100, backoffFactor: 3, maxDelayMs: 500, jitter: 0 },
  }, ({ attempt }) => {
    attemptsAt.push(Date.now());
    if (attempt < 4) throw new Error(`boom ${attempt}`);
    return "ok";
  });
  await using t = await testEngine([wf]);
  const t0 = t.clock.now();
  const run = await t.engine.start("flaky", null);
  const waitingUntil = async (at: number) => {
    await waitFor(async () => {
      const s = (await t.engine.get(run.id)).steps.s;
      return s.status === "waiting" && s.nextAttemptAt === new Date(at).toISOString();
    }, `waiting until +${at - t0}`);
  };
  await waitingUntil(t0 + 100);
  await t.clock.advance(99);
  assert.equal((await t.engine.get(run.id)).steps.s.attempts, 1);
  await t.clock.advance(1);
  await waitingUntil(t0 + 100 + 300);
  await t.clock.advance(300);
  await waitingUntil(t0 + 400 + 500); // 900 is capped at 500
  await t.clock.advance(500);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.steps.s.attempts, 4);
  assert.deepEqual(done.steps.s.errors.map((e) => e.error.message), ["boom 1", "boom 2", "boom 3"]);
  assert.deepEqual(done.steps.s.errors.map((e) => e.attempt), [1, 2, 3]);
});

Deno.test("engine honours RetryAfterError's delay exactly and NonRetryableError at once", async () => {
  const wf = workflow("ra").step("s", {
    retry: { maxAttempts: 5, initialDelayMs: 10, jitter: 0 },
  }, ({ attempt }) => {
    if (attempt === 1) throw new RetryAfterError("rate limited", 7_000);
    throw new NonRetryableError("gave up");
  });
  await using t = await testEngine([wf]);
  const t0 = t.clock.now();
  const run = await t.engine.start("ra", null);
  await waitFor(async () => (await t.engine.get(run.id)).steps.s.status === "waiting", "waiting");
  assert.equal(
    (await t.engine.get(run.id)).steps.s.nextAttemptAt,
    new Date(t0 + 7_000).toISOString(),
  );
  await t.clock.advance(6_999);
  assert.equal((await t.engine.get(run.id)).steps.s.attempts, 1);
  await t.clock.advance(1);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "failed");
  assert.equal(done.steps.s.attempts, 2);
  assert.equal(done.failedStep, "s");
  assert.equal(done.error?.cause?.name, "NonRetryableError");
});

Deno.test("engine fails the run when a step fails for good: aborts, skips, starts nothing", async () => {
  const siblingSignal = deferred<AbortSignal>();
  let childRan = false;
  const wf = workflow("fail")
    .step("bad", { retry: { maxAttempts: 1 } }, () => {
      throw new Error("broken");
    })
    .step("sibling", ({ signal }) => {
      siblingSignal.resolve(signal);
      return new Promise(() => {}); // never settles; must be abandoned
    })
    .step("child", { needs: ["bad"] }, () => {
      childRan = true;
    });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("fail", null);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "failed");
  assert.equal(done.failedStep, "bad");
  assert.match(done.error!.message, /Step 'bad' failed after 1 attempt: broken/);
  assert.equal(done.steps.bad.status, "failed");
  assert.equal(done.steps.sibling.status, "cancelled");
  assert.equal(done.steps.child.status, "skipped");
  assert.ok((await siblingSignal.promise).aborted);
  assert.equal(childRan, false);
  assert.equal(t.engine.stats().runningSteps, 0);
  const history = await t.engine.history(run.id);
  const runEvents = history.filter((e) => e.type === "run").map((e) => e.to);
  assert.deepEqual(runEvents, ["pending", "running", "failed"]);
  assert.ok(history.every((e, i) => e.seq === i && typeof e.at === "number"));
});

Deno.test("engine cancel aborts running steps, starts nothing, and refuses finished runs", async () => {
  const signal = deferred<AbortSignal>();
  let nextRan = false;
  const wf = workflow("cx")
    .step("long", ({ signal: s }) => {
      signal.resolve(s);
      return new Promise(() => {});
    })
    .step("next", { needs: ["long"] }, () => {
      nextRan = true;
    });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("cx", null);
  const s = await signal.promise;
  const cancelled = await t.engine.cancel(run.id, { reason: "customer asked" });
  assert.equal(cancelled.status, "cancelled");
  assert.ok(s.aborted);
  assert.equal(cancelled.steps.long.status, "cancelled");
  assert.equal(cancelled.steps.next.status, "skipped");
  assert.equal(cancelled.error?.message, "customer asked");
  assert.equal((await t.engine.result(run.id)).status, "cancelled");
  await assert.rejects(() => t.engine.cancel(run.id), RunFinishedError);
  await assert.rejects(() => t.engine.cancel("01ARZ3NDEKTSV4RRFFQ69G5FAV"), RunNotFoundError);
  await assert.rejects(() => t.engine.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"), RunNotFoundError);
  assert.equal(nextRan, false);
  assert.equal((await t.engine.list({ status: "cancelled" })).runs[0].id, run.id);
});

Deno.test("engine starts a join step exactly once when its parents finish together", async () => {
  for (let round = 0; round < 20; round++) {
    const gate = deferred();
    let joins = 0;
    const wf = workflow("join")
      .step("a", () => gate.promise.then(() => "a"))
      .step("b", () => gate.promise.then(() => "b"))
      .step("c", () => gate.promise.then(() => "c"))
      .step("j", { needs: ["a", "b", "c"] }, ({ results }) => {
        joins++;
        return results.a + results.b + results.c;
      });
    await using t = await testEngine([wf]);
    const run = await t.engine.start("join", null);
    gate.resolve();
    const done = await t.engine.result(run.id);
    assert.equal(done.output, "abc");
    assert.equal(joins, 1);
    assert.equal(done.steps.j.attempts, 1);
  }
});

Deno.test("engine stores outputs larger than a KV value and refuses oversized ones", async () => {
  const big = "x".repeat(300_000);
  let hugeAttempts = 0;
  const wf = workflow("out")
    .step("big", () => ({ big }))
    .step("len", { needs: ["big"] }, ({ results }) => results.big.big.length);
  const huge = workflow("huge").step("h", { retry: { maxAttempts: 3 } }, () => {
    hugeAttempts++;
    return "y".repeat(2_000);
  });
  const bad = workflow("bad").step("m", () => new Map([[1, 2]]));
  await using t = await testEngine([wf, huge, bad], { maxOutputBytes: 400_000 });
  const run = await t.engine.start("out", null);
  const done = await t.engine.result(run.id);
  assert.equal(done.output, 300_000);
  const engine2 = await t.restart();
  const reread = await engine2.get(run.id);
  assert.equal((reread.steps.big.output as { big: string }).big, big);

  const h = await engine2.start("huge", null);
  const hDone = await engine2.result(h.id);
  assert.equal(hDone.status, "succeeded", "2 KB is under the cap");
  assert.equal(hugeAttempts, 1);

  const m = await engine2.start("bad", null);
  const mDone = await engine2.result(m.id);
  assert.equal(mDone.status, "failed");
  assert.equal(mDone.steps.m.attempts, 1);
  assert.match(mDone.steps.m.error!.message, /output of step 'm'.*not JSON-serializable: a Map/);
});

Deno.test("engine fails an over-cap output without retrying, naming step and size", async () => {
  let attempts = 0;
  const wf = workflow("cap").step("report", { retry: { maxAttempts: 3 } }, () => {
    attempts++;
    return "z".repeat(5_000);
  });
  await using t = await testEngine([wf], { maxOutputBytes: 1_000 });
  const run = await t.engine.start("cap", null);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "failed");
  assert.equal(attempts, 1);
  assert.match(
    done.steps.report.error!.message,
    /step 'report'.*too large: 5002 bytes, limit 1000/,
  );
});

Deno.test("engine holds work beyond the caps and runs it all", async () => {
  let inFlight = 0, maxInFlight = 0, inFlightB = 0, maxB = 0;
  const gates: (() => void)[] = [];
  const wf = workflow("cap")
    .step("a", async () => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise<void>((r) => gates.push(r));
      inFlight--;
    })
    .step("b", { concurrency: 1, needs: ["a"] }, async () => {
      inFlight++;
      inFlightB++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      maxB = Math.max(maxB, inFlightB);
      await new Promise<void>((r) => gates.push(r));
      inFlight--;
      inFlightB--;
    });
  await using t = await testEngine([wf], { maxConcurrentSteps: 3 });
  const runs = await Promise.all(Array.from({ length: 6 }, () => t.engine.start("cap", null)));
  const pending = (await Promise.all(runs.map((r) => t.engine.get(r.id)))).filter((r) =>
    r.status === "pending"
  );
  assert.equal(pending.length, 3, "three runs wait for a slot, durably pending");
  assert.equal(t.engine.stats().queuedSteps, 3);
  const listed = async (status: "pending" | "running") =>
    (await t.engine.list({ workflow: "cap", status })).runs.map((r) => r.id).sort();
  assert.deepEqual(await listed("pending"), pending.map((r) => r.id).sort());
  assert.equal((await t.engine.list({ status: "running", limit: 2 })).runs.length, 2);
  const runningPage = await t.engine.list({ status: "running", limit: 2 });
  const rest = await t.engine.list({
    status: "running",
    limit: 2,
    cursor: runningPage.nextCursor!,
  });
  assert.equal(rest.runs.length, 1);
  assert.deepEqual(
    [...runningPage.runs, ...rest.runs].map((r) => r.id).sort(),
    await listed("running"),
  );
  let released = 0;
  while (released < 12) {
    await waitFor(() => gates.length > 0, "a step to be running");
    gates.shift()!();
    released++;
  }
  for (const r of runs) assert.equal((await t.engine.result(r.id)).status, "succeeded");
  assert.deepEqual(await listed("running"), []);
  assert.equal(maxInFlight, 3);
  assert.equal(maxB, 1);
});

Deno.test("engine resumes after a restart: waits keep their schedule, lost attempts rerun", async () => {
  const calls: string[] = [];
  const hang = deferred();
  const wf = workflow("resume")
    .step(
      "retry",
      { retry: { maxAttempts: 3, initialDelayMs: 5_000, jitter: 0 } },
      ({ attempt }) => {
        calls.push(`retry#${attempt}`);
        if (attempt === 1) throw new Error("first fails");
        return "retried";
      },
    )
    .step("inflight", { retry: { maxAttempts: 3 } }, async ({ attempt }) => {
      calls.push(`inflight#${attempt}`);
      if (attempt === 1) await hang.promise;
      return "rerun";
    })
    .step("end", { needs: ["retry", "inflight"] }, ({ results }) => {
      calls.push("end");
      return `${results.retry}+${results.inflight}`;
    });
  await using t = await testEngine([wf]);
  const t0 = t.clock.now();
  const run = await t.engine.start("resume", null);
  await waitFor(async () => {
    const s = await t.engine.get(run.id);
    return s.steps.retry.status === "waiting" && s.steps.inflight.status === "running";
  }, "one waiting, one in flight");
  await t.clock.advance(2_000);
  const engine2 = await t.restart();
  const mid = await engine2.get(run.id);
  assert.equal(mid.steps.retry.status, "waiting");
  assert.equal(mid.steps.retry.nextAttemptAt, new Date(t0 + 5_000).toISOString());
  await waitFor(() => calls.includes("inflight#2"), "the interrupted attempt to rerun");
  assert.ok(!calls.includes("retry#2"), "the retry waits for its original schedule");
  await t.clock.advance(2_999);
  assert.ok(!calls.includes("retry#2"));
  await t.clock.advance(1);
  const done = await engine2.result(run.id);
  assert.equal(done.output, "retried+rerun");
  assert.deepEqual(calls.filter((c) => c !== "end").sort(), [
    "inflight#1",
    "inflight#2",
    "retry#1",
    "retry#2",
  ]);
  assert.equal(calls.filter((c) => c === "end").length, 1);
  assert.equal(done.steps.inflight.errors[0].error.name, AttemptInterruptedError.name);
  hang.resolve();
});

Deno.test("engine list filters by workflow and status and pages newest first", async () => {
  const a = workflow("a").step("s", () => 1);
  const b = workflow("b").step("s", ({ input }) => {
    if (input === "fail") throw new NonRetryableError("no");
    return 2;
  });
  await using t = await testEngine([a, b]);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await t.engine.start(i % 2 ? "a" : "b", i === 4 ? "fail" : i);
    ids.push(r.id);
    await t.engine.result(r.id);
  }
  const all = await t.engine.list({ limit: 2 });
  assert.deepEqual(all.runs.map((r) => r.id), [ids[4], ids[3]]);
  const page2 = await t.engine.list({ limit: 2, cursor: all.nextCursor! });
  assert.deepEqual(page2.runs.map((r) => r.id), [ids[2], ids[1]]);
  const page3 = await t.engine.list({ limit: 2, cursor: page2.nextCursor! });
  assert.deepEqual(page3.runs.map((r) => r.id), [ids[0]]);
  assert.equal(page3.nextCursor, null);
  const exact = await t.engine.list({ workflow: "b", limit: 3 });
  assert.equal(exact.runs.length, 3);
  assert.equal(exact.nextCursor, null, "a full last page has no cursor");
  assert.deepEqual((await t.engine.list({ workflow: "a" })).runs.map((r) => r.id), [
    ids[3],
    ids[1],
  ]);
  assert.deepEqual((await t.engine.list({ status: "failed" })).runs.map((r) => r.id), [ids[4]]);
  assert.deepEqual(
    (await t.engine.list({ workflow: "b", status: "succeeded" })).runs.map((r) => r.id),
    [ids[2], ids[0]],
  );
  await assert.rejects(
    () => t.engine.list({ workflow: "a", cursor: all.nextCursor! }),
    /not a cursor of this query/,
  );
  await assert.rejects(() => t.engine.list({ limit: 0 }), /'limit' must be an integer/);
});

Deno.test("engine close waits for in-flight steps, then refuses new work", async () => {
  const gate = deferred();
  const wf = workflow("c").step("s", () => gate.promise.then(() => "done"));
  await using t = await testEngine([wf]);
  const run = await t.engine.start("c", null);
  await waitFor(() => t.engine.stats().runningSteps === 1, "running");
  const closing = t.engine.close({ graceMs: 60_000 });
  await assert.rejects(() => t.engine.start("c", null), EngineClosedError);
  gate.resolve();
  await closing;
  const engine2 = await t.restart();
  assert.equal((await engine2.get(run.id)).status, "succeeded");
});

Deno.test("engine events reach subscribers after each commit", async () => {
  const wf = workflow("ev").step("a", () => 1).step("b", { needs: ["a"] }, () => 2);
  await using t = await testEngine([wf]);
  const seen: string[] = [];
  const off = t.engine.subscribe(({ event }) => {
    seen.push(event.type === "run" ? `run:${event.to}` : `${event.step}:${event.to}`);
  });
  const run = await t.engine.start("ev", null);
  await t.engine.result(run.id);
  off();
  assert.deepEqual(seen, [
    "run:pending",
    "a:running",
    "run:running",
    "a:succeeded",
    "b:running",
    "b:succeeded",
    "run:succeeded",
  ]);
});

Deno.test("engine stores a 1 MiB output (the default cap) and a large input across a restart", async () => {
  const mib = 1024 * 1024;
  const text = "o".repeat(mib - 2); // JSON adds the two quotes
  const wf = workflow("large", { input: z.object({ blob: z.string() }) })
    .step("echo", ({ input }) => input.blob.length)
    .step("big", () => text);
  await using t = await testEngine([wf]);
  const blob = "i".repeat(200_000);
  const run = await t.engine.start("large", { blob });
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "succeeded", JSON.stringify(done.error));
  const engine2 = await t.restart();
  const reread = await engine2.get(run.id);
  assert.equal((reread.input as { blob: string }).blob, blob);
  assert.equal(reread.steps.echo.output, 200_000);
  assert.equal((reread.steps.big.output as string).length, mib - 2);
});

Deno.test("engine keeps a step's newest errors within a bounded record", async () => {
  const wf = workflow("noisy").step("s", {
    retry: { maxAttempts: 40, initialDelayMs: 0, jitter: 0 },
  }, ({ attempt }) => {
    throw new Error(`${attempt}:${"e".repeat(1_900)}`);
  });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("noisy", null);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "failed");
  assert.equal(done.steps.s.attempts, 40);
  const errors = done.steps.s.errors;
  assert.ok(errors.length >= 5 && errors.length < 40, `kept ${errors.length}`);
  assert.equal(errors.at(-1)!.attempt, 40, "the newest error is kept");
  const history = await t.engine.history(run.id);
  const failures = history.filter((e) => e.type === "step" && e.error);
  assert.equal(failures.length, 40, "the history keeps every attempt's error");
});

/** A KV handle whose next `failures` commits throw, as a full disk would. */
function flakyKv(kv: Deno.Kv) {
  const state = { failures: 0 };
  const failure = () => {
    if (state.failures === 0) return undefined;
    state.failures--;
    return new Error("disk full (simulated)");
  };
  return { kv: failingCommits(kv, failure), state };
}

Deno.test("engine reloads a run from KV after a failed write, running no attempt twice", async () => {
  const inner = await Deno.openKv(":memory:");
  const { kv, state } = flakyKv(inner);
  const bodies: string[] = [];
  const gate = deferred();
  const wf = workflow("flaky-disk")
    .step("a", async ({ attempt }) => {
      bodies.push(`a#${attempt}`);
      await gate.promise;
      return "a";
    })
    .step("b", async ({ attempt }) => {
      bodies.push(`b#${attempt}`);
      await gate.promise;
      return "b";
    })
    .step("join", { needs: ["a", "b"] }, ({ results }) => {
      bodies.push("join");
      return results.a + results.b;
    });
  const engine = await createEngine({ kv, workflows: [wf], clock: new FakeClock() });
  try {
    const run = await engine.start("flaky-disk", null);
    const waiting = engine.result(run.id);
    await waitFor(() => bodies.length === 2, "both roots running");
    // The batched commit of both results fails, then each one alone.
    state.failures = 3;
    gate.resolve();
    const done = await waiting;
    assert.equal(done.status, "succeeded");
    assert.equal(done.output, "ab");
    assert.equal(done.steps.a.attempts, 2, "the lost result was rerun as a new attempt");
    assert.equal(done.steps.a.errors[0].error.name, "AttemptInterruptedError");
    const counts = new Map<string, number>();
    for (const b of bodies) counts.set(b, (counts.get(b) ?? 0) + 1);
    assert.ok([...counts.values()].every((n) => n === 1), `a body ran twice: ${bodies}`);
    assert.equal(counts.get("join"), 1);
    const history = await engine.history(run.id);
    assert.deepEqual(history.map((e) => e.seq), history.map((_, i) => i), "no history overwritten");
  } finally {
    await engine.close({ graceMs: 0 });
    inner.close();
  }
});

Deno.test("engine refuses a workflow without steps and skips an unreadable run at start", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    await assert.rejects(
      () => createEngine({ kv, workflows: [workflow("empty")] }),
      /Invalid workflow 'empty': it has no steps/,
    );
    const wf = workflow("ok").step("s", () => "fine");
    await kv.set(["weft", "run", "01ARZ3NDEKTSV4RRFFQ69G5FAV"], { not: "a run" });
    await kv.set(["weft", "active", "01ARZ3NDEKTSV4RRFFQ69G5FAV"], true);
    const engine = await createEngine({ kv, workflows: [wf] });
    const run = await engine.start("ok", null);
    assert.equal((await engine.result(run.id)).output, "fine");
    await engine.close();
  } finally {
    kv.close();
  }
});

Deno.test("engine fails a run of hundreds of steps in one commit, history split across keys", async () => {
  let wf = workflow("wide").step("boom", { retry: { maxAttempts: 1 } }, () => {
    throw new Error("x".repeat(1_500));
  }) as unknown as ReturnType<typeof workflow>;
  for (let i = 0; i < 300; i++) {
    wf = wf.step(`s${i}`, { needs: ["boom" as never] }, () => i) as typeof wf;
  }
  await using t = await testEngine([wf]);
  const run = await t.engine.start("wide", null);
  const done = await t.engine.result(run.id);
  assert.equal(done.status, "failed");
  assert.equal(Object.values(done.steps).filter((s) => s.status === "skipped").length, 300);
  const history = await t.engine.history(run.id);
  assert.equal(history.filter((e) => e.type === "step" && e.to === "skipped").length, 300);
});

/** A clock whose time moves only when told and whose timers never fire. */
function frozenClock() {
  let now = Date.UTC(2026, 0, 1);
  return {
    now: () => now,
    setTimeout: () => ({ id: 0 }),
    clearTimeout: () => {},
    advance(ms: number) {
      now += ms;
    },
  };
}

Deno.test("engine retries from the KV queue's sweep when no in-process timer fires", async () => {
  // A clock whose timers never fire: only the queue can bring the retry.
  const frozen = frozenClock();
  const bodies: number[] = [];
  const wf = workflow("swept").step("s", ({ attempt }) => {
    bodies.push(attempt);
    if (attempt === 1) throw new RetryAfterError("later", 100);
    return "second";
  });
  const kv = await Deno.openKv(":memory:");
  const engine = await createEngine({ kv, workflows: [wf], clock: frozen });
  try {
    const run = await engine.start("swept", null);
    await waitFor(async () => (await engine.get(run.id)).steps.s.status === "waiting", "waiting");
    frozen.advance(100);
    const done = await engine.result(run.id);
    assert.equal(done.output, "second");
    assert.deepEqual(bodies, [1, 2]);
  } finally {
    await engine.close({ graceMs: 0 });
    kv.close();
  }
});

Deno.test("engine retries twice from the KV queue's sweeps: a sweep that arrived lets the next be planned", async () => {
  // Timers never fire, so each retry comes from a sweep message; if the
  // engine still counted the first sweep as planned, it would plan none for
  // the second retry, and the run would wait for ever.
  const frozen = frozenClock();
  const bodies: number[] = [];
  const wf = workflow("swept-twice").step("s", ({ attempt }) => {
    bodies.push(attempt);
    if (attempt < 3) throw new RetryAfterError("later", 100);
    return "third";
  });
  const kv = await Deno.openKv(":memory:");
  const engine = await createEngine({ kv, workflows: [wf], clock: frozen });
  try {
    const run = await engine.start("swept-twice", null);
    const attempts = async () => (await engine.get(run.id)).steps.s;
    await waitFor(async () => (await attempts()).status === "waiting", "first wait");
    frozen.advance(100);
    await waitFor(async () => {
      const s = await attempts();
      return s.attempts === 2 && s.status === "waiting";
    }, "second wait");
    frozen.advance(100);
    // Bounded, so that a sweep never planned fails the test instead of hanging it.
    await waitFor(
      async () => (await attempts()).status === "succeeded",
      "third attempt (a second sweep)",
    );
    assert.equal((await engine.get(run.id)).output, "third");
    assert.deepEqual(bodies, [1, 2, 3]);
  } finally {
    await engine.close({ graceMs: 0 });
    kv.close();
  }
});

Deno.test("engine close abandons running attempts without charging them and rejects waiters", async () => {
  const hang = deferred();
  const bodies: number[] = [];
  const wf = workflow("deploy").step("s", { retry: { maxAttempts: 1 } }, async ({ attempt }) => {
    bodies.push(attempt);
    if (attempt === 1) await hang.promise;
    return "after deploy";
  });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("deploy", null);
  const waiting = t.engine.result(run.id).then(() => "resolved", (e: unknown) => e);
  await waitFor(() => bodies.length === 1, "attempt 1 running");
  const engine2 = await t.restart(); // close with a grace of 0 ms, then start again
  assert.ok((await waiting) instanceof EngineClosedError);
  const done = await engine2.result(run.id);
  assert.equal(done.status, "succeeded", JSON.stringify(done.error));
  assert.deepEqual(bodies, [1, 2]);
  assert.match(done.steps.s.errors[0].error.message, /interrupted by engine shut down/);
  hang.resolve();
});

Deno.test("engine waits out a retry delay longer than the KV queue's 30-day limit", async () => {
  const days = 24 * 3600 * 1000;
  const wf = workflow("patient").step("s", { retry: { maxAttempts: 2 } }, ({ attempt }) => {
    if (attempt === 1) throw new RetryAfterError("come back next month", 31 * days);
    return "back";
  });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("patient", null);
  await waitFor(async () => (await t.engine.get(run.id)).steps.s.status === "waiting", "waiting");
  await t.clock.advance(31 * days - 1);
  assert.equal((await t.engine.get(run.id)).steps.s.attempts, 1);
  await t.clock.advance(1);
  const done = await t.engine.result(run.id);
  assert.equal(done.output, "back");
  assert.equal(done.steps.s.attempts, 2);
});

Deno.test("engine close survives a body that finishes while its abandonment is written", async () => {
  let started = 0;
  const wf = workflow("late").step("s", async ({ signal, attempt }) => {
    started++;
    // The first attempt ends as soon as close() abandons it (aborting its
    // signal just before writing the abandonment), while that write is in
    // flight, whatever else close() waited for first.
    if (attempt === 1) await new Promise((resolve) => signal.addEventListener("abort", resolve));
    return "late";
  });
  await using t = await testEngine([wf]);
  const run = await t.engine.start("late", null);
  await waitFor(() => started === 1, "running");
  await t.engine.close({ graceMs: 0 });
  const engine2 = await t.restart();
  const done = await engine2.result(run.id);
  assert.equal(done.status, "succeeded");
  assert.equal(done.steps.s.attempts, 2);
  assert.match(done.steps.s.errors[0].error.message, /interrupted by engine shut down/);
});

Deno.test("engine reload after a failed write does not charge healthy siblings an attempt", async () => {
  const inner = await Deno.openKv(":memory:");
  const { kv, state } = flakyKv(inner);
  const gateA = deferred();
  const gateB = deferred();
  const bodies: string[] = [];
  const wf = workflow("siblings")
    .step("a", async ({ attempt }) => {
      bodies.push(`a#${attempt}`);
      if (attempt === 1) await gateA.promise;
      return "a";
    })
    .step("b", { retry: { maxAttempts: 1 } }, async ({ attempt }) => {
      bodies.push(`b#${attempt}`);
      if (attempt === 1) await gateB.promise;
      return "b";
    });
  const engine = await createEngine({ kv, workflows: [wf], clock: new FakeClock() });
  try {
    const run = await engine.start("siblings", null);
    await waitFor(() => bodies.length === 2, "both running");
    state.failures = 1; // only a's result write fails
    gateA.resolve();
    const done = await engine.result(run.id);
    gateB.resolve();
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.equal(done.steps.b.attempts, 2);
    assert.match(done.steps.b.errors[0].error.message, /reload after a failed write/);
  } finally {
    await engine.close({ graceMs: 0 });
    inner.close();
  }
});

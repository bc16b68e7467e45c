import assert from "node:assert/strict";
import type { Logger } from "@logtape/logtape";
import { Deadlines } from "./attempt.ts";
import { systemClock } from "./clock.ts";
import { CommitBatcher } from "./commit_batcher.ts";
import { keyLayout } from "./keys.ts";
import { newLiveRun } from "./live_run.ts";
import { type AttemptResult, launchAttempt } from "./step_execution.ts";
import { workflow } from "../steps/workflow.ts";

Deno.test("launchAttempt gives every step context one shared log getter, which still builds the step's logger", async () => {
  // deno-lint-ignore no-explicit-any
  const seen: any[] = [];
  const wf = workflow("wf").step("a", (ctx) => {
    seen.push(ctx);
    return (ctx.log as unknown as Logger).category.join(".");
  });
  const step = wf.getStep("a")!;
  using kv = await Deno.openKv(":memory:");
  const options = {
    clock: systemClock,
    batcher: new CommitBatcher(kv),
    keys: keyLayout(),
    maxOutputBytes: 1024,
    deadlines: new Deadlines(systemClock),
    stopped: () => false,
  };
  const results: AttemptResult[] = [];
  for (const id of ["r1", "r2", "r3"]) {
    const live = newLiveRun(wf, {
      record: { id, workflow: "wf", status: "running", createdAt: 0 },
      input: null,
      steps: new Map(),
      results: new Map(),
      nextSeq: 0,
    });
    const running = { attempt: 1, controller: new AbortController(), startedAt: 0, capKey: "wf/a" };
    live.running.set("a", running);
    results.push(
      await new Promise<AttemptResult>((settle) =>
        launchAttempt({ live, step, running }, { ...options, settle: (_, r) => settle(r) })
      ),
    );
  }
  const getters = new Set(seen.map((ctx) => Object.getOwnPropertyDescriptor(ctx, "log")?.get));
  assert.equal(getters.size, 1, "one getter for three contexts");
  assert.ok(results.every((r) => r.ok && r.encoded.value === "weft.step"));
  assert.ok(Object.keys(seen[0]).includes("log"), "log is an own, enumerable property");
  assert.equal({ ...seen[0] }.log.category.join("."), "weft.step", "a spread copy keeps log");
  assert.equal(options.deadlines.size, 0, "every attempt's timeout was dropped");
});

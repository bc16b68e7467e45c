/**
 * The workflows of W7, in a module of their own so that the real server can
 * serve them (`server.ts --workflows bench/backlog_workflows.ts`) and the
 * seed can store a run of the first one. Only `bench/` uses this file.
 *
 * - `w7-backlog`: a step that asks to be retried in an hour. The backlog is
 *   1,000,000 runs of it, waiting on that retry.
 * - `w7-probe`: one step that returns when its body ran (`Date.now()`): the
 *   first run started after the server comes up.
 * - `w7-timer`: a step that asks to be retried after `input.delayMs`, then
 *   returns when its second attempt's body ran: the timer lag.
 *
 * @module
 */
import { RetryAfterError, workflow } from "../mod.ts";

/** The delay every backlog run waits on. */
export const BACKLOG_DELAY_MS = 3_600_000;

/** Written to stderr when a backlog run's step runs, which it never should during a pass. */
export const BACKLOG_BODY_MARK = "w7-backlog body ran";

/** A run waiting on a retry in an hour. */
export const backlogWorkflow = workflow("w7-backlog", {
  defaults: { retry: { maxAttempts: 3 } },
}).step("wait", ({ attempt }) => {
  console.error(`${BACKLOG_BODY_MARK} (attempt ${attempt})`);
  throw new RetryAfterError("waiting an hour", BACKLOG_DELAY_MS);
});

/** Returns the time its body ran. */
export const probeWorkflow = workflow("w7-probe").step("probe", () => ({ at: Date.now() }));

/** Retries once after `input.delayMs`; returns the time the retry's body ran. */
export const timerWorkflow = workflow("w7-timer", {
  defaults: { retry: { maxAttempts: 2 } },
}).step("timer", ({ input, attempt }) => {
  if (attempt === 1) {
    throw new RetryAfterError("timer", (input as { delayMs: number }).delayMs);
  }
  return { at: Date.now() };
});

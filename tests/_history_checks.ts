/** Checks on a run's stored history shared by the crash and multi-process tests. */
import type { HistoryEvent } from "../mod.ts";

/** A step's history events. */
export type StepEvent = Extract<HistoryEvent, { type: "step" }>;

/**
 * The history events of `step`, after checking the two claims every crash
 * test makes of them: attempts 1..`committed` were each recorded running
 * once, in order, and exactly one result was committed, for attempt
 * `committed`. Problems are pushed to `problems`, prefixed with `at`.
 */
export function checkCommittedOnce(
  history: readonly HistoryEvent[],
  step: string,
  committed: number,
  at: string,
  problems: string[],
): StepEvent[] {
  const events = history.filter((e): e is StepEvent => e.type === "step" && e.step === step);
  const started = events.filter((e) => e.to === "running").map((e) => e.attempt);
  const expected = Array.from({ length: committed }, (_, i) => i + 1);
  if (started.join() !== expected.join()) {
    problems.push(`${at}: attempts recorded running ${started.join()}, expected ${expected}`);
  }
  const successes = events.filter((e) => e.to === "succeeded");
  if (successes.length !== 1 || successes[0].attempt !== committed) {
    problems.push(
      `${at}: ${successes.length} succeeded events (attempts ${
        successes.map((e) => e.attempt)
      }), expected one for attempt ${committed}`,
    );
  }
  return events;
}

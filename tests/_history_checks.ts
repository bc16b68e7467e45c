/**
 * What the crash and multi-process tests share: the seeded generator and its
 * seed, reading a side log and a finished KV file, the checks of a step's
 * history, and the failure that lists what they found.
 */
import type { HistoryEvent } from "../mod.ts";
import { itemName, keyLayout } from "../engine/keys.ts";
import type { RunRecord, StepRecord } from "../engine/records.ts";
import { RunStore } from "../engine/store.ts";

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

/**
 * The history events of a step that runs no body (a sleep, a wait), after
 * checking that it entered `parked` once (a restart did not start it again)
 * and then succeeded once, and did nothing else. Problems are pushed to
 * `problems`, prefixed with `at`.
 */
export function checkParkedOnce(
  history: readonly HistoryEvent[],
  step: string,
  parked: "sleeping" | "awaiting",
  at: string,
  problems: string[],
): StepEvent[] {
  const events = history.filter((e): e is StepEvent => e.type === "step" && e.step === step);
  const path = events.map((e) => `${e.from}>${e.to}`).join(",");
  if (path !== `pending>${parked},${parked}>succeeded`) {
    problems.push(`${at}: transitions ${path}, expected pending>${parked},${parked}>succeeded`);
  }
  return events;
}

/**
 * The seed of a test's kill moments: the number in the environment variable
 * `variable` (to replay a failure), else one from the clock. It is printed,
 * with how to replay it, under `test`'s name.
 */
export function seedFromEnv(variable: string, test: string): number {
  const fromEnv = Deno.env.get(variable);
  const seed = fromEnv ? Number(fromEnv) : Date.now() % 2 ** 31;
  console.log(`${test} seed=${seed} (replay with ${variable}=${seed})`);
  return seed;
}

/**
 * Fails the test with the checks' findings: how many, `context` (the seed
 * and what the scenario did), and the first 40.
 */
export function throwViolations(problems: readonly string[], context: string): never {
  throw new Error(
    `${problems.length} violation(s) (${context}):\n` + problems.slice(0, 40).join("\n"),
  );
}

/** How {@linkcode runPlans} names and runs each plan of a scenario. */
export interface PlanSteps<P> {
  /** The plans, in order. */
  plans: readonly P[];
  /** The step's name for a plan. */
  name: (plan: P) => string;
  /** Runs the scenario of a plan, throwing on a violation; returns its notes. */
  run: (plan: P) => Promise<string>;
}

/**
 * Runs a scenario once per plan, each as a step of `t`, printing its notes;
 * stops at the first failed step: one failure says enough, and the next
 * plans would only add time (a hang costs each its whole timeout).
 */
export async function runPlans<P>(t: Deno.TestContext, steps: PlanSteps<P>): Promise<void> {
  for (const plan of steps.plans) {
    const passed = await t.step(steps.name(plan), async () => {
      console.log(`  ${await steps.run(plan)}`);
    });
    if (!passed) break;
  }
}

/** mulberry32: a small seeded generator, enough to vary kill and stop moments. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A side log's JSON lines, in file order; none if there is no file. */
export async function readSideLogLines<T>(path: string): Promise<T[]> {
  let text = "";
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as T);
}

/** A side log's JSON lines grouped by `runId/step`, in file order; empty if there is no file. */
export async function readSideLog<T extends { runId: string; step: string }>(
  path: string,
): Promise<Map<string, T[]>> {
  const byStep = new Map<string, T[]>();
  for (const entry of await readSideLogLines<T>(path)) {
    const key = `${entry.runId}/${entry.step}`;
    byStep.set(key, [...(byStep.get(key) ?? []), entry]);
  }
  return byStep;
}

/** Opens the KV file at `path`, hands it to `read`, and closes it whatever `read` does. */
export async function readKvFile<T>(path: string, read: (kv: Deno.Kv) => Promise<T>): Promise<T> {
  const kv = await Deno.openKv(path);
  try {
    return await read(kv);
  } finally {
    kv.close();
  }
}

/**
 * Every run of a KV file with its steps (a map step's items among them, as
 * `map[index]`), outputs and history, as stored.
 */
export interface StoredRuns {
  runs: RunRecord[];
  /** Ids in the `active` index. */
  active: string[];
  steps: Map<string, Map<string, StepRecord>>;
  outputs: Map<string, Map<string, unknown>>;
  history: Map<string, HistoryEvent[]>;
}

/** Reads every run of an open KV file. */
export async function readStoredRuns(kv: Deno.Kv): Promise<StoredRuns> {
  const keys = keyLayout();
  const store = new RunStore(kv, keys);
  const runs: RunRecord[] = [];
  for await (const entry of kv.list<RunRecord>({ prefix: keys.runs() })) runs.push(entry.value);
  const stored: StoredRuns = {
    runs,
    active: await store.activeRunIds(),
    steps: new Map(),
    outputs: new Map(),
    history: new Map(),
  };
  for (const run of runs) {
    const steps = await store.getSteps(run.id);
    // A map step's items are steps too, named `map[index]` as in history.
    for (const [name, rec] of [...steps]) {
      if (!rec.map) continue;
      for (const [i, item] of await store.getItems(run.id, name)) {
        steps.set(itemName(name, i), item);
      }
    }
    stored.steps.set(run.id, steps);
    stored.outputs.set(run.id, await store.getOutputs(run.id, steps));
    stored.history.set(run.id, await store.getHistory(run.id));
  }
  return stored;
}

/**
 * Crash recovery, proven with real processes: a worker
 * (`fixtures/crash_worker.ts`) runs workflows on a KV file and is killed with
 * SIGKILL at a varied moment; a fresh worker on the same file finishes the
 * work; then this test reads the file and the workers' side log and checks
 * every recovery claim of the engine.
 *
 * The kill moments come from a seeded generator. Set `CRASH_SEED` to replay
 * one (`tests/crash_loop.sh` sets a different one per iteration); the seed in
 * use is printed and is part of every failure message.
 *
 * @module
 */
import {
  checkCommittedOnce,
  readKvFile,
  readSideLog,
  readStoredRuns,
  runPlans,
  seeded,
  seedFromEnv,
  type StoredRuns,
  throwViolations,
} from "./_history_checks.ts";
import { inTempDir } from "./_helpers.ts";
import { FixtureProcess, type LifecycleEvent, type Reach, sleep } from "./_subprocess.ts";
import { createEngine, FakeClock, type HistoryEvent, workflow } from "../mod.ts";
import {
  CRASH_WORKFLOW,
  DAG,
  expectedValue,
  FLAKY_MESSAGE,
  isFlaky,
  LAST_ATTEMPT_WORKFLOW,
  RETRY_WORKFLOW,
  SELF_KILL_WORKFLOW,
  type StartEntry,
  type StepOutput,
} from "./fixtures/crash_workflows.ts";

const RUNS = 50;
const STEPS = Object.keys(DAG);
/**
 * How long a resuming worker may take to finish what is left before the test
 * calls it a hang. It needs 1-2 s; the margin is for a loaded CI machine.
 */
const FINISH_TIMEOUT_MS = 15_000;

const SEED = seedFromEnv("CRASH_SEED", "crash_test");

// ------------------------------------------------------------------ workers

type WorkerEvent =
  | LifecycleEvent
  | { type: "ack"; runId: string; index: number }
  | ({ type: "start" } & StartEntry)
  | { type: "committed"; runId: string; step: string; attempt: number }
  | { type: "waiting"; runId: string; step: string; attempt: number; nextAttemptAt: number };

/** A `fixtures/crash_worker.ts` process in `mode`, on the KV file and side log of `dir`. */
class WorkerProcess extends FixtureProcess<WorkerEvent> {
  constructor(mode: string, dir: string, arg?: string) {
    super("crash_worker.ts", [
      mode,
      `${dir}/weft.kv`,
      `${dir}/side.log`,
      ...(arg === undefined ? [] : [arg]),
    ], { role: mode });
  }

  /** Steps this worker started and has not reported committed or failed. */
  inFlight(): number {
    return this.count("start") - this.count("committed") - this.count("waiting");
  }

  /**
   * Kills the worker once `reach` says it got where the test wanted it;
   * throws if it did not get there or had exited before.
   */
  async killAfter(reach: Reach, context: string): Promise<void> {
    if (reach !== "reached") {
      throw new Error(`The ${this.role} worker ${reach} before the kill (${context})`);
    }
    await this.mustKill(context);
  }

  /** Waits for a normal exit; throws if it takes longer than `timeoutMs` or fails. */
  async exit(timeoutMs: number, describe?: () => Promise<string>): Promise<void> {
    const status = await this.exitWithin(timeoutMs);
    if (status === "timeout") {
      throw new Error(
        `Worker ${this.pid} did not finish within ${timeoutMs} ms (a hang or a lost run)` +
          `\n${await this.stderr()}${describe ? `\n${await describe()}` : ""}`,
      );
    }
    if (!status.success) {
      throw new Error(
        `The ${this.role} worker failed (seed ${SEED}): ${JSON.stringify(status)}` +
          `\n${await this.stderr()}`,
      );
    }
  }
}

// ------------------------------------------------------------------ reading the evidence

/** What the workers left: the stored runs, and more. */
interface Evidence extends StoredRuns {
  /** Side log lines by `runId/step`. */
  starts: Map<string, StartEntry[]>;
}

async function readEvidence(dir: string): Promise<Evidence> {
  const starts = await readSideLog<StartEntry>(`${dir}/side.log`);
  return { ...(await readKvFile(`${dir}/weft.kv`, readStoredRuns)), starts };
}

/** What the checks counted, for the scenario's own expectations. */
interface Tally {
  /** Attempts interrupted by a kill whose body had started, by the killed pid. */
  interruptedStarted: Map<number, number>;
  /** Attempts recorded as running whose body never started before the kill. */
  interruptedUnstarted: number;
}

/**
 * Checks the recovery claims on a finished KV file and side log, pushing
 * every violation onto `problems`; returns what it counted.
 */
function checkDagRuns(
  ev: Evidence,
  acked: ReadonlySet<string>,
  killedPids: ReadonlySet<number>,
  problems: string[],
): Tally {
  const tally: Tally = { interruptedStarted: new Map(), interruptedUnstarted: 0 };
  const byId = new Map(ev.runs.map((r) => [r.id, r]));
  if (ev.active.length > 0) problems.push(`runs still active: ${ev.active.join(", ")}`);
  for (const id of acked) {
    const run = byId.get(id);
    if (!run) problems.push(`acknowledged run ${id} is not in KV (lost)`);
    else if (run.status !== "succeeded") {
      problems.push(`acknowledged run ${id} is ${run.status}, not succeeded`);
    }
  }
  const keysSeen = new Map<string, string>();
  for (const run of ev.runs) {
    if (run.workflow !== CRASH_WORKFLOW) continue;
    const where = `run ${run.id}`;
    if (run.status !== "succeeded") problems.push(`${where} (not acknowledged) is ${run.status}`);
    const other = keysSeen.get(run.idempotencyKey ?? "");
    if (other) problems.push(`${where} and ${other} share idempotency key ${run.idempotencyKey}`);
    keysSeen.set(run.idempotencyKey ?? "", run.id);
    const n = (run.input as { n: number }).n;
    const steps = ev.steps.get(run.id)!;
    const outputs = ev.outputs.get(run.id)!;
    const history = ev.history.get(run.id)!;
    const seqs = history.map((e) => e.seq);
    if (seqs.some((s, i) => s !== i)) problems.push(`${where}: history seqs ${seqs.join(",")}`);
    for (const step of STEPS) {
      const at = `${where} step ${step}`;
      const rec = steps.get(step);
      if (!rec || rec.status !== "succeeded") {
        problems.push(`${at} is ${rec?.status ?? "missing"}`);
        continue;
      }
      const committed = rec.attempts;
      checkCommittedOnce(history, step, committed, at, problems);
      // The side log: each attempt's body started at most once, none after the committed one.
      const lines = ev.starts.get(`${run.id}/${step}`) ?? [];
      const attempts = lines.map((l) => l.attempt);
      if (new Set(attempts).size !== attempts.length) {
        problems.push(
          `${at}: an attempt number's body started twice (attempt@pid: ${
            lines.map((l) => `${l.attempt}@${l.pid}`).join(",")
          }); the first was never recorded as interrupted`,
        );
      }
      if (Math.max(0, ...attempts) !== committed) {
        problems.push(
          `${at}: side log attempts ${attempts.join(",")} but attempt ${committed} committed`,
        );
      }
      const winner = lines.findLast((l) => l.attempt === committed);
      // The committed output is the committed attempt's and saw the parents' committed outputs.
      const out = outputs.get(step) as StepOutput | undefined;
      if (!out) {
        problems.push(`${at}: no committed output`);
        continue;
      }
      if (out.value !== expectedValue(step, n)) {
        problems.push(`${at}: output value ${out.value}, expected ${expectedValue(step, n)}`);
      }
      if (out.attempt !== committed || out.pid !== winner?.pid) {
        problems.push(
          `${at}: output of attempt ${out.attempt} by ${out.pid}, but attempt ${committed} ` +
            `committed and its body ran in ${winner?.pid}`,
        );
      }
      for (const parent of DAG[step]) {
        const parentOut = outputs.get(parent) as StepOutput | undefined;
        const want = { attempt: parentOut?.attempt, pid: parentOut?.pid };
        if (JSON.stringify(out.seen[parent]) !== JSON.stringify(want)) {
          problems.push(
            `${at}: committed output saw ${parent} ${JSON.stringify(out.seen[parent])}, ` +
              `committed is ${JSON.stringify(want)}`,
          );
        }
        for (const line of lines) {
          if (line.seen[parent] !== parentOut?.attempt) {
            problems.push(
              `${at}: attempt ${line.attempt} started with ${parent} attempt ` +
                `${line.seen[parent]}, committed is ${parentOut?.attempt}`,
            );
          }
        }
      }
      // Every attempt before the committed one failed with a recorded error.
      for (let k = 1; k < committed; k++) {
        const errors = rec.errors.filter((e) => e.attempt === k);
        const line = lines.find((l) => l.attempt === k);
        if (errors.length !== 1) {
          problems.push(`${at}: attempt ${k} has ${errors.length} recorded errors, expected 1`);
          continue;
        }
        const error = errors[0].error;
        const flaky = step === "e" && k === 1 && isFlaky(n) && error.message === FLAKY_MESSAGE;
        if (flaky) {
          if (!line) problems.push(`${at}: attempt 1 failed on purpose but never started`);
          continue;
        }
        if (error.name !== "AttemptInterruptedError") {
          problems.push(`${at}: attempt ${k} failed with ${error.name}: ${error.message}`);
          continue;
        }
        if (!line) {
          tally.interruptedUnstarted++;
          continue;
        }
        if (!killedPids.has(line.pid)) {
          problems.push(
            `${at}: attempt ${k} ran in ${line.pid}, which was not killed, yet was interrupted`,
          );
          continue;
        }
        tally.interruptedStarted.set(line.pid, (tally.interruptedStarted.get(line.pid) ?? 0) + 1);
      }
      if (rec.errors.some((e) => e.attempt >= committed)) {
        problems.push(`${at}: an error is recorded for attempt ${committed} or later`);
      }
    }
  }
  return tally;
}

/** The runs a hung worker left unfinished, for the failure message. */
async function describeUnfinished(dir: string): Promise<string> {
  const ev = await readEvidence(dir);
  const lines = ev.active.slice(0, 8).map((id) => {
    const run = ev.runs.find((r) => r.id === id);
    const steps = [...(ev.steps.get(id) ?? new Map()).entries()]
      .map(([name, rec]) => `${name}:${rec.status}/${rec.attempts}`).join(" ");
    return `  ${id} ${run?.status}: ${
      steps || "no step records"
    } (steps without a record are pending)`;
  });
  return `${ev.active.length} runs left unfinished (seed ${SEED}):\n${lines.join("\n")}`;
}

function fail(problems: string[], context: string): never {
  throwViolations(problems, `seed ${SEED}, ${context}`);
}

/** Kills `worker` as soon as `condition` holds (it must, before the worker ends); returns its pid. */
async function killedWhen(
  worker: WorkerProcess,
  condition: (w: WorkerProcess) => boolean,
): Promise<number> {
  await using w = worker;
  await w.killAfter(await w.reach(() => condition(w)), `seed ${SEED}`);
  return w.pid;
}

/** Runs a resumer on `dir` until it has finished every run and exited 0; returns it, gone. */
async function resumed(dir: string): Promise<WorkerProcess> {
  const last = new WorkerProcess("resume", dir);
  await last.exit(FINISH_TIMEOUT_MS);
  return last;
}

// ------------------------------------------------------------------ scenarios

type FirstKill = "starting" | "running" | "late";

interface CrashPlan {
  firstKill: FirstKill;
  killResumer: boolean;
}

async function crashScenario(plan: CrashPlan, random: () => number): Promise<string> {
  return await inTempDir("weft_crash_", async (dir) => {
    const notes: string[] = [`first kill: ${plan.firstKill}`];
    const killed = new Set<number>();
    const acked = new Set<string>();
    const totalSteps = RUNS * STEPS.length;

    // 1. Start runs and kill the worker in the middle of its work.
    {
      await using first = new WorkerProcess("start", dir, String(RUNS));
      let reached: Reach;
      if (plan.firstKill === "starting") {
        const k = 1 + Math.floor(random() * 10);
        reached = await first.reach(() => first.count("ack") >= k);
        await sleep(Math.floor(random() * 20));
        notes.push(`after ack ${k}`);
      } else if (plan.firstKill === "running") {
        const k = Math.floor(RUNS / 2 + random() * RUNS / 2);
        reached = await first.reach(() => first.count("ack") >= k && first.inFlight() > 0);
        const extra = Math.floor(random() * 120);
        await sleep(extra);
        notes.push(`after ack ${k} + ${extra} ms`);
      } else {
        const share = 0.55 + random() * 0.3;
        reached = await first.reach(() =>
          first.count("committed") >= share * totalSteps && first.inFlight() > 0
        );
        notes.push(`after ${Math.round(share * 100)} % of steps committed`);
      }
      await first.killAfter(reached, `seed ${SEED}`);
      killed.add(first.pid);
      for (const e of first.all("ack")) acked.add(e.runId);
      notes.push(`${acked.size} acked, ${first.inFlight()} in flight`);
    }

    // 2. Maybe kill the first resumer too: during boot, recovery, or its work.
    if (plan.killResumer) {
      await using second = new WorkerProcess("resume", dir);
      await second.reach(() => second.count("boot") > 0);
      const delay = Math.floor(random() * 300);
      await sleep(delay);
      const status = await second.kill();
      if (status.signal === "SIGKILL") {
        killed.add(second.pid);
        notes.push(`resumer killed ${delay} ms after boot (ready: ${second.count("ready") > 0})`);
      } else {
        notes.push(`resumer finished before its kill`);
      }
    }

    // 3. A resumer that finishes everything.
    {
      await using last = new WorkerProcess("resume", dir);
      await last.exit(FINISH_TIMEOUT_MS, () => describeUnfinished(dir));
    }

    // 4. The evidence.
    const ev = await readEvidence(dir);
    const problems: string[] = [];
    const tally = checkDagRuns(ev, acked, killed, problems);
    const firstPid = [...killed][0];
    if ((tally.interruptedStarted.get(firstPid) ?? 0) === 0) {
      problems.push(`the first kill interrupted no started step: nothing was tested`);
    }
    notes.push(
      `${ev.runs.length} runs, interrupted bodies ${
        JSON.stringify([...tally.interruptedStarted.values()])
      }, interrupted before the body ${tally.interruptedUnstarted}`,
    );
    if (problems.length > 0) fail(problems, notes.join("; "));
    return notes.join("; ");
  });
}

Deno.test("engine recovers every run after kill -9 and never re-runs a committed step", async (t) => {
  const random = seeded(SEED);
  const plans: CrashPlan[] = [
    { firstKill: "starting", killResumer: false },
    { firstKill: "running", killResumer: true },
    { firstKill: "late", killResumer: random() < 0.5 },
  ];
  await runPlans(t, {
    plans,
    name: (plan) =>
      `kill while ${plan.firstKill}${plan.killResumer ? ", then kill the resumer" : ""}`,
    run: (plan) => crashScenario(plan, random),
  });
});

Deno.test("engine keeps a retry's schedule across kill -9 during the wait", async () => {
  await inTempDir("weft_crash_retry_", async (dir) => {
    // The first is overdue when the restart comes; the others are still in the future.
    const delays = [150, 1_100, 1_600, 2_400];
    const problems: string[] = [];
    const killedPid = await killedWhen(
      new WorkerProcess("retry", dir, delays.join(",")),
      (w) => w.count("waiting") >= delays.length,
    );
    // Widen the gap between "the original schedule" and "a schedule restarted at restart".
    await sleep(300);
    const last = await resumed(dir);
    const resumer = {
      pid: last.pid,
      recoveringAt: last.all("recovering")[0].at,
      readyAt: last.all("ready")[0].at,
    };

    const ev = await readEvidence(dir);
    let futureAtRestart = 0;
    for (const run of ev.runs) {
      if (run.workflow !== RETRY_WORKFLOW) continue;
      const { delayMs } = run.input as { delayMs: number };
      const at = `run ${run.id} (delay ${delayMs} ms)`;
      if (run.status !== "succeeded") problems.push(`${at} is ${run.status}`);
      const flaky = ev.steps.get(run.id)!.get("flaky")!;
      if (flaky.attempts !== 2) problems.push(`${at}: flaky has ${flaky.attempts} attempts, not 2`);
      const errors = flaky.errors.map((e) => `${e.attempt}:${e.error.name}`).join();
      if (errors !== "1:RetryAfterError") problems.push(`${at}: flaky errors ${errors}`);
      const waits = ev.history.get(run.id)!.filter((e) =>
        e.type === "step" && e.step === "flaky" && e.to === "waiting"
      ) as Extract<HistoryEvent, { type: "step" }>[];
      if (waits.length !== 1 || waits[0].nextAttemptAt === undefined) {
        problems.push(`${at}: ${waits.length} waits recorded`);
        continue;
      }
      const due = waits[0].nextAttemptAt;
      const failedAt = flaky.errors[0]?.at ?? NaN;
      if (due - failedAt !== delayMs) problems.push(`${at}: scheduled ${due - failedAt} ms after`);
      const lines = ev.starts.get(`${run.id}/flaky`) ?? [];
      const summary = lines.map((l) => `${l.attempt}@${l.pid}`).join();
      if (summary !== `1@${killedPid},2@${resumer.pid}`) {
        problems.push(`${at}: flaky bodies ran as ${summary}`);
        continue;
      }
      const second = lines[1];
      // Never before the stored schedule, whether it was overdue at the restart or not.
      if (second.at < due) {
        problems.push(`${at}: attempt 2 started at ${second.at}, ${due - second.at} ms before due`);
      }
      // Still in the future once recovery was done: it must keep the stored
      // time, not count the delay again from the restart (that would be at
      // least recoveringAt + delayMs, 300+ ms after the stored time).
      if (due > resumer.readyAt) {
        futureAtRestart++;
        if (second.at >= resumer.recoveringAt + delayMs) {
          problems.push(
            `${at}: attempt 2 started at ${second.at}, on a schedule restarted at the restart ` +
              `(due ${due}, recovery began ${resumer.recoveringAt})`,
          );
        }
      }
      const after = ev.starts.get(`${run.id}/after`) ?? [];
      if (after.length !== 1 || after[0].seen.flaky !== 2) {
        problems.push(`${at}: 'after' ran ${after.length} times, saw ${after[0]?.seen.flaky}`);
      }
    }
    if (ev.runs.length !== delays.length) problems.push(`${ev.runs.length} runs in KV`);
    if (futureAtRestart < 1) {
      problems.push(
        `no schedule was still in the future at the restart: ` +
          `the restart took too long for the test to mean anything`,
      );
    }
    if (problems.length > 0) fail(problems, "retry wait");
  });
});

// The README's rule: an interrupted attempt counts towards `maxAttempts`, so
// a step that kills its process every time cannot loop for ever. A step
// killed during its last allowed attempt therefore fails its run at the
// restart: recorded, terminal, not re-run and not left hanging.
Deno.test("engine fails a run whose step was killed during its last allowed attempt", async () => {
  await inTempDir("weft_crash_last_", async (dir) => {
    const killedPid = await killedWhen(
      new WorkerProcess("last", dir),
      (w) => w.count("start") >= 1,
    );
    await resumed(dir);
    const ev = await readEvidence(dir);
    const run = ev.runs.find((r) => r.workflow === LAST_ATTEMPT_WORKFLOW);
    const step = run && ev.steps.get(run.id)!.get("only");
    const problems: string[] = [];
    if (!run || !step) {
      problems.push("the run is not in KV");
    } else {
      const bodies = (ev.starts.get(`${run.id}/only`) ?? []).map((b) => `${b.attempt}@${b.pid}`);
      const errors = step.errors.map((e) => `${e.attempt}:${e.error.name}`).join();
      if (run.status !== "failed" || run.failedStep !== "only") {
        problems.push(`run is ${run.status}, failed step ${run.failedStep}`);
      }
      if (run.error?.cause?.name !== "AttemptInterruptedError") {
        problems.push(`run error ${JSON.stringify(run.error)}`);
      }
      if (
        step.status !== "failed" || step.attempts !== 1 || errors !== "1:AttemptInterruptedError"
      ) {
        problems.push(`step is ${step.status} after ${step.attempts} attempts, errors ${errors}`);
      }
      if (bodies.join() !== `1@${killedPid}`) problems.push(`bodies ran as ${bodies.join()}`);
      if (ev.active.length > 0) problems.push(`runs still active: ${ev.active.join()}`);
    }
    if (problems.length > 0) fail(problems, "last allowed attempt");
  });
});

// The sharpest moment of "kill -9 at any moment": the process dies as a
// body starts; here the body of a retry (attempt 2). Its start must be on disk
// before its body runs, so that the restart records attempt 2 as interrupted
// and runs attempt 3; otherwise attempt 2 runs twice and its first execution
// leaves no trace.
Deno.test("engine records an attempt killed as its body starts and runs a new one", async () => {
  await inTempDir("weft_crash_selfkill_", async (dir) => {
    let killedPid: number;
    {
      await using first = new WorkerProcess("selfkill", dir);
      const status = await first.exitWithin(FINISH_TIMEOUT_MS);
      if (status === "timeout" || status.signal !== "SIGKILL") {
        throw new Error(`The worker did not kill itself: ${JSON.stringify(status)}`);
      }
      killedPid = first.pid;
    }
    const resumerPid = (await resumed(dir)).pid;
    const ev = await readEvidence(dir);
    const problems: string[] = [];
    const run = ev.runs.find((r) => r.workflow === SELF_KILL_WORKFLOW);
    if (!run) {
      problems.push(`the run is not in KV`);
    } else {
      const step = ev.steps.get(run.id)!.get("q");
      const bodies = (ev.starts.get(`${run.id}/q`) ?? []).map((b) => `${b.attempt}@${b.pid}`);
      const errors = step?.errors.map((e) => `${e.attempt}:${e.error.name}`).join();
      const expected = `1@${killedPid},2@${killedPid},3@${resumerPid}`;
      if (run.status !== "succeeded") problems.push(`run is ${run.status}`);
      if (bodies.join() !== expected) {
        problems.push(`bodies ran as ${bodies.join()} (attempt@pid), expected ${expected}`);
      }
      if (step?.attempts !== 3 || errors !== "1:Error,2:AttemptInterruptedError") {
        problems.push(
          `step has ${step?.attempts} attempts and errors '${errors}', ` +
            `expected 3 and '1:Error,2:AttemptInterruptedError'`,
        );
      }
    }
    if (problems.length > 0) fail(problems, "attempt killed as its body starts");
  });
});

// Recovery resumes runs one by one. A step it finds ready while every slot is
// taken by a run recovered earlier must start once a slot frees. No kill is
// needed to set this up: closing an engine with `graceMs: 0` leaves the same
// records as a kill (a step running, others never started).
Deno.test("engine starts a step that recovery queued behind a busy slot", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_recover_slot_" });
  const path = `${dir}/weft.kv`;
  let firstEngine = true;
  const gate = Promise.withResolvers<void>();
  const bodies: string[] = [];
  const body = async ({ step, signal }: { step: string; signal: AbortSignal }) => {
    bodies.push(step);
    if (firstEngine) {
      // Held until the first engine closes, as if its process died.
      await new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(signal.reason))
      );
    }
    await gate.promise;
    return step;
  };
  const two = workflow("two").step("x", body).step("y", body);
  const chain = workflow("chain").step("a", body).step("b", { needs: ["a"] }, body);
  let kv = await Deno.openKv(path);
  let engine = await createEngine({ kv, workflows: [two, chain], maxConcurrentSteps: 1 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // `two` takes the only slot; `chain`'s first step waits for it.
    const first = await engine.start("two", {});
    const second = await engine.start("chain", {});
    await engine.close({ graceMs: 0 });
    kv.close();
    firstEngine = false;
    bodies.length = 0;
    kv = await Deno.openKv(path);
    // Recovery resumes `two` first (older id): its steps hold the slot until
    // the gate opens, so `chain`'s step is queued for the slot by recovery.
    engine = await createEngine({ kv, workflows: [two, chain], maxConcurrentSteps: 1 });
    gate.resolve();
    const limit = new AbortController();
    timer = setTimeout(() => limit.abort(new Error("not finished within 5 s")), 5_000);
    for (const id of [first.id, second.id]) {
      const done = await engine.result(id, { signal: limit.signal }).catch(async (error) => {
        const snapshot = await engine.get(id);
        const steps = Object.entries(snapshot.steps).map(([n, s]) =>
          `${n}:${s.status}/${s.attempts}`
        );
        throw new Error(
          `run ${snapshot.workflow} ${error.message}: ${snapshot.status}, steps ${
            steps.join(" ")
          }, ` +
            `stats ${JSON.stringify(engine.stats())}`,
        );
      });
      if (done.status !== "succeeded") throw new Error(`run ${done.workflow} is ${done.status}`);
    }
    if (bodies.filter((b) => b === "a" || b === "b").join() !== "a,b") {
      throw new Error(`chain bodies ran as ${bodies.join()}`);
    }
  } finally {
    clearTimeout(timer);
    gate.resolve();
    await engine.close({ graceMs: 0 });
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("engine never starts a running step again when queue wake-ups arrive", async () => {
  const kv = await Deno.openKv(":memory:");
  // Counts this test's wake-ups once the engine's queue handler has settled
  // on them, so reaching the count while the step is blocked also proves the
  // handler does not wait for step work (the queue would redeliver after 5 s).
  let probesDelivered = 0;
  const observed = new Proxy(kv, {
    get(target, property) {
      if (property === "listenQueue") {
        return (handler: (message: unknown) => unknown) =>
          target.listenQueue(async (message) => {
            await handler(message);
            if ((message as { probe?: number }).probe !== undefined) probesDelivered++;
          });
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const clock = new FakeClock();
  const started = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  let bodies = 0;
  const long = workflow("long")
    .step("slow", { timeoutMs: 3_600_000 }, async ({ attempt }) => {
      bodies++;
      started.resolve();
      await release.promise;
      return attempt;
    })
    .step("next", { needs: ["slow"] }, ({ results }) => results.slow);
  const engine = await createEngine({ kv: observed, workflows: [long], clock });
  try {
    const run = await engine.start("long", {});
    await started.promise;
    // Minutes pass for the engine while the step runs: well past the KV
    // queue's 5 s redelivery window and any lease a future engine might add.
    await clock.advance(7 * 60_000);
    const probes = 12;
    for (let i = 0; i < probes; i++) {
      const delay = i % 3 === 0 ? 0 : 10 * i;
      await kv.enqueue({ weft: "wake", runIds: [run.id], probe: i }, { delay });
    }
    await kv.atomic()
      .enqueue({ weft: "wake", runIds: [run.id], probe: probes })
      .enqueue({ weft: "wake", runIds: [run.id], probe: probes + 1 })
      .commit();
    const deadline = Date.now() + 5_000;
    while (probesDelivered < probes + 2 && Date.now() < deadline) await sleep(10);
    if (probesDelivered !== probes + 2) {
      throw new Error(`only ${probesDelivered} of ${probes + 2} wake-ups were delivered`);
    }
    const during = await engine.get(run.id);
    if (
      bodies !== 1 || during.steps.slow.status !== "running" || during.steps.slow.attempts !== 1
    ) {
      throw new Error(
        `while running: ${bodies} bodies, ${during.steps.slow.status}, ` +
          `${during.steps.slow.attempts} attempts`,
      );
    }
    release.resolve();
    const done = await engine.result(run.id);
    const running = (await engine.history(run.id)).filter((e) =>
      e.type === "step" && e.step === "slow" && e.to === "running"
    );
    if (
      done.status !== "succeeded" || done.steps.slow.attempts !== 1 || bodies !== 1 ||
      done.output !== 1 || running.length !== 1
    ) {
      throw new Error(
        `after release: ${done.status}, ${done.steps.slow.attempts} attempts, ${bodies} bodies, ` +
          `output ${done.output}, ${running.length} running transitions`,
      );
    }
  } finally {
    release.resolve();
    await engine.close();
    kv.close();
  }
});

/**
 * Several workers on one KV file, proven with real processes: three worker
 * processes (`fixtures/multi_worker.ts`) share a KV file and run 300 runs of
 * a DAG with a deliberate retry and a step that lasts several heartbeats.
 * One process starts the runs and keeps little capacity of its own, so most
 * runs reach the other two through the due index. One of those two is
 * stopped with SIGSTOP for longer than the death timeout plus the takeover
 * bound while a long step of its own is in flight, then continued; soon after
 * it is back (under a new worker id), the other is killed with SIGKILL,
 * mid-run. In this order each takeover has a live worker with room to take
 * the runs, and the continued worker takes part in the second one. Once
 * every run is terminal the survivors are shut down with SIGTERM, and the
 * test reads the KV file and the side log every body start and end went to,
 * and checks:
 *
 * - every run succeeded, with the outputs its input determines;
 * - each step has one committed result: one `succeeded` event, for the
 *   attempt the record holds, whose body produced the output, reported by
 *   one worker's `subscribe` at most;
 * - no attempt number's body started twice, and no attempt started while an
 *   earlier one of the same step still ran in a worker that was alive and
 *   not yet past the death timeout;
 * - every attempt that did not succeed failed on purpose or was interrupted
 *   by the kill or the stop, never in a worker that was left alone, and the
 *   starting worker was never fenced;
 * - the stopped worker's bodies that were in flight through the stop were
 *   never committed (not in KV, not reported by its own `subscribe`), and it
 *   reported itself fenced, with a new worker id;
 * - the killed worker's and the stopped worker's interrupted steps got a new
 *   attempt in another process within the death timeout plus 2 s of the kill
 *   or the stop (the measured times are printed).
 *
 * The kill and stop moments come from a seeded generator. Set `MULTI_SEED`
 * to replay one; the seed is printed and is part of every failure message.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  checkCommittedOnce,
  readKvFile,
  readSideLog,
  readStoredRuns,
  seeded,
  seedFromEnv,
  type StoredRuns,
  throwViolations,
} from "./_history_checks.ts";
import { type EventOf as FixtureEventOf, FixtureProcess, sleep } from "./_subprocess.ts";
import { TERMINAL_RUN_STATUSES } from "../mod.ts";
import { keyLayout } from "../engine/keys.ts";
import type { RunRecord } from "../engine/records.ts";
import {
  type BodyEntry,
  DAG,
  expectedValue,
  FLAKY_MESSAGE,
  FLAKY_STEP,
  isFlaky,
  LONG_STEP,
  MULTI_WORKFLOW,
  type StepOutput,
  WORKER_SETTINGS,
} from "./fixtures/multi_workflows.ts";

const RUNS = 300;
const STEPS = Object.keys(DAG);
const { workerTimeoutMs } = WORKER_SETTINGS;
/** The stated bound on a takeover: the death timeout plus this. */
const TAKEOVER_SLACK_MS = 2_000;
/**
 * The stop outlasts the takeover bound, so a takeover within the bound comes
 * before the continue: by then the stopped worker was declared dead and
 * fenced, and whatever it does after the continue must be refused.
 */
const STOP_MS = workerTimeoutMs + TAKEOVER_SLACK_MS + 300;
/**
 * A stopped process that holds the SQLite write lock of the KV file blocks
 * every other worker's commits until it continues; nothing can take its runs
 * over then, whatever the engine does. If no other worker commits anything
 * for this long after the stop, the stop is undone and tried again at
 * another moment (a stop this short is far below the death timeout).
 */
const PROBE_MS = 400;
/** A body that ended this long before the stop had its result committed by then. */
const COMMIT_SLACK_MS = 500;
/** The whole test fails with a clear message after this; it needs about 9 s. */
const HARD_DEADLINE_MS = 60_000;
/** How long a worker may take to exit after SIGTERM. */
const EXIT_TIMEOUT_MS = 10_000;

const SEED = seedFromEnv("MULTI_SEED", "multi_worker_test");

// ------------------------------------------------------------------ workers

type WorkerEvent =
  | { type: "boot"; pid: number; at: number }
  | { type: "ready"; workerId: string; at: number }
  | { type: "ack"; runId: string; index: number; at: number }
  | { type: "started"; runs: number; at: number }
  | ({ type: "body" } & BodyEntry)
  | {
    type: "committed";
    runId: string;
    step: string;
    attempt: number;
    workerId: string;
    at: number;
    emittedAt: number;
  }
  | {
    type: "stats";
    workerId: string;
    fenced: number;
    claims: number;
    /** Workers this one declared dead, where the engine counts them. */
    fencedOthers?: number;
    at: number;
  }
  | { type: "closed"; at: number };

type EventOf<T extends WorkerEvent["type"]> = FixtureEventOf<WorkerEvent, T>;

const bodyKey = (e: { runId: string; step: string; attempt: number }) =>
  `${e.runId}/${e.step}/${e.attempt}`;

/**
 * A `fixtures/multi_worker.ts` process in `mode` on the KV file and side log
 * of `dir`, with the bodies it runs and when it last committed.
 */
class WorkerProcess extends FixtureProcess<WorkerEvent> {
  /** Bodies started and not yet ended, by `runId/step/attempt`. */
  readonly running = new Map<string, BodyEntry>();
  /** When this worker last reported a commit (its own clock), 0 before the first. */
  lastCommitAt = 0;

  constructor(role: string, mode: "start" | "work", dir: string, runs?: number) {
    super("multi_worker.ts", [
      mode,
      `${dir}/weft.kv`,
      `${dir}/side.log`,
      ...(runs === undefined ? [] : [String(runs)]),
    ], { role });
  }

  protected override onEvent(event: WorkerEvent): void {
    if (event.type === "body") {
      if (event.phase === "start") this.running.set(bodyKey(event), event);
      else this.running.delete(bodyKey(event));
    } else if (event.type === "committed") {
      this.lastCommitAt = Math.max(this.lastCommitAt, event.emittedAt);
    }
  }

  /** Sends SIGTERM and waits for the exit; kills and throws after `timeoutMs`. */
  async terminate(timeoutMs: number): Promise<Deno.CommandStatus> {
    this.signal("SIGTERM");
    const status = await this.exitWithin(timeoutMs);
    if (status === "timeout") {
      throw new Error(
        `The ${this.role} worker (pid ${this.pid}) did not exit within ${timeoutMs} ms of ` +
          `SIGTERM (seed ${SEED}); ${this.describe()}; bodies in flight: ` +
          `${JSON.stringify([...this.running.values()])}\n${this.stderrTail()}`,
      );
    }
    return status;
  }

  /** One line about what this worker did, for failure messages. */
  describe(): string {
    const stats = this.last("stats");
    return `${this.role} (pid ${this.pid}${this.exited ? ", exited" : ""}): ` +
      `${this.count("ack")} acks, ${this.all("body").filter((b) => b.phase === "start").length} ` +
      `bodies started, ${this.running.size} in flight, ${this.count("committed")} commits; ` +
      `last stats ${JSON.stringify(stats ?? null)}`;
  }
}

// ------------------------------------------------------------------ reading the evidence

/** What the workers left: the stored runs, and more. */
interface Evidence extends StoredRuns {
  /** Entries left in the due index and in the per-worker lease lists. */
  leftovers: string[];
  /** Side-log lines by `runId/step`, starts and ends, in file order. */
  bodies: Map<string, BodyEntry[]>;
}

async function readEvidence(dir: string): Promise<Evidence> {
  const bodies = await readSideLog<BodyEntry>(`${dir}/side.log`);
  // Every worker has exited: this process is the only one on the file.
  return await readKvFile(`${dir}/weft.kv`, async (kv) => {
    const keys = keyLayout();
    const leftovers: string[] = [];
    for (const prefix of [keys.dueIndex(), keys.allOwned()]) {
      for await (const entry of kv.list({ prefix })) leftovers.push(entry.key.join("/"));
    }
    return { ...(await readStoredRuns(kv)), leftovers, bodies };
  });
}

/** Counts runs by status, reading the KV file the workers are writing. */
async function runStatuses(kv: Deno.Kv): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for await (const entry of kv.list<RunRecord>({ prefix: keyLayout().runs() })) {
    counts.set(entry.value.status, (counts.get(entry.value.status) ?? 0) + 1);
  }
  return counts;
}

/** What happened to the workers, as the checks need it. */
interface Timeline {
  acked: ReadonlySet<string>;
  killedPid: number;
  stoppedPid: number;
  killAt: number;
  stopAt: number;
  /**
   * When the first SIGSTOP came. Stops undone because the stopped process
   * held the write lock froze it too: a body that ended before the final
   * stop may have had its result's commit waiting through them.
   */
  firstStopAt: number;
  contAt: number;
  /** The long step that was in flight when the stop came. */
  stopBody: BodyEntry;
  /** What the stopped worker's `subscribe` reported, with its own clock. */
  stoppedCommits: readonly EventOf<"committed">[];
  /** What every worker's `subscribe` reported. */
  allCommits: readonly (EventOf<"committed"> & { pid: number })[];
}

/** What the checks measured, for the report. */
interface Findings {
  killTakeoverMs: number[];
  stopTakeoverMs: number[];
  /** The stopped worker's bodies in flight through the stop. */
  inFlightThroughStop: number;
  /** Of those, bodies that returned a value after the continue (their commit had to be refused). */
  returnedAfterFence: number;
  interruptedUnstarted: number;
  /** Long steps (several heartbeats each) committed at their first attempt, by pid. */
  longStepsKept: Map<number, number>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const range = (xs: number[]) =>
  xs.length === 0
    ? "none"
    : `min ${Math.min(...xs)} / median ${median(xs)} / max ${Math.max(...xs)} ms (${xs.length})`;

/**
 * Checks the KV file and the side log against everything the engine
 * promises here, pushing each violation onto `problems`.
 */
function checkEvidence(ev: Evidence, tl: Timeline, problems: string[]): Findings {
  const found: Findings = {
    killTakeoverMs: [],
    stopTakeoverMs: [],
    inFlightThroughStop: 0,
    returnedAfterFence: 0,
    interruptedUnstarted: 0,
    longStepsKept: new Map(),
  };
  const takeoverBoundMs = workerTimeoutMs + TAKEOVER_SLACK_MS;
  if (ev.active.length > 0) problems.push(`runs still active: ${ev.active.join(", ")}`);
  if (ev.leftovers.length > 0) {
    problems.push(`due or lease entries left behind: ${ev.leftovers.slice(0, 5).join(", ")}`);
  }
  const byId = new Map(ev.runs.map((r) => [r.id, r]));
  for (const id of tl.acked) if (!byId.has(id)) problems.push(`acknowledged run ${id} is lost`);
  if (ev.runs.length !== RUNS) problems.push(`${ev.runs.length} runs in KV, expected ${RUNS}`);
  const seenN = new Set<number>();
  // The stopped worker's bodies in flight through the stop: they ended after the continue, or never.
  const throughStop = new Set<string>();
  const committedBodies = new Set<string>();
  for (const run of ev.runs) {
    const where = `run ${run.id}`;
    const n = (run.input as { n: number }).n;
    if (run.workflow !== MULTI_WORKFLOW) problems.push(`${where} is of workflow ${run.workflow}`);
    if (run.status !== "succeeded") {
      problems.push(`${where} (n=${n}) is ${run.status}: ${JSON.stringify(run.error)}`);
    }
    if (seenN.has(n)) problems.push(`${where}: a second run for n=${n}`);
    seenN.add(n);
    if (run.idempotencyKey !== `multi-${n}`) {
      problems.push(`${where}: idempotency key ${run.idempotencyKey} for n=${n}`);
    }
    const steps = ev.steps.get(run.id)!;
    const outputs = ev.outputs.get(run.id)!;
    const history = ev.history.get(run.id)!;
    const seqs = history.map((e) => e.seq);
    if (seqs.some((s, i) => s !== i)) problems.push(`${where}: history seqs ${seqs.join(",")}`);
    for (const step of STEPS) {
      const at = `${where} (n=${n}) step ${step}`;
      const rec = steps.get(step);
      if (!rec || rec.status !== "succeeded") {
        problems.push(`${at} is ${rec?.status ?? "missing"}`);
        continue;
      }
      const committed = rec.attempts;
      checkCommittedOnce(history, step, committed, at, problems);
      const reported = tl.allCommits.filter((c) => c.runId === run.id && c.step === step);
      if (reported.length > 1 || reported.some((c) => c.attempt !== committed)) {
        problems.push(
          `${at}: workers reported commits ${
            reported.map((c) => `${c.attempt}@${c.pid}`).join(",")
          }, but attempt ${committed} is committed`,
        );
      }
      // The side log: no attempt number's body started twice.
      const lines = ev.bodies.get(`${run.id}/${step}`) ?? [];
      const starts = lines.filter((l) => l.phase === "start").sort((x, y) => x.attempt - y.attempt);
      const endOf = (s: BodyEntry) =>
        lines.find((l) => l.phase === "end" && l.attempt === s.attempt && l.pid === s.pid);
      const attempts = starts.map((s) => s.attempt);
      if (new Set(attempts).size !== attempts.length) {
        problems.push(
          `${at}: an attempt number's body started twice (attempt@pid: ${
            starts.map((l) => `${l.attempt}@${l.pid}`).join(",")
          })`,
        );
      }
      for (const s of starts) {
        const end = endOf(s);
        if (s.pid === tl.stoppedPid && s.at < tl.contAt && (!end || end.at >= tl.contAt)) {
          throughStop.add(bodyKey(s));
          found.inFlightThroughStop++;
          if (end?.outcome === "ok") found.returnedAfterFence++;
        }
      }
      if (Math.max(0, ...attempts) !== committed) {
        problems.push(`${at}: bodies of attempts ${attempts.join(",")}, attempt ${committed} won`);
      }
      const winner = starts.find((s) => s.attempt === committed);
      committedBodies.add(bodyKey({ runId: run.id, step, attempt: committed }));
      const out = outputs.get(step) as StepOutput | undefined;
      if (!out || !winner) {
        problems.push(`${at}: no committed output or no body for attempt ${committed}`);
        continue;
      }
      if (out.value !== expectedValue(step, n)) {
        problems.push(`${at}: output value ${out.value}, expected ${expectedValue(step, n)}`);
      }
      if (out.attempt !== committed || out.pid !== winner.pid) {
        problems.push(
          `${at}: output of attempt ${out.attempt} by ${out.pid}, but attempt ${committed} ` +
            `committed and its body ran in ${winner.pid}`,
        );
      }
      if (endOf(winner)?.outcome !== "ok") {
        problems.push(`${at}: the committed attempt's body did not return a value`);
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
      }
      if (step === LONG_STEP && committed === 1) {
        found.longStepsKept.set(winner.pid, (found.longStepsKept.get(winner.pid) ?? 0) + 1);
      }

      // No attempt started while the one before it still ran in a live worker.
      for (let i = 1; i < starts.length; i++) {
        const prev = starts[i - 1];
        const next = starts[i];
        const prevEnd = endOf(prev)?.at ??
          (prev.pid === tl.killedPid ? tl.killAt : Number.POSITIVE_INFINITY);
        if (next.at >= prevEnd) continue;
        const deadThen = (prev.pid === tl.killedPid && next.at >= tl.killAt) ||
          (prev.pid === tl.stoppedPid && next.at >= tl.stopAt + workerTimeoutMs / 2);
        if (!deadThen) {
          problems.push(
            `${at}: attempt ${next.attempt} started in ${next.pid} at ${next.at} while attempt ` +
              `${prev.attempt} still ran in live worker ${prev.pid} (ended ${prevEnd})`,
          );
        }
      }

      // Every attempt before the committed one failed on purpose or was interrupted.
      for (let k = 1; k < committed; k++) {
        const errors = rec.errors.filter((e) => e.attempt === k);
        const start = starts.find((s) => s.attempt === k);
        if (errors.length !== 1) {
          problems.push(`${at}: attempt ${k} has ${errors.length} recorded errors, expected 1`);
          continue;
        }
        const error = errors[0].error;
        if (step === FLAKY_STEP && k === 1 && isFlaky(n) && error.message === FLAKY_MESSAGE) {
          if (!start) problems.push(`${at}: attempt 1 failed on purpose but never started`);
          continue;
        }
        if (error.name !== "AttemptInterruptedError") {
          problems.push(`${at}: attempt ${k} failed with ${error.name}: ${error.message}`);
          continue;
        }
        if (!start) {
          found.interruptedUnstarted++;
          continue;
        }
        const end = endOf(start);
        const byKill = start.pid === tl.killedPid;
        const byStop = start.pid === tl.stoppedPid && start.at < tl.contAt &&
          (!end || end.at >= tl.firstStopAt - COMMIT_SLACK_MS);
        if (!byKill && !byStop) {
          problems.push(
            `${at}: attempt ${k} ran in ${start.pid} (started ${start.at}, ended ${end?.at}), ` +
              `which was neither killed nor stopped then, yet was interrupted (${error.message}); ` +
              `killed pid ${tl.killedPid} at ${tl.killAt}, stopped pid ${tl.stoppedPid} first at ` +
              `${tl.firstStopAt}, last at ${tl.stopAt}, continued at ${tl.contAt}`,
          );
          continue;
        }
        // The takeover: the next attempt, in another process, within the bound.
        const next = starts.find((s) => s.attempt > k);
        const from = byKill ? tl.killAt : tl.stopAt;
        const what = byKill ? "kill" : "stop";
        if (!next || next.pid === start.pid) {
          problems.push(`${at}: attempt ${k} was interrupted by the ${what} but not taken over`);
          continue;
        }
        const ms = next.at - from;
        (byKill ? found.killTakeoverMs : found.stopTakeoverMs).push(ms);
        if (ms > takeoverBoundMs) {
          problems.push(
            `${at}: attempt ${next.attempt} started ${ms} ms after the ${what}, over the ` +
              `${takeoverBoundMs} ms bound`,
          );
        }
      }
      if (rec.errors.some((e) => e.attempt >= committed)) {
        problems.push(`${at}: an error is recorded for attempt ${committed} or later`);
      }
    }
  }
  if (seenN.size !== RUNS || [...seenN].some((n) => n < 0 || n >= RUNS)) {
    problems.push(`inputs are not 0..${RUNS - 1}: ${seenN.size} distinct`);
  }

  // The stopped worker: what it ran through the stop was never committed.
  if (!throughStop.has(bodyKey(tl.stopBody))) {
    problems.push(
      `the long step in flight at the stop (${bodyKey(tl.stopBody)}) was not in flight ` +
        `through it: the stop did not stop the worker`,
    );
  }
  for (const key of throughStop) {
    if (committedBodies.has(key)) {
      problems.push(
        `${key} ran in the stopped worker through the stop yet is the committed attempt`,
      );
    }
  }
  for (const c of tl.stoppedCommits) {
    if (c.emittedAt >= tl.contAt && throughStop.has(bodyKey(c))) {
      problems.push(
        `the stopped worker reported a commit of ${bodyKey(c)} (as ${c.workerId}) after the ` +
          `continue, though the body ran through the stop and its worker was fenced`,
      );
    }
  }
  if (found.killTakeoverMs.length === 0) {
    problems.push(
      `the kill interrupted no started body: the takeover of a dead worker is untested`,
    );
  }
  if (found.stopTakeoverMs.length === 0) {
    problems.push(
      `the stop interrupted no started body: the takeover of a fenced worker is untested`,
    );
  }
  if (found.longStepsKept.size === 0) {
    problems.push(`no long step committed at its first attempt`);
  }
  return found;
}

// ------------------------------------------------------------------ the scenario

Deno.test("workers on one KV file survive SIGKILL and SIGSTOP: every run once, fenced commits refused", async () => {
  const random = seeded(SEED);
  const testStart = Date.now();
  const deadlineAt = testStart + HARD_DEADLINE_MS;
  const dir = await Deno.makeTempDir({ prefix: "weft_multi_" });
  const notes: string[] = [];
  const workers: WorkerProcess[] = [];
  let pollKv: Deno.Kv | undefined;
  const spawn = (role: string, mode: "start" | "work", runs?: number) => {
    const worker = new WorkerProcess(role, mode, dir, runs);
    workers.push(worker);
    return worker;
  };

  const describe = async () => {
    const lines = workers.map((w) => `  ${w.describe()}`);
    if (pollKv) {
      lines.push(`  runs in KV by status: ${JSON.stringify([...await runStatuses(pollKv)])}`);
    }
    for (const w of workers) {
      const tail = w.stderrTail(8);
      if (tail) lines.push(`  ${w.role} stderr:\n${tail.replace(/^/gm, "    ")}`);
    }
    return lines.join("\n");
  };
  const context = () => `seed ${SEED}; ${notes.join("; ") || "no kill or stop yet"}`;
  /** Polls `condition` until it holds; throws, saying what was awaited, after `timeoutMs` or the hard deadline. */
  const waitFor = async (
    what: string,
    condition: () => boolean | Promise<boolean>,
    timeoutMs: number,
    everyMs = 5,
  ) => {
    const until = Math.min(Date.now() + timeoutMs, deadlineAt);
    while (!(await condition())) {
      for (const w of workers) {
        if (w.exited && w.role !== "killed") {
          throw new Error(
            `The ${w.role} worker exited while waiting for ${what} (${context()})\n${await describe()}`,
          );
        }
      }
      if (Date.now() >= until) {
        const why = until === deadlineAt
          ? `the test's hard deadline of ${HARD_DEADLINE_MS / 1000} s passed`
          : `not within ${timeoutMs} ms`;
        throw new Error(`Waited for ${what}: ${why} (${context()})\n${await describe()}`);
      }
      await sleep(everyMs);
    }
  };

  try {
    // 1. Two workers that only execute, then the one that starts the runs.
    const killed = spawn("killed", "work");
    const stopped = spawn("stopped", "work");
    await waitFor(
      "both executing workers ready",
      () => killed.count("ready") > 0 && stopped.count("ready") > 0,
      20_000,
    );
    const starter = spawn("starter", "start", RUNS);
    await waitFor("the starting worker ready", () => starter.count("ready") > 0, 20_000);
    pollKv = await Deno.openKv(`${dir}/weft.kv`);
    const stoppedIdBefore = stopped.last("ready")!.workerId;

    // 2. SIGSTOP an executing worker while a long step of its own runs, for
    // longer than the death timeout and the takeover bound together.
    const ackTarget = Math.ceil((0.1 + random() * 0.15) * RUNS);
    await waitFor(
      `${ackTarget} runs acknowledged and bodies in flight in both executing workers ` +
        `(if one never runs any, the work is not shared)`,
      () =>
        starter.count("ack") >= ackTarget && killed.running.size > 0 && stopped.running.size > 0,
      20_000,
    );
    await sleep(Math.floor(random() * 150));
    let stop: { at: number; body: BodyEntry } | undefined;
    let firstStopAt: number | undefined;
    for (let tries = 1; !stop; tries++) {
      const fresh = () =>
        [...stopped.running.values()].find((b) => b.step === LONG_STEP && b.at >= Date.now() - 100);
      await waitFor(
        "a long step starting in the worker to stop",
        () => fresh() !== undefined,
        10_000,
      );
      const body = fresh()!;
      const at = Date.now();
      firstStopAt ??= at;
      stopped.signal("SIGSTOP");
      const others = [starter, killed];
      const unblocked = await (async () => {
        while (Date.now() < at + PROBE_MS) {
          if (others.some((w) => w.lastCommitAt > at + 20)) return true;
          await sleep(5);
        }
        return false;
      })();
      if (unblocked) {
        stop = { at, body };
        break;
      }
      stopped.signal("SIGCONT");
      notes.push(`stop ${tries} undone: no commit anywhere for ${PROBE_MS} ms (KV write lock)`);
      if (tries === 3) {
        throw new Error(
          `Three stops in a row blocked every other worker's commits (${context()}): the ` +
            `stopped process held the KV file's write lock each time\n${await describe()}`,
        );
      }
      await sleep(200);
    }
    notes.push(
      `SIGSTOP after ack ${starter.count("ack")}, during ${stop.body.step} attempt ` +
        `${stop.body.attempt} of n=${stop.body.n}`,
    );
    await sleep(stop.at + STOP_MS - Date.now());
    const contAt = Date.now();
    stopped.signal("SIGCONT");
    notes.push(`SIGCONT after ${contAt - stop.at} ms`);

    // 3. The continued worker learns it was fenced, and works again under a new id.
    await waitFor(
      "the continued worker to report itself fenced",
      () => (stopped.last("stats")?.fenced ?? 0) >= 1,
      5_000,
    );
    const learned = stopped.all("stats").find((s) => s.fenced >= 1)!;

    // 4. SIGKILL the other executing worker, mid-run. The starter is left
    // alone: its acknowledgements all come from a live process, so every
    // run acknowledged must be in KV, and the kill hits executions only.
    await sleep(Math.floor(random() * 300));
    await waitFor("a body in flight in the worker to kill", () => killed.running.size > 0, 10_000);
    const extraMs = Math.floor(random() * 40);
    await sleep(extraMs);
    const killedInFlight = killed.running.size;
    const killAt = Date.now();
    await killed.mustKill(`seed ${SEED}`);
    notes.push(
      `SIGKILL ${killAt - contAt} ms after SIGCONT, after ack ${starter.count("ack")}, ` +
        `${killedInFlight} bodies in flight`,
    );

    // 5. Every run ends.
    await waitFor("every run acknowledged", () => starter.count("started") > 0, 20_000);
    await waitFor(
      `all ${RUNS} runs terminal in KV`,
      async () => {
        const counts = await runStatuses(pollKv!);
        return TERMINAL_RUN_STATUSES.reduce((sum, s) => sum + (counts.get(s) ?? 0), 0) === RUNS;
      },
      30_000,
      100,
    );
    pollKv.close();
    pollKv = undefined;

    // 6. Shut the survivors down.
    for (const w of [starter, stopped]) {
      const status = await w.terminate(Math.min(EXIT_TIMEOUT_MS, deadlineAt - Date.now()));
      assert.ok(
        status.success && w.count("closed") === 1,
        `the ${w.role} worker did not close cleanly (seed ${SEED}): ${JSON.stringify(status)}\n` +
          w.stderrTail(),
      );
    }
    const finishedMs = Date.now() - testStart;

    // 7. The evidence.
    const ev = await readEvidence(dir);
    const tl: Timeline = {
      acked: new Set(starter.all("ack").map((a) => a.runId)),
      killedPid: killed.pid,
      stoppedPid: stopped.pid,
      killAt,
      stopAt: stop.at,
      firstStopAt: firstStopAt ?? stop.at,
      contAt,
      stopBody: stop.body,
      stoppedCommits: stopped.all("committed"),
      allCommits: [starter, killed, stopped].flatMap((w) =>
        w.all("committed").map((c) => ({ ...c, pid: w.pid }))
      ),
    };
    const problems: string[] = [];
    const found = checkEvidence(ev, tl, problems);
    const stoppedIdAfter = stopped.last("stats")!.workerId;
    if (stoppedIdAfter === stoppedIdBefore) {
      problems.push(`the stopped worker kept its worker id ${stoppedIdBefore} after the fence`);
    }
    const fencedTimes = stopped.last("stats")!.fenced;
    if (fencedTimes !== 1) {
      problems.push(
        `the stopped worker was fenced once but learned it ${fencedTimes} times ` +
          `(each time it registers again: one process, several worker ids)`,
      );
    }
    // Only two workers died: the killed one, and the stopped one's first id.
    const declaredDead = workers.map((w) => w.last("stats")?.fencedOthers);
    if (declaredDead.every((n) => n !== undefined)) {
      const total = declaredDead.reduce((sum, n) => sum! + n!, 0)!;
      if (total > 2) {
        problems.push(
          `the workers declared ${total} workers dead (${
            workers.map((w, i) => `${w.role} ${declaredDead[i]}`).join(", ")
          }); only the killed worker and the stopped worker's first id died`,
        );
      }
    }
    const starterStats = starter.last("stats")!;
    if (starterStats.fenced !== 0) {
      problems.push(
        `the starting worker, never disturbed, was fenced ${starterStats.fenced} times`,
      );
    }
    const claims = workers.map((w) =>
      `${w.role} ${w.last("stats")?.claims ?? "?"} claims/${
        w.all("body").filter((b) => b.phase === "start").length
      } bodies`
    ).join(", ");
    console.log(
      [
        `  ${notes.join("; ")}`,
        `  all runs terminal and workers closed after ${finishedMs} ms; ${claims}`,
        `  takeover after SIGKILL: ${range(found.killTakeoverMs)}`,
        `  takeover after SIGSTOP: ${
          range(found.stopTakeoverMs)
        } (death timeout ${workerTimeoutMs} ms)`,
        `  stopped worker learned it was fenced ${learned.at - contAt} ms after SIGCONT ` +
        `(${stoppedIdBefore} -> ${stoppedIdAfter}); ${found.inFlightThroughStop} of its bodies ` +
        `ran through the stop and ${found.returnedAfterFence} returned a value after the fence`,
        `  interrupted before their body started: ${found.interruptedUnstarted}; long steps ` +
        `committed at attempt 1 (lease kept through 3-6 heartbeats): ${
          workers.map((w) => `${w.role} ${found.longStepsKept.get(w.pid) ?? 0}`).join(", ")
        }`,
      ].join("\n"),
    );
    if (problems.length > 0) throwViolations(problems, context());
  } finally {
    for (const w of workers) await w.kill();
    pollKv?.close();
    await Deno.remove(dir, { recursive: true });
  }
});

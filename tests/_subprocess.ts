/**
 * A worker program of `tests/fixtures/` run as a child Deno process, for the
 * tests about processes (`crash_test.ts`, `control_flow_crash_test.ts`,
 * `multi_worker_test.ts`): its stdout is read as JSON lines into `events`,
 * its stderr kept for failure messages, and it is killed, signalled or
 * waited for. Each test subclasses {@linkcode FixtureProcess} with its
 * fixture's events and commands.
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** The project root: the fixtures run from there, with its `deno.json`. */
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const FIXTURES = fileURLToPath(new URL("fixtures/", import.meta.url));

/** One line of a fixture's stdout: a JSON object with a `type`. */
export interface FixtureEvent {
  /** What happened (`boot`, `ready`, `ack`, ...: each fixture names its own). */
  type: string;
}

/**
 * What `crash_worker.ts` and `control_flow_worker.ts` print as they start
 * (`boot`, `recovering` once the KV file is open and `createEngine` begins,
 * `ready` once it returned) and as they end (`finished`, with the statuses
 * of the runs they waited for).
 */
export type LifecycleEvent =
  | { type: "boot"; pid: number; at: number }
  | { type: "recovering"; at: number }
  | { type: "ready"; at: number }
  | { type: "finished"; runs: number; statuses: string[] };

/** The events of `E` whose type is `T`. */
export type EventOf<E extends FixtureEvent, T extends E["type"]> = Extract<E, { type: T }>;

/**
 * How a wait for a condition on the events ended: it held, stdout ended
 * first (the process is gone), or the time ran out.
 */
export type Reach = "reached" | "ended" | "timeout";

/** Options of {@linkcode FixtureProcess}. */
export interface FixtureProcessOptions {
  /** What the process is in the test (`first`, `resume`, `killed`...), for messages. */
  role: string;
  /** Whether stdin is piped, for {@linkcode FixtureProcess.send}. @default {false} */
  stdin?: boolean;
}

/** Sleeps `ms` of real time (none if negative): a test of processes waits for them. */
export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * `deno run -A --config deno.json tests/fixtures/<fixture> <args>` from the
 * project root, spawned by the constructor.
 */
export class FixtureProcess<E extends FixtureEvent> implements AsyncDisposable {
  /** What the process is in the test. */
  readonly role: string;
  /** Every line of stdout so far, parsed, in order. */
  readonly events: E[] = [];
  readonly #counts = new Map<string, number>();
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  readonly #reading: Promise<void>;
  readonly #stderrReading: Promise<void>;
  readonly #waiters = new Set<() => void>();
  #stderr = "";
  #stdoutEnded = false;
  #exited = false;

  constructor(fixture: string, args: readonly string[], options: FixtureProcessOptions) {
    this.role = options.role;
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", `${ROOT}deno.json`, `${FIXTURES}${fixture}`, ...args],
      cwd: ROOT,
      stdin: options.stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child.status.then(() => this.#exited = true);
    this.#stdin = options.stdin ? this.#child.stdin.getWriter() : undefined;
    this.#reading = this.#read();
    this.#stderrReading = this.#readStderr();
  }

  /** The process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** How many events of `type` it printed so far. */
  count(type: E["type"]): number {
    return this.#counts.get(type) ?? 0;
  }

  /** Its events of `type` so far, in order. */
  all<T extends E["type"]>(type: T): EventOf<E, T>[] {
    return this.events.filter((e): e is EventOf<E, T> => e.type === type);
  }

  /** Its last event of `type` so far. */
  last<T extends E["type"]>(type: T): EventOf<E, T> | undefined {
    return this.events.findLast((e): e is EventOf<E, T> => e.type === type);
  }

  /** Called with each event as it is read, before any wait looks at it. */
  protected onEvent(_event: E): void {}

  /** Writes `command` as one JSON line to stdin; a process that is gone ignores it. */
  async send(command: Record<string, unknown>): Promise<void> {
    if (!this.#stdin) throw new TypeError(`The ${this.role} process has no stdin to write to`);
    const line = new TextEncoder().encode(JSON.stringify(command) + "\n");
    await this.#stdin.write(line).catch(() => {});
  }

  /**
   * Resolves `"reached"` as soon as `condition` holds (it is checked after
   * every line of stdout), `"ended"` if stdout ends first, `"timeout"` after
   * `timeoutMs` (by default, never).
   */
  async reach(condition: () => boolean, timeoutMs?: number): Promise<Reach> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const reach = await new Promise<Reach>((resolve) => {
      const check = () => {
        if (condition()) resolve("reached");
        else if (this.#stdoutEnded) resolve("ended");
        else return;
        this.#waiters.delete(check);
      };
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.#waiters.delete(check);
          resolve("timeout");
        }, timeoutMs);
      }
      this.#waiters.add(check);
      check();
    });
    clearTimeout(timer);
    return reach;
  }

  /** Sends `signal`; a process that has exited ignores it. */
  signal(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch (error) {
      if (!this.#exited) throw error;
    }
  }

  /** Sends SIGKILL (if still running; a stopped process dies too) and waits until it is gone. */
  async kill(): Promise<Deno.CommandStatus> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited: the status says how.
    }
    return await this.#settle();
  }

  /**
   * Kills the process and waits until it is gone; throws, with `context` and
   * its stderr, if it had exited before: a kill that killed nothing tests
   * nothing.
   */
  async mustKill(context: string): Promise<void> {
    const status = await this.kill();
    if (status.signal !== "SIGKILL") {
      throw new Error(
        `The ${this.role} worker (pid ${this.pid}) ended before its kill (${context}): ${
          JSON.stringify(status)
        }\n${await this.stderr()}`,
      );
    }
  }

  /**
   * Waits for the process to exit by itself and returns how; after
   * `timeoutMs` (by default, never) kills it and returns `"timeout"`.
   */
  async exitWithin(timeoutMs?: number): Promise<Deno.CommandStatus | "timeout"> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      if (timeoutMs !== undefined) timer = setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const status = await Promise.race([this.#child.status, timedOut]);
    clearTimeout(timer);
    if (status === "timeout") await this.kill();
    else await this.#settle();
    return status;
  }

  /** Everything it wrote to stderr, once stderr has ended (the process is gone). */
  async stderr(): Promise<string> {
    await this.#stderrReading;
    return this.#stderr;
  }

  /** The last `lines` lines of stderr so far, the process running or not. */
  stderrTail(lines = 15): string {
    return this.#stderr.trimEnd().split("\n").slice(-lines).join("\n");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
  }

  async #read(): Promise<void> {
    const decoder = new TextDecoder();
    let buffer = "";
    for await (const chunk of this.#child.stdout) {
      buffer += decoder.decode(chunk, { stream: true });
      for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
        const line = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        if (!line.trim()) continue;
        const event = JSON.parse(line) as E;
        this.events.push(event);
        this.#counts.set(event.type, this.count(event.type) + 1);
        this.onEvent(event);
        for (const w of this.#waiters) w();
      }
    }
    this.#stdoutEnded = true;
    for (const w of this.#waiters) w();
  }

  async #readStderr(): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of this.#child.stderr) {
      this.#stderr += decoder.decode(chunk, { stream: true });
    }
  }

  /** Waits until the process and both its pipes have ended. */
  async #settle(): Promise<Deno.CommandStatus> {
    await this.#stdin?.close().catch(() => {});
    const status = await this.#child.status;
    await this.#reading;
    await this.#stderrReading;
    return status;
  }
}

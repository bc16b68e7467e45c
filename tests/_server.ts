/** A `server.ts` child process (a server on a real port, or a worker), for end-to-end tests. */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

/** The project root. */
export const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** The command of `deno task serve`, as `deno.json` has it (permissions included). */
export const SERVE: string[] = JSON.parse(
  await Deno.readTextFile(new URL("../deno.json", import.meta.url)),
).tasks.serve.split(" ").slice(1);
const STARTUP_DEADLINE_MS = 30_000;

/** Collects a stream's text until it ends, so the child never blocks on a full pipe. */
export async function drain(stream: ReadableStream<Uint8Array>, onText: (text: string) => void) {
  const decoder = new TextDecoder();
  for await (const chunk of stream) onText(decoder.decode(chunk, { stream: true }));
}

interface Output {
  stdout: string;
  stderr: string;
}

/** A JSON log line as LogTape's JSON Lines formatter writes it. */
export interface LogLine {
  "@timestamp": string;
  level: string;
  message: string;
  logger: string;
  properties: Record<string, unknown>;
}

/** Every complete line of stdout, each parsed as JSON: a line that is not JSON fails the test. */
export function logLines(stdout: string): LogLine[] {
  const complete = stdout.slice(0, stdout.lastIndexOf("\n") + 1);
  return complete.split("\n").filter((l) => l !== "").map((line) => {
    try {
      return JSON.parse(line) as LogLine;
    } catch {
      throw new Error(`a line of stdout is not JSON: ${line}`);
    }
  });
}

/** The start record of a server (`url` set) or a worker (`workerId` set), once written. */
export function startRecord(stdout: string, field: "url" | "workerId"): LogLine | undefined {
  return logLines(stdout).find((r) => r.logger === "weft.server" && field in r.properties);
}

/** A server (or worker) child process, killed on dispose if still running. */
export class ServerProcess implements AsyncDisposable {
  readonly #url: URL | undefined;
  readonly #child: Deno.ChildProcess;
  readonly #drained: Promise<unknown>;
  readonly #out: Output;
  #status?: Deno.CommandStatus;

  private constructor(
    child: Deno.ChildProcess,
    drained: Promise<unknown>,
    out: Output,
    url: URL | undefined,
  ) {
    this.#child = child;
    this.#drained = drained;
    this.#out = out;
    this.#url = url;
  }

  /** The address the server listens on. A worker has none: it throws. */
  get url(): URL {
    if (!this.#url) throw new TypeError("A worker (--worker) listens on no address");
    return this.#url;
  }

  /** Everything the server printed to stdout so far. */
  get stdout(): string {
    return this.#out.stdout;
  }

  /** Everything the server printed to stderr so far. */
  get stderr(): string {
    return this.#out.stderr;
  }

  /**
   * Starts `server.ts` with `args` and resolves once it prints its start
   * record: with a `url` for a server, a `workerId` for a worker (`--worker`
   * in `args`).
   */
  static async start(args: string[]): Promise<ServerProcess> {
    const field = args.includes("--worker") ? "workerId" : "url";
    const child = new Deno.Command(Deno.execPath(), {
      args: [...SERVE, ...args],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const out: Output = { stdout: "", stderr: "" };
    const listening = Promise.withResolvers<LogLine>();
    const drained = Promise.all([
      drain(child.stdout, (text) => {
        out.stdout += text;
        // The start record: stdout is JSON Lines (see `logLines`).
        const started = startRecord(out.stdout, field);
        if (started) listening.resolve(started);
      }),
      drain(child.stderr, (text) => out.stderr += text),
    ]).finally(() => listening.reject(new Error(`server exited: ${out.stderr}`)));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error("server did not start in time")),
        STARTUP_DEADLINE_MS,
      );
    });
    try {
      const { properties } = await Promise.race([listening.promise, deadline]);
      const url = field === "url" ? new URL(properties.url as string) : undefined;
      return new ServerProcess(child, drained, out, url);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has exited already: that is why it never listened.
      }
      await child.status;
      await drained.catch(() => {});
      throw new Error(`${(error as Error).message}\nstderr: ${out.stderr}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Starts a server on a free port of 127.0.0.1 over the KV file `kvPath`, with `args` too. */
  static serve(kvPath: string, args: string[] = []): Promise<ServerProcess> {
    return ServerProcess.start(["--port", "0", "--kv", kvPath, ...args]);
  }

  /** Requests `path` of the server. */
  fetch(path: string, init?: RequestInit): Promise<Response> {
    return fetch(new URL(path, this.url), init);
  }

  /** POSTs `body` to `path` of the server as JSON. */
  post(path: string, body: unknown): Promise<Response> {
    return this.fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  }

  /** Sends `signal` and resolves with the exit status once the process ended. */
  async stop(signal: Deno.Signal): Promise<Deno.CommandStatus> {
    this.#child.kill(signal);
    return await this.exit();
  }

  /** Sends `signal` without waiting. */
  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Resolves with the exit status once the process ended by itself. */
  async exit(): Promise<Deno.CommandStatus> {
    this.#status = await this.#child.status;
    await this.#drained.catch(() => {});
    return this.#status;
  }

  /** Whether the process is still running (it has not exited yet). */
  async running(): Promise<boolean> {
    const status = await Promise.race([
      this.#child.status,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 0)),
    ]);
    return status === undefined;
  }

  async [Symbol.asyncDispose]() {
    if (!this.#status) await this.stop("SIGKILL");
  }
}

/** The JSON body of a response, after checking its status. */
export async function json(res: Response, status: number) {
  const text = await res.text();
  assert.equal(res.status, status, text);
  return JSON.parse(text);
}

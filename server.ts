/**
 * `deno task serve`: one process that runs the engine on a local KV file and
 * serves the HTTP API for the workflows exported by the given modules.
 *
 * ```sh
 * deno task serve --port 8080 --workflows workflows/ --workflows ./more/billing.ts
 * ```
 * import assert from "node:assert/strict";
 *
 * Every flag has an environment variable (see `--help`); flags win. The
 * environment is read in one place, {@linkcode readEnv}, only when this file
 * is run: importing it has no effects.
 *
 * @module
 */
import { statfs } from "node:fs/promises";
import { dirname, isAbsolute, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { getLogger } from "@logtape/logtape";
import type { Hono } from "hono";
import {
  type AnyWorkflow,
  createEngine,
  type Engine,
  InvalidArgumentError,
  isWorkflow,
} from "./mod.ts";
import { createApp } from "./http/app.ts";
import { DEFAULT_BODY_TIMEOUT_MS, DEFAULT_MAX_BODY_BYTES } from "./http/body.ts";
import {
  CLIENT_ADDRESS_HEADER,
  DEFAULT_HEADER_TIMEOUT_MS,
  startFrontDoor,
} from "./http/front_door.ts";
import { DEFAULT_MIN_FREE_BYTES } from "./engine/storage.ts";
import { openKvRetrying } from "./engine/open_kv.ts";
import {
  configureLogging,
  loggingOptionsFrom,
  mountObservability,
  type Observability,
} from "./observability/mod.ts";

/** Everything the server needs, resolved from flags, environment and defaults. */
export interface ServerConfig {
  /** The port; 0 picks a free one. @default {8000} */
  port: number;
  /** The interface to bind. @default {"127.0.0.1"} */
  hostname: string;
  /** The KV file; its folder is created. @default {"data/weft.sqlite3"} */
  kvPath: string;
  /** Modules or folders of modules whose exported workflows are served. @default {["workflows/"]} */
  workflowPaths: string[];
  /** The bearer token every route but `/healthz` requires. @default {undefined} */
  token?: string;
  /** Largest request body, in bytes. @default {1048576} */
  maxBodyBytes: number;
  /** How long shutdown waits for steps in flight. @default {10000} */
  graceMs: number;
  /** Whether 500 responses carry error details. @default {false} */
  debug: boolean;
  /** Execute steps only, serving no HTTP (`deno task worker`). @default {false} */
  worker?: boolean;
  /** Free bytes kept on the KV's disk; below them no new work is taken. @default {67108864} */
  minFreeBytes?: number;
  /** Without a token, host names accepted besides loopback ones. @default {[]} */
  allowedHosts?: string[];
  /** How long a connection may take to send its request head. @default {10000} */
  headerTimeoutMs?: number;
  /** How long a request body may take to arrive. @default {30000} */
  bodyTimeoutMs?: number;
}

interface FlagSpec {
  env?: string;
  arg: string;
  help: string;
}

const FLAGS: Record<string, FlagSpec> = {
  port: { env: "WEFT_PORT", arg: "<n>", help: "port to listen on; 0 picks a free one (8000)" },
  hostname: { env: "WEFT_HOSTNAME", arg: "<host>", help: "interface to bind (127.0.0.1)" },
  kv: { env: "WEFT_KV", arg: "<path>", help: "KV file, created if missing (data/weft.sqlite3)" },
  workflows: {
    env: "WEFT_WORKFLOWS",
    arg: "<path>",
    help: "module or folder of modules to serve; repeatable; env: comma-separated (workflows/)",
  },
  token: {
    env: "WEFT_TOKEN",
    arg: "<secret>",
    help: "require 'Authorization: Bearer <secret>' (prefer the env var: flags show in ps)",
  },
  "max-body-bytes": {
    env: "WEFT_MAX_BODY_BYTES",
    arg: "<n>",
    help: `largest request body (${DEFAULT_MAX_BODY_BYTES})`,
  },
  "grace-ms": {
    env: "WEFT_GRACE_MS",
    arg: "<ms>",
    help: "on SIGINT/SIGTERM, how long steps in flight may finish (10000)",
  },
  "min-free-bytes": {
    env: "WEFT_MIN_FREE_BYTES",
    arg: "<n>",
    help: `free space kept on the KV's disk; below it new runs get 503 (${DEFAULT_MIN_FREE_BYTES})`,
  },
  "allowed-hosts": {
    env: "WEFT_ALLOWED_HOSTS",
    arg: "<a,b>",
    help: "without a token, Host names answered besides loopback ones; * for any",
  },
  "header-timeout-ms": {
    env: "WEFT_HEADER_TIMEOUT_MS",
    arg: "<ms>",
    help: `close connections that send no full request head in time (${DEFAULT_HEADER_TIMEOUT_MS})`,
  },
  "body-timeout-ms": {
    env: "WEFT_BODY_TIMEOUT_MS",
    arg: "<ms>",
    help: `answer 408 to request bodies that do not arrive in time (${DEFAULT_BODY_TIMEOUT_MS})`,
  },
  debug: { env: "WEFT_DEBUG", arg: "", help: "show error messages and stacks in 500 responses" },
  worker: {
    env: "WEFT_WORKER",
    arg: "",
    help: "execute steps only, without HTTP; several processes may share one KV file",
  },
  "log-format": {
    env: "WEFT_LOG_FORMAT",
    arg: "<json|pretty>",
    help: "log lines on stdout (json)",
  },
  "log-level": { env: "WEFT_LOG_LEVEL", arg: "<level>", help: "lowest level logged (info)" },
  help: { arg: "", help: "print this help" },
};

/** The environment variables the server reads. */
export const ENV_VARS: readonly string[] = Object.values(FLAGS).flatMap((f) => f.env ?? []);

/**
 * The usage text of `--help`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { usage } from "./server.ts";
 * assert.ok(usage().includes("--port"));
 * ```
 */
export function usage(): string {
  const lines = Object.entries(FLAGS).map(([name, f]) => {
    const flag = `--${name}${f.arg ? ` ${f.arg}` : ""}`.padEnd(26);
    return `  ${flag} ${f.help}${f.env ? ` [${f.env}]` : ""}`;
  });
  return [
    "Usage: deno task serve [options]",
    "",
    "Runs the Weft engine and its HTTP API for the workflows exported by the given modules.",
    "",
    ...lines,
  ].join("\n");
}

/** A problem with flags or environment: print it with the usage hint, exit 2. */
export class UsageError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** A problem starting the server, such as a workflow module that fails to load: exit 1. */
export class StartupError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "StartupError";
  }
}

function integer(name: string, value: string, min: number, max: number): number {
  const n = /^[0-9]+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(
      `Cannot start as '--${name}' must be an integer from ${min} to ${max}: current value is ${value}`,
    );
  }
  return n;
}

/**
 * Resolves the configuration from command-line arguments and environment
 * variables (flags win), or returns `"help"` for `--help`.
 *
 * @throws {UsageError} on an unknown flag or a bad value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseConfig } from "./server.ts";
 * const config = parseConfig(["--port", "0"], { WEFT_TOKEN: "s3cret" });
 * assert.ok(config !== "help" && config.port === 0 && config.token === "s3cret");
 * ```
 */
export function parseConfig(
  args: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ServerConfig | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        port: { type: "string" },
        hostname: { type: "string" },
        kv: { type: "string" },
        workflows: { type: "string", multiple: true },
        token: { type: "string" },
        "max-body-bytes": { type: "string" },
        "grace-ms": { type: "string" },
        "min-free-bytes": { type: "string" },
        "allowed-hosts": { type: "string" },
        "header-timeout-ms": { type: "string" },
        "body-timeout-ms": { type: "string" },
        debug: { type: "boolean" },
        worker: { type: "boolean" },
        "log-format": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return "help";
  const pick = (name: string): string | undefined => {
    const flag = (values as Record<string, unknown>)[name];
    if (typeof flag === "string") return flag;
    const fromEnv = FLAGS[name].env ? env[FLAGS[name].env!] : undefined;
    return fromEnv === undefined || fromEnv === "" ? undefined : fromEnv;
  };
  const envWorkflows = env.WEFT_WORKFLOWS?.split(",").map((p) => p.trim()).filter(Boolean);
  const workflowPaths = values.workflows ?? envWorkflows ?? [];
  const token = values.token ?? env.WEFT_TOKEN;
  if (token !== undefined && token.trim() === "") {
    throw new UsageError(
      "Cannot start as '--token' is empty: set a secret, or unset it to serve without auth",
    );
  }
  const hostname = pick("hostname") ?? "127.0.0.1";
  const debugEnv = env.WEFT_DEBUG?.toLowerCase();
  const workerEnv = env.WEFT_WORKER?.toLowerCase();
  return {
    port: integer("port", pick("port") ?? "8000", 0, 65535),
    hostname,
    kvPath: pick("kv") ?? "data/weft.sqlite3",
    workflowPaths: workflowPaths.length > 0 ? workflowPaths : ["workflows/"],
    token,
    maxBodyBytes: integer(
      "max-body-bytes",
      pick("max-body-bytes") ?? String(DEFAULT_MAX_BODY_BYTES),
      1,
      1024 ** 3,
    ),
    graceMs: integer("grace-ms", pick("grace-ms") ?? "10000", 0, 3_600_000),
    minFreeBytes: integer(
      "min-free-bytes",
      pick("min-free-bytes") ?? String(DEFAULT_MIN_FREE_BYTES),
      0,
      Number.MAX_SAFE_INTEGER,
    ),
    allowedHosts: (pick("allowed-hosts") ?? "").split(",").map((h) => h.trim()).filter(Boolean),
    headerTimeoutMs: integer(
      "header-timeout-ms",
      pick("header-timeout-ms") ?? String(DEFAULT_HEADER_TIMEOUT_MS),
      1,
      3_600_000,
    ),
    bodyTimeoutMs: integer(
      "body-timeout-ms",
      pick("body-timeout-ms") ?? String(DEFAULT_BODY_TIMEOUT_MS),
      1,
      3_600_000,
    ),
    debug: values.debug ?? (debugEnv === "1" || debugEnv === "true"),
    worker: values.worker ?? (workerEnv === "1" || workerEnv === "true"),
  };
}

/** Workflows found in modules, with the file each came from. */
export interface LoadedWorkflows {
  /** The workflows, in the order found. */
  workflows: AnyWorkflow[];
  /** The file (relative to the working directory) each workflow came from, by name. */
  files: Map<string, string>;
}

const isModule = (name: string) =>
  name.endsWith(".ts") && !name.endsWith(".d.ts") && !/[._]test\.ts$/.test(name);

async function modulesOf(
  path: string,
  cwd: string,
): Promise<{ file: string; explicit: boolean }[]> {
  const abs = resolve(cwd, path);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(abs);
  } catch (error) {
    throw new StartupError(`Cannot load workflows from ${path}: ${(error as Error).message}`);
  }
  if (!info.isDirectory) return [{ file: abs, explicit: true }];
  const files: string[] = [];
  for await (const entry of Deno.readDir(abs)) {
    if (entry.isFile && isModule(entry.name)) files.push(resolve(abs, entry.name));
  }
  return files.sort().map((file) => ({ file, explicit: false }));
}

/**
 * Imports every module named (a folder means every `.ts` module directly in
 * it, test files aside) and collects the {@linkcode Workflow} instances they
 * export.
 *
 * @throws {StartupError} naming the file, when a module fails to load (a
 * syntax error, a `WorkflowDefinitionError` thrown while defining a
 * workflow), when a file named explicitly exports no workflow, when two
 * modules export different workflows of the same name, or when none is found.
 */
export async function loadWorkflows(
  paths: readonly string[],
  cwd: string = Deno.cwd(),
): Promise<LoadedWorkflows> {
  const workflows: AnyWorkflow[] = [];
  const files = new Map<string, string>();
  const show = (file: string) => {
    const rel = relative(cwd, file);
    return rel.startsWith("..") || isAbsolute(rel) ? file : rel;
  };
  for (const path of paths) {
    for (const { file, explicit } of await modulesOf(path, cwd)) {
      let mod: Record<string, unknown>;
      try {
        mod = await import(pathToFileURL(file).href);
      } catch (error) {
        const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        throw new StartupError(`Cannot load workflows from ${show(file)}: ${message}`, {
          cause: error,
        });
      }
      const found = Object.values(mod).filter((v): v is AnyWorkflow => isWorkflow(v));
      if (found.length === 0 && explicit) {
        throw new StartupError(
          `Cannot load workflows from ${show(file)}: it exports no workflow built with workflow()`,
        );
      }
      for (const wf of found) {
        if (workflows.includes(wf)) continue;
        const other = files.get(wf.name);
        if (other !== undefined) {
          throw new StartupError(
            `Cannot serve workflow '${wf.name}' twice: it is exported by ${other} and ${
              show(file)
            }`,
          );
        }
        workflows.push(wf);
        files.set(wf.name, show(file));
      }
    }
  }
  if (workflows.length === 0) {
    throw new StartupError(
      `Cannot start as no workflow is exported by ${
        paths.join(", ")
      }: export one built with workflow()`,
    );
  }
  return { workflows, files };
}

const log = getLogger(["weft", "server"]);

/** What the start line of a server or a worker says, as fields of its log record. */
export interface StartRecord {
  /** The URL the server listens on; absent for a worker. */
  url?: string;
  /** The worker's id; absent for a server. */
  workerId?: string;
  /** The KV file. */
  kvPath: string;
  /** The workflows served, with the file each came from. */
  workflows: { name: string; file: string }[];
  /** Whether the HTTP API requires a token; absent for a worker. */
  tokenRequired?: boolean;
}

/**
 * Writes the start line as one info record under `["weft", "server"]`, so
 * that in JSON mode it is a JSON line like every other line of stdout.
 */
function logStart(line: string, record: StartRecord): void {
  // The line is the whole message: its braces are not placeholders.
  log.info(line.replaceAll("{", "{{").replaceAll("}", "}}"), { ...record });
}

/** A started server. */
export interface RunningServer {
  /** The URL it listens on. */
  url: URL;
  /** The app it serves. */
  app: Hono;
  /** The engine behind it. */
  engine: Engine;
  /** Stops accepting requests, lets steps in flight finish (grace), closes the KV. */
  shutdown(): Promise<void>;
  /**
   * Cuts a shutdown's grace period short: the steps still running are
   * written back uncharged, as when the grace period ends.
   */
  hurry(): void;
}

function urlHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

/**
 * Loads the workflows, opens the KV (creating its folder), starts the engine
 * (which resumes unfinished runs) and listens. `onListen` gets the start line
 * and its fields; by default they are logged (see {@linkcode StartRecord}).
 *
 * @throws {StartupError} when workflows fail to load or the KV cannot open.
 */
export async function startServer(
  config: ServerConfig,
  onListen: (line: string, record: StartRecord) => void = logStart,
): Promise<RunningServer> {
  const { workflows, files } = await loadWorkflows(config.workflowPaths);
  const { kv, engine } = await openEngine(config, workflows);
  const release = () => kv.close();
  const closing = new AbortController();
  let observability: Observability | undefined;
  const app = createApp({
    engine,
    token: config.token,
    maxBodyBytes: config.maxBodyBytes,
    bodyTimeoutMs: config.bodyTimeoutMs,
    allowedHosts: config.allowedHosts,
    // Set by the front door, which drops any copy the client sent; only it
    // can reach the private socket the app is served on.
    clientAddress: (c) => c.req.header(CLIENT_ADDRESS_HEADER) ?? "unknown",
    debug: config.debug,
    shutdownSignal: closing.signal,
    onUnexpectedError: (error) =>
      console.error("Unexpected error while handling a request:", error),
    mount: (app) => {
      observability = mountObservability(app, { engine, signal: closing.signal });
    },
  });
  // The app is served on a Unix socket in a private folder; the public port
  // is the front door, which times request heads (Deno.serve has no such
  // timeout) and passes connections on.
  const socketDir = await Deno.makeTempDir({ prefix: "weft_http_" });
  const socketPath = `${socketDir}/http.sock`;
  let server: Deno.HttpServer<Deno.UnixAddr> | undefined;
  let front: ReturnType<typeof startFrontDoor>;
  try {
    const ready = Promise.withResolvers<void>();
    server = Deno.serve({
      transport: "unix",
      path: socketPath,
      onListen: () => ready.resolve(),
    }, app.fetch);
    await ready.promise;
    front = startFrontDoor({
      hostname: config.hostname,
      port: config.port,
      upstreamPath: socketPath,
      headerTimeoutMs: config.headerTimeoutMs,
      onError: (error) => console.error("Front door error:", error),
    });
  } catch (error) {
    await server?.shutdown().catch(() => {});
    await engine.close({ graceMs: 0 });
    release();
    await Deno.remove(socketDir, { recursive: true }).catch(() => {});
    throw new StartupError(
      `Cannot listen on ${config.hostname}:${config.port}: ${(error as Error).message}`,
      { cause: error },
    );
  }
  const url = new URL(`http://${urlHost(front.addr.hostname)}:${front.addr.port}/`);
  const served = workflows.map((wf) => `${wf.name} (${files.get(wf.name)})`).join(", ");
  const auth = config.token !== undefined
    ? "bearer token required"
    : config.hostname === "127.0.0.1" || config.hostname === "localhost" ||
        config.hostname === "::1"
    ? `no token: bound to ${config.hostname} only, without auth`
    : `no token: WARNING anyone who can reach ${config.hostname} can start and cancel runs`;
  onListen(`Weft listening on ${url} · KV ${config.kvPath} · workflows: ${served} · ${auth}`, {
    url: url.href,
    kvPath: config.kvPath,
    workflows: workflows.map((wf) => ({ name: wf.name, file: files.get(wf.name)! })),
    tokenRequired: config.token !== undefined,
  });

  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    stopping ??= (async () => {
      closing.abort();
      front.stopAccepting();
      await server!.shutdown();
      await front.close();
      await Deno.remove(socketDir, { recursive: true }).catch(() => {});
      observability?.close();
      await engine.close();
      release();
    })();
  const hurry = () => void engine.close({ graceMs: 0 });
  return { url, app, engine, shutdown, hurry };
}

/** Why opening the KV may have failed, when its disk is short of space; else "". */
async function lowSpaceHint(config: ServerConfig): Promise<string> {
  if (config.kvPath === ":memory:") return "";
  try {
    const s = await statfs(dirname(resolve(config.kvPath)));
    const free = Number(s.bavail) * Number(s.bsize);
    const min = config.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    return free < min
      ? ` (its disk has ${free} bytes free, below --min-free-bytes ${min}: free some space)`
      : "";
  } catch {
    return "";
  }
}

/** Opens the KV (creating its folder) and starts an engine on it. */
async function openEngine(
  config: ServerConfig,
  workflows: AnyWorkflow[],
): Promise<{ kv: Deno.Kv; engine: Engine }> {
  let kv: Deno.Kv;
  try {
    if (config.kvPath !== ":memory:") {
      await Deno.mkdir(dirname(resolve(config.kvPath)), { recursive: true });
    }
    kv = await openKvRetrying(config.kvPath);
  } catch (error) {
    throw new StartupError(
      `Cannot open the KV file ${config.kvPath}: ${(error as Error).message}${await lowSpaceHint(
        config,
      )}`,
      { cause: error },
    );
  }
  try {
    const minFreeBytes = config.minFreeBytes ?? DEFAULT_MIN_FREE_BYTES;
    // A quarter of the reserve, at most 8 MiB, is kept as a file to delete on a full disk.
    const reserveBytes = Math.min(8 * 1024 * 1024, Math.floor(minFreeBytes / 4));
    const storage = config.kvPath === ":memory:" ? { minFreeBytes } : {
      path: dirname(resolve(config.kvPath)),
      minFreeBytes,
      ...(reserveBytes > 0
        ? { reserveFile: { path: `${resolve(config.kvPath)}.reserve`, bytes: reserveBytes } }
        : {}),
    };
    return {
      kv,
      engine: await createEngine({ kv, workflows, shutdownGraceMs: config.graceMs, storage }),
    };
  } catch (error) {
    kv.close();
    throw new StartupError(
      `Cannot start the engine: ${(error as Error).message}${await lowSpaceHint(config)}`,
      { cause: error },
    );
  }
}

/** A worker process: an engine that executes steps and serves no HTTP. */
export interface RunningWorker {
  /** The engine. */
  engine: Engine;
  /** Lets steps in flight finish (grace), gives the rest back, closes the KV. */
  shutdown(): Promise<void>;
  /** Cuts a shutdown's grace period short (see {@linkcode RunningServer.hurry}). */
  hurry(): void;
}

/**
 * Starts a worker: loads the workflows, opens the KV and starts an engine that
 * claims and executes due work beside the other processes on the same KV.
 * `onReady` gets the start line and its fields; by default they are logged.
 *
 * @throws {StartupError} when workflows fail to load or the KV cannot open.
 */
export async function startWorker(
  config: ServerConfig,
  onReady: (line: string, record: StartRecord) => void = logStart,
): Promise<RunningWorker> {
  const { workflows, files } = await loadWorkflows(config.workflowPaths);
  const { kv, engine } = await openEngine(config, workflows);
  const served = workflows.map((wf) => `${wf.name} (${files.get(wf.name)})`).join(", ");
  onReady(`Weft worker ${engine.workerId} · KV ${config.kvPath} · workflows: ${served}`, {
    workerId: engine.workerId,
    kvPath: config.kvPath,
    workflows: workflows.map((wf) => ({ name: wf.name, file: files.get(wf.name)! })),
  });
  let stopping: Promise<void> | undefined;
  const shutdown = () =>
    stopping ??= (async () => {
      await engine.close();
      kv.close();
    })();
  return { engine, shutdown, hurry: () => void engine.close({ graceMs: 0 }) };
}

/** Reads the server's environment variables: the only place `Deno.env` is read. */
export function readEnv(): Record<string, string | undefined> {
  return Object.fromEntries(ENV_VARS.map((name) => [name, Deno.env.get(name)]));
}

async function main(): Promise<number> {
  let config: ServerConfig | "help";
  let logging;
  try {
    const env = readEnv();
    config = parseConfig(Deno.args, env);
    logging = loggingOptionsFrom(Deno.args, {
      format: env.WEFT_LOG_FORMAT || undefined,
      level: env.WEFT_LOG_LEVEL || undefined,
    });
  } catch (error) {
    if (!(error instanceof UsageError) && !(error instanceof InvalidArgumentError)) throw error;
    console.error(`${error.message}\nRun with --help to see the options.`);
    return 2;
  }
  if (config === "help") {
    console.log(usage());
    return 0;
  }
  await configureLogging(logging);
  let server: RunningServer | RunningWorker;
  try {
    server = config.worker ? await startWorker(config) : await startServer(config);
  } catch (error) {
    if (!(error instanceof StartupError)) throw error;
    console.error(error.message);
    return 1;
  }
  const stop = Promise.withResolvers<number>();
  let signalled = false;
  const onSignal = () => {
    if (signalled) {
      // A second signal while shutting down (a double Ctrl-C): the grace
      // period ends now, but the steps still running are written back
      // uncharged before the process exits. Only SIGKILL is a crash.
      console.error("Second signal: ending the grace period now");
      server.hurry();
      return;
    }
    signalled = true;
    server.shutdown().then(() => stop.resolve(0), (error) => {
      console.error("Shutdown failed:", error);
      stop.resolve(1);
    });
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    try {
      Deno.addSignalListener(signal, onSignal);
    } catch {
      // SIGTERM is not available on Windows.
    }
  }
  return await stop.promise;
}

if (import.meta.main) {
  Deno.exit(await main());
}

/**
 * How the benchmark starts the processes it measures: with the V8 flags
 * that `deno task serve` and `deno task worker` run the engine with, read
 * from `deno.json` so that the two cannot drift apart. A workload marked
 * `v8Defaults` runs with none, to show what an application that embeds the
 * engine without them gets. Only `bench/` imports this file.
 *
 * @module
 */

const DENO_JSON = new URL("../deno.json", import.meta.url);

/**
 * The `--v8-flags=…` arguments that a task's `deno run` command line gives
 * Deno itself: those between `run` and the script, in order.
 *
 * @throws {Error} when the command sets V8 flags in a way read here would
 * get wrong: a quoted value, or `DENO_V8_FLAGS` in the command.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { v8FlagsOf } from "./_runtime.ts";
 * assert.deepEqual(
 *   v8FlagsOf("deno run --v8-flags=--max-semi-space-size=4 --allow-net server.ts --v8-flags=x"),
 *   ["--v8-flags=--max-semi-space-size=4"],
 * );
 * assert.deepEqual(v8FlagsOf("deno run server.ts"), []);
 * assert.throws(() => v8FlagsOf('deno run --v8-flags="--a --b" server.ts'), /quoted/);
 * ```
 */
export function v8FlagsOf(command: string): string[] {
  if (command.includes("DENO_V8_FLAGS")) {
    throw new Error(`Cannot read V8 flags from a task that sets DENO_V8_FLAGS: ${command}`);
  }
  const args = command.trim().split(/\s+/);
  const run = args.indexOf("run");
  if (args[0] !== "deno" || run < 0) return [];
  const flags: string[] = [];
  // Deno's own options come before the script; what follows is the script's.
  for (const arg of args.slice(run + 1)) {
    if (!arg.startsWith("-")) break;
    if (!arg.startsWith("--v8-flags=")) continue;
    if (/["']/.test(arg)) {
      throw new Error(`Cannot read a quoted --v8-flags value from a task: ${arg}`);
    }
    flags.push(arg);
  }
  return flags;
}

/**
 * The V8 flags of `deno task serve`, as `deno run` arguments.
 *
 * @throws {Error} when `DENO_V8_FLAGS` is set (every measured process would
 * inherit it, the `v8Defaults` one included), when `deno.json` has no
 * `serve` or `worker` command line, or when the two disagree on the flags (the
 * benchmark measures both kinds of process).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { servedV8Flags } from "./_runtime.ts";
 * if (!Deno.env.get("DENO_V8_FLAGS")) {
 *   assert.ok(servedV8Flags().every((flag) => flag.startsWith("--v8-flags=")));
 * }
 * ```
 */
export function servedV8Flags(): string[] {
  const ambient = Deno.env.get("DENO_V8_FLAGS");
  if (ambient) {
    throw new Error(
      `DENO_V8_FLAGS is set (${ambient}): unset it, as the benchmark chooses each measured ` +
        "process's V8 flags itself (those of deno task serve, or none for w1-v8-defaults)",
    );
  }
  return taskFlags ??= readTaskFlags();
}

/** The flags, read once per process: every spawn of a pass asks. */
let taskFlags: string[] | undefined;

function readTaskFlags(): string[] {
  let config: { tasks?: Record<string, unknown> };
  try {
    config = JSON.parse(Deno.readTextFileSync(DENO_JSON));
  } catch (error) {
    throw new Error(`Cannot read deno.json's tasks as JSON: ${(error as Error).message}`);
  }
  const serve = config.tasks?.serve;
  const worker = config.tasks?.worker;
  if (typeof serve !== "string" || typeof worker !== "string") {
    throw new Error("deno.json has no 'serve' or 'worker' command line to take the V8 flags from");
  }
  const flags = v8FlagsOf(serve);
  if (flags.join(" ") !== v8FlagsOf(worker).join(" ")) {
    throw new Error(
      `deno.json's 'serve' and 'worker' tasks run with different V8 flags: ` +
        `${JSON.stringify(flags)} and ${JSON.stringify(v8FlagsOf(worker))}`,
    );
  }
  return flags;
}

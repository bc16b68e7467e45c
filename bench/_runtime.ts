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
 * The `--v8-flags=…` arguments of a task's command line, in order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { v8FlagsOf } from "./_runtime.ts";
 * assert.deepEqual(
 *   v8FlagsOf("deno run --allow-net --v8-flags=--max-semi-space-size=4 server.ts"),
 *   ["--v8-flags=--max-semi-space-size=4"],
 * );
 * assert.deepEqual(v8FlagsOf("deno run server.ts"), []);
 * ```
 */
export function v8FlagsOf(command: string): string[] {
  return command.split(/\s+/).filter((arg) => arg.startsWith("--v8-flags="));
}

/**
 * The V8 flags of `deno task serve`, as `deno run` arguments.
 *
 * @throws {Error} when `deno.json` has no `serve` task, or `serve` and
 * `worker` disagree on them (the benchmark measures both kinds of process).
 */
export function servedV8Flags(): string[] {
  const config = JSON.parse(Deno.readTextFileSync(DENO_JSON));
  const serve = config.tasks?.serve;
  const worker = config.tasks?.worker;
  if (typeof serve !== "string" || typeof worker !== "string") {
    throw new Error("deno.json has no 'serve' or 'worker' task to take the V8 flags from");
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

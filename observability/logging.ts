/**
 * Log output for an application that runs Weft. The engine and the steps log
 * through LogTape under the `weft` category and stay silent until the
 * application configures a sink; {@linkcode configureLogging} is that one
 * call: JSON lines for machines, or coloured lines for a terminal.
 *
 * @module
 */
import {
  configure,
  getAnsiColorFormatter,
  getJsonLinesFormatter,
  isLogLevel,
  type LogLevel,
  type LogRecord,
  type Sink,
  type TextFormatter,
} from "@logtape/logtape";
import { InvalidArgumentError } from "../engine/errors.ts";

/** The output formats of {@linkcode configureLogging}. */
export const LogFormat = {
  /** One JSON object per line, properties nested under `properties`. */
  Json: "json",
  /** One coloured line per record, for a terminal. */
  Pretty: "pretty",
} as const;
/** One of the {@linkcode LogFormat} values. */
export type LogFormat = typeof LogFormat[keyof typeof LogFormat];

/** Options of {@linkcode configureLogging}. */
export interface LoggingOptions {
  /** How records are written. @default {"json"} */
  format?: LogFormat;
  /** The lowest level written. @default {"info"} */
  level?: LogLevel;
  /**
   * Where each formatted line goes, without its trailing newline.
   * @default {console.log} (standard output)
   */
  write?: (line: string) => void;
  /**
   * Categories to configure besides `["weft"]`, such as the application's
   * own; each gets the same sink and level.
   * @default {[]}
   */
  categories?: readonly (readonly string[])[];
}

/** The run fields a pretty line shows after the message. */
const CONTEXT_FIELDS = ["workflow", "runId", "step", "attempt", "durationMs"] as const;

/**
 * Configures LogTape so that every Weft record (engine, steps, HTTP) is
 * written to one stream. Replaces any earlier LogTape configuration.
 *
 * JSON records look like
 * `{"@timestamp":"…","level":"INFO","message":"Step payment succeeded in 31 ms","logger":"weft.engine","properties":{"workflow":"order","runId":"01J…","step":"payment","attempt":1,"durationMs":31,"status":"succeeded"}}`.
 *
 * @throws {InvalidArgumentError} on an unknown format or level.
 *
 * @example Capture JSON lines
 * ```ts
 * import assert from "node:assert/strict";
 * import { getLogger, reset } from "@logtape/logtape";
 * import { configureLogging } from "./logging.ts";
 * const lines: string[] = [];
 * await configureLogging({ format: "json", write: (line) => lines.push(line) });
 * getLogger(["weft", "engine"]).info("Run {runId} started", { runId: "r1" });
 * assert.ok(JSON.parse(lines[0]).properties.runId === "r1");
 * await reset();
 * ```
 */
export async function configureLogging(options: LoggingOptions = {}): Promise<void> {
  const { format, level } = checkedLogging(
    options.format ?? LogFormat.Json,
    options.level ?? "info",
    ["format", "level"],
  );
  const write = options.write ?? ((line: string) => console.log(line));
  const formatter = format === LogFormat.Json ? getJsonLinesFormatter() : prettyFormatter();
  const sink: Sink = (record) => write(formatter(record).replace(/\r?\n$/, ""));
  await configure({
    reset: true,
    sinks: { weft: sink },
    loggers: [
      { category: ["weft"], sinks: ["weft"], lowestLevel: level },
      ...(options.categories ?? []).map((category) => ({
        category: [...category],
        sinks: ["weft" as const],
        lowestLevel: level,
      })),
      // LogTape's own warnings (a sink that throws) belong in the same stream.
      { category: ["logtape", "meta"], sinks: ["weft"], lowestLevel: "warning" },
    ],
  });
}

/**
 * Reads `--log-format <json|pretty>` (or `--log-format=…`) and `--log-level`
 * from command-line arguments, falling back to the given environment values.
 * Pure: the caller passes `Deno.args` and the variables it read.
 *
 * @throws {InvalidArgumentError} on an unknown format or level.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loggingOptionsFrom } from "./logging.ts";
 * const options = loggingOptionsFrom(["--log-format", "pretty"], {});
 * assert.ok(options.format === "pretty" && options.level === "info");
 * ```
 */
export function loggingOptionsFrom(
  args: readonly string[],
  env: { format?: string; level?: string },
): Required<Pick<LoggingOptions, "format" | "level">> {
  const flag = (name: string): string | undefined => {
    for (let i = 0; i < args.length; i++) {
      if (args[i] === name) return args[i + 1];
      if (args[i].startsWith(`${name}=`)) return args[i].slice(name.length + 1);
    }
    return undefined;
  };
  return checkedLogging(
    flag("--log-format") ?? env.format ?? LogFormat.Json,
    flag("--log-level") ?? env.level ?? "info",
    ["--log-format", "--log-level"],
  );
}

/** Checks a format and a level, naming them as the caller knows them in errors. */
function checkedLogging(
  format: string,
  level: string,
  [formatName, levelName]: [string, string],
): { format: LogFormat; level: LogLevel } {
  if (!(Object.values(LogFormat) as string[]).includes(format)) {
    throw new InvalidArgumentError(
      `Cannot configure logging as '${formatName}' must be "json" or "pretty": current value is ${
        JSON.stringify(format)
      }`,
    );
  }
  if (!isLogLevel(level)) {
    throw new InvalidArgumentError(
      `Cannot configure logging as '${levelName}' must be one of trace, debug, info, warning, error, fatal: current value is ${
        JSON.stringify(level)
      }`,
    );
  }
  return { format: format as LogFormat, level };
}

/** A coloured line, with the run fields the message did not already show. */
function prettyFormatter(): TextFormatter {
  return getAnsiColorFormatter({
    timestamp: "time",
    format: ({ timestamp, level, category, message, record }) =>
      `${timestamp} ${level} ${category}: ${message}${contextSuffix(record)}`,
  });
}

function contextSuffix(record: LogRecord): string {
  const parts: string[] = [];
  for (const key of CONTEXT_FIELDS) {
    const value = record.properties[key];
    if (value === undefined || value === null) continue;
    if (typeof record.rawMessage === "string" && record.rawMessage.includes(`{${key}}`)) continue;
    parts.push(`${key}=${renderValue(value)}`);
  }
  return parts.length === 0 ? "" : ` \x1b[2m${parts.join(" ")}\x1b[0m`;
}

/** Bare when safe; otherwise JSON, which escapes control characters. */
function renderValue(value: unknown): string {
  const text = String(value);
  return /^[\w.:@/-]+$/.test(text) ? text : JSON.stringify(text);
}

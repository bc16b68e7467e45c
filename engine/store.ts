/**
 * Reads of Weft's records from KV, each parsed with its zod schema. Writes go
 * through the engine's {@linkcode CommitBatcher}; this module only reads.
 *
 * @module
 */
import { itemName, type KeyLayout } from "./keys.ts";
import {
  creationEvent,
  type HistoryEvent,
  historyEventSchema,
  type OutputRef,
  type RunEvent,
  runEventSchema,
  type RunRecord,
  runRecordSchema,
  type SchedRecord,
  schedRecordSchema,
  type StepRecord,
  stepRecordSchema,
} from "./records.ts";
import { decodeOutput, joinJson } from "./output.ts";
import { InvalidArgumentError } from "./errors.ts";
import { isTerminalRun, type RunStatus } from "./states.ts";

/** Filters and paging of {@linkcode RunStore.listRuns}. */
export interface ListRunsOptions {
  /** Only runs of this workflow. */
  workflow?: string;
  /** Only runs in this state. */
  status?: RunStatus;
  /** Page size, 1..1000. @default {50} */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string;
}

/** One page of runs, newest first. */
export interface RunPage {
  /** The runs of this page. */
  runs: RunRecord[];
  /** Pass as `cursor` for the next page; `null` on the last page. */
  nextCursor: string | null;
}

function parseOrThrow<T>(
  schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: Error } },
  value: unknown,
  key: Deno.KvKey,
): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new Error(`Corrupt record at ${JSON.stringify(key)}: ${parsed.error.message}`);
  }
  return parsed.data;
}

/**
 * Typed reads of runs, steps, outputs and history.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { RunStore } from "./store.ts";
 * import { keyLayout } from "./keys.ts";
 * const kv = await Deno.openKv(":memory:");
 * const store = new RunStore(kv, keyLayout());
 * assert.ok(await store.getRun("nope") === undefined);
 * kv.close();
 * ```
 */
export class RunStore {
  readonly #kv: Deno.Kv;
  readonly #keys: KeyLayout;
  readonly #coalesced = new Map<
    string,
    { resolve: (run: RunRecord | undefined) => void; reject: (error: unknown) => void }[]
  >();
  #coalescing = false;

  /** Creates the reader. */
  constructor(kv: Deno.Kv, keys: KeyLayout) {
    this.#kv = kv;
    this.#keys = keys;
  }

  /** The run record, or `undefined`. */
  async getRun(runId: string): Promise<RunRecord | undefined> {
    const key = this.#keys.run(runId);
    const entry = await this.#kv.get(key);
    return entry.value === null ? undefined : parseOrThrow(runRecordSchema, entry.value, key);
  }

  /** The events in a run's mailbox, oldest first. */
  async getEvents(runId: string): Promise<RunEvent[]> {
    const events: RunEvent[] = [];
    for await (const entry of this.#kv.list({ prefix: this.#keys.events(runId) })) {
      const value = parseOrThrow(runEventSchema, entry.value, entry.key);
      events.push({ ...value, id: String(entry.key.at(-1)) });
    }
    return events;
  }

  /** Every step record of a run, by name. */
  async getSteps(runId: string): Promise<Map<string, StepRecord>> {
    const steps = new Map<string, StepRecord>();
    for await (const entry of this.#kv.list({ prefix: this.#keys.steps(runId) })) {
      steps.set(String(entry.key.at(-1)), parseOrThrow(stepRecordSchema, entry.value, entry.key));
    }
    return steps;
  }

  /** The committed outputs of the succeeded steps among `steps`. */
  async getOutputs(
    runId: string,
    steps: ReadonlyMap<string, StepRecord>,
  ): Promise<Map<string, unknown>> {
    const outputs = new Map<string, unknown>();
    for (const [name, rec] of steps) {
      if (rec.status !== "succeeded" || !rec.output) continue;
      outputs.set(name, await this.#output(runId, name, rec.output));
    }
    return outputs;
  }

  async #output(runId: string, name: string, ref: OutputRef): Promise<unknown> {
    if (ref.kind === "inline") return decodeOutput(ref, []);
    if (ref.kind === "items") {
      // A map's output is its items' outputs, in item order.
      const items = await this.getItems(runId, name);
      const values: unknown[] = [];
      for (let i = 0; i < ref.count; i++) {
        const item = items.get(i);
        const value = item?.status === "succeeded" && item.output
          ? await this.#output(runId, itemName(name, i), item.output)
          : null;
        if (!ref.tolerant) values.push(value);
        else if (item?.status === "succeeded") values.push({ ok: true, value });
        else values.push({ ok: false, error: item?.errors.at(-1)?.error ?? null });
      }
      return values;
    }
    const chunks: Uint8Array[] = [];
    const prefix = this.#keys.outputChunks(runId, name, ref.attempt);
    for await (const entry of this.#kv.list<Uint8Array>({ prefix })) chunks.push(entry.value);
    return decodeOutput(ref, chunks);
  }

  /** The records of a map step's items, by index. */
  async getItems(runId: string, step: string): Promise<Map<number, StepRecord>> {
    const items = new Map<number, StepRecord>();
    for await (const entry of this.#kv.list({ prefix: this.#keys.items(runId, step) })) {
      items.set(Number(entry.key.at(-1)), parseOrThrow(stepRecordSchema, entry.value, entry.key));
    }
    return items;
  }

  /** A map step's items, as stored when it started. */
  async getMapInput(runId: string, step: string): Promise<unknown[]> {
    const chunks: Uint8Array[] = [];
    for await (
      const entry of this.#kv.list<Uint8Array>({ prefix: this.#keys.mapInputs(runId, step) })
    ) chunks.push(entry.value);
    return chunks.length === 0 ? [] : joinJson(chunks);
  }

  /** A run's input, from the record or from its chunks. */
  async getInput(run: RunRecord): Promise<unknown> {
    if (run.inputChunks === undefined) return run.input;
    const chunks: Uint8Array[] = [];
    for await (
      const entry of this.#kv.list<Uint8Array>({ prefix: this.#keys.inputChunks(run.id) })
    ) {
      chunks.push(entry.value);
    }
    if (chunks.length !== run.inputChunks) {
      throw new Error(
        `Input of run '${run.id}' is missing chunks: found ${chunks.length} of ${run.inputChunks}`,
      );
    }
    return joinJson(chunks);
  }

  /**
   * Every recorded transition of a run, oldest first, its creation included
   * (not stored: the run record implies it). Empty for an unknown run.
   */
  async getHistory(runId: string): Promise<HistoryEvent[]> {
    const [record, events] = await Promise.all([this.getRun(runId), this.#storedHistory(runId)]);
    // Files written before the creation event was left out hold it at seq 0.
    if (record && events[0]?.seq !== 0) events.unshift(creationEvent(record));
    return events;
  }

  async #storedHistory(runId: string): Promise<HistoryEvent[]> {
    const events: HistoryEvent[] = [];
    for await (const entry of this.#kv.list({ prefix: this.#keys.histories(runId) })) {
      for (const e of entry.value as unknown[]) {
        events.push(parseOrThrow(historyEventSchema, e, entry.key));
      }
    }
    return events;
  }

  /**
   * The run record, read together with the records asked for in the same
   * tick: ten keys per `getMany`, so thousands of callers at once (a bulk
   * `result()`) cost a tenth of the reads.
   */
  getRunCoalesced(runId: string): Promise<RunRecord | undefined> {
    return new Promise((resolve, reject) => {
      const waiting = this.#coalesced.get(runId);
      if (waiting) waiting.push({ resolve, reject });
      else this.#coalesced.set(runId, [{ resolve, reject }]);
      if (this.#coalescing) return;
      this.#coalescing = true;
      queueMicrotask(() => {
        this.#coalescing = false;
        const batch = [...this.#coalesced];
        this.#coalesced.clear();
        for (let i = 0; i < batch.length; i += 10) {
          const part = batch.slice(i, i + 10);
          this.#kv.getMany(part.map(([id]) => this.#keys.run(id))).then((entries) => {
            entries.forEach((entry, j) => {
              let run: RunRecord | undefined;
              try {
                run = entry.value === null
                  ? undefined
                  : parseOrThrow(runRecordSchema, entry.value, entry.key);
              } catch (error) {
                for (const w of part[j][1]) w.reject(error);
                return;
              }
              for (const w of part[j][1]) w.resolve(run);
            });
          }, (error) => {
            for (const [, waiters] of part) for (const w of waiters) w.reject(error);
          });
        }
      });
    });
  }

  /**
   * The run record, its lease (who holds it, if a worker does), and the
   * named step records, in one read (at most 8 steps).
   */
  async getRunState(runId: string, stepNames: readonly string[]): Promise<{
    run: RunRecord | undefined;
    sched: SchedRecord | undefined;
    steps: Map<string, StepRecord>;
  }> {
    const entries = await this.#kv.getMany([
      this.#keys.run(runId),
      this.#keys.held(runId),
      ...stepNames.map((name) => this.#keys.step(runId, name)),
    ]);
    const [run, sched, ...stepEntries] = entries;
    const steps = new Map<string, StepRecord>();
    stepEntries.forEach((entry, i) => {
      if (entry.value !== null) {
        steps.set(stepNames[i], parseOrThrow(stepRecordSchema, entry.value, entry.key));
      }
    });
    return {
      run: run.value === null ? undefined : parseOrThrow(runRecordSchema, run.value, run.key),
      sched: sched.value === null
        ? undefined
        : parseOrThrow(schedRecordSchema, sched.value, sched.key),
      steps,
    };
  }

  /**
   * Who holds an unfinished run, and the entry that says so (for a check):
   * its `held` lease, or its `active` entry while it waits in the due index.
   * `undefined` once it has finished, or for an unknown run.
   */
  async getHolder(
    runId: string,
  ): Promise<{ sched: SchedRecord; entry: Deno.KvEntry<unknown> } | undefined> {
    const [held, active] = await this.#kv.getMany([
      this.#keys.held(runId),
      this.#keys.active(runId),
    ]);
    const entry = held.value !== null ? held : active.value !== null ? active : undefined;
    if (!entry) return undefined;
    return { sched: parseOrThrow(schedRecordSchema, entry.value, entry.key), entry };
  }

  /** The run record and who holds it, in one read. */
  async getRunAndSched(
    runId: string,
  ): Promise<[RunRecord | undefined, SchedRecord | undefined]> {
    const [run, held, active] = await this.#kv.getMany([
      this.#keys.run(runId),
      this.#keys.held(runId),
      this.#keys.active(runId),
    ]);
    const sched = held.value !== null ? held : active;
    return [
      run.value === null ? undefined : parseOrThrow(runRecordSchema, run.value, run.key),
      sched.value === null ? undefined : parseOrThrow(schedRecordSchema, sched.value, sched.key),
    ];
  }

  /** The `seq` the run's next history event gets: one read of its newest history part. */
  async nextHistorySeq(runId: string): Promise<number> {
    for await (
      const entry of this.#kv.list({ prefix: this.#keys.histories(runId) }, {
        reverse: true,
        limit: 1,
      })
    ) {
      const events = entry.value as unknown[];
      const last = parseOrThrow(historyEventSchema, events.at(-1), entry.key);
      return last.seq + 1;
    }
    // Only the creation event, which is not stored, took a seq.
    return 1;
  }

  /** The run id started with an idempotency key, or `undefined`. */
  async getIdempotent(workflow: string, key: string): Promise<string | undefined> {
    const entry = await this.#kv.get<string>(this.#keys.idempotency(workflow, key));
    return entry.value ?? undefined;
  }

  /** Ids of every run that is not terminal (a full scan: for checks and tools, not the engine). */
  async activeRunIds(): Promise<string[]> {
    const ids: string[] = [];
    for await (const { id } of this.#unfinishedIds(undefined, 500)) ids.push(id);
    return ids;
  }

  /**
   * One page of runs, newest first.
   *
   * @throws {InvalidArgumentError} on a bad limit or a cursor from another query.
   */
  async listRuns(options: ListRunsOptions = {}): Promise<RunPage> {
    const { workflow, status } = options;
    const limit = options.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
      throw new InvalidArgumentError(
        `Cannot list runs as 'limit' must be an integer from 1 to 1000: current value is ${limit}`,
      );
    }
    const unfinished = status !== undefined && !isTerminalRun(status);
    const prefix = unfinished
      ? this.#keys.actives()
      : workflow && status
      ? this.#keys.byWorkflowStatus(workflow, status)
      : workflow
      ? this.#keys.byWorkflow(workflow)
      : status
      ? this.#keys.byStatus(status)
      : this.#keys.runs();
    // Unfinished runs are read from their leases and due entries, and filtered.
    const keep = unfinished
      ? (r: RunRecord) => r.status === status && (!workflow || r.workflow === workflow)
      : () => true;
    const filter = `${workflow ?? ""}|${status ?? ""}`;
    let kvCursor: string | undefined;
    if (options.cursor !== undefined) {
      try {
        const decoded = JSON.parse(atob(options.cursor.replace(/-/g, "+").replace(/_/g, "/")));
        if (decoded.f !== filter || typeof decoded.c !== "string") throw new Error("mismatch");
        kvCursor = decoded.c;
      } catch {
        throw new InvalidArgumentError(
          `Cannot list runs as 'cursor' is not a cursor of this query: current value is ${options.cursor}`,
        );
      }
    }
    const batchSize = Math.min(limit + 1, 500);
    // Unfinished runs are held (`held`) or due (`active`): both lists, merged
    // newest first, with the last run id as the cursor.
    const iter = unfinished
      ? this.#unfinishedIds(kvCursor, batchSize)
      : idsWithCursors(this.#kv.list({ prefix }, { reverse: true, cursor: kvCursor, batchSize }));
    const runs: RunRecord[] = [];
    let nextKvCursor: string | null = null;
    // A cursor is handed out only when one more matching run exists, so
    // the last page says so instead of leading to an empty one.
    let more = false;
    let batch: { id: string; cursor: string }[] = [];
    const resolveBatch = async () => {
      const entries = await this.#kv.getMany(batch.map((b) => this.#keys.run(b.id)));
      entries.forEach((entry, i) => {
        if (entry.value === null || more) return;
        const run = parseOrThrow(runRecordSchema, entry.value, entry.key);
        if (!keep(run)) return;
        if (runs.length === limit) {
          more = true;
          return;
        }
        runs.push(run);
        if (runs.length === limit) nextKvCursor = batch[i].cursor;
      });
      batch = [];
    };
    try {
      for await (const next of iter) {
        batch.push(next);
        if (batch.length === 10 || runs.length === limit) await resolveBatch();
        if (more) break;
      }
      if (batch.length > 0 && !more) await resolveBatch();
    } catch (error) {
      if (error instanceof SyntaxError || error instanceof Error && /cursor/i.test(error.message)) {
        throw new InvalidArgumentError(`Cannot list runs as 'cursor' is invalid`);
      }
      throw error;
    }
    const nextCursor = nextKvCursor === null || !more
      ? null
      : btoa(JSON.stringify({ f: filter, c: nextKvCursor }))
        .replace(/\+/g, "-").replace(/\//g, "_");
    return { runs, nextCursor };
  }

  /** Ids of held and due runs, newest first, each its own cursor; after `beforeId` if given. */
  async *#unfinishedIds(
    beforeId: string | undefined,
    batchSize: number,
  ): AsyncGenerator<{ id: string; cursor: string }> {
    const lists = [this.#keys.helds(), this.#keys.actives()].map((prefix) =>
      this.#kv.list(
        beforeId === undefined ? { prefix } : { prefix, end: [...prefix, beforeId] },
        { reverse: true, batchSize },
      )[Symbol.asyncIterator]()
    );
    const heads = await Promise.all(lists.map((l) => l.next()));
    while (true) {
      let pick = -1;
      for (let i = 0; i < heads.length; i++) {
        if (heads[i].done) continue;
        if (pick < 0 || idOf(heads[i].value) > idOf(heads[pick].value)) pick = i;
      }
      if (pick < 0) return;
      const id = idOf(heads[pick].value);
      yield { id, cursor: id };
      heads[pick] = await lists[pick].next();
    }
  }
}

function idOf(entry: Deno.KvEntry<unknown>): string {
  return String(entry.key.at(-1));
}

/** The ids of a list's entries, each with the list's cursor after it. */
async function* idsWithCursors(
  iter: Deno.KvListIterator<unknown>,
): AsyncGenerator<{ id: string; cursor: string }> {
  for await (const entry of iter) yield { id: idOf(entry), cursor: iter.cursor };
}

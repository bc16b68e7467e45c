/**
 * A KV handle that counts what the engine asks of KV: atomic commits and
 * their mutations, how long each commit took, queue messages enqueued
 * (immediate and delayed) and delivered, and reads. The engine gets it in
 * place of the real handle, so the counts are the engine's own traffic.
 * Only `bench/` imports this file.
 *
 * @module
 */

/** Counters filled by {@linkcode countingKv}. */
export interface KvCounts {
  /** `atomic().commit()` calls that returned `ok: true`. */
  commits: number;
  /** Commits that returned `ok: false` (a check failed). */
  failedCommits: number;
  /** Commits that threw (for example "database is locked"). */
  thrownCommits: number;
  /** set, delete, sum, min, max and check calls inside atomics. */
  mutations: number;
  /** Queue messages enqueued with no delay. */
  enqueued: number;
  /** Queue messages enqueued with a delay. */
  delayed: number;
  /** Queue messages handed to the engine's listener. */
  delivered: number;
  /** get, getMany and list calls. */
  reads: number;
  /** Duration of every commit, in milliseconds. */
  commitMs: number[];
  /** Mutations by operation and the key part after the prefix, e.g. `set run`. */
  byKey: Map<string, number>;
}

/** Fresh zeroed counters. */
export function newCounts(): KvCounts {
  return {
    commits: 0,
    failedCommits: 0,
    thrownCommits: 0,
    mutations: 0,
    enqueued: 0,
    delayed: 0,
    delivered: 0,
    reads: 0,
    commitMs: [],
    byKey: new Map(),
  };
}

const MUTATIONS = new Set(["set", "delete", "sum", "min", "max", "check"]);

// deno-lint-ignore no-explicit-any
type AnyFn = (...args: any[]) => any;

/**
 * Wraps `kv` so every call is counted into `counts`.
 *
 * A Proxy rather than a wrapper class: `Deno.Kv` and `AtomicOperation` keep
 * their state in private fields, so every method must run on the real object;
 * the Proxy forwards all of them (including ones added in later Deno
 * versions) and overrides only the few it counts.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { countingKv, newCounts } from "./_kv_counter.ts";
 * const counts = newCounts();
 * const raw = await Deno.openKv(":memory:");
 * const kv = countingKv(raw, counts);
 * await kv.atomic().set(["a"], 1).commit();
 * assert.ok(counts.commits === 1 && counts.mutations === 1);
 * raw.close();
 * ```
 */
export function countingKv(kv: Deno.Kv, counts: KvCounts): Deno.Kv {
  // One wrapper per method, made on first use: binding on every call would
  // make the counter's own garbage part of what a benchmark measures.
  const wrappers = new Map<PropertyKey, unknown>();
  return new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      let wrapper = wrappers.get(prop);
      if (wrapper === undefined) wrappers.set(prop, wrapper = wrap(target, prop, value as AnyFn));
      return wrapper;
    },
  });

  function wrap(target: Deno.Kv, prop: PropertyKey, value: AnyFn): unknown {
    const fn = value.bind(target);
    switch (prop) {
      case "atomic":
        return () => countingAtomic(fn(), counts);
      case "listenQueue":
        return (handler: (message: unknown) => unknown) =>
          fn((message: unknown) => {
            counts.delivered++;
            return handler(message);
          });
      case "enqueue":
        return (message: unknown, options?: { delay?: number }) => {
          if ((options?.delay ?? 0) > 0) counts.delayed++;
          else counts.enqueued++;
          return fn(message, options);
        };
      case "get":
      case "getMany":
      case "list":
        return (...args: unknown[]) => {
          counts.reads++;
          return fn(...args);
        };
      default:
        return fn;
    }
  }
}

/** Mutation kinds by operation and key part, shared by every atomic: no allocation per call. */
const kindNames = new Map<string, Map<unknown, string>>();

function kindOf(op: string, part: unknown): string {
  let byPart = kindNames.get(op);
  if (!byPart) kindNames.set(op, byPart = new Map());
  let kind = byPart.get(part);
  if (kind === undefined) byPart.set(part, kind = `${op} ${String(part ?? "?")}`);
  return kind;
}

/**
 * Counts the calls on `op` by giving the real object counting methods of
 * its own: a Proxy in front of every atomic cost the measured process
 * 20-30 MB of peak RSS and a tenth of W1's throughput (every `set` went
 * through the trap), which would be charged to the engine.
 */
function countingAtomic(op: Deno.AtomicOperation, counts: KvCounts): Deno.AtomicOperation {
  const proto = Object.getPrototypeOf(op) as Record<string, AnyFn>;
  const patched = op as unknown as Record<string, AnyFn>;
  for (const name of MUTATIONS) {
    const real = proto[name];
    patched[name] = function (this: Deno.AtomicOperation, ...args: unknown[]) {
      counts.mutations++;
      // Weft's keys are [prefix, kind, ...]; a check passes { key }.
      const key = (name === "check" ? (args[0] as Deno.AtomicCheck).key : args[0]) as Deno.KvKey;
      const kind = kindOf(name, key?.[1]);
      counts.byKey.set(kind, (counts.byKey.get(kind) ?? 0) + 1);
      return real.apply(this, args);
    };
  }
  const enqueue = proto.enqueue;
  patched.enqueue = function (this: Deno.AtomicOperation, ...args: unknown[]) {
    if (((args[1] as { delay?: number } | undefined)?.delay ?? 0) > 0) counts.delayed++;
    else counts.enqueued++;
    return enqueue.apply(this, args);
  };
  const commit = proto.commit;
  patched.commit = async function (this: Deno.AtomicOperation) {
    const t0 = performance.now();
    try {
      const result = await commit.call(this);
      counts.commitMs.push(performance.now() - t0);
      if (result.ok) counts.commits++;
      else counts.failedCommits++;
      return result;
    } catch (error) {
      counts.thrownCommits++;
      throw error;
    }
  };
  return op;
}

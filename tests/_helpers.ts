/** Shared test helpers: an engine on an in-memory KV with a fake clock, waits, a temporary directory. */
import {
  type AnyWorkflow,
  createEngine,
  type Engine,
  type EngineOptions,
  FakeClock,
} from "../mod.ts";

/** A promise with its resolve and reject exposed. */
export function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * `kv`, except that every atomic commit first asks `failure`: when it
 * returns an error, the commit rejects with it and writes nothing, as on a
 * full or failing disk. Everything else goes to `kv`.
 */
export function failingCommits(kv: Deno.Kv, failure: () => Error | undefined): Deno.Kv {
  const opHandler: ProxyHandler<Deno.AtomicOperation> = {
    get(op, prop, receiver) {
      if (prop === "commit") {
        return () => {
          const error = failure();
          return error ? Promise.reject(error) : op.commit();
        };
      }
      const value = Reflect.get(op, prop);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        value.apply(op, args);
        return receiver;
      };
    },
  };
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") return () => new Proxy(target.atomic(), opHandler);
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Runs `fn` in a new temporary directory named from `prefix`, removed afterwards. */
export async function inTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Waits (in 1 ms real steps, at most `tries` of them) until `condition` holds. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what = "condition",
  tries = 2_000,
): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await condition()) return;
    await new Promise((r) => setTimeout(r, 1));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

/** An engine under test and what it runs on. */
export interface TestEngine extends AsyncDisposable {
  kv: Deno.Kv;
  engine: Engine;
  clock: FakeClock;
  /** Closes the engine and opens a new one on the same KV and clock. */
  restart(workflows?: AnyWorkflow[]): Promise<Engine>;
}

/** Opens an in-memory KV, a fake clock and an engine over them. */
export async function testEngine(
  workflows: AnyWorkflow[],
  options: Partial<EngineOptions> = {},
): Promise<TestEngine> {
  const kv = await Deno.openKv(":memory:");
  const clock = new FakeClock();
  const make = (wfs: AnyWorkflow[]) =>
    createEngine({ kv, workflows: wfs, clock, random: () => 0.5, ...options });
  const t: TestEngine = {
    kv,
    clock,
    engine: await make(workflows),
    async restart(wfs = workflows) {
      await t.engine.close({ graceMs: 0 });
      t.engine = await make(wfs);
      return t.engine;
    },
    async [Symbol.asyncDispose]() {
      await t.engine.close({ graceMs: 0 });
      kv.close();
    },
  };
  return t;
}

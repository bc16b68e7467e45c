/**
 * The write ceiling of one KV file: 1, 2, ... processes that each commit
 * atomics of `--sets` small values (and one check, as the engine's fenced
 * commits have) back to back for `--ms`, retrying "database is locked" as
 * the engine does. Reports each count's mutations/s over all processes, and
 * the ratio to one process: what W8's workers could reach at best if
 * commits were all they did.
 *
 *   deno run -A bench/writer_ceiling.ts [--procs 1,2] [--sets 80] [--ms 3000]
 *
 * A W8 worker commits about 80 mutations per commit (24 per run, 1,000 runs,
 * some 300 commits), which is the default.
 *
 * @module
 */
import { commitRetryingLocked } from "../engine/commit_batcher.ts";

interface WriterResult {
  commits: number;
  mutations: number;
  p50Ms: number;
  p99Ms: number;
}

function flag(name: string, fallback: string): string {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 && Deno.args[i + 1] !== undefined ? Deno.args[i + 1] : fallback;
}

/** One writer: commits until `endAt`, each after the one before has landed. */
async function writer(path: string, id: string, sets: number, startAt: number, endAt: number) {
  const kv = await Deno.openKv(path);
  const value = { v: "x".repeat(100) };
  while (Date.now() < startAt) await new Promise((r) => setTimeout(r, 1));
  const latencies: number[] = [];
  for (let i = 0; Date.now() < endAt; i++) {
    const t0 = performance.now();
    await commitRetryingLocked(kv, (atomic) => {
      atomic.check({ key: ["writer", id], versionstamp: null });
      for (let k = 0; k < sets; k++) atomic.set(["data", id, i, k], value);
    });
    latencies.push(performance.now() - t0);
  }
  kv.close();
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    Math.round(latencies[Math.floor(q * (latencies.length - 1))] * 100) / 100;
  const result: WriterResult = {
    commits: latencies.length,
    mutations: latencies.length * (sets + 1),
    p50Ms: at(0.5),
    p99Ms: at(0.99),
  };
  console.log(JSON.stringify(result));
}

async function main() {
  if (Deno.args[0] === "writer") {
    const [, path, id, sets, startAt, endAt] = Deno.args;
    return await writer(path, id, Number(sets), Number(startAt), Number(endAt));
  }
  const procs = flag("procs", "1,2").split(",").map(Number);
  const sets = Number(flag("sets", "80"));
  const ms = Number(flag("ms", "3000"));
  let single: number | undefined;
  for (const n of procs) {
    const dir = await Deno.makeTempDir({ prefix: "weft_ceiling_" });
    const path = `${dir}/kv.sqlite3`;
    (await Deno.openKv(path)).close();
    // Every writer starts at one moment, after all are up.
    const startAt = Date.now() + 1_500;
    const children = Array.from({ length: n }, (_, i) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-kv",
          import.meta.filename!,
          "writer",
          path,
          String(i),
          String(sets),
          String(startAt),
          String(startAt + ms),
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output());
    const results = (await Promise.all(children)).map((o) =>
      JSON.parse(new TextDecoder().decode(o.stdout)) as WriterResult
    );
    await Deno.remove(dir, { recursive: true });
    const perSec = Math.round(results.reduce((s, r) => s + r.mutations, 0) / (ms / 1000));
    single ??= perSec;
    console.log(JSON.stringify({
      processes: n,
      sets_per_commit: sets,
      mutations_per_s: perSec,
      ratio_to_first: Math.round((perSec / single) * 100) / 100,
      commit_p50_ms: results.map((r) => r.p50Ms),
      commit_p99_ms: results.map((r) => r.p99Ms),
    }));
  }
}

if (import.meta.main) await main();

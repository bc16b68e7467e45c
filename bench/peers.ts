/**
 * Weft beside the peer in one go: runs Weft's suite, then
 * `../shared/peers/run.sh` (BullMQ + Redis with fsync on every write; it
 * installs Redis and BullMQ into a temp folder when missing), and prints a
 * side-by-side markdown table with the ratio for every figure and issue 5's
 * targets, then Weft's engine counters.
 *
 *   deno task bench:peers                      # both suites, REPS=1
 *   REPS=3 deno task bench:peers --write       # median of 3, and update BENCHMARKS.md
 *   deno task bench:peers w7 w8                # some workloads only (no --write)
 *   deno task bench:peers --weft a.jsonl --peer b.jsonl   # table from earlier runs
 *
 * W7's peer figure (200,000 delayed jobs) comes from `bullmq_backlog.cjs`,
 * since `run.sh` has no delayed-jobs workload; it uses the BullMQ that
 * `run.sh` installed into the same work folder. W8 has no peer figure.
 *
 * Both result sets are also kept as `.bench/last-weft.jsonl` and
 * `.bench/last-bullmq.jsonl`.
 *
 * @module
 */
import { compareTable, countersTable, peerMedians } from "./_compare.ts";
import { medians, type Result, runSuite } from "./run.ts";
import { WORKLOADS } from "./workloads.ts";

/** The workloads `run.sh` knows, by Weft's names. */
const PEER_WORKLOADS = ["w1", "w2", "w2-rate100", "w3", "w4"];
/** Delayed jobs in W7's peer backlog. */
const PEER_BACKLOG_JOBS = 200_000;

const ROOT = decodeURIComponent(new URL("../", import.meta.url).pathname);
const CACHE = `${ROOT}.bench`;
const DOC = `${ROOT}BENCHMARKS.md`;
const START = "<!-- bench:peers:start -->";
const END = "<!-- bench:peers:end -->";

function parseJsonLines(text: string): Result[] {
  return text.split("\n").filter((l) => l.trim().startsWith("{")).map((l) => JSON.parse(l));
}

async function readJsonLines(path: string): Promise<Result[]> {
  return parseJsonLines(await Deno.readTextFile(path));
}

/** Runs the peer's script on some workloads, echoing its output to stderr; resolves with its JSON lines. */
async function runPeers(workloads: string[], reps: number): Promise<Result[]> {
  const script = Deno.env.get("PEERS_RUN") ??
    decodeURIComponent(new URL("../../shared/peers/run.sh", import.meta.url).pathname);
  // A kept work folder spares an npm install per run; its results file is
  // emptied so the script's own median table shows this run only.
  const work = Deno.env.get("PEERS_WORK") ?? `${CACHE}/peers-work`;
  await Deno.mkdir(work, { recursive: true });
  await Deno.remove(`${work}/results/bullmq.jsonl`).catch(() => {});
  console.error(`running ${script} ${workloads.join(" ")} (REPS=${reps}, work folder ${work})`);
  const child = new Deno.Command("bash", {
    args: [script, ...workloads],
    env: { MODE: Deno.env.get("MODE") ?? "aofalways", REPS: String(reps), PEERS_WORK: work },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    const s = decoder.decode(chunk, { stream: true });
    text += s;
    await Deno.stderr.write(chunk);
  }
  const status = await child.status;
  if (!status.success) throw new Error(`${script} failed with code ${status.code}`);
  return parseJsonLines(text);
}

/** W7's peer side: `bullmq_backlog.cjs` with the BullMQ that `run.sh` installs; resolves with its JSON line. */
async function runPeerBacklog(): Promise<Result[]> {
  const work = Deno.env.get("PEERS_WORK") ?? `${CACHE}/peers-work`;
  const script = decodeURIComponent(new URL("./bullmq_backlog.cjs", import.meta.url).pathname);
  console.error(`running node ${script} (${PEER_BACKLOG_JOBS} delayed jobs, work folder ${work})`);
  const out = await new Deno.Command("node", {
    args: [script, "--work", work, "--n", String(PEER_BACKLOG_JOBS)],
    env: { MODE: Deno.env.get("MODE") ?? "aofalways" },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  console.error(text.trim());
  if (!out.success) throw new Error(`${script} failed with code ${out.code}`);
  return parseJsonLines(text);
}

async function sh(cmd: string, ...args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "";
  }
}

/** Cores, memory, CPU model and the versions on both sides. */
async function machine(peer: readonly Result[]): Promise<string> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown CPU";
  const memGb = Deno.systemMemoryInfo().total / 1024 ** 3;
  const redis = (await sh("redis-server", "--version")).replace(/^Redis server v=(\S+).*$/, "$1");
  const node = await sh("node", "--version");
  const fs = (await sh("df", "-T", Deno.env.get("TMPDIR") ?? "/tmp")).split("\n")[1]?.split(
    /\s+/,
  )[1];
  return [
    `- machine: ${navigator.hardwareConcurrency} cores (\`nproc\`), ${
      memGb.toFixed(1)
    } GiB RAM, ${model}, Linux ${Deno.osRelease()}`,
    `- Weft: Deno ${Deno.version.deno} (V8 ${Deno.version.v8}), file KV in a temp folder on ${
      fs ?? "?"
    }`,
    `- peer: Node ${node}, BullMQ ${peer[0]?.version ?? "?"}, Redis ${
      redis || "?"
    } with \`--appendfsync always\``,
  ].join("\n");
}

function parseArgs(args: string[]) {
  const o: { weft?: string; peer?: string; write: boolean; reps: number; workloads: string[] } = {
    write: false,
    reps: Number(Deno.env.get("REPS") ?? 1),
    workloads: [],
  };
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--weft") o.weft = args[++i];
    else if (args[i] === "--peer") o.peer = args[++i];
    else if (args[i] === "--write") o.write = true;
    else if (args[i] === "--reps") o.reps = Number(args[++i]);
    else if (args[i].startsWith("--")) throw new Error(`Unknown option '${args[i]}'`);
    else if (WORKLOADS.some((w) => w.name === args[i].toLowerCase())) {
      o.workloads.push(args[i].toLowerCase());
    } else throw new Error(`Unknown workload '${args[i]}'`);
  }
  if (!(Number.isInteger(o.reps) && o.reps >= 1)) {
    throw new Error(`'REPS' must be an integer >= 1: current value is ${o.reps}`);
  }
  if (o.write && o.workloads.length > 0) {
    throw new Error("Cannot --write the results of some workloads: the block holds them all");
  }
  return o;
}

if (import.meta.main) {
  const options = parseArgs(Deno.args);
  await Deno.mkdir(CACHE, { recursive: true });
  const saved = options.weft !== undefined || options.peer !== undefined;
  const load = saved
    ? "not known (table rebuilt from saved results)"
    : (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
  const when = options.weft ? (await Deno.stat(options.weft)).mtime ?? new Date() : new Date();
  const weft: Result[] = options.weft ? await readJsonLines(options.weft) : [];
  const peer: Result[] = options.peer ? await readJsonLines(options.peer) : [];
  // Interleaved, workload by workload and pass by pass, so that load from
  // elsewhere on the machine falls on both sides alike.
  for (let rep = 0; rep < options.reps; rep++) {
    for (const w of WORKLOADS) {
      if (options.workloads.length > 0 && !options.workloads.includes(w.name)) continue;
      if (!options.weft) {
        const [r] = await runSuite({ workloads: [w.name] });
        console.error(JSON.stringify(r));
        weft.push(r);
      }
      if (!options.peer && PEER_WORKLOADS.includes(w.name)) {
        peer.push(...await runPeers([w.name], 1));
      }
      if (!options.peer && w.name === "w7") peer.push(...await runPeerBacklog());
    }
  }
  if (!options.weft) {
    await Deno.writeTextFile(
      `${CACHE}/last-weft.jsonl`,
      weft.map((r) => JSON.stringify(r) + "\n").join(""),
    );
  }
  if (!options.peer) {
    await Deno.writeTextFile(
      `${CACHE}/last-bullmq.jsonl`,
      peer.map((r) => JSON.stringify(r) + "\n").join(""),
    );
  }
  const weftM = medians(weft);
  const reps = Math.max(...[...weftM.values()].map((r) => Number(r.reps)));
  const block = [
    START,
    `Run on ${when.toISOString().slice(0, 16).replace("T", " ")} UTC, Weft ${
      weft[0]?.version ?? "?"
    }, median of ${reps} pass${reps === 1 ? "" : "es"} per workload on each side, interleaved;`,
    `load average when it began: ${load || "?"} on ${navigator.hardwareConcurrency} cores.`,
    "",
    await machine(peer),
    "",
    compareTable(weftM, peerMedians(peer)),
    "",
    "Weft's engine counters (per workload, same run):",
    "",
    countersTable(weftM),
    END,
  ].join("\n");
  console.log(block);
  if (options.write) {
    const doc = await Deno.readTextFile(DOC).catch(() => "");
    const a = doc.indexOf(START), b = doc.indexOf(END);
    if (a < 0 || b < a) {
      console.error(`BENCHMARKS.md has no ${START} … ${END} block; not written`);
    } else {
      await Deno.writeTextFile(DOC, doc.slice(0, a) + block + doc.slice(b + END.length));
      // `deno task check` runs `deno fmt --check`, which also formats markdown tables.
      await new Deno.Command(Deno.execPath(), { args: ["fmt", DOC], stderr: "null" }).output();
      console.error("BENCHMARKS.md updated");
    }
  }
}

"use strict";
// W7's peer figure: BullMQ + Redis with 200,000 jobs delayed by an hour. `../shared/peers/run.sh`
// has no delayed-jobs workload, so this script does it, with the BullMQ that run.sh installs into
// $PEERS_WORK and a Redis started with run.sh's flags for its MODE (default aofalways: fsync on
// every write). Measures Redis memory with the backlog, the time from a worker process's spawn to
// `waitUntilReady()` and to its first processed job, and the lag of due timers (a job delayed by
// 200-1000 ms: processing start minus `timestamp + delay`) while the backlog is there.
//
//   node bench/bullmq_backlog.cjs --work .bench/peers-work [--n 200000] [--port 6391] [--mode aofalways]
//   node bench/bullmq_backlog.cjs worker --work <dir> --port <port>     (spawned by the above)
//
// Prints one JSON line.
const { spawn } = require("node:child_process");
const { createRequire } = require("node:module");
const fs = require("node:fs");
const path = require("node:path");
const readline = require("node:readline");

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith("--")) out[argv[i].slice(2)] = argv[++i];
    else out._.push(argv[i]);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const work = path.resolve(args.work || process.env.PEERS_WORK || ".bench/peers-work");
const port = Number(args.port || 6391);
const mode = args.mode || process.env.MODE || "aofalways";
const QNAME = "bench-w7";
const connection = { host: "127.0.0.1", port, maxRetriesPerRequest: null };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function load() {
  const req = createRequire(path.join(work, "package.json"));
  try {
    return {
      bullmq: req("bullmq"),
      IORedis: req("ioredis"),
      version: req("bullmq/package.json").version,
    };
  } catch (e) {
    throw new Error(
      `Cannot load BullMQ from ${work}: run ../shared/peers/run.sh once with PEERS_WORK=${work} (${e.message})`,
    );
  }
}

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

// The same seeded PRNG as bench/backlog.ts, so both sides ask for the same timer delays.
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// --- the worker process ------------------------------------------------------------------------

async function worker() {
  const { bullmq } = load();
  const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
  const w = new bullmq.Worker(QNAME, (job) => {
    say({
      ran: job.id,
      name: job.name,
      at: Date.now(),
      due: job.timestamp + (job.opts.delay || 0),
    });
    return 1;
  }, { connection, concurrency: 100 });
  w.on("error", (e) => console.error("worker error", e));
  await w.waitUntilReady();
  say({ ready: Date.now() });
  readline.createInterface({ input: process.stdin }).on("line", async (line) => {
    if (line.trim() !== "stop") return;
    const rss = process.memoryUsage().rss;
    const max = process.resourceUsage().maxRSS * 1024;
    await w.close();
    say({ rss_mb: +(rss / 1048576).toFixed(1), max_rss_mb: +(max / 1048576).toFixed(1) });
    process.exit(0);
  });
}

// --- the driver --------------------------------------------------------------------------------

function startRedis() {
  const dir = path.join(work, "redis-w7");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const extra = {
    rdb: ["--appendonly", "no"],
    aof: ["--appendonly", "yes", "--appendfsync", "everysec"],
    aofalways: ["--appendonly", "yes", "--appendfsync", "always"],
  }[mode];
  if (!extra) throw new Error(`Unknown MODE ${mode}`);
  const redis = spawn("redis-server", [
    "--bind",
    "127.0.0.1",
    "--port",
    String(port),
    "--protected-mode",
    "yes",
    "--daemonize",
    "no",
    "--dir",
    dir,
    "--save",
    "3600 1 300 100 60 10000",
    "--logfile",
    path.join(dir, "redis.log"),
    ...extra,
  ], { stdio: "ignore" });
  return redis;
}

async function redisInfo(client) {
  const o = {};
  for (const line of (await client.info()).split("\r\n")) {
    const m = line.match(/^([a-z_0-9]+):(.*)$/);
    if (m) o[m[1]] = m[2];
  }
  return o;
}

async function main() {
  const { bullmq, IORedis, version } = load();
  const n = Number(args.n || 200000);
  const redis = startRedis();
  let admin;
  try {
    admin = new IORedis(connection);
    admin.on("error", () => {}); // refused connections while Redis starts and stops
    for (let i = 0; i < 100; i++) {
      if (await admin.ping().catch(() => false)) break;
      await sleep(100);
    }
    await admin.flushall();
    const used0 = Number((await redisInfo(admin)).used_memory);
    const queue = new bullmq.Queue(QNAME, { connection });
    await queue.waitUntilReady();

    // The backlog: n jobs delayed by an hour, in bulks of 1,000.
    const t0 = performance.now();
    for (let done = 0; done < n; done += 1000) {
      const m = Math.min(1000, n - done);
      await queue.addBulk(Array.from({ length: m }, (_, i) => ({
        name: "wait",
        data: { i: done + i },
        opts: { delay: 3_600_000 },
      })));
    }
    const seedS = (performance.now() - t0) / 1000;
    const info = await redisInfo(admin);

    // A fresh worker process: spawn to ready, and to its first job.
    const spawnedAt = Date.now();
    const child = spawn(process.execPath, [
      __filename,
      "worker",
      "--work",
      work,
      "--port",
      String(port),
    ], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const ran = new Map();
    let ready, final, backlogRan = 0;
    const waiters = [];
    readline.createInterface({ input: child.stdout }).on("line", (line) => {
      const o = JSON.parse(line);
      if (o.ready) ready = o.ready;
      else if (o.ran) {
        if (o.name === "wait") backlogRan++;
        else ran.set(o.ran, o);
      } else if (o.rss_mb !== undefined) final = o;
      for (const w of waiters.splice(0)) w();
    });
    const until = async (f, what) => {
      const deadline = Date.now() + 120_000;
      while (!f()) {
        if (Date.now() > deadline) throw new Error(`no ${what} within 120 s`);
        await new Promise((r) => waiters.push(r));
      }
    };
    await until(() => ready, "worker ready");
    const probe = await queue.add("probe", {});
    await until(() => ran.has(probe.id), "probe job");
    const firstJobMs = ran.get(probe.id).at - spawnedAt;

    // Timers, as W7 asks of Weft: 300 jobs delayed 200-1000 ms, added at 200/s.
    await sleep(2000);
    const random = mulberry32(7);
    const ids = [];
    const tStart = performance.now();
    for (let i = 0; i < 300; i++) {
      const wait = tStart + (i * 1000) / 200 - performance.now();
      if (wait > 0) await sleep(wait);
      const delay = Math.round(200 + random() * 800);
      ids.push((await queue.add("timer", { i }, { delay })).id);
    }
    await until(() => ids.every((id) => ran.has(id)), "timer jobs");
    const lag = ids.map((id) => ran.get(id).at - ran.get(id).due).sort((a, b) => a - b);
    child.stdin.write("stop\n");
    await until(() => final, "worker stop");
    await queue.close();
    console.log(JSON.stringify({
      system: "bullmq",
      version,
      mode,
      workload: "w7",
      delayed_jobs: n,
      seed_s: +seedS.toFixed(2),
      redis_used_mb: +(Number(info.used_memory) / 1048576).toFixed(1),
      redis_rss_mb: +(Number(info.used_memory_rss) / 1048576).toFixed(1),
      redis_bytes_per_job: Math.round((Number(info.used_memory) - used0) / n),
      worker_ready_ms: ready - spawnedAt,
      first_job_ms: firstJobMs,
      worker_rss_mb: final.rss_mb,
      worker_max_rss_mb: final.max_rss_mb,
      timers: ids.length,
      timer_lag_p50_ms: percentile(lag, 50),
      timer_lag_p99_ms: percentile(lag, 99),
      timer_lag_max_ms: lag[lag.length - 1],
      backlog_jobs_ran: backlogRan,
    }));
  } finally {
    // SHUTDOWN gets no reply, and a client left connected would retry for ever.
    const exited = new Promise((r) => redis.once("exit", r));
    admin?.shutdown("NOSAVE").catch(() => {});
    await Promise.race([exited, sleep(5000)]);
    admin?.disconnect();
    redis.kill();
  }
}

(args._[0] === "worker" ? worker() : main()).then(
  () => {
    if (args._[0] !== "worker") process.exit(0);
  },
  (e) => {
    console.error(e);
    process.exit(1);
  },
);

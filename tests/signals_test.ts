/**
 * A double Ctrl-C: a real `server.ts` process gets a second signal during its
 * grace period. It exits at once, yet writes the attempt it cut back
 * uncharged, so the next start reruns it; only SIGKILL counts as a crash.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { json, ROOT, ServerProcess } from "./_server.ts";

const GRACE_MS = 120_000;

for (const [first, second] of [["SIGTERM", "SIGTERM"], ["SIGINT", "SIGTERM"]] as const) {
  Deno.test(`server given ${first} then ${second} ends its grace period early and charges nothing`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "weft_signals_" });
    const gate = join(dir, "gate-open");
    const kvPath = join(dir, "kv.sqlite3");
    const args = [
      "--workflows",
      join(ROOT, "tests/fixtures/hardening_workflows.ts"),
      "--grace-ms",
      String(GRACE_MS),
    ];
    try {
      let runId = "";
      {
        await using server = await ServerProcess.serve(kvPath, args);
        const created = await json(await server.post("/workflows/gated/runs", { gate }), 201);
        runId = created.id;
        for (;;) {
          const run = await json(await server.fetch(`/runs/${runId}`), 200);
          if (run.steps.hold.status === "running") break;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        const startedAt = Date.now();
        server.kill(first);
        await new Promise((resolve) => setTimeout(resolve, 50));
        server.kill(second);
        const status = await server.exit();
        // The step ignores its abort signal: only the cut grace period ends the wait.
        assert.ok(Date.now() - startedAt < GRACE_MS / 2, "the grace period was cut");
        assert.equal(status.code, 0, server.stderr);
        assert.match(server.stderr, /Second signal: ending the grace period now/);
      }
      await using again = await ServerProcess.serve(kvPath, args);
      const before = await json(await again.fetch(`/runs/${runId}`), 200);
      assert.match(before.steps.hold.errors[0].error.message, /interrupted by engine shut down/);
      await Deno.writeTextFile(gate, "open");
      const done = await json(await again.fetch(`/runs/${runId}/wait?timeoutMs=30000`), 200);
      // One attempt allowed: the cut one was not charged, so the rerun could succeed.
      assert.equal(done.status, "succeeded", JSON.stringify(done.error));
      assert.equal(done.steps.hold.attempts, 2);
      assert.equal(done.steps.hold.output.attempt, 2);
      assert.equal((await again.stop("SIGTERM")).code, 0, again.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}

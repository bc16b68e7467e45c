import assert from "node:assert/strict";
import { join } from "node:path";
import { isLockedError, openKvRetrying } from "./open_kv.ts";

Deno.test("openKvRetrying throws an error other than a lock at once, without retrying", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_open_" });
  let retries = 0;
  try {
    await assert.rejects(
      openKvRetrying(join(dir, "no", "such", "dir", "kv.sqlite3"), { onRetry: () => retries++ }),
    );
    assert.equal(retries, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openKvRetrying waits out another process's lock on the file, and then opens it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "weft_open_" });
  const path = join(dir, "kv.sqlite3");
  // A process that creates the file and holds SQLite's exclusive lock on it,
  // as one worker does while it creates a new KV file, until told to let go.
  const holder = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { DatabaseSync } from "node:sqlite";
       const db = new DatabaseSync(Deno.args[0]);
       db.exec("BEGIN EXCLUSIVE");
       console.log("locked");
       await Deno.stdin.readable.getReader().read();
       db.exec("COMMIT");
       db.close();`,
      path,
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = holder.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    assert.match((await lines.read()).value ?? "", /locked/);
    const writer = holder.stdin.getWriter();
    const retried: string[] = [];
    // SQLite waits 5 s for the lock, then throws: the first open fails.
    // With the default timeout: the first open alone takes SQLite's 5 s.
    const kv = await openKvRetrying(path, {
      onRetry: (error) => {
        retried.push(error.message);
        if (retried.length === 1) {
          void writer.write(new Uint8Array([10])).then(() => writer.close());
        }
      },
    });
    await kv.set(["opened"], true);
    assert.equal((await kv.get(["opened"])).value, true);
    kv.close();
    assert.equal(retried.length, 1, "one retry, after the lock's error");
    assert.match(retried[0], /database is locked/);
    assert.ok((await holder.status).success);
  } finally {
    lines.releaseLock();
    await holder.stdout.cancel().catch(() => {});
    try {
      holder.kill();
    } catch { /* exited */ }
    await holder.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("isLockedError knows SQLite's lock errors only", () => {
  assert.ok(isLockedError(new TypeError("database is locked")));
  assert.ok(!isLockedError(new Error("No such file or directory")));
  assert.ok(!isLockedError("database is locked"));
});

/**
 * Slow clients against the real server on a real port, with raw sockets:
 * connections that send their head a byte at a time, or nothing, are closed
 * with 408 once the head timeout passes; a body shorter than its
 * `Content-Length` gets 408 once the body timeout passes; event streams and
 * long polls outlive both.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type RunningServer, startServer } from "../server.ts";

const HEADER_TIMEOUT_MS = 200;
const BODY_TIMEOUT_MS = 300;
const encoder = new TextEncoder();

async function serve(): Promise<RunningServer> {
  return await startServer({
    port: 0,
    hostname: "127.0.0.1",
    kvPath: ":memory:",
    workflowPaths: [fileURLToPath(new URL("./fixtures/hardening_workflows.ts", import.meta.url))],
    maxBodyBytes: 1024 * 1024,
    graceMs: 0,
    debug: false,
    headerTimeoutMs: HEADER_TIMEOUT_MS,
    bodyTimeoutMs: BODY_TIMEOUT_MS,
  }, () => {});
}

async function connect(server: RunningServer): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
}

/** Everything the server sends until it closes the connection. */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  const decoder = new TextDecoder();
  const buf = new Uint8Array(16 * 1024);
  let text = "";
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      break; // reset by the server
    }
    if (n === null) break;
    text += decoder.decode(buf.subarray(0, n), { stream: true });
  }
  return text;
}

Deno.test("slow clients: stalled heads and bodies are closed with 408, streams are not", async (t) => {
  const server = await serve();
  const dir = await Deno.makeTempDir({ prefix: "weft_slow_" });
  try {
    await t.step(
      "100 slowloris sockets, a byte every 50 ms, all get 408 and are closed",
      async () => {
        const conns = await Promise.all(Array.from({ length: 100 }, () => connect(server)));
        const head = encoder.encode("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ");
        let sending = true;
        const dribble = Promise.all(conns.map(async (conn) => {
          for (let i = 0; sending && i < head.length; i++) {
            try {
              await conn.write(head.subarray(i, i + 1));
            } catch {
              return; // closed by the server
            }
            await new Promise((resolve) => setTimeout(resolve, 50));
          }
        }));
        const answers = await Promise.all(conns.map(readToEnd));
        sending = false;
        await dribble;
        for (const conn of conns) conn.close();
        for (const answer of answers) assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/);
      },
    );

    await t.step("a connection that sends nothing gets 408 and is closed", async () => {
      const conn = await connect(server);
      assert.match(await readToEnd(conn), /^HTTP\/1\.1 408 /);
      conn.close();
    });

    await t.step("a body shorter than its Content-Length gets 408 request_timeout", async () => {
      const conn = await connect(server);
      await conn.write(encoder.encode(
        "POST /workflows/quick/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
          'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"n":',
      ));
      const answer = await readToEnd(conn);
      conn.close();
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /"code":"request_timeout"/);
      assert.match(answer, /x-content-type-options: nosniff/i);
      assert.equal((await server.engine.list()).runs.length, 0, "no run was started");
      assert.match(answer, /connection: close/i, "the rest of its body is on the connection");
    });

    await t.step("a kept-alive connection serves requests in turn, pipelined too", async () => {
      const conn = await connect(server);
      const get = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
      const post = "POST /workflows/quick/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
        '4\r\n{"n"\r\n3\r\n:4}\r\n0\r\n\r\n';
      await conn.write(encoder.encode(get + post + get));
      // The connection stays open after the third answer, until it idles past the head timeout.
      const text = await readToEnd(conn);
      conn.close();
      const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
      assert.deepEqual(statuses, ["200", "201", "200"], text);
      assert.doesNotMatch(text, /connection: close/i);
      assert.doesNotMatch(text, / 408 /, "an idle kept-alive connection is closed quietly");
      const runs = (await server.engine.list()).runs;
      assert.equal(runs.length, 1);
      assert.equal((await server.engine.result(runs[0].id)).output, 8);
    });

    await t.step("a slow second head on a kept-alive connection gets 408", async () => {
      const conn = await connect(server);
      await conn.write(encoder.encode("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /he"));
      const text = await readToEnd(conn);
      conn.close();
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.match(text, /HTTP\/1\.1 408 Request Timeout/);
    });

    await t.step("a request framed two ways is refused with 400", async () => {
      const conn = await connect(server);
      await conn.write(encoder.encode(
        "POST /workflows/quick/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 6\r\n" +
          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      ));
      const text = await readToEnd(conn);
      conn.close();
      assert.match(text, /^HTTP\/1\.1 400 Bad Request/);
      assert.match(text, /both Content-Length and Transfer-Encoding/);
    });

    await t.step("an event stream and a long poll outlive the timeouts", async () => {
      const gate = join(dir, "gate");
      const res = await fetch(new URL("/workflows/gated/runs", server.url), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ gate }),
      });
      const { id } = await res.json();
      const events = await fetch(new URL(`/runs/${id}/events`, server.url));
      assert.equal(events.status, 200);
      const poll = fetch(new URL(`/runs/${id}/wait?timeoutMs=60000`, server.url));
      // Several times both timeouts, with nothing sent either way.
      await new Promise((resolve) =>
        setTimeout(resolve, 4 * (HEADER_TIMEOUT_MS + BODY_TIMEOUT_MS))
      );
      await Deno.writeTextFile(gate, "open");
      const done = await (await poll).json();
      assert.equal(done.status, "succeeded");
      const text = await events.text();
      assert.match(text, /event: end/);
    });
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * The server's public socket: a small TCP front that gives each connection
 * a deadline for its request head, then hands the connection to the HTTP
 * server (`Deno.serve`, listening on a private Unix socket) byte for byte.
 *
 * `Deno.serve` has no header or idle timeout: a client that sends its
 * headers one byte at a time ("slowloris"), or connects and sends nothing,
 * holds a connection for ever. The front closes such a connection with
 * `408` once `headerTimeoutMs` has passed without a full request head. It
 * serves one request per connection (it asks the HTTP server for
 * `Connection: close`), so no later request on the same connection escapes
 * the deadline. Once the head is in, nothing is timed here: event streams
 * and long polls run as long as they need, and request bodies are timed by
 * the app (see `bodyTimeout` in `body.ts`).
 *
 * The front tells the app the client's address in the
 * {@linkcode CLIENT_ADDRESS_HEADER} header, removing any copy the client
 * sent; only the front can reach the private socket, so the app may trust it.
 *
 * @module
 */

/** The request header carrying the client's address from the front to the app. */
export const CLIENT_ADDRESS_HEADER = "x-weft-client-address";

/** The default deadline for a request head: 10 s. */
export const DEFAULT_HEADER_TIMEOUT_MS = 10_000;

/** Largest request head accepted, in bytes: 64 KiB. */
export const MAX_HEAD_BYTES = 64 * 1024;

/** Options of {@linkcode startFrontDoor}. */
export interface FrontDoorOptions {
  /** The interface to listen on. */
  hostname: string;
  /** The port; 0 picks a free one. */
  port: number;
  /** The Unix socket of the HTTP server behind. */
  upstreamPath: string;
  /** How long a connection may take to send its request head. @default {10000} */
  headerTimeoutMs?: number;
  /** Called with errors other than a client going away. @default {nothing} */
  onError?: (error: unknown) => void;
}

/** A listening front. */
export interface FrontDoor {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Connections open now. */
  readonly connections: number;
  /** Stops accepting connections. */
  stopAccepting(): void;
  /** Stops accepting and closes every connection still open. */
  close(): Promise<void>;
}

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

function simpleResponse(status: string, message: string): Uint8Array {
  return encoder.encode(
    `HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `X-Content-Type-Options: nosniff\r\nContent-Length: ${encoder.encode(message).length}\r\n` +
      `\r\n${message}`,
  );
}

/** Where the head ends (the index after its blank line), or -1. */
function headEnd(text: string): number {
  const match = /\r?\n\r?\n/.exec(text);
  return match ? match.index + match[0].length : -1;
}

const HOP_HEADERS = new Set(["connection", "keep-alive", CLIENT_ADDRESS_HEADER]);

/**
 * The head as the HTTP server gets it: the client's `Connection`,
 * `Keep-Alive` and client-address headers dropped, `Connection: close` and
 * the client's address added.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rewriteHead } from "./front_door.ts";
 * const head = rewriteHead("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", "10.0.0.1");
 * assert.equal(
 *   head,
 *   "GET / HTTP/1.1\r\nHost: a\r\nconnection: close\r\nx-weft-client-address: 10.0.0.1\r\n\r\n",
 * );
 * ```
 */
export function rewriteHead(head: string, clientAddress: string): string {
  const lines = head.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const kept: string[] = [lines[0]];
  let dropping = false;
  for (const line of lines.slice(1)) {
    // A folded continuation line belongs to the header above it.
    if (/^[ \t]/.test(line)) {
      if (!dropping) kept.push(line);
      continue;
    }
    const name = line.slice(0, line.indexOf(":")).trim().toLowerCase();
    dropping = HOP_HEADERS.has(name);
    if (!dropping) kept.push(line);
  }
  kept.push("connection: close", `${CLIENT_ADDRESS_HEADER}: ${clientAddress}`);
  return `${kept.join("\r\n")}\r\n\r\n`;
}

/**
 * Follows the bytes of one HTTP/1.1 response and says when it is complete:
 * after its `Content-Length`, after the last chunk of a chunked body, at
 * once for a response without a body, and never for one that ends when the
 * connection does. Interim (1xx) responses before it are skipped.
 *
 * The front needs this because the HTTP server keeps a connection open,
 * whatever `Connection: close` says, until the request body has arrived in
 * full: a response to a stalled body would otherwise never reach its end.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { ResponseEnd } from "./front_door.ts";
 * const end = new ResponseEnd("GET");
 * const bytes = new TextEncoder().encode("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
 * assert.ok(!end.feed(bytes.subarray(0, 10)) && end.feed(bytes.subarray(10)));
 * ```
 */
export class ResponseEnd {
  readonly #method: string;
  #state: "head" | "length" | "size" | "data" | "trailer" | "close" | "done" = "head";
  #text = "";
  #remaining = 0;

  /** Follows the response to a request of `method`. */
  constructor(method: string) {
    this.#method = method.toUpperCase();
  }

  /** Takes the next bytes; returns whether the response is complete. */
  feed(bytes: Uint8Array): boolean {
    let i = 0;
    while (i < bytes.length && this.#state !== "done" && this.#state !== "close") {
      if (this.#state === "length" || this.#state === "data") {
        const take = Math.min(this.#remaining, bytes.length - i);
        this.#remaining -= take;
        i += take;
        if (this.#remaining === 0) this.#state = this.#state === "length" ? "done" : "size";
        continue;
      }
      // Line-oriented states: collect up to the next LF.
      const lf = bytes.indexOf(0x0a, i);
      const upto = lf < 0 ? bytes.length : lf + 1;
      this.#text += latin1.decode(bytes.subarray(i, upto));
      i = upto;
      if (this.#text.length > MAX_HEAD_BYTES) {
        this.#state = "close"; // not a response this parser follows: wait for the close
        break;
      }
      if (lf < 0) continue;
      this.#line();
    }
    return this.#state === "done";
  }

  #line(): void {
    const text = this.#text;
    if (this.#state === "head") {
      if (!/\r?\n\r?\n$/.test(text) && text !== "\r\n" && text !== "\n") return;
      this.#text = "";
      if (text === "\r\n" || text === "\n") return; // a stray blank line
      this.#startBody(text);
    } else if (this.#state === "size") {
      this.#text = "";
      const size = parseInt(text.split(";")[0].trim(), 16);
      if (!Number.isFinite(size) || size < 0) this.#state = "close";
      else if (size === 0) this.#state = "trailer";
      else {
        this.#remaining = size + 2; // the data and its CRLF
        this.#state = "data";
      }
    } else if (this.#state === "trailer") {
      this.#text = "";
      if (text === "\r\n" || text === "\n") this.#state = "done";
    }
  }

  #startBody(head: string): void {
    const lines = head.split(/\r?\n/);
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1]);
    const header = (name: string) =>
      lines.slice(1).find((l) => l.toLowerCase().startsWith(`${name}:`))?.slice(name.length + 1)
        .trim().toLowerCase();
    if (status >= 100 && status < 200 && status !== 101) return; // interim: the real one follows
    if (this.#method === "HEAD" || status === 204 || status === 304 || status === 101) {
      this.#state = status === 101 ? "close" : "done";
      return;
    }
    if ((header("transfer-encoding") ?? "").includes("chunked")) {
      this.#state = "size";
      return;
    }
    const length = header("content-length");
    if (length !== undefined && /^[0-9]+$/.test(length)) {
      this.#remaining = Number(length);
      this.#state = this.#remaining === 0 ? "done" : "length";
      return;
    }
    this.#state = "close";
  }
}

/**
 * Listens on `hostname:port` and serves every connection through the HTTP
 * server on `upstreamPath`, with a deadline for the request head.
 *
 * @example
 * ```ts ignore
 * const front = startFrontDoor({ hostname: "127.0.0.1", port: 0, upstreamPath: "/tmp/w/http.sock" });
 * await front.close();
 * ```
 */
export function startFrontDoor(options: FrontDoorOptions): FrontDoor {
  const headerTimeoutMs = options.headerTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
  if (!Number.isSafeInteger(headerTimeoutMs) || headerTimeoutMs < 1) {
    throw new RangeError(
      `Cannot listen as 'headerTimeoutMs' must be an integer >= 1: current value is ${headerTimeoutMs}`,
    );
  }
  const onError = options.onError ?? (() => {});
  const listener = Deno.listen({ hostname: options.hostname, port: options.port });
  const open = new Set<Deno.Conn>();
  const handling = new Set<Promise<void>>();
  let accepting = true;

  const closeQuietly = (conn: Deno.Conn) => {
    open.delete(conn);
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  };

  async function handle(conn: Deno.Conn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    let buffered = new Uint8Array(0);
    let end = -1;
    const timer = setTimeout(async () => {
      try {
        await conn.write(
          simpleResponse("408 Request Timeout", "Request head not received in time"),
        );
      } catch {
        // The client is gone.
      }
      closeQuietly(conn);
    }, headerTimeoutMs);
    try {
      const chunk = new Uint8Array(16 * 1024);
      while (end < 0) {
        const n = await conn.read(chunk);
        if (n === null) return closeQuietly(conn);
        const next = new Uint8Array(buffered.length + n);
        next.set(buffered);
        next.set(chunk.subarray(0, n), buffered.length);
        buffered = next;
        // Only the head is ASCII that matters; latin1 keeps byte offsets.
        end = headEnd(
          latin1.decode(buffered.subarray(0, Math.min(buffered.length, MAX_HEAD_BYTES))),
        );
        if (end < 0 && buffered.length >= MAX_HEAD_BYTES) {
          clearTimeout(timer);
          await conn.write(
            simpleResponse("431 Request Header Fields Too Large", "Request head is too large"),
          );
          return closeQuietly(conn);
        }
      }
    } catch {
      // Closed by the deadline, or the client went away.
      clearTimeout(timer);
      return closeQuietly(conn);
    }
    clearTimeout(timer);
    const head = rewriteHead(latin1.decode(buffered.subarray(0, end)), remote.hostname);
    let upstream: Deno.UnixConn;
    try {
      upstream = await Deno.connect({ transport: "unix", path: options.upstreamPath });
    } catch (error) {
      onError(error);
      await conn.write(simpleResponse("503 Service Unavailable", "Server is not ready"))
        .catch(() => {});
      return closeQuietly(conn);
    }
    open.add(upstream);
    try {
      await writeAll(upstream, encoder.encode(head));
      if (buffered.length > end) await writeAll(upstream, buffered.subarray(end));
      const toServer = conn.readable.pipeTo(upstream.writable, { preventClose: true })
        .then(() => upstream.closeWrite().catch(() => {}), () => {});
      // Until the response is complete, or the server closes its side.
      const response = new ResponseEnd(head.slice(0, head.indexOf(" ")));
      const chunk = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await upstream.read(chunk);
        if (n === null) break;
        await writeAll(conn, chunk.subarray(0, n));
        if (response.feed(chunk.subarray(0, n))) break;
      }
      void toServer;
    } catch {
      // Either side went away.
    } finally {
      closeQuietly(upstream);
      closeQuietly(conn);
    }
  }

  (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (accepting) onError(error);
        return;
      }
      open.add(conn);
      const task = handle(conn).catch(onError).finally(() => handling.delete(task));
      handling.add(task);
    }
  })();

  const stopAccepting = () => {
    if (!accepting) return;
    accepting = false;
    try {
      listener.close();
    } catch {
      // Closed already.
    }
  };

  return {
    addr: listener.addr as Deno.NetAddr,
    get connections() {
      return handling.size;
    },
    stopAccepting,
    async close() {
      stopAccepting();
      for (const conn of [...open]) closeQuietly(conn);
      await Promise.all([...handling]);
    },
  };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await conn.write(bytes.subarray(offset));
}

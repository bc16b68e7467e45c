/**
 * The server's public socket: a small TCP front that gives each connection
 * a deadline for its request head, then hands the connection to the HTTP
 * server (`Deno.serve`, listening on a private Unix socket) byte for byte.
 *
 * `Deno.serve` has no header or idle timeout: a client that sends its
 * headers one byte at a time ("slowloris"), or connects and sends nothing,
 * holds a connection for ever. The front closes such a connection with
 * `408` once `headerTimeoutMs` has passed without a full request head, and
 * a kept-alive connection that sends no next request within it. Each
 * request goes to the HTTP server on a connection of its own (asking it for
 * `Connection: close`); the front follows the framing of both the request
 * and the response (`Content-Length`, chunked) to know where each ends, and
 * keeps the client's connection alive between them. Once a head is in,
 * nothing is timed here: event streams and long polls run as long as they
 * need, and request bodies are timed by the app (see `bodyTimeout` in
 * `body.ts`).
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

/** How a message body is delimited. */
export type Framing =
  /** No body. */
  | { kind: "none" }
  /** Exactly `length` bytes. */
  | { kind: "length"; length: number }
  /** Chunked transfer coding. */
  | { kind: "chunked" }
  /** Until the connection closes (responses only). */
  | { kind: "close" };

/** The header fields of a head, lowercased names, in order. */
function headerFields(head: string): [string, string][] {
  return head.split(/\r?\n/).slice(1).filter((l) => l.includes(":")).map((l) => {
    const i = l.indexOf(":");
    return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()];
  });
}

/**
 * How a request's body is delimited, or an error message for a request
 * whose framing is ambiguous (both `Content-Length` and
 * `Transfer-Encoding`, several lengths, a coding other than chunked).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { requestFraming } from "./front_door.ts";
 * assert.deepEqual(requestFraming("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"), { kind: "length", length: 3 });
 * assert.equal(typeof requestFraming("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), "string");
 * ```
 */
export function requestFraming(head: string): Framing | string {
  const fields = headerFields(head);
  const codings = fields.filter(([n]) => n === "transfer-encoding").map(([, v]) => v.toLowerCase());
  const lengths = fields.filter(([n]) => n === "content-length").map(([, v]) => v);
  if (codings.length > 0 && lengths.length > 0) {
    return "Request has both Content-Length and Transfer-Encoding";
  }
  if (codings.length > 0) {
    const all = codings.join(",").split(",").map((c) => c.trim()).filter(Boolean);
    if (all.length !== 1 || all[0] !== "chunked") {
      return `Transfer-Encoding '${codings.join(", ")}' is not supported: use chunked`;
    }
    return { kind: "chunked" };
  }
  if (lengths.length === 0) return { kind: "none" };
  const distinct = new Set(lengths.flatMap((v) => v.split(",").map((x) => x.trim())));
  const [only] = distinct;
  if (distinct.size !== 1 || !/^[0-9]{1,15}$/.test(only)) {
    return `Content-Length '${lengths.join(", ")}' is not a single length`;
  }
  const length = Number(only);
  return length === 0 ? { kind: "none" } : { kind: "length", length };
}

/**
 * How the body of a response to `method` with this head is delimited.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { responseFraming } from "./front_door.ts";
 * assert.deepEqual(responseFraming("HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"), { kind: "none" });
 * assert.deepEqual(responseFraming("GET", "HTTP/1.1 200 OK\r\n\r\n"), { kind: "close" });
 * ```
 */
export function responseFraming(method: string, head: string): Framing {
  const status = statusOf(head);
  if (method.toUpperCase() === "HEAD" || status === 204 || status === 304 || status < 200) {
    return status === 101 ? { kind: "close" } : { kind: "none" };
  }
  const fields = headerFields(head);
  const coding = fields.find(([n]) => n === "transfer-encoding")?.[1].toLowerCase();
  if (coding !== undefined) {
    return coding.includes("chunked") ? { kind: "chunked" } : { kind: "close" };
  }
  const length = fields.find(([n]) => n === "content-length")?.[1];
  if (length !== undefined && /^[0-9]{1,15}$/.test(length)) {
    return Number(length) === 0 ? { kind: "none" } : { kind: "length", length: Number(length) };
  }
  return { kind: "close" };
}

function statusOf(head: string): number {
  return Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
}

/**
 * Follows a message body through the bytes that carry it and finds where
 * it ends: after its length, or after the last chunk and its trailers.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { BodyEnd } from "./front_door.ts";
 * const body = new BodyEnd({ kind: "chunked" });
 * const bytes = new TextEncoder().encode("2\r\nok\r\n0\r\n\r\nGET /next");
 * assert.equal(body.feed(bytes), 12);
 * assert.ok(body.done);
 * ```
 */
export class BodyEnd {
  #state: "length" | "size" | "data" | "trailer" | "close" | "done";
  #line = "";
  #remaining = 0;

  /** Follows a body delimited as `framing` says. */
  constructor(framing: Framing) {
    if (framing.kind === "none") this.#state = "done";
    else if (framing.kind === "length") {
      this.#state = "length";
      this.#remaining = framing.length;
    } else if (framing.kind === "chunked") this.#state = "size";
    else this.#state = "close";
  }

  /** Whether the body has ended. */
  get done(): boolean {
    return this.#state === "done";
  }

  /**
   * Takes the next bytes; returns the index just after the body's end if it
   * ends within them, else -1 (they all belong to the body).
   */
  feed(bytes: Uint8Array): number {
    let i = 0;
    if (this.#state === "done") return 0;
    while (i < bytes.length) {
      if (this.#state === "close") return -1;
      if (this.#state === "length" || this.#state === "data") {
        const take = Math.min(this.#remaining, bytes.length - i);
        this.#remaining -= take;
        i += take;
        if (this.#remaining === 0) {
          this.#state = this.#state === "length" ? "done" : "size";
          if (this.#state === "done") return i;
        }
        continue;
      }
      const lf = bytes.indexOf(0x0a, i);
      const upto = lf < 0 ? bytes.length : lf + 1;
      this.#line += latin1.decode(bytes.subarray(i, upto));
      i = upto;
      if (this.#line.length > MAX_HEAD_BYTES) {
        this.#state = "close"; // not chunked as this follows it: wait for the close
        return -1;
      }
      if (lf < 0) continue;
      const line = this.#line.replace(/\r?\n$/, "");
      this.#line = "";
      if (this.#state === "size") {
        const size = parseInt(line.split(";")[0].trim(), 16);
        if (!Number.isFinite(size) || size < 0) {
          this.#state = "close";
          return -1;
        }
        if (size === 0) this.#state = "trailer";
        else {
          this.#remaining = size + 2; // the data and its CRLF
          this.#state = "data";
        }
      } else if (this.#state === "trailer" && line === "") {
        this.#state = "done";
        return i;
      }
    }
    return -1;
  }
}

/** A response head as the client gets it: `Connection` as the client's connection will be. */
function rewriteResponseHead(head: string, keepAlive: boolean): string {
  const lines = head.split(/\r?\n/);
  while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  const kept = [
    lines[0],
    ...lines.slice(1).filter((l) => !/^(connection|keep-alive)\s*:/i.test(l)),
  ];
  if (!keepAlive) kept.push("connection: close");
  return `${kept.join("\r\n")}\r\n\r\n`;
}

const concat = (a: Uint8Array, b: Uint8Array) => {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
};

/**
 * Listens on `hostname:port` and serves every connection through the HTTP
 * server on `upstreamPath`, with a deadline for each request head.
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

  /**
   * Reads a request head. Resolves the head and the bytes after it, or
   * undefined when the connection is done (closed, timed out, refused).
   */
  async function readHead(
    conn: Deno.Conn,
    start: Uint8Array,
    first: boolean,
  ): Promise<{ head: string; rest: Uint8Array } | undefined> {
    let buffered = start;
    let timedOut = false;
    const timer = setTimeout(async () => {
      timedOut = true;
      // An idle kept-alive connection is closed quietly; a head that is late gets 408.
      if (first || buffered.length > 0) {
        await writeAll(
          conn,
          simpleResponse("408 Request Timeout", "Request head not received in time"),
        )
          .catch(() => {});
      }
      closeQuietly(conn);
    }, headerTimeoutMs);
    try {
      const chunk = new Uint8Array(16 * 1024);
      for (;;) {
        const end = headEnd(latin1.decode(buffered.subarray(0, MAX_HEAD_BYTES)));
        if (end >= 0) {
          return { head: latin1.decode(buffered.subarray(0, end)), rest: buffered.subarray(end) };
        }
        if (buffered.length >= MAX_HEAD_BYTES) {
          clearTimeout(timer);
          await writeAll(
            conn,
            simpleResponse("431 Request Header Fields Too Large", "Request head is too large"),
          ).catch(() => {});
          return undefined;
        }
        const n = await conn.read(chunk);
        if (n === null) return undefined;
        buffered = concat(buffered, chunk.slice(0, n));
      }
    } catch {
      return undefined; // closed by the deadline, or the client went away
    } finally {
      clearTimeout(timer);
      if (timedOut) closeQuietly(conn);
    }
  }

  /** Passes the request body on; resolves the bytes read past it, or undefined if the client left. */
  async function forwardBody(
    conn: Deno.Conn,
    upstream: Deno.Conn,
    body: BodyEnd,
    rest: Uint8Array,
  ): Promise<Uint8Array | undefined> {
    const chunk = new Uint8Array(64 * 1024);
    let pending = rest;
    for (;;) {
      if (body.done) return pending;
      if (pending.length > 0) {
        const end = body.feed(pending);
        await writeAll(upstream, end < 0 ? pending : pending.subarray(0, end));
        if (end >= 0) return pending.subarray(end);
        pending = new Uint8Array(0);
        continue;
      }
      const n = await conn.read(chunk);
      if (n === null) return undefined;
      pending = chunk.slice(0, n);
    }
  }

  /**
   * Passes the response (and any interim ones) back; resolves whether the
   * client's connection may serve another request: the response ended by
   * its framing, and `keepAlive()` held when its head was sent.
   */
  async function forwardResponse(
    upstream: Deno.Conn,
    conn: Deno.Conn,
    method: string,
    keepAlive: () => boolean,
  ): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    let pending: Uint8Array = new Uint8Array(0);
    const more = async () => {
      const n = await upstream.read(chunk);
      if (n === null) return false;
      pending = concat(pending, chunk.slice(0, n));
      return true;
    };
    for (;;) {
      let end = headEnd(latin1.decode(pending.subarray(0, MAX_HEAD_BYTES)));
      while (end < 0) {
        if (pending.length >= MAX_HEAD_BYTES || !(await more())) {
          await writeAll(conn, pending);
          return false;
        }
        end = headEnd(latin1.decode(pending.subarray(0, MAX_HEAD_BYTES)));
      }
      const head = latin1.decode(pending.subarray(0, end));
      pending = pending.subarray(end);
      const status = statusOf(head);
      const interim = status >= 100 && status < 200 && status !== 101;
      const kept = !interim && keepAlive();
      await writeAll(conn, encoder.encode(interim ? head : rewriteResponseHead(head, kept)));
      if (interim) continue;
      const framing = responseFraming(method, head);
      const body = new BodyEnd(framing);
      for (;;) {
        if (body.done) return kept;
        if (pending.length > 0) {
          const stop = body.feed(pending);
          await writeAll(conn, stop < 0 ? pending : pending.subarray(0, stop));
          pending = new Uint8Array(0);
          if (stop >= 0) return kept && framing.kind !== "close";
          continue;
        }
        if (!(await more())) return false;
      }
    }
  }

  async function handle(conn: Deno.Conn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    let buffered: Uint8Array = new Uint8Array(0);
    try {
      for (let first = true;; first = false) {
        const request = await readHead(conn, buffered, first);
        if (!request) return;
        const { head, rest } = request;
        const framing = requestFraming(head);
        if (typeof framing === "string") {
          await writeAll(conn, simpleResponse("400 Bad Request", framing)).catch(() => {});
          return;
        }
        const [method = "GET", , version = ""] = head.slice(0, head.search(/\r?\n/)).split(" ");
        const connection = headerFields(head).filter(([n]) => n === "connection")
          .map(([, v]) => v.toLowerCase()).join(",");
        const keepAlive = version === "HTTP/1.1" && !connection.includes("close");
        let upstream: Deno.UnixConn;
        try {
          upstream = await Deno.connect({ transport: "unix", path: options.upstreamPath });
        } catch (error) {
          onError(error);
          await writeAll(conn, simpleResponse("503 Service Unavailable", "Server is not ready"))
            .catch(() => {});
          return;
        }
        open.add(upstream);
        try {
          await writeAll(upstream, encoder.encode(rewriteHead(head, remote.hostname)));
          const body = new BodyEnd(framing);
          const bodySent = forwardBody(conn, upstream, body, rest).catch(() => undefined);
          // A response sent before its request's body was read leaves the
          // rest of that body on the connection: it cannot serve another.
          const again = await forwardResponse(upstream, conn, method, () => keepAlive && body.done);
          if (!again) return;
          const after = await bodySent;
          if (after === undefined) return;
          buffered = after;
        } finally {
          closeQuietly(upstream);
        }
      }
    } catch {
      // Either side went away.
    } finally {
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
      // Heads and bodies go out in separate writes: without this, Nagle's
      // algorithm holds the second until the client's delayed ACK (~40 ms).
      try {
        (conn as Deno.TcpConn).setNoDelay(true);
      } catch {
        // Not a TCP connection.
      }
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

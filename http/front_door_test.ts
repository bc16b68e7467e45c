import assert from "node:assert/strict";
import {
  BodyEnd,
  CLIENT_ADDRESS_HEADER,
  requestFraming,
  responseFraming,
  rewriteHead,
} from "./front_door.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** Feeds `text` one byte at a time; returns the index just after the body's end, or -1. */
function endOf(body: BodyEnd, text: string): number {
  const all = bytes(text);
  for (let i = 0; i < all.length; i++) {
    const end = body.feed(all.subarray(i, i + 1));
    if (end >= 0) return i + end;
  }
  return -1;
}

Deno.test("BodyEnd finds where fixed and chunked bodies end, byte by byte or at once", () => {
  assert.equal(endOf(new BodyEnd({ kind: "length", length: 5 }), "helloGET /"), 5);
  const chunked = "5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n";
  assert.equal(endOf(new BodyEnd({ kind: "chunked" }), chunked + "GET /next"), chunked.length);
  assert.equal(new BodyEnd({ kind: "chunked" }).feed(bytes(chunked + "GET /next")), chunked.length);
  assert.equal(endOf(new BodyEnd({ kind: "chunked" }), "3\r\nabc\r\n"), -1, "still open");
  assert.equal(endOf(new BodyEnd({ kind: "close" }), "stream..."), -1);
  assert.ok(new BodyEnd({ kind: "none" }).done);
});

Deno.test("requestFraming refuses ambiguous framing; responseFraming knows bodiless responses", () => {
  const head = (fields: string) => `POST / HTTP/1.1\r\nHost: h\r\n${fields}\r\n`;
  assert.deepEqual(requestFraming(head("Transfer-Encoding: chunked\r\n")), { kind: "chunked" });
  assert.deepEqual(requestFraming(head("")), { kind: "none" });
  assert.deepEqual(requestFraming(head("Content-Length: 7, 7\r\n")), { kind: "length", length: 7 });
  for (
    const bad of [
      "Content-Length: 3\r\nContent-Length: 4\r\n",
      "Content-Length: -1\r\n",
      "Transfer-Encoding: gzip, chunked\r\n",
      "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
    ]
  ) {
    assert.equal(typeof requestFraming(head(bad)), "string", bad);
  }
  assert.deepEqual(
    responseFraming("GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
    { kind: "none" },
  );
  assert.deepEqual(responseFraming("GET", "HTTP/1.1 100 Continue\r\n\r\n"), { kind: "none" });
  assert.deepEqual(
    responseFraming("GET", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
    { kind: "chunked" },
  );
  assert.deepEqual(responseFraming("POST", "HTTP/1.1 201 Created\r\ncontent-length: 12\r\n\r\n"), {
    kind: "length",
    length: 12,
  });
});

Deno.test("rewriteHead drops the client's copy of the address header and asks for one request", () => {
  const head = "POST /x HTTP/1.1\r\nHost: h\r\nX-Weft-Client-Address: 1.2.3.4\r\n" +
    "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n";
  const out = rewriteHead(head, "10.9.8.7");
  assert.equal(
    out,
    "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nconnection: close\r\n" +
      `${CLIENT_ADDRESS_HEADER}: 10.9.8.7\r\n\r\n`,
  );
});

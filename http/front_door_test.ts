import assert from "node:assert/strict";
import { CLIENT_ADDRESS_HEADER, ResponseEnd, rewriteHead } from "./front_door.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** Feeds `text` one byte at a time; returns the index of the byte that completed it, or -1. */
function completesAt(end: ResponseEnd, text: string): number {
  const all = bytes(text);
  for (let i = 0; i < all.length; i++) if (end.feed(all.subarray(i, i + 1))) return i;
  return -1;
}

Deno.test("ResponseEnd finds the end of fixed, chunked, bodiless and interim responses", () => {
  const fixed = "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello";
  assert.equal(completesAt(new ResponseEnd("POST"), fixed), fixed.length - 1);
  const chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
    "5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n";
  assert.equal(completesAt(new ResponseEnd("GET"), chunked), chunked.length - 1);
  const head = "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
  assert.equal(completesAt(new ResponseEnd("HEAD"), head), head.length - 1);
  const interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
  assert.equal(completesAt(new ResponseEnd("POST"), interim), interim.length - 1);
  // Without a length, the response ends with the connection.
  assert.equal(completesAt(new ResponseEnd("GET"), "HTTP/1.1 200 OK\r\n\r\nstream..."), -1);
  // A chunked stream still open is not complete.
  assert.equal(
    completesAt(
      new ResponseEnd("GET"),
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ),
    -1,
  );
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

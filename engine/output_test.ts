import assert from "node:assert/strict";
import { CHUNK_BYTES, decodeOutput, encodeOutput } from "./output.ts";
import { OutputError } from "./errors.ts";

Deno.test("encodeOutput keeps small outputs inline and returns what JSON keeps", () => {
  const out = encodeOutput("s", 1, { a: 1, when: new Date(0), gone: undefined }, 1024);
  assert.equal(out.ref.kind, "inline");
  assert.deepEqual(out.value, { a: 1, when: "1970-01-01T00:00:00.000Z" });
  assert.deepEqual(decodeOutput(out.ref, []), out.value);
  assert.equal(encodeOutput("s", 1, undefined, 1024).value, null);
});

Deno.test("encodeOutput splits large outputs into chunks that decode back", () => {
  const big = { text: "x".repeat(CHUNK_BYTES * 2 + 10) };
  const out = encodeOutput("s", 3, big, 1024 * 1024);
  assert.equal(out.ref.kind, "chunks");
  assert.equal(out.chunks.length, 3);
  assert.ok(out.chunks.every((c) => c.byteLength <= CHUNK_BYTES));
  assert.deepEqual(decodeOutput(out.ref, out.chunks), big);
});

Deno.test("encodeOutput refuses oversized and non-JSON outputs naming step, size and type", () => {
  assert.throws(
    () => encodeOutput("report", 1, "x".repeat(2_000), 1_000),
    (e: unknown) =>
      e instanceof OutputError &&
      /step 'report'.*too large: 2002 bytes, limit 1000/.test(e.message),
  );
  const cases: [unknown, RegExp][] = [
    [{ n: 10n }, /a bigint at output\.n/],
    [{ m: new Map() }, /a Map at output\.m/],
    [[1, () => 1], /a function at output\[1\]/],
    [{ x: NaN }, /the number NaN at output\.x/],
    [{ e: new Error("boom") }, /an Error at output\.e/],
    [{ b: new ArrayBuffer(1) }, /an ArrayBuffer at output\.b/],
    [[Symbol("s")], /a symbol at output\[0\]/],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => encodeOutput("s", 1, value, 1024), (e: unknown) => {
      assert.ok(e instanceof OutputError);
      assert.match(e.message, /not JSON-serializable/);
      assert.match(e.message, message);
      return true;
    });
  }
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => encodeOutput("s", 1, cyclic, 1024), /circular reference at output\.self/);
});

Deno.test("encodeOutput stores undefined inside arrays as null, as JSON does", () => {
  const out = encodeOutput("s", 1, { b: [undefined, 1, , 2] }, 1024);
  assert.deepEqual(out.value, { b: [null, 1, null, 2] });
  assert.deepEqual(decodeOutput(out.ref, []), { b: [null, 1, null, 2] });
  assert.deepEqual(encodeOutput("s", 1, [[undefined]], 1024).value, [[null]]);
});

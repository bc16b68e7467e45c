import assert from "node:assert/strict";
import { Admission } from "./admission.ts";

Deno.test("Admission lets in at most its limit, then waiters in arrival order", async () => {
  const gate = new Admission(2);
  const order: number[] = [];
  const entries = Array.from({ length: 3000 }, (_, i) => gate.enter().then(() => order.push(i)));
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(order, [0, 1]);
  assert.equal(gate.inside, 2);
  assert.equal(gate.waiting, 2998);
  for (let i = 0; i < 2998; i++) gate.leave();
  await Promise.all(entries);
  assert.deepEqual(order, Array.from({ length: 3000 }, (_, i) => i));
  assert.equal(gate.waiting, 0);
  assert.equal(gate.inside, 2);
  gate.leave();
  gate.leave();
  assert.equal(gate.inside, 0);
  await gate.enter();
  assert.equal(gate.inside, 1, "a gate emptied lets the next caller in at once");
});

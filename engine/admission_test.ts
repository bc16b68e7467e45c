import assert from "node:assert/strict";
import { Admission } from "./admission.ts";

Deno.test("Admission runs at most its limit at once, then waiting tasks in arrival order", async () => {
  const gate = new Admission(2);
  const order: number[] = [];
  const releases: (() => void)[] = [];
  const results = Array.from({ length: 3000 }, (_, i) =>
    gate.run(() => {
      order.push(i);
      return new Promise<number>((resolve) => releases.push(() => resolve(i)));
    }));
  assert.deepEqual(order, [0, 1]);
  assert.equal(gate.inside, 2);
  assert.equal(gate.waiting, 2998);
  for (let done = 0; done < 3000; done++) {
    while (releases.length === 0) await Promise.resolve();
    releases.shift()!();
    assert.ok(gate.inside <= 2, `${gate.inside} tasks inside`);
  }
  assert.deepEqual(await Promise.all(results), Array.from({ length: 3000 }, (_, i) => i));
  assert.deepEqual(order, Array.from({ length: 3000 }, (_, i) => i));
  assert.equal(gate.inside, 0);
  assert.equal(gate.waiting, 0);
});

Deno.test("Admission lets the next task in when one fails, and passes the failure on", async () => {
  const gate = new Admission(1);
  const failing = gate.run(() => Promise.reject(new Error("boom")));
  const throwing = gate.run(() => {
    throw new Error("sync boom");
  });
  const next = gate.run(() => Promise.resolve("next"));
  await assert.rejects(failing, /boom/);
  await assert.rejects(throwing, /sync boom/);
  assert.equal(await next, "next");
  await Promise.resolve();
  assert.equal(gate.inside, 0);
});

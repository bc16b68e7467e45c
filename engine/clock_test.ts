import assert from "node:assert/strict";
import { FakeClock, systemClock } from "./clock.ts";

Deno.test("systemClock does not fire a wait longer than the runtime's timer range early", async () => {
  let fired = false;
  const handle = systemClock.setTimeout(() => fired = true, 2 ** 31 + 1_000);
  await new Promise((r) => setTimeout(r, 20));
  systemClock.clearTimeout(handle);
  assert.equal(fired, false);
});

Deno.test("FakeClock fires due timers in order and only when moved", () => {
  const clock = new FakeClock(0);
  const fired: string[] = [];
  clock.setTimeout(() => fired.push("b"), 20);
  clock.setTimeout(() => fired.push("a"), 10);
  const c = clock.setTimeout(() => fired.push("c"), 30);
  clock.tick(9);
  assert.deepEqual(fired, []);
  clock.clearTimeout(c);
  clock.tick(100);
  assert.deepEqual(fired, ["a", "b"]);
  assert.equal(clock.now(), 109);
  assert.equal(clock.pendingTimers, 0);
});

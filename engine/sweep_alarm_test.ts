import assert from "node:assert/strict";
import { FakeClock } from "./clock.ts";
import { PARKED_MS } from "./keys.ts";
import { MAX_QUEUE_DELAY_MS, type PlannedMessage, SweepAlarm } from "./sweep_alarm.ts";

const sweep = (delayMs: number) => ({ value: { weft: "sweep" }, delayMs });

Deno.test("sweep alarm: one message covers every later due time, an earlier one plans another", () => {
  const clock = new FakeClock(10_000);
  const alarm = new SweepAlarm({ enabled: true, clock });
  const enqueues: PlannedMessage[] = [];
  alarm.plan(enqueues, 15_000);
  alarm.plan(enqueues, 15_000);
  alarm.plan(enqueues, 40_000);
  assert.deepEqual(enqueues, [sweep(5_000)]);
  alarm.plan(enqueues, 12_000);
  assert.deepEqual(enqueues, [sweep(5_000), sweep(2_000)]);
  assert.equal(alarm.plannedAt, 12_000);
  // Work already due gets a sweep at once.
  alarm.plan(enqueues, 9_000);
  assert.deepEqual(enqueues.at(-1), sweep(0));
  assert.equal(alarm.plannedAt, 10_000);
});

Deno.test("sweep alarm: a sweep that arrived lets the next plan write one; an early one does not", () => {
  const clock = new FakeClock(0);
  const alarm = new SweepAlarm({ enabled: true, clock });
  const enqueues: PlannedMessage[] = [];
  alarm.plan(enqueues, 1_000);
  // A sweep planned by someone else, or the queue's redelivery, arrives before ours is due.
  alarm.arrived(500);
  alarm.plan(enqueues, 2_000);
  assert.equal(enqueues.length, 1);
  alarm.arrived(1_000);
  assert.equal(alarm.plannedAt, undefined);
  clock.tick(1_000);
  alarm.plan(enqueues, 2_000);
  assert.deepEqual(enqueues, [sweep(1_000), sweep(1_000)]);
});

Deno.test("sweep alarm: after forget, whether a sweep is on the queue is unknown, so the next plan writes one", () => {
  const alarm = new SweepAlarm({ enabled: true, clock: new FakeClock(0) });
  const enqueues: PlannedMessage[] = [];
  alarm.plan(enqueues, 100);
  alarm.forget();
  alarm.plan(enqueues, 200);
  assert.deepEqual(enqueues, [sweep(100), sweep(200)]);
});

Deno.test("sweep alarm: capped at the queue's 30 days; nothing for parked work, without the queue, or while writes are refused", () => {
  const clock = new FakeClock(0);
  const far: PlannedMessage[] = [];
  new SweepAlarm({ enabled: true, clock }).plan(far, 90 * 24 * 3600 * 1000);
  assert.deepEqual(far, [sweep(MAX_QUEUE_DELAY_MS)]);

  const none: PlannedMessage[] = [];
  new SweepAlarm({ enabled: true, clock }).plan(none, PARKED_MS);
  new SweepAlarm({ enabled: false, clock }).plan(none, 1_000);
  let writable = false;
  const gated = new SweepAlarm({ enabled: true, clock, allowed: () => writable });
  gated.plan(none, 1_000);
  assert.deepEqual(none, []);
  assert.equal(gated.plannedAt, undefined);
  writable = true;
  gated.plan(none, 1_000);
  assert.deepEqual(none, [sweep(1_000)]);
});

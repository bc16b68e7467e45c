/**
 * The KV queue as the engine's durable alarm. In-process timers are lost
 * with the process (and an isolate on some platforms sleeps until a queue
 * message wakes it), so the engine keeps one sweep message on the queue,
 * due no later than its earliest timer. A sweep finds the due work in the
 * due index and in the runs held; one that finds nothing to do costs a
 * claim round. One message covers every run, so the queue holds a handful
 * of messages, not one per step or timer (a large queue slows every
 * delivery; see KV_FACTS).
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import { PARKED_MS } from "./keys.ts";

/** The longest delay Deno KV's queue accepts: 30 days. */
export const MAX_QUEUE_DELAY_MS = 30 * 24 * 3600 * 1000;

/** A queue message to write, as a transaction carries it. */
export interface PlannedMessage {
  /** The message. */
  value: unknown;
  /** Its delay, in milliseconds. */
  delayMs?: number;
}

/** What a {@linkcode SweepAlarm} needs. */
export interface SweepAlarmOptions {
  /** Whether the engine uses the KV queue at all (`useQueue`). */
  enabled: boolean;
  /** Asked before each plan: false while nothing may be written (a full disk). @default {always} */
  allowed?: () => boolean;
  /** The source of time. */
  clock: Clock;
}

/**
 * Plans sweep messages: at most one more for each time the earliest due
 * work moves earlier, none while one already planned comes first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FakeClock } from "./clock.ts";
 * import { SweepAlarm } from "./sweep_alarm.ts";
 * const alarm = new SweepAlarm({ enabled: true, clock: new FakeClock(1_000) });
 * const enqueues: { value: unknown; delayMs?: number }[] = [];
 * alarm.plan(enqueues, 6_000);
 * alarm.plan(enqueues, 9_000); // the planned sweep comes first
 * assert.deepEqual(enqueues, [{ value: { weft: "sweep" }, delayMs: 5_000 }]);
 * alarm.arrived(6_000);
 * alarm.plan(enqueues, 9_000);
 * assert.equal(enqueues.length, 2);
 * ```
 */
export class SweepAlarm {
  readonly #enabled: boolean;
  readonly #allowed: () => boolean;
  readonly #clock: Clock;
  /** When the earliest sweep message still on the queue is due, if any. */
  #dueAt: number | undefined;

  /** An alarm with no sweep planned. */
  constructor(options: SweepAlarmOptions) {
    this.#enabled = options.enabled;
    this.#allowed = options.allowed ?? (() => true);
    this.#clock = options.clock;
  }

  /** When the earliest sweep planned is due, if one is. */
  get plannedAt(): number | undefined {
    return this.#dueAt;
  }

  /**
   * Adds a sweep message to `enqueues` (the write that makes work due at
   * `dueAt`) unless a sweep planned comes no later. Work parked until an
   * event (`PARKED_MS`) needs none. A sweep further ahead than the queue's
   * 30 days comes at 30 days, and that sweep plans the next.
   */
  plan(enqueues: PlannedMessage[], dueAt: number): void {
    if (!this.#enabled || dueAt >= PARKED_MS || !this.#allowed()) return;
    if (this.#dueAt !== undefined && this.#dueAt <= dueAt) return;
    const now = this.#clock.now();
    const delayMs = Math.min(MAX_QUEUE_DELAY_MS, Math.max(0, dueAt - now));
    this.#dueAt = now + delayMs;
    enqueues.push({ value: { weft: "sweep" }, delayMs });
  }

  /** A sweep arrived at `now`: the one planned has fired if it was due. */
  arrived(now: number): void {
    if (this.#dueAt !== undefined && this.#dueAt <= now) this.#dueAt = undefined;
  }

  /**
   * Whether a planned sweep is on the queue is no longer known (a write
   * carrying one failed, or the worker dropped its runs): the next plan
   * writes one.
   */
  forget(): void {
    this.#dueAt = undefined;
  }
}

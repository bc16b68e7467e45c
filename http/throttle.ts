/**
 * Throttling of token guesses: after a few wrong tokens from one client
 * address, every further try from it waits a delay that doubles with each
 * wrong token, up to a cap; a right token clears the address's record.
 *
 * @module
 */

/** Options of {@linkcode createLoginThrottle}. */
export interface LoginThrottleOptions {
  /** Wrong tokens allowed from one address before delays start. @default {5} */
  freeFailures?: number;
  /** The first delay, in milliseconds. @default {1000} */
  baseDelayMs?: number;
  /** The longest delay, in milliseconds. @default {300000} (5 min) */
  maxDelayMs?: number;
  /** An address's record is forgotten this long after its last wrong token. @default {900000} (15 min) */
  forgetAfterMs?: number;
  /** Most addresses remembered; the oldest are forgotten first. @default {10000} */
  maxClients?: number;
  /** The clock, in epoch milliseconds. @default {Date.now} */
  now?: () => number;
}

/** What the throttle says of one try. */
export type ThrottleVerdict =
  /** The token may be checked. */
  | { allowed: true }
  /** Refused unchecked: try again in `retryAfterMs`. */
  | { allowed: false; retryAfterMs: number };

/** Token-guess throttling per client address: see {@linkcode createLoginThrottle}. */
export interface LoginThrottle {
  /** Whether a try from `client` may be checked now. */
  check(client: string): ThrottleVerdict;
  /** Records a wrong token; returns the failures in a row and the delay now imposed. */
  fail(client: string): { failures: number; delayMs: number };
  /** Records a right token: the address's record is cleared. */
  succeed(client: string): void;
}

function positive(name: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new RangeError(
      `Cannot throttle logins as '${name}' must be an integer >= ${min}: current value is ${value}`,
    );
  }
  return value;
}

/**
 * Creates a throttle. With the defaults, the sixth wrong token in a row
 * from one address imposes 1 s, the seventh 2 s, then 4 s, ... up to 5 min.
 *
 * @throws {RangeError} on an option that is not a positive integer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { createLoginThrottle } from "./throttle.ts";
 * let nowMs = 0;
 * const throttle = createLoginThrottle({ freeFailures: 1, baseDelayMs: 1_000, now: () => nowMs });
 * throttle.fail("10.0.0.1");
 * assert.equal(throttle.check("10.0.0.1").allowed, true);
 * assert.equal(throttle.fail("10.0.0.1").delayMs, 1_000);
 * assert.deepEqual(throttle.check("10.0.0.1"), { allowed: false, retryAfterMs: 1_000 });
 * nowMs = 1_000;
 * assert.equal(throttle.check("10.0.0.1").allowed, true);
 * ```
 */
export function createLoginThrottle(options: LoginThrottleOptions = {}): LoginThrottle {
  const freeFailures = positive("freeFailures", options.freeFailures ?? 5, 0);
  const baseDelayMs = positive("baseDelayMs", options.baseDelayMs ?? 1_000, 1);
  const maxDelayMs = positive("maxDelayMs", options.maxDelayMs ?? 300_000, baseDelayMs);
  const forgetAfterMs = positive("forgetAfterMs", options.forgetAfterMs ?? 900_000, 1);
  const maxClients = positive("maxClients", options.maxClients ?? 10_000, 1);
  const now = options.now ?? Date.now;
  /** By address, oldest first (a Map keeps insertion order; each failure re-inserts). */
  const records = new Map<string, { failures: number; lastAt: number; until: number }>();

  const current = (client: string) => {
    const rec = records.get(client);
    if (rec && now() - rec.lastAt >= Math.max(forgetAfterMs, rec.until - rec.lastAt)) {
      records.delete(client);
      return undefined;
    }
    return rec;
  };

  return {
    check(client) {
      const rec = current(client);
      const wait = rec ? rec.until - now() : 0;
      return wait > 0 ? { allowed: false, retryAfterMs: wait } : { allowed: true };
    },
    fail(client) {
      const at = now();
      const failures = (current(client)?.failures ?? 0) + 1;
      const over = failures - freeFailures;
      const delayMs = over <= 0
        ? 0
        : Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(over - 1, 30));
      records.delete(client);
      records.set(client, { failures, lastAt: at, until: at + delayMs });
      while (records.size > maxClients) records.delete(records.keys().next().value!);
      return { failures, delayMs };
    },
    succeed(client) {
      records.delete(client);
    },
  };
}

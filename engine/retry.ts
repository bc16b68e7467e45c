/**
 * Retry policies: defaults, validation and exponential backoff with jitter.
 *
 * @module
 */

/**
 * How a step is retried. Every field is optional; missing ones take the
 * workflow's defaults, then {@linkcode DEFAULT_RETRY}.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included. At least 1. @default {3} */
  maxAttempts?: number;
  /** Wait before the second attempt. @default {100} */
  initialDelayMs?: number;
  /** Each wait is the previous one times this. At least 1. @default {2} */
  backoffFactor?: number;
  /** No wait is longer than this (before jitter). @default {30000} */
  maxDelayMs?: number;
  /** Spread each wait by up to this fraction either way, 0..1. @default {0.2} */
  jitter?: number;
}

/** A retry policy with every field set. */
export type ResolvedRetryPolicy = Required<RetryPolicy>;

/**
 * The retry policy used where neither the step nor the workflow set one.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { DEFAULT_RETRY } from "./retry.ts";
 * assert.ok(DEFAULT_RETRY.maxAttempts === 3);
 * ```
 */
export const DEFAULT_RETRY: Readonly<ResolvedRetryPolicy> = Object.freeze({
  maxAttempts: 3,
  initialDelayMs: 100,
  backoffFactor: 2,
  maxDelayMs: 30_000,
  jitter: 0.2,
});

/**
 * Returns the problem with a retry policy, or `undefined` if it is valid.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { retryPolicyProblem } from "./retry.ts";
 * assert.ok(retryPolicyProblem({ jitter: 2 })?.includes("'retry.jitter'"));
 * ```
 */
export function retryPolicyProblem(policy: RetryPolicy): string | undefined {
  const { maxAttempts, initialDelayMs, backoffFactor, maxDelayMs, jitter } = policy;
  if (maxAttempts !== undefined && (!Number.isInteger(maxAttempts) || maxAttempts < 1)) {
    return `'retry.maxAttempts' must be an integer >= 1: current value is ${maxAttempts}`;
  }
  if (initialDelayMs !== undefined && !(Number.isFinite(initialDelayMs) && initialDelayMs >= 0)) {
    return `'retry.initialDelayMs' must be a finite number >= 0: current value is ${initialDelayMs}`;
  }
  if (backoffFactor !== undefined && !(Number.isFinite(backoffFactor) && backoffFactor >= 1)) {
    return `'retry.backoffFactor' must be a finite number >= 1: current value is ${backoffFactor}`;
  }
  if (maxDelayMs !== undefined && !(Number.isFinite(maxDelayMs) && maxDelayMs >= 0)) {
    return `'retry.maxDelayMs' must be a finite number >= 0: current value is ${maxDelayMs}`;
  }
  if (jitter !== undefined && !(jitter >= 0 && jitter <= 1)) {
    return `'retry.jitter' must be between 0 and 1: current value is ${jitter}`;
  }
  return undefined;
}

/**
 * The wait before attempt `nextAttempt` (2 for the first retry):
 * `min(maxDelayMs, initialDelayMs * backoffFactor^(nextAttempt - 2))`, then
 * spread uniformly by `± jitter` of itself, never below 0.
 *
 * @param random A function returning a number in [0, 1), for tests.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { backoffDelayMs, DEFAULT_RETRY } from "./retry.ts";
 * const policy = { ...DEFAULT_RETRY, jitter: 0 };
 * assert.ok(backoffDelayMs(policy, 2) === 100);
 * assert.ok(backoffDelayMs(policy, 3) === 200);
 * ```
 */
export function backoffDelayMs(
  policy: ResolvedRetryPolicy,
  nextAttempt: number,
  random: () => number = Math.random,
): number {
  const exponent = Math.max(0, nextAttempt - 2);
  const base = Math.min(
    policy.maxDelayMs,
    policy.initialDelayMs * policy.backoffFactor ** exponent,
  );
  const spread = base * policy.jitter * (random() * 2 - 1);
  return Math.max(0, Math.round(base + spread));
}

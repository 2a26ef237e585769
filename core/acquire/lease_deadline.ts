/**
 * Lease deadlines (issue 14): `maxHoldMs` on an acquire, or limiter-wide.
 * A lease whose deadline passed refuses `adjust`, `release`, `consume` and
 * `commit` with {@linkcode LeaseDeadlineExceeded}; a rollback is a no-op.
 *
 * **Settlement rule.** At the deadline the lease is settled as if its holder
 * had crashed: every token it wrote (the estimate charged on acquire, each
 * `consume`) stays charged, adjustments not yet written (`adjust`,
 * `release`) are dropped, and nothing is given back. So a late holder can
 * never give back (or take) after the point from which others may already
 * count on the state (a concurrency slot, in particular, is free for others
 * from its deadline on). The deadline is read from the limiter's clock and
 * checked lazily at each call: no timer runs.
 *
 * @module
 */
import { ValidationError } from "../errors.ts";

/** The `maxHoldMs` option of an acquire and of the limiter. */
export interface LeaseDeadlineOptions {
  /**
   * Deadline of the lease, in milliseconds from the start of its acquire.
   * After it the lease refuses `adjust`, `release`, `consume` and `commit`
   * with `LeaseDeadlineExceeded`, a rollback is a no-op, and what it
   * charged (the estimate) stays charged: nothing is given back. On the
   * limiter: the default of every acquire (an acquire's own wins).
   * @default undefined (no deadline)
   */
  readonly maxHoldMs?: number;
}

/**
 * Checks a `maxHoldMs` value: a positive, finite number of milliseconds,
 * or `undefined` (no deadline).
 *
 * @throws {ValidationError} any other value
 */
export function validateMaxHold(
  value: unknown,
  field = "maxHoldMs",
): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new ValidationError(
      field,
      value,
      "must be a positive, finite number of milliseconds (or omitted for no deadline)",
    );
  }
  return value;
}

/**
 * The deadline of a lease acquired at `startMs` on `clock`: the shortest of
 * the call's `maxHoldMs` (else the limiter's) and `extraMs` (a concurrency
 * limit's `leaseMs`), or `null` when there is none.
 */
export function holdDeadline(
  startMs: number,
  maxHoldMs: number | undefined,
  extraMs: number | null = null,
): number | null {
  const ms = Math.min(maxHoldMs ?? Infinity, extraMs ?? Infinity);
  return Number.isFinite(ms) ? startMs + ms : null;
}

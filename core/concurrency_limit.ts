/**
 * The concurrency (in-flight) limit model (issue 14): at most `max` leases
 * of one entity and resource hold a slot at once; a slot is taken on
 * acquire and freed when the lease ends (commit or rollback), or when its
 * `leaseMs` passes (a crashed holder's slot comes back by itself). Create
 * one with {@linkcode Limit.concurrent}; pass it in an acquire's
 * `concurrency` option.
 *
 * @module
 */
import { ValidationError } from "./errors.ts";
import { validateLimitName } from "./validation.ts";

/** Most slots of one concurrency limit (each slot is two attributes of one item). */
export const MAX_CONCURRENT_SLOTS = 500;
/** Longest `leaseMs` of a concurrency limit: one day (the slot item's `ttl` is two days ahead). */
export const MAX_CONCURRENT_LEASE_MS = 86_400_000;

/** Options of {@linkcode ConcurrencyLimit}. */
export interface ConcurrencyLimitOptions {
  /**
   * How long a holder may keep its slot: the lease's deadline (its
   * `adjust`, `consume` and `commit` are refused after it) and the time
   * after which others may take the slot of a holder that never ended its
   * lease. At most one day.
   */
  readonly leaseMs: number;
}

/**
 * An in-flight limit: at most `max` unexpired holders at once.
 *
 * @example Ten requests in flight per key, each for at most a minute
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit } from "./limit.ts";
 *
 * const inflight = Limit.concurrent("inflight", 10, { leaseMs: 60_000 });
 * assert.equal(inflight.max, 10);
 * assert.equal(inflight.kind, "concurrent");
 * ```
 */
export class ConcurrencyLimit {
  /** Tells it apart from a token-bucket `Limit`. */
  readonly kind = "concurrent" as const;
  /** Limit name (a slot item per entity, resource and name). */
  readonly name: string;
  /** Most holders at once. */
  readonly max: number;
  /** Milliseconds a slot is held at most. */
  readonly leaseMs: number;

  /**
   * Validates and freezes the limit.
   *
   * @throws {ValidationError} `max` not a whole number in [1, 500], `leaseMs` not in (0, one day]
   */
  constructor(name: string, max: number, options: ConcurrencyLimitOptions) {
    this.name = validateLimitName(name);
    if (
      !Number.isSafeInteger(max) || max < 1 || max > MAX_CONCURRENT_SLOTS
    ) {
      throw new ValidationError(
        "max",
        max,
        `must be a whole number from 1 to ${MAX_CONCURRENT_SLOTS}`,
      );
    }
    const leaseMs = options?.leaseMs;
    if (
      typeof leaseMs !== "number" || !Number.isFinite(leaseMs) ||
      leaseMs <= 0 || leaseMs > MAX_CONCURRENT_LEASE_MS
    ) {
      throw new ValidationError(
        "leaseMs",
        leaseMs,
        "must be a number of milliseconds above 0 and at most 86400000 (one day)",
      );
    }
    this.max = max;
    this.leaseMs = leaseMs;
    Object.freeze(this);
  }
}

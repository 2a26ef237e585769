/**
 * Refusals remembered in memory: until the Retry-After passes, a request
 * for the same entity and resource asking at least as much is refused
 * without a DynamoDB call. It never admits, so it cannot over-admit.
 *
 * @module
 */
import { BoundedMap } from "../_bounded_map.ts";
import type { Clock } from "../clock.ts";
import { RateLimitExceeded } from "../errors.ts";

interface Refusal {
  readonly until: number;
  readonly amounts: ReadonlyMap<string, bigint>;
  readonly error: RateLimitExceeded;
}

/** The cache key of an entity and resource in a namespace. */
export function refusalKey(
  ns: string,
  entityId: string,
  resource: string,
): string {
  return `${ns}\u0000${entityId}\u0000${resource}`;
}

/** Refusals by {@linkcode refusalKey}, at most `size` (0 disables), oldest evicted first. */
export class RefusalCache {
  readonly #refusals: BoundedMap<string, Refusal>;
  readonly #clock: Clock;
  readonly #size: number;

  /** A cache of at most `size` refusals, timed by `clock`. */
  constructor(size: number, clock: Clock) {
    this.#size = size;
    this.#clock = clock;
    this.#refusals = new BoundedMap(size, { renewOnSet: false });
  }

  /**
   * Throws the remembered refusal of `key` when it still stands and
   * `consume` asks at least as much of every limit it refused.
   *
   * @throws {RateLimitExceeded} with Retry-Afters shortened to the time left
   */
  check(key: string, consume: ReadonlyMap<string, bigint>): void {
    const r = this.#refusals.get(key);
    if (!r) return;
    const now = this.#clock.now();
    if (now >= r.until) {
      this.#refusals.delete(key);
      return;
    }
    for (const [name, amount] of r.amounts) {
      if ((consume.get(name) ?? 0n) < amount) return; // a smaller request may fit: ask DynamoDB
    }
    const wait = (r.until - now) / 1000;
    throw new RateLimitExceeded(
      r.error.statuses.map((s) =>
        s.exceeded
          ? { ...s, retryAfterSeconds: Math.min(s.retryAfterSeconds, wait) }
          : s
      ),
    );
  }

  /** Remembers a refusal of `consume` until its shortest Retry-After. */
  remember(
    key: string,
    consume: ReadonlyMap<string, bigint>,
    e: RateLimitExceeded,
  ): void {
    if (this.#size <= 0) return;
    const amounts = new Map<string, bigint>();
    for (const v of e.violations) {
      const a = consume.get(v.limitName);
      if (a !== undefined && a > 0n) amounts.set(v.limitName, a);
    }
    if (amounts.size === 0) return;
    const wait = Math.min(...e.violations.map((v) => v.retryAfterSeconds));
    this.#refusals.set(key, {
      until: this.#clock.now() + Math.floor(wait * 1000),
      amounts,
      error: e,
    });
  }
}

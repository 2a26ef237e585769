/**
 * The local fallback limiter (issue 14): with `onUnavailable: "local"`, an
 * acquire that cannot reach DynamoDB (a timeout, throttling after the SDK's
 * retries, a network error, the call's deadline) is decided by an
 * in-process token bucket per entity, resource and limit, sized as a
 * `share` of the limit: capacity `share × capacity`, refill `share ×
 * refill_amount` per period, full when first used. All or nothing across
 * the call's limits and, with cascade, the parent's.
 *
 * **What it admits.** Per process and per bucket, over an outage of `T`
 * seconds: at most `share × (capacity + refill rate × T)`. With `P`
 * processes sharing a limit, choose `share ≤ 1 / P` to keep the sum under
 * the limit.
 *
 * **What it reconciles: nothing it cannot prove.** Local admissions are not
 * written to DynamoDB afterwards (the stored buckets never see them), a
 * lease admitted locally (`lease.local`, `lease.unchecked`) writes nothing:
 * its `consume` and `adjust` are not checked, its commit is a no-op, and its
 * rollback gives its tokens back to the local bucket only (in-process
 * state, which is provable). Charges that may stand in DynamoDB from the
 * failed attempt are reported as stranded, as always.
 *
 * **Where the limits come from.** The limits (and cascade link) this
 * process last used for the entity and resource, remembered on each
 * acquire that reached DynamoDB, or the call's `limits`, or the source's
 * cache when it answers within a short grace. When none is known the call
 * fails as with `block` (`RateLimiterUnavailable`): a bucket cannot be
 * sized from nothing.
 *
 * **Concurrency limits.** Each gets `floor(share × max)` local slots per
 * process, taken all or nothing with the local buckets and freed when the
 * lease ends or `leaseMs` after the acquire started (0 slots: such a call is
 * refused locally).
 *
 * **Coming back.** After a failure, acquires go straight to the local
 * buckets for `probeIntervalMs` (no wait on a dead endpoint); the first
 * acquire after that tries DynamoDB again, and a success ends the fallback.
 *
 * @module
 */
import { BoundedMap } from "./_bounded_map.ts";
import type { Clock } from "./clock.ts";
import { RateLimitExceeded, ValidationError } from "./errors.ts";
import type { ConcurrencyLimit } from "./concurrency_limit.ts";
import { Limit } from "./limit.ts";
import type { LimitStatus } from "./models.ts";

/** Options of the local fallback limiter (`RateLimiterOptions.localFallback`). */
export interface LocalFallbackOptions {
  /** Share of each limit (capacity and refill) one process may admit alone, in (0, 1]. */
  readonly share: number;
  /**
   * While DynamoDB is failing, acquires skip it for this long after each
   * failure (then one tries it again). @default 1000
   */
  readonly probeIntervalMs?: number;
  /** Most entity/resource pairs (and local buckets) remembered. @default 10000 */
  readonly maxEntries?: number;
}

/** The limiter's `localFallback` option. */
export interface LocalFallbackLimiterOptions {
  /**
   * The local fallback limiter: when DynamoDB is unavailable, admit from
   * in-process buckets holding `share` of each limit, and make `"local"`
   * this limiter's `onUnavailable` (a call's own `onUnavailable` still
   * wins; the stored system setting is then not read). Concurrency
   * limits get `floor(share × max)` local slots.
   * @default undefined (no local fallback)
   */
  readonly localFallback?: LocalFallbackOptions;
}

/** One side of a local admission: an entity and the limits its bucket is sized from. */
export interface LocalSide {
  /** Entity id. */
  readonly entityId: string;
  /** Its limits (only those named in the charge are used). */
  readonly limits: readonly Limit[];
}

interface LocalBucket {
  /** Millitokens. */
  tk: number;
  /** Epoch ms of `tk`. */
  at: number;
}

/**
 * Checks the options.
 *
 * @throws {ValidationError} a share outside (0, 1], a bad interval or size
 */
export function resolveLocalFallback(
  options: LocalFallbackOptions,
): Required<LocalFallbackOptions> {
  const share = options?.share;
  if (typeof share !== "number" || !(share > 0 && share <= 1)) {
    throw new ValidationError(
      "localFallback.share",
      share,
      "must be a number in (0, 1], e.g. 0.1 for a tenth of each limit",
    );
  }
  const probe = options.probeIntervalMs ?? 1000;
  if (typeof probe !== "number" || !(probe >= 0) || !Number.isFinite(probe)) {
    throw new ValidationError(
      "localFallback.probeIntervalMs",
      probe,
      "must be a finite number of milliseconds, 0 or more",
    );
  }
  const max = options.maxEntries ?? 10_000;
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new ValidationError(
      "localFallback.maxEntries",
      max,
      "must be a whole number, 1 or more",
    );
  }
  return { share, probeIntervalMs: probe, maxEntries: max };
}

/**
 * Checks an acquire's `onUnavailable`: `allow`, `block`, or `local` when
 * the limiter has a local fallback.
 *
 * @throws {ValidationError} any other value
 */
export function validateOnUnavailable(value: unknown, hasLocal: boolean): void {
  if (
    value === undefined || value === "allow" || value === "block" ||
    (value === "local" && hasLocal)
  ) return;
  throw new ValidationError(
    "on_unavailable",
    value,
    hasLocal
      ? "must be 'allow', 'block' or 'local'"
      : "must be 'allow' or 'block' ('local' needs the limiter's localFallback option)",
  );
}

/** In-process token buckets and what this process knows of each entity's limits. */
export class LocalFallback {
  /** The resolved options. */
  readonly options: Required<LocalFallbackOptions>;
  readonly #clock: Clock;
  readonly #limits: BoundedMap<string, readonly Limit[]>;
  readonly #buckets: BoundedMap<string, LocalBucket>;
  /** Local holders per entity, resource and concurrency limit: holder → expiry. */
  readonly #slots: BoundedMap<string, Map<symbol, number>>;
  #downUntil = -Infinity;
  /** Acquires admitted locally since the limiter was created. */
  admitted = 0;

  /** Creates empty local state. */
  constructor(options: LocalFallbackOptions, clock: Clock) {
    this.options = resolveLocalFallback(options);
    this.#clock = clock;
    this.#limits = new BoundedMap(this.options.maxEntries);
    this.#buckets = new BoundedMap(this.options.maxEntries * 4);
    this.#slots = new BoundedMap(this.options.maxEntries);
  }

  /** Remembers the limits an acquire that reached DynamoDB used. */
  remember(entityId: string, resource: string, limits: readonly Limit[]): void {
    const k = `${entityId}\u0000${resource}`;
    if (this.#limits.get(k) !== limits) this.#limits.set(k, limits);
  }

  /** The limits last remembered for the pair. */
  limitsOf(entityId: string, resource: string): readonly Limit[] | undefined {
    return this.#limits.get(`${entityId}\u0000${resource}`);
  }

  /** Whether acquires should skip DynamoDB now (a failure was seen less than `probeIntervalMs` ago). */
  get down(): boolean {
    return this.#clock.now() < this.#downUntil;
  }

  /** Records a failure of DynamoDB. */
  markDown(): void {
    this.#downUntil = this.#clock.now() + this.options.probeIntervalMs;
  }

  /** Records a success of DynamoDB: the fallback ends. */
  markUp(): void {
    this.#downUntil = -Infinity;
  }

  #state(key: string, limit: Limit, now: number): LocalBucket & {
    cap: number;
    perMs: number;
  } {
    const share = this.options.share;
    const cap = Math.floor(limit.capacity * 1000 * share);
    const perMs = (limit.refillAmount * share) / limit.refillPeriodSeconds;
    const b = this.#buckets.get(key) ?? { tk: cap, at: now };
    const tk = Math.min(cap, b.tk + Math.max(0, now - b.at) * perMs);
    return { tk, at: now, cap, perMs };
  }

  /**
   * Takes `charge` (millitokens per limit name) from every side's local
   * buckets, all or nothing, and returns the give-back.
   *
   * @throws {RateLimitExceeded} a local bucket cannot cover its part; nothing was taken
   */
  admit(
    sides: readonly LocalSide[],
    resource: string,
    charge: ReadonlyMap<string, bigint>,
  ): () => void {
    const now = this.#clock.now();
    const plan: { key: string; want: number; tk: number; cap: number }[] = [];
    const statuses: LimitStatus[] = [];
    for (const side of sides) {
      for (const limit of side.limits) {
        const a = charge.get(limit.name);
        // A shadow limit never refuses (#14), locally either.
        if (a === undefined || a <= 0n || limit.shadow) continue;
        const want = Number(a);
        const key = `${side.entityId}\u0000${resource}\u0000${limit.name}`;
        const s = this.#state(key, limit, now);
        const ok = s.tk >= want;
        statuses.push({
          entityId: side.entityId,
          resource,
          limitName: limit.name,
          limit,
          available: Math.floor(s.tk / 1000),
          requested: want / 1000,
          exceeded: !ok,
          retryAfterSeconds: ok
            ? 0
            : want > s.cap
            ? this.options.probeIntervalMs / 1000
            : (want - s.tk) / s.perMs / 1000,
        });
        plan.push({ key, want, tk: s.tk, cap: s.cap });
      }
    }
    if (statuses.some((s) => s.exceeded)) throw new RateLimitExceeded(statuses);
    for (const p of plan) {
      this.#buckets.set(p.key, { tk: p.tk - p.want, at: now });
    }
    this.admitted++;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const at = this.#clock.now();
      for (const p of plan) {
        const b = this.#buckets.get(p.key);
        if (b) b.tk = Math.min(p.cap, b.tk + p.want);
        else this.#buckets.set(p.key, { tk: p.cap, at });
      }
    };
  }

  /**
   * Takes a local slot of every concurrency limit (all or nothing): at most
   * `floor(share × max)` unexpired local holders each, a holder expiring
   * `leaseMs` after `start`. Returns the release.
   *
   * @throws {RateLimitExceeded} a limit has no local slot free; nothing was taken
   */
  takeSlots(
    entityId: string,
    resource: string,
    limits: readonly ConcurrencyLimit[],
    start: number,
  ): () => void {
    const now = this.#clock.now();
    const statuses: LimitStatus[] = [];
    const maps: Map<symbol, number>[] = [];
    for (const limit of limits) {
      const key = `${entityId}\u0000${resource}\u0000${limit.name}`;
      const held = this.#slots.get(key) ?? new Map<symbol, number>();
      for (const [h, expiry] of held) if (expiry <= now) held.delete(h);
      this.#slots.set(key, held);
      maps.push(held);
      const most = Math.floor(this.options.share * limit.max);
      const soonest = Math.min(...held.values());
      statuses.push({
        entityId,
        resource,
        limitName: limit.name,
        limit: new Limit(
          limit.name,
          limit.max,
          limit.max,
          Math.max(1, Math.ceil(limit.leaseMs / 1000)),
        ),
        available: Math.max(0, most - held.size),
        requested: 1,
        exceeded: held.size >= most,
        retryAfterSeconds: held.size < most
          ? 0
          : Number.isFinite(soonest)
          ? Math.max(0.001, (soonest - now) / 1000)
          : this.options.probeIntervalMs / 1000,
      });
    }
    if (statuses.some((s) => s.exceeded)) throw new RateLimitExceeded(statuses);
    const holder = Symbol("local holder");
    limits.forEach((l, i) => maps[i]?.set(holder, start + l.leaseMs));
    return () => {
      for (const m of maps) m.delete(holder);
    };
  }
}

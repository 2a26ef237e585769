/**
 * The config cache (spec 02 §8): time-limited slots for the four stored
 * levels, negative caching, hit/miss counters, and de-duplication of
 * concurrent fetches of the same slot.
 *
 * @module
 */
import type { Clock } from "./clock.ts";
import type { Limit } from "./limit.ts";
import type { CacheStats, OnUnavailable } from "./models.ts";

/** The cached content of one config item (`null` limits: no item). */
export interface ConfigSlot {
  /** Limits at this level (`[]` when not configured). */
  readonly limits: readonly Limit[];
  /** System level only: `on_unavailable`. */
  readonly onUnavailable: OnUnavailable | null;
  /** System level only: `audit_retention_days`. */
  readonly auditRetentionDays: number | null;
}

interface Entry {
  readonly value: ConfigSlot;
  readonly expiresAt: number;
}

/** A TTL cache keyed by config item key (`PK\u0000SK`). */
export class ConfigCache {
  readonly #clock: Clock;
  readonly #ttlMs: number;
  readonly #entries = new Map<string, Entry>();
  #hits = 0;
  #misses = 0;

  /** `ttlSeconds` 0 disables caching. */
  constructor(clock: Clock, ttlSeconds: number) {
    this.#clock = clock;
    this.#ttlMs = Math.max(0, ttlSeconds) * 1000;
  }

  /** A fresh slot, or `undefined` (counted as a hit or a miss). */
  get(key: string): ConfigSlot | undefined {
    const e = this.#entries.get(key);
    if (e && e.expiresAt > this.#clock.now()) {
      this.#hits++;
      return e.value;
    }
    if (e) this.#entries.delete(key);
    this.#misses++;
    return undefined;
  }

  /**
   * The fresh slots of every key in `keys` (counted as hits), or `null`
   * when one is missing or stale (nothing counted: the caller then takes
   * them one by one with {@linkcode ConfigCache.get}). Reads the clock once.
   */
  getAll(keys: readonly string[]): ConfigSlot[] | null {
    const now = this.#clock.now();
    const out: ConfigSlot[] = [];
    for (const key of keys) {
      const e = this.#entries.get(key);
      if (!e || e.expiresAt <= now) return null;
      out.push(e.value);
    }
    this.#hits += keys.length;
    return out;
  }

  /** Stores a slot (no-op when caching is disabled). */
  set(key: string, value: ConfigSlot): void {
    if (this.#ttlMs === 0) return;
    this.#entries.set(key, {
      value,
      expiresAt: this.#clock.now() + this.#ttlMs,
    });
  }

  /** Forgets one slot. */
  evict(key: string): void {
    this.#entries.delete(key);
  }

  /** Forgets everything. */
  clear(): void {
    this.#entries.clear();
  }

  /** Counters. */
  stats(): CacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      size: this.#entries.size,
      ttlSeconds: this.#ttlMs / 1000,
    };
  }
}

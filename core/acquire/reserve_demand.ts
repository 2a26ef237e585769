/**
 * What a process asked of each bucket limit recently, for sizing local
 * reserve slices (`acquire/reserve.ts`): a sliding-window estimate over two
 * fixed windows (the current one, and the previous one weighted by how much
 * of it the sliding window still covers).
 *
 * @module
 */
import { BoundedMap } from "../_bounded_map.ts";

interface Window {
  start: number;
  current: bigint;
  previous: bigint;
}

/** Recent demand per key, over a window of `windowMs`. */
export class RecentDemand {
  readonly #windowMs: number;
  readonly #windows: BoundedMap<string, Window>;

  /**
   * Tracks at most `maxKeys` keys (the oldest go first).
   *
   * @example Half of the previous window still counts halfway through the next
   * ```ts
   * import assert from "node:assert/strict";
   * import { RecentDemand } from "./reserve_demand.ts";
   *
   * const d = new RecentDemand(1000, 10);
   * d.record("k", 400n, 0);
   * d.record("k", 100n, 1500);
   * assert.equal(d.recent("k", 1500), 300n); // 100 + 400 / 2
   * assert.equal(d.recent("k", 3500), 0n);
   * ```
   */
  constructor(windowMs: number, maxKeys: number) {
    this.#windowMs = windowMs;
    this.#windows = new BoundedMap(maxKeys);
  }

  #roll(w: Window, now: number): void {
    const age = now - w.start;
    if (age < this.#windowMs) return;
    w.previous = age >= 2 * this.#windowMs ? 0n : w.current;
    w.current = 0n;
    w.start += Math.floor(age / this.#windowMs) * this.#windowMs;
  }

  /** Counts `amount` asked at `now`. */
  record(key: string, amount: bigint, now: number): void {
    let w = this.#windows.get(key);
    if (!w) {
      w = { start: now, current: 0n, previous: 0n };
      this.#windows.set(key, w);
    }
    this.#roll(w, now);
    w.current += amount;
  }

  /** The amount asked over the last window before `now` (estimated). */
  recent(key: string, now: number): bigint {
    const w = this.#windows.get(key);
    if (!w) return 0n;
    this.#roll(w, now);
    const left = this.#windowMs - (now - w.start);
    const weight = BigInt(Math.round((left / this.#windowMs) * 1000));
    return w.current + (w.previous * (weight > 0n ? weight : 0n)) / 1000n;
  }
}

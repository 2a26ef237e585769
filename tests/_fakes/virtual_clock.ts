/**
 * A virtual {@linkcode Clock} for tests of long-running loops: `sleep`
 * registers a virtual timer, and `runUntil` jumps time from timer to timer,
 * letting pending promise chains settle in between. No real timer outlives
 * a call, so Deno's sanitizers stay on.
 *
 * @module
 */
import type { Clock } from "../../core/clock.ts";

interface Timer {
  readonly at: number;
  readonly seq: number;
  readonly resolve: () => void;
}

/** Lets every queued promise chain run (one macrotask turn, several times). */
export async function settle(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) {
    await new Promise<void>((r) => setTimeout(r, 0));
  }
}

/** A manually driven clock. */
export class VirtualClock implements Clock {
  #now: number;
  #seq = 0;
  #timers: Timer[] = [];

  /** Starts at `start` epoch milliseconds. */
  constructor(start = 1_800_000_000_000) {
    this.#now = start;
  }

  /** Current virtual time. */
  now(): number {
    return this.#now;
  }

  /** Resolves when virtual time reaches now + `ms`; rejects with `signal.reason` on abort. */
  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = (): void => {
        this.#timers = this.#timers.filter((t) => t !== timer);
        reject(signal?.reason);
      };
      const timer: Timer = {
        at: this.#now + Math.max(0, ms),
        seq: this.#seq++,
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      this.#timers.push(timer);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Number of pending virtual timers. */
  get pendingTimers(): number {
    return this.#timers.length;
  }

  /** Advances by `ms`, firing due timers in order and settling after each. */
  async advance(ms: number): Promise<void> {
    const end = this.#now + ms;
    await settle();
    for (;;) {
      const next = this.#next();
      if (next === undefined || next.at > end) break;
      this.#fire(next);
      await settle();
    }
    this.#now = end;
    await settle();
  }

  /**
   * Runs virtual time forward, timer by timer, until `done()` holds.
   *
   * @throws {Error} when `maxMs` of virtual time pass first, or nothing is left to run
   */
  async runUntil(done: () => boolean, maxMs = 600_000): Promise<void> {
    const end = this.#now + maxMs;
    await settle();
    while (!done()) {
      const next = this.#next();
      if (next === undefined) {
        throw new Error(
          "Cannot advance virtual clock: no pending timer and condition not met",
        );
      }
      if (next.at > end) {
        throw new Error(`Cannot reach condition within ${maxMs} virtual ms`);
      }
      this.#fire(next);
      await settle();
    }
  }

  #next(): Timer | undefined {
    let best: Timer | undefined;
    for (const t of this.#timers) {
      if (
        best === undefined || t.at < best.at ||
        (t.at === best.at && t.seq < best.seq)
      ) best = t;
    }
    return best;
  }

  #fire(timer: Timer): void {
    this.#timers = this.#timers.filter((t) => t !== timer);
    if (timer.at > this.#now) this.#now = timer.at;
    timer.resolve();
  }
}

/**
 * A calendar quota in a bucket item (issue 14): the limit's `b_{name}_tk`
 * holds what is left of the current window, and two new attributes, the
 * window's start and end (`b_{name}_ws`, `b_{name}_we`, epoch ms), say
 * which window that is. Nothing refills it inside a window; the first
 * write after the window turned sets the balance to the capacity (minus
 * its charge) and the new window, conditioned on the stored window start,
 * so exactly one write resets it. The rolling refill of the item (its
 * shared `rf`) never applies to it.
 *
 * A stored window newer than the writer's (a writer whose clock is ahead
 * reset it) is taken as current: windows never go back.
 *
 * @module
 */
import type { StoredLimit } from "./bucket_item.ts";
import { type CalendarSpec, calendarWindow } from "./calendar.ts";

/** A calendar limit's balance at an instant. */
export interface CalendarBalance {
  /** Millitokens left in the window (the capacity when it turned). */
  readonly tk: bigint;
  /** Window start, epoch ms. */
  readonly ws: bigint;
  /** Window end, epoch ms. */
  readonly we: bigint;
  /** Whether the stored window is over (or absent): a write must reset it. */
  readonly turned: boolean;
  /** Seconds until the window ends (the next reset). */
  readonly retryAfterSeconds: number;
}

/**
 * The balance of a calendar limit stored as `st` at `nowMs`, with capacity
 * `cp` (millitokens, per shard).
 *
 * @example A window that turned starts full
 * ```ts
 * import assert from "node:assert/strict";
 * import { calendarBalance } from "./calendar_bucket.ts";
 *
 * const spec = { period: "day", timeZone: "UTC" } as const;
 * const st = {
 *   tk: 0n,
 *   params: { cp: 5000n, ra: 5000n, rp: 86_400_000n },
 *   tc: 5000n,
 *   ws: BigInt(Date.UTC(2026, 0, 1)),
 *   we: BigInt(Date.UTC(2026, 0, 2)),
 * };
 * assert.equal(calendarBalance(st, spec, Date.UTC(2026, 0, 1, 23), 5000n).tk, 0n);
 * const next = calendarBalance(st, spec, Date.UTC(2026, 0, 2), 5000n);
 * assert.equal(next.tk, 5000n);
 * assert.equal(next.turned, true);
 * ```
 */
export function calendarBalance(
  st: StoredLimit,
  spec: CalendarSpec,
  nowMs: number,
  cp: bigint,
): CalendarBalance {
  const w = calendarWindow(nowMs, spec);
  const ws = st.ws ?? null;
  if (ws !== null && ws >= BigInt(w.start)) {
    const we = st.we ?? BigInt(w.end);
    const left = Number(we - BigInt(nowMs));
    return {
      tk: st.tk > cp ? cp : st.tk,
      ws,
      we,
      turned: false,
      retryAfterSeconds: left > 0 ? left / 1000 : 0,
    };
  }
  return {
    tk: cp,
    ws: BigInt(w.start),
    we: BigInt(w.end),
    turned: true,
    retryAfterSeconds: (w.end - nowMs) / 1000,
  };
}

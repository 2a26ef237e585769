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
import { type BucketParams, saturationCeiling, shardParams } from "./bucket.ts";
import type {
  BucketItem,
  PlainLimit,
  PlannedLimit,
  StoredLimit,
} from "./bucket_item.ts";
import type { BucketWriter } from "./bucket_writer.ts";
import { type CalendarSpec, calendarWindow } from "./calendar.ts";
import type { Clock } from "./clock.ts";
import type { Lease, LeaseEntry } from "./lease.ts";

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

/** The plan of one calendar limit in a write under the `rf` lock. */
export interface CalendarPlan {
  /** The limit's part of the write (`paramsBefore` left to the caller). */
  readonly planned: PlannedLimit;
  /** Millitokens before the charge. */
  readonly tk: bigint;
  /** Whether the charge fits. */
  readonly ok: boolean;
  /** Seconds until the window ends (the next reset). */
  readonly retryAfterSeconds: number;
}

/**
 * The part of a write under the `rf` lock for one calendar limit, charging
 * `amount` (`ok` says whether it fits; an unfit plan is not sent, or sent
 * on a stale view only to fail its condition). A limit new to the item starts
 * full in the current window; a window that turned is reset (the balance
 * SET to the capacity minus the charge, conditioned on the exact balance
 * and window read); inside the window the charge is an ADD conditioned on
 * the balance covering it and on the window start.
 */
export function planCalendar(
  name: string,
  params: BucketParams,
  st: StoredLimit | undefined,
  spec: CalendarSpec,
  nowMs: number,
  cp: bigint,
  amount: bigint,
): CalendarPlan {
  const b: CalendarBalance = st
    ? calendarBalance(st, spec, nowMs, cp)
    : (() => {
      const w = calendarWindow(nowMs, spec);
      return {
        tk: cp,
        ws: BigInt(w.start),
        we: BigInt(w.end),
        turned: true,
        retryAfterSeconds: (w.end - nowMs) / 1000,
      };
    })();
  const ok = amount <= 0n || b.tk >= amount;
  // Taken even when it does not fit: a write sent on a stale view must
  // fail its condition (the balance no longer covers it), not pass.
  const take = amount > 0n ? amount : 0n;
  const window = { before: st?.ws ?? null, start: b.ws, end: b.we };
  const reset = b.turned || (st !== undefined && st.tk > cp);
  const planned: PlannedLimit = {
    name,
    params,
    tkBefore: st ? st.tk : null,
    tkAfter: (reset || !st ? b.tk : st.tk) - take,
    consumed: take,
    check: !reset,
    exact: st !== undefined && reset,
    window,
  };
  return { planned, tk: b.tk, ok, retryAfterSeconds: b.retryAfterSeconds };
}

/** The window of a lease's acquire, epoch ms. */
export interface LeaseWindow {
  /** Start. */
  readonly start: bigint;
  /** End. */
  readonly end: bigint;
}

/** What a lease delta does to a calendar quota (see {@linkcode calendarDelta}). */
export type CalendarDelta =
  | { readonly kind: "add"; readonly max: bigint; readonly window: bigint }
  | { readonly kind: "reset"; readonly window: LeaseWindow };

/**
 * What a lease delta `d` (positive: taken, negative: given back) does to a
 * calendar quota stored as `st`, at `nowMs`. A lease's adjustments belong
 * to the window of its acquire (`window`): dropped (`null`) once that window
 * is over or was replaced by a newer one; added in it (a give-back never
 * over the capacity, `max` is the condition on the balance) while it is the
 * stored one; and when the stored window is older (nothing reset it since
 * the window turned), the delta resets it first. Without `window` (a
 * compensation right after a charge) the stored window is used, dropped
 * once over.
 */
export function calendarDelta(
  st: StoredLimit,
  nowMs: number,
  cp: bigint,
  d: bigint,
  window?: LeaseWindow,
): CalendarDelta | null {
  const ws = st.ws ?? null;
  if (ws === null) return null;
  const now = BigInt(nowMs);
  if (window !== undefined) {
    if (now >= window.end || ws > window.start) return null;
    if (ws < window.start) return { kind: "reset", window };
  } else if (st.we !== null && st.we !== undefined && now >= st.we) {
    return null;
  }
  return { kind: "add", max: cp + (d < 0n ? d : 0n), window: ws };
}

/** The window of a lease entry's acquire, from its stamped start. */
export function leaseWindow(e: LeaseEntry): LeaseWindow | undefined {
  if (e.window === undefined || !e.limit.calendar) return undefined;
  const w = calendarWindow(Number(e.window), e.limit.calendar);
  return { start: BigInt(w.start), end: BigInt(w.end) };
}

/** Whether a stored limit is a calendar quota (it has a window). */
export function isCalendar(st: StoredLimit | undefined): boolean {
  return st?.ws !== null && st?.ws !== undefined;
}

/**
 * The plain-write part of a lease delta `d` on limit `name` of item `k`
 * (positive: taken without a check, negative: given back under the
 * ceiling): a rolling limit stays under its saturation ceiling; a calendar
 * quota under its capacity, in its stored window (`null`: the window is
 * over and the delta is dropped, see {@linkcode calendarDelta}).
 */
export function deltaPart(
  k: BucketItem,
  name: string,
  d: bigint,
  shards: number,
  now: bigint,
  window?: LeaseWindow,
): PlainLimit | null {
  const st = k.limits.get(name) as StoredLimit;
  const eff = shardParams(st.params, shards);
  if (isCalendar(st)) {
    const c = calendarDelta(st, Number(now), eff.cp, d, window);
    if (!c) return null;
    if (c.kind === "reset") {
      // A reset is no plain write: a ceiling under any balance sends it to the refill path.
      const never = (st.tk < 0n ? st.tk : 0n) - 1n;
      return { name, take: d, count: d, params: null, min: null, max: never };
    }
    return {
      name,
      take: d,
      count: d,
      params: st.params,
      min: null,
      max: c.max,
      window: c.window,
    };
  }
  const ceiling = saturationCeiling(k.rf, now, eff);
  return {
    name,
    take: d,
    count: d,
    params: st.params,
    min: null,
    max: ceiling + (d < 0n ? d : 0n),
  };
}

/**
 * A calendar quota's part of a lease-delta write under the `rf` lock: the
 * delta `d` applied in the stored window (dropped when it is over), a
 * give-back capped at the capacity; conditioned on the window and, for a
 * give-back, on the balance read.
 */
export function calendarDeltaPlanned(
  name: string,
  st: StoredLimit,
  shards: number,
  nowMs: number,
  d: bigint,
  window?: LeaseWindow,
): PlannedLimit {
  const cp = shardParams(st.params, shards).cp;
  const c = calendarDelta(st, nowMs, cp, d, window);
  if (c?.kind === "reset") {
    // The lease's window is current but not stored yet: start it, then apply.
    const take = d > 0n ? d : 0n;
    return {
      name,
      params: st.params,
      paramsBefore: st.params,
      tkBefore: st.tk,
      tkAfter: cp - take,
      consumed: take,
      exact: true,
      check: false,
      window: {
        before: st.ws ?? null,
        start: c.window.start,
        end: c.window.end,
      },
    };
  }
  const delta = c ? d : 0n;
  let after = st.tk - delta;
  // A give-back cut at the capacity is right only for the balance read.
  let cut = false;
  if (delta < 0n && after > cp) {
    after = st.tk > cp ? st.tk : cp;
    cut = true;
  }
  return {
    name,
    params: st.params,
    paramsBefore: st.params,
    tkBefore: st.tk,
    tkAfter: after,
    consumed: delta,
    capped: delta < 0n,
    exact: cut,
    check: false,
    window: {
      before: st.ws ?? null,
      start: st.ws ?? 0n,
      end: st.we ?? 0n,
    },
  };
}

/** A calendar quota's window as a write leaves it (`{}` for a rolling limit, or one whose window it removes). */
export function windowAfter(
  window: PlannedLimit["window"],
  old: StoredLimit | undefined,
): { ws?: bigint | null; we?: bigint | null } {
  if (window) return { ws: window.start, we: window.end };
  const ws = window === null ? null : old?.ws ?? null;
  return ws === null ? {} : { ws, we: old?.we ?? null };
}

/**
 * Records on a fresh lease the window each calendar quota's charge fell in:
 * the window of the item as the acquire's own write left it, or for a
 * quota it did not charge, the window of now.
 */
export function stampWindows(
  adm: { readonly writer: BucketWriter; readonly clock: Clock },
  lease: Lease,
): void {
  for (const e of lease.entries as LeaseEntry[]) {
    if (!e.limit.calendar) continue;
    const ws = e.consumed > 0n
      ? adm.writer.known(e.ref)?.limits.get(e.limit.name)?.ws ?? null
      : null;
    e.window = ws ??
      BigInt(calendarWindow(adm.clock.now(), e.limit.calendar).start);
  }
}

/** The calendar windows of a group of lease entries, by limit name. */
export function windowsOf(
  entries: readonly LeaseEntry[],
): Map<string, LeaseWindow> {
  const out = new Map<string, LeaseWindow>();
  for (const e of entries) {
    const w = leaseWindow(e);
    if (w) out.set(e.limit.name, w);
  }
  return out;
}

/** The `window` of a rolling limit's write: `null` (remove) when the item still has a calendar window for it. */
export function dropWindow(
  st: StoredLimit | undefined,
): { window?: null } {
  return (st?.ws ?? null) === null ? {} : { window: null };
}

/**
 * Calendar windows of calendar-aligned quotas: the UTC (or an IANA zone's)
 * day, ISO week (from Monday) or month an instant falls in, as epoch
 * milliseconds. Pure functions over `Intl`; no clock.
 *
 * A window starts at the first instant whose wall-clock time in the zone
 * is 00:00 of its first day: in a DST overlap the earlier of the two, in a
 * DST gap that skips midnight the first instant after the gap. The window of
 * an instant `t` is `[start, end)` with `start` the latest such boundary at
 * or before `t`, so windows never overlap and never go back in time, even
 * where a zone's clock goes back across midnight.
 *
 * @module
 */
import { ValidationError } from "./errors.ts";

/** The periods a calendar quota resets at. */
export const CALENDAR_PERIODS = ["day", "week", "month"] as const;
/** A calendar period: the day, the ISO week (from Monday) or the month. */
export type CalendarPeriod = typeof CALENDAR_PERIODS[number];

/** When a calendar quota resets. */
export interface CalendarSpec {
  /** The period. */
  readonly period: CalendarPeriod;
  /** IANA time zone of the boundaries (`UTC`, `Europe/Berlin`). */
  readonly timeZone: string;
}

/**
 * The refill period a calendar quota stores for clients that only know the
 * rolling bucket (the Python client): the longest the period can be, in
 * seconds, so a rolling reading never refills faster than the quota.
 */
export const CALENDAR_NOMINAL_SECONDS: Readonly<
  Record<CalendarPeriod, number>
> = {
  day: 86_400,
  week: 604_800,
  month: 2_678_400,
};

/** One calendar window, epoch ms. */
export interface CalendarWindow {
  /** First instant of the window. */
  readonly start: number;
  /** First instant of the next window. */
  readonly end: number;
}

const DAY_MS = 86_400_000;
const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    f = new Intl.DateTimeFormat("en-US", {
      timeZone,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(timeZone, f);
  }
  return f;
}

/**
 * Checks a calendar spec: a known period and a time zone `Intl` accepts.
 * Returns it with the zone in its canonical spelling.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `period` or `timeZone`
 */
export function validateCalendarSpec(spec: {
  readonly period: unknown;
  readonly timeZone?: unknown;
}): CalendarSpec {
  if (!(CALENDAR_PERIODS as readonly unknown[]).includes(spec.period)) {
    throw new ValidationError(
      "period",
      spec.period,
      `must be one of ${CALENDAR_PERIODS.join(", ")}`,
    );
  }
  const tz = spec.timeZone ?? "UTC";
  let canonical: string;
  try {
    if (typeof tz !== "string" || tz === "") throw new RangeError("empty");
    canonical = formatter(tz).resolvedOptions().timeZone;
  } catch {
    throw new ValidationError(
      "timeZone",
      tz,
      "must be an IANA time zone name such as UTC or Europe/Berlin",
    );
  }
  return { period: spec.period as CalendarPeriod, timeZone: canonical };
}

/** Wall-clock fields of `t` in `timeZone`, as a UTC epoch (ms kept). */
function wallOf(t: number, timeZone: string): number {
  if (timeZone === "UTC") return t;
  const parts = formatter(timeZone).formatToParts(new Date(t));
  const get = (type: string): number =>
    Number(parts.find((p) => p.type === type)?.value ?? 0);
  const ms = ((t % 1000) + 1000) % 1000;
  return Date.UTC(
    get("year"),
    get("month") - 1,
    get("day"),
    get("hour"),
    get("minute"),
    get("second"),
    ms,
  );
}

/** The UTC epoch of a calendar date's midnight (a "wall" value). */
function dayWall(y: number, m: number, d: number): number {
  return Date.UTC(y, m, d);
}

/** The first day (as a wall midnight) of the period holding wall date `w`, moved by `k` periods. */
function periodStart(w: number, period: CalendarPeriod, k: number): number {
  const d = new Date(w);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  const day = d.getUTCDate();
  switch (period) {
    case "day":
      return dayWall(y, m, day + k);
    case "week": {
      const back = (d.getUTCDay() + 6) % 7; // days since Monday
      return dayWall(y, m, day - back + 7 * k);
    }
    case "month":
      return dayWall(y, m + k, 1);
    default: {
      const _exhaustive: never = period;
      return _exhaustive;
    }
  }
}

/**
 * The instant of a wall midnight `w` in `timeZone`: the earlier instant when
 * the wall time occurs twice, the end of the gap when it is skipped.
 */
function boundary(w: number, timeZone: string): number {
  if (timeZone === "UTC") return w;
  const offsets = new Set<number>();
  for (const probe of [w - DAY_MS, w, w + DAY_MS]) {
    offsets.add(wallOf(probe, timeZone) - probe);
  }
  const exact = [...offsets]
    .map((o) => w - o)
    .filter((t) => wallOf(t, timeZone) === w);
  if (exact.length > 0) return Math.min(...exact);
  // Midnight is skipped: the first instant whose wall time is past it.
  let lo = w - DAY_MS;
  let hi = w + DAY_MS;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (wallOf(mid, timeZone) >= w) hi = mid;
    else lo = mid;
  }
  return hi;
}

/**
 * The calendar window holding instant `t` (epoch ms).
 *
 * @example The UTC month and a Berlin day across the spring DST change
 * ```ts
 * import assert from "node:assert/strict";
 * import { calendarWindow } from "./calendar.ts";
 *
 * const t = Date.UTC(2026, 2, 29, 12); // 29 March 2026, 14:00 in Berlin
 * const month = calendarWindow(t, { period: "month", timeZone: "UTC" });
 * assert.equal(month.start, Date.UTC(2026, 2, 1));
 * assert.equal(month.end, Date.UTC(2026, 3, 1));
 * const day = calendarWindow(t, { period: "day", timeZone: "Europe/Berlin" });
 * assert.equal(day.start, Date.UTC(2026, 2, 28, 23)); // 00:00 CET
 * assert.equal(day.end - day.start, 23 * 3_600_000); // the day of the change has 23 hours
 * ```
 */
export function calendarWindow(t: number, spec: CalendarSpec): CalendarWindow {
  const w = wallOf(t, spec.timeZone);
  const candidates = [-1, 0, 1, 2].map((k) =>
    boundary(periodStart(w, spec.period, k), spec.timeZone)
  );
  let start = candidates[0] as number;
  let end = candidates[3] as number;
  for (const b of candidates) {
    if (b <= t && b > start) start = b;
  }
  for (const b of candidates) {
    if (b > t && b < end) end = b;
  }
  return { start, end };
}

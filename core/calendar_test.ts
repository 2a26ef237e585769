import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CALENDAR_PERIODS,
  type CalendarPeriod,
  type CalendarSpec,
  calendarWindow,
  validateCalendarSpec,
} from "./calendar.ts";

const ZONES = [
  "UTC",
  "Europe/Berlin",
  "America/New_York",
  "America/Santiago", // DST gap at midnight: the day starts at 01:00
  "Asia/Beirut", // DST change at midnight
  "Australia/Lord_Howe", // 30-minute DST shift
  "Asia/Kolkata",
  "Pacific/Apia", // skipped a whole day (2011-12-30)
] as const;

const HOUR = 3_600_000;
const FROM = Date.UTC(2000, 0, 1);
const TO = Date.UTC(2040, 0, 1);

function wall(t: number, timeZone: string): {
  y: number;
  m: number;
  d: number;
  hms: number;
  weekday: number;
} {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone,
    hourCycle: "h23",
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "numeric",
    minute: "numeric",
    second: "numeric",
  }).formatToParts(new Date(t));
  const g = (k: string): number =>
    Number(parts.find((p) => p.type === k)?.value);
  const y = g("year");
  const m = g("month");
  const d = g("day");
  return {
    y,
    m,
    d,
    hms: g("hour") * 3600 + g("minute") * 60 + g("second"),
    weekday: new Date(Date.UTC(y, m - 1, d)).getUTCDay(),
  };
}

/** Whether the wall date of `t` is the first day of a period. */
function firstDay(t: number, s: CalendarSpec): boolean {
  const w = wall(t, s.timeZone);
  switch (s.period) {
    case "day":
      return true;
    case "week":
      return w.weekday === 1;
    case "month":
      return w.d === 1;
  }
}

const specArb: fc.Arbitrary<CalendarSpec> = fc.record({
  period: fc.constantFrom<CalendarPeriod>(...CALENDAR_PERIODS),
  timeZone: fc.constantFrom(...ZONES),
});

Deno.test("calendarWindow() holds the instant, and its ends are window boundaries", () => {
  fc.assert(
    fc.property(fc.integer({ min: FROM, max: TO }), specArb, (t, s) => {
      const { start, end } = calendarWindow(t, s);
      assert.ok(start <= t && t < end, `${t} not in [${start}, ${end})`);
      // The window is the same from any instant in it, and the next one starts at its end.
      assert.deepEqual(calendarWindow(start, s), { start, end });
      assert.deepEqual(calendarWindow(end - 1, s), { start, end });
      assert.equal(calendarWindow(end, s).start, end);
      // A boundary is the first instant of the period's first day (wall time
      // 00:00, or just after a gap that skipped it): the instant before it is
      // on an earlier wall date.
      assert.ok(
        firstDay(start, s),
        `${new Date(start).toISOString()} ${s.period}`,
      );
      const before = wall(start - 1, s.timeZone);
      const at = wall(start, s.timeZone);
      assert.ok(
        Date.UTC(before.y, before.m - 1, before.d) <
          Date.UTC(at.y, at.m - 1, at.d),
      );
      if (at.hms !== 0) assert.ok(at.hms <= 3600, "only a DST gap moves it");
    }),
    { numRuns: 3000 },
  );
});

Deno.test("calendarWindow() lengths: UTC exact, zones within the DST shift", () => {
  fc.assert(
    fc.property(fc.integer({ min: FROM, max: TO }), specArb, (t, s) => {
      const { start, end } = calendarWindow(t, s);
      const len = end - start;
      const days = s.period === "day"
        ? [1]
        : s.period === "week"
        ? [7]
        : [28, 29, 30, 31];
      // Apia skipped a whole day in 2011; every other shift is at most an hour.
      const slack = s.timeZone === "UTC"
        ? 0
        : s.timeZone === "Pacific/Apia"
        ? 24 * HOUR
        : HOUR;
      assert.ok(
        days.some((d) => Math.abs(len - d * 24 * HOUR) <= slack),
        `${s.period} ${s.timeZone} at ${new Date(t).toISOString()}: ${
          len / HOUR
        } h`,
      );
    }),
    { numRuns: 3000 },
  );
});

Deno.test("calendarWindow() UTC month ends, leap days and ISO weeks", () => {
  const m = (t: number) =>
    calendarWindow(t, { period: "month", timeZone: "UTC" });
  assert.deepEqual(m(Date.UTC(2028, 1, 29, 23, 59, 59, 999)), {
    start: Date.UTC(2028, 1, 1),
    end: Date.UTC(2028, 2, 1),
  });
  assert.deepEqual(
    m(Date.UTC(2026, 11, 31, 23, 59, 59, 999)).end,
    Date.UTC(2027, 0, 1),
  );
  assert.equal(m(Date.UTC(2027, 0, 1)).start, Date.UTC(2027, 0, 1));
  // 2027-01-01 is a Friday: its ISO week began on Monday 2026-12-28.
  const w = calendarWindow(Date.UTC(2027, 0, 1, 5), {
    period: "week",
    timeZone: "UTC",
  });
  assert.deepEqual(w, {
    start: Date.UTC(2026, 11, 28),
    end: Date.UTC(2027, 0, 4),
  });
  // The Sunday's last millisecond is still that week; Monday 00:00 starts the next.
  assert.equal(
    calendarWindow(Date.UTC(2027, 0, 3, 23, 59, 59, 999), {
      period: "week",
      timeZone: "UTC",
    }).end,
    Date.UTC(2027, 0, 4),
  );
});

Deno.test("calendarWindow() across DST: New York 23 and 25 hour days, Santiago's day starting at 01:00", () => {
  const ny = { period: "day", timeZone: "America/New_York" } as const;
  const spring = calendarWindow(Date.UTC(2026, 2, 8, 15), ny);
  assert.deepEqual(spring, {
    start: Date.UTC(2026, 2, 8, 5),
    end: Date.UTC(2026, 2, 9, 4),
  });
  const fall = calendarWindow(Date.UTC(2026, 10, 1, 15), ny);
  assert.deepEqual(fall, {
    start: Date.UTC(2026, 10, 1, 4),
    end: Date.UTC(2026, 10, 2, 5),
  });
  // Chile skips 00:00-01:00 on the first Sunday of September.
  const cl = calendarWindow(Date.UTC(2026, 8, 6, 12), {
    period: "day",
    timeZone: "America/Santiago",
  });
  assert.equal(cl.start, Date.UTC(2026, 8, 6, 4)); // 01:00 -03
  assert.equal(cl.end - cl.start, 23 * HOUR);
});

Deno.test("validateCalendarSpec() checks the period and the zone", () => {
  assert.deepEqual(validateCalendarSpec({ period: "week" }), {
    period: "week",
    timeZone: "UTC",
  });
  assert.throws(() => validateCalendarSpec({ period: "year" }), {
    name: "ValidationError",
    code: "VALIDATION_FAILED",
    field: "period",
  });
  assert.throws(
    () => validateCalendarSpec({ period: "day", timeZone: "Mars/Olympus" }),
    { name: "ValidationError", field: "timeZone" },
  );
});

/**
 * The `Limit` model (spec 02 §1): capacity, refill amount and refill period,
 * all whole tokens and seconds; immutable.
 *
 * @module
 */
import {
  CALENDAR_NOMINAL_SECONDS,
  type CalendarPeriod,
  type CalendarSpec,
  validateCalendarSpec,
} from "./calendar.ts";
import {
  ConcurrencyLimit,
  type ConcurrencyLimitOptions,
} from "./concurrency_limit.ts";
import { ValidationError } from "./errors.ts";
import { validateLimitName } from "./validation.ts";

/** Options of a {@linkcode Limit} beyond its numbers (stored in new config attributes the Python client ignores). */
export interface LimitOptions {
  /**
   * Shadow mode: acquires compute and report this limit's decision (a
   * would-have-refused status) but never refuse or charge for it.
   * @default false
   */
  readonly shadow?: boolean;
  /**
   * A calendar-aligned quota instead of a rolling refill: the full
   * capacity at each window start, nothing in between (see
   * {@linkcode Limit.perCalendar}). @default null
   */
  readonly calendar?: CalendarSpec | null;
}

/** Options of {@linkcode Limit.perCalendar}. */
export interface PerCalendarOptions {
  /** The window: UTC (or `timeZone`) day, ISO week from Monday, or month. */
  readonly period: CalendarPeriod;
  /** IANA time zone of the window boundaries. @default "UTC" */
  readonly timeZone?: string;
  /** Shadow mode (see {@linkcode LimitOptions.shadow}). @default false */
  readonly shadow?: boolean;
}

/** Plain-object form of a limit, with the reference's keys. */
export interface LimitDict {
  /** Limit name. */
  readonly name: string;
  /** Bucket ceiling in tokens. */
  readonly capacity: number;
  /** Tokens added per period. */
  readonly "refill_amount": number;
  /** Refill period in seconds. */
  readonly "refill_period_seconds": number;
  /** Shadow mode (absent: enforced). */
  readonly shadow?: boolean;
  /** Calendar window (absent: rolling). */
  readonly calendar?: CalendarSpec;
}

/** Well-known limit names. */
export const LimitName = {
  RPM: "rpm",
  RPH: "rph",
  RPD: "rpd",
  TPM: "tpm",
  TPH: "tph",
  TPD: "tpd",
} as const;

function positive(field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new ValidationError(field, value, "must be a whole number");
  }
  if (value <= 0) {
    throw new ValidationError(field, value, `${field} must be positive`);
  }
  return value;
}

/**
 * A token-bucket limit. Create one with a factory:
 *
 * @example Requests and tokens per minute
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit } from "./limit.ts";
 *
 * const rpm = Limit.perMinute("rpm", 100);
 * const tpm = Limit.perMinute("tpm", 10_000, { burst: 15_000 });
 * assert.equal(rpm.capacity, 100);
 * assert.equal(tpm.capacity, 15_000);
 * assert.equal(tpm.refillAmount, 10_000);
 * ```
 */
export class Limit {
  /** Limit name (`rpm`, `tpm`, …). */
  readonly name: string;
  /** Bucket ceiling in tokens (the burst). */
  readonly capacity: number;
  /** Tokens added per period. */
  readonly refillAmount: number;
  /** Refill period in seconds. */
  readonly refillPeriodSeconds: number;
  /** Shadow mode: decided and reported, never refused or charged. */
  readonly shadow: boolean;
  /** The calendar window of a calendar quota, or `null` for a rolling bucket. */
  readonly calendar: CalendarSpec | null;

  /**
   * Validates and freezes a limit.
   *
   * @throws {InvalidNameError} for a bad name; {@linkcode ValidationError} for non-positive numbers
   */
  constructor(
    name: string,
    capacity: number,
    refillAmount: number,
    refillPeriodSeconds: number,
    options: LimitOptions = {},
  ) {
    this.name = validateLimitName(name);
    this.capacity = positive("capacity", capacity);
    this.refillAmount = positive("refill_amount", refillAmount);
    this.refillPeriodSeconds = positive(
      "refill_period_seconds",
      refillPeriodSeconds,
    );
    this.shadow = options.shadow === true;
    this.calendar = options.calendar
      ? Object.freeze(validateCalendarSpec(options.calendar))
      : null;
    Object.freeze(this);
  }

  /**
   * A calendar-aligned quota: `amount` tokens per UTC (or `timeZone`) day,
   * ISO week (from Monday) or month, all available at the window start and
   * not refilled before the next one. Stored with refill `amount` per the
   * longest period length (so a client that only knows rolling buckets, the
   * Python one, reads a valid limit).
   *
   * @throws {ValidationError} a bad amount, period or time zone
   *
   * @example A monthly dollar budget in cents
   * ```ts
   * import assert from "node:assert/strict";
   * import { Limit } from "./limit.ts";
   *
   * const usd = Limit.perCalendar("usd", 50_00, { period: "month" });
   * assert.deepEqual(usd.calendar, { period: "month", timeZone: "UTC" });
   * assert.equal(usd.capacity, 50_00);
   * ```
   */
  static perCalendar(
    name: string,
    amount: number,
    options: PerCalendarOptions,
  ): Limit {
    const spec = validateCalendarSpec(options ?? {} as PerCalendarOptions);
    return new Limit(
      name,
      amount,
      amount,
      CALENDAR_NOMINAL_SECONDS[spec.period],
      { calendar: spec, shadow: options.shadow === true },
    );
  }

  /**
   * This limit in shadow mode (or enforced again with `false`).
   *
   * @example Dark-launch a new limit
   * ```ts
   * import assert from "node:assert/strict";
   * import { Limit } from "./limit.ts";
   *
   * assert.equal(Limit.perMinute("tpm", 10_000).withShadow().shadow, true);
   * ```
   */
  withShadow(shadow = true): Limit {
    return new Limit(
      this.name,
      this.capacity,
      this.refillAmount,
      this.refillPeriodSeconds,
      { shadow, calendar: this.calendar },
    );
  }

  /** `rate` per second; capacity is `burst ?? rate`. */
  static perSecond(
    name: string,
    rate: number,
    options: { burst?: number } = {},
  ): Limit {
    return new Limit(name, options.burst ?? rate, rate, 1);
  }
  /** `rate` per minute; capacity is `burst ?? rate`. */
  static perMinute(
    name: string,
    rate: number,
    options: { burst?: number } = {},
  ): Limit {
    return new Limit(name, options.burst ?? rate, rate, 60);
  }
  /** `rate` per hour; capacity is `burst ?? rate`. */
  static perHour(
    name: string,
    rate: number,
    options: { burst?: number } = {},
  ): Limit {
    return new Limit(name, options.burst ?? rate, rate, 3600);
  }
  /** `rate` per day; capacity is `burst ?? rate`. */
  static perDay(
    name: string,
    rate: number,
    options: { burst?: number } = {},
  ): Limit {
    return new Limit(name, options.burst ?? rate, rate, 86400);
  }
  /** Any capacity, refill amount and period. */
  static custom(
    name: string,
    capacity: number,
    refillAmount: number,
    refillPeriodSeconds: number,
  ): Limit {
    return new Limit(name, capacity, refillAmount, refillPeriodSeconds);
  }

  /**
   * An in-flight limit (not a token bucket): at most `max` leases hold a
   * slot at once, each for at most `leaseMs`. Pass it in an acquire's
   * `concurrency` option; it is never stored with the limits.
   *
   * @throws {ValidationError} a bad `max` or `leaseMs`
   */
  static concurrent(
    name: string,
    max: number,
    options: ConcurrencyLimitOptions,
  ): ConcurrencyLimit {
    return new ConcurrencyLimit(name, max, options);
  }

  /** Tokens per second, for display only. */
  get refillRate(): number {
    return this.refillAmount / this.refillPeriodSeconds;
  }

  /** Whether two limits have the same name and numbers. */
  equals(other: Limit): boolean {
    return this.name === other.name && this.capacity === other.capacity &&
      this.refillAmount === other.refillAmount &&
      this.refillPeriodSeconds === other.refillPeriodSeconds &&
      this.shadow === other.shadow &&
      this.calendar?.period === other.calendar?.period &&
      this.calendar?.timeZone === other.calendar?.timeZone;
  }

  /** The reference's dictionary form (plus `shadow` and `calendar` when set). */
  toDict(): LimitDict {
    const d: LimitDict = {
      name: this.name,
      capacity: this.capacity,
      "refill_amount": this.refillAmount,
      "refill_period_seconds": this.refillPeriodSeconds,
    };
    return {
      ...d,
      ...(this.shadow ? { shadow: true } : {}),
      ...(this.calendar ? { calendar: { ...this.calendar } } : {}),
    };
  }

  /** Inverse of {@linkcode Limit.toDict}. */
  static fromDict(d: LimitDict): Limit {
    return new Limit(
      d.name,
      d.capacity,
      d.refill_amount,
      d.refill_period_seconds,
      { shadow: d.shadow === true, calendar: d.calendar ?? null },
    );
  }
}

/**
 * Checks a list of limits: every entry a {@linkcode Limit}, no name twice.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `limits`
 */
export function validateLimitList(limits: readonly Limit[]): void {
  if (!Array.isArray(limits)) {
    throw new ValidationError(
      "limits",
      String(limits),
      "must be a list of Limit values",
    );
  }
  const seen = new Set<string>();
  for (const l of limits) {
    if (!(l instanceof Limit)) {
      throw new ValidationError("limits", String(l), "must be Limit values");
    }
    if (seen.has(l.name)) {
      throw new ValidationError("limits", l.name, "limit name appears twice");
    }
    seen.add(l.name);
  }
}

/**
 * The `-l/--limit` grammar of the reference CLI (spec 04 §1.1),
 * `name:rate[/period][:burst]`, and the display format of a limit.
 *
 * @module
 */
import { Limit } from "../mod.ts";

/** A `-l` value that does not follow the grammar. */
export class LimitSpecSyntaxError extends SyntaxError {
  /** The `-l` value as given. */
  readonly spec: string;
  /** Creates the error. */
  constructor(spec: string, message: string) {
    super(message);
    this.name = "LimitSpecSyntaxError";
    this.spec = spec;
  }
}

/** Result of {@linkcode safeParseLimitSpec}. */
export type LimitSpecResult =
  | { readonly ok: true; readonly value: Limit }
  | { readonly ok: false; readonly error: LimitSpecSyntaxError };

const PERIOD_UNITS = { sec: 1, min: 60, hour: 3600, day: 86400 } as const;
const FORMAT =
  "Expected 'name:rate[/period]' or 'name:rate[/period]:burst', e.g. 'rpm:100/min' or 'tpm:10000/min:15000'";

/**
 * Parses `name:rate[/period][:burst]`: the period is `[N]sec|min|hour|day`
 * (default `min`), and the burst (capacity) defaults to the rate. Unlike the
 * reference, a fourth `:` part is rejected rather than ignored.
 *
 * @param spec The `-l` value.
 * @returns The limit, or the error naming the value.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { safeParseLimitSpec } from "./limit_spec.ts";
 *
 * const r = safeParseLimitSpec("tpm:10000/min:15000");
 * assert.ok(r.ok);
 * assert.equal(r.value.capacity, 15000);
 * assert.equal(r.value.refillPeriodSeconds, 60);
 * ```
 */
export function safeParseLimitSpec(spec: string): LimitSpecResult {
  const fail = (message: string): LimitSpecResult => ({
    ok: false,
    error: new LimitSpecSyntaxError(spec, message),
  });
  const parts = spec.split(":");
  if (parts.length < 2) {
    return fail(`Invalid limit format: '${spec}'. ${FORMAT}`);
  }
  if (parts.length > 3) {
    return fail(
      `Invalid limit format: '${spec}' has more than 3 parts. ${FORMAT}`,
    );
  }
  const [name = "", rateAndPeriod = "", burstText] = parts;
  const slash = rateAndPeriod.indexOf("/");
  const rateText = slash < 0 ? rateAndPeriod : rateAndPeriod.slice(0, slash);
  let period = 60;
  if (slash >= 0) {
    const p = rateAndPeriod.slice(slash + 1);
    const m = /^(\d+)?(sec|min|hour|day)$/.exec(p);
    const n = m ? Number(m[1] ?? "1") : 0;
    if (!m || n <= 0) {
      return fail(
        `Invalid period in '${spec}': '/${p}'. Use /[N]sec, /[N]min, /[N]hour, or /[N]day`,
      );
    }
    period = n * PERIOD_UNITS[m[2] as keyof typeof PERIOD_UNITS];
  }
  if (!/^\d+$/.test(rateText) || Number(rateText) <= 0) {
    return fail(
      `Invalid limit values in '${spec}': rate '${rateText}' must be a positive whole number`,
    );
  }
  if (
    burstText !== undefined &&
    (!/^\d+$/.test(burstText) || Number(burstText) <= 0)
  ) {
    return fail(
      `Invalid limit values in '${spec}': burst '${burstText}' must be a positive whole number`,
    );
  }
  const rate = Number(rateText);
  try {
    return {
      ok: true,
      value: new Limit(
        name,
        burstText === undefined ? rate : Number(burstText),
        rate,
        period,
      ),
    };
  } catch (e) {
    return fail(
      `Invalid limit '${spec}': ${e instanceof Error ? e.message : String(e)}`,
    );
  }
}

/**
 * Throwing form of {@linkcode safeParseLimitSpec}.
 *
 * @throws {LimitSpecSyntaxError} when the value does not follow the grammar
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseLimitSpec } from "./limit_spec.ts";
 *
 * assert.equal(parseLimitSpec("rps:10/sec").refillPeriodSeconds, 1);
 * assert.throws(() => parseLimitSpec("rpm"), { name: "LimitSpecSyntaxError" });
 * ```
 */
export function parseLimitSpec(spec: string): Limit {
  const r = safeParseLimitSpec(spec);
  if (!r.ok) throw r.error;
  return r.value;
}

function periodSuffix(seconds: number): string {
  const named: Record<number, string> = {
    1: "sec",
    60: "min",
    3600: "hour",
    86400: "day",
  };
  if (named[seconds]) return `/${named[seconds]}`;
  for (
    const [unit, size] of [["day", 86400], ["hour", 3600], ["min", 60]] as const
  ) {
    if (seconds % size === 0) return `/${seconds / size}${unit}`;
  }
  return `/${seconds}sec`;
}

/**
 * Displays a limit as the reference does: `rpm: 1,000/min (burst: 1,500)`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit } from "../mod.ts";
 * import { formatLimit } from "./limit_spec.ts";
 *
 * assert.equal(formatLimit(Limit.perMinute("rpm", 1000, { burst: 1500 })), "rpm: 1,000/min (burst: 1,500)");
 * ```
 */
export function formatLimit(limit: Limit): string {
  const amount = String(limit.refillAmount).replace(
    /\B(?=(\d{3})+(?!\d))/g,
    ",",
  );
  const burst = limit.capacity !== limit.refillAmount
    ? ` (burst: ${
      String(limit.capacity).replace(/\B(?=(\d{3})+(?!\d))/g, ",")
    })`
    : "";
  return `${limit.name}: ${amount}${
    periodSuffix(limit.refillPeriodSeconds)
  }${burst}`;
}

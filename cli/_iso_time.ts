/**
 * Internal: a commander argument parser for ISO 8601 times (`--start`,
 * `--end`, `--since`, `--time`). `new Date()` alone accepts far too much
 * (`new Date("1")` is the year 2001), so the text must look like a date,
 * optionally with a time and a zone, and name a real instant.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { isoTimeArg } from "./_iso_time.ts";
 *
 * assert.equal(isoTimeArg("2026-01-15T10:00:00Z"), "2026-01-15T10:00:00Z");
 * assert.throws(() => isoTimeArg("notadate"), { code: "commander.invalidArgument" });
 * assert.throws(() => isoTimeArg("1"));
 * ```
 *
 * @module
 */
import { InvalidArgumentError } from "commander";

const ISO_8601 =
  /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;

/**
 * Returns `value` when it is an ISO 8601 date or date-time of a real
 * instant (`2026-01-15`, `2026-01-15T10:00:00Z`, `2026-01-15T10:00+02:00`).
 *
 * @throws {InvalidArgumentError} otherwise (commander reports it with the flag's name, exit 2)
 */
export function isoTimeArg(value: string): string {
  const v = value.trim();
  if (!ISO_8601.test(v) || Number.isNaN(new Date(v).getTime())) {
    throw new InvalidArgumentError(
      "Expected an ISO 8601 time, e.g. 2026-01-15T10:00:00Z.",
    );
  }
  return v;
}

import assert from "node:assert/strict";
import { isoSeconds } from "./clock.ts";

Deno.test("isoSeconds() formats the epoch as YYYY-MM-DDTHH:MM:SSZ", () => {
  assert.equal(isoSeconds(0), "1970-01-01T00:00:00Z");
});

Deno.test("isoSeconds() formats a UTC instant with second precision", () => {
  assert.equal(
    isoSeconds(Date.UTC(2024, 0, 15, 14, 30, 45)),
    "2024-01-15T14:30:45Z",
  );
  assert.equal(
    isoSeconds(Date.UTC(1999, 11, 31, 23, 59, 59)),
    "1999-12-31T23:59:59Z",
  );
});

Deno.test("isoSeconds() drops milliseconds instead of rounding them", () => {
  assert.equal(
    isoSeconds(Date.UTC(2024, 0, 15, 14, 30, 45) + 999),
    "2024-01-15T14:30:45Z",
  );
  assert.equal(
    isoSeconds(Date.UTC(2024, 1, 29, 23, 59, 59) + 500),
    "2024-02-29T23:59:59Z",
  );
});

Deno.test("isoSeconds() matches the stored timestamp pattern for many instants", () => {
  const pattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
  for (let ms = 0; ms < 4_102_444_800_000; ms += 86_400_000 * 37 + 3_723_456) {
    const s = isoSeconds(ms);
    assert.match(s, pattern, String(ms));
    // Parsing it back gives the instant rounded down to the second.
    assert.equal(Date.parse(s), ms - (ms % 1000), s);
  }
});

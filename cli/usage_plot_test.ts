import assert from "node:assert/strict";
import type { UsageSnapshot } from "../mod.ts";
import { renderUsagePlot } from "./usage_plot.ts";

function snap(
  hour: number,
  counters: Record<string, number>,
  entityId = "key-1",
): UsageSnapshot {
  const h = String(hour).padStart(2, "0");
  return {
    entityId,
    resource: "gpt-4",
    windowType: "hourly",
    windowStart: `2026-01-15T${h}:00:00Z`,
    windowEnd: `2026-01-15T${h}:59:59Z`,
    counters,
    totalEvents: 1,
  };
}

Deno.test("renderUsagePlot() draws one chart per limit, windows in time order, the peak on the top row", () => {
  // Given out of order: the chart must sort by window start.
  const text = renderUsagePlot([
    snap(2, { rpm: 0, tpm: 500 }),
    snap(0, { rpm: 10, tpm: 1000 }),
    snap(1, { rpm: 40, tpm: 2000 }),
  ], { height: 4, columns: 60 });
  const charts = text.split("\n\n");
  assert.equal(charts.length, 2);
  const [rpm = "", tpm = ""] = charts;
  assert.match(
    rpm,
    /^rpm on gpt-4 for key-1 \(hourly\): 3 window\(s\) 2026-01-15T00:00:00Z \.\. 2026-01-15T02:00:00Z, peak 40$/m,
  );
  assert.match(tpm, /^tpm on gpt-4 for key-1 .* peak 2,000$/m);
  const rows = rpm.split("\n").slice(1);
  assert.equal(rows.length, 5, "height 4 draws 5 rows");
  // asciichart: the top row is labelled with the maximum, the bottom with the minimum.
  assert.match(rows[0] ?? "", /^\s+40 [┤┼]/);
  assert.match(rows[4] ?? "", /^\s+0 [┤┼]/);
  // The second window (the peak) is the only point on the top row: the line turns down there.
  assert.match(rows[0] ?? "", /╭╮\s*$/);
});

Deno.test("renderUsagePlot() keeps the last windows that fit the terminal and says so", () => {
  const many = Array.from({ length: 24 }, (_, h) => snap(h, { rpm: h }));
  const text = renderUsagePlot(many, { height: 3, columns: 24 });
  assert.match(
    text,
    /10 window\(s\) 2026-01-15T14:00:00Z \.\. 2026-01-15T23:00:00Z/,
  );
  assert.match(text, /\(last 10 of 24 windows\)/);
  for (const row of text.split("\n").slice(1)) {
    assert.ok(row.length <= 14 + 10, `fits: ${row}`);
  }
  assert.equal(
    renderUsagePlot([snap(0, {})]),
    "No usage snapshots with counters to plot",
  );
});

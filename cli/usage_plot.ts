/**
 * `usage list --plot`: one ASCII line chart per limit of the tokens
 * consumed per window, drawn by npm `asciichart` (no colours).
 *
 * @module
 */
// @ts-types="@types/asciichart"
import { plot } from "asciichart";
import type { UsageSnapshot } from "../mod.ts";
import { thousands } from "./_context.ts";

/** Options of {@linkcode renderUsagePlot}. */
export interface UsagePlotOptions {
  /** Terminal width in columns; a series with more windows shows its last ones. @default 80 */
  readonly columns?: number;
  /** Chart height in rows. @default 10 */
  readonly height?: number;
}

/** Columns taken by the y-axis labels and the axis itself. */
const AXIS_COLUMNS = 14;

/**
 * Renders the snapshots as charts: one per entity, resource, window type
 * and limit (counter), windows in time order on the x axis, tokens
 * consumed on the y axis.
 *
 * @param snapshots Usage snapshots, in any order.
 * @param options Terminal width and chart height.
 * @returns The charts with their titles, or a sentence when there is nothing to draw.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { renderUsagePlot } from "./usage_plot.ts";
 *
 * const text = renderUsagePlot([0, 5, 10].map((n, i) => ({
 *   entityId: "e1", resource: "gpt-4", windowType: "hourly",
 *   windowStart: `2026-01-15T0${i}:00:00Z`, windowEnd: `2026-01-15T0${i}:59:59Z`,
 *   counters: { rpm: n }, totalEvents: n,
 * })), { height: 4 });
 * assert.match(text, /^rpm on gpt-4 for e1 \(hourly\)/m);
 * ```
 */
export function renderUsagePlot(
  snapshots: readonly UsageSnapshot[],
  options: UsagePlotOptions = {},
): string {
  const columns = Math.max(AXIS_COLUMNS + 2, options.columns ?? 80);
  const height = Math.max(1, options.height ?? 10);
  const maxPoints = columns - AXIS_COLUMNS;
  // Group key → limit → window start → tokens.
  const groups = new Map<string, Map<string, Map<string, number>>>();
  const titles = new Map<string, [string, string, string]>();
  for (const s of snapshots) {
    const key = JSON.stringify([s.entityId, s.resource, s.windowType]);
    titles.set(key, [s.entityId, s.resource, s.windowType]);
    let limits = groups.get(key);
    if (!limits) groups.set(key, limits = new Map());
    for (const [limit, value] of Object.entries(s.counters)) {
      let series = limits.get(limit);
      if (!series) limits.set(limit, series = new Map());
      series.set(s.windowStart, (series.get(s.windowStart) ?? 0) + value);
    }
  }
  const charts: string[] = [];
  for (const key of [...groups.keys()].sort()) {
    const [entity, resource, windowType] = titles.get(key) ?? ["", "", ""];
    const limits = groups.get(key) ?? new Map<string, Map<string, number>>();
    for (const limit of [...limits.keys()].sort()) {
      const series = [...(limits.get(limit) ?? new Map<string, number>())]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const shown = series.slice(-maxPoints);
      const values = shown.map(([, v]) => v);
      const first = shown[0]?.[0] ?? "";
      const last = shown[shown.length - 1]?.[0] ?? "";
      const peak = Math.max(...values);
      const lines = [
        `${limit} on ${resource} for ${entity} (${windowType}): ${values.length} window(s) ${first} .. ${last}, peak ${
          thousands(peak)
        }${
          shown.length < series.length
            ? ` (last ${shown.length} of ${series.length} windows)`
            : ""
        }`,
        plot(values.length === 1 ? [values[0] ?? 0, values[0] ?? 0] : values, {
          height,
          format: (x: number) => thousands(Math.round(x)).padStart(11),
        }),
      ];
      charts.push(lines.join("\n"));
    }
  }
  return charts.length === 0
    ? "No usage snapshots with counters to plot"
    : charts.join("\n\n");
}

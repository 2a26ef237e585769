/**
 * Progress rendering for long migrations: a pure function from a snapshot
 * to one line (a bar for a terminal, a log line otherwise), and a small
 * reporter that throttles output and writes through an injected writer.
 *
 * @example Render a snapshot for a log file
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatProgress } from "./progress.ts";
 *
 * const line = formatProgress({
 *   phase: "copy", scanned: 500, baseline: 0, total: 1000, written: 490, alreadyPresent: 10,
 *   deleted: 0, segmentsDone: 1, segments: 4, consumedWcu: 980, consumedRcu: 60,
 *   startedAt: 0, now: 10_000,
 * }, { mode: "plain" });
 * assert.match(line, /^copy 50\.0% 500\/1,000 items/);
 * assert.match(line, /ETA 10s/);
 * ```
 *
 * @module
 */
import type { Clock } from "../core/clock.ts";
import type { MigrationEvent } from "./migration.ts";

/** Phases a progress snapshot can describe. */
export type ProgressPhase = "plan" | "copy" | "delete" | "verify" | "convert";

/** A point-in-time view of a scanning migration. All counts are cumulative. */
export interface ProgressSnapshot {
  /** What is being done. */
  readonly phase: ProgressPhase;
  /** Items scanned so far, including `baseline`. */
  readonly scanned: number;
  /** Items scanned by earlier (interrupted) runs, restored from checkpoints. */
  readonly baseline: number;
  /** Estimated items in the table (DescribeTable `ItemCount`), or `null`. */
  readonly total: number | null;
  /** Items written by this run. */
  readonly written: number;
  /** Writes skipped because the target existed. */
  readonly alreadyPresent: number;
  /** Items deleted by this run. */
  readonly deleted: number;
  /** Segments finished. */
  readonly segmentsDone: number;
  /** Segments in all. */
  readonly segments: number;
  /** Write capacity consumed by this run (measured on every write when paced by `maxWcuPerSecond`; otherwise measured on a sample and extrapolated). */
  readonly consumedWcu: number;
  /** Read capacity consumed by this run. */
  readonly consumedRcu: number;
  /** When this run started (epoch ms). */
  readonly startedAt: number;
  /** When the snapshot was taken (epoch ms). */
  readonly now: number;
}

/** Completion and time estimates derived from a snapshot. */
export interface ProgressEstimate {
  /** 0–1, or `null` when unknown. */
  readonly fraction: number | null;
  /** Items per second in this run, or `null` before any elapsed time. */
  readonly itemsPerSecond: number | null;
  /** Milliseconds left, or `null` when unknown. */
  readonly etaMs: number | null;
}

/**
 * Estimates completion and time left. The table's `ItemCount` is only
 * refreshed every few hours, so the fraction is capped below 1 until every
 * segment is done.
 */
export function estimateProgress(s: ProgressSnapshot): ProgressEstimate {
  const done = s.segments > 0 && s.segmentsDone >= s.segments;
  const elapsed = s.now - s.startedAt;
  const thisRun = s.scanned - s.baseline;
  const itemsPerSecond = elapsed > 0 ? (thisRun * 1000) / elapsed : null;
  let fraction: number | null;
  if (done) fraction = 1;
  else if (s.total !== null && s.total > 0) {
    fraction = Math.min(0.999, s.scanned / s.total);
  } else if (s.segments > 0) fraction = s.segmentsDone / s.segments;
  else fraction = null;
  let etaMs: number | null = null;
  if (done) etaMs = 0;
  else if (
    s.total !== null && itemsPerSecond !== null && itemsPerSecond > 0
  ) {
    etaMs = Math.max(0, ((s.total - s.scanned) / itemsPerSecond) * 1000);
  }
  return { fraction, itemsPerSecond, etaMs };
}

/** `1h02m`, `2m05s`, `9s`. */
export function formatDuration(ms: number): string {
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}

function grouped(n: number): string {
  return Math.round(n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Options of {@linkcode formatProgress}. */
export interface FormatProgressOptions {
  /** `tty`: with a bar (for a `\r`-rewritten line); `plain`: a log line. */
  readonly mode: "tty" | "plain";
  /** Bar width in characters (tty mode). @default 24 */
  readonly barWidth?: number;
}

/**
 * Renders one snapshot as one line (no line break). Pure.
 *
 * @example A bar for a terminal
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatProgress } from "./progress.ts";
 *
 * const line = formatProgress({
 *   phase: "delete", scanned: 10, baseline: 0, total: 10, written: 0, alreadyPresent: 0,
 *   deleted: 10, segmentsDone: 2, segments: 2, consumedWcu: 10, consumedRcu: 1, startedAt: 0, now: 1000,
 * }, { mode: "tty", barWidth: 10 });
 * assert.ok(line.startsWith("delete [##########] 100.0%"));
 * ```
 */
export function formatProgress(
  s: ProgressSnapshot,
  options: FormatProgressOptions,
): string {
  const est = estimateProgress(s);
  const pct = est.fraction === null
    ? "  ?  "
    : `${(est.fraction * 100).toFixed(1)}%`;
  const items = s.total === null
    ? `${grouped(s.scanned)} items`
    : `${grouped(s.scanned)}/${grouped(Math.max(s.total, s.scanned))} items`;
  const elapsedSec = Math.max(0, s.now - s.startedAt) / 1000;
  const wcuRate = elapsedSec > 0 ? s.consumedWcu / elapsedSec : 0;
  const parts = [
    `written ${grouped(s.written)}`,
    `present ${grouped(s.alreadyPresent)}`,
    `deleted ${grouped(s.deleted)}`,
    `segments ${s.segmentsDone}/${s.segments}`,
    `${wcuRate.toFixed(1)} WCU/s`,
    `ETA ${est.etaMs === null ? "?" : formatDuration(est.etaMs)}`,
  ];
  if (options.mode === "plain") {
    return `${s.phase} ${pct.trim()} ${items} ${parts.join(" ")}`;
  }
  const width = options.barWidth ?? 24;
  const filled = est.fraction === null ? 0 : Math.round(est.fraction * width);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  return `${s.phase} [${bar}] ${pct.padStart(6)} ${items} | ${
    parts.join(" | ")
  }`;
}

/** Options of {@linkcode createProgressReporter}. */
export interface ProgressReporterOptions {
  /** Receives text (already including `\r` or `\n`). */
  readonly write: (text: string) => void;
  /** Whether `write` goes to a terminal (bar rewritten in place) or to a log. */
  readonly tty: boolean;
  /** Terminal width; tty lines are cut to fit one row. @default 80 */
  readonly columns?: number;
  /** Clock for throttling. Required so tests stay deterministic. */
  readonly clock: Pick<Clock, "now">;
  /** Minimum time between progress lines. @default 200 for tty, 10000 for plain */
  readonly minIntervalMs?: number;
}

/**
 * An event sink for {@linkcode MigrationContext} `onEvent`: renders progress
 * (throttled; the final snapshot of a phase is always written) and logs.
 *
 * @example Plain log lines
 * ```ts
 * import assert from "node:assert/strict";
 * import { createProgressReporter } from "./progress.ts";
 *
 * const out: string[] = [];
 * const report = createProgressReporter({ write: (t) => out.push(t), tty: false, clock: { now: () => 0 } });
 * report({ kind: "log", level: "warn", migration: "0.10.0-namespace-keys", message: "namespace registered" });
 * assert.deepEqual(out, ["[0.10.0-namespace-keys] warn: namespace registered\n"]);
 * ```
 */
export function createProgressReporter(
  options: ProgressReporterOptions,
): (event: MigrationEvent) => void {
  const interval = options.minIntervalMs ?? (options.tty ? 200 : 10_000);
  let last = -Infinity;
  let lastPhase: string | null = null;
  let lineOpen = false;
  const closeLine = (): void => {
    if (lineOpen) options.write("\n");
    lineOpen = false;
  };
  return function reportProgress(event: MigrationEvent): void {
    switch (event.kind) {
      case "log": {
        closeLine();
        const who = event.migration === null ? "" : `[${event.migration}] `;
        const level = event.level === "warn" ? "warn: " : "";
        options.write(`${who}${level}${event.message}\n`);
        return;
      }
      case "migration_started":
        closeLine();
        options.write(`applying ${event.migration} (${event.version})\n`);
        return;
      case "migration_finished": {
        closeLine();
        const r = event.report;
        options.write(
          `applied ${event.migration}: scanned ${grouped(r.scanned)}, written ${
            grouped(r.written)
          }, present ${grouped(r.alreadyPresent)}, deleted ${
            grouped(r.deleted)
          }\n`,
        );
        return;
      }
      case "progress": {
        const s = event.snapshot;
        const now = options.clock.now();
        const final = s.segmentsDone >= s.segments;
        const phaseKey = `${event.migration}:${s.phase}`;
        const phaseChanged = phaseKey !== lastPhase;
        if (!final && !phaseChanged && now - last < interval) return;
        if (phaseChanged && lastPhase !== null) closeLine();
        last = now;
        lastPhase = phaseKey;
        if (options.tty) {
          // Clear the line (no stale tail) and stay within one row (no scrolling).
          const line = formatProgress(s, { mode: "tty" });
          const cols = Math.max(20, (options.columns ?? 80) - 1);
          options.write(`\r\x1b[2K${line.slice(0, cols)}`);
          lineOpen = true;
          if (final) closeLine();
        } else {
          options.write(`${formatProgress(s, { mode: "plain" })}\n`);
        }
        return;
      }
      default: {
        const _exhaustive: never = event;
        return _exhaustive;
      }
    }
  };
}

/**
 * Progress of long CLI operations on stderr. On a terminal, a bar drawn by
 * npm `cli-progress` through the injected I/O, rewritten in place, cut to
 * the terminal width and never past 100 %. Anywhere else (a pipe, a CI log,
 * `TERM=dumb`), plain log lines such as
 * `Purging dead letters 5000/20000 (25%)`, at most one per interval, and a
 * last one when the operation ends.
 *
 * No colour is ever used (the bar is `#` and `-`), so `NO_COLOR` always
 * holds. `ZAEL_PROGRESS_INTERVAL_MS` sets the milliseconds between plain
 * lines (default 10000); it also shortens the delay before anything is
 * shown, so `0` shows every update at once.
 *
 * @module
 */
import { SingleBar } from "cli-progress";
import type { CliContext } from "./_context.ts";
import { formatDuration } from "../migrations/progress.ts";

/** A running progress display. */
export interface Progress {
  /**
   * Sets the current value, the `{…}` fields of the format and, when it
   * became known, the total.
   */
  update(
    value: number,
    payload?: Record<string, string | number>,
    total?: number,
  ): void;
  /** Draws the last state and stops (the terminal line is cleared). */
  stop(): void;
}

/** Options of {@linkcode startProgress}. */
export interface ProgressOptions {
  /**
   * The `cli-progress` format, e.g. `"Work {bar} {value}/{total} units"`;
   * payload fields as `{name}`. Plain lines leave `{bar}` out and add the
   * percentage when the total is known.
   */
  readonly format: string;
  /** The value at 100 %. @default 0 (unknown: no percentage) */
  readonly total?: number;
  /** Fields of the format at the start. */
  readonly payload?: Record<string, string | number>;
  /** Milliseconds between plain lines (off a terminal). @default 10000, or `ZAEL_PROGRESS_INTERVAL_MS` */
  readonly plainIntervalMs?: number;
  /** Show nothing for operations that end sooner than this. @default 1000 */
  readonly delayMs?: number;
}

/** Default milliseconds between plain progress lines. */
const DEFAULT_PLAIN_INTERVAL_MS = 10_000;
/** Default milliseconds before progress is shown at all. */
const DEFAULT_DELAY_MS = 1000;
/** Terminal width used when the terminal does not say. */
const DEFAULT_COLUMNS = 80;

/**
 * The interval between plain progress lines set by
 * `ZAEL_PROGRESS_INTERVAL_MS`, or `undefined` when it is unset or not a
 * whole number of milliseconds.
 */
export function progressIntervalFromEnv(
  env: Readonly<Record<string, string | undefined>>,
): number | undefined {
  const v = env["ZAEL_PROGRESS_INTERVAL_MS"]?.trim();
  return v && /^\d+$/.test(v) ? Number(v) : undefined;
}

/**
 * Whether progress is drawn as a bar rewritten in place: stderr is a
 * terminal that can move the cursor (not `TERM=dumb`) and the I/O has a raw
 * writer. Otherwise progress is plain lines.
 */
export function progressIsTerminal(ctx: CliContext): boolean {
  return (ctx.io.isTerminal?.() ?? false) && ctx.io.errRaw !== undefined &&
    ctx.env["TERM"] !== "dumb";
}

/**
 * Width of the bar: what the line leaves of the terminal (counting 6
 * columns per other field), between 5 and 24.
 */
function barSize(format: string, columns: number): number {
  const rest = format.replace("{bar}", "").replace(/\{[^}]+\}/g, "000000");
  return Math.max(5, Math.min(24, columns - rest.length - 1));
}

/** State of a progress display, for a plain line. */
interface PlainState {
  readonly value: number;
  readonly total: number;
  readonly payload: Readonly<Record<string, string | number>>;
  readonly elapsedMs: number;
}

/**
 * One plain progress line: the format without `{bar}`, its fields filled
 * in, and ` (NN%)` when the total is known and the format has no
 * `{percentage}`.
 */
export function formatPlainProgress(format: string, s: PlainState): string {
  const known = s.total > 0;
  const percentage = known
    ? Math.min(100, Math.floor((s.value / s.total) * 100))
    : null;
  const etaMs = known && s.value > 0
    ? (s.elapsedMs / s.value) * (s.total - s.value)
    : null;
  const fields: Record<string, string> = {
    value: String(s.value),
    total: known ? String(s.total) : "?",
    percentage: percentage === null ? "?" : String(percentage),
    eta: etaMs === null ? "?" : String(Math.round(etaMs / 1000)),
    "eta_formatted": etaMs === null ? "?" : formatDuration(etaMs),
    duration: String(Math.round(s.elapsedMs / 1000)),
    "duration_formatted": formatDuration(s.elapsedMs),
  };
  const line = format
    .replace(/\s*\{bar\}\s*/g, " ")
    .replace(/\{(\w+)\}/g, (match, key: string) => {
      const p = s.payload[key];
      return p !== undefined ? String(p) : fields[key] ?? match;
    })
    .replace(/\s+/g, " ")
    .trim();
  return percentage !== null && !format.includes("{percentage}")
    ? `${line} (${percentage}%)`
    : line;
}

/** Plain log lines through `io.err`: throttled, then a last one at the end. */
function startPlain(
  ctx: CliContext,
  options: ProgressOptions,
  timing: { readonly delayMs: number; readonly intervalMs: number },
): Progress {
  const startedAt = ctx.now();
  let total = options.total ?? 0;
  let value = 0;
  let payload: Record<string, string | number> = { ...options.payload };
  let lastAt: number | null = null;
  let lastLine = "";
  let stopped = false;
  const log = (force: boolean): void => {
    const now = ctx.now();
    if (!force) {
      if (now - startedAt < timing.delayMs) return;
      if (lastAt !== null && now - lastAt < timing.intervalMs) return;
    }
    const line = formatPlainProgress(options.format, {
      value,
      total,
      payload,
      elapsedMs: now - startedAt,
    });
    if (line === lastLine) return;
    ctx.io.err(line);
    lastAt = now;
    lastLine = line;
  };
  return {
    update(v, p, t) {
      if (stopped) return;
      if (t !== undefined) total = t;
      value = total > 0 ? Math.min(total, Math.max(0, v)) : Math.max(0, v);
      payload = { ...payload, ...p };
      log(false);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      // Where it ended, when anything was shown.
      if (lastAt !== null) log(true);
    },
  };
}

/** A bar rewritten in place on the terminal, drawn by `cli-progress`. */
function startBar(
  ctx: CliContext,
  options: ProgressOptions,
  write: (text: string) => void,
  delayMs: number,
): Progress {
  const columns = (): number => {
    const c = ctx.io.columns?.();
    return c !== undefined && Number.isInteger(c) && c > 0
      ? c
      : DEFAULT_COLUMNS;
  };
  const stream = {
    isTTY: true,
    get columns(): number {
      return columns();
    },
    write(s: string): boolean {
      write(s);
      return true;
    },
  };
  const bar = new SingleBar({
    stream: stream as unknown as NodeJS.WritableStream,
    format: options.format,
    clearOnComplete: true,
    hideCursor: false,
    // Cut each line to the terminal width: a wrapped line scrolls on every redraw.
    linewrap: true,
    barsize: barSize(options.format, columns()),
    barCompleteChar: "#",
    barIncompleteChar: "-",
    // A total not known yet is an empty bar and "?", not a full bar and "0".
    emptyOnZero: true,
    formatValue: (v, _options, type) =>
      type === "total" && v <= 0 ? "?" : String(v),
  });
  let total = options.total ?? 0;
  const clamp = (v: number): number =>
    total > 0 ? Math.min(total, Math.max(0, v)) : Math.max(0, v);
  let value = 0;
  let payload: Record<string, string | number> = { ...options.payload };
  let started = false;
  let stopped = false;
  const start = (): void => {
    started = true;
    bar.start(total, value, payload);
  };
  const timer = delayMs > 0 ? setTimeout(start, delayMs) : undefined;
  if (timer === undefined) start();
  return {
    update(v, p, t) {
      if (stopped) return;
      if (t !== undefined && t !== total) {
        total = t;
        if (started) bar.setTotal(t);
      }
      value = clamp(v);
      payload = { ...payload, ...p };
      if (started) bar.update(value, p ?? {});
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      if (started) bar.stop();
    },
  };
}

/**
 * Starts a progress display on stderr: a bar on a terminal (see
 * {@linkcode progressIsTerminal}), plain lines elsewhere, nothing with
 * `quiet` (JSON output). Values are clamped to `[0, total]`.
 */
export function startProgress(
  ctx: CliContext,
  options: ProgressOptions,
  quiet = false,
): Progress {
  if (quiet) return { update() {}, stop() {} };
  const fromEnv = progressIntervalFromEnv(ctx.env);
  const intervalMs = fromEnv ?? options.plainIntervalMs ??
    DEFAULT_PLAIN_INTERVAL_MS;
  const delay = options.delayMs ?? DEFAULT_DELAY_MS;
  const delayMs = fromEnv === undefined ? delay : Math.min(delay, fromEnv);
  const raw = ctx.io.errRaw;
  if (progressIsTerminal(ctx) && raw) {
    return startBar(ctx, options, (t) => raw.call(ctx.io, t), delayMs);
  }
  return startPlain(ctx, options, { delayMs, intervalMs });
}

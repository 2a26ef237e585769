/**
 * Progress of long CLI operations on stderr, drawn by npm `cli-progress`
 * through the injected I/O: a bar rewritten in place on a terminal, cut to
 * its width and never past 100 %. When stderr is not a terminal (pipes, CI,
 * JSON output) nothing is drawn, unless the caller asks for a log line
 * every few seconds (`plain`).
 *
 * @module
 */
import { SingleBar } from "cli-progress";
import type { CliContext } from "./_context.ts";

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
  /** The `cli-progress` format, e.g. `"{bar} {value}/{total} units"`; payload fields as `{name}`. */
  readonly format: string;
  /** The value at 100 %. @default 0 (no bar) */
  readonly total?: number;
  /** Fields of the format at the start. */
  readonly payload?: Record<string, string | number>;
  /** When stderr is not a terminal, write a log line every `plainIntervalMs` instead of nothing. @default false */
  readonly plain?: boolean;
  /** Milliseconds between log lines when stderr is not a terminal and `plain` is set. @default 10000 */
  readonly plainIntervalMs?: number;
  /** Show nothing for operations that end sooner than this. @default 1000 */
  readonly delayMs?: number;
}

/**
 * Width of the bar: what the line leaves of the terminal (counting 6
 * columns per other field), between 5 and 24.
 */
function barSize(format: string, columns: number): number {
  const rest = format.replace("{bar}", "").replace(/\{[^}]+\}/g, "000000");
  return Math.max(5, Math.min(24, columns - rest.length - 1));
}

/** Line-buffers text into `io.err` (a log line per `\n`). */
function lineWriter(ctx: CliContext): (text: string) => void {
  let buffer = "";
  return (t) => {
    buffer += t;
    let nl = buffer.indexOf("\n");
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line.trim()) ctx.io.err(line);
      nl = buffer.indexOf("\n");
    }
  };
}

/** Terminal width used when the terminal does not say. */
const DEFAULT_COLUMNS = 80;

/**
 * Starts a progress display on stderr. With `quiet`, on a terminal without
 * a raw writer, or off a terminal without `plain`, it draws nothing. Values
 * are clamped to `[0, total]`.
 */
export function startProgress(
  ctx: CliContext,
  options: ProgressOptions,
  quiet = false,
): Progress {
  const tty = ctx.io.isTerminal?.() ?? false;
  const raw = ctx.io.errRaw;
  if (quiet || (tty && !raw) || (!tty && !options.plain)) {
    return { update() {}, stop() {} };
  }
  const write = tty && raw
    ? (t: string) => raw.call(ctx.io, t)
    : lineWriter(ctx);
  const columns = (): number => {
    const c = ctx.io.columns?.();
    return c !== undefined && Number.isInteger(c) && c > 0
      ? c
      : DEFAULT_COLUMNS;
  };
  const stream = {
    isTTY: tty,
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
    noTTYOutput: !tty,
    notTTYSchedule: options.plainIntervalMs ?? 10_000,
    clearOnComplete: true,
    hideCursor: false,
    // Cut each line to the terminal width: a wrapped line scrolls on every redraw.
    linewrap: true,
    barsize: barSize(options.format, columns()),
    barCompleteChar: "#",
    barIncompleteChar: "-",
  });
  let total = options.total ?? 0;
  const clamp = (v: number): number =>
    total > 0 ? Math.min(total, Math.max(0, v)) : Math.max(0, v);
  let value = 0;
  let payload: Record<string, string | number> = { ...options.payload };
  let started = false;
  let stopped = false;
  const timer = setTimeout(() => {
    started = true;
    bar.start(total, value, payload);
  }, options.delayMs ?? 1000);
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

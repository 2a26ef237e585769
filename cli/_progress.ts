/**
 * Progress of long CLI operations on stderr, drawn by npm `cli-progress`
 * through the injected I/O: a bar rewritten in place on a terminal, a log
 * line every few seconds otherwise (CI logs, pipes).
 *
 * @module
 */
import { SingleBar } from "cli-progress";
import type { CliContext } from "./_context.ts";

/** A running progress display. */
export interface Progress {
  /** Sets the current value and the `{…}` fields of the format. */
  update(value: number, payload?: Record<string, string | number>): void;
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
  /** Milliseconds between log lines when stderr is not a terminal. @default 10000 */
  readonly plainIntervalMs?: number;
  /** Show nothing for operations that end sooner than this. @default 1000 */
  readonly delayMs?: number;
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

/**
 * Starts a progress display on stderr. With `quiet`, or on a terminal
 * without a raw writer, it draws nothing.
 */
export function startProgress(
  ctx: CliContext,
  options: ProgressOptions,
  quiet = false,
): Progress {
  const tty = ctx.io.isTerminal?.() ?? false;
  const raw = ctx.io.errRaw;
  if (quiet || (tty && !raw)) {
    return { update() {}, stop() {} };
  }
  const write = tty && raw
    ? (t: string) => raw.call(ctx.io, t)
    : lineWriter(ctx);
  const stream = {
    isTTY: tty,
    columns: 100,
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
    barsize: 24,
    barCompleteChar: "#",
    barIncompleteChar: "-",
  });
  let value = 0;
  let payload: Record<string, string | number> = { ...options.payload };
  let started = false;
  let stopped = false;
  const timer = setTimeout(() => {
    started = true;
    bar.start(options.total ?? 0, value, payload);
  }, options.delayMs ?? 1000);
  return {
    update(v, p) {
      if (stopped) return;
      value = v;
      payload = { ...payload, ...p };
      if (started) bar.update(v, p ?? {});
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      if (started) bar.stop();
    },
  };
}

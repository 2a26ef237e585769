/**
 * Small helpers shared by the worker modules. Not part of the public API.
 *
 * @module
 */
import type { Clock } from "../core/clock.ts";
import { StreamWorkerError } from "./errors.ts";

/**
 * Compares two DynamoDB Streams sequence numbers (decimal strings of 21-40
 * digits) numerically. Returns a negative number, zero or a positive number.
 */
export function compareSequence(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The larger of two optional sequence numbers. */
export function maxSequence(
  a: string | undefined,
  b: string | undefined,
): string | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return compareSequence(a, b) >= 0 ? a : b;
}

/** Sleeps on the clock; resolves `false` instead of rejecting when `signal` aborts. */
export async function sleepUnlessAborted(
  clock: Clock,
  ms: number,
  signal: AbortSignal,
): Promise<boolean> {
  if (signal.aborted) return false;
  try {
    await clock.sleep(ms, signal);
    return true;
  } catch (error) {
    if (signal.aborted) return false;
    throw error;
  }
}

/** Runs async functions one after another (a per-lease write queue). */
export class SerialQueue {
  #tail: Promise<unknown> = Promise.resolve();

  /** Runs `fn` after every previously queued function has settled. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(fn, fn);
    this.#tail = result.catch(() => undefined);
    return result;
  }
}

/** Splits `items` into consecutive groups of at most `size`. */
export function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) {
    out.push(items.slice(i, i + size));
  }
  return out;
}

/**
 * Runs `fn` with a signal that aborts when `signal` aborts or `timeoutMs`
 * of `clock` time pass, whichever comes first. A timeout rejects with a
 * retryable `DEPENDENCY_TIMEOUT` error naming `action`, even if `fn`
 * ignores its signal; an abort of `signal` rejects with its reason.
 */
export async function callWithDeadline<T>(
  clock: Clock,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  action: string,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  signal?.throwIfAborted();
  const inner = new AbortController();
  const timer = new AbortController();
  const onOuter = (): void => inner.abort(signal?.reason);
  signal?.addEventListener("abort", onOuter, { once: true });
  let timedOut = false;
  const expiry = new Promise<never>((_resolve, reject) => {
    clock.sleep(timeoutMs, timer.signal).then(() => {
      timedOut = true;
      const error = new StreamWorkerError(
        "DEPENDENCY_TIMEOUT",
        `Cannot ${action}: no answer within ${timeoutMs} ms`,
        { retryable: true },
      );
      inner.abort(error);
      reject(error);
    }, () => {});
  });
  const aborted = new Promise<never>((_resolve, reject) => {
    const fire = (): void => reject(inner.signal.reason);
    if (inner.signal.aborted) fire();
    else inner.signal.addEventListener("abort", fire, { once: true });
  });
  aborted.catch(() => {});
  expiry.catch(() => {});
  try {
    return await Promise.race([fn(inner.signal), expiry, aborted]);
  } catch (error) {
    // The call's own abort error after our timeout is the timeout.
    if (
      timedOut && !(signal?.aborted ?? false) &&
      (error as { name?: unknown } | null)?.name === "AbortError"
    ) {
      throw inner.signal.reason;
    }
    throw error;
  } finally {
    timer.abort();
    signal?.removeEventListener("abort", onOuter);
    if (!inner.signal.aborted) inner.abort();
  }
}

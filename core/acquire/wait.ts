/**
 * Waiting for capacity: `acquire({ ..., wait: { maxMs }, signal })` tries,
 * and on a refusal sleeps for the refusal's Retry-After (plus jitter, so
 * waiters refused together do not all come back at once), then tries again,
 * until admitted or `maxMs` has passed.
 *
 * - **All or nothing.** Every try is an ordinary acquire (or partial grant)
 *   over every limit and the cascade parent; a refused try charges nothing,
 *   so nothing is held while waiting.
 * - **Never for what can never fit.** A request over a capacity
 *   ({@linkcode RequestExceedsCapacity}) is thrown at once, as is every
 *   error other than a refusal (unavailability follows `onUnavailable`).
 * - **Bounded.** A try starts no later than `maxMs` after the call started;
 *   a refusal whose Retry-After ends past that is thrown at once (the usual
 *   {@linkcode RateLimitExceeded}, with its statuses) instead of sleeping
 *   for nothing. `maxMs: 0` tries once. A concurrency limit's slot may be
 *   given back before its Retry-After (the holder's lease deadline): while
 *   only such limits refuse, the wait tries again every 100 ms or so.
 * - **Deadlines.** The per-call `timeoutMs` (or the limiter's) bounds each
 *   try, not the wait: a call takes at most `maxMs` plus one `timeoutMs`.
 * - **Cancellable.** Aborting `signal` ends the wait at once, rejecting
 *   with `signal.reason`; a try in flight is aborted too (its write, if it
 *   may have applied, is reported stranded as for any aborted acquire).
 *   Nothing is charged for a cancelled wait.
 *
 * @module
 */
import type { Clock } from "../clock.ts";
import { RateLimitExceeded, ValidationError } from "../errors.ts";

/** How long {@linkcode AcquireOptions.wait} may wait. */
export interface WaitOptions {
  /**
   * Milliseconds the call may wait for capacity, from its start (a finite
   * number ≥ 0; 0 tries once). Each try has its own `timeoutMs` deadline.
   */
  readonly maxMs: number;
}

/** Shortest sleep between two tries (a Retry-After of 0 does not spin). */
export const MIN_WAIT_MS = 5;
/**
 * Seconds between tries while a limit that may free up before its
 * Retry-After (a concurrency slot given back before its lease deadline)
 * refuses.
 */
export const RELEASE_POLL_SECONDS = 0.1;
/** Least jitter range added to a Retry-After. */
export const MIN_JITTER_MS = 10;
/** Jitter range as a fraction of the Retry-After. */
export const JITTER_FRACTION = 0.2;

/**
 * Validates `wait`.
 *
 * @throws {ValidationError} `VALIDATION_FAILED` with field `wait` or `wait.maxMs`
 */
export function resolveWait(wait: unknown): WaitOptions {
  if (!wait || typeof wait !== "object" || Array.isArray(wait)) {
    throw new ValidationError(
      "wait",
      wait,
      "must be an object such as { maxMs: 2000 }",
    );
  }
  const maxMs = (wait as { maxMs?: unknown }).maxMs;
  if (
    typeof maxMs !== "number" || !Number.isFinite(maxMs) || maxMs < 0
  ) {
    throw new ValidationError(
      "wait.maxMs",
      maxMs,
      "must be a finite number of milliseconds, 0 or more, such as 2000",
    );
  }
  return { maxMs };
}

/**
 * Milliseconds to sleep after a refusal with `retryAfterSeconds`: the
 * Retry-After rounded up, plus a jitter in [0, max({@linkcode MIN_JITTER_MS},
 * {@linkcode JITTER_FRACTION} × Retry-After)), at least
 * {@linkcode MIN_WAIT_MS}. Pure (`random` in [0, 1)).
 */
export function waitDelayMs(
  retryAfterSeconds: number,
  random: () => number,
): number {
  const base = Math.ceil(Math.max(0, retryAfterSeconds) * 1000);
  const span = Math.max(MIN_JITTER_MS, base * JITTER_FRACTION);
  return Math.max(MIN_WAIT_MS, base + Math.floor(random() * span));
}

/** What {@linkcode waitForCapacity} needs. */
export interface WaitContext {
  /** The wait's bounds. */
  readonly wait: WaitOptions;
  /** Time and sleep. */
  readonly clock: Clock;
  /** Random numbers in [0, 1) for the jitter. */
  readonly random: () => number;
  /** Cancels the wait. */
  readonly signal?: AbortSignal;
  /**
   * Limits whose capacity may come back before their Retry-After
   * (concurrency limits: a holder may end its lease early). Their refusal
   * is tried again every {@linkcode RELEASE_POLL_SECONDS} (jittered) within
   * `maxMs`, and never ends the wait at once.
   */
  readonly released?: ReadonlySet<string>;
}

/**
 * Seconds to wait after refusal `e`, and whether a limit that cannot free
 * up early refuses past `leftMs` (then waiting is pointless). Pure.
 */
export function refusalWait(
  e: RateLimitExceeded,
  leftMs: number,
  released: ReadonlySet<string> = new Set(),
): { readonly seconds: number; readonly hopeless: boolean } {
  let seconds = 0;
  let hopeless = false;
  for (const v of e.violations) {
    const early = released.has(v.limitName);
    const s = early
      ? Math.min(v.retryAfterSeconds, RELEASE_POLL_SECONDS)
      : v.retryAfterSeconds;
    if (!early && Math.ceil(v.retryAfterSeconds * 1000) > leftMs) {
      hopeless = true;
    }
    seconds = Math.max(seconds, s);
  }
  return { seconds, hopeless };
}

/**
 * Runs `attempt` until it resolves, sleeping a refusal's Retry-After (with
 * jitter) between tries, within `wait.maxMs`.
 *
 * @throws {RateLimitExceeded} the last refusal, when the next try would start after `maxMs`
 * @throws `signal.reason` when the wait was cancelled
 * @throws whatever else `attempt` throws, at once
 */
export async function waitForCapacity<T>(
  attempt: () => Promise<T>,
  ctx: WaitContext,
): Promise<T> {
  const { clock, signal } = ctx;
  const until = clock.now() + ctx.wait.maxMs;
  for (;;) {
    signal?.throwIfAborted();
    try {
      return await attempt();
    } catch (e) {
      if (signal?.aborted) throw signal.reason;
      if (!(e instanceof RateLimitExceeded)) throw e;
      const left = until - clock.now();
      const next = refusalWait(e, left, ctx.released);
      if (left <= 0 || next.hopeless) throw e;
      await clock.sleep(
        Math.min(waitDelayMs(next.seconds, ctx.random), left),
        signal,
      );
    }
  }
}

/**
 * One timer for every pending deadline of the process (used by
 * `transport.ts`): a warm acquire then arms no timer of its own, since
 * creating and cancelling one per call cost several microseconds of CPU.
 * The timer is armed for the earliest pending deadline and fires at it
 * exactly (not on a coarse tick); with one `timeoutMs` for every call,
 * each new deadline is later than the armed one and a call arms nothing.
 * While a deadline is pending the timer keeps the process alive, as a
 * timer per call did; with none pending it is unreferenced, so an idle
 * process can exit.
 *
 * @module
 */
import { clearTimeout, setTimeout } from "node:timers";

/** A pending deadline. */
export interface Deadline {
  /** `performance.now()` at which it passes. */
  readonly at: number;
  /** Called once when it passes (unless cancelled first). */
  readonly fire: () => void;
}

type Timer = ReturnType<typeof setTimeout>;

const pending = new Set<Deadline>();
let timer: Timer | null = null;
let armedAt = Infinity;
let referenced = false;

function arm(at: number, now: number): void {
  if (timer !== null) clearTimeout(timer);
  armedAt = at;
  timer = setTimeout(sweep, Math.max(0, Math.ceil(at - now)));
  referenced = true;
}

/** Fires every deadline that passed and arms the timer for the next one. */
function sweep(): void {
  timer = null;
  armedAt = Infinity;
  referenced = false;
  const now = performance.now();
  const due: Deadline[] = [];
  let next = Infinity;
  for (const d of pending) {
    if (d.at <= now) due.push(d);
    else if (d.at < next) next = d.at;
  }
  for (const d of due) pending.delete(d);
  if (next !== Infinity) arm(next, now);
  for (const d of due) d.fire();
}

/** Calls `fire` in `ms` milliseconds unless {@linkcode cancelDeadline} comes first. */
export function scheduleDeadline(ms: number, fire: () => void): Deadline {
  const now = performance.now();
  const d: Deadline = { at: now + ms, fire };
  pending.add(d);
  if (d.at < armedAt) arm(d.at, now);
  else if (!referenced) {
    (timer as Timer).ref();
    referenced = true;
  }
  return d;
}

/** Forgets a deadline (it will not fire). */
export function cancelDeadline(d: Deadline): void {
  pending.delete(d);
  if (pending.size === 0 && referenced && timer !== null) {
    // Left to fire into an empty set, unreferenced: cheaper than a cancel and a new timer.
    timer.unref();
    referenced = false;
  }
}

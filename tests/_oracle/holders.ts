/**
 * A sound checker of concurrency-limit histories (issue 14): never more than
 * `max` holders whose deadline has not passed, and refusals only when the
 * limit may have been full (pure: no I/O).
 *
 * ## Histories
 *
 * Each acquire with a concurrency limit has its call interval `[invoke,
 * response]` (ms on the one clock every client uses), the `leaseMs` it
 * asked, and, when it was admitted, when its release was invoked (commit or
 * rollback before the deadline; `null`: never, a crashed holder or a lease
 * that outlived its deadline).
 *
 * ## Over-holding (safety)
 *
 * An admitted acquire certainly held its slot during
 * `[response + 1, min(releaseInvoke, invoke + leaseMs))` (times are whole
 * milliseconds read after the event, so an event read as `t` happened in
 * `[t, t + 1)`): its take applied by
 * `response`, its release applied no earlier than it was invoked, and its
 * slot's stored expiry (`start + leaseMs`, with `start ≥ invoke`) is no
 * earlier than `invoke + leaseMs`. A taker sees a slot free only once the
 * stored expiry is at or before its own clock, so with one clock these
 * certain intervals of the holders of one slot never overlap; more than
 * `max` of them overlapping at one instant proves over-admission.
 *
 * ## Refusals (liveness)
 *
 * Any call may have held a slot during `[invoke, until)`: an admitted one
 * until its release completed (`releaseDone`) or `response + leaseMs`
 * (the latest expiry) when never released; one refused by another limit
 * (its slot given back before it answered) until `response`; one that
 * failed until `response + leaseMs`. A refusal by the concurrency limit is
 * justified when, at some instant of its call, at least `max` other calls
 * may have held a slot. A refusal that lost every race (`contended`) is
 * reported apart.
 *
 * @module
 */

/** One acquire with a concurrency limit. */
export interface HolderOp {
  /** Unique id, used in reports. */
  readonly id: string;
  /** When the acquire was called (ms). */
  readonly invoke: number;
  /** When it answered (ms). */
  readonly response: number;
  /** `leaseMs` of the limit. */
  readonly leaseMs: number;
  /**
   * `admitted`; `refused` (by the concurrency limit); `refused_other` (by a
   * rate limit: a slot taken was given back before the answer); `error`.
   */
  readonly outcome: "admitted" | "refused" | "refused_other" | "error";
  /** Refused after lost races while a slot was free (`available > 0`). */
  readonly contended?: boolean;
  /** When its release was invoked (admitted only; `null`: never). */
  readonly releaseInvoke?: number | null;
  /** When its release call returned (admitted only; `null`: never). */
  readonly releaseDone?: number | null;
}

/** More than `max` certain holders at one instant. */
export interface OverHolding {
  /** The instant (ms). */
  readonly at: number;
  /** The holders then. */
  readonly holders: readonly string[];
}

/** What the checker found. */
export interface HolderReport {
  /** `true` when nothing below was found. */
  readonly ok: boolean;
  /** Safety violations. */
  readonly overHeld: readonly OverHolding[];
  /** Refusals when fewer than `max` others may have held a slot. */
  readonly unjustified: readonly string[];
  /** Unjustified refusals that reported lost races (not counted in `ok`). */
  readonly contended: readonly string[];
}

/**
 * The interval an admitted acquire certainly held its slot (may be empty).
 * Times are whole milliseconds read after the fact (`Date.now()` floors):
 * an event read as `t` happened in `[t, t + 1)`.
 */
export function certainHold(op: HolderOp): [number, number] {
  const release = op.releaseInvoke ?? Infinity;
  return [op.response + 1, Math.min(release, op.invoke + op.leaseMs)];
}

/** The interval a call may have held a slot (empty for a refusal by the concurrency limit). */
export function possibleHold(op: HolderOp): [number, number] {
  switch (op.outcome) {
    case "admitted": {
      const done = op.releaseDone ?? null;
      const latest = op.response + op.leaseMs + 1;
      return [op.invoke, done === null ? latest : Math.min(done + 1, latest)];
    }
    case "refused_other":
      return [op.invoke, op.response + 1];
    case "error":
      return [op.invoke, op.response + op.leaseMs + 1];
    case "refused":
      return [op.invoke, op.invoke];
  }
}

/** Checks a history of one concurrency limit of capacity `max`. */
export function checkHolders(
  ops: readonly HolderOp[],
  max: number,
): HolderReport {
  // Safety: sweep the certain intervals (half-open: an end frees before a start).
  const events: [number, number, string][] = [];
  for (const op of ops) {
    if (op.outcome !== "admitted") continue;
    const [a, b] = certainHold(op);
    if (a < b) events.push([a, 1, op.id], [b, -1, op.id]);
  }
  events.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  const held = new Set<string>();
  const overHeld: OverHolding[] = [];
  for (const [at, d, id] of events) {
    if (d < 0) held.delete(id);
    else {
      held.add(id);
      if (held.size > max) overHeld.push({ at, holders: [...held] });
    }
  }
  // Liveness: each refusal against the possible holders of its interval.
  const possible = ops.map((op) => [op, possibleHold(op)] as const);
  const unjustified: string[] = [];
  const contended: string[] = [];
  for (const op of ops) {
    if (op.outcome !== "refused") continue;
    const candidates = [
      op.invoke,
      ...possible.map(([, [a]]) => a).filter((a) =>
        a >= op.invoke && a <= op.response
      ),
    ];
    const justified = candidates.some((t) =>
      possible.filter(([o, [a, b]]) => o !== op && a <= t && t < b).length >=
        max
    );
    if (!justified) (op.contended ? contended : unjustified).push(op.id);
  }
  return {
    ok: overHeld.length === 0 && unjustified.length === 0,
    overHeld,
    unjustified,
    contended,
  };
}

/** A one-line summary of a report. */
export function formatHolders(r: HolderReport): string {
  return [
    ...r.overHeld.map((o) =>
      `over-held at ${o.at}: ${o.holders.length} holders (${
        o.holders.join(", ")
      })`
    ),
    ...r.unjustified.map((id) => `unjustified refusal: ${id}`),
  ].join("; ") || "ok";
}

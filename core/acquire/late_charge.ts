/**
 * A charge whose caller gave up on its write: the deadline passed with the
 * write on the wire, the caller was answered at once, and the write ran on
 * in the background (`transport.ts`, `sendWrite`). The transport then tells
 * how it ended ({@linkcode LateOutcome}), and the charge is settled:
 *
 * - `applied`: it applied exactly once (no attempt is sent after the
 *   deadline, none that may have applied is resent), for a call that did not
 *   get the tokens: given back, as a refused cascade side is (`giveBack`,
 *   with its own grace; a failed give-back is reported stranded).
 * - `notApplied`: nothing was charged; nothing to report.
 * - `unknown` (an ambiguous failure, or the write's grace ran out): reported
 *   stranded, as every charge that may stand without a lease is.
 *
 * The outcome settles once, so a charge is given back at most once, and
 * only when it is known to have applied (a give-back of a charge that did
 * not apply would over-admit).
 *
 * @module
 */
import type { BucketRef } from "../bucket_item.ts";
import {
  certainlyNotApplied,
  type LateOutcome,
  watchLate,
} from "../transport.ts";
import { type Admission, reportStranded } from "./admission.ts";

/**
 * Late settlements in progress, per admission, and per stranded-charge
 * sink for the leases (awaited by `close()`).
 */
const pending = new WeakMap<object, Set<Promise<void>>>();

function track(key: object, p: Promise<void>): void {
  let set = pending.get(key);
  if (!set) pending.set(key, set = new Set());
  const s = set;
  s.add(p);
  void p.finally(() => s.delete(p));
}

/** Tracks a late settlement of `adm` until it ends (it never rejects). */
export function trackLate(adm: Admission, p: Promise<void>): void {
  track(adm, p);
}

/**
 * Tracks a late settlement of a lease write (`lease_writes.ts`) until it
 * ends (it never rejects). A lease knows its limiter by the sink it reports
 * stranded charges to (`LeaseOptions.onStranded`, the admission's
 * `onStranded`), so {@linkcode lateSettled} waits for it too.
 */
export function trackLeaseLate(
  onStranded: (...args: never[]) => void,
  p: Promise<void>,
): void {
  track(onStranded, p);
}

/**
 * Resolves once every late settlement of `adm` and of its leases has
 * ended: each write left running past its caller's deadline ended (at most
 * its 10 s grace) and its charge was given back, marked written or
 * reported.
 */
export async function lateSettled(adm: Admission): Promise<void> {
  for (;;) {
    const left = [adm, adm.onStranded].flatMap((k) => [
      ...pending.get(k) ?? [],
    ]);
    if (left.length === 0) return;
    await Promise.all(left);
  }
}

/**
 * Settles, in the background, a charge whose write failed with `cause` at
 * the caller's deadline and ends as `late` says.
 */
export function settleLateCharge(
  adm: Admission,
  ref: BucketRef,
  charge: ReadonlyMap<string, bigint>,
  late: Promise<LateOutcome>,
  cause: unknown,
  giveBack: () => Promise<void>,
  stranded?: () => void,
): void {
  // What the item holds is unknown until the write ends: read it again.
  adm.writer.remember(ref, null);
  trackLate(
    adm,
    late.then(async (outcome) => {
      if (outcome === "applied") await giveBack();
      else if (outcome === "unknown") {
        reportStranded(adm, ref, charge, "debit", cause);
        stranded?.();
      }
    }).catch(() => {}), // a throwing onStranded must not surface as an unhandled rejection
  );
}

/** The late outcomes of writes sent one per index, each in its own scope. */
export class LateOutcomes {
  readonly #late: (Promise<LateOutcome> | undefined)[] = [];

  /** Runs `fn`, which sends index `i`'s write, learning its late outcome. */
  watch<T>(i: number, fn: () => T): T {
    return watchLate((p) => void (this.#late[i] = p), fn);
  }

  /** Index `i`'s late outcome, when its caller gave up on it on the wire. */
  of(i: number): Promise<LateOutcome> | undefined {
    return this.#late[i];
  }
}

/**
 * Settles a charge whose write failed with `cause`: with a late outcome, as
 * {@linkcode settleLateCharge}; else nothing when it certainly did not
 * apply, or reported stranded (`stranded` runs after each report).
 */
export function settleFailedCharge(
  adm: Admission,
  ref: BucketRef,
  charge: ReadonlyMap<string, bigint>,
  late: Promise<LateOutcome> | undefined,
  cause: unknown,
  giveBack: () => Promise<void>,
  stranded?: () => void,
): void {
  if (late) {
    settleLateCharge(adm, ref, charge, late, cause, giveBack, stranded);
  } else if (!certainlyNotApplied(cause)) {
    adm.writer.remember(ref, null);
    reportStranded(adm, ref, charge, "debit", cause);
    stranded?.();
  }
}

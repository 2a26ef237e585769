/**
 * In-process coalescing of lease deltas on one bucket item (commit after
 * `adjust`, rollback, the give-back of a refused cascade side), as
 * `coalescer.ts` does for charges: while a delta of this process on an
 * item is in flight, later ones queue, and the next write applies their
 * sum through {@linkcode BucketWriter.apply} (debits taken as they are,
 * debt allowed; a give-back clamped to the ceiling; `tc` counts every
 * delta in full). No timer: a delta on an idle item is written at once.
 *
 * The ideal bucket allows it: the deltas in a batch are concurrent, and
 * their sum takes every debit before any give-back, one of their orders.
 * Deltas that cancel out are not written at all. Each request gets its
 * part of a give-back that could not be placed, or the error of the write
 * that carried it (each caller then reports its own share); a request whose
 * caller gave up while the write carried it learns the same part through
 * its late outcome (`applied`, and its unplaced part). A delta on a
 * calendar quota (its lease window decides it) is written on its own.
 *
 * @module
 */
import type { BucketRef } from "../bucket_item.ts";
import type { BucketWriter } from "../bucket_writer.ts";
import type { LeaseWindow } from "../calendar_bucket.ts";
import { lateFailure, watchLate, withScope } from "../transport.ts";
import {
  batchSignal,
  Carried,
  type CoalescedShare,
  inBatch,
  keyOf,
  notSent,
  type Parts,
  type Queue,
  reportNetZero,
  type Settle,
  submit,
  type Waiter,
} from "./batch_queue.ts";

/** One lease delta waiting for an item. */
interface DeltaMember extends Waiter {
  readonly shards: number;
  readonly deltas: ReadonlyMap<string, bigint>;
  readonly wcu: bigint;
  readonly settle: Settle<bigint>;
}

/** Lease deltas coalesced per item (see the module documentation). */
export class DeltaCoalescer {
  readonly #writer: BucketWriter;
  readonly #queues = new Map<string, Queue<DeltaMember>>();

  /** A coalescer of the deltas `writer` applies. */
  constructor(writer: BucketWriter) {
    this.#writer = writer;
  }

  /**
   * {@linkcode BucketWriter.apply}, coalesced with the deltas of this
   * process on the same item while one is in flight.
   *
   * @throws as {@linkcode BucketWriter.apply}, or the deadline's reason
   */
  apply(
    ref: BucketRef,
    shards: number,
    deltas: ReadonlyMap<string, bigint>,
    wcu: bigint = 0n,
    windows: ReadonlyMap<string, LeaseWindow> = new Map(),
  ): Promise<bigint> {
    if (windows.size > 0) {
      return this.#writer.apply(ref, shards, deltas, wcu, windows);
    }
    const key = keyOf(ref);
    return submit<bigint, DeltaMember>(
      this.#queues,
      key,
      () => this.#writer.apply(ref, shards, deltas, wcu),
      (queue) => this.#next(key, ref, queue),
      (w) => ({ ...w, shards, deltas, wcu, onAbandon: notSent }),
    );
  }

  /** Writes the next batch of an item's deltas, or marks the item idle. */
  #next(key: string, ref: BucketRef, queue: Queue<DeltaMember>): void {
    const leader = queue.pending[0];
    if (!leader) {
      queue.busy = false;
      this.#queues.delete(key);
      return;
    }
    const batch = queue.pending.filter((m) => m.shards === leader.shards);
    for (const m of batch) queue.pending.splice(queue.pending.indexOf(m), 1);
    const next = (): void => this.#next(key, ref, queue);
    leader.run(() => this.#round(ref, batch)).then(next, next);
  }

  async #round(ref: BucketRef, members: DeltaMember[]): Promise<void> {
    const sum = new Map<string, bigint>();
    for (const m of members) {
      for (const [n, d] of m.deltas) sum.set(n, (sum.get(n) ?? 0n) + d);
    }
    for (const [n, d] of sum) if (d === 0n) sum.delete(n);
    const wcu = members.reduce((w, m) => w + m.wcu, 0n);
    const shares: CoalescedShare[] = members.map((m) => ({
      amounts: m.deltas,
      run: m.run,
    }));
    if (sum.size === 0 && wcu === 0n) {
      // The deltas cancel out: nothing to write, nothing left to place.
      reportNetZero(ref, shares);
      for (const m of members) m.settle({ outcome: 0n });
      return;
    }
    const deadline = batchSignal(members);
    // A give-back whose caller gave up while this write carried it learns how it ended.
    const carried = new Carried();
    for (const m of members) m.onAbandon = carried.abandon;
    try {
      const left = await withScope(
        deadline.signal,
        () =>
          watchLate(carried.sink, () =>
            inBatch(
              shares,
              () =>
                this.#writer.apply(
                  ref,
                  (members[0] as DeltaMember).shards,
                  sum,
                  wcu,
                ),
            )),
      );
      // A request that gave up learns its part too.
      const parts = shareLeft(members, left);
      carried.end("applied", parts);
      for (const m of members) m.settle({ outcome: parts(m) });
    } catch (e) {
      // A write that applied after every request gave up tells, with its
      // late outcome, what it could not place (`apply`'s debt write), shared
      // as in time.
      carried.end(
        carried.transport ?? lateFailure(e),
        (carried.unplaced ?? Promise.resolve(0n)).then((left) =>
          shareLeft(members, left)
        ),
      );
      for (const m of members) m.settle({ error: e });
    } finally {
      deadline.dispose();
      for (const m of members) m.onAbandon = null;
    }
  }
}

/**
 * The give-back `left` that a write of `members`' deltas could not place
 * (it lost every race), shared in arrival order: each request's part.
 */
function shareLeft(members: readonly DeltaMember[], left: bigint): Parts {
  const parts = new Map<Waiter, bigint>();
  for (const m of members) {
    let given = 0n;
    for (const d of m.deltas.values()) if (d < 0n) given -= d;
    const part = given < left ? given : left;
    left -= part;
    parts.set(m, part);
  }
  return (w) => parts.get(w) ?? 0n;
}

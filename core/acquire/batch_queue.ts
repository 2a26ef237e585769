/**
 * The queue both coalescers share (`coalescer.ts` for charges,
 * `delta_coalescer.ts` for lease deltas): requests that wait per bucket
 * item while a write to it is in flight, each with its own deadline, and
 * the context that tells tests and diagnostics which requests a write
 * carries.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { BucketRef } from "../bucket_item.ts";
import {
  currentLateSink,
  currentSignal,
  type LateOutcome,
  type LateSink,
} from "../transport.ts";

/** One request's part of a coalesced write. */
export interface CoalescedShare {
  /** Millitokens the request charges (or, for a lease delta, adds) per limit name. */
  readonly amounts: ReadonlyMap<string, bigint>;
  /** Runs `fn` in the request's own async context (tests attribute the write's parts to each call). */
  run<R>(fn: () => R): R;
}

const batchScope = new AsyncLocalStorage<readonly CoalescedShare[]>();

/**
 * The shares of the coalesced write being sent from this context, or
 * `undefined` for a write of one request (for tests and diagnostics: the
 * store sees one write of the sum).
 */
export function currentBatch(): readonly CoalescedShare[] | undefined {
  return batchScope.getStore();
}

/** Runs `fn` (which sends a coalesced write) with its shares in context. */
export function inBatch<T>(
  shares: readonly CoalescedShare[],
  fn: () => T,
): T {
  return batchScope.run(shares, fn);
}

type NetZero = (ref: BucketRef, shares: readonly CoalescedShare[]) => void;
const netZeroObservers = new Set<NetZero>();

/**
 * Observes batches of lease deltas that cancel out (nothing is written:
 * for tests and diagnostics, which otherwise see no write for those
 * calls). Returns the function that stops observing.
 */
export function observeNetZero(fn: NetZero): () => void {
  netZeroObservers.add(fn);
  return () => netZeroObservers.delete(fn);
}

/** Tells the observers that `shares` cancelled out on `ref`. */
export function reportNetZero(
  ref: BucketRef,
  shares: readonly CoalescedShare[],
): void {
  for (const fn of netZeroObservers) fn(ref, shares);
}

/** A request waiting in a queue, with its own deadline. */
export interface Waiter {
  /** Its deadline, if it runs under one. */
  readonly signal: AbortSignal | undefined;
  /** Runs `fn` in the request's own async context. */
  readonly run: <R>(fn: () => R) => R;
  /** Whether it has an outcome or an error. */
  settled: boolean;
  /** Called when the request gives up (its deadline passed). */
  onGiveUp: (() => void) | null;
  /**
   * Called when the request gives up, before its caller is answered: a
   * charge tells the caller's late-outcome scope what becomes of its share
   * (`coalescer.ts`).
   */
  onAbandon: ((w: Waiter) => void) | null;
}

/** The waiter's settle function for outcomes of type `T`. */
export type Settle<T> = (o: { outcome: T } | { error: unknown }) => void;

/** The requests waiting on one item while a write to it is in flight. */
export interface Queue<M> {
  /** A write to the item is in flight. */
  busy: boolean;
  /** The requests waiting, in arrival order. */
  readonly pending: M[];
}

/** A queue key per bucket item. */
export function keyOf(ref: BucketRef): string {
  return `${ref.ns}\u0000${ref.entityId}\u0000${ref.resource}\u0000${ref.shard}`;
}

/**
 * A signal that aborts once every member has settled and at least one gave
 * up (the write then carries nobody who waits for it), or `undefined` when
 * a member has no deadline scope (commands then get the default deadline).
 */
export function batchSignal(
  members: readonly Waiter[],
): { signal: AbortSignal | undefined; dispose(): void } {
  if (members.some((m) => m.signal === undefined)) {
    return { signal: undefined, dispose() {} };
  }
  const ac = new AbortController();
  const check = (reason: unknown): void => {
    if (members.every((m) => m.settled) && !ac.signal.aborted) {
      ac.abort(reason);
    }
  };
  for (const m of members) {
    m.onGiveUp = () => check(m.signal?.reason);
  }
  return {
    signal: ac.signal,
    dispose() {
      for (const m of members) m.onGiveUp = null;
    },
  };
}

/**
 * Queues a request on `pending` until a batch settles it; its deadline
 * passing first takes it out of the queue (nothing of it is written).
 */
export function enqueue<T, M extends Waiter>(
  pending: M[],
  make: (w: Waiter & { settle: Settle<T> }) => M,
): Promise<T> {
  const signal = currentSignal();
  if (signal?.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      const i = pending.indexOf(m);
      if (i >= 0) pending.splice(i, 1);
      m.onAbandon?.(m);
      waiter.settle({ error: signal?.reason });
      m.onGiveUp?.();
    };
    const waiter = {
      signal,
      run: AsyncLocalStorage.snapshot(),
      settled: false,
      onGiveUp: null,
      onAbandon: null,
      settle(o: { outcome: T } | { error: unknown }) {
        if (m.settled) return;
        m.settled = true;
        signal?.removeEventListener("abort", onAbort);
        if ("outcome" in o) resolve(o.outcome);
        else reject(o.error);
      },
    };
    const m = make(waiter);
    signal?.addEventListener("abort", onAbort, { once: true });
    pending.push(m);
  });
}

/**
 * Sends `direct` at once when nothing is in flight on the item of `key`
 * (then `next` runs when it settles, to start the queue's next batch);
 * else queues the request (`make`) for a batch.
 */
export function submit<T, M extends Waiter>(
  queues: Map<string, Queue<M>>,
  key: string,
  direct: () => Promise<T>,
  next: (queue: Queue<M>) => void,
  make: (w: Waiter & { settle: Settle<T> }) => M,
): Promise<T> {
  let queue = queues.get(key);
  if (!queue) {
    queue = { busy: false, pending: [] };
    queues.set(key, queue);
  }
  if (queue.busy) return enqueue(queue.pending, make);
  queue.busy = true;
  const q = queue;
  const p = direct();
  const after = (): void => next(q);
  p.then(after, after);
  return p;
}

const NOT_APPLIED: Promise<LateOutcome> = Promise.resolve("notApplied");

/** A request that gave up while none of its share was on the wire: nothing of it applied. */
export function notSent(w: Waiter): void {
  w.run(currentLateSink)?.(NOT_APPLIED);
}

/**
 * The late outcomes of the requests that give up while a write carries
 * their shares: each learns, in its own late-outcome scope, how the write
 * ended and, for a lease delta, the part of its give-back it could not
 * place (created only when one gives up).
 */
export class Carried {
  #waiting: ((e: Promise<Ended>) => void)[] | null = null;
  #ended: Promise<Ended> | null = null;
  /** The late outcome of the write itself, when its own deadline passed (every request gave up). */
  transport: Promise<LateOutcome> | null = null;
  /** With {@linkcode Carried.transport}, the give-back the write could not place once it applied (when told). */
  unplaced: Promise<bigint> | null = null;
  /** A request gives up: it learns the write's outcome (at once, when the write has ended). */
  readonly abandon = (w: Waiter): void => {
    const sink = w.run(currentLateSink);
    if (!sink) return;
    const ended = this.#ended ??
      new Promise<Ended>((r) => (this.#waiting ??= []).push(r));
    sink(ended.then((e) => e.outcome), ended.then((e) => e.unplaced(w)));
  };
  /** The write's own late-outcome sink. */
  readonly sink: LateSink = (p, u): void => {
    this.transport = p;
    this.unplaced = u ?? null;
  };
  /**
   * Tells every request that gave up how the write ended and, when it
   * applied, the part of its give-back it could not place (`unplaced`,
   * known now or with a late outcome; none by default); once, later calls
   * are ignored.
   */
  end(
    o: LateOutcome | Promise<LateOutcome>,
    unplaced: Parts | Promise<Parts> = () => 0n,
  ): void {
    if (this.#ended) return;
    const ended = Promise.all([o, unplaced]).then(([outcome, unplaced]) => ({
      outcome,
      unplaced,
    }));
    this.#ended = ended;
    const rs = this.#waiting;
    this.#waiting = null;
    if (rs) { for (const r of rs) r(ended); }
  }
}

/** Each request's part of a give-back a write could not place. */
export type Parts = (w: Waiter) => bigint;

/** How a carried write ended. */
interface Ended {
  readonly outcome: LateOutcome;
  readonly unplaced: Parts;
}

/**
 * In-process coalescing of concurrent charges on one bucket item (issue
 * 11, after Bucket4j's batching): while a charge of this process on an
 * item is in flight, later charges on the item queue; when it returns, the
 * queue is charged in one write of its sum, under one condition. No timer:
 * a charge on an idle item is written at once, exactly as without
 * coalescing (a warm acquire stays one call).
 *
 * How a batch is decided (each request all or nothing on this item; the
 * fast path gives back its other side when one side refuses, as without
 * coalescing):
 *
 * 1. The sum of the batch is written from what is known of the item (a
 *    plain ADD under the saturation ceiling, or a refill write under the
 *    `rf` lock), conditioned on the stored balance covering the sum. If it
 *    applies, every request is admitted: the condition held for the sum.
 * 2. If the condition fails, the item comes back (`ALL_OLD`) and the batch
 *    is split on that fresh image, in arrival order: the requests that fit
 *    one after the other are written as one charge of their sum (again
 *    conditioned on it); a request that does not fit the refilled balance
 *    on its own is refused, with its own statuses and Retry-After, decided
 *    on that image alone; a request that fits alone but not after the
 *    admitted ones waits for the answer of that write (`ALL_NEW`, fresh),
 *    and is decided again on it. A refusal is therefore only ever decided
 *    on state fresh from DynamoDB, against the balance it would see alone,
 *    as a single write decides it.
 * 3. A write that fails without a verdict (an error before or after it
 *    applied, a deadline) fails every request whose share it carried, with
 *    the same error a single write would give: each caller reports its own
 *    share stranded when it may have applied. Requests that waited are
 *    charged by the next write.
 *
 * Each request keeps its own deadline: one that passes while the request
 * waits takes it out of the queue (nothing of it is written: its late
 * outcome is `notApplied`); one that passes while its share is in flight
 * fails it as a single write would, and its late-outcome scope learns how
 * the write ended (applied: the caller gives its share back, see
 * `late_charge.ts`). The shared write itself is aborted only when every
 * request it carries has given up. Lease deltas (commit,
 * rollback, compensation) coalesce the same way (`delta_coalescer.ts`).
 * A charge that includes a calendar quota (decided by its window, not by
 * refill) is written on its own, as without coalescing.
 *
 * @module
 */
import {
  type BucketParams,
  planRefill,
  retryAfterAt,
  wholeTokens,
} from "../bucket.ts";
import { afterPlain, type BucketItem, WCU_PER_WRITE } from "../bucket_item.ts";
import { DeltaCoalescer } from "./delta_coalescer.ts";
import {
  batchSignal,
  Carried,
  type CoalescedShare,
  inBatch,
  keyOf,
  notSent,
  type Queue,
  submit,
  type Waiter,
} from "./batch_queue.ts";
import type { BucketWriter, ChargeOutcome, Target } from "../bucket_writer.ts";
import { blockedCharge, plainFits } from "../charge_check.ts";
import type { Clock } from "../clock.ts";
import type { LimitStatus } from "../models.ts";
import {
  checkDeadline,
  lateFailure,
  watchLate,
  withScope,
} from "../transport.ts";
import { errorName } from "../_sdk_errors.ts";
import type { BucketWrite } from "./bucket_store.ts";

/** Attempts of one batch, as {@linkcode BucketWriter.charge} makes for one request. */
const MAX_ATTEMPTS = 16;

export { type CoalescedShare, currentBatch } from "./batch_queue.ts";

interface Member extends Waiter {
  readonly target: Target;
  readonly amounts: ReadonlyMap<string, bigint>;
  readonly wcu: bigint;
  /** Settles with an outcome or an error (once; later calls are ignored). */
  settle(o: { outcome: ChargeOutcome } | { error: unknown }): void;
}

function sameTarget(a: Target, b: Target): boolean {
  if (a === b || a.limits === b.limits) return a.shards === b.shards;
  return a.shards === b.shards && a.limits.length === b.limits.length &&
    a.limits.every((s, i) => {
      const o = b.limits[i];
      return o !== undefined && o.limit.name === s.limit.name &&
        same(o.stored, s.stored) && same(o.eff, s.eff);
    });
}

function same(a: BucketParams, b: BucketParams): boolean {
  return a.cp === b.cp && a.ra === b.ra && a.rp === b.rp;
}

function sumOf(members: readonly Member[]): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const m of members) {
    for (const [n, a] of m.amounts) out.set(n, (out.get(n) ?? 0n) + a);
  }
  return out;
}

/**
 * The statuses of one request against per-limit balances (millitokens):
 * refused where its charge exceeds the balance (`contended`: every charged
 * limit, with the time to the next token as for a lost race).
 */
function statusesOf(
  t: Target,
  amounts: ReadonlyMap<string, bigint>,
  balance: ReadonlyMap<string, bigint>,
  k: BucketItem,
  now: bigint,
  contended = false,
): LimitStatus[] {
  return t.limits.map((s) => {
    const a = amounts.get(s.limit.name) ?? 0n;
    const tk = balance.get(s.limit.name) ??
      k.limits.get(s.limit.name)?.tk ?? s.eff.cp;
    const ok = contended ? a <= 0n : a <= 0n || tk >= a;
    const deficit = a > tk ? a - tk : 1000n;
    return {
      entityId: t.ref.entityId,
      resource: t.ref.resource,
      limitName: s.limit.name,
      limit: s.limit,
      available: wholeTokens(tk),
      requested: Number(a / 1000n),
      exceeded: !ok,
      retryAfterSeconds: ok ? 0 : retryAfterAt(deficit, s.eff, k.rf, now),
    };
  });
}

/** The refilled balance of every limit of the target present on `k` at `now`. */
function refilled(t: Target, k: BucketItem, now: bigint): Map<string, bigint> {
  const present = t.limits.filter((s) => k.limits.has(s.limit.name));
  const plan = planRefill(
    k.rf,
    now,
    present.map((s) => ({
      tk: (k.limits.get(s.limit.name) as { tk: bigint }).tk,
      p: s.eff,
    })),
  );
  return new Map(present.map((s, i) => [s.limit.name, plan.tk[i] as bigint]));
}

function fits(
  amounts: ReadonlyMap<string, bigint>,
  balance: ReadonlyMap<string, bigint>,
): boolean {
  for (const [n, a] of amounts) {
    if (a > 0n && (balance.get(n) ?? 0n) < a) return false;
  }
  return true;
}

/**
 * The split of a batch on a fresh image: `admit` fit one after the other
 * (arrival order), `refuse` do not fit alone, `later` fit alone but not
 * after `admit`.
 */
function split(
  t: Target,
  members: readonly Member[],
  k: BucketItem,
  now: bigint,
): {
  admit: Member[];
  refuse: [Member, LimitStatus[]][];
  later: Member[];
} {
  const full = refilled(t, k, now);
  const left = new Map(full);
  const admit: Member[] = [];
  const refuse: [Member, LimitStatus[]][] = [];
  const later: Member[] = [];
  for (const m of members) {
    if (fits(m.amounts, left)) {
      admit.push(m);
      for (const [n, a] of m.amounts) left.set(n, (left.get(n) ?? 0n) - a);
    } else if (!fits(m.amounts, full)) {
      refuse.push([m, statusesOf(t, m.amounts, full, k, now)]);
    } else later.push(m);
  }
  return { admit, refuse, later };
}

/**
 * Coalesces concurrent charges of this process on one bucket item (see the
 * module documentation). Disabled, every charge goes straight to
 * {@linkcode BucketWriter.charge} (strict mode: every decision written).
 */
export class Coalescer {
  readonly #writer: BucketWriter;
  readonly #clock: Clock;
  readonly #enabled: boolean;
  readonly #queues = new Map<string, Queue<Member>>();
  /**
   * {@linkcode BucketWriter.apply}, coalesced with the lease deltas of this
   * process on the same item while one is in flight (`delta_coalescer.ts`);
   * disabled, the writer's own.
   */
  readonly apply: BucketWriter["apply"];

  /** A coalescer over a writer (`enabled` false: a pass-through). */
  constructor(writer: BucketWriter, clock: Clock, enabled = true) {
    this.#writer = writer;
    this.#clock = clock;
    this.#enabled = enabled;
    const deltas = new DeltaCoalescer(writer);
    this.apply = enabled
      ? (...args) => deltas.apply(...args)
      : (...args) => writer.apply(...args);
  }

  /**
   * {@linkcode BucketWriter.charge}, coalesced with the charges of this
   * process on the same item while a write to it is in flight.
   *
   * @throws the store's error when the write carrying this charge failed
   * without a verdict, or the deadline's reason when it passed first
   */
  charge(
    target: Target,
    amounts: ReadonlyMap<string, bigint>,
    wcu: bigint = WCU_PER_WRITE,
  ): Promise<ChargeOutcome> {
    // A calendar quota is decided by its window, not by refill: not batched.
    if (!this.#enabled || target.limits.some((s) => s.limit.calendar)) {
      return this.#writer.charge(target, amounts, wcu);
    }
    // Nothing in flight: written at once, as without coalescing.
    const key = keyOf(target.ref);
    return submit<ChargeOutcome, Member>(
      this.#queues,
      key,
      () => this.#writer.charge(target, amounts, wcu),
      (queue) => this.#next(key, queue),
      (w) => ({ ...w, target, amounts, wcu, onAbandon: notSent }),
    );
  }

  /** Starts the next batch of an item's queue, or marks the item idle. */
  #next(key: string, queue: Queue<Member>): void {
    const leader = queue.pending[0];
    if (!leader) {
      queue.busy = false;
      this.#queues.delete(key);
      return;
    }
    const batch = queue.pending.filter((m) =>
      sameTarget(m.target, leader.target)
    );
    for (const m of batch) queue.pending.splice(queue.pending.indexOf(m), 1);
    const done = (): void => {
      // Requests a failed write did not carry are charged by the next one.
      queue.pending.unshift(...batch.filter((m) => !m.settled));
      this.#next(key, queue);
    };
    leader.run(() => this.#round(batch)).then(done, done);
  }

  /** Decides one batch in the leader's context, under the batch's own deadline. */
  async #round(members: Member[]): Promise<void> {
    if (members.length === 1) {
      const m = members[0] as Member;
      // Its own write, in its own context: the transport tells its scope.
      m.onAbandon = null;
      try {
        m.settle({
          outcome: await this.#writer.charge(m.target, m.amounts, m.wcu),
        });
      } catch (e) {
        m.settle({ error: e });
      }
      return;
    }
    const deadline = batchSignal(members);
    try {
      await withScope(deadline.signal, () => this.#batch(members));
    } catch (e) {
      for (const m of members) m.settle({ error: e });
    } finally {
      deadline.dispose();
    }
  }

  async #batch(members: readonly Member[]): Promise<void> {
    const writer = this.#writer;
    const target = (members[0] as Member).target;
    const ref = target.ref;
    let fresh = false;
    let last: BucketItem | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      checkDeadline();
      const active = members.filter((m) => !m.settled);
      if (active.length === 0) return;
      const k = writer.known(ref);
      if (!k) {
        for (const m of active) m.settle({ outcome: { kind: "missing" } });
        return;
      }
      last = k;
      const nowMs = this.#clock.now();
      const now = BigInt(nowMs);
      const blocked = blockedCharge(target, sumOf(active), k, nowMs);
      if (blocked) {
        for (const m of active) m.settle({ outcome: blocked });
        return;
      }
      let take = active;
      let later: Member[] = [];
      if (fresh) {
        const s = split(target, active, k, now);
        for (const [m, statuses] of s.refuse) {
          m.settle({ outcome: { kind: "refused", statuses } });
        }
        take = s.admit;
        later = s.later;
        if (take.length === 0) return; // nothing fits: every one was refused
      }
      const sum = sumOf(take);
      const wcu = take.reduce((w, m) => (m.wcu > w ? m.wcu : w), 0n);
      let write: BucketWrite;
      let after: () => BucketItem;
      if (plainFits(target, sum, k, now)) {
        const w = writer.plainCharge(target, sum, k, now, wcu);
        write = { kind: "plain", write: w };
        after = () => afterPlain(writer.known(ref) ?? k, w);
      } else {
        const plan = writer.refillPlan(target, k, now, sum, wcu);
        write = { kind: "slow", write: plan.write };
        after = () => plan.after;
      }
      // Requests left for later are decided on the answer of this write.
      const answer = later.length > 0;
      const shares: CoalescedShare[] = take.map((m) => ({
        amounts: m.amounts,
        run: m.run,
      }));
      // A request giving up while this write carries its share learns how it ended.
      const carried = new Carried();
      for (const m of take) m.onAbandon = carried.abandon;
      try {
        const r = await watchLate(carried.sink, () =>
          inBatch(
            shares,
            () => writer.store.write(write, answer ? { answer } : undefined),
          ));
        carried.end(r.ok ? "applied" : "notApplied");
        if (r.ok) {
          writer.remember(ref, answer && r.item ? r.item : after());
          fresh = answer && r.item !== null;
          for (const m of take) m.settle({ outcome: { kind: "ok" } });
          continue;
        }
        writer.remember(ref, r.old);
        fresh = true;
        if (attempt >= 2) await writer.backoff(attempt - 2);
      } catch (e) {
        carried.end(carried.transport ?? lateFailure(e));
        if (errorName(e) === "TransactionConflictException") {
          await writer.backoff(attempt);
          continue;
        }
        for (const m of take) m.settle({ error: e });
        return;
      } finally {
        for (const m of take) m.onAbandon = notSent;
      }
    }
    for (const m of members) {
      m.settle({
        outcome: {
          kind: "contended",
          statuses: last
            ? statusesOf(
              target,
              m.amounts,
              new Map(),
              last,
              BigInt(this.#clock.now()),
              true,
            )
            : [],
        },
      });
    }
  }
}

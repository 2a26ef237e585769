/**
 * Test support: records histories of limiters with the local reserve on,
 * for the checker of `checker.ts` (used by the DynamoDB Local test
 * `tests/integration/reserve_test.ts`; `tests/reserve_memory_test.ts` does
 * the same on the memory store's hooks).
 *
 * - **Store history**: every write a wrapped {@linkcode BucketStore} sent.
 *   A checked charge (an acquire's write, a slice taken with it: the slice
 *   counts as consumed when it is taken) is an admitted acquire; a lease
 *   delta or give-back (slice give-backs included) an adjustment. A write
 *   that threw may have applied: an `error` acquire or an `ambiguous`
 *   adjustment. A write made inside a call may stand for a decision taken
 *   (and a refill computed) from the call's start on.
 * - **Caller history**: what callers saw. An acquire admitted while its
 *   limiter held slices of its buckets, or while other calls of it were in
 *   flight (taking one), may have spent tokens taken then: its interval
 *   starts at the start of the call that took the oldest of them.
 *   Unused slice tokens and their give-backs are left out (leaving out a
 *   debit and its later capped give-back only raises the ideal balance);
 *   tokens that could not be given back (reported stranded) are ambiguous
 *   debits; a refused or failed call's writes are ambiguous adjustments
 *   (a coalesced write carries several calls' shares).
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { RateLimiter, SliceEvent, StrandedCharge } from "../../mod.ts";
import { RateLimitExceeded } from "../../mod.ts";
import type {
  BucketStore,
  BucketWrite,
  ReadResult,
  TransactResult,
  WriteResult,
} from "../../core/acquire/bucket_store.ts";
import type { BucketRef } from "../../core/bucket_item.ts";
import type { Charge } from "./ideal.ts";
import type { History, LimitSpec, Operation } from "./checker.ts";

interface CallContext {
  readonly start: bigint;
  readonly applied: {
    bucket: string;
    delta: bigint;
    start: bigint;
    end: bigint;
  }[];
}

/** The change of `limit` one write makes per bucket, and whether it is a checked charge. */
export function limitDeltas(
  w: BucketWrite,
  limit: string,
): { bucket: string; delta: bigint; checked: boolean }[] {
  switch (w.kind) {
    case "plain": {
      const l = w.write.limits.find((x) => x.name === limit);
      return l && l.take !== 0n
        ? [{
          bucket: w.write.ref.entityId,
          delta: l.take,
          checked: l.min !== null,
        }]
        : [];
    }
    case "slow": {
      const l = w.write.limits.find((x) => x.name === limit);
      return l && l.consumed !== 0n
        ? [{
          bucket: w.write.ref.entityId,
          delta: l.consumed,
          checked: (l.check ?? true) && l.consumed > 0n,
        }]
        : [];
    }
    case "debt": {
      const d = w.deltas.get(limit);
      return d ? [{ bucket: w.ref.entityId, delta: d, checked: false }] : [];
    }
    case "shards":
      return [];
  }
}

/** One acquire a test runs. */
export interface RecordedAcquire {
  /** Entity. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Whole tokens of the recorded limit. */
  readonly amount: number;
  /** Buckets (checker names: entity ids) the call charges. */
  readonly buckets: readonly string[];
  /** The body throws (rollback). */
  readonly fails?: boolean;
  /** `lease.adjust` by this much in the body (committed unless it fails). */
  readonly more?: number;
}

/** Records the store and caller histories of one limit (see the module doc). */
export class ReserveRecorder {
  readonly #limit: string;
  readonly #call = new AsyncLocalStorage<CallContext>();
  readonly #storeOps: Operation[] = [];
  readonly #callerOps: Operation[] = [];
  readonly #held = new Map<string, Map<number, bigint>>();
  readonly #stranded: { bucket: string; amount: bigint }[] = [];
  /** Refused or failed calls, whose writes count as ambiguous adjustments. */
  readonly #failed: { id: string; ctx: CallContext }[] = [];
  /** Per limiter: the start of each call in flight. */
  readonly #inFlight = new Map<number, Map<string, bigint>>();
  #n = 0;
  /** Acquires admitted, refused, failed. */
  readonly counts = { admitted: 0, refused: 0, error: 0 };
  /** The first errors seen (for messages). */
  readonly errors: string[] = [];

  /** Records `limit` (whole-token amounts, millitokens in the history). */
  constructor(limit: string) {
    this.#limit = limit;
  }

  #id(prefix: string): string {
    return `${prefix}${this.#n++}`;
  }

  /** The `onSlice` of limiter number `index`. */
  onSlice(index: number): (e: SliceEvent) => void {
    return (e) => {
      const k = `${index}\u0000${e.entityId}`;
      let m = this.#held.get(k);
      if (!m) this.#held.set(k, m = new Map());
      if (e.kind === "taken") {
        if (!m.has(e.id)) {
          m.set(e.id, this.#call.getStore()?.start ?? BigInt(Date.now()));
        }
      } else m.delete(e.id);
      // A slice not given back is reported to onStranded too.
    };
  }

  /**
   * The `onStranded` of the limiters: a give-back that may not have been
   * placed (a compensation or a slice that lost every race, or failed) is a
   * debit that may stand.
   */
  onStranded(): (c: StrandedCharge) => void {
    return (c) => {
      if (c.kind !== "giveback") return;
      const tokens = c.amounts[this.#limit] ?? c.amounts["*"] ?? 0;
      this.#stranded.push({
        bucket: c.entityId,
        amount: BigInt(Math.round(Math.abs(tokens) * 1000)),
      });
    };
  }

  /** A store that records every write it sends. */
  wrap(store: BucketStore): BucketStore {
    const rec = (
      ws: readonly BucketWrite[],
      start: bigint,
      ok: boolean | "maybe",
    ) => {
      const end = BigInt(Date.now());
      const from = this.#call.getStore()?.start;
      const decided = from !== undefined && from < start ? from : start;
      for (const w of ws) {
        for (const d of limitDeltas(w, this.#limit)) {
          const charges: Charge[] = [{
            bucket: d.bucket,
            limit: this.#limit,
            amountMilli: d.delta,
          }];
          const id = this.#id("w");
          if (ok === false) continue;
          this.#storeOps.push(
            d.checked
              ? {
                kind: "acquire",
                id,
                start: decided,
                end,
                charges,
                outcome: ok === true ? "admitted" : "error",
              }
              : {
                kind: "adjust",
                id,
                start: decided,
                end,
                charges,
                outcome: ok === true ? "applied" : "ambiguous",
              },
          );
          this.#call.getStore()?.applied.push({ ...d, start, end });
        }
      }
    };
    return {
      name: store.name,
      read: (refs: readonly BucketRef[], entity?): Promise<ReadResult> =>
        store.read(refs, entity),
      write: async (w, options): Promise<WriteResult> => {
        const start = BigInt(Date.now());
        try {
          const r = await store.write(w, options);
          rec([w], start, r.ok);
          return r;
        } catch (e) {
          rec([w], start, "maybe");
          throw e;
        }
      },
      transact: async (ws): Promise<TransactResult> => {
        const start = BigInt(Date.now());
        try {
          const r = await store.transact(ws);
          rec(ws, start, r.ok);
          return r;
        } catch (e) {
          rec(ws, start, "maybe");
          throw e;
        }
      },
    };
  }

  /** Runs one acquire on limiter `index` and records what its caller saw. */
  async acquire(
    index: number,
    limiter: RateLimiter,
    a: RecordedAcquire,
  ): Promise<void> {
    const id = this.#id("op");
    const start = BigInt(Date.now());
    let since = start;
    for (const b of a.buckets) {
      for (const s of this.#held.get(`${index}\u0000${b}`)?.values() ?? []) {
        if (s < since) since = s;
      }
    }
    // A slice another call of this limiter is taking may serve this one.
    let mine = this.#inFlight.get(index);
    if (!mine) this.#inFlight.set(index, mine = new Map());
    for (const s of mine.values()) if (s < since) since = s;
    mine.set(id, start);
    const ctx: CallContext = { start, applied: [] };
    const charges = (n: number): Charge[] =>
      a.buckets.map((bucket) => ({
        bucket,
        limit: this.#limit,
        amountMilli: BigInt(n) * 1000n,
      }));
    let outcome: "admitted" | "refused" | "error" = "admitted";
    let bodyEnd: bigint | null = null;
    let committed = true;
    await this.#call.run(ctx, async () => {
      try {
        await limiter.acquire(
          {
            entityId: a.entityId,
            resource: a.resource,
            consume: { [this.#limit]: a.amount },
          },
          (lease) => {
            bodyEnd = BigInt(Date.now());
            if (a.more) lease.adjust({ [this.#limit]: a.more });
            if (a.fails) throw new BodyError();
          },
        );
      } catch (e) {
        if (e instanceof BodyError) return;
        if (bodyEnd !== null) committed = false;
        else outcome = e instanceof RateLimitExceeded ? "refused" : "error";
        if (!(e instanceof RateLimitExceeded) && this.errors.length < 5) {
          this.errors.push(String(e));
        }
      }
    });
    const stop = BigInt(Date.now());
    mine.delete(id);
    if (bodyEnd === null) {
      this.counts[outcome === "admitted" ? "error" : outcome]++;
      this.#callerOps.push({
        kind: "acquire",
        id,
        start,
        end: stop,
        charges: charges(a.amount),
        outcome,
      });
      // A refused or failed call may have charged one side and given it
      // back, or left a charge: every write it made counts, as ambiguous:
      // with coalescing (on by default) a write made in one call's context
      // may carry other calls' shares, so none is certain to be its own.
      // Counted when the history is read: a charge whose write applied
      // after the call's deadline is given back later, in its context.
      this.#failed.push({ id, ctx });
      return;
    }
    this.counts.admitted++;
    this.#callerOps.push({
      kind: "acquire",
      id,
      start: since,
      end: bodyEnd,
      charges: charges(a.amount),
      outcome: "admitted",
    });
    if (a.fails) {
      this.#callerOps.push({
        kind: "rollback",
        id: `${id}/rollback`,
        start,
        end: stop,
        charges: charges(a.amount),
        outcome: committed ? "applied" : "ambiguous",
      });
    } else if (a.more) {
      this.#callerOps.push({
        kind: "adjust",
        id: `${id}/adjust`,
        start,
        end: stop,
        charges: charges(a.more),
        outcome: committed ? "applied" : "ambiguous",
      });
    }
  }

  /** The store history. */
  storeHistory(t0: bigint, limits: readonly LimitSpec[]): History {
    return { t0, limits, operations: [...this.#storeOps] };
  }

  /** The caller history (refusals left out: the store history judges them); `tc` per bucket when given. */
  callerHistory(
    t0: bigint,
    limits: readonly LimitSpec[],
    tc?: ReadonlyMap<string, bigint>,
  ): History {
    const t1 = BigInt(Date.now());
    const ops: Operation[] = this.#callerOps.filter((o) =>
      o.kind !== "acquire" || o.outcome !== "refused"
    );
    for (const { id, ctx } of this.#failed) {
      ctx.applied.forEach((x, i) =>
        ops.push({
          kind: "adjust",
          id: `${id}/w${i}`,
          start: x.start,
          end: x.end,
          charges: [{
            bucket: x.bucket,
            limit: this.#limit,
            amountMilli: x.delta,
          }],
          outcome: "ambiguous",
        })
      );
    }
    this.#stranded.forEach((x, i) =>
      ops.push({
        kind: "adjust",
        id: `stranded${i}`,
        start: t0,
        end: t1,
        charges: [{
          bucket: x.bucket,
          limit: this.#limit,
          amountMilli: x.amount,
        }],
        outcome: "ambiguous",
      })
    );
    return {
      t0,
      limits,
      operations: ops,
      ...(tc
        ? {
          finalConsumed: [...tc].map(([bucket, tcMilli]) => ({
            bucket,
            limit: this.#limit,
            tcMilli,
          })),
        }
        : {}),
    };
  }
}

class BodyError extends Error {}

/**
 * Writes to bucket items that are exact against the ideal token bucket
 * (spec 02 §4-§5, with the over-admission the reference shares fixed), and
 * what the client last learned about each item.
 *
 * The stored pair `(tk, rf)` of a limit stands for the balance
 * `min(cp, tk + refill(now − rf))`. Two kinds of write keep it exact:
 *
 * - a **plain** write only ADDs (a charge, a give-back, a lease delta). It is
 *   conditioned on `rf` not being older than the one the client knows and on
 *   each written limit staying under its *saturation ceiling*
 *   ({@linkcode saturationCeiling}): below it no refill has been lost to the
 *   capacity clamp, so a debit is a debit and a give-back cannot lift the
 *   bucket over capacity. Concurrent plain writes never conflict.
 * - a **refill** write claims the refill since `rf` under the `rf` lock
 *   (`rf = rf_read`), with every limit's balance bounded above by the value
 *   the refill was computed from and below by the charge (the admission).
 *
 * Every write answers with the item (`ALL_NEW`, or `ALL_OLD` when a
 * condition fails), so the next decision starts from a known state: a warm
 * acquire is one plain write, an idle bucket one refill write, and a lost
 * race costs one more write, not a read.
 *
 * @module
 */
import {
  type BucketParams,
  heldBack,
  planRefill,
  retryAfterAt,
  saturationCeiling,
  wholeTokens,
} from "./bucket.ts";
import {
  calendarDeltaPlanned,
  deltaPart,
  dropWindow,
  isCalendar,
  type LeaseWindow,
  planCalendar,
} from "./calendar_bucket.ts";
import {
  afterPlain,
  type BucketItem,
  type BucketRef,
  type PlainLimit,
  type PlainWrite,
  type PlannedLimit,
  type SlowWrite,
  type StoredLimit,
  WCU_PER_WRITE,
  wcuPlanned,
} from "./bucket_item.ts";
import type { BucketStore, BucketWrite } from "./acquire/bucket_store.ts";
import type { Clock } from "./clock.ts";
import type { Limit } from "./limit.ts";
import type { LimitStatus } from "./models.ts";
import { exponentialBackoff } from "./_backoff.ts";
import { contendedStatuses } from "./_contended_statuses.ts";
import { BoundedMap } from "./_bounded_map.ts";
import { errorName } from "./_sdk_errors.ts";
import {
  beforeSend,
  checkDeadline,
  currentLateSink,
  currentSignal,
  watchLate,
} from "./transport.ts";
import { WCU_LIMIT_NAME } from "./validation.ts";
import { blockedCharge, plainFits } from "./charge_check.ts";
import { afterRefill, refilling, settleRefill } from "./refill_settle.ts";

/** One resolved limit on one side (entity or parent) of an acquire. */
export interface LimitSpec {
  /** The limit. */
  readonly limit: Limit;
  /** Stored (undivided) parameters. */
  readonly stored: BucketParams;
  /** Effective parameters on one shard. */
  readonly eff: BucketParams;
}

/** One bucket item and the limits the caller resolved for it. */
export interface Target {
  /** The item. */
  readonly ref: BucketRef;
  /** Every resolved limit of the item (charged or not). */
  readonly limits: readonly LimitSpec[];
  /** Shard count the effective parameters were divided by. */
  readonly shards: number;
  /** `ttl` to store on a refill write. */
  readonly ttl: number | "remove" | null;
}

/** The result of {@linkcode BucketWriter.charge}. */
export type ChargeOutcome =
  | { readonly kind: "ok" }
  | { readonly kind: "refused"; readonly statuses: LimitStatus[] }
  /** The item, a charged limit, or a live TTL is missing: the slow path creates it. */
  | { readonly kind: "missing" }
  /** The stored parameters differ from the resolved ones. */
  | { readonly kind: "params"; readonly item: BucketItem }
  /** Lost the race too many times within the attempt budget. */
  | { readonly kind: "contended"; readonly statuses: LimitStatus[] };

/** @internal A refill write planned by {@linkcode BucketWriter.refillPlan}. */
export interface RefillCharge {
  /** Whether a charged limit's balance is short of its charge. */
  readonly refused: boolean;
  /** The write. */
  readonly write: SlowWrite;
  /** The item after it applied. */
  readonly after: BucketItem;
  /** The statuses it implies. */
  readonly statuses: (t: Target, item: BucketItem) => LimitStatus[];
}

const MAX_ATTEMPTS = 16;
const KNOWN_MAX = 100_000;

function refKey(ref: BucketRef): string {
  return `${ref.ns}\u0000${ref.entityId}\u0000${ref.resource}\u0000${ref.shard}`;
}

/** Seconds of `ttl` left under which a plain charge checks the item has not expired. */
const EXPIRY_CHECK_MARGIN_S = 60;

/**
 * The epoch second a plain charge conditions `ttl` against, or `null` when
 * the known `ttl` is more than a minute ahead: every writer sets `ttl` at
 * least a refill period ahead of its own clock, and a plain write never
 * lowers it, so an item known to live that long cannot be TTL-expired
 * (waiting for deletion) when the write lands. An item without a known
 * `ttl` is checked, since another writer may have set one since.
 */
function expiryCheck(k: BucketItem, now: bigint): number | null {
  const sec = Number(now / 1000n);
  return k.ttl !== null && k.ttl > sec + EXPIRY_CHECK_MARGIN_S ? null : sec;
}

/** Writes bucket items exactly and remembers what each answer showed. */
export class BucketWriter {
  readonly #store: BucketStore;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #known = new BoundedMap<string, BucketItem>(KNOWN_MAX);

  /** A writer over a store, reading time from `clock`. */
  constructor(
    store: BucketStore,
    clock: Clock,
    random: () => number = Math.random,
  ) {
    this.#store = store;
    this.#clock = clock;
    this.#random = random;
  }

  /** The store. */
  get store(): BucketStore {
    return this.#store;
  }

  /** The item as last seen, or `undefined`. */
  known(ref: BucketRef): BucketItem | undefined {
    return this.#known.get(refKey(ref));
  }

  /** Records an item as seen (an answer, a read, or the state a write left). */
  remember(ref: BucketRef, item: BucketItem | null): void {
    const k = refKey(ref);
    // Deleted first, so a known item is renewed and a forgotten one goes.
    this.#known.delete(k);
    if (item) this.#known.set(k, item);
  }

  /**
   * Charges `amounts` (millitokens per limit name, all > 0) on one item,
   * all or nothing, plus one write's worth of `wcu`. Uses the known state:
   * a plain write when the stored tokens cover the charge under the
   * ceiling, else a refill write; a failed condition brings the item back
   * and the decision is made again on fresh data. A refusal is only ever
   * decided on state fresh from DynamoDB.
   *
   * @throws the SDK's error for anything but a failed condition or a
   * transaction conflict (the caller decides whether it may have applied)
   */
  async charge(
    target: Target,
    amounts: ReadonlyMap<string, bigint>,
    wcu: bigint = WCU_PER_WRITE,
  ): Promise<ChargeOutcome> {
    let fresh = false;
    let last: BucketItem | undefined;
    // Until a write is sent, nothing of this charge applied (a failed condition applies nothing).
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (currentSignal()?.aborted) await beforeSend(checkDeadline);
      let k = this.known(target.ref);
      if (!k) {
        // Forgotten (a write that may have applied): read it again, as a
        // lease's consume must not take "unknown here" for "expired".
        const read = (await beforeSend(() =>
          this.#store.read([target.ref])
        )).items[0];
        if (!read) return { kind: "missing" };
        this.remember(target.ref, read);
        k = read;
        fresh = true;
      }
      last = k;
      const nowMs = this.#clock.now();
      const now = BigInt(nowMs);
      const blocked = blockedCharge(target, amounts, k, nowMs);
      if (blocked) return blocked;
      let write: BucketWrite;
      let after: (() => BucketItem) | BucketItem;
      if (plainFits(target, amounts, k, now)) {
        const w = this.plainCharge(target, amounts, k, now, wcu);
        write = { kind: "plain", write: w };
        // Moved from what is known when the answer comes: concurrent
        // charges of this process then add up instead of overwriting.
        after = () => afterPlain(this.known(target.ref) ?? k, w);
      } else {
        const plan = this.refillPlan(target, k, now, amounts, wcu);
        // A refusal is decided only on state fresh from DynamoDB; a stale
        // view sends the write, whose failure brings the item back.
        if (plan.refused && fresh) {
          return { kind: "refused", statuses: plan.statuses(target, k) };
        }
        write = { kind: "slow", write: plan.write };
        after = plan.after;
      }
      try {
        const r = await this.#store.write(write);
        if (r.ok) {
          this.remember(
            target.ref,
            typeof after === "function" ? after() : after,
          );
          return { kind: "ok" };
        }
        this.remember(target.ref, r.old);
        fresh = true;
        // The answer carries the item: decide again at once, and back off
        // only when the races keep being lost.
        if (attempt >= 2) await beforeSend(() => this.backoff(attempt - 2));
        continue;
      } catch (e) {
        if (errorName(e) === "TransactionConflictException") {
          await beforeSend(() => this.backoff(attempt));
          continue;
        }
        throw e;
      }
    }
    return {
      kind: "contended",
      statuses: contendedStatuses(target, amounts, last),
    };
  }

  /** Sleeps a jittered, growing time (lost races and transaction conflicts). */
  async backoff(attempt: number): Promise<void> {
    const base = exponentialBackoff(attempt, 10, 320);
    await this.#clock.sleep(base / 2 + this.#random() * base, currentSignal());
  }

  /** @internal The plain write charging `amounts` on the known item `k`. */
  plainCharge(
    target: Target,
    amounts: ReadonlyMap<string, bigint>,
    k: BucketItem,
    now: bigint,
    wcu: bigint,
  ): PlainWrite {
    const limits: PlainLimit[] = [];
    for (const s of target.limits) {
      const a = amounts.get(s.limit.name);
      if (a === undefined) continue;
      const ws = s.limit.calendar ? k.limits.get(s.limit.name)?.ws ?? 0n : null;
      limits.push({
        name: s.limit.name,
        take: a,
        count: a,
        params: s.stored,
        min: a,
        max: ws === null ? saturationCeiling(k.rf, now, s.eff) : null,
        ...(ws === null ? {} : { window: ws }),
      });
    }
    return {
      ref: target.ref,
      limits,
      rfMin: k.rf,
      wcu,
      notExpiredAt: expiryCheck(k, now),
      ttl: this.#ttlRefresh(target, k, Number(now)),
    };
  }

  /** A `ttl` to set on a plain write when the stored one is due for refresh. */
  #ttlRefresh(target: Target, k: BucketItem, nowMs: number): number | null {
    if (typeof target.ttl !== "number" || k.ttl === null) return null;
    const ahead = target.ttl - Math.floor(nowMs / 1000);
    return k.ttl - Math.floor(nowMs / 1000) < ahead / 2 ? target.ttl : null;
  }

  /**
   * @internal The refill write for `k` with `amounts` consumed (checked
   * when `check`), and the statuses it implies.
   */
  refillPlan(
    target: Target,
    k: BucketItem,
    now: bigint,
    amounts: ReadonlyMap<string, bigint>,
    wcuTake: bigint,
  ): RefillCharge {
    const present = target.limits.filter((s) =>
      k.limits.has(s.limit.name) && !s.limit.calendar
    );
    // A refill write moves the item's one `rf`: every stored limit that
    // refills is settled with it, charged or not (else its refill since
    // `rf` is lost: a lease.consume of one limit starved the others).
    const { plan, others: limits } = settleRefill(
      k,
      target.shards,
      new Set(target.limits.map((s) => s.limit.name)),
      now,
      present.map((s) => ({
        tk: (k.limits.get(s.limit.name) as { tk: bigint }).tk,
        p: s.eff,
        need: amounts.get(s.limit.name),
      })),
    );
    let refused = false;
    const refilled = new Map<string, bigint>();
    present.forEach((s, i) => {
      const st = k.limits.get(s.limit.name) as { tk: bigint };
      const tk = plan.tk[i] as bigint;
      refilled.set(s.limit.name, tk);
      const a = amounts.get(s.limit.name) ?? 0n;
      if (a > 0n && tk < a) refused = true;
      limits.push({
        name: s.limit.name,
        params: s.stored,
        paramsBefore: s.stored,
        tkBefore: st.tk,
        tkAfter: heldBack(tk - a, plan.hold[i]),
        consumed: a,
        capped: true,
        exact: plan.clamped[i] === true,
        ...dropWindow(k.limits.get(s.limit.name)),
      });
    });
    const waits = new Map<string, number>();
    for (const s of target.limits) {
      const st = k.limits.get(s.limit.name);
      if (!s.limit.calendar || !st) continue;
      const a = amounts.get(s.limit.name) ?? 0n;
      const c = planCalendar(
        s.limit.name,
        s.stored,
        st,
        s.limit.calendar,
        Number(now),
        s.eff.cp,
        a,
      );
      if (!c.ok) refused = true;
      refilled.set(s.limit.name, c.tk);
      waits.set(s.limit.name, c.retryAfterSeconds);
      limits.push({ ...c.planned, paramsBefore: s.stored });
    }
    if (k.limits.has(WCU_LIMIT_NAME)) {
      limits.push(wcuPlanned(k, plan.rf, wcuTake));
    }
    const ttl = target.ttl === "remove" ? "remove" : target.ttl;
    const write: SlowWrite = {
      ref: target.ref,
      create: false,
      expectedRf: k.rf,
      now: plan.rf,
      limits,
      cascade: k.cascade,
      parentId: k.parentId,
      shardCount: k.shardCount,
      ttl,
    };
    return {
      refused,
      write,
      after: afterRefill(k, { rf: plan.rf, limits, ttl }),
      statuses: (t: Target, item: BucketItem): LimitStatus[] =>
        t.limits.map((s) => {
          const a = amounts.get(s.limit.name) ?? 0n;
          const tk = refilled.get(s.limit.name) ??
            (item.limits.get(s.limit.name)?.tk ?? s.eff.cp);
          const ok = a <= 0n || tk >= a;
          return {
            entityId: t.ref.entityId,
            resource: t.ref.resource,
            limitName: s.limit.name,
            limit: s.limit,
            available: wholeTokens(tk),
            requested: Number(a / 1000n),
            exceeded: !ok,
            retryAfterSeconds: ok ? 0 : waits.get(s.limit.name) ??
              retryAfterAt(a - tk, s.eff, plan.rf, now),
          };
        }),
    };
  }

  /**
   * Applies lease deltas to one item: positive amounts are taken without a
   * check (debt is allowed), negative amounts are given back, never above
   * the ceiling (a give-back into a full bucket overflows, as in the ideal
   * bucket); `tc` always records the full delta. `wcu` gives an acquire's
   * write back (a compensated charge). Returns the millitokens of give-back
   * that could not be placed (only after many lost races; under-admission).
   *
   * @throws the SDK's error for anything but a failed condition or a
   * transaction conflict
   */
  async apply(
    ref: BucketRef,
    shards: number,
    deltas: ReadonlyMap<string, bigint>,
    wcu: bigint = 0n,
    windows: ReadonlyMap<string, LeaseWindow> = new Map(),
  ): Promise<bigint> {
    // Until a write is sent, nothing of this call applied (as in `charge`).
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (currentSignal()?.aborted) await beforeSend(checkDeadline);
      let k = this.known(ref);
      if (!k) {
        k = (await beforeSend(() => this.#store.read([ref]))).items[0] ??
          undefined;
        if (!k) return 0n; // the item expired: nothing to give back or charge
        this.remember(ref, k);
      }
      const nowMs = this.#clock.now();
      const now = BigInt(nowMs);
      const parts = [...deltas].flatMap(([n, d]) => {
        const p = k.limits.has(n)
          ? deltaPart(k, n, d, shards, now, windows.get(n))
          : null;
        return p ? [p] : [];
      });
      const names = parts.map((p) => p.name);
      if (names.length === 0 && wcu === 0n) return 0n;
      const fits = parts.every((p) =>
        (k.limits.get(p.name) as StoredLimit).tk <= (p.max as bigint)
      );
      let write: BucketWrite;
      let plain: PlainWrite | null = null;
      if (fits) {
        plain = {
          ref,
          limits: parts,
          rfMin: k.rf,
          wcu,
          notExpiredAt: null,
          ttl: null,
        };
        write = { kind: "plain", write: plain };
      } else {
        write = {
          kind: "slow",
          write: this.#refillDelta(
            ref,
            shards,
            k,
            now,
            names,
            deltas,
            wcu,
            windows,
          ),
        };
      }
      try {
        const r = await this.#store.write(write, { answer: plain === null });
        if (!r.ok) {
          this.remember(ref, r.old);
          if (!r.old) return 0n;
          continue;
        }
        if (plain) this.remember(ref, afterPlain(this.known(ref) ?? k, plain));
        else if (r.item) this.remember(ref, r.item);
        return 0n;
      } catch (e) {
        if (errorName(e) === "TransactionConflictException") {
          await beforeSend(() => this.backoff(attempt));
          continue;
        }
        throw e;
      }
    }
    // Lost every race: take what must be taken (debt), give nothing back.
    const takes = new Map<string, bigint>();
    let stranded = 0n;
    for (const [n, d] of deltas) {
      if (d > 0n) takes.set(n, d);
      else stranded -= d;
    }
    if (takes.size > 0) {
      // Should the caller's deadline pass while it is on the wire, the
      // enclosing sink learns, with its late outcome, that none of the
      // give-back was placed (what this call returns in time).
      const sink = currentLateSink();
      await watchLate(
        (p) => sink?.(p, Promise.resolve(stranded)),
        () => this.#store.write({ kind: "debt", ref, deltas: takes }),
      );
      this.remember(ref, null);
    }
    return stranded;
  }

  #refillDelta(
    ref: BucketRef,
    shards: number,
    k: BucketItem,
    now: bigint,
    names: readonly string[],
    deltas: ReadonlyMap<string, bigint>,
    wcu: bigint,
    windows: ReadonlyMap<string, LeaseWindow>,
  ): SlowWrite {
    const entries = refilling(k, shards, new Set());
    const plan = planRefill(
      k.rf,
      now,
      entries.map((o) => ({ tk: o.st.tk, p: o.p })),
    );
    const limits: PlannedLimit[] = entries.map(({ name: n, st, p }, i) => {
      const refilled = plan.tk[i] as bigint;
      const d = names.includes(n) ? deltas.get(n) as bigint : 0n;
      let after = heldBack(refilled - d, plan.hold[i]);
      let cut = plan.clamped[i] === true;
      if (d < 0n) {
        // A give-back fills at most to the ceiling at `now` (the refilled
        // balance is already at or under it).
        const ceiling = saturationCeiling(plan.rf, now, p);
        if (after > ceiling) {
          after = refilled > ceiling ? refilled : ceiling;
          cut = true;
        }
      }
      return {
        name: n,
        params: st.params,
        paramsBefore: st.params,
        tkBefore: st.tk,
        tkAfter: after,
        consumed: d,
        capped: true,
        exact: cut,
        check: false,
      };
    });
    for (const [n, st] of k.limits) {
      if (!isCalendar(st)) continue;
      const d = names.includes(n) ? deltas.get(n) as bigint : 0n;
      limits.push(
        calendarDeltaPlanned(n, st, shards, Number(now), d, windows.get(n)),
      );
    }
    if (k.limits.has(WCU_LIMIT_NAME)) limits.push(wcuPlanned(k, plan.rf, wcu));
    return {
      ref,
      create: false,
      expectedRf: k.rf,
      now: plan.rf,
      limits,
      cascade: k.cascade,
      parentId: k.parentId,
      shardCount: k.shardCount,
      ttl: null,
    };
  }
}

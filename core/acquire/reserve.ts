/**
 * The local reserve (opt-in): a layer before the fast path that admits
 * acquires from slices of buckets held in memory.
 *
 * - **Taking a slice.** When a call finds no slice covering its charge,
 *   it charges its own amount *plus* a slice in one conditional write
 *   through `BucketWriter.charge`, the same write as the fast path. For
 *   DynamoDB (and a Python client) the slice is an ordinary charge: the
 *   stored balance drops by it at once, so every token the process later
 *   admits from memory was taken from the bucket before it is admitted,
 *   and the total admitted never exceeds what the ideal bucket allowed.
 *   A slice is sized to what this process asked of the bucket over the
 *   last `targetMs` (its recent rate), capped at `maxFraction` of the
 *   capacity and at half of what the bucket was last seen to store; a
 *   cold or slow bucket gets none and goes to DynamoDB as without the
 *   reserve. While one call takes a slice of a bucket, the others wait
 *   for it instead of writing too.
 * - **All or nothing.** Every charged limit of the entity and of its
 *   cascade parent must be covered by a live slice, or topped up in the
 *   same all-or-nothing step (the writes that applied are given back when
 *   another failed), or the call goes to DynamoDB as today.
 * - **Leases.** `lease.adjust` up is taken from the slice when it covers
 *   it, else written to DynamoDB; rollback (and a release) returns to the
 *   slice while it lives, never more than the lease got from it.
 * - **Giving back.** A slice unused for `ttlMs`, a slice whose limits
 *   changed, and every slice at `limiter.close()` is given back through
 *   `BucketWriter.apply`: the give-back path that never lifts a bucket
 *   above its capacity.
 * - **Refusals** are never decided from memory: a call the slices do not
 *   cover is decided by DynamoDB on fresh state.
 *
 * Bounds (held, time-shifted, stranded tokens; false refusals): README "Local reserve".
 *
 * @module
 */
import { AsyncResource } from "node:async_hooks";
import { paramsOf, sameParams } from "../bucket.ts";
import { WCU_PER_WRITE } from "../bucket_item.ts";
import type { ChargeOutcome, Target } from "../bucket_writer.ts";
import { Lease } from "../lease.ts";
import { markPath } from "../telemetry.ts";
import type { Limit } from "../limit.ts";
import { certainlyNotApplied, withDeadline, withGrace } from "../transport.ts";
import { type Admission, reportStranded } from "./admission.ts";
import { LateOutcomes, settleFailedCharge } from "./late_charge.ts";
import { chargedParent } from "./cascade.ts";
import { target } from "./fast_path.ts";
import { leaseEntries, type Side, sideRef } from "./plan.ts";
import { RecentDemand } from "./reserve_demand.ts";
import {
  addAll,
  addTo,
  bucketKey,
  covers,
  demandKey,
  move,
  placeBack,
  type Plan,
  refKey,
  type Slice,
  tokens,
} from "./reserve_slice.ts";
import type {
  LocalReserveStats,
  ResolvedReserveConfig,
  SliceEvent,
} from "./reserve_config.ts";

/** Deadline of a give-back (it runs outside any caller's deadline). */
const GIVE_BACK_MS = 3000;
/** Rounds a call waits for slices other calls are taking. */
const WAIT_ROUNDS = 3;
/** Buckets whose recent demand is tracked. */
const DEMAND_MAX = 10_000;

/** Slices of buckets held by one limiter (see the module documentation). */
export class LocalReserve {
  readonly #adm: Admission;
  readonly #config: ResolvedReserveConfig;
  readonly #slices = new Map<string, Slice>();
  readonly #taking = new Map<string, Promise<void>>();
  /** Slice writes in flight per bucket: their slices are not retired meanwhile. */
  readonly #busy = new Map<string, number>();
  readonly #demand: RecentDemand;
  readonly #giveBacks = new Set<Promise<void>>();
  /** Runs give-backs and the expiry loop outside every caller's context. */
  readonly #scope = new AsyncResource("zae-limiter.LocalReserve");
  readonly #stop = new AbortController();
  #sweeper: Promise<void> | null = null;
  #closed = false;
  #nextId = 1;
  #local = 0;
  #taken = 0;
  readonly #returned = new Map<string, bigint>();
  readonly #stranded = new Map<string, bigint>();

  /** A reserve over a limiter's admission context. */
  constructor(adm: Admission, config: ResolvedReserveConfig) {
    this.#adm = adm;
    this.#config = config;
    this.#demand = new RecentDemand(config.targetMs, DEMAND_MAX);
  }

  /** What the reserve did so far. */
  stats(): LocalReserveStats {
    const held = new Map<string, bigint>();
    for (const s of this.#slices.values()) {
      for (const [n, a] of s.left) addTo(held, n, a);
    }
    return {
      localAdmissions: this.#local,
      slicesTaken: this.#taken,
      heldTokens: tokens(held),
      returnedTokens: tokens(this.#returned),
      strandedTokens: tokens(this.#stranded),
    };
  }

  /**
   * Admits from slices, or takes slices in the same write as the call's
   * own charge. `null`: the call goes to DynamoDB as without the reserve
   * (a limit not served, the entity or an item not known yet, no slice
   * worth taking, or a slice write refused: the fast path decides on it).
   *
   * @throws the store's error when a slice write failed without a verdict
   * (reported as stranded when it may have applied)
   */
  async acquire(
    child: Side,
    resource: string,
    consume: ReadonlyMap<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease | null> {
    if (this.#closed) return null;
    const adm = this.#adm;
    const info = adm.source.entityInfo(child.entityId);
    const nowMs = adm.clock.now();
    this.#record(child, resource, nowMs);
    if (!this.#served(child)) return null;
    if (info === undefined || info.refreshAt <= nowMs) return null;
    const sides: Side[] = [child];
    if (info.cascade && info.parentId) {
      const parent = await chargedParent(
        adm,
        info.parentId,
        resource,
        consume,
        override,
      );
      if (parent) {
        this.#record(parent, resource, nowMs);
        if (!this.#served(parent)) return null;
        sides.push(parent);
      }
    }
    const ns = adm.source.namespaceId;
    let plans: Plan[] = [];
    for (let round = 0;; round++) {
      if (this.#closed) return null;
      const now = adm.clock.now();
      plans = sides.map((side) => {
        const key = bucketKey(ns, side.entityId, resource);
        const slice = this.#live(key, side, now);
        // A slice of a sharded bucket serves whichever shard it holds.
        const s = slice ? { ...side, shard: slice.ref.shard } : side;
        return { side: s, key, slice };
      });
      const short = plans.filter((p) =>
        !p.slice || !covers(p.slice, p.side.charge)
      );
      if (short.length === 0) {
        this.#local++;
        markPath("reserve");
        const slices = plans.map((p) => p.slice as Slice);
        plans.forEach((p, i) => move(slices[i] as Slice, p.side.charge, 1n));
        return this.#lease(plans, resource, slices);
      }
      const pending = short.flatMap((p) => {
        const t = this.#taking.get(p.key);
        return t ? [t] : [];
      });
      if (pending.length === 0 || round >= WAIT_ROUNDS) break;
      await Promise.all(pending);
    }
    return await this.#take(plans, resource);
  }

  /** Whether every limit the side charges is served from slices. */
  #served(side: Side): boolean {
    if (side.resolved.limits.some((l) => l.calendar)) return false; // #14: a calendar quota's slice would admit into the next window
    const only = this.#config.limits;
    if (only === null) return true;
    for (const n of side.charge.keys()) if (!only.has(n)) return false;
    return true;
  }

  /** Counts what the side asks of its bucket (the recent rate). */
  #record(side: Side, resource: string, now: number): void {
    for (const [n, a] of side.charge) {
      this.#demand.record(demandKey(side.entityId, resource, n), a, now);
    }
  }

  /** The live slice of a bucket for the side, dropping a stale one. */
  #live(key: string, side: Side, now: number): Slice | undefined {
    const s = this.#slices.get(key);
    if (!s) return undefined;
    const changed = s.shards !== side.shards ||
      side.resolved.limits.some((l) => {
        const p = s.params.get(l.name);
        return p !== undefined && !sameParams(p, paramsOf(l));
      });
    if (changed || s.expiresAt <= now) {
      this.#drop(s); // unless a write to it is in flight: then later
      return undefined;
    }
    return s;
  }

  /**
   * What a short side's write charges per limit: the call's charge plus a
   * new slice less what the slice holds; `null` when no slice is worth it
   * (sparse traffic: a limit the slice lacks was asked for less than twice
   * this charge over the window). The slice is the recent demand, capped
   * at `maxFraction` of the capacity and at half of what the bucket was
   * last seen to store beyond the charge, in whole tokens.
   */
  #extra(p: Plan, t: Target, now: number): Map<string, bigint> | null {
    const known = this.#adm.writer.known(t.ref);
    if (!known) return null;
    const write = new Map<string, bigint>();
    let useful = false;
    for (const spec of t.limits) {
      const name = spec.limit.name;
      const a = p.side.charge.get(name);
      if (a === undefined) continue;
      const st = known.limits.get(name);
      if (!st) return null;
      const recent = this.#demand.recent(
        demandKey(p.side.entityId, t.ref.resource, name),
        now,
      );
      const held = p.slice?.left.get(name) ?? 0n;
      if (held <= 0n && recent < 2n * a) return null;
      // From the stored tokens, not the refill since: a take stays a plain
      // write (no race for the `rf` lock with other processes' refills).
      const avail = st.tk < spec.eff.cp ? st.tk : spec.eff.cp;
      let x = recent;
      const cap = (spec.eff.cp * this.#config.fractionPpm) / 1_000_000n;
      const room = (avail - a) / 2n;
      if (x > cap) x = cap;
      if (x > room) x = room;
      x -= x % 1000n;
      if (x < 0n) x = 0n;
      if (x > 0n || held > 0n) useful = true;
      const w = a + x - held;
      if (w > 0n) write.set(name, w);
    }
    // No slice to take and none to use: the fast path decides alone.
    return write.size > 0 && useful ? write : null;
  }

  /** Takes slices for the short sides (and lends from the others) in one step. */
  async #take(
    plans: Plan[],
    resource: string,
    again = true,
  ): Promise<Lease | null> {
    const adm = this.#adm;
    const now = adm.clock.now();
    const remote = plans.filter((p) =>
      !p.slice || !covers(p.slice, p.side.charge)
    );
    const targets = remote.map((p) => target(adm, p.side, resource, now));
    const writes = remote.map((p, i) =>
      this.#extra(p, targets[i] as Target, now)
    );
    if (writes.some((x) => x === null)) return null;
    const amounts = writes as Map<string, bigint>[];
    // What the short slices hold goes into the call and the new slice: set
    // aside during the write, so concurrent calls cannot lend it too.
    const pre = remote.map((p) => {
      const m = new Map<string, bigint>();
      for (const n of p.side.charge.keys()) {
        const h = p.slice?.left.get(n) ?? 0n;
        if (h > 0n) m.set(n, h);
      }
      if (p.slice) { for (const [n, h] of m) addTo(p.slice.left, n, -h); }
      return m;
    });
    // Lend from the covered sides now (undone when a write fails).
    const lent = plans.filter((p) => !remote.includes(p));
    for (const p of lent) move(p.slice as Slice, p.side.charge, 1n);
    let release!: () => void;
    const done = new Promise<void>((r) => release = r);
    for (const p of remote) {
      this.#taking.set(p.key, done);
      this.#busy.set(p.key, (this.#busy.get(p.key) ?? 0) + 1);
    }
    let results: PromiseSettledResult<ChargeOutcome>[];
    const late = new LateOutcomes(); // a slice write applied after the deadline is given back
    try {
      results = await Promise.allSettled(
        remote.map((_, i) =>
          late.watch(i, () =>
            adm.writer.charge(
              targets[i] as Target,
              amounts[i] as Map<string, bigint>,
            ))
        ),
      );
    } finally {
      for (const p of remote) {
        if (this.#taking.get(p.key) === done) this.#taking.delete(p.key);
        const n = (this.#busy.get(p.key) ?? 1) - 1;
        if (n > 0) this.#busy.set(p.key, n);
        else this.#busy.delete(p.key);
      }
      release();
    }
    const ok = results.map((r) =>
      r.status === "fulfilled" && r.value.kind === "ok"
    );
    if (ok.every(Boolean)) {
      const at = adm.clock.now();
      const slices = plans.map((p) => {
        const i = remote.indexOf(p);
        return i < 0 ? p.slice as Slice : this.#install(
          p,
          targets[i] as Target,
          amounts[i] as Map<string, bigint>,
          pre[i] as Map<string, bigint>,
          at,
        );
      });
      const lease = this.#lease(plans, resource, slices);
      if (this.#closed) { for (const x of slices) this.#drop(x, true); }
      return lease;
    }
    for (const p of lent) {
      move(p.slice as Slice, p.side.charge, -1n);
      if (p.slice?.dropped) this.#restore(p.slice, p.side.charge);
    }
    remote.forEach((p, i) => {
      if (p.slice) this.#restore(p.slice, pre[i] as Map<string, bigint>);
    });
    await Promise.all(remote.map(async (_, i) => {
      const t = targets[i] as Target;
      const a = amounts[i] as Map<string, bigint>;
      const r = results[i] as PromiseSettledResult<ChargeOutcome>;
      if (ok[i]) await this.#compensate(t, a);
      else if (r.status === "rejected") {
        settleFailedCharge(
          adm,
          t.ref,
          a,
          late.of(i),
          r.reason,
          () => this.#compensate(t, a),
          () => addAll(this.#stranded, a),
        );
      }
    }));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    const refused = results.every((r) =>
      r.status === "fulfilled" &&
      (r.value.kind === "ok" || r.value.kind === "refused")
    );
    // Sized on a stale balance: once more on the fresh one (a smaller
    // slice, or the call's charge less what the slice holds).
    if (refused && again && !this.#closed) {
      const live = plans.map((p) => ({
        ...p,
        slice: this.#live(p.key, p.side, adm.clock.now()),
      }));
      return await this.#take(live, resource, false);
    }
    return null; // refused, contended, params or missing: the fast path decides
  }

  /** Puts a taken slice in place (a top-up of the live one, or a new one) and lends the call's charge. */
  #install(
    p: Plan,
    t: Target,
    amounts: Map<string, bigint>,
    pre: Map<string, bigint>,
    now: number,
  ): Slice {
    let s = this.#slices.get(p.key);
    if (
      s && (s.ref.shard !== t.ref.shard || s.shards !== t.shards ||
        t.limits.some((spec) => {
          const q = s?.params.get(spec.limit.name);
          return q !== undefined && !sameParams(q, spec.stored);
        }))
    ) {
      this.#drop(s, true);
      s = undefined;
    }
    if (!s) {
      s = {
        id: this.#nextId++,
        key: p.key,
        ref: t.ref,
        shards: t.shards,
        params: new Map(),
        left: new Map(),
        out: new Map(),
        expiresAt: 0,
        dropped: false,
      };
      this.#slices.set(p.key, s);
    }
    for (const spec of t.limits) s.params.set(spec.limit.name, spec.stored);
    for (const [n, a] of amounts) addTo(s.left, n, a);
    for (const [n, a] of pre) addTo(s.left, n, a);
    move(s, p.side.charge, 1n);
    s.expiresAt = now + this.#config.ttlMs;
    this.#taken++;
    this.#emit("taken", s, amounts);
    this.#sweep();
    return s;
  }

  /** The lease of a call served from `slices[i]` for `plans[i]` (already lent). */
  #lease(plans: Plan[], resource: string, slices: Slice[]): Lease {
    const adm = this.#adm;
    const ns = adm.source.namespaceId;
    const bySlice = new Map<string, Slice>();
    // What this lease holds of each slice: all a rollback may return to it.
    const mine = new Map<string, Map<string, bigint>>();
    const now = adm.clock.now();
    slices.forEach((s, i) => {
      bySlice.set(refKey(s.ref), s);
      mine.set(refKey(s.ref), new Map(plans[i]?.side.charge));
      s.expiresAt = now + this.#config.ttlMs;
    });
    return new Lease(
      adm.writer,
      plans[0]?.side.entityId ?? "",
      resource,
      plans.flatMap((p) => leaseEntries(p.side, sideRef(ns, p.side, resource))),
      false,
      {
        ...adm.leaseOptions,
        slices: (ref, deltas) =>
          this.#settle(
            bySlice.get(refKey(ref)),
            mine.get(refKey(ref)),
            deltas,
          ),
      },
    );
  }

  /**
   * A lease's deltas on a slice, all or nothing: a debit when the slice
   * holds it, a give-back up to what this lease holds of the slice (a
   * release beyond it is a give-back DynamoDB caps). `false`: DynamoDB.
   */
  #settle(
    s: Slice | undefined,
    mine: Map<string, bigint> | undefined,
    deltas: ReadonlyMap<string, bigint>,
  ): boolean {
    if (!s || !mine || s.dropped || this.#closed) return false;
    for (const [n, d] of deltas) {
      if (d > 0n && (s.left.get(n) ?? 0n) < d) return false;
      if (d < 0n && (mine.get(n) ?? 0n) < -d) return false;
    }
    move(s, deltas, 1n);
    for (const [n, d] of deltas) addTo(mine, n, d);
    return true;
  }

  /**
   * Gives a failed slice write's charge back (the other side failed); one
   * not given back (or maybe not) is reported as a `giveback`: the call may
   * still be admitted by the fast path, and the charge then stands.
   */
  async #compensate(t: Target, a: Map<string, bigint>): Promise<void> {
    try {
      const placed = await withGrace(
        GIVE_BACK_MS,
        () => placeBack(this.#adm.writer, t.ref, t.shards, a, -WCU_PER_WRITE),
      );
      if (placed) return;
      reportStranded(this.#adm, t.ref, a, "giveback", null);
    } catch (e) {
      reportStranded(this.#adm, t.ref, a, "giveback", e);
    }
    addAll(this.#stranded, a);
  }

  /** Retires a slice at once and gives its unused tokens back in the background. */
  #drop(s: Slice, force = false): void {
    if (s.dropped || (!force && this.#busy.has(s.key))) return;
    s.dropped = true;
    if (this.#slices.get(s.key) === s) this.#slices.delete(s.key);
    const back = new Map([...s.left].filter(([, a]) => a > 0n));
    s.left.clear();
    this.#giveBackLater(s, back);
  }

  /** Tokens set aside from a slice go back to it, or to DynamoDB once it is retired. */
  #restore(s: Slice, m: ReadonlyMap<string, bigint>): void {
    if (!s.dropped) {
      for (const [n, a] of m) addTo(s.left, n, a);
      return;
    }
    this.#giveBackLater(s, new Map(m));
  }

  #giveBackLater(s: Slice, back: Map<string, bigint>): void {
    if (back.size === 0) return;
    const p = this.#scope.runInAsyncScope(() => this.#giveBack(s, back));
    this.#giveBacks.add(p); // #giveBack reports its own failures: none goes unhandled
    p.then(() => this.#giveBacks.delete(p), () => this.#giveBacks.delete(p));
  }

  async #giveBack(s: Slice, back: Map<string, bigint>): Promise<void> {
    try {
      const placed = await withDeadline(
        {},
        GIVE_BACK_MS,
        () => placeBack(this.#adm.writer, s.ref, s.shards, back),
      );
      if (placed) {
        addAll(this.#returned, back);
        this.#emit("returned", s, back);
        return;
      }
      reportStranded(this.#adm, s.ref, back, "giveback", null);
    } catch (e) {
      if (!certainlyNotApplied(e)) this.#adm.writer.remember(s.ref, null);
      reportStranded(this.#adm, s.ref, back, "giveback", e);
    }
    addAll(this.#stranded, back);
    this.#emit("stranded", s, back);
  }

  #emit(kind: SliceEvent["kind"], s: Slice, m: ReadonlyMap<string, bigint>) {
    try {
      this.#config.onSlice({
        kind,
        id: s.id,
        entityId: s.ref.entityId,
        resource: s.ref.resource,
        shard: s.ref.shard,
        tokens: tokens(m),
      });
    } catch {
      // a throwing listener must not fail an acquire
    }
  }

  /** Starts the expiry loop unless it runs. */
  #sweep(): void {
    if (this.#sweeper || this.#closed) return;
    this.#sweeper = this.#scope.runInAsyncScope(() => this.#expiryLoop());
  }

  async #expiryLoop(): Promise<void> {
    const clock = this.#adm.clock;
    const signal = this.#stop.signal;
    try {
      while (this.#slices.size > 0 && !signal.aborted) {
        const next = Math.min(
          ...[...this.#slices.values()].map((s) => s.expiresAt),
        );
        // At least 10 ms: an expired slice with a write in flight stays a while.
        const wait = Math.max(10, next - clock.now());
        try {
          await clock.sleep(wait, signal);
        } catch {
          return;
        }
        const now = clock.now();
        for (const s of [...this.#slices.values()]) {
          if (s.expiresAt <= now) this.#drop(s);
        }
      }
    } finally {
      this.#sweeper = null;
    }
  }

  /** Gives every slice back, waits for the writes; later calls go to DynamoDB. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#stop.abort();
    await this.#sweeper;
    await Promise.all([...this.#taking.values()]);
    for (const s of [...this.#slices.values()]) this.#drop(s, true);
    while (this.#giveBacks.size > 0) {
      await Promise.allSettled([...this.#giveBacks]);
    }
  }
}

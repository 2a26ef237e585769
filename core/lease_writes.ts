/**
 * The writes of a {@linkcode Lease}: `consume` (a checked charge, all or
 * nothing across items) and the deltas of `commit` and `rollback`, with
 * how each ends when its caller's deadline passes while it is on the wire
 * (the transport answers the caller at once and lets the write run on for
 * its grace, then tells its late outcome, see `transport.ts`, `watchLate`).
 *
 * Every charge is accounted for:
 *
 * - **consume.** A group (one bucket item) whose charge failed: when the
 *   write applied late, its charge is given back (the caller was told the
 *   consume failed), as the fast path gives back a late charge
 *   (`acquire/late_charge.ts`); when it certainly did not apply, nothing is
 *   reported; only an unknown outcome is reported stranded (`debit`).
 * - **commit / rollback.** One write per item of what is not written yet
 *   (`consumed - written`, or `-written`). A write that applied late is
 *   marked written (a retried call writes nothing of it again; only the
 *   part of a give-back it could not place is reported, as in time); one
 *   that did not apply stays to be written by the next call
 *   (a give-back too); only an unknown outcome is reported stranded as
 *   before: a give-back is then marked written (not resent: under-admission
 *   at worst), a debit is left to the next call (at worst taken twice).
 * - **No delta is sent twice.** While a group's write may still apply (on
 *   the wire, or past its caller's deadline within its grace), the group is
 *   in flight: a later `commit` or `rollback` waits for its outcome before
 *   it computes and sends what is left, bounded by its own deadline (when
 *   that passes first, the group is not sent and the call fails with the
 *   lease still open). So an adjustment is neither applied twice nor lost.
 *
 * The late settlements are tracked for `RateLimiter.close()`, which waits
 * for them (at most the write grace each, plus a give-back's own grace).
 *
 * @module
 */
import { paramsOf } from "./bucket.ts";
import type { BucketRef } from "./bucket_item.ts";
import type { BucketWriter, ChargeOutcome, Target } from "./bucket_writer.ts";
import { windowsOf } from "./calendar_bucket.ts";
import {
  RateLimiterUnavailable,
  RateLimitExceeded,
  ZAELimiterError,
} from "./errors.ts";
import type { LeaseEntry, LeaseOptions } from "./lease.ts";
import type { LimitStatus } from "./models.ts";
import {
  certainlyNotApplied,
  type DeadlineOptions,
  type LateOutcome,
  lateWithUnplaced,
  untilAborted,
  watchLate,
  withDeadline,
  withGrace,
} from "./transport.ts";
import { trackLeaseLate } from "./acquire/late_charge.ts";
import {
  COMPENSATION_GRACE_MS,
  strandedTo,
  unplacedTo,
} from "./acquire/admission.ts";

/** The parts of a lease its writes need. */
export interface LeaseParts {
  /** Writes the lease's items. */
  readonly writer: BucketWriter;
  /** The entries (their `consumed` and `written` are updated). */
  readonly entries: LeaseEntry[];
  /** The limiter's lease options. */
  readonly options: LeaseOptions;
  /** Entity of the acquire. */
  readonly entityId: string;
  /** Resource of the acquire. */
  readonly resource: string;
}

function groupKey(ref: BucketRef): string {
  return `${ref.entityId}\u0000${ref.resource}\u0000${ref.shard}`;
}

/** The writes of one lease (see the module documentation). */
export class LeaseWrites {
  readonly #p: LeaseParts;
  /** Per group: settles once its write can no longer apply (late outcome included). */
  #inFlight: Map<string, Promise<void>> | null = null;

  /** The writes of the lease made of `parts`. */
  constructor(parts: LeaseParts) {
    this.#p = parts;
  }

  /**
   * Resolves once no write of the lease may still apply (each late
   * outcome known and settled), or `null` when none is in flight.
   */
  settling(): Promise<void> | null {
    if (!this.#inFlight?.size) return null;
    return Promise.all([...this.#inFlight.values()]).then(() => {});
  }

  #apply(): BucketWriter["apply"] {
    const w = this.#p.writer;
    return this.#p.options.apply ?? ((...args) => w.apply(...args));
  }

  #groups(filter: (e: LeaseEntry) => boolean): LeaseEntry[][] {
    const groups = new Map<string, LeaseEntry[]>();
    for (const e of this.#p.entries) {
      if (!filter(e)) continue;
      const k = groupKey(e.ref);
      const g = groups.get(k);
      if (g) g.push(e);
      else groups.set(k, [e]);
    }
    return [...groups.values()];
  }

  /** `e` as the error a lease call throws. */
  unavailable(e: unknown, what: string): ZAELimiterError {
    if (e instanceof ZAELimiterError) return e;
    return new RateLimiterUnavailable(
      `${what} failed: ${e instanceof Error ? e.message : String(e)}`,
      {
        cause: e,
        stackName: this.#p.options.stackName,
        entityId: this.#p.entityId,
        resource: this.#p.resource,
      },
    );
  }

  #report(
    ref: BucketRef,
    amounts: ReadonlyMap<string, bigint>,
    kind: "debit" | "giveback",
    cause: unknown,
  ): void {
    strandedTo(this.#p.options.onStranded, ref, amounts, kind, cause);
  }

  /** Reports the millitokens `left` of a give-back that applied but could not place them. */
  #unplaced(ref: BucketRef, left: bigint): void {
    unplacedTo(this.#p.options.onStranded, ref, left);
  }

  #track(p: Promise<void>): void {
    trackLeaseLate(this.#p.options.onStranded, p);
  }

  /**
   * Gives `charge` back on `ref` with its own grace (a consume that did not
   * stand; `graceMs`, the lease's `timeoutMs` unless shorter). Reported
   * stranded (`giveback`) unless it applied, late or not.
   */
  async #giveBack(
    ref: BucketRef,
    shards: number,
    charge: ReadonlyMap<string, bigint>,
    graceMs: number = this.#p.options.timeoutMs,
  ): Promise<void> {
    const deltas = new Map([...charge].map(([n, a]) => [n, -a]));
    let late: Promise<[LateOutcome, bigint]> | undefined;
    try {
      const left = await withGrace(
        graceMs,
        () =>
          watchLate(
            lateWithUnplaced((l) => void (late = l)),
            () => this.#apply()(ref, shards, deltas),
          ),
      );
      this.#unplaced(ref, left);
    } catch (e) {
      if (!late) return this.#report(ref, charge, "giveback", e);
      // The charge stands unless the give-back applied after all (then what it could not place).
      this.#track(
        late.then(([o, left]) => {
          if (o !== "applied") this.#report(ref, charge, "giveback", e);
          else this.#unplaced(ref, left);
        }).catch(() => {}),
      );
    }
  }

  /**
   * Charges `want` (millitokens per limit name) on every item, checked,
   * all or nothing (see `Lease.consume`).
   */
  async consume(
    want: ReadonlyMap<string, bigint>,
    options: DeadlineOptions,
  ): Promise<void> {
    const writer = this.#p.writer;
    const groups = this.#groups((e) => want.has(e.limit.name));
    const targets: Target[] = groups.map((g) => {
      const first = g[0] as LeaseEntry;
      return {
        ref: first.ref,
        limits: g.map((e) => ({
          limit: e.limit,
          stored: paramsOf(e.limit),
          eff: e.params,
        })),
        shards: first.shards,
        ttl: null,
      };
    });
    const amountsOf = (g: LeaseEntry[]): Map<string, bigint> =>
      new Map(g.map((e) => [e.limit.name, want.get(e.limit.name) ?? 0n]));
    // Each group learns how its write ended if the deadline passes while it is on the wire.
    const late: (Promise<LateOutcome> | undefined)[] = [];
    let results: PromiseSettledResult<ChargeOutcome>[];
    try {
      results = await withDeadline(
        options,
        this.#p.options.timeoutMs,
        () =>
          Promise.allSettled(
            groups.map((g, i) =>
              watchLate(
                (p) => void (late[i] = p),
                () => writer.charge(targets[i] as Target, amountsOf(g), 0n),
              )
            ),
          ),
      );
    } catch (e) {
      throw this.unavailable(e, "lease.consume");
    }
    const ok = results.map((r) =>
      r.status === "fulfilled" && r.value.kind === "ok"
    );
    if (ok.every(Boolean)) {
      for (const e of this.#p.entries) {
        const a = want.get(e.limit.name);
        if (a === undefined) continue;
        e.consumed += a;
        e.written += a;
      }
      return;
    }
    // All or nothing: give back the groups that were charged.
    await Promise.all(groups.map((g, i) => {
      if (!ok[i]) return null;
      const first = g[0] as LeaseEntry;
      // The caller waits for it as for an acquire's compensation, no longer.
      return this.#giveBack(
        first.ref,
        first.shards,
        amountsOf(g),
        Math.min(this.#p.options.timeoutMs, COMPENSATION_GRACE_MS),
      );
    }));
    // A failed group: applied late, given back; not applied, nothing; else reported.
    const failed = results.flatMap((r, i) => {
      if (r.status !== "rejected") return [];
      const g = groups[i] as LeaseEntry[];
      const first = g[0] as LeaseEntry;
      const l = late[i];
      if (l) {
        writer.remember(first.ref, null);
        this.#track(
          l.then(async (o) => {
            if (o === "applied") {
              await this.#giveBack(first.ref, first.shards, amountsOf(g));
            } else if (o === "unknown") {
              this.#report(first.ref, amountsOf(g), "debit", r.reason);
            }
          }).catch(() => {}), // a throwing onStranded must not surface as an unhandled rejection
        );
      } else if (!certainlyNotApplied(r.reason)) {
        writer.remember(first.ref, null);
        this.#report(first.ref, amountsOf(g), "debit", r.reason);
      }
      return [r.reason];
    });
    if (failed.length > 0) throw this.unavailable(failed[0], "lease.consume");
    const statuses: LimitStatus[] = [];
    for (let i = 0; i < groups.length; i++) {
      const r = results[i] as PromiseSettledResult<ChargeOutcome>;
      const g = groups[i] as LeaseEntry[];
      if (r.status === "rejected") continue;
      const o = r.value;
      if (o.kind === "refused" || o.kind === "contended") {
        statuses.push(...o.statuses);
      } else if (o.kind !== "ok") {
        // The item expired or its limits changed under the lease: nothing can be checked.
        statuses.push(...g.map((e) => ({
          entityId: e.ref.entityId,
          resource: e.ref.resource,
          limitName: e.limit.name,
          limit: e.limit,
          available: 0,
          requested: Number((want.get(e.limit.name) ?? 0n) / 1000n),
          exceeded: want.has(e.limit.name),
          retryAfterSeconds: 1,
        })));
      }
    }
    throw new RateLimitExceeded(statuses);
  }

  /**
   * Writes `delta` of every entry (one write per item), after any earlier
   * write of the item that may still apply has ended.
   *
   * @throws {RateLimiterUnavailable} a delta is left unwritten
   */
  async deltas(
    delta: (e: LeaseEntry) => bigint,
    options: DeadlineOptions,
    what: "commit" | "rollback",
  ): Promise<void> {
    const inFlight = this.#inFlight;
    // Nothing to write and nothing in flight (a warm commit of an unchanged lease).
    if (!inFlight?.size && !this.#p.entries.some((e) => delta(e) !== 0n)) {
      return;
    }
    const pending = (e: LeaseEntry): boolean =>
      inFlight?.has(groupKey(e.ref)) ?? false;
    const groups = this.#groups((e) => delta(e) !== 0n || pending(e));
    if (groups.length === 0) return;
    let failure: unknown = null;
    try {
      await withDeadline(options, this.#p.options.timeoutMs, async () => {
        await Promise.all(groups.map(async (entries) => {
          // An earlier write of the item may still apply: its outcome first.
          const earlier = this.#inFlight?.get(
            groupKey((entries[0] as LeaseEntry).ref),
          );
          if (earlier) {
            try {
              await untilAborted(earlier);
            } catch (e) {
              failure ??= e; // still in flight: not sent, left to the next call
              return;
            }
          }
          const e = await this.#write(entries, delta);
          if (e !== null) failure ??= e;
        }));
      });
    } catch (e) {
      failure ??= e;
    }
    if (
      failure !== null && groups.some((g) => g.some((e) => delta(e) !== 0n))
    ) {
      throw this.unavailable(failure, `lease.${what}`);
    }
  }

  /**
   * Writes one item's deltas; returns the failure, or `null`. The item is
   * in flight until the write can no longer apply.
   */
  async #write(
    group: LeaseEntry[],
    delta: (e: LeaseEntry) => bigint,
  ): Promise<unknown> {
    const entries = group.filter((e) => delta(e) !== 0n);
    if (entries.length === 0) return null;
    const first = entries[0] as LeaseEntry;
    const key = groupKey(first.ref);
    const sent = new Map(entries.map((e) => [e, delta(e)]));
    const map = new Map(entries.map((e) => [e.limit.name, delta(e)]));
    if (this.#p.options.slices?.(first.ref, map)) {
      for (const [e, d] of sent) e.written += d;
      return null;
    }
    let release = (): void => {};
    const done = new Promise<void>((r) => (release = r));
    const inFlight = this.#inFlight ??= new Map();
    inFlight.set(key, done);
    const end = (): void => {
      if (inFlight.get(key) === done) inFlight.delete(key);
      release();
    };
    let late: Promise<[LateOutcome, bigint]> | undefined;
    try {
      const left = await watchLate(
        lateWithUnplaced((l) => void (late = l)),
        () =>
          this.#apply()(first.ref, first.shards, map, 0n, windowsOf(entries)),
      );
      for (const [e, d] of sent) e.written += d;
      end();
      this.#unplaced(first.ref, left);
      return null;
    } catch (e) {
      if (late) {
        // What the item holds is unknown until the write ends.
        this.#p.writer.remember(first.ref, null);
        this.#track(
          late.then(([o, left]) => {
            if (o === "applied") {
              for (const [x, d] of sent) x.written += d;
              this.#unplaced(first.ref, left);
            } else if (o === "unknown") this.#ambiguous(first.ref, sent, e);
            // notApplied: left to the next call.
          }).catch(() => {}).finally(end),
        );
        return e;
      }
      end();
      if (!certainlyNotApplied(e)) this.#ambiguous(first.ref, sent, e);
      return e; // certainly not applied: resent by the next call
    }
  }

  /**
   * A write that may have applied: a give-back is reported and not resent
   * (at worst the tokens stay taken); a debit is reported and resent by
   * the next call (at worst taken twice).
   */
  #ambiguous(
    ref: BucketRef,
    sent: ReadonlyMap<LeaseEntry, bigint>,
    cause: unknown,
  ): void {
    this.#p.writer.remember(ref, null);
    const gives = [...sent].filter(([, d]) => d < 0n);
    if (gives.length > 0) {
      this.#report(
        ref,
        new Map(gives.map(([x, d]) => [x.limit.name, d])),
        "giveback",
        cause,
      );
      for (const [x, d] of gives) x.written += d;
    }
    const takes = [...sent].filter(([, d]) => d > 0n);
    if (takes.length > 0) {
      this.#report(
        ref,
        new Map(takes.map(([x, d]) => [x.limit.name, d])),
        "debit",
        cause,
      );
    }
  }
}

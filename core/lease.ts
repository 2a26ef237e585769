/**
 * A lease: tokens consumed on acquire, adjustable while open, committed on
 * success and given back on failure (spec 02 §11).
 *
 * Writes go through the {@linkcode BucketWriter}: a give-back never lifts a
 * bucket above its capacity, and a delta is written at most once. A write
 * that fails *before* applying leaves the lease open so the same call can
 * be retried; one that may have applied (a 500, a reset connection, a
 * deadline after sending) is not resent for a give-back (under-admission at
 * worst) and is reported as stranded.
 *
 * @module
 */
import { type BucketParams, paramsOf } from "./bucket.ts";
import type { BucketRef } from "./bucket_item.ts";
import type { BucketWriter, ChargeOutcome, Target } from "./bucket_writer.ts";
import { windowsOf } from "./calendar_bucket.ts";
import type { Clock } from "./clock.ts";
import { NO_SHADOW, type ShadowReport } from "./acquire/shadow.ts";
import {
  LeaseDeadlineExceeded,
  LeaseExpiredError,
  RateLimiterUnavailable,
  RateLimitExceeded,
  ValidationError,
  ZAELimiterError,
} from "./errors.ts";
import type { Limit } from "./limit.ts";
import type { LimitStatus } from "./models.ts";
import {
  certainlyNotApplied,
  type DeadlineOptions,
  withDeadline,
  withGrace,
} from "./transport.ts";
import { validateAmount } from "./validation.ts";

/** One limit of one bucket item held by a lease. */
export interface LeaseEntry {
  /** The bucket item. */
  readonly ref: BucketRef;
  /** The limit. */
  readonly limit: Limit;
  /** Effective parameters on this shard. */
  readonly params: BucketParams;
  /** Shard count the parameters were divided by. */
  readonly shards: number;
  /** Millitokens the lease stands for now. */
  consumed: bigint;
  /** Millitokens already written to DynamoDB. */
  written: bigint;
  /** A calendar quota: the acquire's window start (its adjustments belong to it). */
  window?: bigint;
}

/**
 * Lease life cycle. `expired`: its deadline (`maxHoldMs`) passed while it
 * was open; what it wrote stays charged.
 */
export type LeaseState = "open" | "committed" | "rolled_back" | "expired";

/** How a lease ended, for the work that runs when it ends (a concurrency slot's release). */
export type LeaseEnding = "commit" | "rollback";

/** A charge that may stand in a bucket without a lease to account for it. */
export interface StrandedCharge {
  /** Entity of the bucket. */
  readonly entityId: string;
  /** Resource of the bucket. */
  readonly resource: string;
  /** Shard of the bucket. */
  readonly shard: number;
  /**
   * `debit`: tokens that may have been taken (a write failed in a way that
   * may have applied it); `giveback`: tokens that may not have been given
   * back. Both err towards under-admission.
   */
  readonly kind: "debit" | "giveback";
  /** Tokens per limit name. */
  readonly amounts: Readonly<Record<string, number>>;
  /** The failure, when there was one. */
  readonly cause: unknown;
}

/** @internal What the limiter hands every lease. */
export interface LeaseOptions {
  /** Default deadline of lease calls. */
  readonly timeoutMs: number;
  /** Reports stranded charges. */
  readonly onStranded: (charge: StrandedCharge) => void;
  /** The table, for error messages. */
  readonly stackName: string;
  /**
   * A lease served from local reserve slices (`acquire/reserve.ts`): takes
   * one item's commit or rollback deltas in memory, all or nothing;
   * `false` sends them to DynamoDB.
   */
  readonly slices?: (
    ref: BucketRef,
    deltas: ReadonlyMap<string, bigint>,
  ) => boolean;
  /** Writes one item's deltas (the limiter's coalescer; default `BucketWriter.apply`). */
  readonly apply?: BucketWriter["apply"];
}

const DEFAULT_OPTIONS: LeaseOptions = {
  timeoutMs: 3000,
  onStranded: () => {},
  stackName: "",
};

/** What each lease was granted (set once by the limiter; see {@linkcode Lease.granted}). */
const GRANTS = new WeakMap<Lease, Readonly<Record<string, number>>>();

/** @internal Records what the limiter granted `lease` (whole tokens per limit name). */
export function recordGrant(
  lease: Lease,
  granted: Readonly<Record<string, number>>,
): void {
  GRANTS.set(lease, Object.freeze({ ...granted }));
}

function applyOf(o: LeaseOptions, w: BucketWriter): BucketWriter["apply"] {
  return o.apply ?? ((...args) => w.apply(...args));
}

function groupKey(ref: BucketRef): string {
  return `${ref.entityId}\u0000${ref.resource}\u0000${ref.shard}`;
}

/**
 * A lease over one acquire. Use it inside the `acquire` callback (commit and
 * rollback are automatic) or with `await using` (call {@linkcode Lease.commit}
 * when the work succeeded; disposal without a commit rolls back).
 */
export class Lease implements AsyncDisposable {
  readonly #writer: BucketWriter | null;
  readonly #entries: LeaseEntry[];
  readonly #options: LeaseOptions;
  #state: LeaseState = "open";
  #deadline: number | null = null;
  #clock: Clock | null = null;
  #local = false;
  readonly #onEnd: ((ending: LeaseEnding) => Promise<void>)[] = [];
  /** Entity of the acquire. */
  readonly entityId: string;
  /** Resource of the acquire. */
  readonly resource: string;
  /**
   * `true` when DynamoDB was unavailable and `onUnavailable` is `allow`: the
   * request was admitted without a check and nothing is recorded.
   */
  readonly unchecked: boolean;

  #shadow: ShadowReport = NO_SHADOW;
  #shadowIgnored: ReadonlySet<string> = new Set();

  /** @internal Created by the limiter. */
  constructor(
    writer: BucketWriter | null,
    entityId: string,
    resource: string,
    entries: LeaseEntry[],
    unchecked = false,
    options: LeaseOptions = DEFAULT_OPTIONS,
  ) {
    this.#writer = writer;
    this.entityId = entityId;
    this.resource = resource;
    this.#entries = entries;
    this.unchecked = unchecked;
    this.#options = options;
  }

  /**
   * What this acquire's shadow limits decided (stored `shadow` flag or the
   * acquire's `shadow` option): `refused` lists the ones that would have
   * refused. Shadow limits were not charged, and the lease's `adjust` and
   * `consume` ignore them.
   */
  get shadow(): ShadowReport {
    return this.#shadow;
  }

  /** @internal Sets the shadow report and the names `adjust`/`consume` ignore. */
  attachShadow(report: ShadowReport, ignored: ReadonlySet<string>): void {
    this.#shadow = report;
    this.#shadowIgnored = ignored;
  }

  /** `open`, `committed`, `rolled_back` or `expired` (the deadline passed while open). */
  get state(): LeaseState {
    return this.#pastDeadline() ? "expired" : this.#state;
  }

  /** The deadline (epoch ms on the limiter's clock) after which the lease is refused, or `null`: none. */
  get deadline(): number | null {
    return this.#deadline;
  }

  /**
   * `true` when the in-process fallback limiter admitted the request
   * (`onUnavailable: "local"` while DynamoDB was unavailable). Such a lease
   * is also `unchecked`: nothing of it is written to DynamoDB.
   */
  get local(): boolean {
    return this.#local;
  }

  /**
   * @internal Set by the limiter: the deadline, the clock that tells it, and
   * whether the local fallback admitted the lease.
   */
  setHold(
    hold: { deadline: number | null; clock: Clock; local?: boolean },
  ): void {
    if (hold.deadline !== null) {
      this.#deadline = Math.min(this.#deadline ?? Infinity, hold.deadline);
    }
    this.#clock = hold.clock;
    if (hold.local) this.#local = true;
  }

  /** @internal Work to run once the lease ends by commit or rollback before its deadline. */
  onEnd(fn: (ending: LeaseEnding) => Promise<void>): void {
    this.#onEnd.push(fn);
  }

  #pastDeadline(): boolean {
    if (this.#state === "expired") return true;
    if (this.#state !== "open" || this.#deadline === null || !this.#clock) {
      return false;
    }
    if (this.#clock.now() < this.#deadline) return false;
    this.#state = "expired";
    return true;
  }

  async #ended(ending: LeaseEnding): Promise<void> {
    for (const fn of this.#onEnd.splice(0)) await fn(ending);
  }

  /**
   * Whole tokens granted at acquire per limit name of `consume`, for the
   * entity (its cascade parent was charged the same): the ask, or with
   * `min` (a partial grant) the amount between `min` and the ask that fit.
   * Later `adjust`, `consume` and `release` calls do not change it. An
   * unchecked lease (`onUnavailable: "allow"`) reports the ask.
   */
  get granted(): Readonly<Record<string, number>> {
    return GRANTS.get(this) ?? {};
  }

  /** Whole tokens this lease stands for, per limit name (child and parent amounts add up). */
  get consumed(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.#entries) {
      out[e.limit.name] = (out[e.limit.name] ?? 0) + Number(e.consumed / 1000n);
    }
    return out;
  }

  /** The entries (read-only view). */
  get entries(): readonly Readonly<LeaseEntry>[] {
    return this.#entries;
  }

  #checkOpen(action = "use"): void {
    if (this.#pastDeadline()) {
      throw new LeaseDeadlineExceeded(
        action,
        this,
        this.#deadline ?? 0,
        this.#clock?.now() ?? 0,
      );
    }
    if (this.#state !== "open") throw new LeaseExpiredError();
  }

  #amounts(
    amounts: Readonly<Record<string, number>>,
    allowNegative: boolean,
  ): Map<string, bigint> {
    if (!amounts || typeof amounts !== "object" || Array.isArray(amounts)) {
      throw new ValidationError(
        "amounts",
        amounts,
        "must map limit names to whole token amounts, such as { tpm: 250 }",
      );
    }
    const out = new Map<string, bigint>();
    const names = new Set(this.#entries.map((e) => e.limit.name));
    for (const [name, value] of Object.entries(amounts)) {
      validateAmount(value, `consume.${name}`, allowNegative);
      if (this.#shadowIgnored.has(name)) continue; // shadow: never charged
      if (!names.has(name) && !this.unchecked) {
        throw new ValidationError(
          "consume",
          name,
          `this lease holds no limit named "${name}" (it holds: ${
            [...names].join(", ")
          })`,
        );
      }
      if (value !== 0) out.set(name, BigInt(value) * 1000n);
    }
    return out;
  }

  #groups(filter: (e: LeaseEntry) => boolean): LeaseEntry[][] {
    const groups = new Map<string, LeaseEntry[]>();
    for (const e of this.#entries) {
      if (!filter(e)) continue;
      const k = groupKey(e.ref);
      const g = groups.get(k);
      if (g) g.push(e);
      else groups.set(k, [e]);
    }
    return [...groups.values()];
  }

  #unavailable(e: unknown, what: string): ZAELimiterError {
    if (e instanceof ZAELimiterError) return e;
    return new RateLimiterUnavailable(
      `${what} failed: ${e instanceof Error ? e.message : String(e)}`,
      {
        cause: e,
        stackName: this.#options.stackName,
        entityId: this.entityId,
        resource: this.resource,
      },
    );
  }

  /**
   * Consumes more tokens now, checked atomically against DynamoDB (on the
   * entity and, with cascade, its parent: all or nothing).
   *
   * @throws {RateLimitExceeded} nothing was consumed
   * @throws {LeaseExpiredError} the lease is closed
   * @throws {LeaseDeadlineExceeded} the lease's deadline passed
   * @throws {RateLimiterUnavailable} DynamoDB failed or the deadline passed; nothing was consumed unless reported stranded
   */
  async consume(
    amounts: Readonly<Record<string, number>>,
    options: DeadlineOptions = {},
  ): Promise<void> {
    this.#checkOpen("consume from");
    const want = this.#amounts(amounts, false);
    if (want.size === 0 || this.unchecked || !this.#writer) return;
    const writer = this.#writer;
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
    let results: PromiseSettledResult<ChargeOutcome>[];
    try {
      results = await withDeadline(
        options,
        this.#options.timeoutMs,
        () =>
          Promise.allSettled(
            groups.map((g, i) =>
              writer.charge(targets[i] as Target, amountsOf(g), 0n)
            ),
          ),
      );
    } catch (e) {
      throw this.#unavailable(e, "lease.consume");
    }
    const ok = results.map((r) =>
      r.status === "fulfilled" && r.value.kind === "ok"
    );
    if (ok.every(Boolean)) {
      for (const e of this.#entries) {
        const a = want.get(e.limit.name);
        if (a === undefined) continue;
        e.consumed += a;
        e.written += a;
      }
      return;
    }
    // All or nothing: give back the groups that were charged.
    await Promise.all(groups.map(async (g, i) => {
      if (!ok[i]) return;
      const first = g[0] as LeaseEntry;
      const deltas = new Map([...amountsOf(g)].map(([n, a]) => [n, -a]));
      try {
        await withGrace(
          this.#options.timeoutMs,
          () => applyOf(this.#options, writer)(first.ref, first.shards, deltas),
        );
      } catch (e) {
        this.#report(first.ref, deltas, "giveback", e);
      }
    }));
    // Every group whose write may have applied is reported, then the first failure thrown.
    const failed = results.flatMap((r, i) => {
      if (r.status !== "rejected") return [];
      const g = groups[i] as LeaseEntry[];
      const first = g[0] as LeaseEntry;
      if (!certainlyNotApplied(r.reason)) {
        writer.remember(first.ref, null);
        this.#report(first.ref, amountsOf(g), "debit", r.reason);
      }
      return [r.reason];
    });
    if (failed.length > 0) throw this.#unavailable(failed[0], "lease.consume");
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
   * Changes the amounts without a check (positive takes, negative gives
   * back; the bucket may go into debt). Written when the lease commits.
   *
   * @throws {LeaseExpiredError} the lease is closed
   * @throws {LeaseDeadlineExceeded} the lease's deadline passed
   */
  adjust(deltas: Readonly<Record<string, number>>): void {
    this.#checkOpen("adjust");
    const d = this.#amounts(deltas, true);
    for (const e of this.#entries) {
      const v = d.get(e.limit.name);
      if (v !== undefined) e.consumed += v;
    }
  }

  /** Gives tokens back: `adjust` with negated amounts. */
  release(amounts: Readonly<Record<string, number>>): void {
    this.#checkOpen("release tokens of");
    const want = this.#amounts(amounts, false);
    this.adjust(
      Object.fromEntries([...want].map(([k, v]) => [k, -Number(v / 1000n)])),
    );
  }

  /**
   * Writes the adjustments (one write per bucket item) and closes the
   * lease. Idempotent once committed. When a write fails before applying,
   * the lease stays open and `commit` can be called again (nothing is lost).
   *
   * @throws {LeaseExpiredError} after a rollback
   * @throws {LeaseDeadlineExceeded} the lease's deadline passed (nothing is written; what was charged stays charged)
   * @throws {RateLimiterUnavailable} a write failed or the deadline passed; the lease stays open
   */
  async commit(options: DeadlineOptions = {}): Promise<void> {
    if (this.#state === "committed") return;
    this.#checkOpen("commit");
    if (this.#writer) {
      await this.#writeDeltas((e) => e.consumed - e.written, options, "commit");
    }
    this.#state = "committed";
    await this.#ended("commit");
  }

  /**
   * Gives back everything written and closes the lease. Idempotent; a closed
   * lease is left as is, and so is one whose deadline passed (a no-op: what
   * it charged stays charged). When a write fails before applying, the lease stays
   * open and `rollback` can be called again.
   *
   * @throws {RateLimiterUnavailable} a write failed or the deadline passed
   */
  async rollback(options: DeadlineOptions = {}): Promise<void> {
    // After the deadline nothing is given back: the lease is settled as if its holder had crashed.
    if (this.#state !== "open" || this.#pastDeadline()) return;
    for (const e of this.#entries) e.consumed = 0n;
    if (this.#writer) {
      await this.#writeDeltas((e) => -e.written, options, "rollback");
    }
    this.#state = "rolled_back";
    await this.#ended("rollback");
  }

  #report(
    ref: BucketRef,
    amounts: ReadonlyMap<string, bigint>,
    kind: "debit" | "giveback",
    cause: unknown,
  ): void {
    const tokens: Record<string, number> = {};
    for (const [n, a] of amounts) tokens[n] = Math.abs(Number(a)) / 1000;
    this.#options.onStranded({
      entityId: ref.entityId,
      resource: ref.resource,
      shard: ref.shard,
      kind,
      amounts: tokens,
      cause,
    });
  }

  async #writeDeltas(
    delta: (e: LeaseEntry) => bigint,
    options: DeadlineOptions,
    what: "commit" | "rollback",
  ): Promise<void> {
    const writer = this.#writer as BucketWriter;
    const groups = this.#groups((e) => delta(e) !== 0n);
    if (groups.length === 0) return;
    let failure: unknown = null;
    try {
      await withDeadline(options, this.#options.timeoutMs, async () => {
        await Promise.all(groups.map(async (entries) => {
          const first = entries[0] as LeaseEntry;
          const map = new Map(entries.map((e) => [e.limit.name, delta(e)]));
          if (this.#options.slices?.(first.ref, map)) {
            for (const e of entries) e.written += delta(e);
            return;
          }
          try {
            const w = windowsOf(entries);
            const left = await applyOf(this.#options, writer)(
              first.ref,
              first.shards,
              map,
              0n,
              w,
            );
            for (const e of entries) e.written += delta(e);
            if (left > 0n) {
              this.#report(first.ref, new Map([["*", left]]), "giveback", null);
            }
          } catch (e) {
            failure ??= e;
            if (certainlyNotApplied(e)) return; // resent by the next call
            writer.remember(first.ref, null);
            // May have applied. A give-back is not resent (at worst the tokens
            // stay taken); a debit is resent by the next call (at worst taken twice).
            const gives = entries.filter((x) => delta(x) < 0n);
            if (gives.length > 0) {
              this.#report(
                first.ref,
                new Map(gives.map((x) => [x.limit.name, delta(x)])),
                "giveback",
                e,
              );
              for (const x of gives) x.written += delta(x);
            }
            const takes = entries.filter((x) => delta(x) > 0n);
            if (takes.length > 0) {
              this.#report(
                first.ref,
                new Map(takes.map((x) => [x.limit.name, delta(x)])),
                "debit",
                e,
              );
            }
          }
        }));
      });
    } catch (e) {
      failure ??= e;
    }
    if (
      failure !== null && groups.some((g) => g.some((e) => delta(e) !== 0n))
    ) {
      throw this.#unavailable(failure, `lease.${what}`);
    }
  }

  /** Rolls back a lease that was not committed (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.rollback();
  }
}

/**
 * A lease: tokens consumed on acquire, adjustable while open, committed on
 * success and given back on failure (spec 02 §11).
 *
 * Writes go through the {@linkcode BucketWriter} (`lease_writes.ts`): a
 * give-back never lifts a bucket above its capacity, and a delta is written
 * at most once. A write that fails *before* applying leaves the lease open
 * so the same call can be retried. One that outlived its caller's deadline
 * ends in the background: applied, it counts as written (a consume's charge
 * is given back); not applied, it is left to the next call; an unknown
 * outcome (a 500, a reset connection, the write's grace ran out) is
 * reported as stranded, a give-back then not resent (under-admission at
 * worst). A later call waits for a write that may still apply before it
 * sends what is left of its item.
 *
 * @module
 */
import type { BucketParams } from "./bucket.ts";
import type { BucketRef } from "./bucket_item.ts";
import type { BucketWriter } from "./bucket_writer.ts";
import type { Clock } from "./clock.ts";
import { NO_SHADOW, type ShadowReport } from "./acquire/shadow.ts";
import {
  LeaseDeadlineExceeded,
  LeaseExpiredError,
  ValidationError,
} from "./errors.ts";
import type { Limit } from "./limit.ts";
import { LeaseWrites } from "./lease_writes.ts";
import type { DeadlineOptions } from "./transport.ts";
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

let setGrant: (lease: Lease, granted: ReadonlyMap<string, bigint>) => void;

/**
 * @internal Records what the limiter granted `lease` (millitokens per
 * limit name; the map is not changed afterwards). Turned into whole tokens
 * only when {@linkcode Lease.granted} is read.
 */
export function recordGrant(
  lease: Lease,
  granted: ReadonlyMap<string, bigint>,
): void {
  setGrant(lease, granted);
}

const NO_NAMES: ReadonlySet<string> = new Set();

/**
 * A lease over one acquire. Use it inside the `acquire` callback (commit and
 * rollback are automatic) or with `await using` (call {@linkcode Lease.commit}
 * when the work succeeded; disposal without a commit rolls back).
 */
export class Lease implements AsyncDisposable {
  readonly #writes: LeaseWrites | null;
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
  #shadowIgnored: ReadonlySet<string> = NO_NAMES;
  #grant: ReadonlyMap<string, bigint> | null = null;
  #granted: Readonly<Record<string, number>> | null = null;

  static {
    setGrant = (lease, granted) => {
      lease.#grant = granted;
      lease.#granted = null;
    };
  }

  /** @internal Created by the limiter. */
  constructor(
    writer: BucketWriter | null,
    entityId: string,
    resource: string,
    entries: LeaseEntry[],
    unchecked = false,
    options: LeaseOptions = DEFAULT_OPTIONS,
  ) {
    this.entityId = entityId;
    this.resource = resource;
    this.#entries = entries;
    this.unchecked = unchecked;
    this.#options = options;
    this.#writes = writer
      ? new LeaseWrites({ writer, entries, options, entityId, resource })
      : null;
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
    if (this.#onEnd.length === 0) return;
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
    if (this.#granted === null) {
      const whole: Record<string, number> = {};
      for (const [n, a] of this.#grant ?? []) whole[n] = Number(a / 1000n);
      this.#granted = Object.freeze(whole);
    }
    return this.#granted;
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

  /**
   * Consumes more tokens now, checked atomically against DynamoDB (on the
   * entity and, with cascade, its parent: all or nothing).
   *
   * @throws {RateLimitExceeded} nothing was consumed
   * @throws {LeaseExpiredError} the lease is closed
   * @throws {LeaseDeadlineExceeded} the lease's deadline passed
   * @throws {RateLimiterUnavailable} DynamoDB failed or the deadline passed; nothing was consumed unless reported stranded (a write that applied after the deadline is given back in the background, one that certainly did not apply is not reported)
   */
  async consume(
    amounts: Readonly<Record<string, number>>,
    options: DeadlineOptions = {},
  ): Promise<void> {
    this.#checkOpen("consume from");
    const want = this.#amounts(amounts, false);
    if (want.size === 0 || this.unchecked || !this.#writes) return;
    await this.#writes.consume(want, options);
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
   * A write still running past the deadline counts as written if it applies
   * (a retried `commit` does not write it again) and is left to the retry if
   * it does not; a retry waits for its outcome (within its own deadline)
   * before it writes that item, so no adjustment is written twice.
   *
   * @throws {LeaseExpiredError} after a rollback
   * @throws {LeaseDeadlineExceeded} the lease's deadline passed (nothing is written; what was charged stays charged)
   * @throws {RateLimiterUnavailable} a write failed or the deadline passed; the lease stays open
   */
  async commit(options: DeadlineOptions = {}): Promise<void> {
    if (this.#state === "committed") return;
    this.#checkOpen("commit");
    await this.#writes?.deltas(
      (e) => e.consumed - e.written,
      options,
      "commit",
    );
    this.#state = "committed";
    await this.#ended("commit");
  }

  /**
   * Gives back everything written and closes the lease. Idempotent; a closed
   * lease is left as is, and so is one whose deadline passed (a no-op: what
   * it charged stays charged). When a write fails before applying, the lease stays
   * open and `rollback` can be called again (a write that outlived the
   * deadline is settled as for {@linkcode Lease.commit}).
   *
   * @throws {RateLimiterUnavailable} a write failed or the deadline passed
   */
  async rollback(options: DeadlineOptions = {}): Promise<void> {
    // After the deadline nothing is given back: the lease is settled as if its holder had crashed.
    if (this.#state !== "open" || this.#pastDeadline()) return;
    for (const e of this.#entries) e.consumed = 0n;
    await this.#writes?.deltas((e) => -e.written, options, "rollback");
    this.#state = "rolled_back";
    await this.#ended("rollback");
  }

  /**
   * @internal Resolves once no write of the lease may still apply (each
   * one that outlived its caller's deadline ended and was settled), or
   * `null` when none is in flight.
   */
  settling(): Promise<void> | null {
    return this.#writes?.settling() ?? null;
  }

  /** Rolls back a lease that was not committed (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.rollback();
  }
}

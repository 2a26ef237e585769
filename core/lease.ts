/**
 * A lease: tokens consumed on acquire, adjustable while open, committed on
 * success and compensated on failure (spec 02 §11).
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { type BucketParams, retryAfterSeconds, wholeTokens } from "./bucket.ts";
import {
  type BucketRef,
  consumeOnlyUpdate,
  decodeBucket,
  deltaUpdate,
} from "./bucket_item.ts";
import {
  LeaseExpiredError,
  RateLimitExceeded,
  ValidationError,
} from "./errors.ts";
import type { Item } from "./expr.ts";
import type { Limit } from "./limit.ts";
import type { LimitStatus } from "./models.ts";
import type { Repository } from "./repository.ts";
import { cancellationCodes, isConditionFailed } from "./_sdk_errors.ts";
import { validateAmount } from "./validation.ts";

/** One limit of one bucket item held by a lease. */
export interface LeaseEntry {
  /** The bucket item. */
  readonly ref: BucketRef;
  /** The limit. */
  readonly limit: Limit;
  /** Effective parameters on this shard. */
  readonly params: BucketParams;
  /** Millitokens the lease stands for now. */
  consumed: bigint;
  /** Millitokens already written to DynamoDB. */
  written: bigint;
}

/** Lease life cycle. */
export type LeaseState = "open" | "committed" | "rolled_back";

function groupKey(ref: BucketRef): string {
  return `${ref.entityId}\u0000${ref.resource}\u0000${ref.shard}`;
}

/**
 * A lease over one acquire. Use it inside the `acquire` callback (commit and
 * rollback are automatic) or with `await using` (call {@linkcode Lease.commit}
 * when the work succeeded; disposal without a commit rolls back).
 */
export class Lease implements AsyncDisposable {
  readonly #repo: Repository | null;
  readonly #entries: LeaseEntry[];
  #state: LeaseState = "open";
  /** Entity of the acquire. */
  readonly entityId: string;
  /** Resource of the acquire. */
  readonly resource: string;
  /**
   * `true` when DynamoDB was unavailable and `onUnavailable` is `allow`: the
   * request was admitted without a check and nothing is recorded.
   */
  readonly unchecked: boolean;

  /** @internal Created by the limiter. */
  constructor(
    repo: Repository | null,
    entityId: string,
    resource: string,
    entries: LeaseEntry[],
    unchecked = false,
  ) {
    this.#repo = repo;
    this.entityId = entityId;
    this.resource = resource;
    this.#entries = entries;
    this.unchecked = unchecked;
  }

  /** `open`, `committed` or `rolled_back`. */
  get state(): LeaseState {
    return this.#state;
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

  #checkOpen(): void {
    if (this.#state !== "open") throw new LeaseExpiredError();
  }

  #amounts(
    amounts: Readonly<Record<string, number>>,
    allowNegative: boolean,
  ): Map<string, bigint> {
    const out = new Map<string, bigint>();
    const names = new Set(this.#entries.map((e) => e.limit.name));
    for (const [name, value] of Object.entries(amounts)) {
      validateAmount(value, `consume.${name}`, allowNegative);
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

  #groups(filter: (e: LeaseEntry) => boolean): Map<string, LeaseEntry[]> {
    const groups = new Map<string, LeaseEntry[]>();
    for (const e of this.#entries) {
      if (!filter(e)) continue;
      const k = groupKey(e.ref);
      const g = groups.get(k);
      if (g) g.push(e);
      else groups.set(k, [e]);
    }
    return groups;
  }

  /**
   * Consumes more tokens now, checked atomically against DynamoDB (on the
   * entity and, with cascade, its parent: all or nothing).
   *
   * @throws {RateLimitExceeded} nothing was consumed
   * @throws {LeaseExpiredError} the lease is closed
   */
  async consume(amounts: Readonly<Record<string, number>>): Promise<void> {
    this.#checkOpen();
    const want = this.#amounts(amounts, false);
    if (want.size === 0 || this.unchecked || !this.#repo) return;
    const repo = this.#repo;
    const groups = this.#groups((e) => want.has(e.limit.name));
    const items: TransactWriteItem[] = [];
    for (const entries of groups.values()) {
      const first = entries[0] as LeaseEntry;
      const map = new Map(
        entries.map((e) => [e.limit.name, want.get(e.limit.name) ?? 0n]),
      );
      items.push({ Update: consumeOnlyUpdate(repo.tableName, first.ref, map) });
    }
    try {
      await repo.writeItems(items);
    } catch (e) {
      if (
        isConditionFailed(e) ||
        cancellationCodes(e).includes("ConditionalCheckFailed")
      ) {
        throw new RateLimitExceeded(
          this.#statusesAfterFailure(e, want, [...groups.values()]),
        );
      }
      throw e;
    }
    for (const e of this.#entries) {
      const a = want.get(e.limit.name);
      if (a === undefined) continue;
      e.consumed += a;
      e.written += a;
    }
  }

  #statusesAfterFailure(
    err: unknown,
    want: Map<string, bigint>,
    groups: LeaseEntry[][],
  ): LimitStatus[] {
    const olds: (Item | undefined)[] = [];
    const single = (err as { Item?: Item }).Item;
    const reasons =
      (err as { CancellationReasons?: { Item?: Item }[] }).CancellationReasons;
    if (reasons) { for (const r of reasons) olds.push(r.Item); }
    else olds.push(single);
    const statuses: LimitStatus[] = [];
    groups.forEach((entries, i) => {
      const old = olds[i];
      const bucket = old ? decodeBucket(old, entries[0]?.ref.shard ?? 0) : null;
      for (const e of entries) {
        const need = want.get(e.limit.name) ?? 0n;
        const tk = bucket?.limits.get(e.limit.name)?.tk ?? 0n;
        const exceeded = tk < need;
        statuses.push({
          entityId: e.ref.entityId,
          resource: e.ref.resource,
          limitName: e.limit.name,
          limit: e.limit,
          available: wholeTokens(tk),
          requested: Number(need / 1000n),
          exceeded,
          retryAfterSeconds: exceeded
            ? retryAfterSeconds(need - tk, e.params)
            : 0,
        });
      }
    });
    if (!statuses.some((s) => s.exceeded)) {
      // The old image was not returned: report every requested limit as the refusal.
      return statuses.map((s) => ({
        ...s,
        exceeded: true,
        retryAfterSeconds: Math.max(s.retryAfterSeconds, 0.001),
      }));
    }
    return statuses;
  }

  /**
   * Changes the amounts without a check (positive takes, negative gives
   * back; the bucket may go into debt). Written when the lease commits.
   *
   * @throws {LeaseExpiredError} the lease is closed
   */
  adjust(deltas: Readonly<Record<string, number>>): void {
    this.#checkOpen();
    const d = this.#amounts(deltas, true);
    for (const e of this.#entries) {
      const v = d.get(e.limit.name);
      if (v !== undefined) e.consumed += v;
    }
  }

  /** Gives tokens back: `adjust` with negated amounts. */
  release(amounts: Readonly<Record<string, number>>): void {
    const neg: Record<string, number> = {};
    for (const [k, v] of Object.entries(amounts)) {
      validateAmount(v, `consume.${k}`);
      neg[k] = -v;
    }
    this.adjust(neg);
  }

  /**
   * Writes the adjustments (one unconditional write per bucket item) and
   * closes the lease. Idempotent once committed.
   *
   * @throws {LeaseExpiredError} after a rollback
   */
  async commit(): Promise<void> {
    if (this.#state === "committed") return;
    this.#checkOpen();
    this.#state = "committed";
    if (!this.#repo) return;
    await this.#writeDeltas((e) => e.consumed - e.written);
  }

  /** Gives back everything written and closes the lease. Idempotent; a closed lease is left as is. */
  async rollback(): Promise<void> {
    if (this.#state !== "open") return;
    this.#state = "rolled_back";
    if (!this.#repo) return;
    await this.#writeDeltas((e) => -e.written);
  }

  async #writeDeltas(delta: (e: LeaseEntry) => bigint): Promise<void> {
    const repo = this.#repo as Repository;
    const writes: Promise<void>[] = [];
    for (const entries of this.#groups((e) => delta(e) !== 0n).values()) {
      const map = new Map(entries.map((e) => [e.limit.name, delta(e)]));
      const first = entries[0] as LeaseEntry;
      writes.push(
        repo.writeItems([{
          Update: deltaUpdate(repo.tableName, first.ref, map),
        }]).then(() => {
          for (const e of entries) e.written += delta(e);
        }),
      );
    }
    const results = await Promise.allSettled(writes);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
  }

  /** Rolls back a lease that was not committed (for `await using`). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.rollback();
  }
}

/**
 * Capacity of one resource summed across entities (spec 02 §13,
 * `get_resource_capacity`): a pure accumulator fed the resource's bucket
 * items one at a time in GSI2 order (`BUCKET#{entity}#{shard}`, so the shards
 * of an entity are adjacent). It holds the items of one entity and one total
 * per limit name, so memory stays flat however many entities there are.
 *
 * Unlike the reference, which reads only the first page and one limit, it
 * reads every page and sums every limit in one pass; availability is
 * computed the way `RateLimiter.available` computes it (refill to now, shards
 * summed, a missing shard counted full, capped at the capacity).
 *
 * @module
 */
import type { BucketItem } from "./bucket_item.ts";
import { type BucketParams, refill, wholeTokens } from "./bucket.ts";
import { WCU_LIMIT_NAME } from "./validation.ts";

/** Totals of one limit of a resource across entities. */
export interface LimitCapacity {
  /** Limit name (`rpm`, `tpm`, …). */
  readonly limitName: string;
  /** Entities with a bucket that has this limit. */
  readonly entities: number;
  /** Sum of their capacities, in whole tokens. */
  readonly totalCapacity: number;
  /**
   * Sum of the tokens they have available now, in whole tokens (an entity
   * in debt counts negative, so the total can be below zero).
   */
  readonly totalAvailable: number;
  /** `(totalCapacity − totalAvailable) / totalCapacity × 100`, two decimals (0 when the capacity is 0). */
  readonly utilizationPct: number;
}

/** One entity's figures, passed to {@linkcode ResourceCapacityOptions.onEntity}. */
export interface EntityCapacity {
  /** Entity id. */
  readonly entityId: string;
  /** Parent id as denormalised on its bucket, or `null`. */
  readonly parentId: string | null;
  /** Shards of its bucket. */
  readonly shards: number;
  /** Per limit name: capacity and tokens available now, in whole tokens. */
  readonly limits: Readonly<
    Record<string, { readonly capacity: number; readonly available: number }>
  >;
}

/** The result of {@linkcode Repository.getResourceCapacity}. */
export interface ResourceCapacity {
  /** The resource. */
  readonly resource: string;
  /** The time the availability was computed for, epoch milliseconds. */
  readonly asOf: number;
  /** Entities counted (with a bucket for the resource, after `parentsOnly`). */
  readonly entities: number;
  /** Bucket items read (every shard of every entity, before filtering). */
  readonly bucketItems: number;
  /** Totals per limit name, sorted by name. */
  readonly limits: readonly LimitCapacity[];
}

/** Progress of a capacity read, passed to {@linkcode ResourceCapacityOptions.onPage}. */
export interface ResourceCapacityProgress {
  /** Bucket items read so far. */
  readonly bucketItems: number;
  /** Entities counted so far. */
  readonly entities: number;
}

/** Options of {@linkcode Repository.getResourceCapacity}. */
export interface ResourceCapacityOptions {
  /** Only this limit. @default every limit */
  readonly limitName?: string;
  /** Only entities without a parent (read from the parent id denormalised on the bucket). @default false */
  readonly parentsOnly?: boolean;
  /** Items per DynamoDB page. @default DynamoDB's 1 MB pages */
  readonly pageSize?: number;
  /** Aborts between pages. */
  readonly signal?: AbortSignal;
  /** Called once per entity counted, in entity order: a per-entity report without holding it in memory. */
  readonly onEntity?: (entity: EntityCapacity) => void;
  /** Called after each page. */
  readonly onPage?: (progress: ResourceCapacityProgress) => void;
}

interface Totals {
  entities: number;
  capacity: bigint;
  available: bigint;
}

function divided(p: BucketParams, shards: number): BucketParams {
  const n = BigInt(Math.max(1, shards));
  const cp = p.cp / n;
  const ra = p.ra / n;
  return { cp: cp > 0n ? cp : 1n, ra: ra > 0n ? ra : 1n, rp: p.rp };
}

function pct(capacity: bigint, available: bigint): number {
  if (capacity <= 0n) return 0;
  return Math.round(Number(capacity - available) / Number(capacity) * 10_000) /
    100;
}

/**
 * Sums the capacity of one resource's buckets; feed it every bucket item of
 * the resource with {@linkcode ResourceCapacityAccumulator.add}, then call
 * {@linkcode ResourceCapacityAccumulator.finish}.
 *
 * @example Two entities, one in use
 * ```ts
 * import assert from "node:assert/strict";
 * import { ResourceCapacityAccumulator } from "./resource_capacity.ts";
 * import type { BucketItem } from "./bucket_item.ts";
 *
 * const bucket = (entityId: string, tk: bigint): BucketItem => ({
 *   entityId, resource: "gpt", shard: 0, rf: 0n, shardCount: 1, cascade: false,
 *   parentId: null, ttl: null,
 *   limits: new Map([["rpm", { tk, params: { cp: 100_000n, ra: 100_000n, rp: 60_000n }, tc: null }]]),
 * });
 * const acc = new ResourceCapacityAccumulator("gpt", 0);
 * acc.add(bucket("a", 100_000n));
 * acc.add(bucket("b", 40_000n));
 * const r = acc.finish();
 * assert.deepEqual(r.limits, [
 *   { limitName: "rpm", entities: 2, totalCapacity: 200, totalAvailable: 140, utilizationPct: 30 },
 * ]);
 * ```
 */
export class ResourceCapacityAccumulator {
  readonly #resource: string;
  readonly #now: bigint;
  readonly #options: ResourceCapacityOptions;
  readonly #totals = new Map<string, Totals>();
  #current: BucketItem[] = [];
  #entities = 0;
  #items = 0;

  /**
   * @param resource The resource (reported back).
   * @param nowMs The time to refill to, epoch milliseconds.
   * @param options `limitName`, `parentsOnly` and `onEntity` apply.
   */
  constructor(
    resource: string,
    nowMs: number,
    options: ResourceCapacityOptions = {},
  ) {
    this.#resource = resource;
    this.#now = BigInt(Math.floor(nowMs));
    this.#options = options;
  }

  /** Adds one bucket item; items of one entity must be adjacent (GSI2 order). */
  add(item: BucketItem): void {
    this.#items++;
    const first = this.#current[0];
    if (first && first.entityId !== item.entityId) this.#flush();
    this.#current.push(item);
  }

  /** Items read and entities counted so far. */
  get progress(): ResourceCapacityProgress {
    return { bucketItems: this.#items, entities: this.#entities };
  }

  /** Counts the last entity and returns the totals. */
  finish(): ResourceCapacity {
    this.#flush();
    const limits = [...this.#totals.entries()].sort(([a], [b]) =>
      a < b ? -1 : a > b ? 1 : 0
    ).map(([limitName, t]): LimitCapacity => ({
      limitName,
      entities: t.entities,
      totalCapacity: Number(t.capacity),
      totalAvailable: Number(t.available),
      utilizationPct: pct(t.capacity, t.available),
    }));
    return {
      resource: this.#resource,
      asOf: Number(this.#now),
      entities: this.#entities,
      bucketItems: this.#items,
      limits,
    };
  }

  #flush(): void {
    const items = this.#current;
    this.#current = [];
    if (items.length === 0) return;
    const head = items.find((i) => i.shard === 0) ?? (items[0] as BucketItem);
    if (this.#options.parentsOnly && head.parentId !== null) return;
    const shards = Math.max(
      ...items.map((i) => Math.max(i.shardCount, i.shard + 1)),
    );
    const names = new Set<string>();
    for (const i of items) {
      for (const name of i.limits.keys()) {
        if (name === WCU_LIMIT_NAME) continue;
        if (
          this.#options.limitName !== undefined &&
          name !== this.#options.limitName
        ) continue;
        names.add(name);
      }
    }
    if (names.size === 0) return;
    this.#entities++;
    const report: Record<string, { capacity: number; available: number }> = {};
    for (const name of names) {
      const stored = (head.limits.get(name) ??
        items.find((i) => i.limits.has(name))?.limits.get(name))?.params;
      if (!stored) continue;
      const eff = divided(stored, shards);
      let sum = 0n;
      for (let s = 0; s < shards; s++) {
        const it = items.find((i) => i.shard === s);
        const st = it?.limits.get(name);
        const tk = st && st.tk > eff.cp ? eff.cp : st?.tk ?? eff.cp;
        // A calendar quota (it has a window): what is left until the window ends.
        const ws = st?.ws ?? null;
        sum += !it || !st
          ? eff.cp
          : ws !== null
          ? (this.#now >= (st.we ?? 0n) ? eff.cp : tk)
          : refill(tk, it.rf, this.#now, eff).tk;
      }
      const capacity = wholeTokens(stored.cp);
      const available = wholeTokens(sum < stored.cp ? sum : stored.cp);
      report[name] = { capacity, available };
      const t = this.#totals.get(name) ??
        { entities: 0, capacity: 0n, available: 0n };
      t.entities++;
      t.capacity += BigInt(capacity);
      t.available += BigInt(available);
      this.#totals.set(name, t);
    }
    this.#options.onEntity?.({
      entityId: head.entityId,
      parentId: head.parentId,
      shards,
      limits: report,
    });
  }
}

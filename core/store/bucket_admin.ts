/**
 * Bucket reads and maintenance outside the acquire path: one bucket item, an
 * entity's buckets (GSI3), a reset, a resource's capacity (GSI2, page by
 * page), and settling a bucket to new limits after a config change. The
 * acquire writes live in the bucket store.
 *
 * @module
 */
import {
  type AttributeValue,
  GetItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { isConditionFailed } from "../_sdk_errors.ts";
import { bucketTtlSeconds } from "../bucket.ts";
import {
  type BucketItem,
  bucketKey,
  decodeBucket,
  settleWrite,
} from "../bucket_item.ts";
import { Expr, str, updateExpression } from "../expr.ts";
import { bucketAttr, gsi2PkResource, gsi3PkEntity } from "../keys.ts";
import type { Limit } from "../limit.ts";
import {
  type ResourceCapacity,
  ResourceCapacityAccumulator,
  type ResourceCapacityOptions,
} from "../resource_capacity.ts";
import {
  validateIdentifier,
  validateLimitName,
  validateResource,
} from "../validation.ts";
import type { ConfigBucketHooks, ResolvedLimits } from "./config_store.ts";
import type { EntityCache } from "./entity_cache.ts";
import type { TableClient } from "./table.ts";

/**
 * The bucket TTL policy (spec 02 §9): no TTL for entity-level limits
 * (`"remove"`), none when the multiplier is ≤ 0 (`null`: leave as is), else
 * now + time to fill × multiplier, but at least twice the refresh interval
 * because warm writes do not refresh the TTL.
 */
export function bucketTtlPolicy(
  resolved: ResolvedLimits,
  nowMs: number,
  options: { multiplier: number; refreshSeconds: number },
): number | "remove" | null {
  if (resolved.source === "entity") return "remove";
  const s = bucketTtlSeconds(resolved.limits, options.multiplier);
  if (s === null) return null;
  return Math.floor(nowMs / 1000) + Math.max(s, 2 * options.refreshSeconds);
}

/** Options of {@linkcode BucketAdmin}. */
export interface BucketAdminOptions {
  /** The entity cache (a reset forgets the entity). */
  readonly cache: EntityCache;
  /** Bucket TTL multiplier. */
  readonly ttlMultiplier: number;
  /** How often cached entity and config data are re-checked, in seconds. */
  readonly refreshSeconds: number;
}

/** Bucket reads and maintenance of namespace id `ns`. */
export class BucketAdmin implements ConfigBucketHooks {
  readonly #io: TableClient;
  readonly #ns: string;
  readonly #cache: EntityCache;
  readonly #options: BucketAdminOptions;

  /** Buckets of namespace id `ns` on `io`. */
  constructor(io: TableClient, ns: string, options: BucketAdminOptions) {
    this.#io = io;
    this.#ns = ns;
    this.#cache = options.cache;
    this.#options = options;
  }

  /** The TTL a bucket under `resolved` gets at `nowMs` ({@linkcode bucketTtlPolicy}). */
  ttl(resolved: ResolvedLimits, nowMs: number): number | "remove" | null {
    return bucketTtlPolicy(resolved, nowMs, {
      multiplier: this.#options.ttlMultiplier,
      refreshSeconds: this.#options.refreshSeconds,
    });
  }

  /** Reads one bucket item (strongly consistent), or `null`. */
  async item(
    entityId: string,
    resource: string,
    shard = 0,
  ): Promise<BucketItem | null> {
    const out = await this.#io.client.send(
      new GetItemCommand({
        TableName: this.#io.name,
        Key: bucketKey({ ns: this.#ns, entityId, resource, shard }),
        ConsistentRead: true,
      }),
    );
    return out.Item ? decodeBucket(out.Item, shard) : null;
  }

  /** Every bucket item of an entity (all resources and shards), through GSI3. */
  async ofEntity(entityId: string): Promise<BucketItem[]> {
    const keys = await this.#io.queryAll({
      IndexName: "GSI3",
      KeyConditionExpression: "GSI3PK = :pk AND begins_with(GSI3SK, :b)",
      ExpressionAttributeValues: {
        ":pk": { S: gsi3PkEntity(this.#ns, entityId) },
        ":b": { S: "BUCKET#" },
      },
    });
    if (keys.length === 0) return [];
    const items = await this.#io.batchGet(
      keys.map((k) => ({
        PK: k["PK"] as AttributeValue,
        SK: k["SK"] as AttributeValue,
      })),
      true,
    );
    return items.map((i) => {
      const pk = str(i, "PK") ?? "";
      return decodeBucket(i, Number(pk.slice(pk.lastIndexOf("#") + 1)) || 0);
    });
  }

  /**
   * Deletes the bucket items of one entity (one resource, or all): they are
   * recreated full on the next acquire. Returns the number deleted.
   */
  async reset(entityId: string, resource?: string): Promise<number> {
    validateIdentifier(entityId);
    if (resource !== undefined) validateResource(resource);
    const buckets = await this.ofEntity(entityId);
    const keys = buckets.filter((b) =>
      resource === undefined || b.resource === resource
    ).map((b) =>
      bucketKey({
        ns: this.#ns,
        entityId,
        resource: b.resource,
        shard: b.shard,
      })
    );
    this.#cache.forget(this.#ns, entityId);
    return await this.#io.batchDelete(keys);
  }

  /**
   * Capacity of a resource summed across the entities holding a bucket for
   * it: per limit, the entities, the total capacity and the tokens available
   * now (refilled to the repository's clock, shards summed), read page by
   * page from GSI2 with flat memory. GSI2 is eventually consistent, so a
   * bucket written a moment ago may be missing; entities that never acquired
   * the resource have no bucket and are not counted.
   *
   * @param resource The resource.
   * @param options `limitName`, `parentsOnly`, `pageSize`, `signal`, and
   * `onEntity` / `onPage` callbacks.
   * @returns Totals per limit name.
   * @throws {InvalidNameError} bad resource or limit name
   */
  async capacity(
    resource: string,
    options: ResourceCapacityOptions = {},
  ): Promise<ResourceCapacity> {
    validateResource(resource);
    if (options.limitName !== undefined) {
      validateLimitName(options.limitName, "limitName");
    }
    const acc = new ResourceCapacityAccumulator(
      resource,
      this.#io.clock.now(),
      options,
    );
    const pages = this.#io.queryPages({
      IndexName: "GSI2",
      KeyConditionExpression: "GSI2PK = :pk AND begins_with(GSI2SK, :b)",
      ExpressionAttributeValues: {
        ":pk": { S: gsi2PkResource(this.#ns, resource) },
        ":b": { S: "BUCKET#" },
      },
      ...(options.pageSize !== undefined ? { Limit: options.pageSize } : {}),
    }, options.signal);
    for await (const page of pages) {
      for (const item of page) {
        const sk = str(item, "GSI2SK") ?? "";
        acc.add(
          decodeBucket(item, Number(sk.slice(sk.lastIndexOf("#") + 1)) || 0),
        );
      }
      options.onPage?.(acc.progress);
    }
    return acc.finish();
  }

  /** Sets `cp/ra/rp` of the shard-0 bucket to `limits` (a missing bucket is ignored). */
  async settle(
    entityId: string,
    resource: string,
    change: {
      limits: readonly Limit[];
      ttl: number | "remove" | null;
      stale: readonly string[];
    },
  ): Promise<void> {
    const { limits, ttl, stale } = change;
    const ref = { ns: this.#ns, entityId, resource, shard: 0 };
    if (stale.length > 0) {
      const e = new Expr();
      const remove: string[] = [];
      for (const name of stale) {
        for (const f of ["tk", "cp", "ra", "rp", "tc"] as const) {
          remove.push(e.n(bucketAttr(name, f)));
        }
      }
      await this.#io.client.send(
        new UpdateItemCommand({
          TableName: this.#io.name,
          Key: bucketKey(ref),
          UpdateExpression: updateExpression({ remove }),
          ConditionExpression: "attribute_exists(PK)",
          ...e.attrs(),
        }),
      ).catch((err) => {
        if (!isConditionFailed(err)) throw err;
      });
    }
    // The new parameters take effect now: the refill since rf is settled
    // first (under the smaller capacity and the slower rate of old and new,
    // since the change time is unknown to the bucket), under the rf lock.
    for (let attempt = 0; attempt < 8; attempt++) {
      const item = await this.item(entityId, resource, 0);
      if (!item) return;
      const write = settleWrite(
        this.#io.name,
        ref,
        item,
        limits,
        ttl,
        this.#io.clock.now(),
      );
      if (!write) return;
      try {
        await this.#io.client.send(new UpdateItemCommand(write));
        return;
      } catch (err) {
        if (!isConditionFailed(err)) throw err;
      }
    }
  }
}

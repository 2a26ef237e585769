/**
 * What the limiter needs besides bucket items: resolved limits, the
 * entity cache, the bucket TTL policy and the outage setting. The
 * `Repository` provides it from DynamoDB; `MemoryLimiterSource` (the
 * `./testing` export) from memory.
 *
 * @module
 */
import type { Clock } from "../clock.ts";
import type { Limit } from "../limit.ts";
import type { ConfigSource, OnUnavailable } from "../models.ts";

/** Resolved limits and where they came from. */
export interface ResolvedLimits {
  /** The limits. */
  readonly limits: readonly Limit[];
  /** Their level. */
  readonly source: ConfigSource;
}

/** What is cached about an entity. */
export interface EntityInfo {
  /** Cascade flag. */
  readonly cascade: boolean;
  /** Parent id. */
  readonly parentId: string | null;
  /** Shard count per resource. */
  readonly shards: ReadonlyMap<string, number>;
  /** Clock time after which the next write should re-read the denormalised flags. */
  readonly refreshAt: number;
}

/** The limiter's view of configuration and entities. */
export interface LimiterSource {
  /** The clock (server-corrected for DynamoDB). */
  readonly clock: Clock;
  /** Namespace id (the key prefix). */
  readonly namespaceId: string;
  /** Namespace name. */
  readonly namespaceName: string;
  /** Name shown in errors (the table). */
  readonly tableName: string;
  /** The 4-level resolution (entity, entity default, resource, system). */
  resolveLimits(
    entityId: string,
    resource: string,
    options?: { fresh?: boolean },
  ): Promise<ResolvedLimits | null>;
  /**
   * The 4-level resolution when it needs no I/O (every level cached; the
   * warm path), `undefined` when a level must be read. Optional: without
   * it every resolution goes through {@linkcode LimiterSource.resolveLimits}.
   */
  cachedLimits?(
    entityId: string,
    resource: string,
  ): ResolvedLimits | null | undefined;
  /** Cached entity facts, if any. */
  entityInfo(entityId: string): EntityInfo | undefined;
  /** Updates the cached cascade/parent and (optionally) one resource's shard count. */
  rememberEntity(
    entityId: string,
    info: { cascade: boolean; parentId: string | null },
    shard?: { resource: string; count: number },
  ): void;
  /** The `ttl` a write of a bucket with these limits stores. */
  bucketTtl(resolved: ResolvedLimits, nowMs: number): number | "remove" | null;
  /** The stored `on_unavailable` setting (read if needed). */
  resolveOnUnavailable(): Promise<OnUnavailable>;
  /** The `on_unavailable` setting if known without I/O. */
  cachedOnUnavailable(): OnUnavailable | null;
  /** An entity's cascade link, or `null` when there is no such entity. */
  getEntity(
    entityId: string,
  ): Promise<
    { readonly cascade: boolean; readonly parentId: string | null } | null
  >;
}

/**
 * {@linkcode LimiterSource} in memory: limits at the four levels, entities
 * with their cascade link, the outage setting. With a
 * {@linkcode MemoryBucketStore} it runs a `RateLimiter` without DynamoDB
 * (the `./testing` export). Unlike the repository it caches nothing: a
 * change is seen by the next acquire.
 *
 * @module
 */
import { bucketTtlSeconds } from "../bucket.ts";
import { systemClock } from "../clock.ts";
import type { Clock } from "../clock.ts";
import { type Limit, validateLimitList } from "../limit.ts";
import type { OnUnavailable } from "../models.ts";
import type {
  EntityInfo,
  LimiterSource,
  ResolvedLimits,
} from "../acquire/limiter_source.ts";
import type { MemoryBucketStore } from "./memory_bucket_store.ts";
import { ValidationError } from "../errors.ts";
import { validateIdentifier, validateResource } from "../validation.ts";

const DEFAULT_RESOURCE = "_default_";

/** Options of {@linkcode MemoryLimiterSource}. */
export interface MemoryLimiterSourceOptions {
  /** The clock. @default the system clock */
  readonly clock?: Clock;
  /** Namespace name (and id). @default "default" */
  readonly namespace?: string;
  /** Bucket TTL multiplier, as `Repository.open`. @default 7 */
  readonly bucketTtlMultiplier?: number;
}

/** Configuration and entities in memory (see the module documentation). */
export class MemoryLimiterSource implements LimiterSource {
  readonly clock: Clock;
  readonly namespaceId: string;
  readonly namespaceName: string;
  readonly tableName = "memory";
  readonly #store: MemoryBucketStore;
  readonly #limits = new Map<string, readonly Limit[]>();
  readonly #entities = new Map<
    string,
    { cascade: boolean; parentId: string | null }
  >();
  readonly #shards = new Map<string, Map<string, number>>();
  readonly #ttlMultiplier: number;
  #onUnavailable: OnUnavailable = "block";

  /** A source whose entities' links are mirrored into `store`. */
  constructor(
    store: MemoryBucketStore,
    options: MemoryLimiterSourceOptions = {},
  ) {
    this.#store = store;
    this.clock = options.clock ?? systemClock;
    this.namespaceName = options.namespace ?? "default";
    this.namespaceId = this.namespaceName;
    this.#ttlMultiplier = options.bucketTtlMultiplier ?? 7;
  }

  /** Limits for every entity and resource without their own. */
  setSystemDefaults(limits: readonly Limit[]): void {
    this.#set("system", limits);
  }

  /** Limits for every entity on `resource` without their own. */
  setResourceDefaults(resource: string, limits: readonly Limit[]): void {
    this.#set(`resource\u0000${validateResource(resource)}`, limits);
  }

  /** An entity's limits on `resource` (default: every resource). */
  setLimits(
    entityId: string,
    limits: readonly Limit[],
    resource: string = DEFAULT_RESOURCE,
  ): void {
    validateIdentifier(entityId);
    if (resource !== DEFAULT_RESOURCE) validateResource(resource);
    this.#set(`entity\u0000${entityId}\u0000${resource}`, limits);
  }

  /** Creates (or replaces) an entity; with `cascade`, acquires also charge the parent. */
  createEntity(
    entityId: string,
    options: { parentId?: string; cascade?: boolean } = {},
  ): void {
    validateIdentifier(entityId);
    if (options.cascade && !options.parentId) {
      throw new ValidationError(
        "cascade",
        true,
        "cascade needs a parentId",
      );
    }
    const link = {
      cascade: options.cascade ?? false,
      parentId: options.parentId ?? null,
    };
    this.#entities.set(entityId, link);
    this.#store.setLink(this.namespaceId, entityId, link);
  }

  /** What `acquire` does when the store fails (`onUnavailable` per call overrides it). */
  setOnUnavailable(mode: OnUnavailable): void {
    this.#onUnavailable = mode;
  }

  #set(slot: string, limits: readonly Limit[]): void {
    validateLimitList(limits);
    if (limits.length === 0) this.#limits.delete(slot);
    else this.#limits.set(slot, [...limits]);
  }

  resolveLimits(
    entityId: string,
    resource: string,
  ): Promise<ResolvedLimits | null> {
    return Promise.resolve(this.cachedLimits(entityId, resource));
  }

  /** {@linkcode MemoryLimiterSource.resolveLimits} without a promise (everything is in memory). */
  cachedLimits(entityId: string, resource: string): ResolvedLimits | null {
    const levels: [string, ResolvedLimits["source"]][] = [
      [`entity\u0000${entityId}\u0000${resource}`, "entity"],
      [`entity\u0000${entityId}\u0000${DEFAULT_RESOURCE}`, "entity_default"],
      [`resource\u0000${resource}`, "resource"],
      ["system", "system"],
    ];
    for (const [slot, source] of levels) {
      const limits = this.#limits.get(slot);
      if (limits) return { limits, source };
    }
    return null;
  }

  entityInfo(entityId: string): EntityInfo | undefined {
    const link = this.#entities.get(entityId);
    const shards = this.#shards.get(entityId);
    if (!link && !shards) return undefined;
    return {
      cascade: link?.cascade ?? false,
      parentId: link?.parentId ?? null,
      shards: shards ?? new Map(),
      refreshAt: Number.POSITIVE_INFINITY,
    };
  }

  rememberEntity(
    entityId: string,
    _info: { cascade: boolean; parentId: string | null },
    shard?: { resource: string; count: number },
  ): void {
    if (!shard) return;
    let m = this.#shards.get(entityId);
    if (!m) this.#shards.set(entityId, m = new Map());
    m.set(shard.resource, shard.count);
  }

  bucketTtl(resolved: ResolvedLimits, nowMs: number): number | "remove" | null {
    if (resolved.source === "entity") return "remove";
    const s = bucketTtlSeconds(resolved.limits, this.#ttlMultiplier);
    if (s === null) return null;
    return Math.floor(nowMs / 1000) + Math.max(s, 120);
  }

  resolveOnUnavailable(): Promise<OnUnavailable> {
    return Promise.resolve(this.#onUnavailable);
  }

  cachedOnUnavailable(): OnUnavailable | null {
    return this.#onUnavailable;
  }

  getEntity(
    entityId: string,
  ): Promise<{ cascade: boolean; parentId: string | null } | null> {
    return Promise.resolve(this.#entities.get(entityId) ?? null);
  }
}

/**
 * The repository: the library's DynamoDB access bound to one namespace, a
 * thin facade over the stores in `core/store/` (namespaces, version record,
 * configs, entities, audit log, usage, bucket maintenance). It opens the
 * table, resolves the namespace and enforces the version gate; the
 * low-level I/O (typed send, batch helpers) is reached through
 * `tableOf(repo)` in `core/store/table.ts`.
 *
 * @module
 */
import type { LimiterSource } from "./acquire/limiter_source.ts";
import type { BucketItem } from "./bucket_item.ts";
import type { Clock } from "./clock.ts";
import { NamespaceNotFoundError } from "./errors.ts";
import {
  DEFAULT_NAMESPACE,
  DEFAULT_RESOURCE,
  isUnprefixedKey,
  pkBucket,
} from "./keys.ts";
import type { Limit } from "./limit.ts";
import type {
  AuditActionName,
  AuditEvent,
  CacheStats,
  Entity,
  NamespaceInfo,
  OnUnavailable,
  UsageSnapshot,
  UsageSnapshotFilter,
} from "./models.ts";
import {
  type RepositoryOptions,
  type ResolvedRepositoryConfig,
  resolveRepositoryConfig,
} from "./repository_config.ts";
import type {
  ResourceCapacity,
  ResourceCapacityOptions,
} from "./resource_capacity.ts";
import { type DeadlineOptions, withDeadline } from "./transport.ts";
import { validateNamespaceName, validateStackName } from "./validation.ts";
import type { VersionRecord } from "./version.ts";
import { AuditLog } from "./store/audit_log.ts";
import { BucketAdmin } from "./store/bucket_admin.ts";
import {
  ConfigStore,
  type ConfigTarget,
  type ResolvedLimits,
} from "./store/config_store.ts";
import type { EntityInfo } from "./store/entity_cache.ts";
import { type CreateEntityOptions, EntityStore } from "./store/entity_store.ts";
import { NamespaceStore } from "./store/namespace_store.ts";
import { bindTable, type DynamoDbClientLike } from "./store/table.ts";
import {
  createTableIfMissing,
  deleteTableIfExists,
  pingTable,
} from "./store/table_admin.ts";
import { readUsageSnapshots } from "./store/usage_reader.ts";
import {
  readVersionRecord,
  writeVersionRecord,
} from "./store/version_record.ts";
import { bootstrapNamespace, openError } from "./store/bootstrap.ts";

export type { DynamoDbClientLike } from "./store/table.ts";
export type { EntityInfo, ResolvedLimits } from "./acquire/limiter_source.ts";
export type { CreateEntityOptions } from "./store/entity_store.ts";
export type { RepositoryOptions } from "./repository_config.ts";

/**
 * All DynamoDB I/O of one namespace. Open with {@linkcode Repository.open};
 * {@linkcode Repository.namespace} gives a sibling bound to another namespace
 * that shares the client and the entity cache.
 */
export class Repository implements LimiterSource {
  readonly #s: ResolvedRepositoryConfig;
  /** Namespace name. */
  readonly namespaceName: string;
  /** Opaque namespace id (the key prefix). */
  readonly namespaceId: string;
  readonly #namespaces: NamespaceStore;
  readonly #buckets: BucketAdmin;
  readonly #audit: AuditLog;
  readonly #config: ConfigStore;
  readonly #entities: EntityStore;

  /** Use {@linkcode Repository.open} (or {@linkcode Repository.namespace}). */
  private constructor(
    shared: ResolvedRepositoryConfig,
    namespaceName: string,
    namespaceId: string,
  ) {
    this.#s = shared;
    bindTable(this, shared.io);
    this.namespaceName = namespaceName;
    this.namespaceId = namespaceId;
    const io = shared.io;
    this.#namespaces = new NamespaceStore(io, shared.namespaceIds);
    this.#buckets = new BucketAdmin(io, namespaceId, {
      cache: shared.entityCache,
      ttlMultiplier: shared.bucketTtlMultiplier,
      refreshSeconds: Math.max(1, shared.configCacheTtlSeconds),
    });
    this.#audit = new AuditLog(io, namespaceId, {
      ulid: shared.ulid,
      principal: shared.principal,
      retentionDays: () => this.#config.auditRetentionDays(),
      defaultRetentionDays: shared.auditRetentionDays,
    });
    this.#config = new ConfigStore(io, namespaceId, {
      cacheTtlSeconds: shared.configCacheTtlSeconds,
      audit: this.#audit,
      buckets: this.#buckets,
    });
    this.#entities = new EntityStore(io, namespaceId, {
      cache: shared.entityCache,
      audit: this.#audit,
      config: this.#config,
      buckets: this.#buckets,
    });
  }

  /**
   * Opens a repository: checks the table (creating it only with `provision`),
   * resolves the namespace (registering it only with `registerNamespace`, or
   * on a table this call created), and checks version compatibility. Without
   * `provision` or `registerNamespace` it writes nothing.
   * @throws {InfrastructureNotFoundError} the table is missing and `provision` is off
   * @throws {NamespaceNotFoundError} the namespace is not registered
   * @throws {IncompatibleSchemaError} the table needs a migration
   * @throws {MinimumClientVersionError} the table requires a newer client
   */
  static async open(options: RepositoryOptions): Promise<Repository> {
    try {
      return await Repository.#open(options);
    } catch (e) {
      throw openError(e, options.stack ?? "zae-limiter");
    }
  }

  static async #open(options: RepositoryOptions): Promise<Repository> {
    const table = validateStackName(options.stack ?? "zae-limiter", "stack");
    const nsName = validateNamespaceName(
      options.namespace ?? DEFAULT_NAMESPACE,
    );
    const shared = resolveRepositoryConfig(table, options);
    const nsId = await bootstrapNamespace(shared.io, shared.namespaceIds, {
      ...options,
      namespace: nsName,
    });
    return new Repository(shared, nsName, nsId);
  }

  /** Table (= stack) name. */
  get tableName(): string {
    return this.#s.io.name;
  }
  /** The SDK client. */
  get client(): DynamoDbClientLike {
    return this.#s.io.client;
  }
  /** The clock. */
  get clock(): Clock {
    return this.#s.io.clock;
  }
  /**
   * The bucket TTL policy (spec 02 §9): `"remove"` for entity-level limits,
   * `null` (leave as is) when the multiplier is ≤ 0, else an epoch second.
   */
  bucketTtl(resolved: ResolvedLimits, nowMs: number): number | "remove" | null {
    return this.#buckets.ttl(resolved, nowMs);
  }

  /** How often cached entity and config data are re-checked, in seconds. */
  get refreshIntervalSeconds(): number {
    return Math.max(1, this.#s.configCacheTtlSeconds);
  }

  /** Bucket TTL multiplier. */
  get bucketTtlMultiplier(): number {
    return this.#s.bucketTtlMultiplier;
  }

  /**
   * A repository bound to another registered namespace, sharing the client
   * and the entity cache, with its own config cache.
   * @throws {NamespaceNotFoundError} when the name is not registered
   */
  async namespace(name: string): Promise<Repository> {
    validateNamespaceName(name);
    let id = this.#s.namespaceIds.get(name);
    if (id === undefined) {
      const info = await this.getNamespace(name);
      if (!info) throw new NamespaceNotFoundError(name);
      id = info.namespaceId;
      this.#s.namespaceIds.set(name, id);
    }
    return new Repository(this.#s, name, id);
  }

  /**
   * Runs `fn` with a deadline: every DynamoDB command it sends carries the
   * signal, and the call fails (with an abort error) once `timeoutMs` has
   * passed or `signal` aborted.
   */
  withDeadline<T>(
    options: DeadlineOptions,
    fn: () => Promise<T>,
  ): Promise<T> {
    return withDeadline(options, this.#s.timeoutMs, () => fn());
  }

  /** The clock-sync bounds `[lo, hi]` in ms (local + offset = DynamoDB time), or `null` when off. */
  get clockOffsetBounds(): readonly [number, number] | null {
    return this.#s.clockSync?.bounds ?? null;
  }

  /** Creates the table (schema 0.10) and enables TTL; an existing table is left as is. */
  createTable(): Promise<void> {
    return createTableIfMissing(this.#s.io);
  }

  /** Deletes the table; a missing table is ignored. */
  deleteTable(): Promise<void> {
    return deleteTableIfExists(this.#s.io);
  }

  /** Whether DynamoDB answers for this table within `timeoutMs`; never throws. */
  ping(timeoutMs = 1000): Promise<boolean> {
    return pingTable(this.#s.io, timeoutMs);
  }

  /**
   * Registers a namespace name and returns its id; idempotent.
   * @throws {ValidationError} for `_` or a malformed name
   */
  registerNamespace(name: string): Promise<string> {
    return this.#namespaces.registerNamespace(name);
  }

  /** The active namespace of that name, or `null`. */
  getNamespace(name: string): Promise<NamespaceInfo | null> {
    return this.#namespaces.getNamespace(name);
  }

  /** Every active namespace, sorted by name. */
  listNamespaces(): Promise<NamespaceInfo[]> {
    return this.#namespaces.listNamespaces();
  }

  /** Soft-deletes a namespace (its data stays until purged); unknown names are ignored. */
  deleteNamespace(name: string): Promise<void> {
    return this.#namespaces.deleteNamespace(name);
  }

  /**
   * Recovers a soft-deleted namespace by id and returns its name.
   * @throws {EntityNotFoundError} no such id
   * @throws {NamespaceStateError} active, purging, or the name was registered again
   */
  recoverNamespace(namespaceId: string): Promise<string> {
    return this.#namespaces.recoverNamespace(namespaceId);
  }

  /** Soft-deleted namespaces that can be recovered or purged. */
  listOrphanNamespaces(): Promise<NamespaceInfo[]> {
    return this.#namespaces.listOrphanNamespaces();
  }

  /**
   * Deletes every item of a soft-deleted namespace (GSI4), then its registry record.
   * Returns the number of items deleted.
   * @throws {NamespaceStateError} when the namespace is active
   */
  purgeNamespace(
    namespaceId: string,
    onProgress?: (deleted: number) => void,
  ): Promise<number> {
    return this.#namespaces.purgeNamespace(namespaceId, onProgress);
  }

  /** The version record, or `null` when the table has none. */
  getVersionRecord(): Promise<VersionRecord | null> {
    return readVersionRecord(this.#s.io);
  }

  /** Writes the version record (unconditional Put, as the reference). */
  setVersionRecord(
    record: Partial<VersionRecord> & { readonly schemaVersion: string },
  ): Promise<void> {
    return writeVersionRecord(this.#s.io, record);
  }

  /**
   * Resolves the stored limits of an entity and resource through the four
   * levels (entity+resource, entity default, resource default, system), one
   * BatchGetItem for the levels not in the cache; `null` when none is set.
   */
  resolveLimits(
    entityId: string,
    resource: string,
    options: { fresh?: boolean } = {},
  ): Promise<ResolvedLimits | null> {
    return this.#config.resolveLimits(entityId, resource, options);
  }

  /** {@linkcode Repository.resolveLimits} from the config cache alone; `undefined` when a level is not cached. */
  cachedLimits(
    entityId: string,
    resource: string,
  ): ResolvedLimits | null | undefined {
    return this.#config.cachedLimits(entityId, resource);
  }

  /** `on_unavailable` from the system config (cached); the last known value or `block` on failure; never throws. */
  resolveOnUnavailable(): Promise<OnUnavailable> {
    return this.#config.resolveOnUnavailable();
  }

  /** The cached `on_unavailable`, without I/O (`null` when unknown). */
  cachedOnUnavailable(): OnUnavailable | null {
    return this.#config.cachedOnUnavailable();
  }

  /** Clears the config cache and the remembered `on_unavailable`. */
  invalidateConfigCache(): void {
    this.#config.invalidate();
  }

  /** Config cache counters. */
  getCacheStats(): CacheStats {
    return this.#config.stats();
  }

  /** Cached cascade/parent/shard info of an entity, or `undefined`. */
  entityInfo(entityId: string): EntityInfo | undefined {
    return this.#s.entityCache.get(this.namespaceId, entityId);
  }

  /** Updates the cached cascade/parent and (optionally) one resource's shard count. */
  rememberEntity(
    entityId: string,
    info: { cascade: boolean; parentId: string | null },
    shard?: { resource: string; count: number },
  ): void {
    this.#s.entityCache.remember(this.namespaceId, entityId, {
      ...info,
      shard,
    });
  }

  /** Forgets an entity's cached info. */
  forgetEntity(entityId: string): void {
    this.#s.entityCache.forget(this.namespaceId, entityId);
  }

  /** Reads one bucket item (strongly consistent), or `null`. */
  getBucketItem(
    entityId: string,
    resource: string,
    shard = 0,
  ): Promise<BucketItem | null> {
    return this.#buckets.item(entityId, resource, shard);
  }

  /** Every bucket item of an entity (all resources and shards), through GSI3. */
  getEntityBuckets(entityId: string): Promise<BucketItem[]> {
    return this.#buckets.ofEntity(entityId);
  }

  /**
   * Deletes the bucket items of one entity (one resource, or all): they are
   * recreated full on the next acquire. Returns the number deleted.
   */
  resetBuckets(entityId: string, resource?: string): Promise<number> {
    return this.#buckets.reset(entityId, resource);
  }

  /**
   * Capacity of a resource summed across the entities holding a bucket for
   * it, per limit (entities, total capacity, tokens available now), read
   * page by page from GSI2 (eventually consistent; entities without a bucket
   * are not counted). Options: `limitName`, `parentsOnly`, `pageSize`,
   * `signal`, `onEntity`, `onPage`.
   * @throws {InvalidNameError} bad resource or limit name
   */
  getResourceCapacity(
    resource: string,
    options: ResourceCapacityOptions = {},
  ): Promise<ResourceCapacity> {
    return this.#buckets.capacity(resource, options);
  }

  /** Writes an audit event; returns it. */
  audit(
    action: AuditActionName,
    entityId: string,
    options: {
      resource?: string | null;
      details?: Record<string, unknown>;
      principal?: string;
    } = {},
  ): Promise<AuditEvent> {
    return this.#audit.write(action, entityId, options);
  }

  /**
   * Usage snapshots of an entity (its partition) or of a resource (GSI2),
   * in key order, optionally of one window type and a range of window
   * starts; at most `limit`, with `more` when others match.
   * @throws {ValidationError} when neither `entityId` nor `resource` is given
   */
  getUsageSnapshots(
    filter: UsageSnapshotFilter,
  ): Promise<{ snapshots: UsageSnapshot[]; more: boolean }> {
    return readUsageSnapshots(this.#s.io, {
      ...filter,
      namespaceId: this.namespaceId,
    });
  }

  /** Audit events of an entity, newest first; `startEventId` is exclusive. */
  getAuditEvents(
    entityId: string,
    options: { limit?: number; startEventId?: string } = {},
  ): Promise<AuditEvent[]> {
    return this.#audit.events(entityId, options);
  }

  /**
   * Creates an entity, refreshes the cascade flags of buckets that already
   * exist for it (reference weakness 30), and writes an `entity_created` event.
   * @throws {InvalidIdentifierError} bad id, parent id or principal
   * @throws {ValidationError} `cascade` without a parent, a parent equal to
   * the entity, or a display name or metadata over the size limits (checked
   * before anything is written)
   * @throws {EntityExistsError} the entity exists
   */
  createEntity(
    entityId: string,
    options: CreateEntityOptions = {},
  ): Promise<Entity> {
    return this.#entities.create(entityId, options);
  }

  /** The entity, or `null`. */
  getEntity(entityId: string): Promise<Entity | null> {
    return this.#entities.get(entityId);
  }

  /** Children of a parent (all pages). */
  getChildren(parentId: string): Promise<Entity[]> {
    return this.#entities.children(parentId);
  }

  /**
   * Deletes an entity with its configs, usage snapshots and every bucket
   * shard (all pages, unprocessed items retried; reference weakness 33).
   * Audit history is kept (it expires by TTL). Returns the items deleted.
   * @throws {ValidationError} when the entity still has children
   */
  deleteEntity(
    entityId: string,
    options: { principal?: string } = {},
  ): Promise<number> {
    return this.#entities.delete(entityId, options);
  }

  /**
   * Stores an entity's limits for a resource (`_default_`: all resources),
   * updates the registry, syncs the bucket's parameters and removes its TTL,
   * evicts the cache and writes a `limits_set` event.
   * @throws {ValidationError} bad id, resource or limits
   */
  setLimits(
    entityId: string,
    limits: readonly Limit[],
    options: { resource?: string; principal?: string } = {},
  ): Promise<void> {
    return this.#config.set(entityTarget(entityId, options), limits, options);
  }

  /** An entity's stored limits for a resource (`[]` when none; strongly consistent). */
  getLimits(
    entityId: string,
    options: { resource?: string } = {},
  ): Promise<Limit[]> {
    return this.#config.get(entityTarget(entityId, options));
  }

  /**
   * Deletes an entity's limits for a resource, reconciles the bucket to the
   * limits now in effect, and writes `limits_deleted`; a missing config is a no-op.
   */
  deleteLimits(
    entityId: string,
    options: { resource?: string; principal?: string } = {},
  ): Promise<void> {
    return this.#config.delete(entityTarget(entityId, options), options);
  }

  /** Entity ids with custom limits for a resource (GSI3, all pages). */
  listEntitiesWithCustomLimits(resource: string): Promise<string[]> {
    return this.#config.registry.listEntitiesWithCustomLimits(resource);
  }

  /** Resources that have at least one entity config. */
  listResourcesWithEntityConfigs(): Promise<string[]> {
    return this.#config.registry.listResourcesWithEntityConfigs();
  }

  /** Stores resource-level default limits and writes an audit event for `$RESOURCE:{resource}`. */
  setResourceDefaults(
    resource: string,
    limits: readonly Limit[],
    options: { principal?: string } = {},
  ): Promise<void> {
    return this.#config.set({ level: "resource", resource }, limits, options);
  }

  /** Resource-level default limits (`[]` when none). */
  getResourceDefaults(resource: string): Promise<Limit[]> {
    return this.#config.get({ level: "resource", resource });
  }

  /** Deletes resource-level defaults and writes an audit event. */
  deleteResourceDefaults(
    resource: string,
    options: { principal?: string } = {},
  ): Promise<void> {
    return this.#config.delete({ level: "resource", resource }, options);
  }

  /** Resources with resource-level defaults, sorted. */
  listResourcesWithDefaults(): Promise<string[]> {
    return this.#config.registry.listResourcesWithDefaults();
  }

  /**
   * Replaces the system defaults (limits and `onUnavailable`), keeping the
   * stored `audit_retention_days` (reference weakness 19).
   * @throws {ValidationError} bad limits, `onUnavailable` or
   * `auditRetentionDays`; an empty list (call
   * {@linkcode Repository.deleteSystemDefaults} to remove the system defaults)
   */
  setSystemDefaults(
    limits: readonly Limit[],
    options: {
      onUnavailable?: OnUnavailable;
      auditRetentionDays?: number;
      principal?: string;
    } = {},
  ): Promise<void> {
    return this.#config.set({ level: "system" }, limits, options);
  }

  /** System defaults: limits, `onUnavailable` and `auditRetentionDays`. */
  getSystemDefaults(): Promise<
    {
      limits: Limit[];
      onUnavailable: OnUnavailable | null;
      auditRetentionDays: number | null;
    }
  > {
    return this.#config.getSystem();
  }

  /** Deletes the system defaults and writes an audit event. */
  deleteSystemDefaults(
    options: { principal?: string } = {},
  ): Promise<void> {
    return this.#config.delete({ level: "system" }, options);
  }

  /** Whether any partition key in the first `sample` items of a scan is unprefixed (pre-0.10 data). */
  static looksLegacy(keys: readonly string[]): boolean {
    return keys.some((k) => isUnprefixedKey(k));
  }

  /** Bucket PK helper for callers outside the repository. */
  bucketPk(entityId: string, resource: string, shard = 0): string {
    return pkBucket(this.namespaceId, entityId, resource, shard);
  }
}

/** The config target of an entity's limits for `options.resource` (default: all resources). */
function entityTarget(
  entityId: string,
  options: { resource?: string },
): ConfigTarget {
  return {
    level: "entity",
    entityId,
    resource: options.resource ?? DEFAULT_RESOURCE,
  };
}

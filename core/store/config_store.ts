/**
 * The config store: stored limits at the three levels (entity + resource,
 * resource default, system default) written, read and deleted by one
 * implementation, the four-level resolution (spec 02 §8) through the config
 * cache; it keeps the registries of what is configured up to date.
 *
 * @module
 */
import {
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
} from "@aws-sdk/client-dynamodb";
import { BoundedMap } from "../_bounded_map.ts";
import { isConditionFailed } from "../_sdk_errors.ts";
import { ConfigCache, type ConfigSlot } from "../config_cache.ts";
import { ValidationError } from "../errors.ts";
import { type Item, num, str } from "../expr.ts";
import {
  DEFAULT_RESOURCE,
  gsi3PkEntityConfig,
  pkEntity,
  pkResource,
  pkSystem,
  SK,
  skConfig,
} from "../keys.ts";
import { type Limit, validateLimitList } from "../limit.ts";
import type { CacheStats, ConfigSource, OnUnavailable } from "../models.ts";
import { validateIdentifier, validatePrincipal } from "../validation.ts";
import { untilAborted } from "../transport.ts";
import type { ResolvedLimits } from "../acquire/limiter_source.ts";
import type { AuditLog } from "./audit_log.ts";
import {
  limitAttrs,
  limitsFromItem,
  slotFrom,
  slotKey,
} from "./config_item.ts";
import { ConfigRegistry } from "./config_registry.ts";
import type { TableClient } from "./table.ts";
import {
  auditSubject,
  type ConfigTarget,
  type SetConfigOptions,
  validateSystemOptions,
  validateTarget,
} from "./config_target.ts";

export type { ResolvedLimits };
export type { ConfigTarget, SetConfigOptions };

/** What a config change does to the bucket of an entity and resource. */
export interface ConfigBucketHooks {
  /** Sets the shard-0 bucket's parameters to `limits` (and removes `stale` limits). */
  settle(
    entityId: string,
    resource: string,
    change: {
      limits: readonly Limit[];
      ttl: number | "remove" | null;
      stale: readonly string[];
    },
  ): Promise<void>;
  /** The TTL a bucket under `resolved` gets now. */
  ttl(resolved: ResolvedLimits, nowMs: number): number | "remove" | null;
}

/** Where the call to remove a level's limits is named, for the empty-list error. */
const DELETE_HINT = {
  entity: "give at least one limit, or use deleteLimits to remove them",
  resource: "give at least one limit, or use deleteResourceDefaults",
  system:
    "give at least one limit, or use deleteSystemDefaults to remove the system defaults",
} as const;

interface Level {
  readonly key: Item;
  readonly slot: string;
  readonly source: ConfigSource;
}

/** The levels of an entity and resource, most specific first, and their cache slots. */
interface Levels {
  readonly list: readonly Level[];
  readonly slots: readonly string[];
}

/** The most specific level that sets limits, or `null`. */
function pickLevel(
  levels: readonly Level[],
  slots: readonly (ConfigSlot | undefined)[],
): ResolvedLimits | null {
  const i = slots.findIndex((s) => s !== undefined && s.limits.length > 0);
  const [s, l] = [slots[i], levels[i]];
  return s && l ? { limits: s.limits, source: l.source } : null;
}

/** Stored limits of one namespace, with its config cache. */
export class ConfigStore {
  readonly #io: TableClient;
  readonly #ns: string;
  readonly #cache: ConfigCache;
  readonly #inflight = new Map<string, Promise<void>>();
  /** The levels of an entity and resource (keys and slots), built once. */
  readonly #levelsMemo = new BoundedMap<string, Levels>(10_000);
  /** The registries this store keeps up to date. */
  readonly registry: ConfigRegistry;
  readonly #buckets: ConfigBucketHooks;
  readonly #audit: AuditLog;
  #lastOnUnavailable: OnUnavailable | null = null;

  /** The store of namespace id `ns` on `io`, caching for `cacheTtlSeconds` (0: off). */
  constructor(
    io: TableClient,
    ns: string,
    options: {
      cacheTtlSeconds: number;
      buckets: ConfigBucketHooks;
      audit: AuditLog;
    },
  ) {
    this.#io = io;
    this.#ns = ns;
    this.#cache = new ConfigCache(io.clock, options.cacheTtlSeconds);
    this.#buckets = options.buckets;
    this.#audit = options.audit;
    this.registry = new ConfigRegistry(io, ns);
  }

  #key(target: ConfigTarget): { PK: { S: string }; SK: { S: string } } {
    switch (target.level) {
      case "entity":
        return {
          PK: { S: pkEntity(this.#ns, target.entityId) },
          SK: { S: skConfig(target.resource) },
        };
      case "resource":
        return {
          PK: { S: pkResource(this.#ns, target.resource) },
          SK: { S: SK.CONFIG },
        };
      case "system":
        return { PK: { S: pkSystem(this.#ns) }, SK: { S: SK.CONFIG } };
    }
  }

  #slot(target: ConfigTarget): string {
    const k = this.#key(target);
    return slotKey(k.PK.S, k.SK.S);
  }

  // ------------------------------------------------------------ resolution

  #levels(entityId: string, resource: string): Levels {
    const memo = `${entityId}\u0000${resource}`;
    let levels = this.#levelsMemo.get(memo);
    if (!levels) {
      const list = this.#levelsOf(entityId, resource);
      levels = { list, slots: list.map((l) => l.slot) };
      this.#levelsMemo.set(memo, levels);
    }
    return levels;
  }

  #levelsOf(entityId: string, resource: string): readonly Level[] {
    const targets: [ConfigTarget, ConfigSource][] = [
      [{ level: "entity", entityId, resource }, "entity"],
    ];
    if (resource !== DEFAULT_RESOURCE) {
      targets.push([
        { level: "entity", entityId, resource: DEFAULT_RESOURCE },
        "entity_default",
      ]);
    }
    targets.push([{ level: "resource", resource }, "resource"]);
    targets.push([{ level: "system" }, "system"]);
    return targets.map(([t, source]) => ({
      key: this.#key(t),
      slot: this.#slot(t),
      source,
    }));
  }

  async #fill(
    levels: readonly { key: Item; slot: string }[],
  ): Promise<Map<string, ConfigSlot>> {
    const found = new Map<string, ConfigSlot>();
    const missing: { key: Item; slot: string }[] = [];
    for (const l of levels) {
      const v = this.#cache.get(l.slot);
      if (v) found.set(l.slot, v);
      else missing.push(l);
    }
    if (missing.length === 0) return found;
    const waitFor: Promise<void>[] = [];
    const toFetch: { key: Item; slot: string }[] = [];
    for (const m of missing) {
      const p = this.#inflight.get(m.slot);
      if (p) waitFor.push(p);
      else toFetch.push(m);
    }
    const fetched = new Map<string, ConfigSlot>();
    if (toFetch.length > 0) {
      const run = (async () => {
        const items = await this.#io.batchGet(
          toFetch.map((m) => m.key),
          false,
        );
        const bySlot = new Map(
          items.map((
            i,
          ) => [slotKey(str(i, "PK") ?? "", str(i, "SK") ?? ""), i]),
        );
        for (const m of toFetch) {
          const slot = slotFrom(bySlot.get(m.slot));
          fetched.set(m.slot, slot);
          this.#cache.set(m.slot, slot);
        }
      })();
      for (const m of toFetch) this.#inflight.set(m.slot, run);
      try {
        await run;
      } finally {
        for (const m of toFetch) this.#inflight.delete(m.slot);
      }
    }
    // Bounded by this call's own deadline, not by the one that started the read.
    if (waitFor.length > 0) await untilAborted(Promise.all(waitFor));
    for (const m of missing) {
      const v = fetched.get(m.slot) ?? this.#cache.get(m.slot);
      // With caching disabled the concurrent fetch left nothing behind: read again.
      found.set(
        m.slot,
        v ?? slotFrom((await this.#io.batchGet([m.key], false))[0]),
      );
    }
    return found;
  }

  /** The system level's slot through the cache. */
  async #systemSlot(): Promise<ConfigSlot | undefined> {
    const target: ConfigTarget = { level: "system" };
    const slot = this.#slot(target);
    const slots = await this.#fill([{ key: this.#key(target), slot }]);
    return slots.get(slot);
  }

  /**
   * Resolves the stored limits of an entity and resource through the four
   * levels (entity+resource, entity default, resource default, system), one
   * BatchGetItem for the levels not in the cache; `null` when none is set.
   */
  async resolveLimits(
    entityId: string,
    resource: string,
    options: { fresh?: boolean } = {},
  ): Promise<ResolvedLimits | null> {
    const { list: levels, slots: keys } = this.#levels(entityId, resource);
    // Every level cached (the warm path): no fill, one clock read.
    let slots: readonly (ConfigSlot | undefined)[] | null = options.fresh
      ? null
      : this.#cache.getAll(keys);
    if (options.fresh) { for (const l of levels) this.#cache.evict(l.slot); }
    if (!slots) {
      const filled = await this.#fill(levels);
      slots = keys.map((k) => filled.get(k));
    }
    return pickLevel(levels, slots);
  }

  /** {@linkcode ConfigStore.resolveLimits} from the cache alone; `undefined` when a level is not cached. */
  cachedLimits(
    entityId: string,
    resource: string,
  ): ResolvedLimits | null | undefined {
    const { list: levels, slots: keys } = this.#levels(entityId, resource);
    const slots = this.#cache.getAll(keys);
    return slots ? pickLevel(levels, slots) : undefined;
  }

  /** `on_unavailable` from the system config (cached); the last known value or `block` on failure; never throws. */
  async resolveOnUnavailable(): Promise<OnUnavailable> {
    try {
      const v = (await this.#systemSlot())?.onUnavailable ?? null;
      if (v) this.#lastOnUnavailable = v;
      return v ?? this.#lastOnUnavailable ?? "block";
    } catch {
      return this.#lastOnUnavailable ?? "block";
    }
  }

  /** The cached `on_unavailable`, without I/O (`null` when unknown). */
  cachedOnUnavailable(): OnUnavailable | null {
    return this.#cache.get(this.#slot({ level: "system" }))?.onUnavailable ??
      this.#lastOnUnavailable;
  }

  /** The stored audit retention (cached), or `null`; rejects when the read fails. */
  async auditRetentionDays(): Promise<number | null> {
    return (await this.#systemSlot())?.auditRetentionDays ?? null;
  }

  /** Clears the config cache and the remembered `on_unavailable`. */
  invalidate(): void {
    this.#cache.clear();
    this.#lastOnUnavailable = null;
  }

  /** Forgets the cached config of one target. */
  evict(target: ConfigTarget): void {
    this.#cache.evict(this.#slot(target));
  }

  /** Config cache counters. */
  stats(): CacheStats {
    return this.#cache.stats();
  }

  // ------------------------------------------------------------ stored limits

  /** The stored item of a target (strongly consistent), or `undefined`. */
  async #read(target: ConfigTarget): Promise<Item | undefined> {
    const out = await this.#io.client.send(
      new GetItemCommand({
        TableName: this.#io.name,
        Key: this.#key(target),
        ConsistentRead: true,
      }),
    );
    return out.Item;
  }

  /** The stored limits of a target (`[]` when none; an entity's resource is not checked). */
  async get(target: ConfigTarget): Promise<Limit[]> {
    if (target.level === "entity") validateIdentifier(target.entityId);
    else validateTarget(target);
    return limitsFromItem(await this.#read(target));
  }

  /** System defaults: limits, `onUnavailable` and `auditRetentionDays`. */
  async getSystem(): Promise<
    {
      limits: Limit[];
      onUnavailable: OnUnavailable | null;
      auditRetentionDays: number | null;
    }
  > {
    const slot = slotFrom(await this.#read({ level: "system" }));
    return {
      limits: [...slot.limits],
      onUnavailable: slot.onUnavailable,
      auditRetentionDays: slot.auditRetentionDays,
    };
  }

  /**
   * Stores a target's limits (replacing them), updates the level's registry,
   * settles an entity's bucket for the resource, evicts the cache and writes
   * a `limits_set` event. The system level keeps the stored
   * `audit_retention_days` unless given (reference weakness 19).
   *
   * @throws {ValidationError} bad names, limits, `onUnavailable` or
   * `auditRetentionDays`, or an empty list
   */
  async set(
    target: ConfigTarget,
    limits: readonly Limit[],
    options: SetConfigOptions = {},
  ): Promise<void> {
    validateTarget(target);
    validateLimitList(limits);
    if (limits.length === 0) {
      throw new ValidationError("limits", "[]", DELETE_HINT[target.level]);
    }
    if (target.level === "system") validateSystemOptions(options);
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.#ns;
    const key = this.#key(target);
    const item: Item = { ...key };
    switch (target.level) {
      case "entity":
        item["entity_id"] = { S: target.entityId };
        item["resource"] = { S: target.resource };
        break;
      case "resource":
        item["resource"] = { S: target.resource };
        break;
      case "system":
        break;
    }
    Object.assign(item, {
      "config_version": { N: "1" },
      ...limitAttrs(limits),
    });
    if (target.level === "entity") {
      item["GSI3PK"] = { S: gsi3PkEntityConfig(ns, target.resource) };
      item["GSI3SK"] = { S: target.entityId };
    }
    item["GSI4PK"] = { S: ns };
    item["GSI4SK"] = key.PK;
    switch (target.level) {
      case "entity":
        await this.registry.putEntityConfig(item, target.resource);
        if (target.resource !== DEFAULT_RESOURCE) {
          await this.#buckets.settle(target.entityId, target.resource, {
            limits,
            ttl: "remove",
            stale: [],
          });
        }
        break;
      case "resource":
        await this.#put(item);
        await this.registry.updateResources("ADD", target.resource);
        break;
      case "system": {
        const current = await this.#read(target);
        const retention = options.auditRetentionDays ??
          (current ? num(current, "audit_retention_days") : null);
        if (options.onUnavailable) {
          item["on_unavailable"] = { S: options.onUnavailable };
        }
        if (retention !== null) {
          item["audit_retention_days"] = { N: String(retention) };
        }
        await this.#put(item);
        break;
      }
    }
    this.evict(target);
    if (target.level === "system" && options.onUnavailable) {
      this.#lastOnUnavailable = options.onUnavailable;
    }
    const details: Record<string, unknown> = {
      limits: limits.map((l) => l.toDict()),
    };
    if (target.level === "system") {
      details["on_unavailable"] = options.onUnavailable ?? null;
    }
    await this.#audit.write("limits_set", auditSubject(target), {
      ...(target.level === "system" ? {} : { resource: target.resource }),
      details,
      ...(principal !== undefined ? { principal } : {}),
    });
  }

  /**
   * Deletes a target's limits, updates the level's registry, evicts the
   * cache and writes `limits_deleted`. An entity's missing config is a
   * no-op; otherwise its bucket is reconciled to the limits now in effect.
   */
  async delete(
    target: ConfigTarget,
    options: { principal?: string } = {},
  ): Promise<void> {
    validateTarget(target);
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const by = principal !== undefined ? { principal } : {};
    const key = this.#key(target);
    switch (target.level) {
      case "entity": {
        const old = limitsFromItem(await this.#read(target));
        try {
          await this.#io.client.send(
            new DeleteItemCommand({
              TableName: this.#io.name,
              Key: key,
              ConditionExpression: "attribute_exists(PK)",
            }),
          );
        } catch (e) {
          if (isConditionFailed(e)) return;
          throw e;
        }
        await this.registry.decrementEntityConfigs(target.resource);
        this.evict(target);
        await this.#audit.write("limits_deleted", target.entityId, {
          resource: target.resource,
          details: { limits: old.map((l) => l.name) },
          ...by,
        });
        await this.#reconcile(target.entityId, target.resource, old);
        return;
      }
      case "resource":
        await this.#delete(key);
        await this.registry.updateResources("DELETE", target.resource);
        this.evict(target);
        await this.#audit.write("limits_deleted", auditSubject(target), {
          resource: target.resource,
          ...by,
        });
        return;
      case "system": {
        const old = await this.getSystem();
        await this.#delete(key);
        this.evict(target);
        await this.#audit.write("limits_deleted", auditSubject(target), {
          details: {
            limits: old.limits.map((l) => l.name),
            "on_unavailable": old.onUnavailable,
          },
          ...by,
        });
        return;
      }
    }
  }

  async #put(item: Item): Promise<void> {
    await this.#io.client.send(
      new PutItemCommand({ TableName: this.#io.name, Item: item }),
    );
  }

  async #delete(key: Item): Promise<void> {
    await this.#io.client.send(
      new DeleteItemCommand({ TableName: this.#io.name, Key: key }),
    );
  }

  /** After an entity's config is deleted: the bucket follows the limits now in effect. */
  async #reconcile(
    entityId: string,
    resource: string,
    old: readonly Limit[],
  ): Promise<void> {
    if (resource === DEFAULT_RESOURCE) return;
    const effective = await this.resolveLimits(entityId, resource);
    if (!effective) return;
    const names = new Set(effective.limits.map((l) => l.name));
    await this.#buckets.settle(entityId, resource, {
      limits: effective.limits,
      ttl: this.#buckets.ttl(effective, this.#io.clock.now()) ?? "remove",
      stale: old.map((l) => l.name).filter((n) => !names.has(n)),
    });
  }
}

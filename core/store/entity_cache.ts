/**
 * The entity cache: what the limiter knows about an entity without reading
 * it (cascade flag, parent, shard counts), shared by every namespace of an
 * open repository, bounded, with the oldest entry evicted first.
 *
 * @module
 */
import type { EntityInfo } from "../acquire/limiter_source.ts";
import { BoundedMap } from "../_bounded_map.ts";
import type { Clock } from "../clock.ts";

export type { EntityInfo };

/** Options of {@linkcode EntityCache}. */
export interface EntityCacheOptions {
  /** Clock for `refreshAt`. */
  readonly clock: Clock;
  /** Maximum entries. */
  readonly size: number;
  /** How long an entry is trusted, in seconds. */
  readonly refreshSeconds: number;
}

/** Entity info keyed by namespace id and entity id. */
export class EntityCache {
  readonly #entries: BoundedMap<string, EntityInfo>;
  readonly #options: EntityCacheOptions;

  /** An empty cache. */
  constructor(options: EntityCacheOptions) {
    this.#options = options;
    this.#entries = new BoundedMap(options.size);
  }

  /** Cached info of an entity, or `undefined`. */
  get(ns: string, entityId: string): EntityInfo | undefined {
    return this.#entries.get(`${ns}\u0000${entityId}`);
  }

  /** Updates the cascade/parent and (optionally) one resource's shard count. */
  remember(
    ns: string,
    entityId: string,
    update: {
      cascade: boolean;
      parentId: string | null;
      shard?: { resource: string; count: number } | undefined;
    },
  ): void {
    const key = `${ns}\u0000${entityId}`;
    const old = this.#entries.get(key);
    const shards = new Map(old?.shards ?? []);
    if (update.shard) shards.set(update.shard.resource, update.shard.count);
    // A remembered entity becomes the newest; the oldest goes first when full.
    this.#entries.set(key, {
      cascade: update.cascade,
      parentId: update.parentId,
      shards,
      // Another process may create the entity (or its parent link) later: look again now and then.
      refreshAt: this.#options.clock.now() +
        this.#options.refreshSeconds * 1000,
    });
  }

  /** Forgets an entity. */
  forget(ns: string, entityId: string): void {
    this.#entries.delete(`${ns}\u0000${entityId}`);
  }
}

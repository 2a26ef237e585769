/**
 * The entity store: entity records (`{ns}/ENTITY#{id}` / `#META`), their
 * children (GSI1), creation with the cascade flags pushed to existing
 * buckets, and deletion of everything an entity owns.
 *
 * @module
 */
import {
  type AttributeValue,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { isConditionFailed } from "../_sdk_errors.ts";
import { bucketKey } from "../bucket_item.ts";
import { isoSeconds } from "../clock.ts";
import { EntityExistsError, ValidationError } from "../errors.ts";
import { bool, Expr, fromAttr, type Item, str, toAttr } from "../expr.ts";
import {
  gsi1PkParent,
  gsi1SkChild,
  gsi3PkEntity,
  pkEntity,
  SK,
} from "../keys.ts";
import type { Entity } from "../models.ts";
import {
  validateDisplayName,
  validateIdentifier,
  validateMetadata,
  validatePrincipal,
} from "../validation.ts";
import type { AuditLog } from "./audit_log.ts";
import type { BucketAdmin } from "./bucket_admin.ts";
import type { ConfigStore } from "./config_store.ts";
import type { EntityCache } from "./entity_cache.ts";
import type { TableClient } from "./table.ts";

/** Options of {@linkcode EntityStore.create} (and `Repository.createEntity`). */
export interface CreateEntityOptions {
  /** Display name, at most 256 characters (`MAX_DISPLAY_NAME_LENGTH`). @default the id */
  readonly name?: string;
  /** Parent id. */
  readonly parentId?: string;
  /** Also consume from the parent on every acquire. Requires `parentId`. @default false */
  readonly cascade?: boolean;
  /**
   * String metadata: at most 50 entries, keys of 1 to 128 characters, values
   * of at most 512 (`MAX_METADATA_*` in `core/validation.ts`).
   */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Who is acting, for the audit event. */
  readonly principal?: string;
}

/** What an {@linkcode EntityStore} works with besides the table. */
export interface EntityStoreDeps {
  /** The shared entity cache. */
  readonly cache: EntityCache;
  /** Where entity events go. */
  readonly audit: AuditLog;
  /** The namespace's configs (deleted with the entity). */
  readonly config: ConfigStore;
  /** The namespace's buckets (told about a new entity's cascade). */
  readonly buckets: BucketAdmin;
}

/** An entity record as an {@linkcode Entity}. */
export function entityFromItem(item: Item): Entity {
  const md = fromAttr(item["metadata"]);
  const metadata: Record<string, string> = {};
  if (md && typeof md === "object") {
    for (const [k, v] of Object.entries(md as Record<string, unknown>)) {
      metadata[k] = String(v);
    }
  }
  const id = str(item, "entity_id") ?? "";
  return {
    id,
    name: str(item, "name") ?? id,
    parentId: str(item, "parent_id"),
    cascade: bool(item, "cascade") ?? false,
    metadata,
    createdAt: str(item, "created_at"),
  };
}

/** Entities of namespace id `ns`. */
export class EntityStore {
  readonly #io: TableClient;
  readonly #ns: string;
  readonly #deps: EntityStoreDeps;

  /** The entities of namespace id `ns` on `io`. */
  constructor(io: TableClient, ns: string, deps: EntityStoreDeps) {
    this.#io = io;
    this.#ns = ns;
    this.#deps = deps;
  }

  /**
   * Creates an entity, refreshes the cascade flags of buckets that already
   * exist for it (reference weakness 30), and writes an `entity_created` event.
   *
   * @throws {InvalidIdentifierError} bad id, parent id or principal
   * @throws {ValidationError} `cascade` without a parent, a parent equal to
   * the entity, or a display name or metadata over the size limits (checked
   * before anything is written)
   * @throws {EntityExistsError} the entity exists
   */
  async create(
    entityId: string,
    options: CreateEntityOptions = {},
  ): Promise<Entity> {
    validateIdentifier(entityId);
    const parentId = options.parentId === undefined
      ? null
      : validateIdentifier(options.parentId, "parent_id");
    const cascade = options.cascade ?? false;
    if (typeof cascade !== "boolean") {
      throw new ValidationError("cascade", cascade, "must be true or false");
    }
    if (cascade && parentId === null) {
      throw new ValidationError(
        "cascade",
        cascade,
        "cascade needs a parent_id; set parentId or drop cascade",
      );
    }
    if (parentId === entityId) {
      throw new ValidationError(
        "parent_id",
        parentId,
        "an entity cannot be its own parent",
      );
    }
    const name = options.name === undefined
      ? entityId
      : validateDisplayName(options.name);
    const metadata = validateMetadata(options.metadata ?? {});
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.#ns;
    const createdAt = isoSeconds(this.#io.clock.now());
    const item: Item = {
      PK: { S: pkEntity(ns, entityId) },
      SK: { S: SK.META },
      "entity_id": { S: entityId },
      name: { S: name },
      "parent_id": parentId === null ? { NULL: true } : { S: parentId },
      cascade: { BOOL: cascade },
      metadata: toAttr(metadata),
      "created_at": { S: createdAt },
      GSI4PK: { S: ns },
      GSI4SK: { S: pkEntity(ns, entityId) },
    };
    if (parentId !== null) {
      item["GSI1PK"] = { S: gsi1PkParent(ns, parentId) };
      item["GSI1SK"] = { S: gsi1SkChild(entityId) };
    }
    try {
      await this.#io.client.send(
        new PutItemCommand({
          TableName: this.#io.name,
          Item: item,
          ConditionExpression: "attribute_not_exists(PK)",
        }),
      );
    } catch (e) {
      if (isConditionFailed(e)) throw new EntityExistsError(entityId);
      throw e;
    }
    // Buckets created before the entity (e.g. by acquire with defaults) learn the cascade now.
    for (const b of await this.#deps.buckets.ofEntity(entityId)) {
      const e = new Expr();
      await this.#io.client.send(
        new UpdateItemCommand({
          TableName: this.#io.name,
          Key: bucketKey({
            ns,
            entityId,
            resource: b.resource,
            shard: b.shard,
          }),
          UpdateExpression: parentId === null
            ? `SET ${e.n("cascade")} = ${e.v({ BOOL: cascade })} REMOVE ${
              e.n("parent_id")
            }`
            : `SET ${e.n("cascade")} = ${e.v({ BOOL: cascade })}, ${
              e.n("parent_id")
            } = ${e.str(parentId)}`,
          ConditionExpression: "attribute_exists(PK)",
          ...e.attrs(),
        }),
      ).catch((err) => {
        if (!isConditionFailed(err)) throw err;
      });
    }
    this.#deps.cache.remember(this.#ns, entityId, { cascade, parentId });
    await this.#deps.audit.write("entity_created", entityId, {
      details: {
        name,
        "parent_id": parentId,
        cascade,
        metadata,
      },
      ...(principal !== undefined ? { principal } : {}),
    });
    return {
      id: entityId,
      name,
      parentId,
      cascade,
      metadata,
      createdAt,
    };
  }

  /** The entity, or `null`. */
  async get(entityId: string): Promise<Entity | null> {
    validateIdentifier(entityId);
    const out = await this.#io.client.send(
      new GetItemCommand({
        TableName: this.#io.name,
        Key: {
          PK: { S: pkEntity(this.#ns, entityId) },
          SK: { S: SK.META },
        },
        ConsistentRead: true,
      }),
    );
    if (!out.Item) return null;
    const entity = entityFromItem(out.Item);
    this.#deps.cache.remember(this.#ns, entityId, {
      cascade: entity.cascade,
      parentId: entity.parentId,
    });
    return entity;
  }

  /** Children of a parent (all pages). */
  async children(parentId: string): Promise<Entity[]> {
    validateIdentifier(parentId, "parent_id");
    const items = await this.#io.queryAll({
      IndexName: "GSI1",
      KeyConditionExpression: "GSI1PK = :pk",
      ExpressionAttributeValues: {
        ":pk": { S: gsi1PkParent(this.#ns, parentId) },
      },
    });
    return items.map(entityFromItem);
  }

  /**
   * Deletes an entity with its configs, usage snapshots and every bucket
   * shard (all pages, unprocessed items retried; reference weakness 33).
   * Audit history is kept (it expires by TTL). Returns the items deleted.
   *
   * @throws {ValidationError} when the entity still has children
   */
  async delete(
    entityId: string,
    options: { principal?: string } = {},
  ): Promise<number> {
    validateIdentifier(entityId);
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const children = await this.children(entityId);
    if (children.length > 0) {
      throw new ValidationError(
        "entity_id",
        entityId,
        `it has ${children.length} child(ren) (${
          children.slice(0, 5).map((c) => c.id).join(", ")
        }); delete them first`,
      );
    }
    const own = await this.#io.queryAll({
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: {
        ":pk": { S: pkEntity(this.#ns, entityId) },
      },
      ProjectionExpression: "PK, SK",
    });
    const buckets = await this.#io.queryAll({
      IndexName: "GSI3",
      KeyConditionExpression: "GSI3PK = :pk AND begins_with(GSI3SK, :b)",
      ExpressionAttributeValues: {
        ":pk": { S: gsi3PkEntity(this.#ns, entityId) },
        ":b": { S: "BUCKET#" },
      },
    });
    const keys = [...own, ...buckets].map((i) => ({
      PK: i["PK"] as AttributeValue,
      SK: i["SK"] as AttributeValue,
    }));
    if (keys.length === 0) return 0;
    const configResources = own.map((i) => str(i, "SK") ?? "").filter((sk) =>
      sk.startsWith(`${SK.CONFIG}#`)
    )
      .map((sk) => sk.slice(SK.CONFIG.length + 1));
    const deleted = await this.#io.batchDelete(keys);
    for (const r of configResources) {
      await this.#deps.config.registry.decrementEntityConfigs(r);
      this.#deps.config.evict({ level: "entity", entityId, resource: r });
    }
    this.#deps.cache.forget(this.#ns, entityId);
    await this.#deps.audit.write("entity_deleted", entityId, {
      details: { records_deleted: deleted },
      ...(principal !== undefined ? { principal } : {}),
    });
    return deleted;
  }
}

/**
 * The namespace store: the registry records under `_/SYSTEM#` (spec 01
 * §4.6) as seen by an open repository: register, look up, list, soft-delete,
 * recover and purge namespaces. The record writes themselves are shared
 * with tools that run without a repository (`core/namespace_registry.ts`).
 *
 * @module
 */
import {
  type AttributeValue,
  DeleteItemCommand,
  GetItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { cancellationCodes } from "../_sdk_errors.ts";
import { isoSeconds } from "../clock.ts";
import { EntityNotFoundError, NamespaceStateError } from "../errors.ts";
import { type Item, str } from "../expr.ts";
import {
  pkSystem,
  RESERVED_NAMESPACE,
  SK,
  skNamespace,
  skNsid,
} from "../keys.ts";
import type { NamespaceInfo } from "../models.ts";
import {
  getActiveNamespaceRecord,
  registerNamespaceRecords,
  type RegistryTarget,
} from "../namespace_registry.ts";
import { validateNamespaceName } from "../validation.ts";
import type { TableClient } from "./table.ts";

/** A registry record as a {@linkcode NamespaceInfo}. */
export function decodeNamespaceInfo(item: Item): NamespaceInfo {
  return {
    name: str(item, "namespace_name") ?? "",
    namespaceId: str(item, "namespace_id") ?? "",
    status: str(item, "status") ?? "active",
    createdAt: str(item, "created_at"),
    deletedAt: str(item, "deleted_at"),
  };
}

/** Namespace registry reads and writes, remembering the ids it learns in `ids` (name → id). */
export class NamespaceStore {
  readonly #io: TableClient;
  readonly #ids: Map<string, string>;

  /** A store on `io` that records the ids it learns in `ids`. */
  constructor(io: TableClient, ids: Map<string, string>) {
    this.#io = io;
    this.#ids = ids;
  }

  #target(): RegistryTarget {
    return {
      client: this.#io.client,
      table: this.#io.name,
      clock: this.#io.clock,
    };
  }

  /**
   * Registers a namespace name and returns its id; idempotent.
   *
   * @throws {ValidationError} for `_` or a malformed name
   */
  async registerNamespace(name: string): Promise<string> {
    const id = await registerNamespaceRecords(
      this.#target(),
      name,
    );
    this.#ids.set(name, id);
    return id;
  }

  /** The active namespace of that name, or `null`. */
  async getNamespace(name: string): Promise<NamespaceInfo | null> {
    const item = await getActiveNamespaceRecord(
      this.#target(),
      name,
    );
    return item ? decodeNamespaceInfo(item) : null;
  }

  /** Every active namespace, sorted by name. */
  async listNamespaces(): Promise<NamespaceInfo[]> {
    const items = await this.#io.queryAll({
      KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
      ExpressionAttributeValues: {
        ":pk": { S: pkSystem(RESERVED_NAMESPACE) },
        ":sk": { S: SK.NAMESPACE },
      },
      ConsistentRead: true,
    });
    return items.filter((i) => str(i, "status") === "active").map((i) =>
      decodeNamespaceInfo(i)
    )
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Soft-deletes a namespace (its data stays until purged); unknown names are ignored. */
  async deleteNamespace(name: string): Promise<void> {
    validateNamespaceName(name);
    const info = await this.getNamespace(name);
    if (!info) return;
    const sys = pkSystem(RESERVED_NAMESPACE);
    await this.#io.client.send(
      new TransactWriteItemsCommand({
        TransactItems: [
          {
            Delete: {
              TableName: this.#io.name,
              Key: { PK: { S: sys }, SK: { S: skNamespace(name) } },
            },
          },
          {
            Update: {
              TableName: this.#io.name,
              Key: { PK: { S: sys }, SK: { S: skNsid(info.namespaceId) } },
              UpdateExpression: "SET #st = :d, deleted_at = :t",
              ExpressionAttributeNames: { "#st": "status" },
              ExpressionAttributeValues: {
                ":d": { S: "deleted" },
                ":t": { S: isoSeconds(this.#io.clock.now()) },
              },
            },
          },
        ],
      }),
    );
    this.#ids.delete(name);
  }

  /**
   * Recovers a soft-deleted namespace by id and returns its name.
   *
   * @throws {EntityNotFoundError} no such id
   * @throws {NamespaceStateError} active, purging, or the name was registered again
   */
  async recoverNamespace(namespaceId: string): Promise<string> {
    const sys = pkSystem(RESERVED_NAMESPACE);
    const out = await this.#io.client.send(
      new GetItemCommand({
        TableName: this.#io.name,
        Key: { PK: { S: sys }, SK: { S: skNsid(namespaceId) } },
        ConsistentRead: true,
      }),
    );
    if (!out.Item) throw new EntityNotFoundError(namespaceId);
    const info = decodeNamespaceInfo(out.Item);
    if (info.status === "active") {
      throw new NamespaceStateError(
        `Cannot recover namespace "${info.name}": it is active`,
        {
          namespaceName: info.name,
          state: "active",
        },
      );
    }
    if (info.status === "purging") {
      throw new NamespaceStateError(
        `Cannot recover namespace "${info.name}": purging is terminal`,
        {
          namespaceName: info.name,
          state: "purging",
        },
      );
    }
    const common = {
      "namespace_id": { S: namespaceId },
      "namespace_name": { S: info.name },
      status: { S: "active" },
      "created_at": { S: info.createdAt ?? isoSeconds(this.#io.clock.now()) },
      GSI4PK: { S: RESERVED_NAMESPACE },
      GSI4SK: { S: sys },
    };
    try {
      await this.#io.client.send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Put: {
                TableName: this.#io.name,
                Item: {
                  PK: { S: sys },
                  SK: { S: skNamespace(info.name) },
                  ...common,
                },
                ConditionExpression: "attribute_not_exists(PK)",
              },
            },
            {
              Put: {
                TableName: this.#io.name,
                Item: {
                  PK: { S: sys },
                  SK: { S: skNsid(namespaceId) },
                  ...common,
                },
                ConditionExpression: "#st = :d",
                ExpressionAttributeNames: { "#st": "status" },
                ExpressionAttributeValues: { ":d": { S: "deleted" } },
              },
            },
          ],
        }),
      );
    } catch (e) {
      if (cancellationCodes(e)[0] === "ConditionalCheckFailed") {
        throw new NamespaceStateError(
          `Cannot recover namespace "${info.name}": the name was registered again with another id`,
          { namespaceName: info.name, state: "re-registered" },
        );
      }
      throw e;
    }
    this.#ids.set(info.name, namespaceId);
    return info.name;
  }

  /** Soft-deleted namespaces that can be recovered or purged. */
  async listOrphanNamespaces(): Promise<NamespaceInfo[]> {
    const items = await this.#io.queryAll({
      KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
      ExpressionAttributeValues: {
        ":pk": { S: pkSystem(RESERVED_NAMESPACE) },
        ":sk": { S: SK.NSID },
      },
      ConsistentRead: true,
    });
    return items.filter((i) => str(i, "status") === "deleted").map((i) =>
      decodeNamespaceInfo(i)
    );
  }

  /**
   * Deletes every item of a soft-deleted namespace (GSI4), then its registry record.
   * Returns the number of items deleted.
   *
   * @throws {NamespaceStateError} when the namespace is active
   */
  async purgeNamespace(
    namespaceId: string,
    onProgress?: (deleted: number) => void,
  ): Promise<number> {
    const sys = pkSystem(RESERVED_NAMESPACE);
    const key = { PK: { S: sys }, SK: { S: skNsid(namespaceId) } };
    const out = await this.#io.client.send(
      new GetItemCommand({
        TableName: this.#io.name,
        Key: key,
        ConsistentRead: true,
      }),
    );
    if (!out.Item) return 0;
    if (str(out.Item, "status") === "active") {
      throw new NamespaceStateError(
        `Cannot purge namespace "${
          str(out.Item, "namespace_name")
        }": it is active; delete it first`,
        {
          namespaceName: str(out.Item, "namespace_name") ?? "",
          state: "active",
        },
      );
    }
    await this.#io.client.send(
      new UpdateItemCommand({
        TableName: this.#io.name,
        Key: key,
        UpdateExpression: "SET #st = :p",
        ExpressionAttributeNames: { "#st": "status" },
        ExpressionAttributeValues: { ":p": { S: "purging" } },
      }),
    );
    let deleted = 0;
    let start: Record<string, AttributeValue> | undefined;
    do {
      const res = await this.#io.client.send(
        new QueryCommand({
          TableName: this.#io.name,
          IndexName: "GSI4",
          KeyConditionExpression: "GSI4PK = :ns",
          ExpressionAttributeValues: { ":ns": { S: namespaceId } },
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      const keys = (res.Items ?? []).map((i) => ({
        PK: i["PK"] as AttributeValue,
        SK: i["SK"] as AttributeValue,
      }));
      deleted += await this.#io.batchDelete(keys);
      onProgress?.(deleted);
      start = res.LastEvaluatedKey;
    } while (start);
    await this.#io.client.send(
      new DeleteItemCommand({ TableName: this.#io.name, Key: key }),
    );
    return deleted;
  }
}

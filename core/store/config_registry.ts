/**
 * The config registries of a namespace: the `#RESOURCES` set of resources
 * with defaults and the `#ENTITY_CONFIG_RESOURCES` counts of entity configs
 * per resource, and the listings built on them (and on GSI3).
 *
 * @module
 */
import {
  GetItemCommand,
  PutItemCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { cancellationCodes, isConditionFailed } from "../_sdk_errors.ts";
import { Expr, type Item, num, str } from "../expr.ts";
import { gsi3PkEntityConfig, pkSystem, SK } from "../keys.ts";
import type { TableClient } from "./table.ts";

/** The registries of namespace id `ns`. */
export class ConfigRegistry {
  readonly #io: TableClient;
  readonly #ns: string;

  /** The registries of namespace id `ns` on `io`. */
  constructor(io: TableClient, ns: string) {
    this.#io = io;
    this.#ns = ns;
  }

  /** Puts an entity config item; a new one counts in the registry, a replaced one does not. */
  async putEntityConfig(item: Item, resource: string): Promise<void> {
    const ns = this.#ns;
    const reg = new Expr();
    try {
      await this.#io.client.send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Put: {
                TableName: this.#io.name,
                Item: item,
                ConditionExpression: "attribute_not_exists(PK)",
              },
            },
            {
              Update: {
                TableName: this.#io.name,
                Key: {
                  PK: { S: pkSystem(ns) },
                  SK: { S: SK.ENTITY_CONFIG_RESOURCES },
                },
                UpdateExpression: `ADD ${reg.n(resource)} ${reg.num(1)} SET ${
                  reg.n("GSI4PK")
                } = if_not_exists(${reg.n("GSI4PK")}, ${reg.str(ns)}), ${
                  reg.n("GSI4SK")
                } = if_not_exists(${reg.n("GSI4SK")}, ${
                  reg.str(pkSystem(ns))
                })`,
                ...reg.attrs(),
              },
            },
          ],
        }),
      );
    } catch (e) {
      if (cancellationCodes(e)[0] !== "ConditionalCheckFailed") throw e;
      await this.#io.client.send(
        new PutItemCommand({ TableName: this.#io.name, Item: item }),
      );
    }
  }

  /** One entity config fewer for `resource`; the count is removed at 0. */
  async decrementEntityConfigs(resource: string): Promise<void> {
    const key = {
      PK: { S: pkSystem(this.#ns) },
      SK: { S: SK.ENTITY_CONFIG_RESOURCES },
    };
    const e = new Expr();
    const res = await this.#io.client.send(
      new UpdateItemCommand({
        TableName: this.#io.name,
        Key: key,
        UpdateExpression: `ADD ${e.n(resource)} ${e.num(-1)}`,
        ConditionExpression: `attribute_exists(${e.n(resource)})`,
        ReturnValues: "UPDATED_NEW",
        ...e.attrs(),
      }),
    ).catch((err) => {
      if (isConditionFailed(err)) return null;
      throw err;
    });
    const left = res?.Attributes ? num(res.Attributes, resource) : null;
    if (left !== null && left <= 0) {
      const r = new Expr();
      await this.#io.client.send(
        new UpdateItemCommand({
          TableName: this.#io.name,
          Key: key,
          UpdateExpression: `REMOVE ${r.n(resource)}`,
          ConditionExpression: `${r.n(resource)} <= ${r.num(0)}`,
          ...r.attrs(),
        }),
      ).catch((err) => {
        if (!isConditionFailed(err)) throw err;
      });
    }
  }

  /** Adds a resource to, or deletes it from, the `#RESOURCES` set. */
  async updateResources(
    op: "ADD" | "DELETE",
    resource: string,
  ): Promise<void> {
    const ns = this.#ns;
    const e = new Expr();
    await this.#io.client.send(
      new UpdateItemCommand({
        TableName: this.#io.name,
        Key: { PK: { S: pkSystem(ns) }, SK: { S: SK.RESOURCES } },
        UpdateExpression: op === "ADD"
          ? `ADD ${e.n("resources")} ${e.v({ SS: [resource] })} SET ${
            e.n("GSI4PK")
          } = if_not_exists(${e.n("GSI4PK")}, ${e.str(ns)}), ${
            e.n("GSI4SK")
          } = if_not_exists(${e.n("GSI4SK")}, ${e.str(pkSystem(ns))})`
          : `DELETE ${e.n("resources")} ${e.v({ SS: [resource] })}`,
        ...e.attrs(),
      }),
    );
  }

  /** Entity ids with custom limits for a resource (GSI3, all pages). */
  async listEntitiesWithCustomLimits(resource: string): Promise<string[]> {
    const items = await this.#io.queryAll({
      IndexName: "GSI3",
      KeyConditionExpression: "GSI3PK = :pk",
      ExpressionAttributeValues: {
        ":pk": { S: gsi3PkEntityConfig(this.#ns, resource) },
      },
    });
    return items.map((i) => str(i, "GSI3SK") ?? "").filter(Boolean).sort();
  }

  /** Resources that have at least one entity config. */
  async listResourcesWithEntityConfigs(): Promise<string[]> {
    const out = await this.#io.client.send(
      new GetItemCommand({
        TableName: this.#io.name,
        Key: {
          PK: { S: pkSystem(this.#ns) },
          SK: { S: SK.ENTITY_CONFIG_RESOURCES },
        },
        ConsistentRead: true,
      }),
    );
    if (!out.Item) return [];
    return Object.keys(out.Item).filter((k) =>
      !["PK", "SK", "GSI4PK", "GSI4SK"].includes(k) &&
      (num(out.Item as Item, k) ?? 0) > 0
    ).sort();
  }

  /** Resources with resource-level defaults, sorted. */
  async listResourcesWithDefaults(): Promise<string[]> {
    const out = await this.#io.client.send(
      new GetItemCommand({
        TableName: this.#io.name,
        Key: { PK: { S: pkSystem(this.#ns) }, SK: { S: SK.RESOURCES } },
        ConsistentRead: true,
      }),
    );
    const ss = out.Item?.["resources"];
    return ss && "SS" in ss && ss.SS ? [...ss.SS].sort() : [];
  }
}

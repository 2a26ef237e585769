/**
 * {@linkcode SlotStore} on DynamoDB: a take is one conditional `UpdateItem`
 * (`attribute_not_exists(cs_i) OR cs_i <= now`, answering `ALL_OLD` when
 * it fails), a release one conditional `UpdateItem` (`ch_i = holder AND
 * cs_i = expiry`). Sent through the table's guarded send (deadlines,
 * at-most-once writes).
 *
 * @module
 */
import { UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import {
  decodeSlots,
  pkSlots,
  skSlots,
  type SlotRef,
  type SlotStore,
  type SlotTake,
  type TakeResult,
} from "../acquire/slot_store.ts";
import type { Item } from "../expr.ts";
import { isConditionFailed } from "../_sdk_errors.ts";
import type { TableClient } from "./table.ts";

/** Slot items in one DynamoDB table. */
export class DynamoSlotStore implements SlotStore {
  readonly #table: Pick<TableClient, "name" | "send">;

  /** A store on a table (`tableOf(repo)`). */
  constructor(table: Pick<TableClient, "name" | "send">) {
    this.#table = table;
  }

  #key(ref: SlotRef): Item {
    return { PK: { S: pkSlots(ref) }, SK: { S: skSlots(ref) } };
  }

  async take(ref: SlotRef, t: SlotTake): Promise<TakeResult> {
    try {
      await this.#table.send(
        new UpdateItemCommand({
          TableName: this.#table.name,
          Key: this.#key(ref),
          UpdateExpression: "SET #s = :e, #h = :h, #m = :m, #t = :t",
          ConditionExpression: "attribute_not_exists(#s) OR #s <= :now",
          ExpressionAttributeNames: {
            "#s": `cs_${t.slot}`,
            "#h": `ch_${t.slot}`,
            "#m": "max",
            "#t": "ttl",
          },
          ExpressionAttributeValues: {
            ":e": { N: String(t.expiry) },
            ":h": { S: t.holder },
            ":m": { N: String(t.max) },
            ":t": { N: String(t.ttl) },
            ":now": { N: String(t.now) },
          },
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
      );
      return { ok: true };
    } catch (e) {
      if (!isConditionFailed(e)) throw e;
      return {
        ok: false,
        slots: decodeSlots((e as { Item?: Item }).Item ?? {}),
      };
    }
  }

  async release(
    ref: SlotRef,
    slot: number,
    holder: string,
    expiry: number,
  ): Promise<void> {
    try {
      await this.#table.send(
        new UpdateItemCommand({
          TableName: this.#table.name,
          Key: this.#key(ref),
          UpdateExpression: "REMOVE #s, #h",
          ConditionExpression: "#h = :h AND #s = :e",
          ExpressionAttributeNames: { "#s": `cs_${slot}`, "#h": `ch_${slot}` },
          ExpressionAttributeValues: {
            ":h": { S: holder },
            ":e": { N: String(expiry) },
          },
        }),
      );
    } catch (e) {
      // Taken by another holder after it expired: nothing of ours is left.
      if (!isConditionFailed(e)) throw e;
    }
  }
}

/**
 * The usage reader: the usage snapshots the aggregator writes, read from an
 * entity's partition or from a resource's GSI2 partition, filtered by window
 * type and window start.
 *
 * @module
 */
import type { QueryCommandInput } from "@aws-sdk/client-dynamodb";
import { ValidationError } from "../errors.ts";
import { gsi2PkResource, pkEntity, SK } from "../keys.ts";
import type { UsageSnapshot, UsageSnapshotFilter } from "../models.ts";
import { decodeSnapshot } from "../usage.ts";
import type { TableClient } from "./table.ts";

/**
 * Usage snapshots of an entity (its partition) or of a resource (GSI2) in
 * namespace `filter.namespaceId`, in key order, optionally of one window
 * type and a range of window starts; at most `limit`, with `more` when
 * others match.
 *
 * @throws {ValidationError} when neither `entityId` nor `resource` is given
 */
export async function readUsageSnapshots(
  io: TableClient,
  filter: UsageSnapshotFilter & { readonly namespaceId: string },
): Promise<{ snapshots: UsageSnapshot[]; more: boolean }> {
  const ns = filter.namespaceId;
  let input: Omit<QueryCommandInput, "TableName">;
  if (filter.entityId !== undefined) {
    input = {
      ...(filter.consistent ? { ConsistentRead: true } : {}),
      KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
      ExpressionAttributeValues: {
        ":pk": { S: pkEntity(ns, filter.entityId) },
        ":sk": {
          S: filter.resource !== undefined
            ? `${SK.USAGE}${filter.resource}#`
            : SK.USAGE,
        },
      },
    };
  } else if (filter.resource !== undefined) {
    input = {
      IndexName: "GSI2",
      KeyConditionExpression: "GSI2PK = :pk AND begins_with(GSI2SK, :sk)",
      ExpressionAttributeValues: {
        ":pk": { S: gsi2PkResource(ns, filter.resource) },
        ":sk": { S: "USAGE#" },
      },
    };
  } else {
    throw new ValidationError(
      "filter",
      "{}",
      "give entityId or resource (or both)",
    );
  }
  const max = filter.limit;
  const matches = (s: UsageSnapshot): boolean =>
    (filter.windowType === undefined || s.windowType === filter.windowType) &&
    (filter.start === undefined || s.windowStart >= filter.start) &&
    (filter.end === undefined || s.windowStart <= filter.end);
  const out: UsageSnapshot[] = [];
  const pages = io.queryPages({
    ...input,
    ...(max !== undefined ? { Limit: max + 1 } : {}),
  });
  for await (const page of pages) {
    for (const item of page) {
      const s = decodeSnapshot(item);
      if (matches(s)) out.push(s);
    }
    // One match past the limit proves there are more (DynamoDB reports a
    // LastEvaluatedKey when a page ends exactly at its Limit).
    if (max !== undefined && out.length > max) {
      return { snapshots: out.slice(0, max), more: true };
    }
  }
  return { snapshots: out, more: false };
}

/**
 * {@linkcode CoordinationStore} on DynamoDB: lease + checkpoint items in the
 * application table under the reserved namespace.
 *
 * | Attribute | Value |
 * |-----------|-------|
 * | `PK` | `_/STREAM#{consumerName}#{streamLabel}` (one partition per consumer and stream: one Query lists all leases) |
 * | `SK` | `#SHARD#{shardId}` |
 * | `entity_type` | `STREAM_LEASE` |
 * | `owner` | worker id; absent when free |
 * | `epoch` | ownership generation (fences checkpoints and effects) |
 * | `counter` | liveness counter (observed for expiry; never compared with clocks) |
 * | `checkpoint` | last committed sequence number |
 * | `checkpoint_key` | the checkpoint left-padded with zeros to 40 digits: DynamoDB compares it as a string, so every checkpoint write is conditioned on moving it forward |
 * | `parent_shard_id`, `start`, `ended` | lineage and start position |
 * | `updated_at` | wall-clock ms, for humans only |
 * | `ttl` | set when the shard ended: now + 48 h |
 *
 * The items carry no GSI key attributes, so they stay out of every index.
 *
 * @module
 */
import {
  type AttributeValue,
  GetItemCommand,
  type GetItemCommandOutput,
  PutItemCommand,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type UpdateItemCommandOutput,
} from "@aws-sdk/client-dynamodb";
import { type Clock, systemClock } from "../core/clock.ts";
import { type DynamoDbClientLike, queryAllItems } from "../core/store/table.ts";
import {
  assertCommitSize,
  type CommitResult,
  COORDINATION_PK_PREFIX,
  coordinationConflict,
  type CoordinationStore,
  LEASE_SK_PREFIX,
  type LeaseFence,
  type LeaseItem,
  type LeaseWriteResult,
  type NewLease,
} from "./coordination_store.ts";

/** The part of `DynamoDBClient` the store uses (a real client fits): the library's one client interface. */
export type { DynamoDbClientLike };

/** Options of {@linkcode createDynamoDbCoordinationStore}. */
export interface DynamoDbCoordinationStoreOptions {
  /** The table holding the items (normally the application table). */
  readonly tableName: string;
  /** Name of the consuming application, e.g. `aggregator`. */
  readonly consumerName: string;
  /** The stream ARN; its label scopes the leases. */
  readonly streamArn: string;
  /** Clock for `updated_at` and `ttl` only. @default systemClock */
  readonly clock?: Clock;
  /** How long an ended lease is kept. @default 172800000 (48 h) */
  readonly endedRetentionMs?: number;
}

/** The partition key of a consumer's leases. */
export function coordinationPartitionKey(
  consumerName: string,
  streamArn: string,
): string {
  const i = streamArn.lastIndexOf("/stream/");
  const label = i >= 0 ? streamArn.slice(i + "/stream/".length) : streamArn;
  return `${COORDINATION_PK_PREFIX}${consumerName}#${label}`;
}

/** Sequence numbers have 21 to 40 digits; padded to 40 they compare as strings. */
export function checkpointKey(sequenceNumber: string): string {
  return sequenceNumber.padStart(40, "0");
}

const NAMES = {
  "#o": "owner",
  "#e": "epoch",
  "#c": "counter",
  "#cp": "checkpoint",
  "#cpk": "checkpoint_key",
  "#u": "updated_at",
  "#end": "ended",
  "#ttl": "ttl",
} as const;

type Names = Partial<Record<keyof typeof NAMES, string>>;

function names(...keys: (keyof typeof NAMES)[]): Names {
  const out: Names = {};
  for (const k of keys) out[k] = NAMES[k];
  return out;
}

/** Parses a stored lease item. */
export function leaseFromItem(
  item: Record<string, AttributeValue>,
): LeaseItem | undefined {
  const sk = item["SK"]?.S;
  if (sk === undefined || !sk.startsWith(LEASE_SK_PREFIX)) return undefined;
  const parent = item["parent_shard_id"]?.S;
  const owner = item["owner"]?.S;
  const checkpoint = item["checkpoint"]?.S;
  return {
    shardId: sk.slice(LEASE_SK_PREFIX.length),
    ...(parent ? { parentShardId: parent } : {}),
    ...(owner ? { owner } : {}),
    epoch: Number(item["epoch"]?.N ?? "0"),
    counter: Number(item["counter"]?.N ?? "0"),
    ...(checkpoint ? { checkpoint } : {}),
    ended: item["ended"]?.BOOL ?? false,
    start: item["start"]?.S === "LATEST" ? "LATEST" : "TRIM_HORIZON",
  };
}

/**
 * Creates a DynamoDB-backed {@linkcode CoordinationStore}.
 *
 * @param client A `DynamoDBClient` (or anything with the same `send`).
 * @param options Table, consumer and stream.
 * @returns The store.
 *
 * @example
 * ```ts ignore
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createDynamoDbCoordinationStore } from "./coordination_store_dynamodb.ts";
 *
 * const store = createDynamoDbCoordinationStore(new DynamoDBClient({}), {
 *   tableName: "rate-limits", consumerName: "aggregator", streamArn: "arn:aws:dynamodb:...:stream/2026-01-01T00:00:00.000",
 * });
 * ```
 */
export function createDynamoDbCoordinationStore(
  client: DynamoDbClientLike,
  options: DynamoDbCoordinationStoreOptions,
): CoordinationStore {
  const tableName = options.tableName;
  const pk = coordinationPartitionKey(options.consumerName, options.streamArn);
  const clock = options.clock ?? systemClock;
  const endedRetentionMs = options.endedRetentionMs ?? 48 * 3_600_000;

  function key(shardId: string): Record<string, AttributeValue> {
    return { PK: { S: pk }, SK: { S: `${LEASE_SK_PREFIX}${shardId}` } };
  }
  function opts(
    signal: AbortSignal | undefined,
  ): { abortSignal?: AbortSignal } {
    return signal ? { abortSignal: signal } : {};
  }
  function now(): AttributeValue {
    return { N: String(clock.now()) };
  }

  /** The lease item as it is now (strongly consistent). */
  async function current(
    shardId: string,
    signal: AbortSignal | undefined,
  ): Promise<Record<string, AttributeValue> | undefined> {
    const out = await client.send(
      new GetItemCommand({
        TableName: tableName,
        Key: key(shardId),
        ConsistentRead: true,
      }),
      opts(signal),
    ) as GetItemCommandOutput;
    return out.Item;
  }

  /** `lost`, naming the current owner when the item says who it is. */
  function lostTo(item: Record<string, AttributeValue> | undefined): {
    kind: "lost";
    owner?: string;
  } {
    const owner = item?.["owner"]?.S;
    return owner ? { kind: "lost", owner } : { kind: "lost" };
  }

  /** Whether an item still carries `fence` and a checkpoint at or past `checkpoint`. */
  function holdsCheckpoint(
    item: Record<string, AttributeValue> | undefined,
    fence: LeaseFence,
    checkpoint: string,
  ): boolean {
    if (item === undefined) return false;
    const stored = item["checkpoint_key"]?.S;
    return item["owner"]?.S === fence.owner &&
      item["epoch"]?.N === String(fence.epoch) &&
      stored !== undefined && stored >= checkpointKey(checkpoint);
  }

  async function fencedUpdate(
    fence: LeaseFence,
    update: string,
    extraNames: Names,
    extraValues: Record<string, AttributeValue>,
    checkpoint: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<LeaseWriteResult> {
    const cp = checkpoint === undefined
      ? { set: "", names: {}, values: {}, condition: "" }
      : {
        set: ", #cp = :cp, #cpk = :cpk",
        names: names("#cp", "#cpk"),
        values: {
          ":cp": { S: checkpoint },
          ":cpk": { S: checkpointKey(checkpoint) },
        },
        condition: " AND (attribute_not_exists(#cpk) OR #cpk < :cpk)",
      };
    const [head, ...rest] = update.split(" REMOVE ");
    const expression = `${head}${cp.set}${
      rest.length > 0 ? ` REMOVE ${rest.join(" REMOVE ")}` : ""
    }`;
    try {
      const out = await client.send(
        new UpdateItemCommand({
          TableName: tableName,
          Key: key(fence.shardId),
          UpdateExpression: expression,
          ConditionExpression: `#o = :me AND #e = :e${cp.condition}`,
          ExpressionAttributeNames: {
            ...names("#o", "#e", "#c", "#u"),
            ...extraNames,
            ...cp.names,
          },
          ExpressionAttributeValues: {
            ":me": { S: fence.owner },
            ":e": { N: String(fence.epoch) },
            ":one": { N: "1" },
            ":now": now(),
            ...extraValues,
            ...cp.values,
          },
          ReturnValues: "ALL_NEW",
          ReturnValuesOnConditionCheckFailure: "ALL_OLD",
        }),
        opts(signal),
      ) as UpdateItemCommandOutput;
      const lease = out.Attributes ? leaseFromItem(out.Attributes) : undefined;
      return lease ? { kind: "ok", lease } : { kind: "lost" };
    } catch (error) {
      if (!isNamed(error, "ConditionalCheckFailedException")) throw error;
      const item = (error as { Item?: Record<string, AttributeValue> }).Item;
      // Still ours, but the stored checkpoint is already at or past this one
      // (a commit landed first): do the same write without moving it back.
      if (
        checkpoint !== undefined &&
        item?.["owner"]?.S === fence.owner &&
        item["epoch"]?.N === String(fence.epoch)
      ) {
        return fencedUpdate(
          fence,
          update,
          extraNames,
          extraValues,
          undefined,
          signal,
        );
      }
      return lostTo(item);
    }
  }

  return {
    async listLeases(signal?: AbortSignal): Promise<LeaseItem[]> {
      const items = await queryAllItems(client, {
        TableName: tableName,
        KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
        ExpressionAttributeValues: {
          ":pk": { S: pk },
          ":sk": { S: LEASE_SK_PREFIX },
        },
        ConsistentRead: true,
      }, signal);
      return items.flatMap((item) => leaseFromItem(item) ?? []);
    },

    async createLease(lease: NewLease, signal?: AbortSignal): Promise<boolean> {
      try {
        await client.send(
          new PutItemCommand({
            TableName: tableName,
            Item: {
              ...key(lease.shardId),
              entity_type: { S: "STREAM_LEASE" },
              epoch: { N: "0" },
              counter: { N: "0" },
              ended: { BOOL: false },
              start: { S: lease.start },
              updated_at: now(),
              ...(lease.parentShardId
                ? { parent_shard_id: { S: lease.parentShardId } }
                : {}),
            },
            ConditionExpression: "attribute_not_exists(PK)",
          }),
          opts(signal),
        );
        return true;
      } catch (error) {
        if (isNamed(error, "ConditionalCheckFailedException")) return false;
        throw error;
      }
    },

    async takeLease(
      shardId,
      owner,
      observed,
      signal,
    ): Promise<LeaseWriteResult> {
      try {
        const out = await client.send(
          new UpdateItemCommand({
            TableName: tableName,
            Key: key(shardId),
            UpdateExpression: "SET #o = :me, #e = :e1, #c = :c1, #u = :now",
            ConditionExpression: "#e = :e AND #c = :c AND #end = :false",
            ExpressionAttributeNames: names("#o", "#e", "#c", "#u", "#end"),
            ExpressionAttributeValues: {
              ":me": { S: owner },
              ":e": { N: String(observed.epoch) },
              ":c": { N: String(observed.counter) },
              ":e1": { N: String(observed.epoch + 1) },
              ":c1": { N: String(observed.counter + 1) },
              ":false": { BOOL: false },
              ":now": now(),
            },
            ReturnValues: "ALL_NEW",
            ReturnValuesOnConditionCheckFailure: "ALL_OLD",
          }),
          opts(signal),
        ) as UpdateItemCommandOutput;
        const lease = out.Attributes
          ? leaseFromItem(out.Attributes)
          : undefined;
        return lease ? { kind: "ok", lease } : { kind: "lost" };
      } catch (error) {
        if (isNamed(error, "ConditionalCheckFailedException")) {
          return lostTo(
            (error as { Item?: Record<string, AttributeValue> }).Item,
          );
        }
        throw error;
      }
    },

    renewLease(fence, checkpoint, signal): Promise<LeaseWriteResult> {
      return fencedUpdate(
        fence,
        "SET #c = #c + :one, #u = :now",
        {},
        {},
        checkpoint,
        signal,
      );
    },

    releaseLease(fence, checkpoint, signal): Promise<LeaseWriteResult> {
      return fencedUpdate(
        fence,
        "SET #e = #e + :one, #c = #c + :one, #u = :now REMOVE #o",
        {},
        {},
        checkpoint,
        signal,
      );
    },

    endLease(fence, checkpoint, signal): Promise<LeaseWriteResult> {
      return fencedUpdate(
        fence,
        "SET #e = #e + :one, #c = #c + :one, #u = :now, #end = :true, #ttl = :ttl REMOVE #o",
        names("#end", "#ttl"),
        {
          ":true": { BOOL: true },
          ":ttl": {
            N: String(Math.floor((clock.now() + endedRetentionMs) / 1000)),
          },
        },
        checkpoint,
        signal,
      );
    },

    async commit(fence, checkpoint, effects, signal): Promise<CommitResult> {
      assertCommitSize(effects);
      const items: TransactWriteItem[] = [
        ...effects,
        {
          Update: {
            TableName: tableName,
            Key: key(fence.shardId),
            UpdateExpression: "SET #cp = :cp, #cpk = :cpk, #u = :now",
            // Forward only: an attempt that already landed cannot land twice.
            ConditionExpression:
              "#o = :me AND #e = :e AND (attribute_not_exists(#cpk) OR #cpk < :cpk)",
            ExpressionAttributeNames: names("#o", "#e", "#cp", "#cpk", "#u"),
            ExpressionAttributeValues: {
              ":me": { S: fence.owner },
              ":e": { N: String(fence.epoch) },
              ":cp": { S: checkpoint },
              ":cpk": { S: checkpointKey(checkpoint) },
              ":now": now(),
            },
            ReturnValuesOnConditionCheckFailure: "ALL_OLD",
          },
        },
      ];
      try {
        await client.send(
          new TransactWriteItemsCommand({ TransactItems: items }),
          opts(signal),
        );
        return { kind: "committed" };
      } catch (error) {
        const result = classifyCommitError(error, items.length, fence.shardId);
        if (result.kind !== "lease_lost") return result;
        // The checkpoint condition failed: lost, or an earlier attempt of
        // this very commit landed and only its answer was lost.
        const item = fenceFailureItem(error, items.length) ??
          await current(fence.shardId, signal);
        if (holdsCheckpoint(item, fence, checkpoint)) {
          return { kind: "committed", replayed: true };
        }
        const owner = item?.["owner"]?.S;
        return owner ? { kind: "lease_lost", owner } : { kind: "lease_lost" };
      }
    },
  };
}

/** The lease item a cancelled commit returned for its failed checkpoint condition. */
function fenceFailureItem(
  error: unknown,
  itemCount: number,
): Record<string, AttributeValue> | undefined {
  const reasons = (error as {
    CancellationReasons?: { Item?: Record<string, AttributeValue> }[];
  }).CancellationReasons;
  return reasons?.[itemCount - 1]?.Item;
}

/**
 * Maps a `TransactWriteItems` failure to a {@linkcode CommitResult}, or
 * throws a retryable conflict. The checkpoint update is the last item.
 */
export function classifyCommitError(
  error: unknown,
  itemCount: number,
  shardId: string,
): CommitResult {
  if (isNamed(error, "TransactionCanceledException")) {
    const reasons =
      (error as { CancellationReasons?: { Code?: string; Message?: string }[] })
        .CancellationReasons ?? [];
    if (reasons[itemCount - 1]?.Code === "ConditionalCheckFailed") {
      return { kind: "lease_lost" };
    }
    if (
      reasons.some((r) =>
        r.Code === "TransactionConflict" || r.Code === "ThrottlingError" ||
        r.Code === "ProvisionedThroughputExceeded"
      )
    ) {
      throw coordinationConflict(`commit shard "${shardId}"`, error);
    }
    const failed = reasons.findIndex((r) =>
      r.Code !== undefined && r.Code !== "None"
    );
    return {
      kind: "rejected",
      reason: failed >= 0
        ? `effect ${failed}: ${reasons[failed]?.Code} ${
          reasons[failed]?.Message ?? ""
        }`.trim()
        : error.message,
    };
  }
  if (isNamed(error, "TransactionConflictException")) {
    throw coordinationConflict(`commit shard "${shardId}"`, error);
  }
  if (isNamed(error, "ValidationException")) {
    return { kind: "rejected", reason: error.message };
  }
  throw error;
}

/** Matches SDK errors by name, so that two copies of the SDK still agree. */
function isNamed(error: unknown, name: string): error is Error {
  return error instanceof Error && error.name === name;
}

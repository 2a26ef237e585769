/**
 * {@linkcode StreamSource} over `@aws-sdk/client-dynamodb-streams`.
 *
 * @module
 */
import {
  type _Record,
  DescribeStreamCommand,
  type DescribeStreamCommandOutput,
  GetRecordsCommand,
  type GetRecordsCommandOutput,
  GetShardIteratorCommand,
  type GetShardIteratorCommandOutput,
} from "@aws-sdk/client-dynamodb-streams";
import {
  classifyFailure,
  StreamWorkerError,
  type StreamWorkerErrorCode,
  toError,
} from "./errors.ts";
import type {
  DescribeStreamInput,
  DescribeStreamPage,
  RecordsPage,
  ShardPosition,
  StreamImage,
  StreamRecord,
  StreamShard,
  StreamSource,
} from "./stream_source.ts";

/** The part of `DynamoDBStreamsClient` the adapter uses (a real client fits). */
export interface StreamsClientLike {
  /** Sends one command. */
  send(
    command:
      | DescribeStreamCommand
      | GetShardIteratorCommand
      | GetRecordsCommand,
    options?: { abortSignal?: AbortSignal },
  ): Promise<unknown>;
}

const ERROR_CODES: Readonly<
  Record<string, readonly [StreamWorkerErrorCode, boolean]>
> = {
  LimitExceededException: ["STREAM_THROTTLED", true],
  ProvisionedThroughputExceededException: ["STREAM_THROTTLED", true],
  ThrottlingException: ["STREAM_THROTTLED", true],
  RequestLimitExceeded: ["STREAM_THROTTLED", true],
  ExpiredIteratorException: ["STREAM_ITERATOR_EXPIRED", false],
  TrimmedDataAccessException: ["STREAM_DATA_TRIMMED", false],
  ResourceNotFoundException: ["STREAM_NOT_FOUND", false],
  InternalServerError: ["STREAM_UNAVAILABLE", true],
};

/**
 * Maps an SDK error to a {@linkcode StreamWorkerError} by its `name`.
 * Abort errors are returned unchanged so cancellation stays cancellation.
 *
 * @example Map a throttle (ignored by doc tests: loading the SDK needs env access)
 * ```ts ignore
 * import assert from "node:assert/strict";
 * import { classifyStreamsError } from "./stream_source_aws.ts";
 * import { StreamWorkerError } from "./errors.ts";
 *
 * const e = Object.assign(new Error("slow down"), { name: "LimitExceededException" });
 * const mapped = classifyStreamsError(e, "read shard \"s\"");
 * assert.ok(mapped instanceof StreamWorkerError);
 * assert.equal(mapped.code, "STREAM_THROTTLED");
 * ```
 */
export function classifyStreamsError(
  error: unknown,
  action: string,
): StreamWorkerError | Error {
  const e = toError(error);
  if (e.name === "AbortError") return e;
  const mapped = ERROR_CODES[e.name];
  if (mapped !== undefined) {
    return new StreamWorkerError(mapped[0], `Cannot ${action}: ${e.name}`, {
      cause: e,
      retryable: mapped[1],
    });
  }
  // No answer, a 5xx or an unknown failure is retried; a refusal no retry fixes (access denied) is not.
  return new StreamWorkerError(
    "STREAM_UNAVAILABLE",
    `Cannot ${action}: ${e.message}`,
    { cause: e, retryable: classifyFailure(e) !== "fatal" },
  );
}

/**
 * Creates a {@linkcode StreamSource} for one stream over a DynamoDB Streams client.
 *
 * @param client A `DynamoDBStreamsClient` (or anything with the same `send`).
 * @param streamArn The stream to read.
 * @returns The source.
 *
 * @example
 * ```ts ignore
 * import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
 * import { createAwsStreamSource } from "./stream_source_aws.ts";
 *
 * const source = createAwsStreamSource(new DynamoDBStreamsClient({}), "arn:aws:dynamodb:...:stream/...");
 * ```
 */
export function createAwsStreamSource(
  client: StreamsClientLike,
  streamArn: string,
): StreamSource {
  function opts(
    signal: AbortSignal | undefined,
  ): { abortSignal?: AbortSignal } {
    return signal ? { abortSignal: signal } : {};
  }
  return {
    streamArn,
    async describeStream(
      input: DescribeStreamInput,
      signal?: AbortSignal,
    ): Promise<DescribeStreamPage> {
      try {
        const out = await client.send(
          new DescribeStreamCommand({
            StreamArn: streamArn,
            ...(input.limit === undefined ? {} : { Limit: input.limit }),
            ...(input.exclusiveStartShardId === undefined
              ? {}
              : { ExclusiveStartShardId: input.exclusiveStartShardId }),
            ...(input.childrenOf === undefined ? {} : {
              ShardFilter: {
                Type: "CHILD_SHARDS",
                ShardId: input.childrenOf,
              },
            }),
          }),
          opts(signal),
        ) as DescribeStreamCommandOutput;
        const d = out.StreamDescription;
        const shards: StreamShard[] = [];
        for (const s of d?.Shards ?? []) {
          if (s.ShardId === undefined) continue;
          shards.push({
            shardId: s.ShardId,
            ...(s.ParentShardId ? { parentShardId: s.ParentShardId } : {}),
            ...(s.SequenceNumberRange?.StartingSequenceNumber
              ? {
                startingSequenceNumber:
                  s.SequenceNumberRange.StartingSequenceNumber,
              }
              : {}),
            ...(s.SequenceNumberRange?.EndingSequenceNumber
              ? {
                endingSequenceNumber:
                  s.SequenceNumberRange.EndingSequenceNumber,
              }
              : {}),
          });
        }
        return {
          status: d?.StreamStatus ?? "ENABLED",
          shards,
          ...(d?.LastEvaluatedShardId
            ? { lastEvaluatedShardId: d.LastEvaluatedShardId }
            : {}),
        };
      } catch (error) {
        throw classifyStreamsError(error, `describe stream "${streamArn}"`);
      }
    },
    async getShardIterator(
      shardId: string,
      position: ShardPosition,
      signal?: AbortSignal,
    ): Promise<string> {
      try {
        const out = await client.send(
          new GetShardIteratorCommand({
            StreamArn: streamArn,
            ShardId: shardId,
            ShardIteratorType: position.type,
            ...("sequenceNumber" in position
              ? { SequenceNumber: position.sequenceNumber }
              : {}),
          }),
          opts(signal),
        ) as GetShardIteratorCommandOutput;
        if (out.ShardIterator === undefined) {
          throw new StreamWorkerError(
            "STREAM_NOT_FOUND",
            `Cannot open shard "${shardId}": no iterator returned`,
          );
        }
        return out.ShardIterator;
      } catch (error) {
        if (error instanceof StreamWorkerError) throw error;
        throw classifyStreamsError(error, `open shard "${shardId}"`);
      }
    },
    async getRecords(
      shardIterator: string,
      limit: number,
      signal?: AbortSignal,
    ): Promise<RecordsPage> {
      try {
        const out = await client.send(
          new GetRecordsCommand({ ShardIterator: shardIterator, Limit: limit }),
          opts(signal),
        ) as GetRecordsCommandOutput;
        const records = (out.Records ?? []).map(fromSdkRecord).filter((
          r,
        ): r is StreamRecord => r !== undefined);
        return {
          records,
          ...(out.NextShardIterator
            ? { nextShardIterator: out.NextShardIterator }
            : {}),
        };
      } catch (error) {
        throw classifyStreamsError(error, "read records");
      }
    },
  };
}

/** Converts an SDK record to a {@linkcode StreamRecord}; `undefined` when it lacks a sequence number. */
export function fromSdkRecord(r: _Record): StreamRecord | undefined {
  const d = r.dynamodb;
  if (d?.SequenceNumber === undefined || r.eventName === undefined) {
    return undefined;
  }
  return {
    eventId: r.eventID ?? d.SequenceNumber,
    eventName: r.eventName,
    sequenceNumber: d.SequenceNumber,
    approximateCreationTime: d.ApproximateCreationDateTime?.getTime() ?? 0,
    sizeBytes: d.SizeBytes ?? 0,
    keys: (d.Keys ?? {}) as StreamImage,
    ...(d.NewImage ? { newImage: d.NewImage as StreamImage } : {}),
    ...(d.OldImage ? { oldImage: d.OldImage as StreamImage } : {}),
    ...(r.userIdentity?.Type
      ? {
        userIdentity: {
          type: r.userIdentity.Type,
          principalId: r.userIdentity.PrincipalId ?? "",
        },
      }
      : {}),
  };
}

/**
 * The `StreamSource` port: the DynamoDB Streams operations the framework
 * needs, in a runtime-neutral, camelCase shape. The AWS adapter lives in
 * `stream_source_aws.ts`; tests use the in-memory fake in
 * `tests/_fakes/fake_stream.ts`.
 *
 * Errors are thrown as {@linkcode StreamWorkerError} with one of the
 * `STREAM_*` codes, so the reader can react to throttling, expired
 * iterators and trimmed data without knowing the SDK.
 *
 * @module
 */
import type { AttributeValue } from "@aws-sdk/client-dynamodb";

/** The four iterator types DynamoDB Streams supports (no timestamp type). */
export const SHARD_ITERATOR_TYPES = [
  "TRIM_HORIZON",
  "LATEST",
  "AT_SEQUENCE_NUMBER",
  "AFTER_SEQUENCE_NUMBER",
] as const;
/** One of {@linkcode SHARD_ITERATOR_TYPES}. */
export type ShardIteratorType = typeof SHARD_ITERATOR_TYPES[number];

/** Where to open a shard iterator. */
export type ShardPosition =
  | { readonly type: "TRIM_HORIZON" | "LATEST" }
  | {
    readonly type: "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER";
    readonly sequenceNumber: string;
  };

/** A shard as listed by DescribeStream. */
export interface StreamShard {
  /** Shard id. */
  readonly shardId: string;
  /** The parent shard, when the shard came from a rollover or split. */
  readonly parentShardId?: string;
  /** First sequence number of the shard. */
  readonly startingSequenceNumber?: string;
  /** Set when the shard is closed (no more records will be added). */
  readonly endingSequenceNumber?: string;
}

/** Input of {@linkcode StreamSource.describeStream}. */
export interface DescribeStreamInput {
  /** Continue after this shard id (the previous page's `lastEvaluatedShardId`). */
  readonly exclusiveStartShardId?: string;
  /** Shards per page, 1-100. @default 100 */
  readonly limit?: number;
  /** Return only the children of this shard (`ShardFilter` `CHILD_SHARDS`). */
  readonly childrenOf?: string;
}

/** One page of DescribeStream. */
export interface DescribeStreamPage {
  /** `ENABLING | ENABLED | DISABLING | DISABLED`. */
  readonly status: string;
  /** Shards of this page, in no particular order. */
  readonly shards: readonly StreamShard[];
  /** Present when another page follows. */
  readonly lastEvaluatedShardId?: string;
}

/** A DynamoDB item image or key map. */
export type StreamImage = Readonly<Record<string, AttributeValue>>;

/** A stream record in the framework's normalized shape (mirrors `DynamoDBStreamEvent` records). */
export interface StreamRecord {
  /** Globally unique event id. */
  readonly eventId: string;
  /** `INSERT`, `MODIFY` or `REMOVE`. */
  readonly eventName: "INSERT" | "MODIFY" | "REMOVE";
  /** Sequence number (decimal string; compare numerically). */
  readonly sequenceNumber: string;
  /** `ApproximateCreationDateTime` in epoch milliseconds (1 s precision). */
  readonly approximateCreationTime: number;
  /** Size of the record in bytes. */
  readonly sizeBytes: number;
  /** Primary key of the item. */
  readonly keys: StreamImage;
  /** Item after the change, per the stream view type. */
  readonly newImage?: StreamImage;
  /** Item before the change, per the stream view type. */
  readonly oldImage?: StreamImage;
  /** Present for service deletes (TTL): `{ type: "Service", principalId: "dynamodb.amazonaws.com" }`. */
  readonly userIdentity?: {
    readonly type: string;
    readonly principalId: string;
  };
}

/** One GetRecords response. */
export interface RecordsPage {
  /** Records, possibly none even when more exist further on. */
  readonly records: readonly StreamRecord[];
  /** The next iterator; absent when the shard is closed and fully read. */
  readonly nextShardIterator?: string;
}

/** The DynamoDB Streams operations the framework uses, for one stream. */
export interface StreamSource {
  /** The stream ARN (also used to scope coordination items). */
  readonly streamArn: string;
  /**
   * One page of DescribeStream.
   *
   * @throws {StreamWorkerError} `STREAM_THROTTLED`, `STREAM_NOT_FOUND`, `STREAM_UNAVAILABLE`
   */
  describeStream(
    input: DescribeStreamInput,
    signal?: AbortSignal,
  ): Promise<DescribeStreamPage>;
  /**
   * Opens an iterator.
   *
   * @throws {StreamWorkerError} `STREAM_DATA_TRIMMED` when the sequence number is past retention,
   * `STREAM_THROTTLED`, `STREAM_NOT_FOUND`, `STREAM_UNAVAILABLE`
   */
  getShardIterator(
    shardId: string,
    position: ShardPosition,
    signal?: AbortSignal,
  ): Promise<string>;
  /**
   * Reads up to `limit` (1-1000) records.
   *
   * @throws {StreamWorkerError} `STREAM_ITERATOR_EXPIRED`, `STREAM_DATA_TRIMMED`, `STREAM_THROTTLED`,
   * `STREAM_NOT_FOUND`, `STREAM_UNAVAILABLE`
   */
  getRecords(
    shardIterator: string,
    limit: number,
    signal?: AbortSignal,
  ): Promise<RecordsPage>;
}

/** Maximum `Limit` of GetRecords. */
export const MAX_GET_RECORDS_LIMIT = 1000;
/** Maximum `Limit` of DescribeStream. */
export const MAX_DESCRIBE_STREAM_LIMIT = 100;
/** Lifetime of a shard iterator (15 minutes). */
export const ITERATOR_LIFETIME_MS = 15 * 60_000;

/**
 * Lists every shard of the stream, following `lastEvaluatedShardId`.
 *
 * @example Two pages
 * ```ts
 * import assert from "node:assert/strict";
 * import { listAllShards, type StreamSource } from "./stream_source.ts";
 *
 * const source: StreamSource = {
 *   streamArn: "arn",
 *   describeStream: (input) =>
 *     Promise.resolve(input.exclusiveStartShardId === undefined
 *       ? { status: "ENABLED", shards: [{ shardId: "a" }], lastEvaluatedShardId: "a" }
 *       : { status: "ENABLED", shards: [{ shardId: "b" }] }),
 *   getShardIterator: () => Promise.reject(new Error("unused")),
 *   getRecords: () => Promise.reject(new Error("unused")),
 * };
 * assert.deepEqual((await listAllShards(source)).map((s) => s.shardId), ["a", "b"]);
 * ```
 */
export async function listAllShards(
  source: StreamSource,
  options: { readonly childrenOf?: string; readonly signal?: AbortSignal } = {},
): Promise<StreamShard[]> {
  const shards: StreamShard[] = [];
  let start: string | undefined;
  do {
    options.signal?.throwIfAborted();
    const page = await source.describeStream(
      {
        limit: MAX_DESCRIBE_STREAM_LIMIT,
        ...(start === undefined ? {} : { exclusiveStartShardId: start }),
        ...(options.childrenOf === undefined
          ? {}
          : { childrenOf: options.childrenOf }),
      },
      options.signal,
    );
    shards.push(...page.shards);
    start = page.lastEvaluatedShardId;
  } while (start !== undefined);
  return shards;
}

/**
 * An in-memory DynamoDB stream implementing {@linkcode StreamSource}, with
 * fault injection: throttles, expired iterators, shard splits, trimmed data,
 * small DescribeStream pages. Time comes from an injected clock.
 *
 * @module
 */
import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import type { Clock } from "../../core/clock.ts";
import {
  StreamWorkerError,
  type StreamWorkerErrorCode,
} from "../../workers/errors.ts";
import {
  type DescribeStreamInput,
  type DescribeStreamPage,
  ITERATOR_LIFETIME_MS,
  type RecordsPage,
  type ShardPosition,
  type StreamRecord,
  type StreamShard,
  type StreamSource,
} from "../../workers/stream_source.ts";

/** Operations faults can be injected into. */
export type FakeStreamOperation =
  | "describeStream"
  | "getShardIterator"
  | "getRecords";

/** What to put into the stream. */
export interface FakeRecordInput {
  /** Partition key value. */
  readonly pk: string;
  /** Sort key value. @default "#STATE" */
  readonly sk?: string;
  /** @default "MODIFY" */
  readonly eventName?: "INSERT" | "MODIFY" | "REMOVE";
  /** Extra attributes of the new image. */
  readonly attributes?: Readonly<Record<string, AttributeValue>>;
  /** Creation time override (epoch ms). @default clock.now() */
  readonly createdAt?: number;
}

interface FakeShard {
  readonly shardId: string;
  readonly parentShardId?: string;
  readonly records: StreamRecord[];
  closed: boolean;
  /** Records before this index are trimmed. */
  trimIndex: number;
}

interface FakeIterator {
  readonly shardId: string;
  readonly index: number;
  readonly issuedAt: number;
}

/** Options of {@linkcode FakeStream}. */
export interface FakeStreamOptions {
  /** Clock for record times and iterator expiry. */
  readonly clock: Clock;
  /** Most records one GetRecords returns regardless of `limit`. @default 1000 */
  readonly pageSize?: number;
  /** Most shards one DescribeStream page returns. @default 100 */
  readonly describePageSize?: number;
  /** Stream ARN. @default "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-01-01T00:00:00.000" */
  readonly streamArn?: string;
}

/** The fake stream. */
export class FakeStream implements StreamSource {
  /** Stream ARN. */
  readonly streamArn: string;
  /** Calls per operation. */
  readonly calls: Record<FakeStreamOperation, number> = {
    describeStream: 0,
    getShardIterator: 0,
    getRecords: 0,
  };
  /** Every iterator request, for assertions. */
  readonly iteratorRequests: {
    readonly shardId: string;
    readonly position: ShardPosition;
  }[] = [];
  #clock: Clock;
  #pageSize: number;
  #describePageSize: number;
  #shards: FakeShard[] = [];
  #iterators = new Map<string, FakeIterator>();
  #expiredIterators = new Set<string>();
  #faults: { op: FakeStreamOperation; code: StreamWorkerErrorCode }[] = [];
  #seq = 100_000_000_000_000_000_000n;
  #iteratorSeq = 0;

  /** Creates an empty stream. */
  constructor(options: FakeStreamOptions) {
    this.#clock = options.clock;
    this.#pageSize = options.pageSize ?? 1000;
    this.#describePageSize = options.describePageSize ?? 100;
    this.streamArn = options.streamArn ??
      "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-01-01T00:00:00.000";
  }

  /** Adds an open shard. */
  addShard(shardId: string, parentShardId?: string): void {
    this.#shards.push({
      shardId,
      ...(parentShardId === undefined ? {} : { parentShardId }),
      records: [],
      closed: false,
      trimIndex: 0,
    });
  }

  /** Appends a record to an open shard and returns it. */
  put(shardId: string, input: FakeRecordInput): StreamRecord {
    const shard = this.#shard(shardId);
    if (shard.closed) {
      throw new Error(`Cannot put into shard "${shardId}": closed`);
    }
    this.#seq += 1n;
    const keys: Record<string, AttributeValue> = {
      PK: { S: input.pk },
      SK: { S: input.sk ?? "#STATE" },
    };
    const record: StreamRecord = {
      eventId: `ev-${this.#seq}`,
      eventName: input.eventName ?? "MODIFY",
      sequenceNumber: String(this.#seq),
      approximateCreationTime:
        Math.floor((input.createdAt ?? this.#clock.now()) / 1000) * 1000,
      sizeBytes: 100,
      keys,
      newImage: { ...keys, ...(input.attributes ?? {}) },
    };
    shard.records.push(record);
    return record;
  }

  /** Closes a shard: readers reach its end after its last record. */
  close(shardId: string): void {
    this.#shard(shardId).closed = true;
  }

  /** Closes `parent` and opens `children` with it as parent (rollover when one child). */
  split(parent: string, children: readonly string[]): void {
    this.close(parent);
    for (const c of children) this.addShard(c, parent);
  }

  /** Trims the first `count` records of a shard (retention passed). */
  trim(shardId: string, count: number): void {
    const shard = this.#shard(shardId);
    shard.trimIndex = Math.min(shard.records.length, shard.trimIndex + count);
  }

  /** Makes every iterator issued so far expire. */
  expireIterators(): void {
    for (const id of this.#iterators.keys()) this.#expiredIterators.add(id);
  }

  /** The next `times` calls of `op` fail with `code`. */
  injectFault(
    op: FakeStreamOperation,
    code: StreamWorkerErrorCode,
    times = 1,
  ): void {
    for (let i = 0; i < times; i++) this.#faults.push({ op, code });
  }

  /** Records of a shard. */
  records(shardId: string): readonly StreamRecord[] {
    return this.#shard(shardId).records;
  }

  describeStream(
    input: DescribeStreamInput,
    signal?: AbortSignal,
  ): Promise<DescribeStreamPage> {
    signal?.throwIfAborted();
    this.calls.describeStream++;
    this.#maybeFail("describeStream");
    let shards = this.#shards;
    if (input.childrenOf !== undefined) {
      shards = shards.filter((s) => s.parentShardId === input.childrenOf);
    }
    let start = 0;
    if (input.exclusiveStartShardId !== undefined) {
      start = shards.findIndex((s) =>
        s.shardId === input.exclusiveStartShardId
      ) + 1;
    }
    const limit = Math.min(input.limit ?? 100, this.#describePageSize);
    const page = shards.slice(start, start + limit);
    const more = start + limit < shards.length;
    const last = page[page.length - 1];
    return Promise.resolve({
      status: "ENABLED",
      shards: page.map((s) => this.#describe(s)),
      ...(more && last ? { lastEvaluatedShardId: last.shardId } : {}),
    });
  }

  getShardIterator(
    shardId: string,
    position: ShardPosition,
    signal?: AbortSignal,
  ): Promise<string> {
    signal?.throwIfAborted();
    this.calls.getShardIterator++;
    this.iteratorRequests.push({ shardId, position });
    this.#maybeFail("getShardIterator");
    const shard = this.#shard(shardId);
    let index: number;
    switch (position.type) {
      case "TRIM_HORIZON":
        index = shard.trimIndex;
        break;
      case "LATEST":
        index = shard.records.length;
        break;
      case "AT_SEQUENCE_NUMBER":
      case "AFTER_SEQUENCE_NUMBER": {
        const at = shard.records.findIndex((r) =>
          r.sequenceNumber === position.sequenceNumber
        );
        if (at < 0) {
          throw new StreamWorkerError(
            "STREAM_NOT_FOUND",
            `Cannot open shard "${shardId}": unknown sequence number`,
          );
        }
        index = position.type === "AT_SEQUENCE_NUMBER" ? at : at + 1;
        if (index < shard.trimIndex) {
          throw new StreamWorkerError(
            "STREAM_DATA_TRIMMED",
            `Cannot open shard "${shardId}": data trimmed`,
          );
        }
        break;
      }
      default: {
        const _exhaustive: never = position;
        throw new TypeError(`Unknown position ${String(_exhaustive)}`);
      }
    }
    return Promise.resolve(this.#issue(shardId, index));
  }

  getRecords(
    shardIterator: string,
    limit: number,
    signal?: AbortSignal,
  ): Promise<RecordsPage> {
    signal?.throwIfAborted();
    this.calls.getRecords++;
    this.#maybeFail("getRecords");
    const it = this.#iterators.get(shardIterator);
    if (
      it === undefined || this.#expiredIterators.has(shardIterator) ||
      this.#clock.now() - it.issuedAt > ITERATOR_LIFETIME_MS
    ) {
      throw new StreamWorkerError(
        "STREAM_ITERATOR_EXPIRED",
        "Cannot read records: iterator expired",
      );
    }
    const shard = this.#shard(it.shardId);
    if (it.index < shard.trimIndex) {
      throw new StreamWorkerError(
        "STREAM_DATA_TRIMMED",
        `Cannot read shard "${it.shardId}": data trimmed`,
      );
    }
    const n = Math.max(1, Math.min(limit, this.#pageSize));
    const records = shard.records.slice(it.index, it.index + n);
    const index = it.index + records.length;
    const atEnd = shard.closed && index >= shard.records.length;
    return Promise.resolve({
      records,
      ...(atEnd ? {} : { nextShardIterator: this.#issue(it.shardId, index) }),
    });
  }

  #issue(shardId: string, index: number): string {
    const id = `it-${++this.#iteratorSeq}`;
    this.#iterators.set(id, { shardId, index, issuedAt: this.#clock.now() });
    return id;
  }

  #maybeFail(op: FakeStreamOperation): void {
    const i = this.#faults.findIndex((f) => f.op === op);
    if (i < 0) return;
    const [fault] = this.#faults.splice(i, 1);
    if (fault === undefined) return;
    throw new StreamWorkerError(
      fault.code,
      `Cannot ${op}: injected ${fault.code}`,
      {
        retryable: fault.code === "STREAM_THROTTLED" ||
          fault.code === "STREAM_UNAVAILABLE",
      },
    );
  }

  #shard(shardId: string): FakeShard {
    const shard = this.#shards.find((s) => s.shardId === shardId);
    if (shard === undefined) {
      throw new StreamWorkerError(
        "STREAM_NOT_FOUND",
        `Cannot find shard "${shardId}"`,
      );
    }
    return shard;
  }

  #describe(s: FakeShard): StreamShard {
    const first = s.records[0];
    const last = s.records[s.records.length - 1];
    return {
      shardId: s.shardId,
      ...(s.parentShardId === undefined
        ? {}
        : { parentShardId: s.parentShardId }),
      ...(first ? { startingSequenceNumber: first.sequenceNumber } : {}),
      ...(s.closed
        ? { endingSequenceNumber: last?.sequenceNumber ?? String(this.#seq) }
        : {}),
    };
  }
}

/**
 * Dead letters in the table itself, next to the leases (reserved namespace,
 * so they are in no namespace and in no GSI): the full record, why it was
 * given up on, and a redrive that re-runs the handler and deletes the
 * letter in the same transaction as the handler's effects, so a redrive
 * counts exactly once too.
 *
 * | attribute | value |
 * |-----------|-------|
 * | `PK` | `_/STREAM#{consumer}#DLQ#{YYYY-MM-DD}` (day of the record, so no partition grows without bound) |
 * | `SK` | `#DLQ#{workload}#{shardId}#{sequenceNumber}` (`#DLQ#{shardId}#{sequenceNumber}` for letters of no one workload): a crash between sink and checkpoint rewrites the same item, and two workloads giving up on one record keep one letter each |
 * | `workload` | the workload that gave up on the record, when known |
 * | `keys`, `new_image`, `old_image` | the record's images, as maps |
 * | `event_id`, `event_name`, `sequence_number`, `shard_id`, `approximate_creation_time`, `size_bytes`, `user_identity` | the record |
 * | `reason`, `error_name`, `error_message`, `attempts`, `dead_lettered_at`, `redrive_attempts` | the failure |
 * | `ttl` | `dead_lettered_at` + retention (14 days by default) |
 *
 * @module
 */
import {
  type AttributeValue,
  DeleteItemCommand,
  PutItemCommand,
  type QueryCommand,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import type { Clock } from "../core/clock.ts";
import { queryAllItems } from "../core/store/table.ts";
import { systemClock } from "../core/clock.ts";
import {
  type DeadLetter,
  type DeadLetterReason,
  type DeadLetterSink,
  InvalidRecordError,
  type StreamHandler,
} from "./batch_processor.ts";
import {
  COORDINATION_PK_PREFIX,
  MAX_EFFECTS_PER_COMMIT,
} from "./coordination_store.ts";
import { toError } from "./errors.ts";
import type { StreamImage, StreamRecord } from "./stream_source.ts";

/** Dead letters are kept this long by default. */
export const DEAD_LETTER_RETENTION_DAYS = 14;
/** Images larger than this are not stored (the item limit is 400 KB); the keys always are. */
export const MAX_DEAD_LETTER_IMAGE_BYTES = 350_000;

/** The part of `DynamoDBClient` the dead-letter store uses. */
export interface DeadLetterClient {
  /** Sends one command. */
  send(
    command:
      | PutItemCommand
      | QueryCommand
      | DeleteItemCommand
      | UpdateItemCommand
      | TransactWriteItemsCommand,
    options?: { abortSignal?: AbortSignal },
  ): Promise<unknown>;
}

/** Options of {@linkcode createDynamoDbDeadLetterStore}. */
export interface DeadLetterStoreOptions {
  /** The table. */
  readonly tableName: string;
  /** Consumer name (the same as the coordination store's). */
  readonly consumerName: string;
  /** Stamped on letters sent through this store (one store per workload's stream worker). */
  readonly workload?: string;
  /** Retention in days. @default 14 */
  readonly retentionDays?: number;
  /** Clock for `dead_lettered_at` and `ttl`. */
  readonly clock?: Clock;
}

/** A stored dead letter. */
export interface StoredDeadLetter {
  /** Partition key. */
  readonly pk: string;
  /** Sort key. */
  readonly sk: string;
  /** Shard. */
  readonly shardId: string;
  /** The record (images may be missing when they were too large). */
  readonly record: StreamRecord;
  /** Why it was dead-lettered. */
  readonly reason: DeadLetterReason | string;
  /** Last error, `Name: message`. */
  readonly error: string;
  /** Attempts before it was dead-lettered. */
  readonly attempts: number;
  /** ISO time it was stored. */
  readonly deadLetteredAt: string;
  /** Redrives tried so far. */
  readonly redriveAttempts: number;
  /** Whether images were left out for size. */
  readonly truncated: boolean;
  /** The workload that gave up on it (absent on letters of older workers). */
  readonly workload?: string;
}

/** How a redrive runs one workload's letters. */
export interface RedriveWorkload {
  /** The workload's handler. */
  readonly handler: StreamHandler;
  /** Its filter. */
  readonly accepts: (record: StreamRecord) => boolean;
}

/** Result of {@linkcode DynamoDbDeadLetterStore.redrive}. */
export interface RedriveResult {
  /** Letters handled and deleted. */
  readonly redriven: number;
  /** Letters no selected workload accepts: kept, untouched. */
  readonly skipped: number;
  /** Letters whose handler failed again (kept, `redrive_attempts` + 1). */
  readonly failed: number;
  /** Errors of the failed ones, by sort key. */
  readonly errors: ReadonlyArray<
    { readonly sk: string; readonly error: string }
  >;
}

/** Dead-letter sink plus the operator's side: list, redrive, purge. */
export interface DynamoDbDeadLetterStore extends DeadLetterSink {
  /** Letters of the last `days` days, oldest day first. */
  list(
    options?: { days?: number; signal?: AbortSignal },
  ): Promise<StoredDeadLetter[]>;
  /**
   * Re-runs `handler` on each letter; its effects and the letter's deletion
   * commit in one transaction. A failing letter stays, with the new error.
   */
  redrive(
    handler: StreamHandler,
    options?: {
      days?: number;
      signal?: AbortSignal;
      limit?: number;
      /** Letters this rejects are kept untouched (e.g. audit records when the archiver is not run). */
      accepts?: (record: StreamRecord) => boolean;
      /**
       * Handlers by workload name: a letter that names its workload runs only
       * that one (and is kept untouched when it is not here); `handler` and
       * `accepts` serve letters that name none.
       */
      workloads?: Readonly<Record<string, RedriveWorkload>>;
      /** Called after each letter with the letters handled so far and the total. */
      onProgress?: (done: number, total: number) => void;
    },
  ): Promise<RedriveResult>;
  /** Deletes letters of the last `days` days; returns how many. */
  purge(
    options?: {
      days?: number;
      signal?: AbortSignal;
      /** Called after each deletion with the letters deleted so far and the total. */
      onProgress?: (done: number, total: number) => void;
    },
  ): Promise<number>;
}

function day(epochMs: number): string {
  return new Date(epochMs).toISOString().slice(0, 10);
}

function imageSize(image: StreamImage | undefined): number {
  return image === undefined
    ? 0
    : JSON.stringify(image, (_k, v) =>
      v instanceof Uint8Array ? "x".repeat(v.length) : v).length;
}

const TYPES = ["S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"];

/** A value DynamoDB accepts: a type-less value (DynamoDB Local shows an empty map as `{}`) becomes NULL. */
function clean(a: AttributeValue): AttributeValue {
  const key = Object.keys(a).find((k) =>
    TYPES.includes(k) &&
    (a as unknown as Record<string, unknown>)[k] !== undefined
  );
  if (key === undefined) return { NULL: true };
  if (key === "M" && a.M) {
    return {
      M: Object.fromEntries(
        Object.entries(a.M).map(([k, v]) => [k, clean(v)]),
      ),
    };
  }
  if (key === "L" && a.L) return { L: a.L.map(clean) };
  return a;
}

function m(image: StreamImage): AttributeValue {
  return clean({ M: { ...image } });
}

/** The partition key of one day's dead letters. */
export function deadLetterPartitionKey(
  consumer: string,
  dayIso: string,
): string {
  return `${COORDINATION_PK_PREFIX}${consumer}#DLQ#${dayIso}`;
}

/** The item stored for a dead letter. */
export function deadLetterItem(
  letter: DeadLetter,
  consumer: string,
  nowMs: number,
  retentionDays: number,
): Record<string, AttributeValue> {
  const r = letter.record;
  const big = imageSize(r.newImage) + imageSize(r.oldImage) >
    MAX_DEAD_LETTER_IMAGE_BYTES;
  const item: Record<string, AttributeValue> = {
    PK: { S: deadLetterPartitionKey(consumer, day(r.approximateCreationTime)) },
    SK: {
      S: letter.workload === undefined
        ? `#DLQ#${letter.shardId}#${r.sequenceNumber}`
        : `#DLQ#${letter.workload}#${letter.shardId}#${r.sequenceNumber}`,
    },
    ...(letter.workload === undefined
      ? {}
      : { workload: { S: letter.workload } }),
    "shard_id": { S: letter.shardId },
    "sequence_number": { S: r.sequenceNumber },
    "event_id": { S: r.eventId },
    "event_name": { S: r.eventName },
    "approximate_creation_time": { N: String(r.approximateCreationTime) },
    "size_bytes": { N: String(r.sizeBytes) },
    keys: m(r.keys),
    reason: { S: letter.reason },
    "error_name": { S: letter.error.name },
    "error_message": { S: letter.error.message.slice(0, 2000) },
    attempts: { N: String(letter.attempts) },
    "dead_lettered_at": { S: new Date(nowMs).toISOString() },
    "redrive_attempts": { N: "0" },
    ttl: { N: String(Math.floor(nowMs / 1000) + retentionDays * 86_400) },
    truncated: { BOOL: big },
  };
  if (!big && r.newImage) item["new_image"] = m(r.newImage);
  if (!big && r.oldImage) item["old_image"] = m(r.oldImage);
  if (r.userIdentity) {
    item["user_identity"] = {
      M: {
        type: { S: r.userIdentity.type },
        "principal_id": { S: r.userIdentity.principalId },
      },
    };
  }
  return item;
}

function map(a: AttributeValue | undefined): StreamImage | undefined {
  return a !== undefined && "M" in a && a.M !== undefined ? a.M : undefined;
}

/** Reads a stored dead letter back. */
export function deadLetterFromItem(
  item: Record<string, AttributeValue>,
): StoredDeadLetter {
  const text = (k: string): string => item[k]?.S ?? "";
  const n = (k: string): number => Number(item[k]?.N ?? "0");
  let newImage = map(item["new_image"]);
  let oldImage = map(item["old_image"]);
  let truncated = item["truncated"]?.BOOL ?? false;
  const json = item["images_json"]?.S;
  if (json !== undefined) {
    try {
      const images = JSON.parse(json) as {
        newImage?: StreamImage;
        oldImage?: StreamImage;
      };
      newImage = images.newImage;
      oldImage = images.oldImage;
      truncated = false;
    } catch {
      truncated = true; // cut at the size limit
    }
  }
  const identity = map(item["user_identity"]);
  const eventName = text("event_name");
  const record: StreamRecord = {
    eventId: text("event_id"),
    eventName: eventName === "INSERT" || eventName === "MODIFY"
      ? eventName
      : "REMOVE",
    sequenceNumber: text("sequence_number"),
    approximateCreationTime: n("approximate_creation_time"),
    sizeBytes: n("size_bytes"),
    keys: map(item["keys"]) ?? {},
    ...(newImage ? { newImage } : {}),
    ...(oldImage ? { oldImage } : {}),
    ...(identity
      ? {
        userIdentity: {
          type: identity["type"]?.S ?? "",
          principalId: identity["principal_id"]?.S ?? "",
        },
      }
      : {}),
  };
  return {
    pk: text("PK"),
    sk: text("SK"),
    shardId: text("shard_id"),
    record,
    reason: text("reason"),
    error: `${text("error_name")}: ${text("error_message")}`,
    attempts: n("attempts"),
    deadLetteredAt: text("dead_lettered_at"),
    redriveAttempts: n("redrive_attempts"),
    truncated,
    ...(item["workload"]?.S ? { workload: item["workload"].S } : {}),
  };
}

/**
 * Creates the DynamoDB dead-letter store.
 *
 * @example
 * ```ts ignore
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createDynamoDbDeadLetterStore } from "./dead_letters_dynamodb.ts";
 *
 * const dlq = createDynamoDbDeadLetterStore(new DynamoDBClient({}), { tableName: "rate-limits", consumerName: "zae-workers" });
 * console.log(await dlq.list());
 * ```
 */
export function createDynamoDbDeadLetterStore(
  client: DeadLetterClient,
  options: DeadLetterStoreOptions,
): DynamoDbDeadLetterStore {
  const table = options.tableName;
  const consumer = options.consumerName;
  const retention = options.retentionDays ?? DEAD_LETTER_RETENTION_DAYS;
  const clock = options.clock ?? systemClock;

  function days(count: number): string[] {
    const now = clock.now();
    const out: string[] = [];
    for (let i = count; i >= 0; i--) out.push(day(now - i * 86_400_000));
    return out;
  }

  function listDay(
    d: string,
    signal: AbortSignal | undefined,
  ): Promise<Record<string, AttributeValue>[]> {
    return queryAllItems(client, {
      TableName: table,
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: {
        ":pk": { S: deadLetterPartitionKey(consumer, d) },
      },
      ConsistentRead: true,
    }, signal);
  }

  async function list(
    o: { days?: number; signal?: AbortSignal } = {},
  ): Promise<StoredDeadLetter[]> {
    const out: StoredDeadLetter[] = [];
    for (const d of days(o.days ?? retention)) {
      for (const item of await listDay(d, o.signal)) {
        out.push(deadLetterFromItem(item));
      }
    }
    return out;
  }

  return {
    async send(letters, signal) {
      const now = clock.now();
      const opts = signal ? { abortSignal: signal } : {};
      await Promise.all(letters.map(async (letter) => {
        const l =
          options.workload === undefined || letter.workload !== undefined
            ? letter
            : { ...letter, workload: options.workload };
        const item = deadLetterItem(l, consumer, now, retention);
        try {
          await client.send(
            new PutItemCommand({ TableName: table, Item: item }),
            opts,
          );
        } catch (error) {
          if (
            !(error instanceof Error && error.name === "ValidationException")
          ) {
            throw error;
          }
          // The images cannot be stored as maps: keep the letter with its images as JSON text, never lose it.
          const { "new_image": _n, "old_image": _o, ...rest } = item;
          const text = JSON.stringify({
            newImage: l.record.newImage,
            oldImage: l.record.oldImage,
          });
          await client.send(
            new PutItemCommand({
              TableName: table,
              Item: {
                ...rest,
                truncated: { BOOL: true },
                "images_json": {
                  S: text.slice(0, MAX_DEAD_LETTER_IMAGE_BYTES),
                },
                "store_error": { S: error.message.slice(0, 500) },
              },
            }),
            opts,
          );
        }
      }));
    },
    list,
    async redrive(handler, o = {}) {
      const letters = await list(o);
      let redriven = 0;
      let skipped = 0;
      const errors: { sk: string; error: string }[] = [];
      const todo = letters.slice(0, o.limit ?? letters.length);
      let done = 0;
      for (const letter of todo) {
        if (done > 0) o.onProgress?.(done, todo.length);
        done++;
        const own = letter.workload !== undefined && o.workloads !== undefined
          ? o.workloads[letter.workload]
          : undefined;
        if (letter.workload !== undefined && o.workloads !== undefined) {
          if (own === undefined || !own.accepts(letter.record)) {
            skipped++;
            continue;
          }
        } else if (o.accepts && !o.accepts(letter.record)) {
          skipped++;
          continue;
        }
        const run = own?.handler ?? handler;
        const key = { PK: { S: letter.pk }, SK: { S: letter.sk } };
        try {
          if (letter.truncated) {
            throw new RangeError(
              "Cannot redrive a letter whose images were too large to store",
            );
          }
          const out = await run([letter.record], {
            signal: o.signal ?? new AbortController().signal,
            shardId: letter.shardId,
            leaseEpoch: 0,
            attempt: letter.attempts + letter.redriveAttempts + 1,
          });
          const invalid = out?.rejected?.[0];
          if (invalid !== undefined) {
            throw new InvalidRecordError(invalid.reason);
          }
          const effects: TransactWriteItem[] = [...(out?.effects ?? [])];
          if (effects.length > MAX_EFFECTS_PER_COMMIT) {
            throw new RangeError(
              `Cannot redrive: ${effects.length} effects exceed ${MAX_EFFECTS_PER_COMMIT}`,
            );
          }
          effects.push({
            Delete: {
              TableName: table,
              Key: key,
              ConditionExpression: "attribute_exists(PK)",
            },
          });
          await client.send(
            new TransactWriteItemsCommand({ TransactItems: effects }),
            o.signal ? { abortSignal: o.signal } : {},
          );
          redriven++;
        } catch (error) {
          const e = toError(error);
          errors.push({ sk: letter.sk, error: `${e.name}: ${e.message}` });
          await client.send(
            new UpdateItemCommand({
              TableName: table,
              Key: key,
              UpdateExpression:
                "SET error_name = :n, error_message = :m ADD redrive_attempts :one",
              ConditionExpression: "attribute_exists(PK)",
              ExpressionAttributeValues: {
                ":n": { S: e.name },
                ":m": { S: e.message.slice(0, 2000) },
                ":one": { N: "1" },
              },
            }),
            o.signal ? { abortSignal: o.signal } : {},
          ).catch(() => {});
        }
      }
      if (todo.length > 0) o.onProgress?.(todo.length, todo.length);
      return { redriven, skipped, failed: errors.length, errors };
    },
    async purge(o = {}) {
      let n = 0;
      const letters = await list(o);
      for (const letter of letters) {
        await client.send(
          new DeleteItemCommand({
            TableName: table,
            Key: { PK: { S: letter.pk }, SK: { S: letter.sk } },
          }),
          o.signal ? { abortSignal: o.signal } : {},
        );
        n++;
        o.onProgress?.(n, letters.length);
      }
      return n;
    },
  };
}

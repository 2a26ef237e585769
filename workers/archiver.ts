/**
 * The audit-archiver workload (spec 05 §5): copies audit items removed from
 * the table (TTL expiry or explicit deletes) to an archive as gzipped JSON
 * Lines, partitioned by UTC day.
 *
 * Differences from the reference, on purpose:
 *
 * - Namespaced (`{ns}/AUDIT#…`), legacy unprefixed (`AUDIT#…`, pre-0.10)
 *   and SK-only (`#AUDIT#…`) removals are all recognised (weakness 2).
 * - A record is never dropped: one without an old image, without `action`
 *   or with an unparsable key is archived with the fields it has plus its
 *   decoded keys in `raw_keys` (weakness 1). Legacy rows go under
 *   `audit/legacy/`.
 * - Rows are grouped by the UTC day of their own `timestamp`, not by the
 *   earliest event of the batch, and the fallback is the stream record's
 *   creation time, never "now".
 * - Object keys depend only on the shard and the first sequence number of
 *   each group, and bodies are byte-identical for the same input, so a
 *   retried batch overwrites its objects instead of duplicating them. Rows
 *   carry `stream_event_id` and `sequence_number` so that downstream readers
 *   can dedupe the overlaps a bisected retry can still produce.
 * - A failing put rejects, so the stream framework retries, bisects and
 *   finally dead-letters the records instead of losing them.
 *
 * @module
 */
import { PutObjectCommand } from "@aws-sdk/client-s3";
import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { fromAttr } from "../core/expr.ts";
import {
  PREFIX,
  RESERVED_NAMESPACE,
  safeParseNamespace,
  SK,
} from "../core/keys.ts";
import type { Workload } from "./workload.ts";

/** `Content-Type` of archive objects. */
export const ARCHIVE_CONTENT_TYPE = "application/x-ndjson";
/** `Content-Encoding` of archive objects. */
export const ARCHIVE_CONTENT_ENCODING = "gzip";

/** A value that survives a JSON round trip. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

/**
 * An attribute value as the archiver reads it. Every `AttributeValue` of
 * `@aws-sdk/client-dynamodb` is one; the archiver declares its own shape so
 * that its public types do not depend on the SDK's.
 */
export interface AttributeValueLike {
  /** String. */
  readonly S?: string | undefined;
  /** Number, as decimal text. */
  readonly N?: string | undefined;
  /** Binary (archived as `null`). */
  readonly B?: Uint8Array | undefined;
  /** String set. */
  readonly SS?: readonly string[] | undefined;
  /** Number set. */
  readonly NS?: readonly string[] | undefined;
  /** Binary set (archived as `null`). */
  readonly BS?: readonly Uint8Array[] | undefined;
  /** Map. */
  readonly M?: { readonly [name: string]: AttributeValueLike } | undefined;
  /** List. */
  readonly L?: readonly AttributeValueLike[] | undefined;
  /** Null. */
  readonly NULL?: boolean | undefined;
  /** Boolean. */
  readonly BOOL?: boolean | undefined;
}

/** An item image or key map. */
export interface AuditImage {
  /** Attributes by name. */
  readonly [name: string]: AttributeValueLike;
}

/**
 * The fields of a stream record the archiver reads. Every `StreamRecord` of
 * `./stream_source.ts` is one; the archiver declares its own shape so that
 * its public types do not depend on the SDK's.
 */
export interface AuditStreamRecord {
  /** Globally unique event id. */
  readonly eventId: string;
  /** `INSERT`, `MODIFY` or `REMOVE`. */
  readonly eventName: string;
  /** Sequence number within the shard. */
  readonly sequenceNumber: string;
  /** `ApproximateCreationDateTime` in epoch milliseconds. */
  readonly approximateCreationTime: number;
  /** Primary key of the item. */
  readonly keys: AuditImage;
  /** Item before the change. */
  readonly oldImage?: AuditImage | undefined;
  /** Present for service deletes (TTL). */
  readonly userIdentity?:
    | { readonly type: string; readonly principalId: string }
    | undefined;
}

/** Options of {@linkcode isAuditRemoval}. */
export interface IsAuditRemovalOptions {
  /**
   * Accept only removals made by DynamoDB's TTL process (`userIdentity`
   * `{ type: "Service", principalId: "dynamodb.amazonaws.com" }`), not
   * explicit deletes such as a namespace purge.
   *
   * @default {false}
   */
  readonly ttlOnly?: boolean;
}

const RESERVED_PREFIX = `${RESERVED_NAMESPACE}/`;
const TTL_PRINCIPAL = "dynamodb.amazonaws.com";

/**
 * Whether a stream record is the removal of an audit item: a `REMOVE` whose
 * partition key (from the record's keys, else its old image) is
 * `{ns}/AUDIT#…` or a legacy unprefixed `AUDIT#…`, or whose sort key starts
 * with `#AUDIT#`. Keys in the reserved `_/` namespace never match. Never
 * throws, even on a malformed record.
 *
 * @param record The stream record.
 * @param options `ttlOnly` to accept TTL deletions only.
 * @returns `true` when the archiver should handle the record.
 *
 * @example Namespaced, legacy and non-audit removals
 * ```ts
 * import assert from "node:assert/strict";
 * import { type AuditStreamRecord, isAuditRemoval } from "./archiver.ts";
 *
 * const remove = (pk: string, sk: string): AuditStreamRecord => ({
 *   eventId: "e", eventName: "REMOVE", sequenceNumber: "1",
 *   approximateCreationTime: 0,
 *   keys: { PK: { S: pk }, SK: { S: sk } },
 * });
 * assert.equal(isAuditRemoval(remove("ns1/AUDIT#user-1", "#AUDIT#01J")), true);
 * assert.equal(isAuditRemoval(remove("AUDIT#user-1", "#AUDIT#01J")), true);
 * assert.equal(isAuditRemoval(remove("ns1/BUCKET#u#r#0", "#STATE")), false);
 * assert.equal(isAuditRemoval(remove("ns1/AUDIT#user-1", "#AUDIT#01J"), { ttlOnly: true }), false);
 * ```
 */
export function isAuditRemoval(
  record: AuditStreamRecord,
  options: IsAuditRemovalOptions = {},
): boolean {
  try {
    if (record.eventName !== "REMOVE") return false;
    if (options.ttlOnly === true && !isTtlDeletion(record)) return false;
    const { pk, sk } = keyStrings(record);
    if (pk !== null && pk.startsWith(RESERVED_PREFIX)) return false;
    if (pk !== null) {
      const parsed = safeParseNamespace(pk);
      if (parsed.ok) {
        if (parsed.value.rest.startsWith(PREFIX.AUDIT)) return true;
      } else if (parsed.issue === "unprefixed" && pk.startsWith(PREFIX.AUDIT)) {
        return true;
      }
    }
    return sk !== null && sk.startsWith(SK.AUDIT);
  } catch {
    return false;
  }
}

function isTtlDeletion(record: AuditStreamRecord): boolean {
  return record.userIdentity?.type === "Service" &&
    record.userIdentity.principalId === TTL_PRINCIPAL;
}

function keyStrings(
  record: AuditStreamRecord,
): { pk: string | null; sk: string | null } {
  const keys: AuditImage | undefined = record.keys;
  const old: AuditImage | undefined = record.oldImage;
  return {
    pk: keys?.["PK"]?.S ?? old?.["PK"]?.S ?? null,
    sk: keys?.["SK"]?.S ?? old?.["SK"]?.S ?? null,
  };
}

/**
 * One archived audit event: the reference's fields decoded from the old
 * image (missing → `null`; `details` defaults to `{}`), where the key is
 * from, and the stream position for deduplication.
 */
export interface AuditRow {
  /** Event id (a ULID); from the `#AUDIT#{id}` sort key when the image lacks it. */
  readonly "event_id": JsonValue;
  /** Entity id; from the `AUDIT#{id}` partition key when the image lacks it. */
  readonly "entity_id": JsonValue;
  /** Audit action; `null` makes the row incomplete. */
  readonly action: JsonValue;
  /** ISO 8601 time of the event, as stored. */
  readonly timestamp: JsonValue;
  /** Who acted. */
  readonly principal: JsonValue;
  /** Resource concerned, if any. */
  readonly resource: JsonValue;
  /** Decoded details map; `{}` when absent or NULL. */
  readonly details: JsonValue;
  /** Namespace id from the partition key; `null` for a legacy or unparsable key. */
  readonly "namespace_id": string | null;
  /** Whether the partition key is a pre-0.10 unprefixed key. */
  readonly legacy: boolean;
  /** The stream record's `eventId`. */
  readonly "stream_event_id": string;
  /** The stream record's sequence number. */
  readonly "sequence_number": string;
  /**
   * The decoded primary key, present when the row is incomplete (no old
   * image or no `action`) or its namespace is unknown.
   */
  readonly "raw_keys"?: { readonly [key: string]: JsonValue };
}

interface ExtractedRow {
  readonly row: AuditRow;
  readonly incomplete: boolean;
}

function decode(a: AttributeValueLike | undefined): JsonValue {
  return a === undefined ? null : fromAttr(a as AttributeValue) as JsonValue;
}

function extract(record: AuditStreamRecord): ExtractedRow {
  const image: AuditImage | undefined = record.oldImage;
  const { pk, sk } = keyStrings(record);
  let namespaceId: string | null = null;
  let legacy = false;
  let keyRest: string | null = null;
  if (pk !== null) {
    const parsed = safeParseNamespace(pk);
    if (parsed.ok) {
      namespaceId = parsed.value.namespaceId;
      keyRest = parsed.value.rest;
    } else if (parsed.issue === "unprefixed") {
      legacy = true;
      keyRest = pk;
    }
  }
  let eventId = decode(image?.["event_id"]);
  if (eventId === null && sk !== null && sk.startsWith(SK.AUDIT)) {
    eventId = sk.slice(SK.AUDIT.length);
  }
  let entityId = decode(image?.["entity_id"]);
  if (
    entityId === null && keyRest !== null && keyRest.startsWith(PREFIX.AUDIT)
  ) {
    entityId = keyRest.slice(PREFIX.AUDIT.length);
  }
  const action = decode(image?.["action"]);
  const details = decode(image?.["details"]);
  const incomplete = image === undefined ||
    typeof action !== "string" || action.length === 0;
  const row: AuditRow = {
    "event_id": eventId,
    "entity_id": entityId,
    action,
    timestamp: decode(image?.["timestamp"]),
    principal: decode(image?.["principal"]),
    resource: decode(image?.["resource"]),
    details: details ?? {},
    "namespace_id": namespaceId,
    legacy,
    "stream_event_id": String(record.eventId),
    "sequence_number": String(record.sequenceNumber),
    ...(incomplete || namespaceId === null
      ? { "raw_keys": rawKeys(record, pk, sk) }
      : {}),
  };
  return { row, incomplete };
}

function rawKeys(
  record: AuditStreamRecord,
  pk: string | null,
  sk: string | null,
): { [key: string]: JsonValue } {
  const keys: AuditImage = record.keys ?? {};
  const out: { [key: string]: JsonValue } = {};
  for (const name of Object.keys(keys).sort()) out[name] = decode(keys[name]);
  if (out["PK"] === undefined && pk !== null) out["PK"] = pk;
  if (out["SK"] === undefined && sk !== null) out["SK"] = sk;
  return out;
}

/**
 * Builds the archive row of one audit removal. Never drops information: a
 * record without an old image or `action` still gives a row, with `null`
 * for what is missing and the decoded keys in `raw_keys`.
 *
 * @param record An audit removal (see {@linkcode isAuditRemoval}).
 * @returns The row.
 *
 * @example Decode a namespaced audit item
 * ```ts
 * import assert from "node:assert/strict";
 * import { extractAuditRow } from "./archiver.ts";
 *
 * const row = extractAuditRow({
 *   eventId: "ev-1", eventName: "REMOVE", sequenceNumber: "100",
 *   approximateCreationTime: 0,
 *   keys: { PK: { S: "ns1/AUDIT#user-1" }, SK: { S: "#AUDIT#01J" } },
 *   oldImage: {
 *     PK: { S: "ns1/AUDIT#user-1" }, SK: { S: "#AUDIT#01J" },
 *     event_id: { S: "01J" }, entity_id: { S: "user-1" }, action: { S: "entity_created" },
 *     timestamp: { S: "2024-01-15T14:30:00Z" }, principal: { NULL: true },
 *     details: { M: { limits: { L: [{ N: "10" }] } } },
 *   },
 * });
 * assert.equal(row.namespace_id, "ns1");
 * assert.equal(row.principal, null);
 * assert.deepEqual(row.details, { limits: [10] });
 * assert.equal(row.raw_keys, undefined);
 * ```
 */
export function extractAuditRow(record: AuditStreamRecord): AuditRow {
  return extract(record).row;
}

const ISO_TIMESTAMP =
  /^(?<year>\d{4})-(?<month>\d{2})-(?<day>\d{2})(?:[Tt ](?<hour>\d{2}):(?<minute>\d{2})(?::(?<second>\d{2})(?:[.,](?<fraction>\d+))?)?)?(?:[Zz]|(?<sign>[+-])(?<offsetHour>\d{2}):?(?<offsetMinute>\d{2}))?$/;

/** Parses an ISO 8601 date-time; no offset means UTC. `null` when invalid. */
function parseIsoTimestamp(text: string): number | null {
  const g = ISO_TIMESTAMP.exec(text.trim())?.groups;
  if (g === undefined) return null;
  const field = (name: string) => Number(g[name] ?? "0");
  const year = field("year");
  const month = field("month");
  const day = field("day");
  const hour = field("hour");
  const minute = field("minute");
  const second = field("second");
  const millis = Number((g["fraction"] ?? "").padEnd(3, "0").slice(0, 3));
  const offsetHour = field("offsetHour");
  const offsetMinute = field("offsetMinute");
  if (month < 1 || month > 12 || day < 1 || hour > 23) return null;
  if (minute > 59 || second > 59 || offsetHour > 23 || offsetMinute > 59) {
    return null;
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (date.getUTCDate() !== day) return null;
  date.setUTCHours(hour, minute, second, millis);
  const offset = (offsetHour * 60 + offsetMinute) * 60_000 *
    (g["sign"] === "-" ? -1 : 1);
  const ms = date.getTime() - offset;
  return Number.isFinite(ms) ? ms : null;
}

/** `year=YYYY/month=MM/day=DD` of a time, or `null` when out of range. */
function dayPath(ms: number): string | null {
  if (!Number.isFinite(ms)) return null;
  const date = new Date(ms);
  const year = date.getUTCFullYear();
  if (Number.isNaN(year) || year < 0 || year > 9999) return null;
  const two = (n: number) => String(n).padStart(2, "0");
  return `year=${String(year).padStart(4, "0")}/month=${
    two(date.getUTCMonth() + 1)
  }/day=${two(date.getUTCDate())}`;
}

/**
 * The partition of a row: `audit/year=YYYY/month=MM/day=DD` from the UTC
 * day of its `timestamp`, under `audit/legacy/` for a legacy row. When the
 * timestamp is missing or unparsable, `fallbackTimeMs` (the stream record's
 * `approximateCreationTime`) decides, and if that is unusable too, the Unix
 * epoch; never the current time, so that a retry lands in the same place.
 * A timestamp without an offset is read as UTC.
 *
 * @param row The row.
 * @param fallbackTimeMs Epoch milliseconds used when the timestamp is unusable.
 * @returns The partition path, without leading or trailing `/`.
 *
 * @example Offsets are converted to UTC
 * ```ts
 * import assert from "node:assert/strict";
 * import { auditPartition } from "./archiver.ts";
 *
 * const row = { timestamp: "2024-01-16T01:30:00+02:00", legacy: false };
 * assert.equal(auditPartition(row, 0), "audit/year=2024/month=01/day=15");
 * assert.equal(auditPartition({ ...row, timestamp: null, legacy: true }, Date.UTC(2023, 11, 31)),
 *   "audit/legacy/year=2023/month=12/day=31");
 * ```
 */
export function auditPartition(
  row: Pick<AuditRow, "timestamp" | "legacy">,
  fallbackTimeMs: number,
): string {
  const parsed = typeof row.timestamp === "string"
    ? parseIsoTimestamp(row.timestamp)
    : null;
  const day = (parsed === null ? null : dayPath(parsed)) ??
    dayPath(fallbackTimeMs) ?? dayPath(0);
  return `${row.legacy ? "audit/legacy" : "audit"}/${day}`;
}

/** An object handed to an {@linkcode ArchiveSink}. */
export interface ArchiveObject {
  /** Object key, relative to the sink's own prefix or directory. */
  readonly key: string;
  /** Object bytes. */
  readonly body: Uint8Array;
  /** `Content-Type`, {@linkcode ARCHIVE_CONTENT_TYPE} for audit archives. */
  readonly contentType: string;
  /** `Content-Encoding`, {@linkcode ARCHIVE_CONTENT_ENCODING} for audit archives. */
  readonly contentEncoding: string;
}

/** An archive object built from a batch, with what it holds. */
export interface AuditArchiveObject extends ArchiveObject {
  /** The partition path (`audit/…/day=DD`). */
  readonly partition: string;
  /** Rows in the object. */
  readonly rows: number;
  /** Rows with a legacy (unprefixed) key. */
  readonly legacyRows: number;
  /** Rows without an old image or without `action`. */
  readonly incompleteRows: number;
}

/** Options of {@linkcode buildArchiveObjects}. */
export interface BuildArchiveObjectsOptions {
  /** Shard the records come from; part of every object key. */
  readonly shardId: string;
  /** Prepended to every object key, e.g. `"zae/"`. @default {""} */
  readonly prefix?: string;
}

function safeKeyPart(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]/g, "_");
}

async function gzip(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  const stream = new Blob([data]).stream()
    .pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * Groups audit removals by partition and encodes each group as a gzipped
 * JSON Lines object. Groups appear in the order of their first record and
 * keep the records' order. Object keys are
 * `{prefix}{partition}/audit-{shardId}-{first sequence number}.jsonl.gz`
 * (characters outside `[A-Za-z0-9._-]` replaced by `_`); the same records in
 * the same order always give the same keys and the same bytes.
 *
 * @param records Audit removals, in shard order.
 * @param options The shard id and key prefix.
 * @returns One object per partition; none for no records.
 *
 * @example Two days give two objects
 * ```ts
 * import assert from "node:assert/strict";
 * import { type AuditStreamRecord, buildArchiveObjects } from "./archiver.ts";
 *
 * const audit = (seq: string, timestamp: string): AuditStreamRecord => ({
 *   eventId: `ev-${seq}`, eventName: "REMOVE", sequenceNumber: seq,
 *   approximateCreationTime: 0,
 *   keys: { PK: { S: "ns1/AUDIT#u1" }, SK: { S: `#AUDIT#${seq}` } },
 *   oldImage: { action: { S: "entity_created" }, timestamp: { S: timestamp } },
 * });
 * const objects = await buildArchiveObjects(
 *   [audit("100", "2024-01-15T23:59:59Z"), audit("101", "2024-01-16T00:00:01Z")],
 *   { shardId: "shardId-1", prefix: "zae/" },
 * );
 * assert.deepEqual(objects.map((o) => o.key), [
 *   "zae/audit/year=2024/month=01/day=15/audit-shardId-1-100.jsonl.gz",
 *   "zae/audit/year=2024/month=01/day=16/audit-shardId-1-101.jsonl.gz",
 * ]);
 * ```
 */
export async function buildArchiveObjects(
  records: readonly AuditStreamRecord[],
  options: BuildArchiveObjectsOptions,
): Promise<AuditArchiveObject[]> {
  const prefix = options.prefix ?? "";
  const shard = safeKeyPart(options.shardId);
  const groups = new Map<
    string,
    { rows: ExtractedRow[]; firstSequence: string }
  >();
  for (const record of records) {
    const extracted = extract(record);
    const partition = auditPartition(
      extracted.row,
      record.approximateCreationTime,
    );
    const group = groups.get(partition);
    if (group === undefined) {
      groups.set(partition, {
        rows: [extracted],
        firstSequence: extracted.row.sequence_number,
      });
    } else {
      group.rows.push(extracted);
    }
  }
  const encoder = new TextEncoder();
  const objects: AuditArchiveObject[] = [];
  for (const [partition, group] of groups) {
    const text = group.rows.map((r) => JSON.stringify(r.row) + "\n").join("");
    objects.push({
      key: `${prefix}${partition}/audit-${shard}-${
        safeKeyPart(group.firstSequence)
      }.jsonl.gz`,
      body: await gzip(encoder.encode(text)),
      contentType: ARCHIVE_CONTENT_TYPE,
      contentEncoding: ARCHIVE_CONTENT_ENCODING,
      partition,
      rows: group.rows.length,
      legacyRows: group.rows.filter((r) => r.row.legacy).length,
      incompleteRows: group.rows.filter((r) => r.incomplete).length,
    });
  }
  return objects;
}

/** Where archive objects go (S3, a directory, a test double). */
export interface ArchiveSink {
  /**
   * Stores an object, replacing any object with the same key. Rejects when
   * the object may not be stored durably.
   */
  put(object: ArchiveObject, signal?: AbortSignal): Promise<void>;
  /** A short description for logs, e.g. `s3://bucket/prefix`. */
  describe(): string;
}

/** The `PutObject` input fields the S3 sink sets. */
export interface S3PutObjectInput {
  /** Bucket name. */
  readonly Bucket?: string | undefined;
  /** Object key. */
  readonly Key?: string | undefined;
  /** Object bytes. */
  readonly Body?: unknown;
  /** `Content-Type`. */
  readonly ContentType?: string | undefined;
  /** `Content-Encoding`. */
  readonly ContentEncoding?: string | undefined;
}

/** A command whose input is a {@linkcode S3PutObjectInput}. */
export interface S3PutCommand {
  /** The request input. */
  readonly input: S3PutObjectInput;
}

/** Options of {@linkcode S3PutClient.send}. */
export interface S3SendOptions {
  /** Aborts the request. */
  readonly abortSignal?: AbortSignal;
}

/**
 * The part of an `S3Client` the S3 sink uses. The sink always sends a
 * `PutObjectCommand` of `@aws-sdk/client-s3`; the parameter is declared
 * structurally so that an `S3Client` fits and this module's public types do
 * not depend on the SDK's.
 */
export interface S3PutClient {
  /** Sends the command. */
  send(command: S3PutCommand, options?: S3SendOptions): Promise<unknown>;
}

/** Options of {@linkcode createS3ArchiveSink}. */
export interface S3ArchiveSinkOptions {
  /** Bucket name. */
  readonly bucket: string;
  /** Prepended to every object key. @default {""} */
  readonly prefix?: string;
}

/**
 * Creates an {@linkcode ArchiveSink} that writes each object with one
 * `PutObject` (`ContentType` and `ContentEncoding` from the object). A
 * failed request rejects.
 *
 * @param client An `S3Client` (or anything with its `send`).
 * @param options Bucket and key prefix.
 * @returns The sink.
 * @throws {TypeError} when `bucket` is empty.
 *
 * @example With a recording client
 * ```ts
 * import assert from "node:assert/strict";
 * import type { PutObjectCommand } from "@aws-sdk/client-s3";
 * import { createS3ArchiveSink } from "./archiver.ts";
 *
 * const sent: PutObjectCommand["input"][] = [];
 * const sink = createS3ArchiveSink(
 *   { send: (command: PutObjectCommand) => { sent.push(command.input); return Promise.resolve({}); } },
 *   { bucket: "archive", prefix: "zae/" },
 * );
 * await sink.put({ key: "audit/a.jsonl.gz", body: new Uint8Array([1]), contentType: "application/x-ndjson", contentEncoding: "gzip" });
 * assert.equal(sent[0]?.Key, "zae/audit/a.jsonl.gz");
 * assert.equal(sink.describe(), "s3://archive/zae/");
 * ```
 */
export function createS3ArchiveSink(
  client: S3PutClient,
  options: S3ArchiveSinkOptions,
): ArchiveSink {
  const { bucket } = options;
  const prefix = options.prefix ?? "";
  if (bucket.length === 0) {
    throw new TypeError("Cannot create S3 archive sink: bucket is empty");
  }
  return {
    async put(object: ArchiveObject, signal?: AbortSignal): Promise<void> {
      signal?.throwIfAborted();
      await client.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: `${prefix}${object.key}`,
          Body: object.body,
          ContentType: object.contentType,
          ContentEncoding: object.contentEncoding,
        }),
        signal ? { abortSignal: signal } : undefined,
      );
    },
    describe(): string {
      return `s3://${bucket}/${prefix}`;
    },
  };
}

function checkRelativeKey(key: string): string[] {
  const parts = key.split("/");
  const bad = key.length === 0 || key.includes("\\") || key.includes("\0") ||
    parts.some((p) => p === "" || p === "." || p === "..");
  if (bad) {
    throw new TypeError(
      `Cannot write archive object "${key}": key is not a relative path`,
    );
  }
  return parts;
}

/**
 * Creates an {@linkcode ArchiveSink} that writes `{dir}/{key}`, creating
 * parent directories. Each object is written to a hidden temporary file in
 * its target directory, flushed to disk, then renamed over the target, so a
 * crash never leaves a half-written object and a second put of the same key
 * replaces the first. Needs read and write permission on `dir`.
 *
 * @param dir The root directory.
 * @returns The sink; `put` rejects with a `TypeError` for a key that is
 * empty or has empty, `.` or `..` segments.
 * @throws {TypeError} when `dir` is empty.
 *
 * @example Write to a local directory
 * ```ts ignore
 * import { createArchiverWorkload, createDirectoryArchiveSink } from "./archiver.ts";
 *
 * const workload = createArchiverWorkload({ sink: createDirectoryArchiveSink("./archive") });
 * ```
 */
export function createDirectoryArchiveSink(dir: string): ArchiveSink {
  if (dir.length === 0) {
    throw new TypeError("Cannot create directory archive sink: dir is empty");
  }
  const root = dir.replace(/(?<=.)[\\/]+$/, "");
  return {
    async put(object: ArchiveObject, signal?: AbortSignal): Promise<void> {
      const parts = checkRelativeKey(object.key);
      signal?.throwIfAborted();
      const name = parts.pop() as string;
      const parent = [root, ...parts].join("/");
      await Deno.mkdir(parent, { recursive: true });
      const temp = `${parent}/.${name}.${crypto.randomUUID()}.tmp`;
      try {
        await Deno.writeFile(temp, object.body, signal ? { signal } : {});
        const file = await Deno.open(temp, { write: true });
        try {
          await file.sync();
        } finally {
          file.close();
        }
        signal?.throwIfAborted();
        await Deno.rename(temp, `${parent}/${name}`);
      } catch (error) {
        await Deno.remove(temp).catch(() => {});
        throw error;
      }
    },
    describe(): string {
      return `directory ${root}`;
    },
  };
}

/** What {@linkcode ArchiverWorkloadOptions.onArchived} receives. */
export interface ArchivedObjectInfo {
  /** Object key (without the sink's own prefix). */
  readonly key: string;
  /** Rows in the object. */
  readonly rows: number;
}

/** Options of {@linkcode createArchiverWorkload}. */
export interface ArchiverWorkloadOptions {
  /** Where objects go. */
  readonly sink: ArchiveSink;
  /** Prepended to every object key. @default {""} */
  readonly prefix?: string;
  /** Archive TTL deletions only (see {@linkcode IsAuditRemovalOptions}). @default {false} */
  readonly ttlOnly?: boolean;
  /**
   * Called after each object is stored. An error thrown here fails the
   * batch (and so repeats the idempotent puts).
   */
  readonly onArchived?: (info: ArchivedObjectInfo) => void;
}

/** Counter names of the archiver workload. */
export type ArchiverCounterName =
  | "archiver_events_archived_total"
  | "archiver_objects_written_total"
  | "archiver_legacy_events_total"
  | "archiver_incomplete_events_total";

/** What the archiver reads of a batch's `HandlerContext`. */
export interface ArchiverContext {
  /** Aborted when the lease is lost or the shutdown deadline passes. */
  readonly signal: AbortSignal;
  /** Shard being processed; part of every object key. */
  readonly shardId: string;
}

/**
 * The archiver as a stream `Workload` (`./workload.ts`); declared here so
 * that its types do not depend on the SDK's. Every value of this type is a
 * `Workload`.
 */
export interface ArchiverWorkload {
  /** Always `"archiver"`. */
  readonly name: "archiver";
  /** {@linkcode isAuditRemoval} with the workload's `ttlOnly`. */
  accepts(record: AuditStreamRecord): boolean;
  /**
   * Archives the accepted records of a batch; ignores the others. Rejects
   * when a put fails. Returns no DynamoDB effects.
   */
  handle(
    records: readonly AuditStreamRecord[],
    ctx: ArchiverContext,
  ): Promise<void>;
  /** The counters, monotonic. */
  counters(): Readonly<Record<ArchiverCounterName, number>>;
}

/**
 * Creates the audit-archiver workload (name `"archiver"`), to run with the
 * other workloads of a stream worker. It accepts
 * {@linkcode isAuditRemoval} records, writes one object per partition per
 * batch through the sink (passing the handler's signal) and returns no
 * DynamoDB effects. A failing put rejects, so the framework retries,
 * bisects and dead-letters; counters grow only once every object of a
 * batch is stored.
 *
 * @param options Sink, key prefix, TTL filter and callback.
 * @returns The workload.
 *
 * @example Archive one audit removal into a memory sink
 * ```ts
 * import assert from "node:assert/strict";
 * import { type ArchiveObject, createArchiverWorkload } from "./archiver.ts";
 *
 * const stored: ArchiveObject[] = [];
 * const workload = createArchiverWorkload({
 *   sink: { put: (o) => { stored.push(o); return Promise.resolve(); }, describe: () => "memory" },
 * });
 * const record = {
 *   eventId: "ev-1", eventName: "REMOVE", sequenceNumber: "100",
 *   approximateCreationTime: Date.UTC(2024, 0, 15),
 *   keys: { PK: { S: "ns1/AUDIT#u1" }, SK: { S: "#AUDIT#01J" } },
 *   oldImage: { action: { S: "entity_created" }, timestamp: { S: "2024-01-15T14:30:00Z" } },
 * };
 * assert.equal(workload.accepts(record), true);
 * await workload.handle([record], { signal: new AbortController().signal, shardId: "s1" });
 * assert.equal(stored[0]?.key, "audit/year=2024/month=01/day=15/audit-s1-100.jsonl.gz");
 * assert.equal(workload.counters().archiver_events_archived_total, 1);
 * ```
 */
export function createArchiverWorkload(
  options: ArchiverWorkloadOptions,
): ArchiverWorkload {
  const { sink, onArchived } = options;
  const prefix = options.prefix ?? "";
  const filter: IsAuditRemovalOptions = options.ttlOnly === true
    ? { ttlOnly: true }
    : {};
  const counts: Record<ArchiverCounterName, number> = {
    "archiver_events_archived_total": 0,
    "archiver_objects_written_total": 0,
    "archiver_legacy_events_total": 0,
    "archiver_incomplete_events_total": 0,
  };
  function accepts(record: AuditStreamRecord): boolean {
    return isAuditRemoval(record, filter);
  }
  const workload = {
    name: "archiver",
    accepts,
    async handle(
      records: readonly AuditStreamRecord[],
      ctx: ArchiverContext,
    ): Promise<void> {
      const objects = await buildArchiveObjects(records.filter(accepts), {
        shardId: ctx.shardId,
        prefix,
      });
      for (const object of objects) {
        ctx.signal.throwIfAborted();
        await sink.put({
          key: object.key,
          body: object.body,
          contentType: object.contentType,
          contentEncoding: object.contentEncoding,
        }, ctx.signal);
        onArchived?.({ key: object.key, rows: object.rows });
      }
      for (const object of objects) {
        counts["archiver_events_archived_total"] += object.rows;
        counts["archiver_objects_written_total"] += 1;
        counts["archiver_legacy_events_total"] += object.legacyRows;
        counts["archiver_incomplete_events_total"] += object.incompleteRows;
      }
    },
    counters(): Readonly<Record<ArchiverCounterName, number>> {
      return { ...counts };
    },
  } as const satisfies ArchiverWorkload & Workload;
  return workload;
}

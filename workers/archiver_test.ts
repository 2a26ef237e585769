import assert from "node:assert/strict";
import type { AttributeValue } from "@aws-sdk/client-dynamodb";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { mockClient } from "aws-sdk-client-mock";
import {
  ARCHIVE_CONTENT_ENCODING,
  ARCHIVE_CONTENT_TYPE,
  type ArchiveObject,
  type ArchiveSink,
  auditPartition,
  type AuditRow,
  buildArchiveObjects,
  createArchiverWorkload,
  createS3ArchiveSink,
  extractAuditRow,
  isAuditRemoval,
} from "./archiver.ts";
import type { HandlerContext } from "./batch_processor.ts";
import type { StreamRecord } from "./stream_source.ts";
import { combineWorkloads, type Workload } from "./workload.ts";

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

const SHARD = "shardId-00000001700000000000-abcdef12";
const TTL_IDENTITY = {
  type: "Service",
  principalId: "dynamodb.amazonaws.com",
} as const;

interface AuditInput {
  readonly pk?: string;
  readonly sk?: string;
  readonly seq?: string;
  readonly eventName?: StreamRecord["eventName"];
  readonly timestamp?: string;
  /** Extra or replacing attributes of the old image. */
  readonly attributes?: Readonly<Record<string, AttributeValue>>;
  /** Attributes removed from the old image. */
  readonly without?: readonly string[];
  /** No old image at all (KEYS_ONLY-like record). */
  readonly noImage?: boolean;
  /** Record keys; defaults to PK/SK. */
  readonly keys?: Readonly<Record<string, AttributeValue>>;
  readonly createdAt?: number;
  readonly userIdentity?: StreamRecord["userIdentity"];
}

/** A REMOVE of an audit item as DynamoDB Streams delivers it. */
function audit(input: AuditInput = {}): StreamRecord {
  const pk = input.pk ?? "ns1/AUDIT#user-1";
  const sk = input.sk ?? "#AUDIT#01HQ0000000000000000000001";
  const seq = input.seq ?? "100000000000000000001";
  const image: Record<string, AttributeValue> = {
    PK: { S: pk },
    SK: { S: sk },
    "event_id": { S: sk.replace("#AUDIT#", "") },
    "entity_id": { S: "user-1" },
    action: { S: "limits_set" },
    timestamp: { S: input.timestamp ?? "2024-01-15T14:30:00Z" },
    principal: { S: "arn:aws:iam::123456789012:user/alice" },
    resource: { S: "gpt-4" },
    details: { M: { limits: { L: [{ M: { name: { S: "rpm" } } }] } } },
    ttl: { N: "1705329000" },
    ...input.attributes,
  };
  for (const name of input.without ?? []) delete image[name];
  return {
    eventId: `ev-${seq}`,
    eventName: input.eventName ?? "REMOVE",
    sequenceNumber: seq,
    approximateCreationTime: input.createdAt ?? Date.UTC(2024, 0, 20, 8),
    sizeBytes: 300,
    keys: input.keys ?? { PK: { S: pk }, SK: { S: sk } },
    ...(input.noImage === true ? {} : { oldImage: image }),
    ...(input.userIdentity === undefined
      ? {}
      : { userIdentity: input.userIdentity }),
  };
}

function ctx(
  shardId = SHARD,
  signal: AbortSignal = new AbortController().signal,
): HandlerContext {
  return { signal, shardId, leaseEpoch: 1, attempt: 1 };
}

/** `xs[i]`, failing the test when it is missing. */
function nth<T>(xs: readonly T[], i: number): T {
  const x = xs[i];
  assert.ok(x !== undefined, `missing element ${i}`);
  return x;
}

async function gunzipText(body: Uint8Array): Promise<string> {
  const stream = new Blob([body as Uint8Array<ArrayBuffer>]).stream()
    .pipeThrough(new DecompressionStream("gzip"));
  return await new Response(stream).text();
}

async function rowsOf(body: Uint8Array): Promise<Record<string, unknown>[]> {
  const text = await gunzipText(body);
  assert.ok(text.endsWith("\n"), "JSON Lines end with a newline");
  return text.slice(0, -1).split("\n").map((line) => JSON.parse(line));
}

interface RecordingSink extends ArchiveSink {
  readonly puts: { object: ArchiveObject; signal: AbortSignal | undefined }[];
}

/** Records puts; fails the puts whose index (0-based) is in `failAt`. */
function recordingSink(failAt: readonly number[] = []): RecordingSink {
  const puts: RecordingSink["puts"] = [];
  let calls = 0;
  return {
    puts,
    put(object: ArchiveObject, signal?: AbortSignal): Promise<void> {
      const index = calls++;
      if (failAt.includes(index)) {
        return Promise.reject(new Error(`put ${index} failed`));
      }
      puts.push({ object, signal });
      return Promise.resolve();
    },
    describe: () => "recording",
  };
}

function s3Client(): S3Client {
  return new S3Client({
    region: "us-east-1",
    credentials: { accessKeyId: "x", secretAccessKey: "x" },
  });
}

// ---------------------------------------------------------------------------
// isAuditRemoval()
// ---------------------------------------------------------------------------

Deno.test("isAuditRemoval() accepts the removal of a namespaced audit item", () => {
  assert.equal(isAuditRemoval(audit()), true);
  assert.equal(isAuditRemoval(audit({ pk: "default/AUDIT#$SYSTEM" })), true);
});

Deno.test("isAuditRemoval() accepts a legacy unprefixed AUDIT# key", () => {
  assert.equal(isAuditRemoval(audit({ pk: "AUDIT#user-1" })), true);
  // An entity id containing "/" is still unprefixed: "#" comes first.
  assert.equal(isAuditRemoval(audit({ pk: "AUDIT#org/user-1" })), true);
});

Deno.test("isAuditRemoval() accepts an audit sort key whatever the partition key", () => {
  assert.equal(
    isAuditRemoval(audit({ pk: "ns1/SOMETHING#x", sk: "#AUDIT#01HQ" })),
    true,
  );
  assert.equal(
    isAuditRemoval(audit({ pk: "bad ns!/AUDIT#x", sk: "#AUDIT#01HQ" })),
    true,
  );
});

Deno.test("isAuditRemoval() falls back to the old image when the keys lack PK", () => {
  assert.equal(isAuditRemoval(audit({ keys: {} })), true);
  assert.equal(
    isAuditRemoval(audit({ keys: {}, sk: "#STATE", pk: "AUDIT#u" })),
    true,
  );
});

Deno.test("isAuditRemoval() rejects removals of other items", () => {
  for (
    const [pk, sk] of [
      ["ns1/BUCKET#user-1#gpt-4#0", "#STATE"],
      ["ns1/ENTITY#user-1", "#META"],
      ["ns1/ENTITY#user-1", "#USAGE#gpt-4#2024-01-15T14:00:00Z"],
      ["ns1/ENTITY#AUDIT#x", "#CONFIG"],
      ["ENTITY#user-1", "#META"],
      ["ns1/RESOURCE#AUDIT#x", "#CONFIG"],
      ["", "#STATE"],
    ] as const
  ) {
    assert.equal(isAuditRemoval(audit({ pk, sk })), false, `${pk} ${sk}`);
  }
});

Deno.test("isAuditRemoval() rejects INSERT and MODIFY of audit items", () => {
  assert.equal(isAuditRemoval(audit({ eventName: "INSERT" })), false);
  assert.equal(isAuditRemoval(audit({ eventName: "MODIFY" })), false);
  assert.equal(
    isAuditRemoval(audit({ eventName: "MODIFY", userIdentity: TTL_IDENTITY }), {
      ttlOnly: true,
    }),
    false,
  );
});

Deno.test("isAuditRemoval() never accepts keys of the reserved _/ namespace", () => {
  assert.equal(isAuditRemoval(audit({ pk: "_/AUDIT#x" })), false);
  assert.equal(
    isAuditRemoval(audit({ pk: "_/STREAM#arn", sk: "#AUDIT#01HQ" })),
    false,
  );
  assert.equal(
    isAuditRemoval(audit({ keys: {}, pk: "_/AUDIT#x", sk: "#AUDIT#01HQ" })),
    false,
  );
});

Deno.test("isAuditRemoval() with ttlOnly accepts TTL deletions only", () => {
  const ttl = { ttlOnly: true } as const;
  assert.equal(
    isAuditRemoval(audit({ userIdentity: TTL_IDENTITY }), ttl),
    true,
  );
  assert.equal(isAuditRemoval(audit(), ttl), false);
  assert.equal(
    isAuditRemoval(
      audit({ userIdentity: { type: "Service", principalId: "other" } }),
      ttl,
    ),
    false,
  );
  assert.equal(
    isAuditRemoval(
      audit({
        userIdentity: { type: "User", principalId: "dynamodb.amazonaws.com" },
      }),
      ttl,
    ),
    false,
  );
  assert.equal(isAuditRemoval(audit(), { ttlOnly: false }), true);
});

Deno.test("isAuditRemoval() returns false instead of throwing on malformed records", () => {
  const malformed = [
    { eventName: "REMOVE" },
    { eventName: "REMOVE", keys: null },
    { eventName: "REMOVE", keys: { PK: null } },
    { eventName: "REMOVE", keys: { PK: { N: "1" } } },
    { eventName: "REMOVE", keys: {}, oldImage: { PK: 1 } },
    null,
  ] as unknown as StreamRecord[];
  for (const record of malformed) {
    assert.equal(isAuditRemoval(record), false);
    assert.equal(isAuditRemoval(record, { ttlOnly: true }), false);
  }
});

// ---------------------------------------------------------------------------
// extractAuditRow()
// ---------------------------------------------------------------------------

Deno.test("extractAuditRow() decodes nested maps, lists, NULL and numbers", () => {
  const row = extractAuditRow(audit({
    attributes: {
      principal: { NULL: true },
      resource: { NULL: true },
      details: {
        M: {
          count: { N: "3" },
          ratio: { N: "0.25" },
          negative: { N: "-7" },
          missing: { NULL: true },
          flag: { BOOL: false },
          tags: { SS: ["a", "b"] },
          limits: {
            L: [
              { M: { name: { S: "rpm" }, capacity: { N: "100" } } },
              { L: [{ N: "1" }, { NULL: true }, { S: "x" }] },
            ],
          },
        },
      },
    },
  }));
  assert.deepEqual(row, {
    "event_id": "01HQ0000000000000000000001",
    "entity_id": "user-1",
    action: "limits_set",
    timestamp: "2024-01-15T14:30:00Z",
    principal: null,
    resource: null,
    details: {
      count: 3,
      ratio: 0.25,
      negative: -7,
      missing: null,
      flag: false,
      tags: ["a", "b"],
      limits: [{ name: "rpm", capacity: 100 }, [1, null, "x"]],
    },
    "namespace_id": "ns1",
    legacy: false,
    "stream_event_id": "ev-100000000000000000001",
    "sequence_number": "100000000000000000001",
  });
});

Deno.test("extractAuditRow() defaults details to {} when absent or NULL", () => {
  assert.deepEqual(
    extractAuditRow(audit({ without: ["details"] })).details,
    {},
  );
  assert.deepEqual(
    extractAuditRow(audit({ attributes: { details: { NULL: true } } })).details,
    {},
  );
});

Deno.test("extractAuditRow() gives null for missing optional fields of a complete item", () => {
  const row = extractAuditRow(audit({ without: ["principal", "resource"] }));
  assert.equal(row.principal, null);
  assert.equal(row.resource, null);
  assert.equal("raw_keys" in row, false);
});

Deno.test("extractAuditRow() marks a legacy key with a null namespace and keeps the raw keys", () => {
  const row = extractAuditRow(audit({ pk: "AUDIT#user-1" }));
  assert.equal(row.legacy, true);
  assert.equal(row.namespace_id, null);
  assert.equal(row.action, "limits_set");
  assert.deepEqual(row.raw_keys, {
    PK: "AUDIT#user-1",
    SK: "#AUDIT#01HQ0000000000000000000001",
  });
});

Deno.test("extractAuditRow() keeps a record without an old image, with ids from its keys", () => {
  const row = extractAuditRow(audit({ noImage: true }));
  assert.deepEqual(row, {
    "event_id": "01HQ0000000000000000000001",
    "entity_id": "user-1",
    action: null,
    timestamp: null,
    principal: null,
    resource: null,
    details: {},
    "namespace_id": "ns1",
    legacy: false,
    "stream_event_id": "ev-100000000000000000001",
    "sequence_number": "100000000000000000001",
    "raw_keys": {
      PK: "ns1/AUDIT#user-1",
      SK: "#AUDIT#01HQ0000000000000000000001",
    },
  });
});

Deno.test("extractAuditRow() keeps a record without action, with the fields it has", () => {
  const row = extractAuditRow(audit({ without: ["action"] }));
  assert.equal(row.action, null);
  assert.equal(row.entity_id, "user-1");
  assert.equal(row.timestamp, "2024-01-15T14:30:00Z");
  assert.deepEqual(row.details, { limits: [{ name: "rpm" }] });
  assert.ok(row.raw_keys !== undefined);
});

Deno.test("extractAuditRow() keeps a record whose partition key does not parse", () => {
  const row = extractAuditRow(
    audit({ pk: "bad ns!/AUDIT#user-1", sk: "#AUDIT#01HQ" }),
  );
  assert.equal(row.namespace_id, null);
  assert.equal(row.legacy, false);
  assert.equal(row.action, "limits_set");
  assert.deepEqual(row.raw_keys, {
    PK: "bad ns!/AUDIT#user-1",
    SK: "#AUDIT#01HQ",
  });
});

// ---------------------------------------------------------------------------
// auditPartition()
// ---------------------------------------------------------------------------

Deno.test("auditPartition() uses the UTC day of the row's timestamp", () => {
  const at = (timestamp: AuditRow["timestamp"], legacy = false) =>
    auditPartition({ timestamp, legacy }, Date.UTC(2030, 5, 6));
  assert.equal(at("2024-01-15T14:30:00Z"), "audit/year=2024/month=01/day=15");
  assert.equal(
    at("2024-01-15T23:59:59.999Z"),
    "audit/year=2024/month=01/day=15",
  );
  assert.equal(at("2024-01-16T00:00:00Z"), "audit/year=2024/month=01/day=16");
  // Python isoformat(): microseconds and +00:00.
  assert.equal(
    at("2024-03-09T08:07:06.123456+00:00"),
    "audit/year=2024/month=03/day=09",
  );
  assert.equal(
    at("2024-01-16T01:30:00+02:00"),
    "audit/year=2024/month=01/day=15",
  );
  assert.equal(
    at("2023-12-31T22:30:00-02:00"),
    "audit/year=2024/month=01/day=01",
  );
  // No offset is read as UTC, whatever the process time zone.
  assert.equal(at("2024-01-15T23:30:00"), "audit/year=2024/month=01/day=15");
  assert.equal(at("2024-01-15"), "audit/year=2024/month=01/day=15");
  assert.equal(
    at("2024-01-15T14:30:00Z", true),
    "audit/legacy/year=2024/month=01/day=15",
  );
});

Deno.test("auditPartition() falls back to the record time for a missing or bad timestamp", () => {
  const fallback = Date.UTC(2024, 1, 29, 23, 59, 59);
  const expected = "audit/year=2024/month=02/day=29";
  for (
    const timestamp of [
      null,
      "",
      "not a date",
      "2024-02-30T00:00:00Z",
      "2024-13-01T00:00:00Z",
      "2024-01-15T24:00:00Z",
      "15/01/2024",
      1705329000,
      { S: "2024-01-15" },
    ]
  ) {
    assert.equal(
      auditPartition({ timestamp, legacy: false }, fallback),
      expected,
      String(timestamp),
    );
  }
  assert.equal(
    auditPartition({ timestamp: null, legacy: true }, fallback),
    "audit/legacy/year=2024/month=02/day=29",
  );
});

Deno.test("auditPartition() uses the epoch when the fallback time is unusable too", () => {
  assert.equal(
    auditPartition({ timestamp: null, legacy: false }, Number.NaN),
    "audit/year=1970/month=01/day=01",
  );
  assert.equal(
    auditPartition({ timestamp: "x", legacy: false }, 9e15),
    "audit/year=1970/month=01/day=01",
  );
});

// ---------------------------------------------------------------------------
// buildArchiveObjects()
// ---------------------------------------------------------------------------

Deno.test("buildArchiveObjects() returns nothing for no records", async () => {
  assert.deepEqual(await buildArchiveObjects([], { shardId: SHARD }), []);
});

Deno.test("buildArchiveObjects() groups rows by the UTC day of each event across midnight", async () => {
  const records = [
    audit({ seq: "101", timestamp: "2024-01-15T23:59:58Z" }),
    audit({ seq: "102", timestamp: "2024-01-16T00:00:00Z" }),
    audit({ seq: "103", timestamp: "2024-01-15T23:59:59Z" }),
    audit({
      seq: "104",
      without: ["timestamp"],
      createdAt: Date.UTC(2024, 0, 16, 0, 0, 5),
    }),
  ];
  const objects = await buildArchiveObjects(records, { shardId: "s-1" });
  assert.deepEqual(objects.map((o) => [o.partition, o.key, o.rows]), [
    [
      "audit/year=2024/month=01/day=15",
      "audit/year=2024/month=01/day=15/audit-s-1-101.jsonl.gz",
      2,
    ],
    [
      "audit/year=2024/month=01/day=16",
      "audit/year=2024/month=01/day=16/audit-s-1-102.jsonl.gz",
      2,
    ],
  ]);
  assert.deepEqual(
    (await rowsOf(nth(objects, 0).body)).map((r) => r["sequence_number"]),
    ["101", "103"],
  );
  assert.deepEqual(
    (await rowsOf(nth(objects, 1).body)).map((r) => r["sequence_number"]),
    ["102", "104"],
  );
});

Deno.test("buildArchiveObjects() puts legacy rows under audit/legacy with a null namespace", async () => {
  const objects = await buildArchiveObjects([
    audit({ seq: "201" }),
    audit({ seq: "202", pk: "AUDIT#user-1" }),
  ], { shardId: "s-1" });
  assert.deepEqual(objects.map((o) => o.key), [
    "audit/year=2024/month=01/day=15/audit-s-1-201.jsonl.gz",
    "audit/legacy/year=2024/month=01/day=15/audit-s-1-202.jsonl.gz",
  ]);
  assert.deepEqual(objects.map((o) => o.legacyRows), [0, 1]);
  const [legacy] = await rowsOf(nth(objects, 1).body);
  assert.equal(legacy?.["namespace_id"], null);
  assert.equal(legacy?.["legacy"], true);
  assert.equal(legacy?.["entity_id"], "user-1");
});

Deno.test("buildArchiveObjects() keeps incomplete records and counts them", async () => {
  const objects = await buildArchiveObjects([
    audit({ seq: "301", noImage: true, createdAt: Date.UTC(2024, 0, 15, 9) }),
    audit({ seq: "302", without: ["action"] }),
    audit({ seq: "303" }),
  ], { shardId: "s-1" });
  assert.equal(objects.length, 1);
  assert.equal(objects[0]?.rows, 3);
  assert.equal(objects[0]?.incompleteRows, 2);
  const rows = await rowsOf(nth(objects, 0).body);
  assert.deepEqual(rows.map((r) => r["action"]), [null, null, "limits_set"]);
  assert.deepEqual(rows.map((r) => "raw_keys" in r), [true, true, false]);
});

Deno.test("buildArchiveObjects() builds keys from prefix, partition, sanitized shard id and first sequence number", async () => {
  const [object] = await buildArchiveObjects(
    [audit({ seq: "49651234567890123456789012345678901234567890123456" })],
    { shardId: "shardId-0001:a/b c#d", prefix: "zae/archive/" },
  );
  assert.equal(
    object?.key,
    "zae/archive/audit/year=2024/month=01/day=15/" +
      "audit-shardId-0001_a_b_c_d-49651234567890123456789012345678901234567890123456.jsonl.gz",
  );
  assert.equal(object?.contentType, ARCHIVE_CONTENT_TYPE);
  assert.equal(object?.contentType, "application/x-ndjson");
  assert.equal(object?.contentEncoding, ARCHIVE_CONTENT_ENCODING);
  assert.equal(object?.contentEncoding, "gzip");
});

Deno.test("buildArchiveObjects() gives the same keys and bytes for the same records", async () => {
  const records = () => [
    audit({ seq: "401", timestamp: "2024-01-15T10:00:00Z" }),
    audit({ seq: "402", timestamp: "2024-01-16T10:00:00Z" }),
    audit({ seq: "403", pk: "AUDIT#legacy-user" }),
    audit({ seq: "404", noImage: true }),
  ];
  const first = await buildArchiveObjects(records(), { shardId: SHARD });
  const second = await buildArchiveObjects(records(), { shardId: SHARD });
  assert.equal(first.length, 4);
  assert.deepEqual(second.map((o) => o.key), first.map((o) => o.key));
  for (const [i, object] of first.entries()) {
    assert.deepEqual(second[i]?.body, object.body);
    // gzip header: magic, method, flags, then a 4-byte mtime that must be 0.
    assert.deepEqual([...object.body.subarray(0, 3)], [0x1f, 0x8b, 8]);
    assert.deepEqual([...object.body.subarray(4, 8)], [0, 0, 0, 0]);
  }
  const otherShard = await buildArchiveObjects(records(), {
    shardId: "shardId-other",
  });
  for (const [i, object] of otherShard.entries()) {
    assert.notEqual(object.key, first[i]?.key);
    assert.ok(object.key.includes("/audit-shardId-other-"));
  }
});

Deno.test("buildArchiveObjects() writes compact JSON Lines, one line per event, gzip-compressed", async () => {
  const records = [
    audit({ seq: "501" }),
    audit({ seq: "502", attributes: { details: { M: { n: { N: "1.5" } } } } }),
    audit({ seq: "503", without: ["details"] }),
  ];
  const objects = await buildArchiveObjects(records, { shardId: SHARD });
  assert.equal(objects.length, 1);
  const text = await gunzipText(nth(objects, 0).body);
  const lines = text.split("\n");
  assert.equal(lines.length, records.length + 1);
  assert.equal(lines.at(-1), "");
  for (const [i, line] of lines.slice(0, -1).entries()) {
    const row = JSON.parse(line);
    assert.equal(line, JSON.stringify(row), "compact, no spaces added");
    assert.equal(row["stream_event_id"], records[i]?.eventId);
    assert.equal(row["sequence_number"], records[i]?.sequenceNumber);
    assert.deepEqual(Object.keys(row).slice(0, 7), [
      "event_id",
      "entity_id",
      "action",
      "timestamp",
      "principal",
      "resource",
      "details",
    ]);
  }
  assert.deepEqual(JSON.parse(nth(lines, 1))["details"], { n: 1.5 });
  assert.deepEqual(JSON.parse(nth(lines, 2))["details"], {});
});

// ---------------------------------------------------------------------------
// createS3ArchiveSink()
// ---------------------------------------------------------------------------

Deno.test("createS3ArchiveSink() sends one PutObject with bucket, prefixed key, body and headers", async () => {
  const client = s3Client();
  const s3 = mockClient(client);
  s3.on(PutObjectCommand).resolves({ ETag: '"abc"' });
  try {
    const sink = createS3ArchiveSink(client, {
      bucket: "audit-archive",
      prefix: "zae/",
    });
    const body = new Uint8Array([0x1f, 0x8b, 8, 0]);
    const controller = new AbortController();
    await sink.put({
      key: "audit/year=2024/month=01/day=15/audit-s-1-1.jsonl.gz",
      body,
      contentType: ARCHIVE_CONTENT_TYPE,
      contentEncoding: ARCHIVE_CONTENT_ENCODING,
    }, controller.signal);
    const calls = s3.commandCalls(PutObjectCommand);
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0]?.args[0].input, {
      Bucket: "audit-archive",
      Key: "zae/audit/year=2024/month=01/day=15/audit-s-1-1.jsonl.gz",
      Body: body,
      ContentType: "application/x-ndjson",
      ContentEncoding: "gzip",
    });
    const sendOptions = (calls[0]?.args as unknown[] | undefined)?.[1] as
      | { abortSignal?: AbortSignal }
      | undefined;
    assert.equal(sendOptions?.abortSignal, controller.signal);
    assert.equal(sink.describe(), "s3://audit-archive/zae/");
  } finally {
    s3.restore();
    client.destroy();
  }
});

Deno.test("createS3ArchiveSink() rejects when PutObject fails", async () => {
  const client = s3Client();
  const s3 = mockClient(client);
  s3.on(PutObjectCommand).rejects(new Error("AccessDenied"));
  try {
    const sink = createS3ArchiveSink(client, { bucket: "audit-archive" });
    await assert.rejects(
      sink.put({
        key: "audit/k.jsonl.gz",
        body: new Uint8Array([1]),
        contentType: ARCHIVE_CONTENT_TYPE,
        contentEncoding: ARCHIVE_CONTENT_ENCODING,
      }),
      { message: "AccessDenied" },
    );
  } finally {
    s3.restore();
    client.destroy();
  }
});

Deno.test("createS3ArchiveSink() throws TypeError for an empty bucket", () => {
  const client = s3Client();
  try {
    assert.throws(() => createS3ArchiveSink(client, { bucket: "" }), {
      name: "TypeError",
    });
  } finally {
    client.destroy();
  }
});

// ---------------------------------------------------------------------------
// createArchiverWorkload()
// ---------------------------------------------------------------------------

Deno.test("createArchiverWorkload() archives a batch through an S3 sink and counts it", async () => {
  const client = s3Client();
  const s3 = mockClient(client);
  s3.on(PutObjectCommand).resolves({});
  try {
    const archived: { key: string; rows: number }[] = [];
    const workload: Workload = createArchiverWorkload({
      sink: createS3ArchiveSink(client, { bucket: "b", prefix: "p/" }),
      prefix: "zae/",
      onArchived: (info) => archived.push(info),
    });
    assert.equal(workload.name, "archiver");
    const out = await workload.handle([
      audit({ seq: "601", timestamp: "2024-01-15T23:59:59Z" }),
      audit({ seq: "602", timestamp: "2024-01-16T00:00:01Z" }),
      audit({ seq: "603", pk: "AUDIT#old", timestamp: "2024-01-16T00:00:02Z" }),
      audit({ seq: "604", noImage: true, createdAt: Date.UTC(2024, 0, 16) }),
    ], ctx("shard-9"));
    assert.equal(out?.effects, undefined);
    const keys = s3.commandCalls(PutObjectCommand).map((c) =>
      c.args[0].input.Key
    );
    assert.deepEqual(keys, [
      "p/zae/audit/year=2024/month=01/day=15/audit-shard-9-601.jsonl.gz",
      "p/zae/audit/year=2024/month=01/day=16/audit-shard-9-602.jsonl.gz",
      "p/zae/audit/legacy/year=2024/month=01/day=16/audit-shard-9-603.jsonl.gz",
    ]);
    assert.deepEqual(archived, [
      {
        key: "zae/audit/year=2024/month=01/day=15/audit-shard-9-601.jsonl.gz",
        rows: 1,
      },
      {
        key: "zae/audit/year=2024/month=01/day=16/audit-shard-9-602.jsonl.gz",
        rows: 2,
      },
      {
        key:
          "zae/audit/legacy/year=2024/month=01/day=16/audit-shard-9-603.jsonl.gz",
        rows: 1,
      },
    ]);
    assert.deepEqual(workload.counters(), {
      "archiver_events_archived_total": 4,
      "archiver_objects_written_total": 3,
      "archiver_legacy_events_total": 1,
      "archiver_incomplete_events_total": 1,
    });
  } finally {
    s3.restore();
    client.destroy();
  }
});

Deno.test("createArchiverWorkload() rejects and counts nothing when the S3 put fails", async () => {
  const client = s3Client();
  const s3 = mockClient(client);
  s3.on(PutObjectCommand).rejects(new Error("SlowDown"));
  try {
    const archived: unknown[] = [];
    const workload = createArchiverWorkload({
      sink: createS3ArchiveSink(client, { bucket: "b" }),
      onArchived: (info) => archived.push(info),
    });
    await assert.rejects(workload.handle([audit()], ctx()), {
      message: "SlowDown",
    });
    assert.deepEqual(archived, []);
    assert.deepEqual(Object.values(workload.counters()), [0, 0, 0, 0]);
  } finally {
    s3.restore();
    client.destroy();
  }
});

Deno.test("createArchiverWorkload() counts a batch only once all its objects are stored, and a retry rewrites the same keys", async () => {
  const sink = recordingSink([1]);
  const workload = createArchiverWorkload({ sink });
  const batch = [
    audit({ seq: "701", timestamp: "2024-01-15T12:00:00Z" }),
    audit({ seq: "702", timestamp: "2024-01-16T12:00:00Z" }),
  ];
  await assert.rejects(workload.handle(batch, ctx()), {
    message: "put 1 failed",
  });
  assert.equal(workload.counters()["archiver_events_archived_total"], 0);
  assert.equal(sink.puts.length, 1);
  await workload.handle(batch, ctx());
  assert.deepEqual(workload.counters(), {
    "archiver_events_archived_total": 2,
    "archiver_objects_written_total": 2,
    "archiver_legacy_events_total": 0,
    "archiver_incomplete_events_total": 0,
  });
  const keys = sink.puts.map((p) => p.object.key);
  assert.equal(keys[0], keys[1], "the retry overwrites the first object");
  assert.deepEqual(sink.puts[1]?.object.body, sink.puts[0]?.object.body);
  assert.equal(new Set(keys).size, 2);
});

Deno.test("createArchiverWorkload() passes the handler's signal to the sink and stops when it is aborted", async () => {
  const sink = recordingSink();
  const workload = createArchiverWorkload({ sink });
  const controller = new AbortController();
  await workload.handle([audit()], ctx(SHARD, controller.signal));
  assert.equal(sink.puts[0]?.signal, controller.signal);
  assert.deepEqual(Object.keys(nth(sink.puts, 0).object).sort(), [
    "body",
    "contentEncoding",
    "contentType",
    "key",
  ]);
  controller.abort(new Error("lease lost"));
  await assert.rejects(
    workload.handle([audit({ seq: "2" })], ctx(SHARD, controller.signal)),
    { message: "lease lost" },
  );
  assert.equal(sink.puts.length, 1);
});

Deno.test("createArchiverWorkload() ignores records it does not accept and writes nothing for none", async () => {
  const sink = recordingSink();
  const workload = createArchiverWorkload({ sink });
  await workload.handle([], ctx());
  await workload.handle([
    audit({ eventName: "INSERT" }),
    audit({ pk: "ns1/BUCKET#u#r#0", sk: "#STATE" }),
    audit({ pk: "_/AUDIT#x" }),
  ], ctx());
  assert.equal(sink.puts.length, 0);
  assert.equal(workload.counters()["archiver_objects_written_total"], 0);
});

Deno.test("createArchiverWorkload() with ttlOnly archives TTL deletions only", async () => {
  const sink = recordingSink();
  const workload = createArchiverWorkload({ sink, ttlOnly: true });
  const purge = audit({ seq: "801" });
  const expiry = audit({ seq: "802", userIdentity: TTL_IDENTITY });
  assert.equal(workload.accepts(purge), false);
  assert.equal(workload.accepts(expiry), true);
  await workload.handle([purge, expiry], ctx());
  const rows = await rowsOf(nth(sink.puts, 0).object.body);
  assert.deepEqual(rows.map((r) => r["sequence_number"]), ["802"]);
});

Deno.test("createArchiverWorkload() runs as a workload of combineWorkloads()", async () => {
  const sink = recordingSink();
  const { filter, handler } = combineWorkloads([
    createArchiverWorkload({ sink }),
  ]);
  const records = [audit({ seq: "901" }), audit({ eventName: "MODIFY" })];
  assert.deepEqual(records.map((r) => filter(r)), [true, false]);
  const out = await handler(records, ctx());
  assert.deepEqual(out, { effects: [] });
  assert.equal(sink.puts.length, 1);
});

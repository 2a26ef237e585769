import assert from "node:assert/strict";
import type { StreamsClientLike } from "./stream_source_aws.ts";
import { listAllShards } from "./stream_source.ts";

// Loading the AWS SDK reads environment variables, which plain unit runs (`--allow-read=.`) do not grant.
// These tests run with `--allow-env`; without it they are reported as ignored.
const ignore = Deno.permissions.querySync({ name: "env" }).state !== "granted";
const load = async () => ({
  ...(await import("@aws-sdk/client-dynamodb-streams")),
  ...(await import("./stream_source_aws.ts")),
});

function named(name: string): Error {
  return Object.assign(new Error(name), { name });
}

Deno.test({
  name:
    "m.createAwsStreamSource() paginates DescribeStream with ExclusiveStartShardId",
  ignore,
}, async () => {
  const m = await load();
  const sent: InstanceType<typeof m.DescribeStreamCommand>[] = [];
  const client: StreamsClientLike = {
    send(command) {
      assert.ok(command instanceof m.DescribeStreamCommand);
      sent.push(command);
      const first = command.input.ExclusiveStartShardId === undefined;
      return Promise.resolve({
        StreamDescription: {
          StreamStatus: "ENABLED",
          Shards: first
            ? [{
              ShardId: "a",
              SequenceNumberRange: {
                StartingSequenceNumber: "1",
                EndingSequenceNumber: "9",
              },
            }]
            : [{ ShardId: "b", ParentShardId: "a" }],
          ...(first ? { LastEvaluatedShardId: "a" } : {}),
        },
      });
    },
  };
  const shards = await listAllShards(m.createAwsStreamSource(client, "arn"));
  assert.deepEqual(shards, [
    { shardId: "a", startingSequenceNumber: "1", endingSequenceNumber: "9" },
    { shardId: "b", parentShardId: "a" },
  ]);
  assert.equal(sent[1]?.input.ExclusiveStartShardId, "a");
  assert.equal(sent[0]?.input.Limit, 100);
});

Deno.test({
  name: "createAwsStreamSource() maps Streams exceptions to stable codes",
  ignore,
}, async () => {
  const m = await load();
  const cases: [string, string][] = [
    ["LimitExceededException", "STREAM_THROTTLED"],
    ["ExpiredIteratorException", "STREAM_ITERATOR_EXPIRED"],
    ["TrimmedDataAccessException", "STREAM_DATA_TRIMMED"],
    ["ResourceNotFoundException", "STREAM_NOT_FOUND"],
    ["InternalServerError", "STREAM_UNAVAILABLE"],
  ];
  for (const [name, code] of cases) {
    const source = m.createAwsStreamSource({
      send: () => Promise.reject(named(name)),
    }, "arn");
    await assert.rejects(source.getRecords("it", 10), {
      name: "StreamWorkerError",
      code,
    });
  }
  // Unknown failures: retried when nothing answered, not when access is denied.
  const fail = (error: Error) =>
    m.createAwsStreamSource({ send: () => Promise.reject(error) }, "arn")
      .getRecords("it", 10);
  await assert.rejects(
    fail(Object.assign(new Error("socket hang up"), { code: "ECONNRESET" })),
    { code: "STREAM_UNAVAILABLE", retryable: true },
  );
  await assert.rejects(
    fail(
      Object.assign(new Error("no"), {
        name: "AccessDeniedException",
        $metadata: { httpStatusCode: 400 },
      }),
    ),
    { code: "STREAM_UNAVAILABLE", retryable: false },
  );
});

Deno.test({
  name:
    "m.createAwsStreamSource() converts records and passes iterator positions",
  ignore,
}, async () => {
  const m = await load();
  const sent: unknown[] = [];
  const client: StreamsClientLike = {
    send(command) {
      sent.push(command);
      if (command instanceof m.GetShardIteratorCommand) {
        return Promise.resolve({ ShardIterator: "it-1" });
      }
      assert.ok(command instanceof m.GetRecordsCommand);
      return Promise.resolve({
        Records: [{
          eventID: "e1",
          eventName: "REMOVE",
          dynamodb: {
            SequenceNumber: "100",
            ApproximateCreationDateTime: new Date(5_000),
            SizeBytes: 12,
            Keys: { PK: { S: "ns/AUDIT#u" } },
            OldImage: { PK: { S: "ns/AUDIT#u" } },
          },
          userIdentity: {
            Type: "Service",
            PrincipalId: "dynamodb.amazonaws.com",
          },
        }],
      });
    },
  };
  const source = m.createAwsStreamSource(client, "arn");
  const it = await source.getShardIterator("s", {
    type: "AFTER_SEQUENCE_NUMBER",
    sequenceNumber: "99",
  });
  const page = await source.getRecords(it, 10);
  const cmd = sent[0];
  assert.ok(cmd instanceof m.GetShardIteratorCommand);
  assert.deepEqual(cmd.input, {
    StreamArn: "arn",
    ShardId: "s",
    ShardIteratorType: "AFTER_SEQUENCE_NUMBER",
    SequenceNumber: "99",
  });
  assert.equal(page.nextShardIterator, undefined, "closed shard");
  assert.deepEqual(page.records, [{
    eventId: "e1",
    eventName: "REMOVE",
    sequenceNumber: "100",
    approximateCreationTime: 5_000,
    sizeBytes: 12,
    keys: { PK: { S: "ns/AUDIT#u" } },
    oldImage: { PK: { S: "ns/AUDIT#u" } },
    userIdentity: { type: "Service", principalId: "dynamodb.amazonaws.com" },
  }]);
});

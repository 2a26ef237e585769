import assert from "node:assert/strict";
import type {
  AttributeValue,
  PutItemCommand,
  QueryCommand,
} from "@aws-sdk/client-dynamodb";
import type { DeadLetter } from "./batch_processor.ts";
import {
  createDynamoDbDeadLetterStore,
  type DeadLetterClient,
  deadLetterFromItem,
  deadLetterItem,
} from "./dead_letters_dynamodb.ts";
import type { StreamRecord } from "./stream_source.ts";

type Item = Record<string, AttributeValue>;

const record: StreamRecord = {
  eventId: "ev1",
  eventName: "MODIFY",
  sequenceNumber: "000000000000000000123",
  approximateCreationTime: Date.parse("2026-01-15T10:00:00Z"),
  sizeBytes: 10,
  keys: { PK: { S: "ns/BUCKET#e#r#0" }, SK: { S: "#STATE" } },
  // DynamoDB Local shows an empty map as a type-less `{}`.
  newImage: { PK: { S: "ns/BUCKET#e#r#0" }, meta: {} as AttributeValue },
  oldImage: {
    PK: { S: "ns/BUCKET#e#r#0" },
    nested: { M: { x: {} as AttributeValue } },
  },
};

const letter: DeadLetter = {
  shardId: "shard-1",
  record,
  reason: "effects_rejected",
  error: new Error("boom"),
  attempts: 3,
};

/** Stores puts in memory; optionally rejects items that carry images. */
function fakeClient(
  rejectImages: boolean,
): DeadLetterClient & { items: Item[] } {
  const items: Item[] = [];
  return {
    items,
    send(command) {
      const name = command.constructor.name;
      if (name === "PutItemCommand") {
        const item = (command as PutItemCommand).input.Item ?? {};
        if (rejectImages && item["new_image"] !== undefined) {
          return Promise.reject(
            Object.assign(new Error("Invalid attribute value"), {
              name: "ValidationException",
            }),
          );
        }
        items.push(item);
        return Promise.resolve({});
      }
      if (name === "QueryCommand") {
        const pk = (command as QueryCommand).input.ExpressionAttributeValues
          ?.[":pk"]?.S;
        return Promise.resolve({
          Items: items.filter((i) => i["PK"]?.S === pk),
        });
      }
      return Promise.reject(new Error(`unexpected ${name}`));
    },
  };
}

Deno.test("deadLetterItem: a type-less image value is stored as NULL, keyed by the record's day, shard and sequence", () => {
  const item = deadLetterItem(
    letter,
    "zae-workers",
    Date.parse("2026-01-15T11:00:00Z"),
    14,
  );
  assert.equal(item["PK"]?.S, "_/STREAM#zae-workers#DLQ#2026-01-15");
  assert.equal(item["SK"]?.S, "#DLQ#shard-1#000000000000000000123");
  assert.deepEqual(item["new_image"]?.M?.["meta"], { NULL: true });
  assert.deepEqual(item["old_image"]?.M?.["nested"], {
    M: { x: { NULL: true } },
  });
  const back = deadLetterFromItem(item);
  assert.equal(back.record.sequenceNumber, record.sequenceNumber);
  assert.equal(back.reason, "effects_rejected");
  assert.equal(back.error, "Error: boom");
  assert.equal(back.truncated, false);
});

Deno.test("send: when DynamoDB rejects the images, the letter is still stored (images as JSON) and reads back whole", async () => {
  const client = fakeClient(true);
  const store = createDynamoDbDeadLetterStore(client, {
    tableName: "t",
    consumerName: "zae-workers",
    clock: {
      now: () => Date.parse("2026-01-15T11:00:00Z"),
      sleep: () => Promise.resolve(),
    },
  });
  await store.send([letter]);
  assert.equal(client.items.length, 1);
  assert.equal(client.items[0]?.["new_image"], undefined);
  const [back] = await store.list({ days: 1 });
  assert.ok(back);
  assert.equal(back.truncated, false);
  assert.deepEqual(back.record.newImage?.["PK"], { S: "ns/BUCKET#e#r#0" });
  assert.deepEqual(back.record.keys, record.keys);
});

Deno.test("redrive: letters no selected workload accepts are kept untouched", async () => {
  const client = fakeClient(false);
  const store = createDynamoDbDeadLetterStore(client, {
    tableName: "t",
    consumerName: "zae-workers",
    clock: {
      now: () => Date.parse("2026-01-15T11:00:00Z"),
      sleep: () => Promise.resolve(),
    },
  });
  await store.send([letter]);
  let called = 0;
  const r = await store.redrive(() => {
    called++;
    return Promise.resolve();
  }, { days: 1, accepts: () => false });
  assert.deepEqual(r, { redriven: 0, skipped: 1, failed: 0, errors: [] });
  assert.equal(called, 0);
  assert.equal((await store.list({ days: 1 })).length, 1);
});

Deno.test("send/redrive: letters carry their workload (one letter per workload for one record) and a redrive runs only that workload; a still-invalid record stays", async () => {
  const client = fakeClient(false);
  const clock = {
    now: () => Date.parse("2026-01-15T11:00:00Z"),
    sleep: () => Promise.resolve(),
  };
  const forAggregator = createDynamoDbDeadLetterStore(client, {
    tableName: "t",
    consumerName: "zae-workers",
    workload: "aggregator",
    clock,
  });
  const forArchiver = createDynamoDbDeadLetterStore(client, {
    tableName: "t",
    consumerName: "zae-workers",
    workload: "archiver",
    clock,
  });
  await forAggregator.send([{ ...letter, reason: "invalid_record" }]);
  await forArchiver.send([letter]);
  const sks = client.items.map((i) => i["SK"]?.S).sort();
  assert.deepEqual(sks, [
    "#DLQ#aggregator#shard-1#000000000000000000123",
    "#DLQ#archiver#shard-1#000000000000000000123",
  ]);
  const listed = await forAggregator.list({ days: 1 });
  assert.deepEqual(listed.map((l) => l.workload).sort(), [
    "aggregator",
    "archiver",
  ]);
  const ran: string[] = [];
  const r = await forAggregator.redrive(() => {
    ran.push("combined");
    return Promise.resolve();
  }, {
    days: 1,
    workloads: {
      aggregator: {
        accepts: () => true,
        handler: (records) => {
          ran.push("aggregator");
          return Promise.resolve({
            rejected: records.map((record) => ({
              record,
              reason: 'attribute "b_rpm_tc" is a string',
            })),
          });
        },
      },
    },
  });
  assert.deepEqual(ran, ["aggregator"], "only the letter's own workload ran");
  assert.equal(r.skipped, 1, "the archiver's letter waits for the archiver");
  assert.equal(r.failed, 1);
  assert.match(r.errors[0]?.error ?? "", /InvalidRecordError: .*b_rpm_tc/);
});

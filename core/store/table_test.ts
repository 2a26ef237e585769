import assert from "node:assert/strict";
import type {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  QueryCommand,
} from "@aws-sdk/client-dynamodb";
import type { Clock } from "../clock.ts";
import {
  bindTable,
  createTableClient,
  queryAllItems,
  tableOf,
} from "./table.ts";

Deno.test("queryAllItems: follows LastEvaluatedKey page by page and keeps the input", async () => {
  const seen: unknown[] = [];
  const pages = [
    { Items: [{ n: { N: "1" } }], LastEvaluatedKey: { PK: { S: "a" } } },
    // A page without Items is empty, not the end.
    { LastEvaluatedKey: { PK: { S: "b" } } },
    { Items: [{ n: { N: "2" } }] },
  ];
  const client = {
    send(command: QueryCommand) {
      seen.push(command.input);
      return Promise.resolve(pages[seen.length - 1]);
    },
  };
  const items = await queryAllItems(client, {
    TableName: "t",
    KeyConditionExpression: "PK = :pk",
  });
  assert.deepEqual(items, [{ n: { N: "1" } }, { n: { N: "2" } }]);
  assert.deepEqual(
    seen.map((i) => (i as { ExclusiveStartKey?: unknown }).ExclusiveStartKey),
    [undefined, { PK: { S: "a" } }, { PK: { S: "b" } }],
  );
  assert.ok(
    seen.every((i) => (i as { TableName: string }).TableName === "t"),
  );
});

function fakeClock(): { sleeps: number[]; clock: Clock } {
  const sleeps: number[] = [];
  return {
    sleeps,
    clock: {
      now: () => 0,
      sleep(ms: number): Promise<void> {
        sleeps.push(ms);
        return Promise.resolve();
      },
    },
  };
}

Deno.test("createTableClient().batchGet() retries unprocessed keys and splits by 100", async () => {
  const calls: { keys: number; consistent: boolean | undefined }[] = [];
  const key = (i: number) => ({ PK: { S: `k${i}` } });
  const client = {
    send(command: unknown): Promise<unknown> {
      const input = (command as BatchGetItemCommand).input;
      const req = input.RequestItems?.["t"];
      const keys = req?.Keys ?? [];
      calls.push({ keys: keys.length, consistent: req?.ConsistentRead });
      // The first call leaves its last key unprocessed.
      const unprocessed = calls.length === 1 ? keys.slice(-1) : [];
      const done = calls.length === 1 ? keys.slice(0, -1) : keys;
      return Promise.resolve({
        Responses: { t: done },
        UnprocessedKeys: unprocessed.length > 0
          ? { t: { Keys: unprocessed } }
          : {},
      });
    },
  };
  const { clock, sleeps } = fakeClock();
  const table = createTableClient(client, { tableName: "t", clock });
  const items = await table.batchGet(
    Array.from({ length: 150 }, (_, i) => key(i)),
    false,
  );
  assert.equal(items.length, 150);
  assert.deepEqual(calls, [
    { keys: 100, consistent: false },
    { keys: 51, consistent: false },
  ]);
  assert.deepEqual(sleeps, [25]);
});

Deno.test("createTableClient().batchDelete() sends batches of 25 and retries unprocessed items", async () => {
  const sizes: number[] = [];
  const client = {
    send(command: unknown): Promise<unknown> {
      const chunk = (command as BatchWriteItemCommand).input.RequestItems?.[
        "t"
      ] ?? [];
      sizes.push(chunk.length);
      return Promise.resolve({
        UnprocessedItems: sizes.length === 1 ? { t: chunk.slice(0, 2) } : {},
      });
    },
  };
  const { clock, sleeps } = fakeClock();
  const table = createTableClient(client, { tableName: "t", clock });
  const n = await table.batchDelete(
    Array.from({ length: 30 }, (_, i) => ({ PK: { S: `k${i}` } })),
  );
  assert.equal(n, 30);
  assert.deepEqual(sizes, [25, 7]);
  assert.deepEqual(sleeps, [50]);
});

Deno.test("createTableClient().writeItems() sends one item as itself and several as a transaction", async () => {
  const sent: string[] = [];
  const client = {
    send(command: unknown): Promise<unknown> {
      sent.push(
        (command as { constructor: { name: string } }).constructor.name,
      );
      return Promise.resolve({});
    },
  };
  const table = createTableClient(client, {
    tableName: "t",
    clock: fakeClock().clock,
  });
  const put = { Put: { TableName: "t", Item: { PK: { S: "a" } } } };
  const del = { Delete: { TableName: "t", Key: { PK: { S: "a" } } } };
  await table.writeItems([put]);
  await table.writeItems([del]);
  await table.writeItems([put, del]);
  assert.deepEqual(sent, [
    "PutItemCommand",
    "DeleteItemCommand",
    "TransactWriteItemsCommand",
  ]);
});

Deno.test("tableOf() finds the helper bound to an owner and refuses others", () => {
  const owner = {};
  const table = createTableClient({ send: () => Promise.resolve({}) }, {
    tableName: "t",
    clock: fakeClock().clock,
  });
  bindTable(owner, table);
  assert.equal(tableOf(owner), table);
  assert.throws(() => tableOf({}), { name: "TypeError" });
});

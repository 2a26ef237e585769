import assert from "node:assert/strict";
import type { QueryCommand } from "@aws-sdk/client-dynamodb";
import { queryAllItems } from "./query.ts";

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

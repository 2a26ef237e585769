/**
 * The acquire benchmark's tables, shared by `dev/bench.ts` and
 * `dev/bench_compare.ts`: huge limits (buckets far from empty), 32 entities
 * each with a cascade child, 32 raw items for the conditional `UpdateItem`
 * baseline, and the three scenarios (one limit, two limits, cascade).
 *
 * @module
 */
import {
  type DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import type * as Lib from "../mod.ts";

/** One benchmark operation of worker `w`. */
export type Op = (worker: number) => Promise<unknown>;

/** Stores the limits and entities and returns the scenarios of a limiter on `repo`. */
export async function acquireScenarios(
  lib: Pick<typeof Lib, "Limit" | "RateLimiter">,
  repo: Lib.Repository,
): Promise<[string, Op][]> {
  const { Limit } = lib;
  const huge = 1_000_000_000;
  await repo.setSystemDefaults([
    Limit.perMinute("rpm", huge),
    Limit.perMinute("tpm", huge),
  ]);
  await repo.setResourceDefaults("one", [Limit.perMinute("rpm", huge)]);
  await repo.setResourceDefaults("two", [
    Limit.perMinute("rpm", huge),
    Limit.perMinute("tpm", huge),
  ]);
  for (let w = 0; w < 32; w++) {
    await repo.createEntity(`parent-${w}`);
    await repo.createEntity(`child-${w}`, {
      parentId: `parent-${w}`,
      cascade: true,
    });
  }
  const limiter = new lib.RateLimiter(repo);
  const acquire = (
    entityId: string,
    resource: string,
    consume: Record<string, number>,
  ) => limiter.acquire({ entityId, resource, consume }, () => {});
  return [
    ["one limit", (w) => acquire(`key-${w}`, "one", { rpm: 1 })],
    ["two limits", (w) => acquire(`key-${w}`, "two", { rpm: 1, tpm: 100 })],
    ["cascade", (w) => acquire(`child-${w}`, "two", { rpm: 1, tpm: 100 })],
  ];
}

/** Puts the 32 raw items into `table` and returns the baseline operation. */
export async function rawBaseline(
  client: DynamoDBClient,
  table: string,
): Promise<Op> {
  for (let w = 0; w < 32; w++) {
    await client.send(
      new PutItemCommand({
        TableName: table,
        Item: {
          PK: { S: `bench/RAW#${w}` },
          SK: { S: "#STATE" },
          tk: { N: String(10n ** 15n) },
        },
      }),
    );
  }
  return (w) =>
    client.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { PK: { S: `bench/RAW#${w}` }, SK: { S: "#STATE" } },
        UpdateExpression: "ADD #tk :d",
        ConditionExpression: "#tk >= :c",
        ExpressionAttributeNames: { "#tk": "tk" },
        ExpressionAttributeValues: {
          ":d": { N: "-1000" },
          ":c": { N: "1000" },
        },
      }),
    );
}

// deno-lint-ignore-file no-console -- prints its figures as JSON for the parent
/**
 * One process of the hot key row of `dev/bench.ts` (4 processes x 32
 * callers): opens the bench table on `endpoint`, warms its caches, waits
 * for `startAt` (epoch ms, the same for every process), runs 32 callers on
 * the hot key (`coalesced` or `strict`) or on the raw one-item
 * `UpdateItem` (`raw`) for `ms`, and prints `{ n, calls, seconds }`.
 *
 * Usage: `deno run ... dev/_bench_hot_child.ts ENDPOINT TABLE MODE START_AT MS`
 *
 * @module
 */
import { DynamoDBClient, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { callCounter, hotKey, type Op } from "./_bench_setup.ts";
import { RateLimiter, Repository } from "../mod.ts";
import { sleep } from "../core/clock.ts";

const [endpoint, table, mode, startAt, ms] = Deno.args;
const client = new DynamoDBClient({
  endpoint: endpoint ?? "",
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
});
try {
  let op: Op;
  if (mode === "raw") {
    op = () =>
      client.send(
        new UpdateItemCommand({
          TableName: table,
          Key: { PK: { S: "bench/RAW#0" }, SK: { S: "#STATE" } },
          UpdateExpression: "ADD #tk :d",
          ConditionExpression: "#tk >= :c",
          ExpressionAttributeNames: { "#tk": "tk" },
          ExpressionAttributeValues: {
            ":d": { N: "-1000" },
            ":c": { N: "1000" },
          },
        }),
      );
  } else {
    const repo = await Repository.open({ client, stack: table ?? "" });
    op = hotKey({ RateLimiter }, repo, mode === "coalesced");
  }
  for (let i = 0; i < 20; i++) await op(0);
  await sleep(Math.max(0, Number(startAt) - Date.now()));
  const calls = callCounter(client);
  const end = performance.now() + Number(ms);
  const t0 = performance.now();
  let n = 0;
  await Promise.all(Array.from({ length: 32 }, async () => {
    while (performance.now() < end) {
      await op(0);
      n++;
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ n, calls: calls.count, seconds }));
} finally {
  client.destroy();
}

// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * The namespace-keys copy against the raw write floor, on one DynamoDB
 * Local: seeds N legacy items, times `copyNamespaceKeys` (4 segments × 8
 * writes in flight), then times raw conditional PutItems of the same
 * copies into a fresh table with the same 32 writes in flight, and prints
 * both rates and their ratio.
 *
 * Usage: `deno run --allow-net=127.0.0.1 --allow-run=java --allow-read --allow-env --allow-sys dev/bench_write_floor.ts [items]`
 */
import { DynamoDBClient, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { type Item, str } from "../core/expr.ts";
import {
  createTable,
  seedLegacyTable,
} from "../tests/_fixtures/legacy_items.ts";
import { forEachConcurrent } from "../migrations/_dynamo.ts";
import { createMigrationContext } from "../migrations/migration.ts";
import {
  copyNamespaceKeys,
  planItemCopy,
} from "../migrations/v0_10_0_namespace_keys.ts";
import { startDynamoDbLocal } from "./dynamodb_local.ts";
import { ScanCommand } from "@aws-sdk/client-dynamodb";

const N = Number(Deno.args[0] ?? "5000");
const INFLIGHT = 32;

await using local = await startDynamoDbLocal();
const client = new DynamoDBClient({
  endpoint: local.endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
  maxAttempts: 10,
});
try {
  await createTable(client, "legacy");
  const seeded = await seedLegacyTable(client, "legacy", {
    items: N,
    concurrency: 16,
  });
  // The copies the migration will write, read before it runs.
  const copies: Item[] = [];
  let start: Item | undefined;
  do {
    const r = await client.send(
      new ScanCommand({
        TableName: "legacy",
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    for (const it of r.Items ?? []) {
      const d = planItemCopy(it, "ns0000000a1");
      if (d.kind === "copy") copies.push(d.item);
    }
    start = r.LastEvaluatedKey;
  } while (start);

  const ctx = createMigrationContext({
    client,
    tableName: "legacy",
    segments: 4,
    writeConcurrency: 8,
  });
  const t0 = performance.now();
  const rep = await copyNamespaceKeys(ctx);
  const migrateSec = (performance.now() - t0) / 1000;

  await createTable(client, "floor");
  const signal = new AbortController().signal;
  const t1 = performance.now();
  await forEachConcurrent(copies, INFLIGHT, signal, async (item) => {
    await client.send(
      new PutItemCommand({
        TableName: "floor",
        Item: item,
        ConditionExpression: "attribute_not_exists(PK)",
      }),
    );
  });
  const floorSec = (performance.now() - t1) / 1000;
  const migrateRate = rep.written / migrateSec;
  const floorRate = copies.length / floorSec;
  console.log(
    `seeded ${seeded} legacy items; migrate copy: ${rep.written} written in ${
      migrateSec.toFixed(2)
    } s = ${migrateRate.toFixed(0)} items/s (scan included)`,
  );
  console.log(
    `raw conditional PutItem, ${INFLIGHT} in flight: ${copies.length} in ${
      floorSec.toFixed(2)
    } s = ${floorRate.toFixed(0)} items/s`,
  );
  console.log(
    `ratio migrate/raw: ${(migrateRate / floorRate).toFixed(2)} (${
      str(copies[0] ?? {}, "PK") ?? ""
    } …)`,
  );
} finally {
  client.destroy();
}

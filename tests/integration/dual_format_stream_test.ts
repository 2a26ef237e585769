/**
 * The stream-worker framework on the real DynamoDB Streams of DynamoDB Local
 * while the v0.10 namespace-keys migration runs (copy, then delete): the
 * worker keeps going, no audit record is lost, and a key-tolerant handler
 * classifies both unprefixed (legacy) and prefixed records.
 */
import assert from "node:assert/strict";
import {
  type AttributeValue,
  DeleteTableCommand,
  DescribeTableCommand,
} from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import type { Item } from "../../core/expr.ts";
import { isUnprefixedKey, safeParseNamespace } from "../../core/keys.ts";
import {
  createTable,
  legacyEntityItems,
  legacySystemItems,
  putItemsBatched,
  seededRandom,
} from "../_fixtures/legacy_items.ts";
import { createMigrationContext } from "../../migrations/migration.ts";
import { applyMigrations } from "../../migrations/runner.ts";
import { deleteUnprefixedOriginals } from "../../migrations/v0_10_0_namespace_keys.ts";
import {
  createMemoryDeadLetterSink,
  type StreamHandler,
} from "../../workers/batch_processor.ts";
import { createMemoryCoordinationStore } from "../../workers/coordination_store.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerEvent,
} from "../../workers/metrics.ts";
import type { StreamImage } from "../../workers/stream_source.ts";
import { createAwsStreamSource } from "../../workers/stream_source_aws.ts";
import { runStreamWorker } from "../../workers/stream_worker.ts";
import { endpoint, localClient, stopLocal, tableName } from "./_harness.ts";

const AUDIT_ENTITIES = 30;

interface Seen {
  readonly eventName: "INSERT" | "MODIFY" | "REMOVE";
  readonly pk: string;
  readonly format: "prefixed" | "legacy";
  readonly namespaceId?: string;
  readonly rest: string;
  readonly hasOldImage: boolean;
  readonly hasNewImage: boolean;
}

function pkOf(image: StreamImage | undefined): string | undefined {
  const v: AttributeValue | undefined = image?.["PK"];
  return v !== undefined && "S" in v && typeof v.S === "string"
    ? v.S
    : undefined;
}

function fixture(): Item[] {
  const random = seededRandom(7);
  return [
    ...legacySystemItems({
      schemaVersion: "0.9.0",
      resources: ["openai/gpt-4", "api"],
    }),
    ...Array.from(
      { length: AUDIT_ENTITIES },
      (_, i) =>
        legacyEntityItems({
          id: `user-${i}`,
          auditEvents: 1,
          // A few entities with configs/buckets, one resource containing '/'.
          resources: i < 3 ? ["openai/gpt-4"] : [],
          usageWindows: 0,
          random,
        }),
    ).flat(),
  ];
}

async function until(
  condition: () => boolean,
  timeoutMs: number,
  describe: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms: ${describe()}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

Deno.test("stream worker on DynamoDB Local streams survives the namespace-keys migration and loses no audit record", async () => {
  const { client } = await localClient();
  const table = tableName("dual");
  const streams = new DynamoDBStreamsClient({
    endpoint: await endpoint(),
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    maxAttempts: 3,
  });
  const abort = new AbortController();
  const running: { worker?: Promise<unknown> } = {};
  await using _cleanup = {
    async [Symbol.asyncDispose](): Promise<void> {
      abort.abort();
      await running.worker?.catch(() => {});
      await client.send(
        new DeleteTableCommand({ TableName: table }),
      ).catch(() => {});
      client.destroy();
      streams.destroy();
    },
  };

  await createTable(client, table);
  const items = fixture();
  await putItemsBatched(client, table, items);
  const legacyAuditPks = new Set(
    items
      .map((i) => i["PK"])
      .filter((v): v is { S: string } => v !== undefined && "S" in v)
      .map((v) => v.S)
      .filter((pk) => pk.startsWith("AUDIT#")),
  );
  assert.equal(legacyAuditPks.size, AUDIT_ENTITIES);
  assert.ok(
    items.some((i) => {
      const pk = i["PK"];
      return pk !== undefined && "S" in pk && pk.S === "RESOURCE#openai/gpt-4";
    }),
    "fixture has a resource with '/'",
  );

  const described = await client.send(
    new DescribeTableCommand({ TableName: table }),
  );
  const streamArn = described.Table?.LatestStreamArn;
  assert.ok(streamArn, "table has a stream");

  const seen: Seen[] = [];
  const handlerErrors: unknown[] = [];
  const handler: StreamHandler = (records) => {
    try {
      for (const r of records) {
        const pk = pkOf(r.keys) ?? pkOf(r.oldImage) ?? pkOf(r.newImage);
        assert.ok(pk !== undefined, "record has a PK");
        const parsed = safeParseNamespace(pk);
        if (parsed.ok) {
          seen.push({
            eventName: r.eventName,
            pk,
            format: "prefixed",
            namespaceId: parsed.value.namespaceId,
            rest: parsed.value.rest,
            hasOldImage: r.oldImage !== undefined,
            hasNewImage: r.newImage !== undefined,
          });
        } else {
          assert.equal(parsed.issue, "unprefixed");
          assert.ok(isUnprefixedKey(pk));
          seen.push({
            eventName: r.eventName,
            pk,
            format: "legacy",
            rest: pk,
            hasOldImage: r.oldImage !== undefined,
            hasNewImage: r.newImage !== undefined,
          });
        }
      }
    } catch (e) {
      handlerErrors.push(e);
      throw e;
    }
    return Promise.resolve();
  };

  const metrics = createStreamWorkerMetrics();
  const events: StreamWorkerEvent[] = [];
  const deadLetters = createMemoryDeadLetterSink();
  const worker = runStreamWorker({
    source: createAwsStreamSource(streams, streamArn),
    store: createMemoryCoordinationStore(),
    handler,
    deadLetterSink: deadLetters,
    workerId: "dual-format-test",
    signal: abort.signal,
    metrics,
    onEvent: (e) => events.push(e),
    batchSize: 50,
    pollIntervalMs: 100,
    idlePollMaxMs: 250,
    renewIntervalMs: 500,
    discoveryIntervalMs: 1000,
    retryBaseMs: 50,
    retryMaxMs: 200,
  });
  running.worker = worker;
  let workerSettled = false;
  worker.then(
    () => workerSettled = true,
    () => workerSettled = true,
  );

  // Copy phase, then delete phase, while the worker reads the stream.
  const copy = await applyMigrations(
    createMigrationContext({ client, tableName: table, segments: 2 }),
    { to: "0.10.0" },
  );
  assert.equal(copy.kind, "applied");
  const del = await deleteUnprefixedOriginals(
    createMigrationContext({
      client,
      tableName: table,
      segments: 2,
      delete: true,
    }),
  );
  assert.ok(del.deleted >= AUDIT_ENTITIES);
  const ns = del.namespaceId;
  const prefixedAuditPks = new Set(
    [...legacyAuditPks].map((pk) => `${ns}/${pk}`),
  );

  const removedLegacy = (): Set<string> =>
    new Set(
      seen.filter((s) =>
        s.eventName === "REMOVE" && s.format === "legacy" &&
        legacyAuditPks.has(s.pk)
      ).map((s) => s.pk),
    );
  const insertedPrefixed = (): Set<string> =>
    new Set(
      seen.filter((s) =>
        s.eventName === "INSERT" && s.format === "prefixed" &&
        prefixedAuditPks.has(s.pk)
      ).map((s) => s.pk),
    );
  await until(
    () =>
      workerSettled ||
      (removedLegacy().size === AUDIT_ENTITIES &&
        insertedPrefixed().size === AUDIT_ENTITIES),
    30_000,
    () =>
      `removed ${removedLegacy().size}/${AUDIT_ENTITIES}, inserted ${insertedPrefixed().size}/${AUDIT_ENTITIES}; metrics ${
        JSON.stringify(metrics)
      }`,
  );
  assert.equal(workerSettled, false, "worker must not stop on its own");

  abort.abort();
  await worker; // resolves, never rejects

  assert.deepEqual(handlerErrors, []);
  // Nothing lost: every legacy audit PK was removed with its old image.
  for (const pk of legacyAuditPks) {
    const removes = seen.filter((s) => s.eventName === "REMOVE" && s.pk === pk);
    assert.ok(removes.length >= 1, `REMOVE seen for ${pk}`);
    assert.ok(removes.every((s) => s.hasOldImage), `OldImage for ${pk}`);
    assert.ok(
      seen.some((s) =>
        s.eventName === "INSERT" && s.pk === pk && s.format === "legacy"
      ),
      `seeding INSERT seen for ${pk}`,
    );
  }
  for (const pk of prefixedAuditPks) {
    const inserts = seen.filter((s) => s.eventName === "INSERT" && s.pk === pk);
    assert.ok(inserts.length >= 1, `INSERT seen for ${pk}`);
    assert.ok(inserts.every((s) => s.hasNewImage), `NewImage for ${pk}`);
    assert.ok(inserts.every((s) => s.namespaceId === ns));
  }
  // Both formats were handled, including the resource with '/'.
  assert.ok(seen.some((s) => s.format === "legacy"));
  assert.ok(seen.some((s) => s.format === "prefixed"));
  assert.ok(
    seen.some((s) => s.format === "legacy" && s.pk === "RESOURCE#openai/gpt-4"),
  );
  assert.ok(
    seen.some((s) =>
      s.format === "prefixed" && s.rest === "RESOURCE#openai/gpt-4"
    ),
  );

  assert.equal(metrics.deadLetters, 0);
  assert.equal(deadLetters.letters.length, 0);
  assert.equal(metrics.dataLossEvents, 0);
  assert.equal(metrics.handlerErrors, 0);
  assert.equal(metrics.stalledShards, 0);
  assert.deepEqual(
    events.filter((e) => e.kind === "data_loss" || e.kind === "dead_letter"),
    [],
  );
  assert.ok(metrics.recordsDelivered >= seen.length);
});

Deno.test("stop DynamoDB Local", async () => {
  await stopLocal();
});

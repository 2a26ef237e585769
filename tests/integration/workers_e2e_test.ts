/**
 * The stream worker end to end on DynamoDB Local: acquires through the
 * library, the worker process reading the real stream, snapshots read back.
 */
import assert from "node:assert/strict";
import {
  DeleteItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { pkEntity, skUsage } from "../../core/keys.ts";
import { windowKey } from "../../core/usage.ts";
import { createDirectoryArchiveSink } from "../../workers/archiver.ts";
import { createDynamoDbDeadLetterStore } from "../../workers/dead_letters_dynamodb.ts";
import {
  heartbeatPartitionKey,
  readHeartbeats,
  WORKER_CONSUMER_NAME,
} from "../../workers/heartbeat.ts";
import { main } from "../../cli.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerMetrics,
} from "../../workers/metrics.ts";
import { createJsonLogger } from "../../workers/observability.ts";
import {
  buildWorkloads,
  runWorkerProcess,
  type WorkerProcessOptions,
} from "../../workers/runtime.ts";
import { combineWorkloads } from "../../workers/workload.ts";
import type { Repository } from "../../mod.ts";
import { endpoint, freshRepo } from "./_harness.ts";
import {
  archivedFiles,
  archivedRows,
  assertTotals,
  generousLimits,
  localStreams,
  runLoad,
  sameTotals,
  snapshotTotals,
  waitFor,
} from "./_workers.ts";

const FAST = {
  leaseDurationMs: 3_000,
  pollIntervalMs: 100,
  idlePollMaxMs: 300,
  discoveryIntervalMs: 2_000,
  batchWindowMs: 300,
  retryBaseMs: 20,
  retryMaxMs: 100,
} as const;

interface RunningWorker {
  readonly metrics: StreamWorkerMetrics;
  readonly logs: string[];
  readonly done: Promise<unknown>;
  stop(): Promise<void>;
}

async function startWorker(
  repo: Repository,
  extra: Partial<WorkerProcessOptions> = {},
): Promise<RunningWorker> {
  const streams = await localStreams();
  const abort = new AbortController();
  const logs: string[] = [];
  const metrics = createStreamWorkerMetrics();
  const done = runWorkerProcess({
    client: repo.client as WorkerProcessOptions["client"],
    streamsClient: streams,
    tableName: repo.tableName,
    workloads: ["aggregator"],
    signal: abort.signal,
    port: null,
    logger: createJsonLogger({
      write: (l) => {
        logs.push(l);
        if (Deno.env.get("ZAEL_DEBUG")) {
          Deno.stderr.writeSync(new TextEncoder().encode(l + "\n"));
        }
      },
    }),
    heartbeatIntervalMs: 500,
    metrics,
    tuning: FAST,
    ...extra,
  }).finally(() => streams.destroy());
  return {
    metrics,
    logs,
    done,
    async stop() {
      abort.abort();
      await done;
    },
  };
}

Deno.test("aggregator: after N acquires (creations, adjustments, 4 entities, 8 concurrent) snapshot totals equal the consumed totals exactly", async () => {
  await using env = await freshRepo();
  await generousLimits(env.repo);
  const entities = ["alice", "bob", "carol", "dave"];
  // Half the load before the worker starts (read from the trim horizon), half while it runs.
  const want = await runLoad(env.repo, { count: 120, entities });
  // A worker SIGKILLed 20 minutes ago left its heartbeat behind.
  const past = Date.now() - 20 * 60_000;
  await env.client.send(
    new PutItemCommand({
      TableName: env.repo.tableName,
      Item: {
        PK: { S: heartbeatPartitionKey() },
        SK: { S: "#WORKER#killed-long-ago" },
        "worker_id": { S: "killed-long-ago" },
        version: { S: "0.9.0" },
        "updated_at_ms": { N: String(past) },
        ttl: { N: String(Math.floor(past / 1000) + 15 * 60) },
      },
    }),
  );
  const worker = await startWorker(env.repo);
  try {
    await runLoad(env.repo, { count: 120, entities, into: want });
    await waitFor("hourly totals to match", async () =>
      sameTotals(
        await snapshotTotals(env.repo, entities),
        want,
      ));
    // Nothing more arrives later (no double count), and daily agrees with hourly.
    await new Promise((r) => setTimeout(r, 1_000));
    assertTotals(
      await snapshotTotals(env.repo, entities),
      want,
    );
    assertTotals(
      await snapshotTotals(env.repo, entities, "daily"),
      want,
    );
    assert.equal(want.events.get("alice|gpt-4"), 60);
    // The heartbeat carries the worker's version while it runs; the long-dead worker's is gone.
    const beats = await readHeartbeats(env.client, env.repo.tableName, {
      includeExpired: true,
    });
    assert.equal(beats.length, 1, "the expired row was deleted");
    assert.notEqual(beats[0]?.workerId, "killed-long-ago");
    assert.equal(beats[0]?.version, "0.10.0");
    assert.deepEqual(beats[0]?.workloads, ["aggregator"]);
    assert.equal(worker.metrics.deadLetters, 0);
    // check names the running worker's version, not "unknown" next to it.
    const check: string[] = [];
    await main(
      [
        "--endpoint-url",
        await endpoint(),
        "--name",
        env.repo.tableName,
        "check",
      ],
      { out: (t) => check.push(t), err: () => {} },
      {},
    );
    assert.match(
      check.join("\n"),
      /^Workers: 0\.10\.0 \(oldest of 1 running worker\)$/m,
    );
    // Caught up: the lag is what is observable (time since the shard was
    // last read to its end), not DynamoDB Local's minute-rounded record time.
    await new Promise((r) => setTimeout(r, 2_500));
    assert.ok(worker.metrics.lagMs < 5_000, `lag ${worker.metrics.lagMs} ms`);
  } finally {
    await worker.stop();
  }
  // A graceful stop removes the heartbeat.
  assert.deepEqual(await readHeartbeats(env.client, env.repo.tableName), []);
  assert.ok(worker.metrics.leasesReleased >= 1);
});

Deno.test("aggregator: a poison record lands in the dead-letter store after the retry budget, the shard moves on, and a redrive counts it once", async () => {
  await using env = await freshRepo();
  await generousLimits(env.repo);
  const ns = env.repo.namespaceId;
  const table = env.repo.tableName;
  // A corrupt snapshot item (total_events is a string): every update of it is rejected.
  const now = Date.now();
  const corrupt = async (window: "hourly" | "daily", at: number) =>
    await env.client.send(
      new PutItemCommand({
        TableName: table,
        Item: {
          PK: { S: pkEntity(ns, "poison") },
          SK: { S: skUsage("gpt-4", windowKey(window, at)) },
          "total_events": { S: "corrupt" },
        },
      }),
    );
  for (const at of [now, now + 60_000]) {
    await corrupt("hourly", at);
    await corrupt("daily", at);
  }
  const want = await runLoad(env.repo, {
    count: 1,
    entities: ["poison"],
  });
  const good = await runLoad(env.repo, {
    count: 30,
    entities: ["good1", "good2"],
  });
  const worker = await startWorker(env.repo);
  const dlq = createDynamoDbDeadLetterStore(env.client, {
    tableName: table,
    consumerName: WORKER_CONSUMER_NAME,
  });
  try {
    await waitFor("the good entities' totals", async () =>
      sameTotals(
        await snapshotTotals(env.repo, ["good1", "good2"]),
        good,
      )).catch(async (e) => {
        assertTotals(
          await snapshotTotals(env.repo, ["good1", "good2"]),
          good,
        );
        throw e;
      });
    const letters = await dlq.list();
    assert.ok(letters.length >= 1, "the poison record is dead-lettered");
    for (const l of letters) {
      assert.equal(l.reason, "effects_rejected");
      assert.match(l.record.keys["PK"]?.S ?? "", /BUCKET#poison#/);
      assert.ok(l.record.newImage, "the full record is kept");
    }
    assert.equal(worker.metrics.deadLetters, letters.length);
  } finally {
    await worker.stop();
  }

  // The operator fixes the item, then redrives: counted once, letters gone.
  for (const at of [now, now + 60_000]) {
    for (const w of ["hourly", "daily"] as const) {
      await env.client.send(
        new DeleteItemCommand({
          TableName: table,
          Key: {
            PK: { S: pkEntity(ns, "poison") },
            SK: { S: skUsage("gpt-4", windowKey(w, at)) },
          },
        }),
      );
    }
  }
  const { handler } = combineWorkloads(buildWorkloads({
    client: env.client,
    tableName: table,
    workloads: ["aggregator"],
    refill: false,
  }, undefined));
  const r = await dlq.redrive(handler);
  assert.equal(r.failed, 0, JSON.stringify(r.errors));
  assert.ok(r.redriven >= 1);
  assert.deepEqual(await dlq.list(), []);
  assertTotals(await snapshotTotals(env.repo, ["poison"]), want);
  // A second redrive has nothing to do.
  assert.equal((await dlq.redrive(handler)).redriven, 0);
  assertTotals(await snapshotTotals(env.repo, ["poison"]), want);
});

Deno.test("workers: unprefixed (pre-0.10) and prefixed records in one stream are both handled, nothing lost, no crash", async () => {
  await using env = await freshRepo();
  await generousLimits(env.repo);
  const ns = env.repo.namespaceId; // the "default" namespace: legacy keys belong to it
  const table = env.repo.tableName;
  const dir = await Deno.makeTempDir({ prefix: "zael-archive-" });
  try {
    // Prefixed traffic through the library.
    const want = await runLoad(env.repo, { count: 20, entities: ["modern"] });
    // An old client still writing a legacy bucket (insert, then a consume of 3 rpm).
    const legacyPk = "BUCKET#legacy#gpt-4#0";
    await env.client.send(
      new PutItemCommand({
        TableName: table,
        Item: {
          PK: { S: legacyPk },
          SK: { S: "#STATE" },
          "entity_id": { S: "legacy" },
          resource: { S: "gpt-4" },
          rf: { N: String(Date.now()) },
          "b_rpm_tk": { N: "99000" },
          "b_rpm_cp": { N: "100000" },
          "b_rpm_ra": { N: "100000" },
          "b_rpm_rp": { N: "60000" },
          "b_rpm_tc": { N: "1000" },
        },
      }),
    );
    await env.client.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { PK: { S: legacyPk }, SK: { S: "#STATE" } },
        UpdateExpression: "ADD b_rpm_tk :m, b_rpm_tc :p",
        ExpressionAttributeValues: {
          ":m": { N: "-3000" },
          ":p": { N: "3000" },
        },
      }),
    );
    want.tokens.set("legacy|gpt-4|rpm", 4);
    want.events.set("legacy|gpt-4", 2);
    // Audit records of both layouts, then deleted (as TTL would).
    const audits = [
      { PK: "AUDIT#old-entity", SK: "#AUDIT#01LEGACY" },
      { PK: `${ns}/AUDIT#new-entity`, SK: "#AUDIT#01MODERN" },
    ];
    for (const a of audits) {
      await env.client.send(
        new PutItemCommand({
          TableName: table,
          Item: {
            PK: { S: a.PK },
            SK: { S: a.SK },
            "event_id": { S: a.SK.slice(7) },
            "entity_id": { S: a.PK.split("#")[1] ?? "" },
            action: { S: "entity_created" },
            timestamp: { S: new Date().toISOString() },
            details: { M: { n: { N: "1" } } },
          },
        }),
      );
      await env.client.send(
        new DeleteItemCommand({
          TableName: table,
          Key: { PK: { S: a.PK }, SK: { S: a.SK } },
        }),
      );
    }
    const worker = await startWorker(env.repo, {
      workloads: ["aggregator", "archiver"],
      archiveSink: createDirectoryArchiveSink(dir),
    });
    try {
      await waitFor(
        "totals including the legacy bucket",
        async () =>
          sameTotals(
            await snapshotTotals(env.repo, ["modern", "legacy"]),
            want,
          ),
      );
      const rows = await waitFor(
        "both audit rows archived",
        async () => (await archivedRows(dir)).length >= 2,
      ).then(() => archivedRows(dir));
      const ids = rows.map((r) => r["event_id"]).sort();
      assert.deepEqual(ids, ["01LEGACY", "01MODERN"]);
      const legacy = rows.find((r) => r["event_id"] === "01LEGACY");
      assert.equal(legacy?.["legacy"], true);
      assert.equal(legacy?.["namespace_id"], null);
      const files = await archivedFiles(dir);
      assert.ok(files.some((f) => f.includes("/legacy/")), files.join("\n"));
      assert.equal(worker.metrics.deadLetters, 0);
    } finally {
      await worker.stop();
    }
    const errors = worker.logs.filter((l) => JSON.parse(l).level === "error");
    assert.deepEqual(errors, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("worker run on a table that does not exist exits 1 with the reason in a JSON error line, never a plain-text one", async () => {
  const err: string[] = [];
  const code = await main(
    [
      "--endpoint-url",
      await endpoint(),
      "--name",
      "no-such-table-for-workers",
      "worker",
      "run",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
    ],
    { out: () => {}, err: (t) => err.push(t) },
    {},
  );
  assert.equal(code, 1);
  const entries = err.map((line) => JSON.parse(line)); // every line is JSON
  const stopped = entries.find((e) =>
    e.level === "error" && String(e.message).startsWith("Worker stopped: ")
  );
  assert.ok(stopped, err.join("\n"));
  assert.match(
    stopped.reason,
    /resource not found|ResourceNotFound|non-existent/i,
  );
});

/**
 * The aggregator's proactive refill on DynamoDB Local, with the real clock
 * and the real stream: a busy bucket it refills keeps the hidden `wcu`
 * limit's write budget (each refill moves `rf`, and `wcu` gets its refill
 * over the same time), so a load well inside the budget never splits the
 * bucket's shards.
 */
import assert from "node:assert/strict";
import { GetItemCommand, UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import { refill } from "../../core/bucket.ts";
import { bucketKey, WCU_PARAMS } from "../../core/bucket_item.ts";
import { createStreamWorkerMetrics } from "../../workers/metrics.ts";
import { createJsonLogger } from "../../workers/observability.ts";
import {
  runWorkerProcess,
  type WorkerProcessOptions,
} from "../../workers/runtime.ts";
import { Limit, RateLimiter } from "../../mod.ts";
import { freshRepo, localClient } from "./_harness.ts";
import { localStreams, waitFor } from "./_workers.ts";

const FAST = {
  leaseDurationMs: 3_000,
  pollIntervalMs: 100,
  idlePollMaxMs: 300,
  discoveryIntervalMs: 2_000,
  batchWindowMs: 300,
  retryBaseMs: 20,
  retryMaxMs: 100,
} as const;

Deno.test("a busy bucket the aggregator refills keeps its wcu write budget: no shard split under a load the budget allows", async () => {
  await using env = await freshRepo();
  const repo = env.repo;
  // A big burst that refills slowly: the load drains it with plain writes
  // (the limiter never moves rf), 1,498 writes in about 9 s, a sixth of
  // wcu's 1,000 a second but more than its 1,000 of capacity. Nearly
  // empty, the bucket's projected balance no longer covers a batch's
  // consumption and the aggregator refills it, moving rf from the first
  // write's time to now.
  await repo.setSystemDefaults([Limit.perMinute("rpm", 6, { burst: 1_500 })]);
  const ref = {
    ns: repo.namespaceId,
    entityId: "busy",
    resource: "gpt-4",
    shard: 0,
  };
  const read = async () => {
    const out = await env.client.send(
      new GetItemCommand({
        TableName: repo.tableName,
        Key: bucketKey(ref),
        ConsistentRead: true,
      }),
    );
    const n = (a: string): bigint => BigInt(out.Item?.[a]?.N ?? "NaN");
    return {
      shards: Number(out.Item?.["shard_count"]?.N ?? "1"),
      rf: n("rf"),
      wcu: n("b_wcu_tk"),
    };
  };

  // The worker on a client of its own: the only bucket writes it sends are
  // the aggregator's refills, counted here.
  const { client: workerClient } = await localClient();
  let refills = 0;
  const send = workerClient.send.bind(workerClient);
  workerClient.send = ((command: unknown, ...rest: unknown[]) => {
    if (
      command instanceof UpdateItemCommand &&
      command.input.Key?.["PK"]?.S === bucketKey(ref)["PK"]?.S
    ) refills++;
    return (send as (...a: unknown[]) => unknown)(command, ...rest);
  }) as typeof workerClient.send;
  const streams = await localStreams();
  const abort = new AbortController();
  const metrics = createStreamWorkerMetrics();
  const worker = runWorkerProcess({
    client: workerClient as WorkerProcessOptions["client"],
    streamsClient: streams,
    tableName: repo.tableName,
    workloads: ["aggregator"],
    signal: abort.signal,
    port: null,
    logger: createJsonLogger({ write: () => {} }),
    heartbeatIntervalMs: 500,
    metrics,
    tuning: FAST,
  }).finally(() => {
    streams.destroy();
    workerClient.destroy();
  });

  // Strict mode: one write (one wcu) per acquire.
  const acquire = (l: RateLimiter) =>
    l.acquire({
      entityId: ref.entityId,
      resource: ref.resource,
      consume: { rpm: 1 },
    }, () => {});
  const limiter = new RateLimiter(repo, {
    timeoutMs: 30_000,
    coalesceWrites: false,
  });
  const total = 1_498;
  const perSecond = 160;
  const started = Date.now();
  let next = 0;
  const lane = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      const wait = started + (i * 1000) / perSecond - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      await acquire(limiter);
    }
  };
  try {
    await Promise.all(Array.from({ length: 6 }, () => lane()));
    await waitFor(
      "the aggregator to refill the bucket",
      () => Promise.resolve(refills > 0),
    );
    const end = await read();
    // The budget the limiter sees now: wcu refilled from rf to now. The
    // ideal bucket never drops below 1,000 - 160 writes at this load.
    const budget = refill(end.wcu, end.rf, BigInt(Date.now()), WCU_PARAMS).tk;
    const info = `${total} writes in ${
      Date.now() - started
    } ms, ${refills} aggregator refill writes; wcu ${end.wcu} at rf ${end.rf}, ${budget} now`;
    assert.ok(budget >= 700_000n, `wcu budget short: ${info}`);
    // A cold limiter acquires on the slow path, which reads wcu and doubles
    // shard_count when it is short.
    await acquire(new RateLimiter(repo, { timeoutMs: 30_000 }));
    assert.equal((await read()).shards, 1, `shard_count doubled: ${info}`);
  } finally {
    abort.abort();
    await worker;
  }
  assert.equal(metrics.deadLetters, 0);
});

/**
 * Worker processes with different `--workloads` on one table never take
 * records from each other (issue 16, item 1): each workload has its own
 * lease group and checkpoints. An aggregator-only worker runs alone while
 * audit items are deleted; an archiver-only worker then starts beside it
 * (its lease group is new: it reads from the oldest record the stream
 * holds) and archives those deletions too; then a rolling switch replaces
 * both by one `aggregator,archiver` worker mid-stream. Every acquire is
 * counted exactly once and every deleted audit item is archived exactly once.
 */
import assert from "node:assert/strict";
import { parseExposition } from "../_fakes/stream_world.ts";
import { createDynamoDbCoordinationStore } from "../../workers/coordination_store_dynamodb.ts";
import { tableStreamArn, workloadConsumerName } from "../../workers/runtime.ts";
import { endpoint, freshRepo } from "./_harness.ts";
import {
  archivedRows,
  assertTotals,
  deleteAudits,
  generousLimits,
  healthUrl,
  killAll,
  probe,
  runLoad,
  sameTotals,
  sample,
  snapshotTotals,
  spawnWorker,
  stopWorker,
  waitFor,
  type WorkerProc,
} from "./_workers.ts";

Deno.test("worker processes with different workloads lose nothing: aggregator-only, then archiver-only beside it, then a rolling switch to aggregator,archiver", async () => {
  await using env = await freshRepo();
  await generousLimits(env.repo);
  const table = env.repo.tableName;
  const ns = env.repo.namespaceId;
  const url = await endpoint();
  const dir = await Deno.makeTempDir({ prefix: "zael-workloads-" });
  const entities = ["w1", "w2"];
  const streamArn = await tableStreamArn(env.client, table);
  const leasesOf = (workload: string) =>
    createDynamoDbCoordinationStore(env.client, {
      tableName: table,
      consumerName: workloadConsumerName(workload),
      streamArn,
    }).listLeases();
  const archivedIds = async (): Promise<string[]> =>
    (await archivedRows(dir)).map((r) => String(r["event_id"])).sort();
  const procs: WorkerProc[] = [];
  try {
    // 1. Only the aggregator runs; audit items are deleted meanwhile.
    const aggregator = spawnWorker("agg-only", table, url, [
      "--workloads",
      "aggregator",
    ]);
    procs.push(aggregator);
    const want = await runLoad(env.repo, { count: 20, entities });
    const audits = await deleteAudits(env.client, table, ns, "phase1", 6);
    await waitFor(
      "the aggregator to count phase 1",
      async () => sameTotals(await snapshotTotals(env.repo, entities), want),
      30_000,
    );
    // Its checkpoint is past the deletions: a shared lease group would hide them from any archiver.
    assert.ok((await leasesOf("aggregator")).some((l) => l.checkpoint));
    // Its /metrics parses, and the batch histograms moved with the batches it processed.
    const metrics = (await probe(await healthUrl(aggregator), "/metrics")).body;
    parseExposition(metrics);
    for (
      const series of [
        'zae_stream_batch_duration_seconds_count{workload="aggregator"}',
        'zae_stream_batch_records_count{workload="aggregator"}',
        'zae_stream_commit_duration_seconds_count{workload="aggregator"}',
        'zae_stream_end_to_end_lag_seconds_count{workload="aggregator"}',
      ]
    ) {
      assert.ok((sample(metrics, series) ?? 0) >= 1, series);
    }
    assert.ok(
      (sample(metrics, 'zae_stream_batch_records_sum{workload="aggregator"}') ??
        0) >= 20,
      "every acquire's bucket write went through a batch",
    );

    // 2. An archiver-only worker starts beside it: its own lease group, from the oldest record.
    const archiver = spawnWorker("arch-only", table, url, [
      "--workloads",
      "archiver",
      "--archive-dir",
      dir,
    ]);
    procs.push(archiver);
    audits.push(...await deleteAudits(env.client, table, ns, "phase2", 6));
    await runLoad(env.repo, { count: 20, entities, into: want });
    await waitFor(
      "phase 1 and 2 deletions archived",
      async () => (await archivedIds()).length >= audits.length,
      30_000,
    );
    await waitFor(
      "the aggregator to count phase 2",
      async () => sameTotals(await snapshotTotals(env.repo, entities), want),
      30_000,
    );
    // Each group owns the shards on its own: the two workers do not share them.
    assert.ok(
      (await leasesOf("aggregator")).every((l) =>
        l.ended || l.owner === "agg-only"
      ),
    );
    assert.ok(
      (await leasesOf("archiver")).every((l) =>
        l.ended || l.owner === "arch-only"
      ),
    );

    // 3. Rolling switch mid-stream: the combined worker starts, then the old ones stop.
    const combined = spawnWorker("agg-arch", table, url, [
      "--workloads",
      "aggregator,archiver",
      "--archive-dir",
      dir,
    ]);
    procs.push(combined);
    const load = runLoad(env.repo, {
      count: 40,
      entities,
      perSecond: 10,
      concurrency: 2,
      into: want,
    });
    audits.push(...await deleteAudits(env.client, table, ns, "phase3a", 4));
    assert.equal((await stopWorker(aggregator)).code, 0);
    audits.push(...await deleteAudits(env.client, table, ns, "phase3b", 4));
    assert.equal((await stopWorker(archiver)).code, 0);
    audits.push(...await deleteAudits(env.client, table, ns, "phase3c", 4));
    await load;

    await waitFor(
      "every deletion archived",
      async () => (await archivedIds()).length >= audits.length,
      45_000,
    );
    await waitFor(
      "exact totals",
      async () => sameTotals(await snapshotTotals(env.repo, entities), want),
      45_000,
    );
    await new Promise((r) => setTimeout(r, 1_500));
    assertTotals(await snapshotTotals(env.repo, entities), want);
    // Exactly once: no deletion missing, none archived twice.
    assert.deepEqual(await archivedIds(), [...audits].sort());
    assert.ok(
      (await leasesOf("archiver")).every((l) =>
        l.ended || l.owner === "agg-arch"
      ),
      "the combined worker took the archiver's shards over",
    );
    const { code } = await stopWorker(combined);
    assert.equal(code, 0, combined.log.slice(-5).join("\n"));
  } finally {
    await killAll(procs);
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A worker process through DynamoDB outages (issue 16, items 2-4), on a
 * DynamoDB Local of its own (its data on disk, so it can be killed and
 * started again on the same port) behind a TCP proxy that catches the
 * worker's next commit on the wire:
 *
 * 1. DynamoDB is SIGKILLed while a commit is on its way: the worker keeps
 *    running, `/readyz` answers 503 and the DynamoDB error counters move
 *    during the outage, its leases expire (logged as an expiry, not as a
 *    takeover), the outage is logged once at `error` when it starts and once
 *    when it ends, and once DynamoDB is back every acquire is counted
 *    exactly once.
 * 2. DynamoDB hangs (SIGSTOP): SIGTERM still ends the worker within
 *    `--shutdown-grace-seconds`, and it logs what it could not finish.
 */
import assert from "node:assert/strict";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  type DynamoDbLocal,
  startDynamoDbLocal,
} from "../../dev/dynamodb_local.ts";
import { Repository } from "../../mod.ts";
import { createDynamoDbCoordinationStore } from "../../workers/coordination_store_dynamodb.ts";
import { tableStreamArn, workloadConsumerName } from "../../workers/runtime.ts";
import { tableName } from "./_harness.ts";
import {
  assertTotals,
  generousLimits,
  healthUrl,
  killAll,
  logEntries,
  probe,
  runLoad,
  sameTotals,
  sample,
  snapshotTotals,
  spawnWorker,
  startTcpProxy,
  stopWorker,
  waitFor,
  type WorkerProc,
} from "./_workers.ts";

Deno.test("a worker process lives through a DynamoDB kill during a commit, and drains within the grace while DynamoDB hangs", async (t) => {
  const dbPath = await Deno.makeTempDir({ prefix: "zael-outage-" });
  let local: DynamoDbLocal = await startDynamoDbLocal({
    dbPath,
    maxHeap: "512m",
  });
  const port = local.port;
  let paused = false;
  const proxy = startTcpProxy(port);
  const workerUrl = `http://127.0.0.1:${proxy.port}`;
  // The test's own calls go straight to DynamoDB Local, never through the proxy.
  const client = new DynamoDBClient({
    endpoint: local.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
    maxAttempts: 3,
  });
  const procs: WorkerProc[] = [];
  try {
    const repo = await Repository.open({
      client,
      stack: tableName("outage"),
      provision: true,
    });
    await generousLimits(repo);
    const table = repo.tableName;
    const streamArn = await tableStreamArn(client, table);
    const leases = createDynamoDbCoordinationStore(client, {
      tableName: table,
      consumerName: workloadConsumerName("aggregator"),
      streamArn,
    });
    const entities = ["o1", "o2"];

    await t.step(
      "a DynamoDB kill during a commit leaves the worker running, /readyz 503 and errors counted during the outage, counts exact after",
      async () => {
        const worker = spawnWorker("w-outage", table, workerUrl);
        procs.push(worker);
        let exited = false;
        void worker.child.status.then(() => exited = true);
        const base = await healthUrl(worker);
        const want = await runLoad(repo, { count: 20, entities });
        await waitFor(
          "the first acquires counted",
          async () => sameTotals(await snapshotTotals(repo, entities), want),
          30_000,
        );
        await waitFor(
          "/readyz 200",
          async () => (await probe(base, "/readyz")).status === 200,
          15_000,
        );

        // Kill DynamoDB Local the moment the worker's next commit reaches it.
        const loaded = Promise.withResolvers<void>();
        let commitSeen = false;
        proxy.catchOnce("TransactWriteItems", async (forward) => {
          commitSeen = true;
          await loaded.promise; // the test's own acquires are all in
          await forward();
          Deno.kill(local.pid, "SIGKILL");
        });
        await runLoad(repo, { count: 10, entities, into: want });
        loaded.resolve();
        await waitFor(
          "the commit caught and DynamoDB killed",
          () => commitSeen,
          20_000,
        );
        await local.stop();

        await waitFor(
          "/readyz 503 during the outage",
          async () => (await probe(base, "/readyz")).status === 503,
          20_000,
        );
        const ready = await probe(base, "/readyz");
        assert.match(ready.body, /DynamoDB unreachable since/);
        const metrics = (await probe(base, "/metrics")).body;
        assert.ok(
          (sample(metrics, 'zae_dynamodb_errors_total{operation="commit"}') ??
            0) >= 1,
          "the failed commit is counted",
        );
        assert.equal(
          sample(metrics, 'zae_dependency_up{dependency="dynamodb"}'),
          0,
        );
        assert.ok(
          (sample(
            metrics,
            'zae_stream_seconds_since_last_commit{workload="aggregator"}',
          ) ?? 0) > 0,
        );
        // Down for longer than a lease: the worker gives its lease up, and says it expired.
        await waitFor(
          "the lease expiry logged",
          () => logEntries(worker).some((e) => e.event === "lease_expired"),
          20_000,
        );
        assert.equal(exited, false, "still running");

        // DynamoDB comes back with its data, on the same port.
        local = await startDynamoDbLocal({ port, dbPath, maxHeap: "512m" });
        await waitFor(
          "/readyz 200 again",
          async () => (await probe(base, "/readyz")).status === 200,
          30_000,
        );
        await waitFor(
          "exact totals",
          async () => sameTotals(await snapshotTotals(repo, entities), want),
          30_000,
        );
        await new Promise((r) => setTimeout(r, 1_500));
        assertTotals(await snapshotTotals(repo, entities), want);
        assert.equal(exited, false, "still running");

        const log = logEntries(worker);
        const outages = log.filter((e) =>
          e.dependency === "dynamodb" &&
          (e.event === "outage_started" || e.event === "outage_ended")
        );
        assert.deepEqual(
          outages.map((e) => [e.event, e.level]),
          [["outage_started", "error"], ["outage_ended", "error"]],
          "one error line when the outage starts, one when it ends",
        );
        assert.ok((outages[1]?.durationMs as number) >= 5_000);
        assert.equal(
          log.filter((e) => e.event === "lease_lost").length,
          0,
          "an expiry is not a takeover",
        );
        assert.ok(
          log.some((e) => e.event === "lease_taken" && e.reason === "own"),
          "it took its own lease back",
        );
        assert.equal(
          log.filter((e) => e.level === "warn" || e.level === "error").length <
            20,
          true,
          "no log flood during the outage",
        );
        const { code } = await stopWorker(worker);
        assert.equal(code, 0, worker.log.slice(-5).join("\n"));
      },
    );

    await t.step(
      "SIGTERM while DynamoDB hangs (SIGSTOP) exits within --shutdown-grace-seconds and says what it could not finish",
      async () => {
        const worker = spawnWorker("w-hang", table, workerUrl, [
          "--shutdown-grace-seconds",
          "6",
        ]);
        procs.push(worker);
        await waitFor("the worker to hold the lease", async () => {
          const all = await leases.listLeases();
          return all.some((l) => !l.ended && l.owner === "w-hang");
        }, 30_000);
        const want = await snapshotTotals(repo, entities);
        await runLoad(repo, { count: 6, entities, into: want });
        await waitFor(
          "counted",
          async () => sameTotals(await snapshotTotals(repo, entities), want),
          30_000,
        );

        Deno.kill(local.pid, "SIGSTOP");
        paused = true;
        await new Promise((r) => setTimeout(r, 1_000)); // its calls hang now
        const { code, ms } = await stopWorker(worker);
        Deno.kill(local.pid, "SIGCONT");
        paused = false;
        assert.ok(ms < 6_000, `exited ${ms} ms after SIGTERM`);
        assert.equal(code, 1, "an incomplete drain is not a clean exit");
        const incomplete = logEntries(worker).find((e) =>
          e.message ===
            "Shutdown incomplete: steps not finished within the grace"
        );
        assert.ok(incomplete, worker.log.slice(-8).join("\n"));
        assert.equal(incomplete.level, "error");
        const unfinished = (incomplete.unfinished as string[]).join("\n");
        assert.match(unfinished, /lease of shard .* not released/);
        assert.match(unfinished, /heartbeat not removed/);
        // (Requests sent while DynamoDB Local was paused may still be served
        // after SIGCONT, so the table is not asserted here.)
      },
    );
  } finally {
    if (paused) Deno.kill(local.pid, "SIGCONT");
    await killAll(procs);
    await proxy.close();
    await local.stop();
    client.destroy();
    await Deno.remove(dbPath, { recursive: true });
  }
});

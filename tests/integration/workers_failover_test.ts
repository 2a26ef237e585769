/**
 * Two real worker processes (`zae-limiter worker run`) on DynamoDB Local
 * with the default lease timing: the lease holder is killed (SIGKILL,
 * mid-stream, while acquires keep flowing); the other worker owns every
 * shard within 15 s and the snapshot totals still equal the consumed totals
 * exactly. Then SIGTERM drains the survivor: exit 0, lease released,
 * heartbeat removed.
 */
import assert from "node:assert/strict";
import { createDynamoDbCoordinationStore } from "../../workers/coordination_store_dynamodb.ts";
import { isAlive, readHeartbeats } from "../../workers/heartbeat.ts";
import { tableStreamArn, workloadConsumerName } from "../../workers/runtime.ts";
import { main } from "../../cli.ts";
import { endpoint, freshRepo } from "./_harness.ts";
import {
  assertTotals,
  generousLimits,
  killAll,
  listeningPort,
  runLoad,
  sameTotals,
  snapshotTotals,
  spawnWorker,
  waitFor,
  type WorkerProc,
} from "./_workers.ts";

async function cliJson(
  argv: string[],
  table: string,
  url: string,
): Promise<Record<string, unknown>> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(
    ["--endpoint-url", url, "--name", table, "--output", "json", ...argv],
    { out: (t) => out.push(t), err: (t) => err.push(t) },
    {},
  );
  assert.equal(code, 0, err.join("\n"));
  return JSON.parse(out.join("\n"));
}

Deno.test("two worker processes: the holder is killed mid-stream; the other owns every shard within 15 s and totals stay exact", async () => {
  await using env = await freshRepo();
  await generousLimits(env.repo);
  const table = env.repo.tableName;
  const url = await endpoint();
  const entities = ["a1", "a2", "a3", "a4"];
  const streamArn = await tableStreamArn(env.client, table);
  const leases = createDynamoDbCoordinationStore(env.client, {
    tableName: table,
    consumerName: workloadConsumerName("aggregator"),
    streamArn,
  });
  const procs: WorkerProc[] = [];
  try {
    // Acquires keep flowing for ~12 s while workers start, crash and take over.
    const load = runLoad(env.repo, {
      count: 480,
      entities,
      perSecond: 40,
      concurrency: 4,
    });
    procs.push(spawnWorker("w-a", table, url));
    await waitFor("the first worker to take the leases", async () => {
      const all = await leases.listLeases();
      return all.length > 0 &&
        all.every((l) => l.ended || l.owner === "w-a");
    }, 30_000);
    procs.push(spawnWorker("w-b", table, url));
    await waitFor("both heartbeats", async () => {
      const beats = await readHeartbeats(env.client, table);
      return beats.filter((b) => isAlive(b, Date.now())).length === 2;
    }, 30_000);
    // Operators see both workers and their version; /metrics and /readyz answer.
    const version = await cliJson(["version"], table, url);
    assert.deepEqual(
      (version["runningWorkers"] as { workerId: string; version: string }[])
        .map((w) => `${w.workerId}@${w.version}`).sort(),
      ["w-a@0.10.0", "w-b@0.10.0"],
    );
    const status = await cliJson(["worker", "status"], table, url);
    assert.equal((status as unknown as unknown[]).length, 2);
    const first = procs[0];
    assert.ok(first);
    const port = listeningPort(first);
    const metrics = await fetch(`http://127.0.0.1:${port}/metrics`);
    const text = await metrics.text();
    assert.equal(metrics.status, 200);
    assert.match(text, /^zae_stream_leases_held(\{[^}]*\})? 1$/m);
    assert.match(text, /zae_worker_info\{[^}]*worker_id="w-a"/);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    await ready.body?.cancel();
    assert.equal(ready.status, 200);

    await waitFor("some usage counted", async () => {
      const t = await snapshotTotals(env.repo, entities);
      return [...t.events.values()].some((v) => v > 0);
    }, 30_000);

    // Kill whichever worker holds the open leases (both may hold some).
    const open = (await leases.listLeases()).filter((l) => !l.ended);
    const holder = open[0]?.owner;
    assert.ok(holder === "w-a" || holder === "w-b", `holder ${holder}`);
    const victim = procs.find((p) => p.id === holder);
    const survivor = procs.find((p) => p.id !== holder);
    assert.ok(victim && survivor);
    victim.child.kill("SIGKILL");
    await victim.child.status;
    const takeoverMs = await waitFor(
      "the survivor to own every shard",
      async () => {
        const all = await leases.listLeases();
        return all.every((l) => l.ended || l.owner === survivor.id);
      },
      30_000,
    );
    assert.ok(takeoverMs <= 15_000, `takeover took ${takeoverMs} ms`);

    const want = await load;
    await waitFor("exact totals", async () =>
      sameTotals(
        await snapshotTotals(env.repo, entities),
        want,
      ));
    await new Promise((r) => setTimeout(r, 1_500));
    assertTotals(await snapshotTotals(env.repo, entities), want);
    assertTotals(
      await snapshotTotals(env.repo, entities, "daily"),
      want,
    );

    // SIGTERM: drain, release, remove the heartbeat, exit 0.
    survivor.child.kill("SIGTERM");
    const exit = await survivor.child.status;
    await survivor.drained;
    assert.equal(exit.code, 0, survivor.log.slice(-5).join("\n"));
    const after = await leases.listLeases();
    assert.ok(after.every((l) => l.owner === undefined), JSON.stringify(after));
    const beats = await readHeartbeats(env.client, table);
    assert.deepEqual(beats.map((b) => b.workerId), [victim.id]);
    assert.ok(
      survivor.log.some((l) => l.includes("Released shard lease")),
      survivor.log.join("\n"),
    );
  } finally {
    await killAll(procs);
  }
});

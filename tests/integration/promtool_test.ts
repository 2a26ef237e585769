/**
 * `promtool check metrics` (Debian package `prometheus`; `.ci/run` installs
 * it) on `/metrics` served the way a worker process serves it: the
 * prom-client registry with histograms and process metrics after a batch,
 * the stream counters of two workloads, dependency errors and workload
 * counters; and on a live worker process's `/metrics` after it counted a
 * load from DynamoDB Local. Ignored, and so reported, where promtool is not
 * installed.
 */
import assert from "node:assert/strict";
import { createStreamWorkerMetrics } from "../../workers/metrics.ts";
import { startHealthServer } from "../../workers/observability.ts";
import { createWorkerRegistry } from "../../workers/prometheus.ts";
import { endpoint, freshRepo } from "./_harness.ts";
import {
  generousLimits,
  healthUrl,
  probe,
  runLoad,
  sameTotals,
  sample,
  snapshotTotals,
  spawnWorker,
  stopWorker,
  waitFor,
} from "./_workers.ts";

async function hasPromtool(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("promtool", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/** Runs `promtool check metrics` on `body`; fails with its complaints. */
async function assertPromtoolClean(body: string): Promise<void> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(body));
  await writer.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `promtool check metrics:\n${text}`);
  assert.equal(text.trim(), "", text);
}

Deno.test({
  name: "promtool check metrics passes on a worker's /metrics",
  ignore: !(await hasPromtool()),
  async fn() {
    const registry = createWorkerRegistry();
    registry.observeBatch({
      workload: "aggregator",
      durationMs: 40,
      records: 12,
      endToEndLagMs: 1_500,
    });
    registry.observeCommit({ workload: "aggregator", latencyMs: 9 });
    const server = startHealthServer({
      port: 0,
      hostname: "127.0.0.1",
      livez: () => ({ ok: true }),
      readyz: () => ({ ok: true }),
      metrics: () =>
        registry.render({
          groups: {
            aggregator: { ...createStreamWorkerMetrics(), recordsRead: 12 },
            archiver: createStreamWorkerMetrics(),
          },
          dependencies: {
            errors: [{ dependency: "dynamodb", operation: "commit", count: 1 }],
            outages: [],
          },
          workerId: "w1",
          version: "0.10.0",
          workloads: {
            aggregator: { aggregator_acquires_total: 12 },
            archiver: { archiver_events_archived_total: 0 },
          },
        }),
    });
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      const body = await res.text();
      assert.equal(res.status, 200, body);
      assert.match(
        body,
        /^zae_stream_batch_records_count\{workload="aggregator"\} 1$/m,
      );
      await assertPromtoolClean(body);
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test({
  name:
    "promtool check metrics passes on a live worker process's /metrics after it counted a load",
  ignore: !(await hasPromtool()),
  async fn() {
    await using env = await freshRepo();
    await generousLimits(env.repo);
    const entities = ["p1", "p2"];
    const worker = spawnWorker(
      "promtool",
      env.repo.tableName,
      await endpoint(),
      [
        "--workloads",
        "aggregator",
      ],
    );
    try {
      const want = await runLoad(env.repo, { count: 10, entities });
      await waitFor(
        "the worker to count the load",
        async () => sameTotals(await snapshotTotals(env.repo, entities), want),
        30_000,
      );
      const metrics = await probe(await healthUrl(worker), "/metrics");
      assert.equal(metrics.status, 200, metrics.body);
      assert.ok(
        (sample(
          metrics.body,
          'zae_stream_batch_records_count{workload="aggregator"}',
        ) ?? 0) >= 1,
        "the batch histogram moved",
      );
      await assertPromtoolClean(metrics.body);
    } finally {
      await stopWorker(worker);
    }
  },
});

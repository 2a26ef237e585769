import assert from "node:assert/strict";
import {
  createWorld,
  parseExposition,
  startWorker,
} from "../tests/_fakes/stream_world.ts";
import { createStreamWorkerMetrics } from "./metrics.ts";
import { createWorkerRegistry } from "./prometheus.ts";

function sampleValue(text: string, line: RegExp): number {
  const m = line.exec(text);
  assert.ok(m, `no sample ${line}`);
  return Number(m[1]);
}

Deno.test("createWorkerRegistry(): the exposition parses line by line, keeps the existing families, adds histograms and process metrics with real HELP texts", async () => {
  const r = createWorkerRegistry();
  r.observeBatch({ workload: "aggregator", durationMs: 30, records: 7 });
  const text = await r.render({
    groups: {
      aggregator: { ...createStreamWorkerMetrics(), recordsRead: 7 },
      archiver: createStreamWorkerMetrics(),
    },
    dependencies: {
      errors: [{ dependency: "dynamodb", operation: "GetItem", count: 2 }],
      outages: [],
    },
    workerId: "w1",
    version: "0.10.0",
    workloads: { aggregator: { aggregator_acquires_total: 2 } },
  });
  const families = parseExposition(text);
  for (
    const [fam, type] of [
      ["zae_worker_info", "gauge"],
      ["zae_stream_records_read_total", "counter"],
      ["zae_stream_lag_seconds", "gauge"],
      ["zae_dynamodb_errors_total", "counter"],
      ["zae_streams_errors_total", "counter"],
      ["zae_dependency_up", "gauge"],
      ["zae_aggregator_acquires_total", "counter"],
      ["zae_stream_batch_duration_seconds", "histogram"],
      ["zae_stream_batch_records", "histogram"],
      ["zae_stream_commit_duration_seconds", "histogram"],
      ["zae_stream_end_to_end_lag_seconds", "histogram"],
      ["process_cpu_seconds_total", "counter"],
      ["process_resident_memory_bytes", "gauge"],
    ] as const
  ) {
    assert.equal(families.get(fam)?.type, type, fam);
  }
  assert.match(
    text,
    /^zae_stream_records_read_total\{workload="aggregator"\} 7$/m,
  );
  assert.ok(
    sampleValue(text, /^process_resident_memory_bytes (\S+)$/m) > 1_000_000,
    "the resident set is read (not 0 for want of /proc access)",
  );
  assert.doesNotMatch(text, /^process_(virtual_memory|heap)_bytes /m);
  assert.match(
    text,
    /^zae_dynamodb_errors_total\{operation="GetItem"\} 2$/m,
  );
  assert.match(
    text,
    /^zae_stream_batch_records_bucket\{le="10",workload="aggregator"\} 1$/m,
  );
  for (const [fam, f] of families) {
    if (fam.startsWith("zae_")) {
      assert.doesNotMatch(
        f.help,
        /^(Workload counter|Counter \S+ reported by a custom|TODO|help)/i,
        fam,
      );
    }
  }
});

Deno.test("createWorkerRegistry(): a stream worker's batches and commits move the histograms", async () => {
  const world = createWorld();
  world.stream.addShard("s0");
  for (let i = 0; i < 3; i++) world.stream.put("s0", { pk: `ns/ENTITY#e${i}` });
  const r = createWorkerRegistry({ defaultMetrics: false });
  const render = () => r.render({ workerId: "w", version: "0" });
  assert.doesNotMatch(
    await render(),
    /^zae_stream_batch_duration_seconds_count/m,
    "no batch before the worker ran",
  );
  const w = startWorker(world, "w", {
    batchSize: 10,
    onBatch: (b) => r.observeBatch(b),
    onCommit: (c) => r.observeCommit(c),
  });
  await world.clock.runUntil(() => world.handled.length >= 3);
  assert.equal((await w.stop()).ok, true);
  const after = await render();
  parseExposition(after);
  const batches = sampleValue(
    after,
    /^zae_stream_batch_duration_seconds_count (\S+)$/m,
  );
  assert.ok(batches >= 1, `batches observed: ${batches}`);
  assert.equal(
    sampleValue(after, /^zae_stream_batch_records_sum (\S+)$/m),
    3,
  );
  assert.ok(
    sampleValue(after, /^zae_stream_commit_duration_seconds_count (\S+)$/m) >=
      1,
  );
  assert.equal(
    sampleValue(after, /^zae_stream_end_to_end_lag_seconds_count (\S+)$/m),
    batches,
  );
});

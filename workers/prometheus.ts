/**
 * The Prometheus registry of one worker process, through npm `prom-client`:
 * histograms of batch processing, commit latency and end-to-end lag, the
 * default process metrics, and the counters and gauges of
 * {@linkcode renderPrometheus} collected into the same exposition.
 *
 * @module
 */
import { memoryUsage } from "node:process";
import { collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { BatchObservation, CommitObservation } from "./metrics.ts";
import { type PrometheusInput, renderPrometheus } from "./observability.ts";

export type { BatchObservation, CommitObservation } from "./metrics.ts";

/** Options of {@linkcode createWorkerRegistry}. */
export interface WorkerRegistryOptions {
  /** Collect prom-client's default process metrics (`process_*`, `nodejs_*`). @default true */
  readonly defaultMetrics?: boolean;
}

/** A worker process's Prometheus registry. */
export interface WorkerRegistry {
  /** The prom-client registry (histograms and process metrics). */
  readonly registry: Registry;
  /** Records a processed batch. */
  observeBatch(batch: BatchObservation): void;
  /** Records a successful commit. */
  observeCommit(commit: CommitObservation): void;
  /**
   * The full exposition: the counters and gauges of
   * {@linkcode renderPrometheus}, then the registry's histograms and process
   * metrics.
   */
  render(input: PrometheusInput): Promise<string>;
}

/**
 * Default metrics left out: those prom-client reads from `/proc/self` (0
 * under Deno's permissions), and gauges named `_total`, which
 * `promtool check metrics` reports (the per-type gauges stay).
 */
const LEFT_OUT = [
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_heap_bytes",
  "process_open_fds",
  "process_max_fds",
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

/** Bucket bounds of the duration histograms, in seconds (5 ms to 60 s). */
const DURATION_BUCKETS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
];

/** Bucket bounds of the records-per-batch histogram (batch sizes go to 10,000). */
const RECORD_BUCKETS = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/** Bucket bounds of the end-to-end lag histogram, in seconds (100 ms to 1 h). */
const LAG_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600];

/**
 * Creates the registry of one worker process. Call it once per process:
 * every call makes a new registry, so tests do not share state.
 *
 * @param options Whether to collect the default process metrics.
 * @returns The registry, the observers and the renderer.
 *
 * @example A batch moves the histograms
 * ```ts
 * import assert from "node:assert/strict";
 * import { createWorkerRegistry } from "./prometheus.ts";
 *
 * const r = createWorkerRegistry({ defaultMetrics: false });
 * r.observeBatch({ durationMs: 40, records: 12 });
 * const text = await r.render({ workerId: "w1", version: "0.10.0" });
 * assert.match(text, /^zae_stream_batch_records_count 1$/m);
 * assert.match(text, /^zae_stream_batch_records_sum 12$/m);
 * ```
 */
export function createWorkerRegistry(
  options: WorkerRegistryOptions = {},
): WorkerRegistry {
  const registry = new Registry();
  const labelNames = ["workload"] as const;
  const batchDuration = new Histogram({
    name: "zae_stream_batch_duration_seconds",
    help:
      "Time to process one batch read from a shard: filters, handler calls with their retries, dead-letter writes and the commit.",
    labelNames,
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  const batchRecords = new Histogram({
    name: "zae_stream_batch_records",
    help:
      "Records per processed batch, framework and filtered records included.",
    labelNames,
    buckets: RECORD_BUCKETS,
    registers: [registry],
  });
  const commitLatency = new Histogram({
    name: "zae_stream_commit_duration_seconds",
    help:
      "Latency of successful commits (effects and checkpoint in one TransactWriteItems call under the lease fence).",
    labelNames,
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  const endToEndLag = new Histogram({
    name: "zae_stream_end_to_end_lag_seconds",
    help:
      "Time from the creation of a batch's oldest record in the table (ApproximateCreationDateTime, 1 s precision) to the end of its processing.",
    labelNames,
    buckets: LAG_BUCKETS,
    registers: [registry],
  });
  if (options.defaultMetrics ?? true) {
    collectDefaultMetrics({ register: registry });
    // Deno opens /proc/self only with --allow-all: the resident set comes
    // from process.memoryUsage() instead.
    for (const name of LEFT_OUT) registry.removeSingleMetric(name);
    new Gauge({
      name: "process_resident_memory_bytes",
      help: "Resident memory size in bytes.",
      registers: [registry],
      collect() {
        this.set(memoryUsage().rss);
      },
    });
  }

  const labels = (workload: string | undefined): Record<string, string> =>
    workload === undefined ? {} : { workload };
  return {
    registry,
    observeBatch(b) {
      const l = labels(b.workload);
      batchDuration.observe(l, Math.max(0, b.durationMs) / 1000);
      batchRecords.observe(l, b.records);
      if (b.endToEndLagMs !== undefined) {
        endToEndLag.observe(l, Math.max(0, b.endToEndLagMs) / 1000);
      }
    },
    observeCommit(c) {
      commitLatency.observe(
        labels(c.workload),
        Math.max(0, c.latencyMs) / 1000,
      );
    },
    async render(input) {
      return renderPrometheus(input) + await registry.metrics();
    },
  };
}

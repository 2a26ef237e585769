/**
 * Observability of a stream worker: Prometheus text for `/metrics`, JSON
 * log lines, a log mapping for {@linkcode StreamWorkerEvent}s, and a small
 * HTTP server for `/livez`, `/readyz` and `/metrics`.
 *
 * Only {@linkcode startHealthServer} and the default writer of
 * {@linkcode createJsonLogger} touch `Deno.*`; everything else is pure.
 *
 * @module
 */
import type { StreamWorkerEvent, StreamWorkerMetrics } from "./metrics.ts";
import {
  DEPENDENCY_OPERATIONS,
  type DependencyEvent,
  type ErrorCount,
  type Outage,
} from "./resilience.ts";

// Re-exported so that this module's documentation is complete on its own.
export type { StreamWorkerEvent, StreamWorkerMetrics } from "./metrics.ts";
export type { DeadLetterReason } from "./batch_processor.ts";
export type { DependencyEvent, ErrorCount, Outage } from "./resilience.ts";

// ---------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------

/** The `Content-Type` of the Prometheus text exposition format 0.0.4. */
export const PROMETHEUS_CONTENT_TYPE =
  "text/plain; version=0.0.4; charset=utf-8";

/** What {@linkcode renderPrometheus} renders. */
export interface PrometheusInput {
  /** The counters and gauges of a worker with one stream worker (no label). */
  readonly metrics?: Readonly<StreamWorkerMetrics>;
  /**
   * The counters and gauges of each stream worker of the process, by
   * workload (one lease group each): every stream metric gets a `workload`
   * label. Used instead of `metrics`.
   */
  readonly groups?: Readonly<Record<string, Readonly<StreamWorkerMetrics>>>;
  /** Failed calls by operation and the current outages (`DependencyHealth`). */
  readonly dependencies?: {
    readonly errors: readonly ErrorCount[];
    readonly outages: readonly Outage[];
  };
  /** Epoch ms of the scrape, for the `seconds_since_*` gauges. @default Date.now() */
  readonly now?: number;
  /** Epoch ms the worker started: `seconds_since_*` count from it before the first read or commit. @default now */
  readonly startedAt?: number;
  /** The worker id, exported as the `worker_id` label of `zae_worker_info`. */
  readonly workerId: string;
  /** The package version, exported as the `version` label of `zae_worker_info`. */
  readonly version: string;
  /**
   * Workload counters: workload name → (metric name → value). Each metric is
   * exported as a counter named `zae_<metric name>` (the prefix is not
   * doubled) with a `workload` label.
   */
  readonly workloads?: Readonly<
    Record<string, Readonly<Record<string, number>>>
  >;
}

interface MetricSpec {
  readonly help: string;
  readonly type: "counter" | "gauge";
  /** Name without the `zae_stream_` prefix and `_total` suffix; derived from the field by default. */
  readonly name?: string;
  /** The exported value is the field divided by this. @default 1 */
  readonly divisor?: number;
  /** The field is an epoch-ms timestamp; the exported value is the seconds since then. */
  readonly since?: boolean;
}

/**
 * How each field of {@linkcode StreamWorkerMetrics} is exported. A `Record`
 * over the interface's keys: a new field without an entry is a compile error.
 */
const STREAM_METRICS: Readonly<Record<keyof StreamWorkerMetrics, MetricSpec>> =
  {
    recordsRead: { type: "counter", help: "Records returned by GetRecords." },
    recordsDelivered: {
      type: "counter",
      help: "Records handed to the handler at least once.",
    },
    recordsFiltered: {
      type: "counter",
      help: "Records dropped by the user filters.",
    },
    frameworkRecords: {
      type: "counter",
      help:
        "The framework's own coordination records, dropped before filtering.",
    },
    batches: { type: "counter", help: "Batches processed." },
    commits: {
      type: "counter",
      help: "Successful commits (effects and checkpoint).",
    },
    commitRetries: {
      type: "counter",
      help:
        "Commits and dead-letter writes retried after a transient failure (no answer, 5xx, throttle, conflict).",
    },
    effectsCommitted: {
      type: "counter",
      help: "Effects written by successful commits.",
    },
    deferredCheckpoints: {
      type: "counter",
      help:
        "Checkpoints deferred to the next lease renewal (batches without delivered records).",
    },
    handlerErrors: { type: "counter", help: "Handler invocations that threw." },
    retries: { type: "counter", help: "Retries after a handler error." },
    bisects: {
      type: "counter",
      help: "Batch bisections after a handler error.",
    },
    commitSplits: {
      type: "counter",
      help:
        "Commit splits (too many effects, duplicate targets or rejected effects).",
    },
    deadLetters: {
      type: "counter",
      help: "Records sent to the dead-letter sink.",
    },
    getRecordsCalls: { type: "counter", help: "GetRecords calls." },
    emptyReads: {
      type: "counter",
      help: "GetRecords calls that returned no record.",
    },
    throttles: { type: "counter", help: "Throttled DynamoDB Streams calls." },
    expiredIterators: {
      type: "counter",
      help: "Expired shard iterators recovered.",
    },
    dataLossEvents: {
      type: "counter",
      help: "Trimmed-data (data loss) detections.",
    },
    leasesHeld: { type: "gauge", help: "Shard leases currently held." },
    leasesTaken: {
      type: "counter",
      help: "Shard leases taken (free or expired).",
    },
    leasesStolen: {
      type: "counter",
      help: "Shard leases stolen from a busier worker.",
    },
    leasesLost: {
      type: "counter",
      help: "Shard leases another worker took (a fenced write was refused).",
    },
    leasesExpired: {
      type: "counter",
      help:
        "Shard leases given up because they could not be renewed for a lease duration (DynamoDB unreachable).",
    },
    leasesReleased: {
      type: "counter",
      help: "Shard leases released on shutdown.",
    },
    shardsEnded: { type: "counter", help: "Shards read to their end." },
    stalledShards: {
      type: "gauge",
      help: "Owned shards stopped on data loss.",
    },
    lagMs: {
      type: "gauge",
      name: "lag_seconds",
      divisor: 1000,
      help:
        "Seconds since each owned shard was last read to its end with everything read processed (before that: age of its oldest unprocessed record); maximum over owned shards.",
    },
    lastReadAt: {
      type: "gauge",
      name: "seconds_since_last_read",
      since: true,
      help: "Seconds since the last successful GetRecords.",
    },
    lastCommitAt: {
      type: "gauge",
      name: "seconds_since_last_commit",
      since: true,
      help:
        "Seconds since the last successful commit or checkpoint write (renewals carry checkpoints, so this stays below a few seconds while DynamoDB answers).",
    },
  };

/**
 * Renders a worker's metrics in the Prometheus text exposition format 0.0.4.
 *
 * Every field of {@linkcode StreamWorkerMetrics} becomes
 * `zae_stream_<snake_case>`: monotonic counters get the `_total` suffix,
 * `leasesHeld` and `stalledShards` are gauges, `lagMs` is the gauge
 * `zae_stream_lag_seconds`, and the timestamps `lastReadAt` and
 * `lastCommitAt` become `zae_stream_seconds_since_last_read` and
 * `zae_stream_seconds_since_last_commit`. With `groups`, each sample has
 * the `workload` label of its stream worker. With `dependencies`,
 * `zae_dynamodb_errors_total{operation}` and
 * `zae_streams_errors_total{operation}` count failed calls (every known
 * operation starts at 0) and `zae_dependency_up{dependency}` is 0 during an
 * outage. `zae_worker_info{worker_id,version}` is always 1. Workload
 * counters follow, grouped by metric name and labelled with `workload`;
 * characters not allowed in a metric name become `_`.
 *
 * @param input The metrics, worker id, version and workload counters.
 * @returns The exposition text, ending with a newline.
 *
 * @example Render the counters of a fresh worker
 * ```ts
 * import assert from "node:assert/strict";
 * import { createStreamWorkerMetrics } from "./metrics.ts";
 * import { renderPrometheus } from "./observability.ts";
 *
 * const metrics = { ...createStreamWorkerMetrics(), recordsRead: 3, lagMs: 1500 };
 * const text = renderPrometheus({
 *   metrics,
 *   workerId: "w1",
 *   version: "0.10.0",
 *   workloads: { aggregator: { usage_snapshots_written: 2 } },
 * });
 * assert.match(text, /^zae_stream_records_read_total 3$/m);
 * assert.match(text, /^zae_stream_lag_seconds 1\.5$/m);
 * assert.match(text, /^zae_usage_snapshots_written\{workload="aggregator"\} 2$/m);
 * assert.match(text, /^zae_worker_info\{worker_id="w1",version="0\.10\.0"\} 1$/m);
 * ```
 */
export function renderPrometheus(input: PrometheusInput): string {
  const lines: string[] = [];
  const family = (
    name: string,
    type: "counter" | "gauge",
    help: string,
  ): void => {
    lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  };

  family("zae_worker_info", "gauge", "Worker identity; the value is always 1.");
  lines.push(
    `zae_worker_info${
      formatLabels([["worker_id", input.workerId], ["version", input.version]])
    } 1`,
  );

  const builtIn = new Set<string>(["zae_worker_info"]);
  const now = input.now ?? Date.now();
  const startedAt = input.startedAt ?? now;
  const groups: [string | undefined, Readonly<StreamWorkerMetrics>][] =
    input.groups
      ? Object.entries(input.groups).sort(([a], [b]) => a < b ? -1 : 1)
      : input.metrics
      ? [[undefined, input.metrics]]
      : [];
  for (
    const key of Object.keys(STREAM_METRICS) as (keyof StreamWorkerMetrics)[]
  ) {
    const spec = STREAM_METRICS[key];
    const base = `zae_stream_${spec.name ?? snakeCase(key)}`;
    const name = spec.type === "counter" ? `${base}_total` : base;
    builtIn.add(name);
    family(name, spec.type, spec.help);
    for (const [workload, metrics] of groups) {
      const raw = metrics[key];
      const value = spec.since
        ? Math.max(0, now - (raw > 0 ? raw : startedAt)) / 1000
        : raw / (spec.divisor ?? 1);
      const labels = workload === undefined
        ? ""
        : formatLabels([["workload", workload]]);
      lines.push(`${name}${labels} ${formatValue(value)}`);
    }
  }

  if (input.dependencies) {
    const { errors, outages } = input.dependencies;
    for (const dependency of ["dynamodb", "streams"] as const) {
      const name = `zae_${dependency}_errors_total`;
      builtIn.add(name);
      family(
        name,
        "counter",
        `Failed ${
          dependency === "dynamodb" ? "DynamoDB" : "DynamoDB Streams"
        } calls by operation (no answer, 5xx, throttles, refusals).`,
      );
      const counts = new Map<string, number>(
        DEPENDENCY_OPERATIONS[dependency].map((op) => [op, 0]),
      );
      for (const e of errors) {
        if (e.dependency === dependency) counts.set(e.operation, e.count);
      }
      for (const op of [...counts.keys()].sort()) {
        lines.push(
          `${name}${formatLabels([["operation", op]])} ${counts.get(op)}`,
        );
      }
    }
    builtIn.add("zae_dependency_up");
    family(
      "zae_dependency_up",
      "gauge",
      "1 while the service answers, 0 during an outage (calls without an answer for the outage threshold).",
    );
    for (const dependency of ["dynamodb", "streams"] as const) {
      const down = outages.some((o) => o.dependency === dependency);
      lines.push(
        `zae_dependency_up${formatLabels([["dependency", dependency]])} ${
          down ? 0 : 1
        }`,
      );
    }
  }

  // Group workload counters by metric name: a family's samples must be contiguous.
  const families = new Map<string, [workload: string, value: number][]>();
  for (const [workload, counters] of Object.entries(input.workloads ?? {})) {
    for (const [metric, value] of Object.entries(counters)) {
      const name = workloadMetricName(metric);
      let samples = families.get(name);
      if (!samples) families.set(name, samples = []);
      samples.push([workload, value]);
    }
  }
  for (const name of [...families.keys()].sort()) {
    if (builtIn.has(name)) continue; // never emit a second TYPE for a built-in family
    const samples = families.get(name) ?? [];
    samples.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    family(
      name,
      "counter",
      WORKLOAD_COUNTER_HELP[name] ??
        `Counter ${name} reported by a custom workload.`,
    );
    for (const [workload, value] of samples) {
      lines.push(
        `${name}${formatLabels([["workload", workload]])} ${
          formatValue(value)
        }`,
      );
    }
  }
  return lines.join("\n") + "\n";
}

/** HELP texts of the counters of the built-in workloads (aggregator, archiver). */
const WORKLOAD_COUNTER_HELP: Readonly<Record<string, string>> = {
  "zae_aggregator_bucket_writes_total":
    "Bucket writes counted into usage snapshots by the aggregator.",
  "zae_aggregator_acquires_total":
    "Acquires counted in the total_events of usage snapshots.",
  "zae_aggregator_snapshot_updates_total":
    "Usage snapshot updates returned for commit.",
  "zae_aggregator_records_skipped_total":
    "Bucket records not counted on purpose (copies made by the namespace-keys migration).",
  "zae_aggregator_records_rejected_total":
    "Bucket records that cannot be counted (bad keys, no entity, mistyped attributes); dead-lettered.",
  "zae_aggregator_legacy_records_total":
    "Unprefixed (pre-0.10) bucket records attributed to the legacy namespace.",
  "zae_aggregator_refills_written_total":
    "Proactive refill writes that landed.",
  "zae_aggregator_refills_raced_total":
    "Refill writes skipped because another writer moved the refill timestamp first.",
  "zae_aggregator_refill_errors_total":
    "Refill writes that failed for another reason than a race.",
  "zae_archiver_events_archived_total":
    "Audit events written to the archive (every object of their batch stored).",
  "zae_archiver_objects_written_total": "Archive objects written.",
  "zae_archiver_legacy_events_total":
    "Unprefixed (pre-0.10) audit events archived under the legacy namespace.",
  "zae_archiver_incomplete_events_total":
    "Audit events archived without an old image or without an action.",
};

function snakeCase(camel: string): string {
  return camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function workloadMetricName(metric: string): string {
  let name = metric.replace(/[^a-zA-Z0-9_:]/g, "_");
  if (!name.startsWith("zae_")) name = `zae_${name}`;
  return name;
}

/** Escapes a label value: backslash, double quote and line feed. */
function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => c === "\n" ? "\\n" : `\\${c}`);
}

/** Escapes HELP text: backslash and line feed. */
function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => c === "\n" ? "\\n" : "\\\\");
}

function formatLabels(labels: readonly (readonly [string, string])[]): string {
  return `{${
    labels.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(",")
  }}`;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

// ---------------------------------------------------------------------------
// JSON logs
// ---------------------------------------------------------------------------

/** Log levels, lowest first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** A log level. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Structured fields of a log line. */
export type LogFields = Readonly<Record<string, unknown>>;

/** Writes one log line at a fixed level. */
export type LogMethod = (message: string, fields?: LogFields) => void;

/** A structured logger, one method per {@linkcode LogLevel}. */
export interface Logger {
  /** Logs at `debug`. */
  readonly debug: LogMethod;
  /** Logs at `info`. */
  readonly info: LogMethod;
  /** Logs at `warn`. */
  readonly warn: LogMethod;
  /** Logs at `error`. */
  readonly error: LogMethod;
}

/** Options of {@linkcode createJsonLogger}. */
export interface JsonLoggerOptions {
  /** Receives each line, without the trailing newline. @default writes the line and "\n" to stderr */
  readonly write?: (line: string) => void;
  /** Milliseconds since the epoch, for the `timestamp` field. @default Date.now */
  readonly now?: () => number;
  /** The `logger` field of every line. @default "zae-limiter" */
  readonly logger?: string;
  /** Lines below this level are dropped. @default "info" */
  readonly level?: LogLevel;
}

const RESERVED_FIELDS = new Set(["timestamp", "level", "logger", "message"]);

/**
 * Creates a logger that writes one JSON object per line:
 * `{"timestamp", "level", "logger", "message", ...fields}`.
 *
 * In the fields, `Error` values become `{name, message, code?, stack?, cause?}`,
 * bigints become strings, and circular references become `"[Circular]"`. A
 * field that still cannot be serialised (a throwing `toJSON` or getter) is
 * replaced by a string; logging never throws on its data. A field named like
 * one of the four fixed keys is written as `fields.<name>`. The default
 * writer ignores failures to write to stderr.
 *
 * @param options Writer, clock, logger name and minimum level.
 * @returns The logger.
 *
 * @example Log an error with a field
 * ```ts
 * import assert from "node:assert/strict";
 * import { createJsonLogger } from "./observability.ts";
 *
 * const lines: string[] = [];
 * const log = createJsonLogger({ write: (l) => lines.push(l), now: () => 0, logger: "worker" });
 * log.debug("dropped: below the default level");
 * log.warn("Cannot renew lease", { shardId: "s1", error: new RangeError("late") });
 * assert.equal(lines.length, 1);
 * const entry = JSON.parse(lines.join("\n"));
 * assert.equal(entry.timestamp, "1970-01-01T00:00:00.000Z");
 * assert.equal(entry.level, "warn");
 * assert.equal(entry.shardId, "s1");
 * assert.equal(entry.error.name, "RangeError");
 * ```
 */
export function createJsonLogger(options: JsonLoggerOptions = {}): Logger {
  const write = options.write ?? writeStderrLine;
  const now = options.now ?? Date.now;
  const loggerName = options.logger ?? "zae-limiter";
  const minimum = LOG_LEVELS.indexOf(options.level ?? "info");
  if (minimum < 0) {
    throw new RangeError(
      `Cannot create logger: level "${String(options.level)}" is not one of ${
        LOG_LEVELS.join(", ")
      }`,
    );
  }

  function method(level: LogLevel): LogMethod {
    if (LOG_LEVELS.indexOf(level) < minimum) {
      return function skip(): void {};
    }
    return function log(message: string, fields?: LogFields): void {
      const parts = [
        `"timestamp":${JSON.stringify(timestamp(now))}`,
        `"level":${JSON.stringify(level)}`,
        `"logger":${JSON.stringify(loggerName)}`,
        `"message":${JSON.stringify(String(message))}`,
      ];
      for (const [key, value] of Object.entries(fields ?? {})) {
        const name = RESERVED_FIELDS.has(key) ? `fields.${key}` : key;
        const json = safeJson(value);
        if (json !== undefined) parts.push(`${JSON.stringify(name)}:${json}`);
      }
      write(`{${parts.join(",")}}`);
    };
  }

  return {
    debug: method("debug"),
    info: method("info"),
    warn: method("warn"),
    error: method("error"),
  };
}

function timestamp(now: () => number): string {
  const ms = now();
  return Number.isFinite(ms)
    ? new Date(ms).toISOString()
    : new Date().toISOString();
}

/** JSON of one field value, or `undefined` when JSON omits it (functions, symbols, undefined). */
function safeJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value, logReplacer()) as string | undefined;
  } catch (error) {
    let text: string;
    try {
      text = String(value);
    } catch {
      text = Object.prototype.toString.call(value);
    }
    const reason = error instanceof Error ? error.message : "unknown error";
    return JSON.stringify(`[Unserializable: ${reason}] ${text}`);
  }
}

/**
 * A `JSON.stringify` replacer that serialises errors and bigints and cuts
 * cycles. `this` is the holder of `value`, so the ancestor stack is unwound
 * to the holder before each check (a shared, non-circular reference is
 * written twice, not cut).
 */
function logReplacer(): (
  this: unknown,
  key: string,
  value: unknown,
) => unknown {
  const ancestors: { original: object; written: object }[] = [];
  return function replace(
    this: unknown,
    _key: string,
    value: unknown,
  ): unknown {
    if (typeof value === "bigint") return value.toString();
    if (typeof value !== "object" || value === null) return value;
    while (ancestors.length > 0 && ancestors.at(-1)?.written !== this) {
      ancestors.pop();
    }
    if (ancestors.some((a) => a.original === value)) return "[Circular]";
    const written = value instanceof Error ? serializeError(value) : value;
    ancestors.push({ original: value, written });
    return written;
  };
}

function serializeError(error: Error): Record<string, unknown> {
  const out: Record<string, unknown> = {
    name: error.name,
    message: error.message,
  };
  const code = (error as { code?: unknown }).code;
  if (code !== undefined) out.code = code;
  if (typeof error.stack === "string") out.stack = error.stack;
  if (error.cause !== undefined) out.cause = error.cause;
  return out;
}

const encoder = new TextEncoder();

function writeStderrLine(line: string): void {
  try {
    const bytes = encoder.encode(line + "\n");
    let offset = 0;
    while (offset < bytes.length) {
      offset += Deno.stderr.writeSync(bytes.subarray(offset));
    }
  } catch {
    // Nowhere left to report a failure to write a log line.
  }
}

// ---------------------------------------------------------------------------
// Stream worker events
// ---------------------------------------------------------------------------

const TAKE_MESSAGES = {
  free: "Took shard lease",
  expired:
    "Took over the shard lease of a worker that stopped renewing it (crashed, hung or cut off)",
  own:
    "Took back this worker's own shard lease (after a restart or after giving it up during an outage)",
  rebalance: "Took shard lease over from a busier worker to balance the load",
} as const;

/**
 * Logs a stream worker event at its level: `lease_taken` (with its
 * `reason`), `lease_released` and `shard_ended` at info; `lease_lost`,
 * `lease_expired`, `throttled` and `iterator_expired` at warn; `error` at
 * debug when the worker retries it (outages are reported once, by the
 * `dependency` events) and at error when it cannot (`failure: "fatal"`);
 * `dead_letter` (with the record's key and the reason) and `data_loss` at
 * error; `dependency` events through {@linkcode logDependencyEvent}. The
 * fields are `event` (the kind) plus the event's own fields.
 *
 * @param logger Where to log.
 * @param event The event, as passed to the worker's `onEvent`.
 *
 * @example Report data loss
 * ```ts
 * import assert from "node:assert/strict";
 * import { createJsonLogger, logStreamEvent } from "./observability.ts";
 *
 * const lines: string[] = [];
 * const log = createJsonLogger({ write: (l) => lines.push(l) });
 * logStreamEvent(log, {
 *   kind: "data_loss",
 *   shardId: "s1",
 *   action: "stalled",
 *   error: new Error("trimmed"),
 * });
 * const entry = JSON.parse(lines.join("\n"));
 * assert.equal(entry.level, "error");
 * assert.equal(entry.event, "data_loss");
 * assert.match(entry.message, /lost/);
 * ```
 */
export function logStreamEvent(logger: Logger, event: StreamWorkerEvent): void {
  switch (event.kind) {
    case "lease_taken":
      logger.info(TAKE_MESSAGES[event.reason], {
        event: event.kind,
        shardId: event.shardId,
        epoch: event.epoch,
        reason: event.reason,
        ...(event.from === undefined ? {} : { from: event.from }),
      });
      return;
    case "lease_lost":
      logger.warn(
        event.owner === undefined
          ? "Another worker took the shard lease (or it was released); stopped reading the shard"
          : `Worker ${event.owner} took the shard lease; stopped reading the shard`,
        {
          event: event.kind,
          shardId: event.shardId,
          ...(event.owner === undefined ? {} : { owner: event.owner }),
        },
      );
      return;
    case "lease_expired":
      logger.warn(
        `Could not renew the shard lease for ${event.unrenewedMs} ms (DynamoDB did not answer); ` +
          "stopped reading the shard until its lease can be taken again",
        {
          event: event.kind,
          shardId: event.shardId,
          unrenewedMs: event.unrenewedMs,
        },
      );
      return;
    case "lease_released":
      logger.info("Released shard lease", {
        event: event.kind,
        shardId: event.shardId,
      });
      return;
    case "shard_ended":
      logger.info("Shard read to its end", {
        event: event.kind,
        shardId: event.shardId,
        children: event.children,
      });
      return;
    case "data_loss":
      logger.error(
        event.action === "stalled"
          ? "Records were lost: the shard position is older than the 24 h stream retention. " +
            "The shard is stalled and readyz fails. The lost records cannot be read again: " +
            "reconcile what they would have changed, then restart with onTrimmedData " +
            '"skip_to_trim_horizon" to resume from the oldest record still available'
          : "Records were lost: the shard position is older than the 24 h stream retention. " +
            "The worker skipped to the oldest record still available. The lost records " +
            "were never processed: reconcile what they would have changed",
        {
          event: event.kind,
          shardId: event.shardId,
          ...(event.afterSequenceNumber === undefined
            ? {}
            : { afterSequenceNumber: event.afterSequenceNumber }),
          action: event.action,
          error: event.error,
        },
      );
      return;
    case "dead_letter":
      logger.error(
        `Sent a record to the dead letters (${event.reason}): ${event.error.message}`,
        {
          event: event.kind,
          shardId: event.shardId,
          sequenceNumber: event.sequenceNumber,
          reason: event.reason,
          key: event.key,
          error: event.error,
        },
      );
      return;
    case "iterator_expired":
      logger.warn(
        "Shard iterator expired; reopened after the last record read",
        {
          event: event.kind,
          shardId: event.shardId,
          ...(event.afterSequenceNumber === undefined
            ? {}
            : { afterSequenceNumber: event.afterSequenceNumber }),
        },
      );
      return;
    case "throttled":
      logger.warn("DynamoDB Streams throttled a call; backing off", {
        event: event.kind,
        ...(event.shardId === undefined ? {} : { shardId: event.shardId }),
        delayMs: event.delayMs,
      });
      return;
    case "error": {
      const fields = {
        event: event.kind,
        ...(event.shardId === undefined ? {} : { shardId: event.shardId }),
        error: event.error,
        ...(event.failure === undefined ? {} : { failure: event.failure }),
      };
      if (event.failure === "fatal") {
        logger.error("Stream worker failure that no retry can fix", fields);
      } else if (event.failure === undefined) {
        logger.warn("Stream worker error; continuing", fields);
      } else {
        logger.debug("Stream worker call failed; retrying", fields);
      }
      return;
    }
    case "dependency":
      logDependencyEvent(logger, event.event);
      return;
    default: {
      const _exhaustive: never = event;
      // Unreachable for typed callers; keep JavaScript callers visible.
      logger.warn("Unknown stream worker event", {
        event: String((_exhaustive as { kind?: unknown }).kind),
      });
    }
  }
}

const SERVICE_NAMES = {
  dynamodb: "DynamoDB",
  streams: "DynamoDB Streams",
} as const;

/**
 * Logs a reachability event of DynamoDB or DynamoDB Streams: one `error`
 * line when an outage starts (calls failed for the outage threshold) and
 * one when it ends (with its start, end and duration); the first failed
 * call of a streak at `warn` (at `debug` for a throttle, at `error` when no
 * retry can fix it). Calls failing during an outage log nothing more.
 *
 * @param logger Where to log.
 * @param event The event, from `DependencyHealth`.
 *
 * @example An outage that lasted 12 s
 * ```ts
 * import assert from "node:assert/strict";
 * import { createJsonLogger, logDependencyEvent } from "./observability.ts";
 *
 * const lines: string[] = [];
 * const log = createJsonLogger({ write: (l) => lines.push(l) });
 * logDependencyEvent(log, {
 *   kind: "outage_ended", dependency: "dynamodb",
 *   since: 0, until: 12_000, durationMs: 12_000, failedCalls: 9,
 * });
 * const entry = JSON.parse(lines.join("\n"));
 * assert.equal(entry.level, "error");
 * assert.equal(entry.event, "outage_ended");
 * assert.equal(entry.durationMs, 12_000);
 * assert.equal(entry.since, "1970-01-01T00:00:00.000Z");
 * ```
 */
export function logDependencyEvent(
  logger: Logger,
  event: DependencyEvent,
): void {
  const service = SERVICE_NAMES[event.dependency];
  switch (event.kind) {
    case "call_failed": {
      const fields = {
        event: event.kind,
        dependency: event.dependency,
        operation: event.operation,
        failure: event.failure,
        error: event.error,
      };
      if (event.failure === "fatal") {
        logger.error(
          `${service} refused ${event.operation}; no retry can fix that`,
          fields,
        );
      } else if (event.failure === "throttled") {
        logger.debug(
          `${service} throttled ${event.operation}; retrying`,
          fields,
        );
      } else {
        logger.warn(
          `${service} did not answer ${event.operation}; retrying`,
          fields,
        );
      }
      return;
    }
    case "outage_started":
      logger.error(
        `${service} unreachable: calls have failed since ${
          isoTime(event.since)
        }; retrying with backoff, /readyz fails until it answers`,
        {
          event: event.kind,
          dependency: event.dependency,
          since: isoTime(event.since),
          operation: event.operation,
          error: event.error,
        },
      );
      return;
    case "outage_ended":
      logger.error(
        `${service} reachable again after an outage of ${
          (event.durationMs / 1000).toFixed(1)
        } s (${isoTime(event.since)} to ${isoTime(event.until)})`,
        {
          event: event.kind,
          dependency: event.dependency,
          since: isoTime(event.since),
          until: isoTime(event.until),
          durationMs: event.durationMs,
          failedCalls: event.failedCalls,
        },
      );
      return;
    default: {
      const _exhaustive: never = event;
      logger.warn("Unknown dependency event", {
        event: String((_exhaustive as { kind?: unknown }).kind),
      });
    }
  }
}

function isoTime(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms);
}

// ---------------------------------------------------------------------------
// Health server
// ---------------------------------------------------------------------------

/** The answer of a liveness or readiness check. */
export interface HealthCheckResult {
  /** Whether the check passes. */
  readonly ok: boolean;
  /** Why it fails; the body of the 503 response. */
  readonly reason?: string;
}

/** Options of {@linkcode startHealthServer}. */
export interface HealthServerOptions {
  /** TCP port; 0 picks a free one (read it from {@linkcode HealthServer.port}). */
  readonly port: number;
  /** Interface to listen on. @default "0.0.0.0" */
  readonly hostname?: string;
  /** Liveness: `GET /livez` answers 200 when ok, else 503 with the reason. */
  livez(): HealthCheckResult;
  /** Readiness: `GET /readyz` answers 200 when ok, else 503 with the reason. */
  readyz(): HealthCheckResult;
  /**
   * Prometheus text for `GET /metrics`, for example from
   * {@linkcode renderPrometheus} or a prom-client registry (a promise).
   */
  metrics(): string | Promise<string>;
  /** Stops the server when aborted. */
  readonly signal?: AbortSignal;
  /** Called once the server listens. No banner is printed either way. */
  readonly onListen?: (addr: { hostname: string; port: number }) => void;
}

/** A running health server. */
export interface HealthServer {
  /** The bound port (the chosen one when `port` was 0). */
  readonly port: number;
  /** Stops listening and waits for open requests to finish. Idempotent. */
  shutdown(): Promise<void>;
}

/**
 * Starts an HTTP server with `GET /livez`, `GET /readyz` and `GET /metrics`.
 *
 * Checks answer `200 ok` or `503 <reason>` (a check that throws counts as
 * failing); `/metrics` answers with {@linkcode PROMETHEUS_CONTENT_TYPE}.
 * Other paths answer 404, other methods on these paths 405.
 *
 * @param options Port, hostname, checks, metrics and an abort signal.
 * @returns The bound port and a `shutdown()`.
 * @throws {RangeError} When `port` is not an integer from 0 to 65535.
 *
 * @example Serve on an ephemeral port
 * ```ts ignore
 * import { startHealthServer } from "./observability.ts";
 *
 * const server = startHealthServer({
 *   port: 0,
 *   hostname: "127.0.0.1",
 *   livez: () => ({ ok: true }),
 *   readyz: () => ({ ok: false, reason: "shard graph not loaded" }),
 *   metrics: () => "",
 * });
 * const res = await fetch(`http://127.0.0.1:${server.port}/readyz`);
 * console.log(res.status, await res.text()); // 503 shard graph not loaded
 * await server.shutdown();
 * ```
 */
export function startHealthServer(options: HealthServerOptions): HealthServer {
  const { port, signal } = options;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(
      `Cannot start health server: port is ${port}, expected an integer from 0 to 65535`,
    );
  }
  const onListen = options.onListen;
  const server = Deno.serve({
    port,
    hostname: options.hostname ?? "0.0.0.0",
    onListen(addr: Deno.NetAddr): void {
      onListen?.({ hostname: addr.hostname, port: addr.port });
    },
    onError(): Response {
      return text(500, "internal error");
    },
  }, function handleHealthRequest(
    request: Request,
  ): Response | Promise<Response> {
    return route(request, options);
  });

  let stopped: Promise<void> | undefined;
  function shutdown(): Promise<void> {
    signal?.removeEventListener("abort", onAbort);
    stopped ??= server.shutdown().then(() => server.finished);
    return stopped;
  }
  function onAbort(): void {
    void shutdown();
  }
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  return { port: server.addr.port, shutdown };
}

function route(
  request: Request,
  options: HealthServerOptions,
): Response | Promise<Response> {
  const { pathname } = new URL(request.url);
  if (
    pathname !== "/livez" && pathname !== "/readyz" && pathname !== "/metrics"
  ) {
    return text(404, "not found");
  }
  if (request.method !== "GET") {
    return text(405, "method not allowed", { allow: "GET" });
  }
  if (pathname === "/metrics") {
    const failed = (error: unknown): Response =>
      text(500, `Cannot render metrics: ${errorMessage(error)}`);
    const ok = (body: string): Response =>
      new Response(body, {
        status: 200,
        headers: {
          "content-type": PROMETHEUS_CONTENT_TYPE,
          "cache-control": "no-store",
        },
      });
    let body: string | Promise<string>;
    try {
      body = options.metrics();
    } catch (error) {
      return failed(error);
    }
    return typeof body === "string" ? ok(body) : body.then(ok, failed);
  }
  const check = pathname === "/livez" ? "liveness" : "readiness";
  let result: HealthCheckResult;
  try {
    result = pathname === "/livez" ? options.livez() : options.readyz();
  } catch (error) {
    return text(503, `Cannot check ${check}: ${errorMessage(error)}`);
  }
  return result.ok
    ? text(200, "ok")
    : text(503, result.reason ?? `${check} check failed`);
}

function text(
  status: number,
  body: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(body, {
    status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "cache-control": "no-store",
      ...headers,
    },
  });
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The worker process: one stream worker per workload (usage aggregation,
 * audit archiving), each with its own lease group and checkpoints, so
 * workers running different workloads never take records from each other;
 * their dead letters in the table, a heartbeat item carrying the version,
 * `/livez`, `/readyz` and `/metrics` on a port, JSON logs, and a drain on
 * shutdown that ends within `shutdownGraceMs` whatever DynamoDB does.
 *
 * DynamoDB and DynamoDB Streams failures never end the process: calls are
 * retried with backoff (startup included), `/readyz` fails during an
 * outage, and the outage is logged once when it starts and once when it
 * ends. Only a failure no retry can fix (access denied, no table, no
 * stream) ends it, logged as JSON with the reason.
 *
 * `zae-limiter worker run` wires signals to {@linkcode runWorkerProcess};
 * tests and embedders call it directly with an `AbortSignal`.
 *
 * @module
 */
import {
  DescribeTableCommand,
  type DescribeTableCommandOutput,
  type DynamoDBClient,
} from "@aws-sdk/client-dynamodb";
import type { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { type Clock, systemClock } from "../core/clock.ts";
import { DEFAULT_NAMESPACE } from "../core/keys.ts";
import { getActiveNamespaceRecord } from "../core/namespace_registry.ts";
import { CLIENT_VERSION, SCHEMA_VERSION } from "../core/schema.ts";
import type { SnapshotWindow } from "../core/usage.ts";
import { ZAELimiterError } from "../core/zae_limiter_error.ts";
import { fullJitter } from "../core/_backoff.ts";
import { sleepUnlessAborted } from "./_util.ts";
import { createAggregatorWorkload } from "./aggregator.ts";
import { createWorkerRegistry } from "./prometheus.ts";
import { type ArchiveSink, createArchiverWorkload } from "./archiver.ts";
import { createDynamoDbCoordinationStore } from "./coordination_store_dynamodb.ts";
import { createDynamoDbDeadLetterStore } from "./dead_letters_dynamodb.ts";
import { classifyFailure, StreamWorkerError, toError } from "./errors.ts";
import {
  createHeartbeat,
  removeExpiredHeartbeats,
  WORKER_CONSUMER_NAME,
} from "./heartbeat.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerMetrics,
} from "./metrics.ts";
import {
  createJsonLogger,
  type HealthServer,
  logDependencyEvent,
  type LogFields,
  type Logger,
  logStreamEvent,
  startHealthServer,
} from "./observability.ts";
import { DependencyHealth, observeCall } from "./resilience.ts";
import { createAwsStreamSource } from "./stream_source_aws.ts";
import {
  runStreamWorker,
  type StreamWorkerOptions,
  type StreamWorkerStopReport,
} from "./stream_worker.ts";
import { combineWorkloads, type Workload } from "./workload.ts";

/** Workloads the worker process can run. */
export const WORKLOAD_NAMES = ["aggregator", "archiver"] as const;
/** A workload name. */
export type WorkloadName = typeof WORKLOAD_NAMES[number];

/**
 * The consumer name of one workload's lease group (its leases and
 * checkpoints): `zae-workers#aggregator`, `zae-workers#archiver`. Each
 * workload reads every shard on its own, so a worker that runs only some
 * workloads never moves another workload's checkpoint past records it did
 * not see, and a workload turned on later starts from the oldest record
 * the stream still holds (24 h).
 */
export function workloadConsumerName(workload: string): string {
  return `${WORKER_CONSUMER_NAME}#${workload}`;
}

/** Options of {@linkcode runWorkerProcess}. */
export interface WorkerProcessOptions {
  /** DynamoDB client (table, leases, snapshots, refills, dead letters). */
  readonly client: DynamoDBClient;
  /** DynamoDB Streams client. */
  readonly streamsClient: Pick<DynamoDBStreamsClient, "send">;
  /** The table (= stack name). */
  readonly tableName: string;
  /** Workloads to run. */
  readonly workloads: readonly WorkloadName[];
  /** Stops the worker: drain, checkpoint, release, exit. */
  readonly signal: AbortSignal;
  /** Archive destination; required with `archiver`. */
  readonly archiveSink?: ArchiveSink;
  /** Archive only TTL deletions (not explicit deletes). @default false */
  readonly archiveTtlOnly?: boolean;
  /** Snapshot windows. @default ["hourly", "daily"] */
  readonly windows?: readonly SnapshotWindow[];
  /** Snapshot retention in days. @default 90 */
  readonly snapshotRetentionDays?: number;
  /** Proactive bucket refill. @default true */
  readonly refill?: boolean;
  /** Worker id. @default `{hostname}-{pid}-{random}` */
  readonly workerId?: string;
  /** Port of `/livez`, `/readyz`, `/metrics`; `null` for none. @default 8080 */
  readonly port?: number | null;
  /** Address to bind. @default "0.0.0.0" */
  readonly hostname?: string;
  /** Logger. @default JSON lines on stderr */
  readonly logger?: Logger;
  /** Heartbeat interval. @default 10000 */
  readonly heartbeatIntervalMs?: number;
  /** DynamoDB calls failing without an answer for this long make an outage (`/readyz` fails, one error log). @default 5000 */
  readonly outageAfterMs?: number;
  /** Clock. */
  readonly clock?: Clock;
  /**
   * Stream-worker tuning (lease duration, batch window, call deadline,
   * ...). `shutdownGraceMs` is the budget of the whole process drain:
   * batches, checkpoints, lease release and heartbeat removal.
   */
  readonly tuning?: Partial<
    Omit<
      StreamWorkerOptions,
      | "source"
      | "store"
      | "handler"
      | "deadLetterSink"
      | "signal"
      | "workerId"
      | "filters"
      | "metrics"
      | "health"
    >
  >;
  /** Called once the health server listens (port 0 picks a free one). */
  readonly onListen?: (port: number) => void;
  /**
   * Counters, for embedding and tests: the sum over the workloads' stream
   * workers (gauges: leases and stalled shards summed, lag and timestamps
   * the maximum), refreshed on every coordinator cycle and every event.
   */
  readonly metrics?: StreamWorkerMetrics;
}

/** What {@linkcode runWorkerProcess} resolves with after a shutdown. */
export interface WorkerStopReport {
  /** Whether every step of the drain finished within the grace. */
  readonly complete: boolean;
  /** The steps that did not, in words (also logged). */
  readonly unfinished: readonly string[];
  /** Milliseconds from the shutdown request to the end of the drain. */
  readonly durationMs: number;
}

/**
 * The worker stopped on a failure no retry can fix. It was logged (JSON,
 * with the reason) before this was thrown; `cause` is the failure.
 */
export class WorkerStoppedError extends ZAELimiterError {
  /** Stable code: always `WORKER_STOPPED`. */
  declare readonly code: "WORKER_STOPPED";

  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("WORKER_STOPPED", message, {
      fault: "server",
      ...(options?.cause === undefined ? {} : { cause: options.cause }),
    });
    this.name = "WorkerStoppedError";
  }
}

function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "worker"; // no --allow-sys: a generic name
  }
}

function defaultWorkerId(): string {
  return `${hostName()}-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Finds the table's stream.
 *
 * @throws {StreamWorkerError} `STREAM_NOT_FOUND` (not retryable), naming the
 * table and the fix, when the stream is off or has the wrong view type
 */
export async function tableStreamArn(
  client: Pick<DynamoDBClient, "send">,
  tableName: string,
  signal?: AbortSignal,
): Promise<string> {
  const out = await client.send(
    new DescribeTableCommand({ TableName: tableName }),
    signal ? { abortSignal: signal } : {},
  ) as DescribeTableCommandOutput;
  const arn = out.Table?.LatestStreamArn;
  const spec = out.Table?.StreamSpecification;
  if (arn === undefined || spec?.StreamEnabled === false) {
    throw new StreamWorkerError(
      "STREAM_NOT_FOUND",
      `Cannot run workers on table '${tableName}': its stream is not enabled (deploy it with 'zae-limiter deploy', which enables NEW_AND_OLD_IMAGES)`,
    );
  }
  if (
    spec?.StreamViewType !== undefined &&
    spec.StreamViewType !== "NEW_AND_OLD_IMAGES"
  ) {
    throw new StreamWorkerError(
      "STREAM_NOT_FOUND",
      `Cannot run workers on table '${tableName}': stream view type is ${spec.StreamViewType}, the workers need NEW_AND_OLD_IMAGES`,
    );
  }
  return arn;
}

/**
 * Builds the chosen workloads.
 *
 * @throws {ZAELimiterError} `CONFIG_INVALID` when the archiver is chosen
 * without a destination
 */
export function buildWorkloads(
  options: Pick<
    WorkerProcessOptions,
    | "client"
    | "tableName"
    | "workloads"
    | "archiveSink"
    | "archiveTtlOnly"
    | "windows"
    | "snapshotRetentionDays"
    | "refill"
    | "clock"
    | "logger"
  >,
  legacyNamespaceId: string | undefined,
): Workload[] {
  const out: Workload[] = [];
  for (const name of options.workloads) {
    switch (name) {
      case "aggregator":
        out.push(createAggregatorWorkload({
          tableName: options.tableName,
          ...(options.windows ? { windows: options.windows } : {}),
          ...(options.snapshotRetentionDays
            ? { retentionDays: options.snapshotRetentionDays }
            : {}),
          ...(legacyNamespaceId ? { legacyNamespaceId } : {}),
          refill: options.refill ?? true,
          client: options.client,
          ...(options.clock ? { clock: options.clock } : {}),
          onRefillError: (error) =>
            options.logger?.debug("Refill write failed; counts unaffected", {
              error,
            }),
        }));
        break;
      case "archiver":
        if (options.archiveSink === undefined) {
          throw new ZAELimiterError(
            "CONFIG_INVALID",
            "Cannot run the archiver without a destination: give --archive-bucket or --archive-dir",
          );
        }
        out.push(createArchiverWorkload({
          sink: options.archiveSink,
          ...(options.archiveTtlOnly ? { ttlOnly: true } : {}),
        }));
        break;
      default: {
        const _exhaustive: never = name;
        throw new TypeError(`Unknown workload ${String(_exhaustive)}`);
      }
    }
  }
  return out;
}

/** The sum of several stream workers' counters (gauges: see {@linkcode WorkerProcessOptions.metrics}). */
export function sumMetrics(
  all: readonly Readonly<StreamWorkerMetrics>[],
): StreamWorkerMetrics {
  const out = createStreamWorkerMetrics();
  const keys = Object.keys(out) as (keyof StreamWorkerMetrics)[];
  for (const m of all) {
    for (const k of keys) {
      out[k] = k === "lagMs" || k === "lastReadAt" || k === "lastCommitAt"
        ? Math.max(out[k], m[k])
        : out[k] + m[k];
    }
  }
  return out;
}

function withFields(log: Logger, extra: LogFields): Logger {
  const wrap = (m: Logger["info"]): Logger["info"] => (message, fields) =>
    m(message, { ...extra, ...fields });
  return {
    debug: wrap(log.debug),
    info: wrap(log.info),
    warn: wrap(log.warn),
    error: wrap(log.error),
  };
}

/** Sleeps until `ms` passed or `signal` aborted, never rejecting. */
async function pause(
  clock: Clock,
  ms: number,
  signal: AbortSignal,
): Promise<void> {
  await sleepUnlessAborted(clock, ms, signal).catch(() => false);
}

/**
 * Runs the worker process until `signal` aborts, then drains within
 * `tuning.shutdownGraceMs` (default 20 s): in-flight batches finish,
 * checkpoints are written, leases released and the heartbeat removed; a
 * step DynamoDB does not answer in time is given up and reported.
 *
 * @returns What the drain could not finish (also logged)
 * @throws {WorkerStoppedError} on a failure no retry can fix (no table,
 * no stream, access denied), after logging it as JSON
 */
export async function runWorkerProcess(
  options: WorkerProcessOptions,
): Promise<WorkerStopReport> {
  const log = options.logger ?? createJsonLogger({ logger: "zae-worker" });
  const clock = options.clock ?? systemClock;
  const workerId = options.workerId ?? defaultWorkerId();
  const graceMs = options.tuning?.shutdownGraceMs ?? 20_000;
  /** Left at the end of the grace for the process to exit. */
  const exitReserveMs = Math.min(500, graceMs / 10);
  const leaseDurationMs = options.tuning?.leaseDurationMs ?? 10_000;
  const callTimeoutMs = options.tuning?.callTimeoutMs ??
    Math.min(5_000, Math.max(1, Math.floor(leaseDurationMs / 2)));
  const calls = { clock, timeoutMs: callTimeoutMs };
  const health = new DependencyHealth({
    clock,
    ...(options.outageAfterMs === undefined
      ? {}
      : { outageAfterMs: options.outageAfterMs }),
    onEvent: (event) => logDependencyEvent(log, event),
  });
  const startedAt = clock.now();
  const prometheus = createWorkerRegistry();
  const groups = new Map<string, StreamWorkerMetrics>();
  const lastCycle = new Map<string, number>();
  let phase: "starting" | "running" | "draining" = "starting";
  let shutdownAt: number | undefined;
  const refreshTotals = (): void => {
    if (options.metrics) {
      Object.assign(options.metrics, sumMetrics([...groups.values()]));
    }
  };
  let workloads: Workload[] = [];

  const onAbort = (): void => {
    shutdownAt ??= clock.now();
    if (phase !== "starting") phase = "draining";
    log.info("Shutdown requested: draining", { workerId, graceMs });
  };
  if (options.signal.aborted) onAbort();
  else options.signal.addEventListener("abort", onAbort, { once: true });

  let server: HealthServer | undefined;
  if (options.port !== null) {
    server = startHealthServer({
      port: options.port ?? 8080,
      hostname: options.hostname ?? "0.0.0.0",
      livez: () => {
        // A coordinator that cycles is alive, even while DynamoDB is not.
        const limit = 3 * leaseDurationMs + 4 * callTimeoutMs;
        const now = clock.now();
        for (const [workload, at] of lastCycle) {
          if (now - at > limit) {
            return {
              ok: false,
              reason: `${workload}: no coordinator cycle for ${now - at} ms`,
            };
          }
        }
        return { ok: true };
      },
      readyz: () => {
        if (phase === "draining") return { ok: false, reason: "draining" };
        const down = health.outages().map((o) =>
          `${
            o.dependency === "dynamodb" ? "DynamoDB" : "DynamoDB Streams"
          } unreachable since ${
            new Date(o.since).toISOString()
          } (${o.failedCalls} failed calls): ${o.error.message}`
        );
        if (down.length > 0) return { ok: false, reason: down.join("; ") };
        if (phase === "starting" || lastCycle.size < workloads.length) {
          return { ok: false, reason: "starting" };
        }
        const stalled = [...groups.values()].reduce(
          (n, m) => n + m.stalledShards,
          0,
        );
        if (stalled > 0) {
          return {
            ok: false,
            reason: `${stalled} shard(s) stopped on data loss`,
          };
        }
        return { ok: true };
      },
      metrics: () =>
        prometheus.render({
          groups: Object.fromEntries(groups),
          dependencies: { errors: health.errors(), outages: health.outages() },
          now: clock.now(),
          startedAt,
          workerId,
          version: CLIENT_VERSION,
          workloads: Object.fromEntries(
            workloads.map((w) => [w.name, w.counters()]),
          ),
        }),
      onListen: ({ port }) => options.onListen?.(port),
    });
  }

  /** Retries a startup call until it answers, the worker stops (undefined) or it fails for good (throws). */
  async function startupCall<T>(
    operation: string,
    fn: (signal: AbortSignal) => Promise<T>,
  ): Promise<T | undefined> {
    for (let attempt = 0;; attempt++) {
      if (options.signal.aborted) return undefined;
      try {
        return await observeCall(
          health,
          "dynamodb",
          operation,
          calls,
          options.signal,
          fn,
        );
      } catch (error) {
        if (options.signal.aborted) return undefined;
        if (classifyFailure(error) === "fatal") throw error;
        await pause(
          clock,
          fullJitter(attempt, 200, 5_000, Math.random),
          options.signal,
        );
      }
    }
  }

  const heartbeatStop = new AbortController();
  let heartbeatLoop: Promise<void> = Promise.resolve();
  let heartbeat: ReturnType<typeof createHeartbeat> | undefined;
  let drainingBeat: Promise<void> = Promise.resolve();
  let fatal: Error | undefined;
  const unfinished: string[] = [];
  const reports: [string, StreamWorkerStopReport][] = [];
  try {
    const streamArn = await startupCall(
      "describe_table",
      (signal) => tableStreamArn(options.client, options.tableName, signal),
    );
    if (streamArn === undefined) {
      return { complete: true, unfinished: [], durationMs: 0 };
    }
    const legacy = await startupCall(
      "read_namespace",
      (signal) =>
        getActiveNamespaceRecord(
          { client: options.client, table: options.tableName, clock, signal },
          DEFAULT_NAMESPACE,
        ),
    );
    if (options.signal.aborted) {
      return { complete: true, unfinished: [], durationMs: 0 };
    }
    const legacyNamespaceId = legacy?.["namespace_id"]?.S;
    workloads = buildWorkloads({ ...options, logger: log }, legacyNamespaceId);
    combineWorkloads(workloads); // rejects duplicates and an empty list
    heartbeat = createHeartbeat(options.client, {
      tableName: options.tableName,
      workerId,
      version: CLIENT_VERSION,
      schemaVersion: SCHEMA_VERSION,
      workloads: options.workloads,
      host: hostName(),
      clock,
    });
    const hb = heartbeat;
    let beats = 0;
    const beat = async (draining: boolean): Promise<void> => {
      try {
        await observeCall(
          health,
          "dynamodb",
          "heartbeat",
          calls,
          draining ? undefined : heartbeatStop.signal,
          (signal) =>
            hb.beat({
              leasesHeld: sumMetrics([...groups.values()]).leasesHeld,
              draining,
            }, signal),
        );
        if (beats++ % 60 === 0) {
          // Forget workers that died without removing their heartbeat.
          await observeCall(
            health,
            "dynamodb",
            "heartbeat",
            calls,
            heartbeatStop.signal,
            (signal) =>
              removeExpiredHeartbeats(options.client, options.tableName, {
                nowMs: clock.now(),
                signal,
              }),
          );
        }
      } catch (error) {
        log.debug("Heartbeat write failed", { error });
      }
    };
    await beat(false);
    phase = "running";
    log.info("Worker started", {
      workerId,
      table: options.tableName,
      streamArn,
      workloads: options.workloads,
      leaseGroups: options.workloads.map(workloadConsumerName),
      version: CLIENT_VERSION,
      legacyNamespaceId: legacyNamespaceId ?? null,
      port: server?.port ?? null,
      shutdownGraceMs: graceMs,
    });
    heartbeatLoop = (async () => {
      const every = options.heartbeatIntervalMs ?? 10_000;
      while (!heartbeatStop.signal.aborted) {
        await pause(clock, every, heartbeatStop.signal);
        if (heartbeatStop.signal.aborted) return;
        await beat(false);
      }
    })();
    const onDrain = (): void => {
      phase = "draining";
      drainingBeat = beat(true);
    };
    if (options.signal.aborted) onDrain();
    else options.signal.addEventListener("abort", onDrain, { once: true });

    // One stream worker per workload; a fatal failure of one stops all.
    const stop = new AbortController();
    const forward = (): void => stop.abort();
    if (options.signal.aborted) forward();
    else options.signal.addEventListener("abort", forward, { once: true });
    // The heartbeat removal gets the end of the grace, the process exit the very end.
    const streamGraceMs = Math.max(
      0,
      graceMs - exitReserveMs - Math.min(2_000, graceMs / 5),
    );
    const settled = await Promise.allSettled(workloads.map((w) => {
      const metrics = createStreamWorkerMetrics();
      groups.set(w.name, metrics);
      const { filter, handler } = combineWorkloads([w]);
      const groupLog = withFields(log, { workload: w.name });
      return runStreamWorker({
        ...options.tuning,
        // Up to a second of records per transaction: fewer, larger commits; lag stays ~1 s.
        batchWindowMs: options.tuning?.batchWindowMs ?? 1_000,
        // A late count beats a dead letter: by default only records the stream is about to trim are given up.
        maxRecordAgeMs: options.tuning?.maxRecordAgeMs ?? 86_400_000,
        callTimeoutMs,
        shutdownGraceMs: streamGraceMs,
        source: createAwsStreamSource(options.streamsClient, streamArn),
        store: createDynamoDbCoordinationStore(options.client, {
          tableName: options.tableName,
          consumerName: workloadConsumerName(w.name),
          streamArn,
          clock,
        }),
        handler,
        filters: [filter],
        deadLetterSink: createDynamoDbDeadLetterStore(options.client, {
          tableName: options.tableName,
          consumerName: WORKER_CONSUMER_NAME,
          workload: w.name,
          clock,
        }),
        workerId,
        signal: stop.signal,
        clock,
        metrics,
        health,
        onBatch: (b) => prometheus.observeBatch({ ...b, workload: w.name }),
        onCommit: (c) => prometheus.observeCommit({ ...c, workload: w.name }),
        onMetrics: () => {
          lastCycle.set(w.name, clock.now());
          refreshTotals();
        },
        onEvent: (event) => {
          logStreamEvent(groupLog, event);
          refreshTotals();
        },
      }).then((report) => {
        reports.push([w.name, report]);
      }, (error: unknown) => {
        fatal ??= toError(error);
        stop.abort();
        throw error;
      });
    }));
    options.signal.removeEventListener("abort", forward);
    options.signal.removeEventListener("abort", onDrain);
    for (const s of settled) {
      if (s.status === "rejected") fatal ??= toError(s.reason);
    }
  } catch (error) {
    fatal ??= toError(error);
  } finally {
    options.signal.removeEventListener("abort", onAbort);
    phase = "draining";
    shutdownAt ??= clock.now();
    const end = shutdownAt + graceMs - exitReserveMs;
    heartbeatStop.abort();
    await heartbeatLoop;
    for (const [workload, r] of reports) {
      if (r.cutShort.length > 0) {
        unfinished.push(
          `${workload}: in-flight batches of shard(s) ${
            r.cutShort.join(", ")
          } aborted (their records are read again by the next owner)`,
        );
      }
      for (const n of r.notReleased) {
        unfinished.push(
          `${workload}: lease of shard ${n.shardId} not released (${n.reason}); it expires after the lease duration and its deferred checkpoint was not written`,
        );
      }
    }
    if (heartbeat !== undefined) {
      // The "draining" beat must not land after the removal (it gets half of what is left).
      const waited = new AbortController();
      await Promise.race([
        drainingBeat,
        pause(clock, Math.max(0, (end - clock.now()) / 2), waited.signal),
      ]);
      waited.abort();
      const left = end - clock.now() - 100;
      const hb = heartbeat;
      if (left <= 0) {
        unfinished.push(
          "heartbeat not removed (no time left within the shutdown grace); it shows as stale after 60 s",
        );
      } else {
        await observeCall(
          health,
          "dynamodb",
          "remove_heartbeat",
          { clock, timeoutMs: Math.min(left, callTimeoutMs) },
          undefined,
          (signal) => hb.remove(signal),
        ).catch((error) =>
          unfinished.push(
            `heartbeat not removed (${
              toError(error).message
            }); it shows as stale after 60 s`,
          )
        );
      }
    }
    if (server !== undefined) {
      const stopped = new AbortController();
      await Promise.race([
        server.shutdown(),
        pause(clock, Math.max(0, end - clock.now()), stopped.signal),
      ]);
      stopped.abort();
    }
    refreshTotals();
  }
  const totals = sumMetrics([...groups.values()]);
  const durationMs = clock.now() - (shutdownAt ?? clock.now());
  if (unfinished.length > 0) {
    log.error("Shutdown incomplete: steps not finished within the grace", {
      workerId,
      graceMs,
      durationMs,
      unfinished,
    });
  }
  log.info("Worker stopped", {
    workerId,
    durationMs,
    leasesReleased: totals.leasesReleased,
    commits: totals.commits,
    deadLetters: totals.deadLetters,
  });
  if (fatal !== undefined) {
    log.error(`Worker stopped: ${fatal.message}`, {
      workerId,
      reason: fatal.message,
      error: fatal,
    });
    throw new WorkerStoppedError(`Worker stopped: ${fatal.message}`, {
      cause: fatal,
    });
  }
  return { complete: unfinished.length === 0, unfinished, durationMs };
}

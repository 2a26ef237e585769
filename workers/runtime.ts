/**
 * The worker process: one stream worker reading the table's stream with
 * the chosen workloads (usage aggregation, audit archiving), its dead
 * letters in the table, a heartbeat item carrying its version, `/livez`,
 * `/readyz` and `/metrics` on a port, JSON logs, and a drain on shutdown.
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
import { createAggregatorWorkload } from "./aggregator.ts";
import { type ArchiveSink, createArchiverWorkload } from "./archiver.ts";
import { createDynamoDbCoordinationStore } from "./coordination_store_dynamodb.ts";
import { createDynamoDbDeadLetterStore } from "./dead_letters_dynamodb.ts";
import { createHeartbeat, WORKER_CONSUMER_NAME } from "./heartbeat.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerMetrics,
} from "./metrics.ts";
import {
  createJsonLogger,
  type HealthServer,
  type Logger,
  logStreamEvent,
  renderPrometheus,
  startHealthServer,
} from "./observability.ts";
import { createAwsStreamSource } from "./stream_source_aws.ts";
import { runStreamWorker, type StreamWorkerOptions } from "./stream_worker.ts";
import { combineWorkloads, type Workload } from "./workload.ts";

/** Workloads the worker process can run. */
export const WORKLOAD_NAMES = ["aggregator", "archiver"] as const;
/** A workload name. */
export type WorkloadName = typeof WORKLOAD_NAMES[number];

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
  /** Clock. */
  readonly clock?: Clock;
  /** Stream-worker tuning (lease duration, batch window, ...). */
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
    >
  >;
  /** Called once the health server listens (port 0 picks a free one). */
  readonly onListen?: (port: number) => void;
  /** Counters, for embedding and tests. */
  readonly metrics?: StreamWorkerMetrics;
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
 * @throws {Error} naming the table and the fix when streams are off
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
    throw new Error(
      `Cannot run workers on table '${tableName}': its stream is not enabled (deploy it with 'zae-limiter deploy', which enables NEW_AND_OLD_IMAGES)`,
    );
  }
  if (
    spec?.StreamViewType !== undefined &&
    spec.StreamViewType !== "NEW_AND_OLD_IMAGES"
  ) {
    throw new Error(
      `Cannot run workers on table '${tableName}': stream view type is ${spec.StreamViewType}, the workers need NEW_AND_OLD_IMAGES`,
    );
  }
  return arn;
}

/** Builds the chosen workloads. */
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
            options.logger?.warn("Refill write failed; counts unaffected", {
              error,
            }),
        }));
        break;
      case "archiver":
        if (options.archiveSink === undefined) {
          throw new Error(
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
        throw new Error(`Unknown workload ${String(_exhaustive)}`);
      }
    }
  }
  return out;
}

/**
 * Runs the worker process until `signal` aborts, then drains: in-flight
 * batches finish (within `tuning.shutdownGraceMs`), checkpoints are
 * written, leases released and the heartbeat removed.
 *
 * @throws {Error} when the stream is off or the worker fails fatally
 */
export async function runWorkerProcess(
  options: WorkerProcessOptions,
): Promise<void> {
  const log = options.logger ?? createJsonLogger({ logger: "zae-worker" });
  const clock = options.clock ?? systemClock;
  const workerId = options.workerId ?? defaultWorkerId();
  const streamArn = await tableStreamArn(
    options.client,
    options.tableName,
    options.signal,
  );
  const legacy = await getActiveNamespaceRecord(
    { client: options.client, table: options.tableName, clock },
    DEFAULT_NAMESPACE,
  ).catch(() => null);
  const legacyNamespaceId = legacy?.["namespace_id"]?.S;
  const workloads = buildWorkloads(
    { ...options, logger: log },
    legacyNamespaceId,
  );
  const { filter, handler } = combineWorkloads(workloads);
  const metrics = options.metrics ?? createStreamWorkerMetrics();
  const deadLetters = createDynamoDbDeadLetterStore(options.client, {
    tableName: options.tableName,
    consumerName: WORKER_CONSUMER_NAME,
    clock,
  });
  const heartbeat = createHeartbeat(options.client, {
    tableName: options.tableName,
    workerId,
    version: CLIENT_VERSION,
    schemaVersion: SCHEMA_VERSION,
    workloads: options.workloads,
    host: hostName(),
    clock,
  });
  const leaseDurationMs = options.tuning?.leaseDurationMs ?? 10_000;
  let lastCycle = clock.now();
  let cycles = 0;
  let draining = false;

  let server: HealthServer | undefined;
  if (options.port !== null) {
    server = startHealthServer({
      port: options.port ?? 8080,
      hostname: options.hostname ?? "0.0.0.0",
      livez: () => {
        const idle = clock.now() - lastCycle;
        return idle > 3 * leaseDurationMs
          ? { ok: false, reason: `no coordinator cycle for ${idle} ms` }
          : { ok: true };
      },
      readyz: () => {
        if (draining) return { ok: false, reason: "draining" };
        if (cycles === 0) return { ok: false, reason: "starting" };
        if (metrics.stalledShards > 0) {
          return {
            ok: false,
            reason: `${metrics.stalledShards} shard(s) stopped on data loss`,
          };
        }
        return { ok: true };
      },
      metrics: () =>
        renderPrometheus({
          metrics,
          workerId,
          version: CLIENT_VERSION,
          workloads: Object.fromEntries(
            workloads.map((w) => [w.name, w.counters()]),
          ),
        }),
      onListen: ({ port }) => options.onListen?.(port),
    });
  }

  const beat = async (): Promise<void> => {
    try {
      await heartbeat.beat({ leasesHeld: metrics.leasesHeld, draining });
    } catch (error) {
      log.warn("Heartbeat write failed", { error });
    }
  };
  await beat();
  log.info("Worker started", {
    workerId,
    table: options.tableName,
    streamArn,
    workloads: options.workloads,
    version: CLIENT_VERSION,
    legacyNamespaceId: legacyNamespaceId ?? null,
    port: server?.port ?? null,
  });
  const heartbeatStop = new AbortController();
  const heartbeatLoop = (async () => {
    const every = options.heartbeatIntervalMs ?? 10_000;
    for (;;) {
      try {
        await clock.sleep(every, heartbeatStop.signal);
      } catch {
        return;
      }
      await beat();
    }
  })();
  const onAbort = (): void => {
    draining = true;
    log.info("Shutdown requested: draining", { workerId });
    void beat();
  };
  options.signal.addEventListener("abort", onAbort, { once: true });

  try {
    await runStreamWorker({
      ...options.tuning,
      // Up to a second of records per transaction: fewer, larger commits; lag stays ~1 s.
      batchWindowMs: options.tuning?.batchWindowMs ?? 1_000,
      // A late count beats a dead letter: by default only records the stream is about to trim are given up.
      maxRecordAgeMs: options.tuning?.maxRecordAgeMs ?? 86_400_000,
      source: createAwsStreamSource(options.streamsClient, streamArn),
      store: createDynamoDbCoordinationStore(options.client, {
        tableName: options.tableName,
        consumerName: WORKER_CONSUMER_NAME,
        streamArn,
        clock,
      }),
      handler,
      filters: [filter],
      deadLetterSink: deadLetters,
      workerId,
      signal: options.signal,
      clock,
      metrics,
      onMetrics: () => {
        lastCycle = clock.now();
        cycles++;
      },
      onEvent: (event) => logStreamEvent(log, event),
    });
  } finally {
    options.signal.removeEventListener("abort", onAbort);
    heartbeatStop.abort();
    await heartbeatLoop;
    await heartbeat.remove().catch((error) =>
      log.warn("Heartbeat removal failed", { error })
    );
    await server?.shutdown();
    log.info("Worker stopped", {
      workerId,
      leasesReleased: metrics.leasesReleased,
      commits: metrics.commits,
      deadLetters: metrics.deadLetters,
    });
  }
}

/**
 * `worker run|status|dead-letters`: the stream worker process (usage
 * aggregation, audit archiving) and its operations.
 *
 * @module
 */
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { S3Client } from "@aws-sdk/client-s3";
import { Command, InvalidArgumentError, Option } from "commander";
import { systemClock } from "../core/clock.ts";
import { DEFAULT_NAMESPACE } from "../core/keys.ts";
import { getActiveNamespaceRecord } from "../core/namespace_registry.ts";
import { parseSnapshotWindows, type SnapshotWindow } from "../core/usage.ts";
import {
  type ArchiveSink,
  createDirectoryArchiveSink,
  createS3ArchiveSink,
} from "../workers/archiver.ts";
import { createDynamoDbDeadLetterStore } from "../workers/dead_letters_dynamodb.ts";
import {
  isAlive,
  readHeartbeats,
  WORKER_CONSUMER_NAME,
} from "../workers/heartbeat.ts";
import { createJsonLogger } from "../workers/observability.ts";
import {
  buildWorkloads,
  runWorkerProcess,
  WorkerStoppedError,
  WORKLOAD_NAMES,
  type WorkloadName,
} from "../workers/runtime.ts";
import { combineWorkloads } from "../workers/workload.ts";
import {
  action,
  awsClientConfig,
  type CliContext,
  CliUsageError,
  dynamoClient,
  emit,
  EXIT,
  type GlobalConfig,
  intInRange,
  renderTable,
  requireYes,
  resolveGlobals,
} from "./_context.ts";
import { startProgress } from "./_progress.ts";

function workloadList(value: string): WorkloadName[] {
  const out: WorkloadName[] = [];
  for (const raw of value.split(",")) {
    const w = raw.trim();
    if (w === "") continue;
    if (!(WORKLOAD_NAMES as readonly string[]).includes(w)) {
      throw new InvalidArgumentError(
        `Invalid workload "${w}": expected ${WORKLOAD_NAMES.join(", ")}`,
      );
    }
    if (!out.includes(w as WorkloadName)) out.push(w as WorkloadName);
  }
  if (out.length === 0) {
    throw new InvalidArgumentError("Expected at least one workload");
  }
  return out;
}

function windowList(value: string): SnapshotWindow[] {
  try {
    return parseSnapshotWindows(value);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

/** An S3 client in the CLI's region (never the DynamoDB `--endpoint-url`). */
function s3Client(ctx: CliContext, g: GlobalConfig): S3Client {
  const region = awsClientConfig(g, ctx.env).region;
  const client = new S3Client({
    maxAttempts: 3,
    ...(typeof region === "string" ? { region } : {}),
  });
  ctx.clients.push(client);
  return client;
}

/**
 * Environment variables `worker run` takes as the defaults of its flags
 * (the ECS task definition of the stack sets them); a flag given on the
 * command line wins.
 */
export const WORKER_RUN_ENV = {
  "ZAEL_WORKLOADS": "workloads",
  "ZAEL_SNAPSHOT_WINDOWS": "windows",
  "ZAEL_SNAPSHOT_RETENTION_DAYS": "snapshotRetentionDays",
  "ZAEL_ARCHIVE_BUCKET": "archiveBucket",
  "ZAEL_ARCHIVE_PREFIX": "archivePrefix",
} as const;

/** Applies {@linkcode WORKER_RUN_ENV} to options left at their defaults. */
function applyEnvDefaults(ctx: CliContext, cmd: Command): void {
  for (const [name, key] of Object.entries(WORKER_RUN_ENV)) {
    const raw = ctx.env[name];
    if (raw === undefined || raw === "") continue;
    const source = cmd.getOptionValueSource(key);
    if (source !== undefined && source !== "default") continue;
    const option = cmd.options.find((o) => o.attributeName() === key);
    try {
      const parse = option?.parseArg;
      cmd.setOptionValueWithSource(
        key,
        parse ? parse(raw, undefined) : raw,
        "env",
      );
    } catch (e) {
      throw new CliUsageError(
        `Invalid ${name}="${raw}": ${
          e instanceof Error ? e.message : String(e)
        }`,
      );
    }
  }
}

interface RunFlags {
  workloads: WorkloadName[];
  port: number;
  host: string;
  workerId?: string;
  windows: SnapshotWindow[];
  snapshotRetentionDays: number;
  refill: boolean;
  archiveBucket?: string;
  archivePrefix: string;
  archiveDir?: string;
  ttlOnly?: boolean;
  shutdownGraceSeconds: number;
  maxRecordAgeSeconds: number;
  logLevel: "debug" | "info" | "warn" | "error";
}

/** The `worker` command group. */
export function makeWorkerCommand(ctx: CliContext): Command {
  const worker = new Command("worker").description(
    "Run the stream worker (usage snapshots, audit archive) and manage its dead letters",
  );

  worker.command("run")
    .description(
      "Read the table's DynamoDB Stream and run the workloads until SIGTERM/SIGINT (then drain, checkpoint, release leases)",
    )
    .option(
      "--workloads <list>",
      `comma-separated: ${WORKLOAD_NAMES.join(", ")}`,
      workloadList,
      ["aggregator"] as WorkloadName[],
    )
    .option(
      "--port <port>",
      "port of /livez, /readyz and /metrics (0 picks a free one)",
      intInRange(0, 65535),
      8080,
    )
    .option("--host <address>", "address to bind the health server", "0.0.0.0")
    .option("--worker-id <id>", "worker id (default: host-pid-random)")
    .option(
      "--windows <list>",
      "snapshot windows: hourly, daily, monthly",
      windowList,
      ["hourly", "daily"] as SnapshotWindow[],
    )
    .option(
      "--snapshot-retention-days <days>",
      "days a usage snapshot is kept (TTL from its window start)",
      intInRange(1, 36_500),
      90,
    )
    .option("--no-refill", "do not refill buckets proactively")
    .option("--archive-bucket <bucket>", "S3 bucket of the audit archive")
    .option("--archive-prefix <prefix>", "key prefix in the bucket", "")
    .option(
      "--archive-dir <dir>",
      "write the audit archive to a local directory instead of S3",
    )
    .option(
      "--ttl-only",
      "archive only TTL expiries (default: every audit deletion)",
    )
    .option(
      "--max-record-age-seconds <s>",
      "records older than this when read go to the dead letters (default: the stream's 24 h retention, so a backlog after an outage is still counted)",
      intInRange(60, 86_400),
      86_400,
    )
    .option(
      "--shutdown-grace-seconds <s>",
      "the whole drain on shutdown (finish batches, checkpoint, release leases, remove the heartbeat); the process exits within it whatever DynamoDB does",
      intInRange(0, 600),
      20,
    )
    .addOption(
      new Option("--log-level <level>", "minimum log level")
        .choices(["debug", "info", "warn", "error"])
        .default("info"),
    )
    .addHelpText(
      "after",
      `
Each workload keeps its own leases and checkpoints in the table (reserved
namespace), so workers with different --workloads never take records from
each other, and a workload turned on later starts from the oldest record
the stream holds (24 h). Run several workers for failover: when one stops,
the others take its shards over within ~15 s. Snapshot counts are committed
in one transaction with the checkpoint, so a crash never counts twice.
Records that keep failing or cannot be used go to dead letters: see
'zae-limiter worker dead-letters --help'.

DynamoDB outages never end the worker: calls are retried with backoff,
/readyz answers 503 while DynamoDB or its stream does not answer, and the
outage is logged at error level when it starts and when it ends.

Logs are JSON lines on stderr. Exit code 0 after a clean drain, 1 when a
drain step did not finish within the grace (logged: "Shutdown incomplete")
or on a failure no retry fixes (logged with the reason: no table, no
stream, access denied), 130 on a second signal.

Environment (defaults of the flags; the stack's ECS task sets them):
  ZAEL_STACK (--name), ZAEL_WORKLOADS, ZAEL_SNAPSHOT_WINDOWS,
  ZAEL_SNAPSHOT_RETENTION_DAYS, ZAEL_ARCHIVE_BUCKET, ZAEL_ARCHIVE_PREFIX

Example:
  zae-limiter worker run --name prod --workloads aggregator,archiver \\
    --archive-bucket my-audit-archive`,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      applyEnvDefaults(ctx, cmd);
      const f = cmd.opts<RunFlags>();
      let sink: ArchiveSink | undefined;
      if (f.workloads.includes("archiver")) {
        if (f.archiveBucket && f.archiveDir) {
          throw new CliUsageError(
            "Give only one of --archive-bucket and --archive-dir",
          );
        }
        if (f.archiveBucket) {
          const s3 = s3Client(ctx, g);
          sink = createS3ArchiveSink(s3, {
            bucket: f.archiveBucket,
            prefix: f.archivePrefix,
          });
        } else if (f.archiveDir) {
          sink = createDirectoryArchiveSink(f.archiveDir);
        } else {
          throw new CliUsageError(
            "The archiver needs a destination: --archive-bucket <bucket> or --archive-dir <dir>",
          );
        }
      }
      const client = dynamoClient(ctx, g);
      const streams = new DynamoDBStreamsClient(awsClientConfig(g, ctx.env));
      ctx.clients.push(streams);
      const signal = ctx.io.interruptSignal?.() ??
        new AbortController().signal;
      const logger = createJsonLogger({
        logger: "zae-worker",
        level: f.logLevel,
        write: (line) => ctx.io.err(line),
      });
      let report;
      try {
        report = await runWorkerProcess({
          client,
          streamsClient: streams,
          tableName: g.name,
          workloads: f.workloads,
          signal,
          ...(sink ? { archiveSink: sink } : {}),
          ...(f.ttlOnly ? { archiveTtlOnly: true } : {}),
          windows: f.windows,
          snapshotRetentionDays: f.snapshotRetentionDays,
          refill: f.refill,
          ...(f.workerId ? { workerId: f.workerId } : {}),
          port: f.port,
          hostname: f.host,
          logger,
          tuning: {
            shutdownGraceMs: f.shutdownGraceSeconds * 1000,
            maxRecordAgeMs: f.maxRecordAgeSeconds * 1000,
          },
          onListen: (port) => logger.info("Health server listening", { port }),
        });
      } catch (error) {
        // Already logged as JSON with its reason; anything else is logged here, never as plain text.
        if (!(error instanceof WorkerStoppedError)) {
          logger.error(
            `Worker stopped: ${
              error instanceof Error ? error.message : String(error)
            }`,
            {
              reason: error instanceof Error ? error.message : String(error),
              error,
            },
          );
        }
        return EXIT.FAILURE;
      }
      return report.complete ? EXIT.OK : EXIT.FAILURE;
    }));

  worker.command("status")
    .description(
      "List running workers (heartbeats) and their versions; a worker that died without a goodbye shows as stale for 15 minutes",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const now = ctx.now();
      const all = await readHeartbeats(dynamoClient(ctx, g), g.name, {
        nowMs: now,
      });
      const rows = all.map((w) => ({
        ...w,
        alive: isAlive(w, now),
      }));
      emit(ctx, g, rows, () => {
        if (rows.length === 0) {
          ctx.io.out(
            `No worker heartbeat on table '${g.name}' (start one with 'zae-limiter worker run --name ${g.name}')`,
          );
          return;
        }
        ctx.io.out(renderTable(
          ["Worker", "Version", "Workloads", "Leases", "Last beat", "State"],
          rows.map((w) => [
            w.workerId,
            w.version,
            w.workloads.join(","),
            String(w.leasesHeld),
            w.updatedAt,
            !w.alive ? "stale" : w.draining ? "draining" : "alive",
          ]),
        ));
      });
      return EXIT.OK;
    }));

  const dlq = worker.command("dead-letters").description(
    "Records the worker gave up on (full record kept 14 days): list, redrive, purge",
  );
  const daysOption = (): Option =>
    new Option("--days <n>", "look back this many days")
      .argParser(intInRange(0, 60))
      .default(14);

  dlq.command("list")
    .description("List dead letters: record, reason and last error")
    .addOption(daysOption())
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const { days } = cmd.opts<{ days: number }>();
      const store = createDynamoDbDeadLetterStore(dynamoClient(ctx, g), {
        tableName: g.name,
        consumerName: WORKER_CONSUMER_NAME,
      });
      const letters = await store.list({ days });
      emit(ctx, g, letters, () => {
        if (letters.length === 0) {
          ctx.io.out("No dead letters");
          return;
        }
        ctx.io.out(renderTable(
          ["Workload", "Shard", "Sequence", "Event", "Key", "Reason", "Error"],
          letters.map((l) => [
            l.workload ?? "-",
            l.shardId,
            l.record.sequenceNumber,
            l.record.eventName,
            `${l.record.keys["PK"]?.S ?? "?"} ${l.record.keys["SK"]?.S ?? ""}`
              .trim(),
            l.reason,
            l.error.slice(0, 120),
          ]),
        ));
      });
      return EXIT.OK;
    }));

  dlq.command("redrive")
    .description(
      "Run the workloads again on each dead letter; its effects and its deletion commit together",
    )
    .addOption(daysOption())
    .option(
      "--workloads <list>",
      `comma-separated: ${WORKLOAD_NAMES.join(", ")}`,
      workloadList,
      ["aggregator"] as WorkloadName[],
    )
    .option("--archive-bucket <bucket>", "S3 bucket of the audit archive")
    .option("--archive-prefix <prefix>", "key prefix in the bucket", "")
    .option("--archive-dir <dir>", "local archive directory")
    .option("--yes", "confirm")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const f = cmd.opts<
        {
          days: number;
          workloads: WorkloadName[];
          archiveBucket?: string;
          archivePrefix: string;
          archiveDir?: string;
          yes?: boolean;
        }
      >();
      requireYes(f.yes, "redrive dead letters");
      const client = dynamoClient(ctx, g);
      let sink: ArchiveSink | undefined;
      if (f.archiveBucket) {
        const s3 = s3Client(ctx, g);
        sink = createS3ArchiveSink(s3, {
          bucket: f.archiveBucket,
          prefix: f.archivePrefix,
        });
      } else if (f.archiveDir) sink = createDirectoryArchiveSink(f.archiveDir);
      if (f.workloads.includes("archiver") && sink === undefined) {
        throw new CliUsageError(
          "Redriving archiver letters needs a destination: --archive-bucket <bucket> or --archive-dir <dir>",
        );
      }
      // Pre-0.10 unprefixed buckets count in the default namespace, as in 'worker run'.
      const legacy = await getActiveNamespaceRecord(
        { client, table: g.name, clock: systemClock },
        DEFAULT_NAMESPACE,
      );
      const built = buildWorkloads({
        client,
        tableName: g.name,
        workloads: f.workloads,
        ...(sink ? { archiveSink: sink } : {}),
        refill: false,
      }, legacy?.["namespace_id"]?.S);
      const { handler, filter } = combineWorkloads(built);
      const byWorkload = Object.fromEntries(built.map((w) => {
        const one = combineWorkloads([w]);
        return [w.name, { handler: one.handler, accepts: one.filter }];
      }));
      const store = createDynamoDbDeadLetterStore(client, {
        tableName: g.name,
        consumerName: WORKER_CONSUMER_NAME,
      });
      const progress = startProgress(ctx, {
        format: "Redriving dead letters {bar} {value}/{total}",
      }, g.output === "json");
      let r: Awaited<ReturnType<typeof store.redrive>>;
      try {
        r = await store.redrive(handler, {
          days: f.days,
          accepts: filter,
          workloads: byWorkload,
          onProgress: (done, total) => progress.update(done, {}, total),
        });
      } finally {
        progress.stop();
      }
      emit(ctx, g, r, () => {
        ctx.io.out(
          `Redriven: ${r.redriven}, still failing: ${r.failed}, kept for other workloads: ${r.skipped}`,
        );
        for (const e of r.errors) ctx.io.out(`  ${e.sk}: ${e.error}`);
      });
      return r.failed > 0 ? EXIT.FAILURE : EXIT.OK;
    }));

  dlq.command("purge")
    .description("Delete dead letters without processing them")
    .addOption(daysOption())
    .option("--yes", "confirm")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const f = cmd.opts<{ days: number; yes?: boolean }>();
      requireYes(f.yes, "purge dead letters");
      const store = createDynamoDbDeadLetterStore(dynamoClient(ctx, g), {
        tableName: g.name,
        consumerName: WORKER_CONSUMER_NAME,
      });
      const progress = startProgress(ctx, {
        format: "Purging dead letters {bar} {value}/{total}",
      }, g.output === "json");
      let n: number;
      try {
        n = await store.purge({
          days: f.days,
          onProgress: (done, total) => progress.update(done, {}, total),
        });
      } finally {
        progress.stop();
      }
      emit(
        ctx,
        g,
        { purged: n },
        () => ctx.io.out(`Purged ${n} dead letter(s)`),
      );
      return EXIT.OK;
    }));
  return worker;
}

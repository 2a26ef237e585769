// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * Part of `deno task bench`: the stream worker (aggregator workload) on
 * DynamoDB Local. Two figures, each on a fresh table:
 *
 * 1. **Catch-up throughput.** `--records` acquires (default 2000, 16
 *    concurrent over 8 entities, no adjustments: one bucket write, so one
 *    stream record, per acquire) are written first; then ONE worker starts
 *    (batchSize 1000, pollIntervalMs 50, idlePollMaxMs 200, batchWindowMs
 *    200) and the clock runs until the hourly snapshots hold exactly what
 *    was consumed. Prints bucket records per second.
 * 2. **End-to-end lag.** A worker with the production defaults (except no
 *    health port and a quiet logger) runs from the start; then a paced load
 *    of `--rate` acquires/s (default 200) for `--seconds` (default 15),
 *    round-robin over 20 entities. For every 50th acquire, the lag is the
 *    time from the acquire's completion until that entity's hourly
 *    `total_events` reaches its count of acquires so far (polled every
 *    50 ms). Prints p50, p95 and max lag and the achieved rate.
 *
 * `ZAEL_ENDPOINT_URL` points it at a running DynamoDB instead of starting
 * DynamoDB Local.
 */
import { parseArgs } from "node:util";
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
import { Limit, RateLimiter, Repository } from "../mod.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerMetrics,
} from "../workers/metrics.ts";
import type { LogFields, Logger } from "../workers/observability.ts";
import {
  runWorkerProcess,
  tableStreamArn,
  type WorkerProcessOptions,
} from "../workers/runtime.ts";
import {
  listAllShards,
  MAX_GET_RECORDS_LIMIT,
} from "../workers/stream_source.ts";
import { createAwsStreamSource } from "../workers/stream_source_aws.ts";
import { startDynamoDbLocal } from "./dynamodb_local.ts";

const RESOURCE = "gpt-4";
const CATCH_UP_ENTITIES = 8;
const CATCH_UP_CONCURRENCY = 16;
const CATCH_UP_TUNING = {
  batchSize: 1000,
  pollIntervalMs: 50,
  idlePollMaxMs: 200,
  batchWindowMs: 200,
} as const;
const LAG_ENTITIES = 20;
const LAG_LANES = 16;
const LAG_SAMPLE_EVERY = 50;
/** Snapshot polling interval of both figures. */
const POLL_MS = 50;
/** The runtime's default batch window (`workers/runtime.ts`), reported with the lag. */
const DEFAULT_BATCH_WINDOW_MS = 1000;
const SETTLE_TIMEOUT_MS = 120_000;

interface BenchOptions {
  readonly records: number;
  readonly seconds: number;
  readonly rate: number;
}

/** Parses `--records N`, `--seconds S`, `--rate R`; a string is a usage error. */
function parseOptions(argv: readonly string[]): BenchOptions | string {
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        records: { type: "string" },
        seconds: { type: "string" },
        rate: { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  const num = (name: string, fallback: number): number | string => {
    const raw = values[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    return Number.isFinite(n) && n > 0
      ? n
      : `Cannot use --${name}: current value is "${raw}", expected a positive number`;
  };
  const records = num("records", 2000);
  const seconds = num("seconds", 15);
  const rate = num("rate", 200);
  if (typeof records === "string") return records;
  if (typeof seconds === "string") return seconds;
  if (typeof rate === "string") return rate;
  return { records: Math.round(records), seconds, rate };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[
    Math.min(sorted.length - 1, Math.floor(sorted.length * p))
  ] as number;
}

/**
 * Runs `lanes` copies of `lane` to completion. The first failure makes
 * `stopped()` true for the others (they stop at their next step), and is
 * rethrown once all have settled: no lane is left running.
 */
async function runLanes(
  lanes: number,
  lane: (stopped: () => boolean) => Promise<void>,
): Promise<void> {
  let failed = false;
  const results = await Promise.allSettled(
    Array.from(
      { length: lanes },
      () =>
        lane(() => failed).catch((e: unknown) => {
          failed = true;
          throw e;
        }),
    ),
  );
  for (const r of results) if (r.status === "rejected") throw r.reason;
}

function add(m: Map<string, number>, k: string, v: number): void {
  m.set(k, (m.get(k) ?? 0) + v);
}

// ------------------------------------------------------------------ tables

interface Env {
  readonly client: DynamoDBClient;
  readonly endpoint: string;
  /** Repositories opened; their tables are deleted at the end. */
  readonly repos: Repository[];
}

async function freshTable(env: Env, label: string): Promise<Repository> {
  const repo = await Repository.open({
    client: env.client,
    stack: `zae-bench-workers-${label}-${Date.now().toString(36)}`,
    provision: true,
  });
  env.repos.push(repo);
  await repo.setSystemDefaults([
    Limit.perMinute("rpm", 1_000_000),
    Limit.perMinute("tpm", 100_000_000),
  ]);
  return repo;
}

/** Hourly snapshot totals per `entity|limit` and `entity|#events`, summed over windows. */
async function snapshotTotals(
  repo: Repository,
  entities: readonly string[],
): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  await Promise.all(entities.map(async (entityId) => {
    const { snapshots } = await repo.getUsageSnapshots({
      entityId,
      windowType: "hourly",
      consistent: true,
    });
    for (const s of snapshots) {
      for (const [limit, v] of Object.entries(s.counters)) {
        add(out, `${s.entityId}|${limit}`, v);
      }
      add(out, `${s.entityId}|#events`, s.totalEvents);
    }
  }));
  return out;
}

function sameTotals(
  a: ReadonlyMap<string, number>,
  b: ReadonlyMap<string, number>,
): boolean {
  const norm = (m: ReadonlyMap<string, number>): string =>
    JSON.stringify(
      [...m].filter(([, v]) => v !== 0).sort(([x], [y]) => x.localeCompare(y)),
    );
  return norm(a) === norm(b);
}

// ------------------------------------------------------------------ worker

interface RunningWorker {
  readonly metrics: StreamWorkerMetrics;
  /** `performance.now()` when the first shard lease was taken. */
  leaseTakenAt: number | undefined;
  /** Warnings and errors the worker logged. */
  readonly problems: string[];
  /** Throws the worker's failure, if it failed. */
  check(): void;
  stop(): Promise<void>;
}

/** A logger that drops debug and info lines, keeps warnings and errors, and notes the first lease. */
function quietLogger(
  worker: { leaseTakenAt: number | undefined },
  problems: string[],
): Logger {
  const keep = (level: string) => (message: string, fields?: LogFields) => {
    problems.push(`${level}: ${message} ${JSON.stringify(fields ?? {})}`);
  };
  return {
    debug: () => {},
    info: (_message, fields) => {
      if (fields?.["event"] === "lease_taken") {
        worker.leaseTakenAt ??= performance.now();
      }
    },
    warn: keep("warn"),
    error: keep("error"),
  };
}

function streamsClient(env: Env): DynamoDBStreamsClient {
  return new DynamoDBStreamsClient({
    endpoint: env.endpoint,
    region: "us-east-1",
    credentials: { accessKeyId: "local", secretAccessKey: "local" },
  });
}

function startWorker(
  env: Env,
  repo: Repository,
  tuning: WorkerProcessOptions["tuning"] | undefined,
): RunningWorker {
  const streams = streamsClient(env);
  const abort = new AbortController();
  const metrics = createStreamWorkerMetrics();
  const problems: string[] = [];
  let failure: unknown;
  let failed = false;
  const worker: RunningWorker = {
    metrics,
    leaseTakenAt: undefined,
    problems,
    check() {
      if (failed) throw failure;
    },
    async stop() {
      abort.abort();
      await done;
      worker.check();
    },
  };
  const done = runWorkerProcess({
    client: env.client,
    streamsClient: streams,
    tableName: repo.tableName,
    workloads: ["aggregator"],
    signal: abort.signal,
    port: null,
    logger: quietLogger(worker, problems),
    metrics,
    ...(tuning ? { tuning } : {}),
  }).catch((e: unknown) => {
    failed = true;
    failure = e;
  }).finally(() => streams.destroy());
  return worker;
}

// ------------------------------------------------------------------ figure 1

interface CatchUpResult {
  readonly records: number;
  readonly preloadSeconds: number;
  readonly leaseMs: number;
  readonly seconds: number;
  readonly metrics: StreamWorkerMetrics;
  /** The same stream read bare (GetRecords only, no handler or commits). */
  readonly raw: { readonly records: number; readonly seconds: number };
}

/**
 * Reads every shard of the table's stream from the trim horizon with the
 * worker's own stream source, 1000 records per call, and nothing else: the
 * ceiling DynamoDB (Local) sets for one reader.
 */
async function rawStreamRead(
  env: Env,
  repo: Repository,
): Promise<{ records: number; seconds: number }> {
  const streams = streamsClient(env);
  try {
    const source = createAwsStreamSource(
      streams,
      await tableStreamArn(env.client, repo.tableName),
    );
    const t0 = performance.now();
    let records = 0;
    for (const shard of await listAllShards(source)) {
      let iterator: string | undefined = await source.getShardIterator(
        shard.shardId,
        { type: "TRIM_HORIZON" },
      );
      while (iterator !== undefined) {
        const page = await source.getRecords(iterator, MAX_GET_RECORDS_LIMIT);
        records += page.records.length;
        // An open shard answers empty pages at its end.
        iterator = page.records.length === 0
          ? undefined
          : page.nextShardIterator;
      }
    }
    return { records, seconds: (performance.now() - t0) / 1000 };
  } finally {
    streams.destroy();
  }
}

async function catchUp(env: Env, records: number): Promise<CatchUpResult> {
  const repo = await freshTable(env, "catchup");
  // Strict mode: one acquire is one bucket write (one stream record, one
  // snapshot event), which the figures count; coalescing would merge them.
  const limiter = new RateLimiter(repo, { coalesceWrites: false });
  const entities = Array.from(
    { length: CATCH_UP_ENTITIES },
    (_, i) => `key-${i}`,
  );
  const want = new Map<string, number>();
  let next = 0;
  const p0 = performance.now();
  await runLanes(CATCH_UP_CONCURRENCY, async (stopped) => {
    for (let i = next++; i < records && !stopped(); i = next++) {
      const entity = entities[i % entities.length] as string;
      const tpm = 100 + (i % 7) * 10;
      // No adjust(): the commit writes nothing, so one acquire is one bucket write.
      await limiter.acquire({
        entityId: entity,
        resource: RESOURCE,
        consume: { rpm: 1, tpm },
      }, () => {});
      add(want, `${entity}|rpm`, 1);
      add(want, `${entity}|tpm`, tpm);
      add(want, `${entity}|#events`, 1);
    }
  });
  const preloadSeconds = (performance.now() - p0) / 1000;

  const t0 = performance.now();
  const worker = startWorker(env, repo, CATCH_UP_TUNING);
  let seconds: number;
  try {
    for (;;) {
      worker.check();
      // Query snapshots only once every bucket record was handed to the
      // handler, so the polling does not compete with the worker for DynamoDB.
      if (
        worker.metrics.recordsDelivered >= records &&
        sameTotals(await snapshotTotals(repo, entities), want)
      ) {
        seconds = (performance.now() - t0) / 1000;
        break;
      }
      if (performance.now() - t0 > SETTLE_TIMEOUT_MS) {
        throw new Error(
          `Cannot finish the catch-up figure: snapshots did not reach the consumed totals within ${SETTLE_TIMEOUT_MS} ms`,
        );
      }
      await sleep(POLL_MS);
    }
  } finally {
    await worker.stop();
  }
  reportProblems("catch-up", worker.problems);
  return {
    records,
    preloadSeconds,
    leaseMs: (worker.leaseTakenAt ?? NaN) - t0,
    seconds,
    metrics: worker.metrics,
    raw: await rawStreamRead(env, repo),
  };
}

// ------------------------------------------------------------------ figure 2

interface LagResult {
  readonly acquires: number;
  readonly achievedRate: number;
  /** Lags in ms, in sample order. */
  readonly lags: readonly number[];
  readonly metrics: StreamWorkerMetrics;
}

interface Sample {
  readonly entity: string;
  /** Acquires of this entity up to and including the sampled one. */
  readonly target: number;
  readonly completedAt: number;
  readonly index: number;
}

/** Sum of `total_events` over the entity's hourly snapshots. */
async function hourlyEvents(
  repo: Repository,
  entity: string,
): Promise<number> {
  const totals = await snapshotTotals(repo, [entity]);
  return totals.get(`${entity}|#events`) ?? 0;
}

async function endToEndLag(env: Env, opts: BenchOptions): Promise<LagResult> {
  const repo = await freshTable(env, "lag");
  // Strict mode: one acquire is one bucket write (one stream record, one
  // snapshot event), which the figures count; coalescing would merge them.
  const limiter = new RateLimiter(repo, { coalesceWrites: false });
  const entities = Array.from({ length: LAG_ENTITIES }, (_, i) => `key-${i}`);
  const count = Math.max(1, Math.round(opts.rate * opts.seconds));
  const worker = startWorker(env, repo, undefined);
  try {
    // Running from the start: wait until it holds the shard, then load.
    const w0 = performance.now();
    while (worker.leaseTakenAt === undefined) {
      worker.check();
      if (performance.now() - w0 > SETTLE_TIMEOUT_MS) {
        throw new Error(
          "Cannot start the lag figure: the worker took no shard lease",
        );
      }
      await sleep(20);
    }

    const pending: Sample[] = [];
    const lags: { index: number; ms: number }[] = [];
    let loadDone = false;
    let pollFailure: unknown;
    const poller = (async () => {
      let drainStart: number | undefined;
      while (!loadDone || pending.length > 0) {
        worker.check();
        if (loadDone) {
          drainStart ??= performance.now();
          if (performance.now() - drainStart > SETTLE_TIMEOUT_MS) {
            throw new Error(
              `Cannot finish the lag figure: ${pending.length} sampled acquires never reached the snapshots`,
            );
          }
        }
        const polled = [...new Set(pending.map((s) => s.entity))];
        await Promise.all(polled.map(async (entity) => {
          const events = await hourlyEvents(repo, entity);
          const seenAt = performance.now();
          for (let k = pending.length - 1; k >= 0; k--) {
            const s = pending[k] as Sample;
            if (s.entity === entity && events >= s.target) {
              lags.push({ index: s.index, ms: seenAt - s.completedAt });
              pending.splice(k, 1);
            }
          }
        }));
        await sleep(POLL_MS);
      }
    })().catch((e: unknown) => {
      pollFailure = e;
    });

    let next = 0;
    const started = performance.now();
    let lastDone = started;
    try {
      await runLanes(LAG_LANES, async (stopped) => {
        for (let i = next++; i < count; i = next++) {
          if (stopped() || pollFailure !== undefined) return;
          const due = started + (i * 1000) / opts.rate;
          const wait = due - performance.now();
          if (wait > 0) await sleep(wait);
          const entity = entities[i % entities.length] as string;
          await limiter.acquire({
            entityId: entity,
            resource: RESOURCE,
            consume: { rpm: 1, tpm: 100 },
          }, () => {});
          const completedAt = performance.now();
          lastDone = Math.max(lastDone, completedAt);
          if (i % LAG_SAMPLE_EVERY === 0) {
            pending.push({
              entity,
              target: Math.floor(i / entities.length) + 1,
              completedAt,
              index: i,
            });
          }
        }
      });
    } catch (e) {
      pending.length = 0; // nothing left to wait for
      throw e;
    } finally {
      loadDone = true;
      await poller;
    }
    if (pollFailure !== undefined) throw pollFailure;
    const loadSeconds = (lastDone - started) / 1000;
    return {
      acquires: count,
      achievedRate: count / loadSeconds,
      lags: lags.sort((a, b) => a.index - b.index).map((l) => l.ms),
      metrics: worker.metrics,
    };
  } finally {
    await worker.stop();
    reportProblems("lag", worker.problems);
  }
}

function reportProblems(figure: string, problems: readonly string[]): void {
  if (problems.length === 0) return;
  console.log(
    `\n${figure}: the worker logged ${problems.length} warning(s) or error(s):`,
  );
  for (const p of problems.slice(0, 10)) console.log(`  ${p}`);
}

// ------------------------------------------------------------------ main

function row(label: string, value: string): void {
  console.log(`${label.padEnd(44)} ${value}`);
}

async function main(argv: readonly string[]): Promise<number> {
  const opts = parseOptions(argv);
  if (typeof opts === "string") {
    console.error(
      `${opts}\nusage: bench_workers.ts [--records N] [--seconds S] [--rate R]`,
    );
    return 2;
  }
  const external = Deno.env.get("ZAEL_ENDPOINT_URL");
  const local = external ? null : await startDynamoDbLocal();
  const endpoint = external ?? local?.endpoint ?? "";
  const env: Env = {
    client: new DynamoDBClient({
      endpoint,
      region: "us-east-1",
      credentials: { accessKeyId: "local", secretAccessKey: "local" },
    }),
    endpoint,
    repos: [],
  };
  try {
    console.log(
      `\nzae-limiter stream worker bench on ${
        external ? external : "DynamoDB Local"
      }\n`,
    );
    const c = await catchUp(env, opts.records);
    const recordsPerSecond = c.records / c.seconds;
    console.log(
      `catch-up: 1 worker, ${c.records} bucket records over ${CATCH_UP_ENTITIES} entities, batchSize ${CATCH_UP_TUNING.batchSize}, batchWindowMs ${CATCH_UP_TUNING.batchWindowMs}, pollIntervalMs ${CATCH_UP_TUNING.pollIntervalMs}`,
    );
    row(
      `  preload (${CATCH_UP_CONCURRENCY} concurrent acquires)`,
      `${c.preloadSeconds.toFixed(2)} s (${
        (c.records / c.preloadSeconds).toFixed(0)
      } acquires/s)`,
    );
    row("  worker start -> first shard lease", `${c.leaseMs.toFixed(0)} ms`);
    row(
      "  worker start -> snapshots complete",
      `${c.seconds.toFixed(2)} s`,
    );
    row("  stream records/s", recordsPerSecond.toFixed(0));
    row(
      "  stream records/s after the first lease",
      (c.records / (c.seconds - c.leaseMs / 1000)).toFixed(0),
    );
    row(
      "  bare GetRecords read of the same stream",
      `${c.raw.records} records in ${c.raw.seconds.toFixed(2)} s (${
        (c.raw.records / c.raw.seconds).toFixed(0)
      } records/s)`,
    );
    row(
      "  records read / delivered",
      `${c.metrics.recordsRead} / ${c.metrics.recordsDelivered}`,
    );
    row(
      "  batches / commits / effects",
      `${c.metrics.batches} / ${c.metrics.commits} / ${c.metrics.effectsCommitted}`,
    );

    const l = await endToEndLag(env, opts);
    const sorted = [...l.lags].sort((a, b) => a - b);
    const p50 = percentile(sorted, 0.5);
    const p95 = percentile(sorted, 0.95);
    const max = sorted[sorted.length - 1] ?? NaN;
    console.log(
      `\ne2e lag: ${opts.rate} acquires/s for ${opts.seconds} s over ${LAG_ENTITIES} entities, default worker tuning (batchWindowMs ${DEFAULT_BATCH_WINDOW_MS})`,
    );
    row("  acquires", String(l.acquires));
    row(
      "  achieved rate",
      `${l.achievedRate.toFixed(1)} acquires/s${
        l.achievedRate < 0.95 * opts.rate
          ? ` (below the target ${opts.rate}: the acquires themselves were too slow)`
          : ""
      }`,
    );
    row(
      `  samples (every ${LAG_SAMPLE_EVERY}th, polled every ${POLL_MS} ms)`,
      String(l.lags.length),
    );
    row(
      "  lag p50 / p95 / max",
      `${p50.toFixed(0)} / ${p95.toFixed(0)} / ${max.toFixed(0)} ms`,
    );
    row("  lag of the first sample", `${(l.lags[0] ?? NaN).toFixed(0)} ms`);
    row(
      "  records read / delivered / filtered",
      `${l.metrics.recordsRead} / ${l.metrics.recordsDelivered} / ${l.metrics.recordsFiltered}`,
    );
    row(
      "  batches / commits / effects",
      `${l.metrics.batches} / ${l.metrics.commits} / ${l.metrics.effectsCommitted}`,
    );

    console.log(
      `\nstream records/s (1 worker, ${c.records} records): ${
        recordsPerSecond.toFixed(0)
      }`,
    );
    console.log(
      `e2e lag at ${opts.rate} acquires/s: p50 ${p50.toFixed(0)} ms, p95 ${
        p95.toFixed(0)
      } ms, max ${max.toFixed(0)} ms (achieved ${
        l.achievedRate.toFixed(1)
      } acquires/s, batchWindowMs ${DEFAULT_BATCH_WINDOW_MS})`,
    );
    return 0;
  } finally {
    for (const repo of env.repos) await repo.deleteTable().catch(() => {});
    env.client.destroy();
    await local?.stop();
  }
}

Deno.exitCode = await main(Deno.args);

/**
 * `runStreamWorker()`: a DynamoDB Streams consumer with leases,
 * parent-before-child ordering, balanced assignment across workers,
 * adaptive polling and transactional "effects + checkpoint" commits.
 *
 * One call is one worker. Run the same code in N processes (with different
 * `workerId`s) against the same {@linkcode CoordinationStore} and the shards
 * spread across them; when one stops, the others take its shards over.
 *
 * Loop of the coordinator, every `renewIntervalMs` (or sooner when a shard ends):
 * 1. full shard discovery every `discoveryIntervalMs` (paginated; parents
 *    before children; closed shards whose children already have leases are
 *    not re-created, so a lineage is never replayed);
 * 2. list leases and update observations (a lease whose counter did not
 *    change for `leaseDurationMs` of this worker's clock is expired: safe
 *    against clock skew);
 * 3. renew held leases (piggy-backing deferred checkpoints); a refused
 *    renewal (another worker took the lease) stops that shard at once, and
 *    a lease that could not be renewed for a lease duration (DynamoDB
 *    unreachable) is given up until it can be taken again;
 * 4. take free or expired leases up to the fair share, else steal one from
 *    the busiest worker when it holds at least two more than this one.
 *
 * Failures: every DynamoDB and DynamoDB Streams call has a deadline
 * (`callTimeoutMs`) and is classified ({@linkcode classifyFailure}): calls
 * that got no answer, a 5xx, a throttle or a conflict are retried with
 * backoff (commits and dead-letter writes until the lease is lost or the
 * shutdown deadline passes), so an outage never ends the worker; a failure
 * no retry can fix (access denied, missing table) ends it with that error.
 * Reachability and failed calls by operation go to a
 * {@linkcode DependencyHealth}.
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { fullJitter } from "../core/_backoff.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { maxSequence, SerialQueue, sleepUnlessAborted } from "./_util.ts";
import {
  type BatchEnvironment,
  type DeadLetterSink,
  primaryKeyLane,
  processBatch,
  type ProcessingConfig,
  type RecordFilter,
  type StreamHandler,
} from "./batch_processor.ts";
import {
  COORDINATION_PK_PREFIX,
  type CoordinationStore,
  type LeaseFence,
  type LeaseItem,
  type LeaseStart,
} from "./coordination_store.ts";
import { classifyFailure, isStreamWorkerError, toError } from "./errors.ts";
import {
  type BatchObservation,
  type CommitObservation,
  createStreamWorkerMetrics,
  type LeaseTakeReason,
  type StreamWorkerEvent,
  type StreamWorkerMetrics,
} from "./metrics.ts";
import {
  DependencyHealth,
  instrumentDeadLetterSink,
  instrumentSource,
  instrumentStore,
} from "./resilience.ts";
import {
  ITERATOR_LIFETIME_MS,
  listAllShards,
  MAX_GET_RECORDS_LIMIT,
  type ShardPosition,
  type StreamRecord,
  type StreamShard,
  type StreamSource,
} from "./stream_source.ts";

/** What to do when a shard position is older than the stream's retention. */
export type TrimmedDataPolicy = "stall" | "skip_to_trim_horizon";

/** Options of {@linkcode runStreamWorker}. */
export interface StreamWorkerOptions {
  /** The stream. */
  readonly source: StreamSource;
  /** Lease and checkpoint storage shared by all workers of this consumer. */
  readonly store: CoordinationStore;
  /** The record handler. */
  readonly handler: StreamHandler;
  /** Where records that exhausted their retries go. */
  readonly deadLetterSink: DeadLetterSink;
  /** Unique id of this worker. @default crypto.randomUUID() */
  readonly workerId?: string;
  /** Abort to shut down: stop reading, finish in-flight batches, release leases, resolve. */
  readonly signal?: AbortSignal;
  /** Clock. @default systemClock */
  readonly clock?: Clock;
  /** Random source for jitter. @default Math.random */
  readonly random?: () => number;
  /** Counters updated in place. @default a new object from createStreamWorkerMetrics() */
  readonly metrics?: StreamWorkerMetrics;
  /** Called once per coordinator cycle with the counters. */
  readonly onMetrics?: (metrics: StreamWorkerMetrics) => void;
  /** Called for every event (data loss, dead letters, lease changes, non-fatal errors). */
  readonly onEvent?: (event: StreamWorkerEvent) => void;
  /**
   * Called after each processed batch with its duration, size and
   * end-to-end lag, for histograms (see `createWorkerRegistry()`).
   */
  readonly onBatch?: (batch: BatchObservation) => void;
  /** Called after each successful commit with its latency. */
  readonly onCommit?: (commit: CommitObservation) => void;
  /** OR-ed record filters; records matching none are skipped. @default accept all */
  readonly filters?: readonly RecordFilter[];
  /** Partition-key prefix of the framework's own items, dropped first. @default "_/STREAM#" */
  readonly frameworkPrefix?: string;
  /** Start of a consumer's first run. Later shards always start at TRIM_HORIZON. @default "TRIM_HORIZON" */
  readonly initialPosition?: LeaseStart;
  /** Records per batch, 1-10000. @default 100 */
  readonly batchSize?: number;
  /** How long to gather records before a batch is processed. @default 0 */
  readonly batchWindowMs?: number;
  /** Handler attempts per record before dead-lettering. @default 3 */
  readonly maxAttempts?: number;
  /** Split a failing batch in halves to isolate bad records. @default true */
  readonly bisectOnError?: boolean;
  /** Records older than this are dead-lettered unprocessed. @default 3600000 */
  readonly maxRecordAgeMs?: number;
  /** Concurrent key lanes per shard; 1 keeps strict shard order. @default 1 */
  readonly parallelism?: number;
  /** Lane key when `parallelism > 1`. @default the full primary key */
  readonly laneKey?: (record: StreamRecord) => string;
  /** Key attributes of the table, to keep two effects off one item. @default ["PK", "SK"] */
  readonly keyAttributes?: readonly string[];
  /** Handler retry backoff base. @default 200 */
  readonly retryBaseMs?: number;
  /** Handler retry backoff cap (commits and dead-letter writes wait at most 5 s between attempts). @default 30000 */
  readonly retryMaxMs?: number;
  /** Deadline of one DynamoDB or DynamoDB Streams call. @default 5000 */
  readonly callTimeoutMs?: number;
  /** Reachability and failed calls; shared by workers of one process. @default a new one reporting through `onEvent` */
  readonly health?: DependencyHealth;
  /** With the default `health`: failures for this long without an answer make an outage. @default 5000 */
  readonly outageAfterMs?: number;
  /** A lease whose counter did not move for this long is expired. @default 10000 */
  readonly leaseDurationMs?: number;
  /** Coordinator cycle (renewal, assignment). @default leaseDurationMs / 3 */
  readonly renewIntervalMs?: number;
  /** Full shard discovery interval. @default 60000 */
  readonly discoveryIntervalMs?: number;
  /** Poll delay while records flow. @default 250 */
  readonly pollIntervalMs?: number;
  /** Poll delay cap when reads come back empty (doubles up to this). @default 2000 */
  readonly idlePollMaxMs?: number;
  /** Throttle backoff base. @default 100 */
  readonly throttleBaseMs?: number;
  /** Throttle backoff cap. @default 10000 */
  readonly throttleMaxMs?: number;
  /**
   * The whole drain after `signal` aborts: in-flight batches may finish
   * until a quarter of it (at most `callTimeoutMs`) is left, then handlers
   * and commits are aborted (their records are re-read by the next owner)
   * and the leases are released within what is left. The worker resolves
   * within this time whatever DynamoDB does. @default 20000
   */
  readonly shutdownGraceMs?: number;
  /** Trimmed data: stop the shard (default) or skip to the trim horizon. Both emit `data_loss`. @default "stall" */
  readonly onTrimmedData?: TrimmedDataPolicy;
  /** Most leases this worker holds. @default Infinity */
  readonly maxLeases?: number;
}

/** Resolved, validated configuration. */
export interface ResolvedStreamWorkerConfig extends ProcessingConfig {
  /** Worker id. */
  readonly workerId: string;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly initialPosition: LeaseStart;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly batchSize: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly batchWindowMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly leaseDurationMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly renewIntervalMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly discoveryIntervalMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly pollIntervalMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly idlePollMaxMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly throttleBaseMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly throttleMaxMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly onTrimmedData: TrimmedDataPolicy;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly maxLeases: number;
  /** See {@linkcode StreamWorkerOptions.shutdownGraceMs}. */
  readonly shutdownGraceMs: number;
  /** See {@linkcode StreamWorkerOptions}. */
  readonly callTimeoutMs: number;
}

function positive(
  name: string,
  value: number,
  min = 1,
  max = Number.POSITIVE_INFINITY,
): number {
  if (!(value >= min && value <= max)) {
    throw new RangeError(
      `Cannot use option "${name}": current value is ${value}, expected ${min}..${max}`,
    );
  }
  return value;
}

/**
 * Fills in defaults and validates options.
 *
 * @throws {RangeError} for an out-of-range option
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { resolveStreamWorkerConfig } from "./stream_worker.ts";
 * import { createMemoryDeadLetterSink } from "./batch_processor.ts";
 * import { createMemoryCoordinationStore } from "./coordination_store.ts";
 *
 * const config = resolveStreamWorkerConfig({
 *   source: { streamArn: "a", describeStream: () => Promise.reject(), getShardIterator: () => Promise.reject(), getRecords: () => Promise.reject() },
 *   store: createMemoryCoordinationStore(),
 *   handler: () => Promise.resolve(),
 *   deadLetterSink: createMemoryDeadLetterSink(),
 *   workerId: "w1",
 * });
 * assert.equal(config.batchSize, 100);
 * assert.equal(config.renewIntervalMs, 3333);
 * ```
 */
export function resolveStreamWorkerConfig(
  options: StreamWorkerOptions,
): ResolvedStreamWorkerConfig {
  const leaseDurationMs = positive(
    "leaseDurationMs",
    options.leaseDurationMs ?? 10_000,
  );
  return {
    workerId: options.workerId ?? crypto.randomUUID(),
    handler: options.handler,
    filters: options.filters ?? [],
    frameworkPrefix: options.frameworkPrefix ?? COORDINATION_PK_PREFIX,
    initialPosition: options.initialPosition ?? "TRIM_HORIZON",
    batchSize: positive("batchSize", options.batchSize ?? 100, 1, 10_000),
    batchWindowMs: positive(
      "batchWindowMs",
      options.batchWindowMs ?? 0,
      0,
      300_000,
    ),
    maxAttempts: positive("maxAttempts", options.maxAttempts ?? 3, 1, 10_000),
    bisectOnError: options.bisectOnError ?? true,
    maxRecordAgeMs: positive(
      "maxRecordAgeMs",
      options.maxRecordAgeMs ?? 3_600_000,
    ),
    parallelism: positive("parallelism", options.parallelism ?? 1, 1, 1_000),
    laneKey: options.laneKey ?? primaryKeyLane,
    keyAttributes: options.keyAttributes ?? ["PK", "SK"],
    retryBaseMs: positive("retryBaseMs", options.retryBaseMs ?? 200, 0),
    retryMaxMs: positive("retryMaxMs", options.retryMaxMs ?? 30_000, 0),
    callTimeoutMs: positive("callTimeoutMs", options.callTimeoutMs ?? 5_000),
    deadLetterSink: options.deadLetterSink,
    clock: options.clock ?? systemClock,
    random: options.random ?? Math.random,
    leaseDurationMs,
    renewIntervalMs: positive(
      "renewIntervalMs",
      options.renewIntervalMs ?? Math.floor(leaseDurationMs / 3),
    ),
    discoveryIntervalMs: positive(
      "discoveryIntervalMs",
      options.discoveryIntervalMs ?? 60_000,
    ),
    pollIntervalMs: positive(
      "pollIntervalMs",
      options.pollIntervalMs ?? 250,
      0,
    ),
    idlePollMaxMs: positive("idlePollMaxMs", options.idlePollMaxMs ?? 2_000, 0),
    throttleBaseMs: positive("throttleBaseMs", options.throttleBaseMs ?? 100),
    throttleMaxMs: positive("throttleMaxMs", options.throttleMaxMs ?? 10_000),
    onTrimmedData: options.onTrimmedData ?? "stall",
    maxLeases: positive(
      "maxLeases",
      options.maxLeases ?? Number.POSITIVE_INFINITY,
    ),
    shutdownGraceMs: positive(
      "shutdownGraceMs",
      options.shutdownGraceMs ?? 20_000,
      0,
    ),
  };
}

/** How a shard runner ended. */
type RunnerExit =
  | { readonly kind: "ended" }
  | { readonly kind: "stalled" }
  | { readonly kind: "lost" }
  | { readonly kind: "stopped" };

interface HeldLease {
  readonly shardId: string;
  readonly fence: LeaseFence;
  readonly start: LeaseStart;
  readonly queue: SerialQueue;
  /** Checkpoint known to be in the store. */
  written: string | undefined;
  /** Processed position not yet written (deferred checkpoint). */
  pending: string | undefined;
  /** Stops new work (shutdown or lease loss). */
  readonly stop: AbortController;
  /** Aborts handlers and commits (lease loss or shutdown deadline). */
  readonly hard: AbortController;
  renewedAt: number;
  /** When this worker took the lease. */
  readonly takenAt: number;
  /** Start of the last read that found the shard's end, after which everything read was processed. */
  caughtUpAt: number | undefined;
  /** Creation time of the oldest record read and not processed yet. */
  oldestPendingAt: number | undefined;
  lost: boolean;
  exit: RunnerExit | undefined;
  task: Promise<void> | undefined;
}

interface Observation {
  readonly owner: string | undefined;
  readonly epoch: number;
  readonly counter: number;
  readonly seenAt: number;
}

/** What a drain could not finish within `shutdownGraceMs`. */
export interface StreamWorkerStopReport {
  /** Leases released. */
  readonly released: readonly string[];
  /** Shards whose in-flight batch was aborted at the deadline (its records are read again by the next owner). */
  readonly cutShort: readonly string[];
  /** Leases not released (they expire after the lease duration); their deferred checkpoints are not written. */
  readonly notReleased: ReadonlyArray<
    { readonly shardId: string; readonly reason: string }
  >;
  /** Milliseconds the drain took. */
  readonly durationMs: number;
}

/** Orders shards so that every parent comes before its children. */
export function parentsFirst(shards: readonly StreamShard[]): StreamShard[] {
  const byId = new Map(shards.map((s) => [s.shardId, s]));
  const out: StreamShard[] = [];
  const done = new Set<string>();
  function visit(s: StreamShard, depth: number): void {
    if (done.has(s.shardId) || depth > shards.length) return;
    const parent = s.parentShardId === undefined
      ? undefined
      : byId.get(s.parentShardId);
    if (parent) visit(parent, depth + 1);
    done.add(s.shardId);
    out.push(s);
  }
  for (
    const s of [...shards].sort((a, b) => a.shardId.localeCompare(b.shardId))
  ) visit(s, 0);
  return out;
}

/** Most a read or discovery waits between attempts while a service does not answer. */
const UNREACHABLE_BACKOFF_CAP_MS = 5_000;

/**
 * Runs one stream worker until `signal` aborts (then drains within
 * `shutdownGraceMs`, releases its leases and resolves with what it could
 * not finish) or a failure no retry can fix happens (then it stops its
 * shards, releases what it can and rejects with that failure).
 *
 * @param options Ports, handler and settings.
 * @returns Resolves after shutdown with what the drain could not finish.
 * @throws {RangeError} for an out-of-range option
 * @throws {Error} the first failure `classifyFailure()` calls `fatal` (access denied, missing table or stream, a bug)
 *
 * @example
 * ```ts ignore
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { DynamoDBStreamsClient } from "@aws-sdk/client-dynamodb-streams";
 * import { runStreamWorker } from "./stream_worker.ts";
 * import { createAwsStreamSource } from "./stream_source_aws.ts";
 * import { createDynamoDbCoordinationStore } from "./coordination_store_dynamodb.ts";
 *
 * const streamArn = "arn:aws:dynamodb:...:stream/...";
 * await runStreamWorker({
 *   source: createAwsStreamSource(new DynamoDBStreamsClient({}), streamArn),
 *   store: createDynamoDbCoordinationStore(new DynamoDBClient({}), { tableName: "t", consumerName: "agg", streamArn }),
 *   deadLetterSink: { send: async (letters) => console.error(letters) },
 *   handler: async (records) => ({ effects: [] }),
 *   signal: AbortSignal.timeout(60_000),
 * });
 * ```
 */
export async function runStreamWorker(
  options: StreamWorkerOptions,
): Promise<StreamWorkerStopReport> {
  const cfg = resolveStreamWorkerConfig(options);
  const clock = cfg.clock;
  const me = cfg.workerId;
  const metrics = options.metrics ?? createStreamWorkerMetrics();
  const emit = options.onEvent ?? ((): void => {});
  const health = options.health ?? new DependencyHealth({
    clock,
    ...(options.outageAfterMs === undefined
      ? {}
      : { outageAfterMs: options.outageAfterMs }),
    onEvent: (event) => emit({ kind: "dependency", event }),
  });
  const calls = { clock, timeoutMs: cfg.callTimeoutMs };
  const source = instrumentSource(options.source, health, calls);
  const store = instrumentStore(options.store, health, calls);
  const processing = {
    ...cfg,
    deadLetterSink: instrumentDeadLetterSink(cfg.deadLetterSink, health, calls),
  };
  const shutdown = options.signal ?? new AbortController().signal;
  let shutdownAt: number | undefined;
  const onShutdown = (): void => {
    shutdownAt ??= clock.now();
  };
  if (shutdown.aborted) onShutdown();
  else shutdown.addEventListener("abort", onShutdown, { once: true });
  const held = new Map<string, HeldLease>();
  const observed = new Map<string, Observation>();
  let fatal: Error | undefined;
  let wake = new AbortController();
  let discoveryDue = clock.now();
  let discoveryFailures = 0;

  function requestCycle(): void {
    wake.abort();
  }

  function fail(error: unknown): void {
    fatal ??= toError(error);
    requestCycle();
  }

  /** Reports a failure the worker lives through; throws one it cannot. */
  function survive(error: unknown, shardId?: string): void {
    const failure = classifyFailure(error);
    if (failure === "fatal") throw error;
    emit({
      kind: "error",
      ...(shardId === undefined ? {} : { shardId }),
      error: toError(error),
      failure,
    });
  }

  // ---------------------------------------------------------------- discovery

  async function createLeasesFor(
    shards: readonly StreamShard[],
    leases: readonly LeaseItem[],
    first: boolean,
  ): Promise<void> {
    const known = new Set(leases.map((l) => l.shardId));
    const children = new Map<string, string[]>();
    for (const s of shards) {
      if (s.parentShardId === undefined) continue;
      const list = children.get(s.parentShardId) ?? [];
      list.push(s.shardId);
      children.set(s.parentShardId, list);
    }
    for (const s of parentsFirst(shards)) {
      if (known.has(s.shardId)) continue;
      // Lineage-replay guard: a closed shard whose children already have leases was consumed and cleaned up.
      if (
        s.endingSequenceNumber !== undefined &&
        (children.get(s.shardId) ?? []).some((c) => known.has(c))
      ) continue;
      const start: LeaseStart = first ? cfg.initialPosition : "TRIM_HORIZON";
      await store.createLease(
        {
          shardId: s.shardId,
          start,
          ...(s.parentShardId === undefined
            ? {}
            : { parentShardId: s.parentShardId }),
        },
        shutdown,
      );
      known.add(s.shardId);
    }
  }

  async function discover(): Promise<void> {
    const shards = await listAllShards(source, { signal: shutdown });
    const leases = await store.listLeases(shutdown);
    await createLeasesFor(shards, leases, leases.length === 0);
  }

  async function discoverChildren(
    h: HeldLease,
    signal: AbortSignal,
  ): Promise<string[]> {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const children = await listAllShards(source, {
          childrenOf: h.shardId,
          signal,
        });
        if (children.length > 0) {
          const leases = await store.listLeases(signal);
          await createLeasesFor(children, leases, false);
          return children.map((c) => c.shardId);
        }
      } catch (error) {
        if (signal.aborted) return [];
        if (classifyFailure(error) !== "throttled") {
          survive(error, h.shardId);
          return []; // the periodic full discovery will find them
        }
      }
      const delay = fullJitter(attempt, 50, 1_000, cfg.random);
      if (!(await sleepUnlessAborted(clock, delay, signal))) return [];
    }
    return []; // the periodic full discovery will find them
  }

  // ---------------------------------------------------------------- shard runner

  async function openIterator(
    h: HeldLease,
    position: ShardPosition,
    lastRead: string | undefined,
  ): Promise<
    { kind: "open"; iterator: string } | { kind: "stalled" } | {
      kind: "stopped";
    }
  > {
    let currentPosition = position;
    for (let attempt = 0;; attempt++) {
      if (h.stop.signal.aborted) return { kind: "stopped" };
      try {
        const iterator = await source.getShardIterator(
          h.shardId,
          currentPosition,
          h.stop.signal,
        );
        return { kind: "open", iterator };
      } catch (error) {
        if (h.stop.signal.aborted) return { kind: "stopped" };
        if (isStreamWorkerError(error, "STREAM_DATA_TRIMMED")) {
          const action = reportTrimmed(h, lastRead, error);
          if (action === "stall") return { kind: "stalled" };
          currentPosition = { type: "TRIM_HORIZON" };
          continue;
        }
        if (!(await backoffOnTransient(h, error, attempt))) {
          return { kind: "stopped" };
        }
      }
    }
  }

  function reportTrimmed(
    h: HeldLease,
    lastRead: string | undefined,
    error: Error,
  ): TrimmedDataPolicy {
    metrics.dataLossEvents++;
    emit({
      kind: "data_loss",
      shardId: h.shardId,
      ...(lastRead === undefined ? {} : { afterSequenceNumber: lastRead }),
      action: cfg.onTrimmedData === "stall"
        ? "stalled"
        : "skipped_to_trim_horizon",
      error,
    });
    return cfg.onTrimmedData;
  }

  /** Sleeps after a throttle or a call without answer; rethrows a failure no retry fixes. `false` when stopped. */
  async function backoffOnTransient(
    h: HeldLease,
    error: unknown,
    attempt: number,
  ): Promise<boolean> {
    const failure = classifyFailure(error);
    if (failure === "fatal") throw error;
    if (failure === "throttled") {
      metrics.throttles++;
      const delayMs = fullJitter(
        attempt,
        cfg.throttleBaseMs,
        cfg.throttleMaxMs,
        cfg.random,
      );
      emit({ kind: "throttled", shardId: h.shardId, delayMs });
      return await sleepUnlessAborted(clock, delayMs, h.stop.signal);
    }
    emit({
      kind: "error",
      shardId: h.shardId,
      error: toError(error),
      failure,
    });
    updateGauges();
    return await sleepUnlessAborted(
      clock,
      fullJitter(
        attempt,
        cfg.throttleBaseMs,
        Math.min(cfg.throttleMaxMs, UNREACHABLE_BACKOFF_CAP_MS),
        cfg.random,
      ),
      h.stop.signal,
    );
  }

  function batchEnv(h: HeldLease): BatchEnvironment {
    return {
      shardId: h.shardId,
      epoch: h.fence.epoch,
      stopSignal: h.stop.signal,
      hardSignal: h.hard.signal,
      metrics,
      emit,
      commit: (
        checkpoint: string,
        effects: readonly TransactWriteItem[],
        signal: AbortSignal,
      ) =>
        h.queue.run(async () => {
          const started = clock.now();
          const r = await store.commit(h.fence, checkpoint, effects, signal);
          if (r.kind === "committed") {
            h.written = maxSequence(h.written, checkpoint);
            metrics.lastCommitAt = clock.now();
            options.onCommit?.({ latencyMs: metrics.lastCommitAt - started });
          } else if (r.kind === "lease_lost") {
            markLost(h, r.owner);
          }
          return r;
        }),
    };
  }

  /** Lag of one shard at `now` (see `StreamWorkerMetrics.lagMs`). */
  function lagOf(h: HeldLease, now: number): number {
    if (h.caughtUpAt !== undefined) return Math.max(0, now - h.caughtUpAt);
    if (h.oldestPendingAt !== undefined) {
      return Math.max(0, now - h.oldestPendingAt);
    }
    return Math.max(0, now - h.takenAt);
  }

  async function runShard(h: HeldLease): Promise<RunnerExit> {
    const initial: ShardPosition = h.start === "LATEST"
      ? { type: "LATEST" }
      : { type: "TRIM_HORIZON" };
    let lastRead = h.written;
    const positionAfterLastRead = (): ShardPosition =>
      lastRead === undefined
        ? initial
        : { type: "AFTER_SEQUENCE_NUMBER", sequenceNumber: lastRead };
    let opened = await openIterator(h, positionAfterLastRead(), lastRead);
    if (opened.kind !== "open") return opened;
    let iterator = opened.iterator;
    let issuedAt = clock.now();
    let buffer: StreamRecord[] = [];
    let windowStart = 0;
    let idleMs = cfg.pollIntervalMs;
    let throttleAttempt = 0;
    /** Start of the last read that came back short (the shard's end at that time). */
    let tipReadAt: number | undefined;
    const env = batchEnv(h);

    while (!h.stop.signal.aborted) {
      if (clock.now() - issuedAt > ITERATOR_LIFETIME_MS - 60_000) {
        opened = await openIterator(h, positionAfterLastRead(), lastRead);
        if (opened.kind !== "open") return opened;
        iterator = opened.iterator;
        issuedAt = clock.now();
      }
      const limit = Math.max(
        1,
        Math.min(MAX_GET_RECORDS_LIMIT, cfg.batchSize - buffer.length),
      );
      let page;
      const readAt = clock.now();
      try {
        metrics.getRecordsCalls++;
        page = await source.getRecords(iterator, limit, h.stop.signal);
        throttleAttempt = 0;
        metrics.lastReadAt = clock.now();
      } catch (error) {
        if (h.stop.signal.aborted) break;
        if (isStreamWorkerError(error, "STREAM_ITERATOR_EXPIRED")) {
          metrics.expiredIterators++;
          emit({
            kind: "iterator_expired",
            shardId: h.shardId,
            ...(lastRead === undefined
              ? {}
              : { afterSequenceNumber: lastRead }),
          });
        } else if (isStreamWorkerError(error, "STREAM_DATA_TRIMMED")) {
          if (reportTrimmed(h, lastRead, error) === "stall") {
            return { kind: "stalled" };
          }
          opened = await openIterator(h, { type: "TRIM_HORIZON" }, lastRead);
          if (opened.kind !== "open") return opened;
          iterator = opened.iterator;
          issuedAt = clock.now();
          continue;
        } else if (!(await backoffOnTransient(h, error, throttleAttempt++))) {
          break;
        }
        // Re-open after the last record we received (not the last checkpoint): nothing is read twice.
        opened = await openIterator(h, positionAfterLastRead(), lastRead);
        if (opened.kind !== "open") return opened;
        iterator = opened.iterator;
        issuedAt = clock.now();
        continue;
      }

      const records = page.records;
      if (records.length > 0) {
        if (buffer.length === 0) windowStart = clock.now();
        buffer.push(...records);
        h.oldestPendingAt ??= records[0]?.approximateCreationTime;
        const last = records[records.length - 1];
        if (last !== undefined) lastRead = last.sequenceNumber;
        metrics.recordsRead += records.length;
      } else {
        metrics.emptyReads++;
      }
      const ended = page.nextShardIterator === undefined;
      if (records.length < limit) tipReadAt = readAt;
      if (
        buffer.length > 0 &&
        (ended || buffer.length >= cfg.batchSize ||
          clock.now() - windowStart >= cfg.batchWindowMs)
      ) {
        const batchStart = clock.now();
        const outcome = await processBatch(buffer, processing, env);
        if (options.onBatch) {
          const end = clock.now();
          const oldest = buffer.reduce(
            (min, r) =>
              r.approximateCreationTime > 0
                ? Math.min(min, r.approximateCreationTime)
                : min,
            Infinity,
          );
          options.onBatch({
            durationMs: end - batchStart,
            records: buffer.length,
            ...(oldest === Infinity ? {} : { endToEndLagMs: end - oldest }),
          });
        }
        buffer = [];
        switch (outcome.kind) {
          case "done":
            if (!outcome.committed) {
              h.pending = maxSequence(h.pending, outcome.checkpoint);
            }
            break;
          case "lease_lost":
            // A hard abort at the shutdown deadline is not a loss: the lease is still released.
            return h.lost || !shutdown.aborted
              ? { kind: "lost" }
              : { kind: "stopped" };
          case "abandoned":
            return { kind: "stopped" };
          default: {
            const _exhaustive: never = outcome;
            throw new TypeError(`Unknown batch outcome ${String(_exhaustive)}`);
          }
        }
      }
      if (buffer.length === 0) {
        h.oldestPendingAt = undefined;
        // Everything read is processed; if the last short read found the end, we were caught up then.
        if (tipReadAt !== undefined) {
          h.caughtUpAt = Math.max(h.caughtUpAt ?? tipReadAt, tipReadAt);
        }
      }
      updateGauges();
      if (ended) return endShard(h);
      iterator = page.nextShardIterator ?? iterator;

      let wait: number;
      if (records.length >= limit) {
        wait = 0; // a full page: more is waiting
      } else if (records.length > 0) {
        idleMs = cfg.pollIntervalMs;
        wait = cfg.pollIntervalMs;
      } else {
        idleMs = Math.min(
          cfg.idlePollMaxMs,
          Math.max(cfg.pollIntervalMs, idleMs * 2),
        );
        wait = idleMs;
      }
      if (buffer.length > 0) {
        wait = Math.min(
          wait,
          Math.max(0, windowStart + cfg.batchWindowMs - clock.now()),
        );
      }
      if (wait > 0 && !(await sleepUnlessAborted(clock, wait, h.stop.signal))) {
        break;
      }
    }
    return { kind: "stopped" };
  }

  async function endShard(h: HeldLease): Promise<RunnerExit> {
    const checkpoint = piggyback(h);
    for (let attempt = 0;; attempt++) {
      if (h.hard.signal.aborted) return { kind: h.lost ? "lost" : "stopped" };
      try {
        const r = await h.queue.run(() =>
          store.endLease(h.fence, checkpoint, h.hard.signal)
        );
        if (r.kind === "lost") {
          markLost(h, r.owner);
          return { kind: "lost" };
        }
        break;
      } catch (error) {
        if (h.hard.signal.aborted) continue;
        survive(error, h.shardId);
        const delay = fullJitter(
          attempt,
          cfg.throttleBaseMs,
          UNREACHABLE_BACKOFF_CAP_MS,
          cfg.random,
        );
        await sleepUnlessAborted(clock, delay, h.hard.signal);
      }
    }
    if (checkpoint !== undefined) metrics.lastCommitAt = clock.now();
    metrics.shardsEnded++;
    const children = await discoverChildren(h, shutdown);
    emit({ kind: "shard_ended", shardId: h.shardId, children });
    return { kind: "ended" };
  }

  function startRunner(lease: LeaseItem): void {
    const now = clock.now();
    const h: HeldLease = {
      shardId: lease.shardId,
      fence: { shardId: lease.shardId, owner: me, epoch: lease.epoch },
      start: lease.start,
      queue: new SerialQueue(),
      written: lease.checkpoint,
      pending: undefined,
      stop: new AbortController(),
      hard: new AbortController(),
      renewedAt: now,
      takenAt: now,
      caughtUpAt: undefined,
      oldestPendingAt: undefined,
      lost: false,
      exit: undefined,
      task: undefined,
    };
    held.set(h.shardId, h);
    h.task = runShard(h).then(
      (exit) => {
        h.exit = exit;
        requestCycle();
      },
      (error) => {
        h.exit = { kind: "stopped" };
        fail(error);
      },
    );
  }

  // ---------------------------------------------------------------- coordinator

  function observe(lease: LeaseItem, now: number): Observation {
    const prev = observed.get(lease.shardId);
    if (
      prev && prev.counter === lease.counter && prev.epoch === lease.epoch &&
      prev.owner === lease.owner
    ) return prev;
    const next = {
      owner: lease.owner,
      epoch: lease.epoch,
      counter: lease.counter,
      seenAt: now,
    };
    observed.set(lease.shardId, next);
    return next;
  }

  function piggyback(h: HeldLease): string | undefined {
    if (h.pending === undefined) return undefined;
    return h.written === undefined ||
        maxSequence(h.pending, h.written) !== h.written
      ? h.pending
      : undefined;
  }

  function stopLease(h: HeldLease): boolean {
    if (h.lost) return false;
    h.lost = true;
    h.stop.abort();
    h.hard.abort();
    return true;
  }

  /** Another worker took the lease (a fenced write was refused). */
  function markLost(h: HeldLease, owner: string | undefined): void {
    if (!stopLease(h)) return;
    metrics.leasesLost++;
    emit({
      kind: "lease_lost",
      shardId: h.shardId,
      ...(owner === undefined ? {} : { owner }),
    });
  }

  /** This worker could not renew the lease for a lease duration: someone else may take it now. */
  function markExpired(h: HeldLease): void {
    if (!stopLease(h)) return;
    metrics.leasesExpired++;
    emit({
      kind: "lease_expired",
      shardId: h.shardId,
      unrenewedMs: clock.now() - h.renewedAt,
    });
  }

  async function renew(h: HeldLease): Promise<void> {
    if (h.lost || h.exit?.kind === "ended") return;
    const checkpoint = piggyback(h);
    try {
      const r = await h.queue.run(() =>
        store.renewLease(h.fence, checkpoint, shutdown)
      );
      if (r.kind === "lost") {
        markLost(h, r.owner);
        return;
      }
      h.renewedAt = clock.now();
      if (checkpoint !== undefined) {
        h.written = maxSequence(h.written, checkpoint);
        metrics.lastCommitAt = clock.now();
      }
      observe(r.lease, clock.now());
    } catch (error) {
      if (shutdown.aborted) return;
      survive(error, h.shardId);
      // Self-fence: a lease we could not renew for a full lease duration may be someone else's by now.
      if (clock.now() - h.renewedAt >= cfg.leaseDurationMs) markExpired(h);
    }
  }

  async function cycle(): Promise<void> {
    let now = clock.now();
    if (now >= discoveryDue) {
      try {
        await discover();
        discoveryFailures = 0;
        discoveryDue = now + cfg.discoveryIntervalMs;
      } catch (error) {
        if (shutdown.aborted) return;
        if (classifyFailure(error) === "throttled") metrics.throttles++;
        survive(error);
        discoveryDue = now +
          fullJitter(discoveryFailures++, 1_000, 30_000, cfg.random);
      }
    }

    // Finished runners.
    for (const h of [...held.values()]) {
      if (h.exit === undefined) continue;
      if (h.exit.kind === "stalled") continue; // keeps the lease, renewed, visible in metrics
      held.delete(h.shardId);
      if (h.exit.kind === "lost" && !h.lost) markLost(h, undefined);
    }

    await Promise.all([...held.values()].map((h) => renew(h)));
    for (const h of [...held.values()]) {
      if (h.lost && h.exit !== undefined) held.delete(h.shardId);
    }
    // Expired leases whose runner is still winding down stay in `held` (not counted) until it exits.

    const leases = await store.listLeases(shutdown);
    now = clock.now();
    const byId = new Map(leases.map((l) => [l.shardId, l]));
    // Judged before any write of this cycle changes an observation.
    const expiredIds = new Set<string>();
    for (const l of leases) {
      const seen = observe(l, now);
      if (l.owner !== undefined && now - seen.seenAt >= cfg.leaseDurationMs) {
        expiredIds.add(l.shardId);
      }
    }
    const expired = (l: LeaseItem): boolean => expiredIds.has(l.shardId);

    const eligible = leases.filter((l) => {
      if (l.ended) return false;
      if (l.parentShardId === undefined) return true;
      const parent = byId.get(l.parentShardId);
      return parent === undefined || parent.ended;
    });
    const counts = new Map<string, LeaseItem[]>();
    for (const l of eligible) {
      if (l.owner === undefined || l.owner === me || expired(l)) continue;
      const list = counts.get(l.owner) ?? [];
      list.push(l);
      counts.set(l.owner, list);
    }
    const mine = [...held.values()].filter((h) => !h.lost).length;
    const target = Math.min(
      cfg.maxLeases,
      Math.ceil(eligible.length / (counts.size + 1)),
    );
    const reasonOf = (l: LeaseItem): LeaseTakeReason =>
      l.owner === undefined
        ? "free"
        : l.owner === me
        ? "own"
        : expired(l)
        ? "expired"
        : "rebalance";
    const available = eligible
      .filter((l) =>
        !held.has(l.shardId) &&
        (l.owner === undefined || expired(l) || l.owner === me)
      )
      .sort((a, b) => a.shardId.localeCompare(b.shardId));
    let taking = available.slice(0, Math.max(0, target - mine)).map((l) => ({
      lease: l,
      reason: reasonOf(l),
    }));
    if (taking.length === 0 && mine < target) {
      let victim: LeaseItem[] | undefined;
      for (const list of counts.values()) {
        if (victim === undefined || list.length > victim.length) victim = list;
      }
      if (victim !== undefined && victim.length - mine >= 2) {
        const lease = [...victim].sort((a, b) =>
          b.shardId.localeCompare(a.shardId)
        )[0];
        if (lease) taking = [{ lease, reason: "rebalance" }];
      }
    }
    for (const { lease, reason } of taking) {
      if (shutdown.aborted || fatal) break;
      const r = await store.takeLease(lease.shardId, me, {
        epoch: lease.epoch,
        counter: lease.counter,
      }, shutdown);
      if (r.kind === "lost") continue;
      observe(r.lease, clock.now());
      if (reason === "rebalance") metrics.leasesStolen++;
      else metrics.leasesTaken++;
      emit({
        kind: "lease_taken",
        shardId: lease.shardId,
        epoch: r.lease.epoch,
        reason,
        ...(lease.owner !== undefined && lease.owner !== me
          ? { from: lease.owner }
          : {}),
      });
      startRunner(r.lease);
    }
  }

  function updateGauges(): void {
    const live = [...held.values()].filter((h) => !h.lost);
    const now = clock.now();
    metrics.leasesHeld = live.length;
    metrics.stalledShards =
      live.filter((h) => h.exit?.kind === "stalled").length;
    metrics.lagMs = live.reduce((max, h) => Math.max(max, lagOf(h, now)), 0);
  }

  // ---------------------------------------------------------------- main loop

  let report: StreamWorkerStopReport | undefined;
  try {
    while (!shutdown.aborted && fatal === undefined) {
      try {
        await cycle();
      } catch (error) {
        if (shutdown.aborted) break;
        try {
          survive(error);
        } catch (unfixable) {
          fail(unfixable);
        }
      }
      // The coordinator is alive even when DynamoDB is not: liveness reads this.
      updateGauges();
      options.onMetrics?.(metrics);
      if (fatal !== undefined || shutdown.aborted) break;
      wake = new AbortController();
      const sleepSignal = AbortSignal.any([shutdown, wake.signal]);
      await sleepUnlessAborted(clock, cfg.renewIntervalMs, sleepSignal);
    }
  } finally {
    shutdown.removeEventListener("abort", onShutdown);
    report = await drainAndRelease();
  }
  if (fatal !== undefined) throw fatal;
  return report;

  async function drainAndRelease(): Promise<StreamWorkerStopReport> {
    const startedAt = shutdownAt ?? clock.now();
    const end = startedAt + cfg.shutdownGraceMs;
    const reserve = Math.min(cfg.callTimeoutMs, cfg.shutdownGraceMs / 4);
    const all = [...held.values()];
    for (const h of all) h.stop.abort();

    // 1. In-flight batches finish, until only the release reserve is left;
    // then they are aborted (a handler that ignores its signal is not waited for).
    const cutShort: string[] = [];
    const settled = Promise.allSettled(all.map((h) => h.task)).then(() =>
      false
    );
    const timers = new AbortController();
    const passed = clock.sleep(
      Math.max(0, end - reserve - clock.now()),
      timers.signal,
    ).then(() => true, () => false);
    if (await Promise.race([settled, passed])) {
      for (const h of all) {
        if (h.exit === undefined && !h.lost) cutShort.push(h.shardId);
        h.hard.abort();
      }
      await Promise.race([
        settled,
        clock.sleep(Math.min(1_000, reserve / 2), timers.signal).catch(
          () => {},
        ),
      ]);
    }
    timers.abort();
    await passed;

    // 2. Release (with the deferred checkpoint) within what is left.
    const released: string[] = [];
    const notReleased: { shardId: string; reason: string }[] = [];
    const releaseDeadline = new AbortController();
    const releaseTimer = clock.sleep(
      Math.max(0, end - clock.now()),
      releaseDeadline.signal,
    ).then(() => releaseDeadline.abort(), () => {});
    await Promise.all(all.map(async (h) => {
      if (h.lost || h.exit?.kind === "ended" || h.exit?.kind === "lost") return;
      if (end - clock.now() <= 0) {
        notReleased.push({
          shardId: h.shardId,
          reason: "no time left within the shutdown grace",
        });
        return;
      }
      try {
        const r = await h.queue.run(() =>
          store.releaseLease(h.fence, piggyback(h), releaseDeadline.signal)
        );
        if (r.kind === "ok") {
          metrics.leasesReleased++;
          released.push(h.shardId);
          emit({ kind: "lease_released", shardId: h.shardId });
        } else {
          markLost(h, r.owner);
        }
      } catch (error) {
        notReleased.push({
          shardId: h.shardId,
          reason: releaseDeadline.signal.aborted
            ? "DynamoDB did not answer within the shutdown grace"
            : toError(error).message,
        });
      }
    }));
    if (!releaseDeadline.signal.aborted) releaseDeadline.abort();
    await releaseTimer;
    held.clear();
    updateGauges();
    options.onMetrics?.(metrics);
    return {
      released,
      cutShort,
      notReleased,
      durationMs: clock.now() - startedAt,
    };
  }
}

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
 * 3. renew held leases (piggy-backing deferred checkpoints); a failed
 *    renewal stops that shard at once;
 * 4. take free or expired leases up to the fair share, else steal one from
 *    the busiest worker when it holds at least two more than this one.
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { type Clock, systemClock } from "../core/clock.ts";
import {
  fullJitter,
  maxSequence,
  SerialQueue,
  sleepUnlessAborted,
} from "./_util.ts";
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
import { isStreamWorkerError, toError } from "./errors.ts";
import {
  createStreamWorkerMetrics,
  type StreamWorkerEvent,
  type StreamWorkerMetrics,
} from "./metrics.ts";
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
  /** Handler retry backoff cap. @default 30000 */
  readonly retryMaxMs?: number;
  /** Commit attempts on retryable store errors. @default 5 */
  readonly commitMaxAttempts?: number;
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
  /** On shutdown, in-flight batches may finish for this long; then handlers and commits are aborted (their records are re-read by the next owner). @default 20000 */
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
    commitMaxAttempts: positive(
      "commitMaxAttempts",
      options.commitMaxAttempts ?? 5,
    ),
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
  /** Aborts handlers and commits (lease loss). */
  readonly hard: AbortController;
  renewedAt: number;
  lagMs: number;
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

/**
 * Runs one stream worker until `signal` aborts (then drains, releases its
 * leases and resolves) or a non-retryable failure happens (then it stops
 * its shards, releases what it can and rejects).
 *
 * @param options Ports, handler and settings.
 * @returns Resolves after a clean shutdown.
 * @throws {RangeError} for an out-of-range option
 * @throws {Error} the first non-retryable failure of a store or handler path
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
): Promise<void> {
  const cfg = resolveStreamWorkerConfig(options);
  const { source, store } = options;
  const clock = cfg.clock;
  const me = cfg.workerId;
  const metrics = options.metrics ?? createStreamWorkerMetrics();
  const emit = options.onEvent ?? ((): void => {});
  const shutdown = options.signal ?? new AbortController().signal;
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
        if (!isStreamWorkerError(error, "STREAM_THROTTLED")) {
          emit({ kind: "error", shardId: h.shardId, error: toError(error) });
          return [];
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

  /** Sleeps after a throttle or transient failure; rethrows anything else. `false` when stopped. */
  async function backoffOnTransient(
    h: HeldLease,
    error: unknown,
    attempt: number,
  ): Promise<boolean> {
    if (isStreamWorkerError(error, "STREAM_THROTTLED")) {
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
    if (isStreamWorkerError(error) && error.retryable) {
      emit({ kind: "error", shardId: h.shardId, error });
      return await sleepUnlessAborted(
        clock,
        fullJitter(attempt, cfg.throttleBaseMs, cfg.throttleMaxMs, cfg.random),
        h.stop.signal,
      );
    }
    throw error;
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
          const r = await store.commit(h.fence, checkpoint, effects, signal);
          if (r.kind === "committed") {
            h.written = maxSequence(h.written, checkpoint);
          }
          return r;
        }),
    };
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
      try {
        metrics.getRecordsCalls++;
        page = await source.getRecords(iterator, limit, h.stop.signal);
        throttleAttempt = 0;
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
        const last = records[records.length - 1];
        if (last !== undefined) {
          lastRead = last.sequenceNumber;
          h.lagMs = Math.max(0, clock.now() - last.approximateCreationTime);
        }
        metrics.recordsRead += records.length;
      } else {
        metrics.emptyReads++;
        if (buffer.length === 0) h.lagMs = 0;
      }
      const ended = page.nextShardIterator === undefined;
      if (
        buffer.length > 0 &&
        (ended || buffer.length >= cfg.batchSize ||
          clock.now() - windowStart >= cfg.batchWindowMs)
      ) {
        const outcome = await processBatch(buffer, cfg, env);
        buffer = [];
        switch (outcome.kind) {
          case "done":
            if (!outcome.committed) {
              h.pending = maxSequence(h.pending, outcome.checkpoint);
            }
            break;
          case "lease_lost":
            return { kind: "lost" };
          case "abandoned":
            return { kind: "stopped" };
          default: {
            const _exhaustive: never = outcome;
            throw new TypeError(`Unknown batch outcome ${String(_exhaustive)}`);
          }
        }
      }
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
    const r = await h.queue.run(() =>
      store.endLease(h.fence, checkpoint, h.hard.signal)
    );
    if (r.kind === "lost") return { kind: "lost" };
    metrics.shardsEnded++;
    const children = await discoverChildren(h, shutdown);
    emit({ kind: "shard_ended", shardId: h.shardId, children });
    return { kind: "ended" };
  }

  function startRunner(lease: LeaseItem): void {
    const h: HeldLease = {
      shardId: lease.shardId,
      fence: { shardId: lease.shardId, owner: me, epoch: lease.epoch },
      start: lease.start,
      queue: new SerialQueue(),
      written: lease.checkpoint,
      pending: undefined,
      stop: new AbortController(),
      hard: new AbortController(),
      renewedAt: clock.now(),
      lagMs: 0,
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

  function markLost(h: HeldLease): void {
    if (h.lost) return;
    h.lost = true;
    h.stop.abort();
    h.hard.abort();
    metrics.leasesLost++;
    emit({ kind: "lease_lost", shardId: h.shardId });
  }

  async function renew(h: HeldLease): Promise<void> {
    if (h.lost || h.exit?.kind === "ended") return;
    const checkpoint = piggyback(h);
    try {
      const r = await h.queue.run(() =>
        store.renewLease(h.fence, checkpoint, shutdown)
      );
      if (r.kind === "lost") {
        markLost(h);
        return;
      }
      h.renewedAt = clock.now();
      if (checkpoint !== undefined) {
        h.written = maxSequence(h.written, checkpoint);
      }
      observe(r.lease, clock.now());
    } catch (error) {
      if (shutdown.aborted) return;
      emit({ kind: "error", shardId: h.shardId, error: toError(error) });
      // Self-fence: a lease we could not renew for a full lease duration may be someone else's by now.
      if (clock.now() - h.renewedAt >= cfg.leaseDurationMs) markLost(h);
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
        if (isStreamWorkerError(error, "STREAM_THROTTLED")) metrics.throttles++;
        emit({ kind: "error", error: toError(error) });
        discoveryDue = now +
          fullJitter(discoveryFailures++, 1_000, 30_000, cfg.random);
      }
    }

    // Finished runners.
    for (const h of [...held.values()]) {
      if (h.exit === undefined) continue;
      if (h.exit.kind === "stalled") continue; // keeps the lease, renewed, visible in metrics
      held.delete(h.shardId);
      if (h.exit.kind === "lost") markLost(h);
    }

    await Promise.all([...held.values()].map((h) => renew(h)));
    for (const h of [...held.values()]) {
      if (h.lost && h.exit !== undefined) held.delete(h.shardId);
    }

    const leases = await store.listLeases(shutdown);
    now = clock.now();
    const byId = new Map(leases.map((l) => [l.shardId, l]));
    const expired = (l: LeaseItem): boolean =>
      l.owner !== undefined &&
      now - observe(l, now).seenAt >= cfg.leaseDurationMs;
    for (const l of leases) observe(l, now);

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
    const available = eligible
      .filter((l) =>
        l.owner === undefined || expired(l) ||
        (l.owner === me && !held.has(l.shardId))
      )
      .sort((a, b) => a.shardId.localeCompare(b.shardId));
    let taking = available.slice(0, Math.max(0, target - mine)).map((l) => ({
      lease: l,
      from: l.owner,
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
        if (lease) taking = [{ lease, from: lease.owner }];
      }
    }
    for (const { lease, from } of taking) {
      if (shutdown.aborted || fatal) break;
      const r = await store.takeLease(lease.shardId, me, {
        epoch: lease.epoch,
        counter: lease.counter,
      }, shutdown);
      if (r.kind === "lost") continue;
      observe(r.lease, clock.now());
      const stolen = from !== undefined && from !== me && !expired(lease);
      if (stolen) metrics.leasesStolen++;
      else metrics.leasesTaken++;
      emit({
        kind: "lease_taken",
        shardId: lease.shardId,
        epoch: r.lease.epoch,
        ...(stolen ? { stolenFrom: from } : {}),
      });
      startRunner(r.lease);
    }
    updateGauges();
    options.onMetrics?.(metrics);
  }

  function updateGauges(): void {
    const live = [...held.values()].filter((h) => !h.lost);
    metrics.leasesHeld = live.length;
    metrics.stalledShards =
      live.filter((h) => h.exit?.kind === "stalled").length;
    metrics.lagMs = live.reduce((max, h) => Math.max(max, h.lagMs), 0);
  }

  // ---------------------------------------------------------------- main loop

  try {
    while (!shutdown.aborted && fatal === undefined) {
      try {
        await cycle();
      } catch (error) {
        if (shutdown.aborted) break;
        emit({ kind: "error", error: toError(error) });
      }
      if (fatal !== undefined || shutdown.aborted) break;
      wake = new AbortController();
      const sleepSignal = AbortSignal.any([shutdown, wake.signal]);
      await sleepUnlessAborted(clock, cfg.renewIntervalMs, sleepSignal);
    }
  } finally {
    await drainAndRelease();
  }
  if (fatal !== undefined) throw fatal;

  async function drainAndRelease(): Promise<void> {
    const all = [...held.values()];
    for (const h of all) h.stop.abort();
    const deadline = new AbortController();
    const timer = clock.sleep(cfg.shutdownGraceMs, deadline.signal).then(
      () => {
        for (const h of all) h.hard.abort();
      },
      () => {},
    );
    await Promise.allSettled(all.map((h) => h.task));
    deadline.abort();
    await timer;
    const releaseSignal = new AbortController().signal;
    await Promise.all(all.map(async (h) => {
      if (h.lost || h.exit?.kind === "ended" || h.exit?.kind === "lost") return;
      try {
        const r = await h.queue.run(() =>
          store.releaseLease(h.fence, piggyback(h), releaseSignal)
        );
        if (r.kind === "ok") {
          metrics.leasesReleased++;
          emit({ kind: "lease_released", shardId: h.shardId });
        }
      } catch (error) {
        emit({ kind: "error", shardId: h.shardId, error: toError(error) });
      }
    }));
    held.clear();
    updateGauges();
    options.onMetrics?.(metrics);
  }
}

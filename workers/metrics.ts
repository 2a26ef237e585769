/**
 * Counters and events of a stream worker, as plain data. An HTTP or OTel
 * exporter can read the counters object; nothing here does I/O.
 *
 * @module
 */
import type { DeadLetterReason } from "./batch_processor.ts";
import type { FailureClass } from "./errors.ts";
import type { DependencyEvent } from "./resilience.ts";

/**
 * Counters of one worker. Monotonic except the gauges `leasesHeld`,
 * `stalledShards`, `lagMs` and the timestamps `lastReadAt`, `lastCommitAt`.
 */
export interface StreamWorkerMetrics {
  /** Records returned by GetRecords. */
  recordsRead: number;
  /** Records handed to the handler at least once. */
  recordsDelivered: number;
  /** Records dropped by the user filters. */
  recordsFiltered: number;
  /** The framework's own coordination records, dropped at stage 0. */
  frameworkRecords: number;
  /** Batches processed. */
  batches: number;
  /** Successful commits (effects + checkpoint). */
  commits: number;
  /** Commits and dead-letter writes retried after a transient failure (no answer, 5xx, throttle, conflict). */
  commitRetries: number;
  /** Effects written by those commits. */
  effectsCommitted: number;
  /** Checkpoints deferred to the next renewal (batches without delivered records). */
  deferredCheckpoints: number;
  /** Handler invocations that threw. */
  handlerErrors: number;
  /** Retries after a handler error. */
  retries: number;
  /** Batch bisections after a handler error. */
  bisects: number;
  /** Commit splits (too many effects, duplicate targets or rejected effects). */
  commitSplits: number;
  /** Records sent to the dead-letter sink. */
  deadLetters: number;
  /** GetRecords calls. */
  getRecordsCalls: number;
  /** GetRecords calls that returned no record. */
  emptyReads: number;
  /** Throttled Streams calls. */
  throttles: number;
  /** Expired iterators recovered. */
  expiredIterators: number;
  /** Trimmed-data (data loss) detections. */
  dataLossEvents: number;
  /** Leases currently held (gauge). */
  leasesHeld: number;
  /** Leases taken (free or expired). */
  leasesTaken: number;
  /** Leases stolen from a busier worker. */
  leasesStolen: number;
  /** Leases another worker took (a fenced write was refused). */
  leasesLost: number;
  /** Leases this worker gave up because it could not renew them for a lease duration (DynamoDB unreachable). */
  leasesExpired: number;
  /** Leases released on shutdown. */
  leasesReleased: number;
  /** Shards read to their end. */
  shardsEnded: number;
  /** Owned shards stopped on data loss (gauge). */
  stalledShards: number;
  /**
   * How far behind the stream the worker may be, max over owned shards, in
   * ms (gauge): the time since the shard was last read to its end with every
   * record read processed. Before a shard was first read to its end, the age
   * of its oldest unprocessed record (from `ApproximateCreationDateTime`).
   */
  lagMs: number;
  /** Epoch ms of the last successful GetRecords (0: none yet). */
  lastReadAt: number;
  /** Epoch ms of the last successful commit or checkpoint write (0: none yet). */
  lastCommitAt: number;
}

/** Creates zeroed counters. */
export function createStreamWorkerMetrics(): StreamWorkerMetrics {
  return {
    recordsRead: 0,
    recordsDelivered: 0,
    recordsFiltered: 0,
    frameworkRecords: 0,
    batches: 0,
    commits: 0,
    commitRetries: 0,
    effectsCommitted: 0,
    deferredCheckpoints: 0,
    handlerErrors: 0,
    retries: 0,
    bisects: 0,
    commitSplits: 0,
    deadLetters: 0,
    getRecordsCalls: 0,
    emptyReads: 0,
    throttles: 0,
    expiredIterators: 0,
    dataLossEvents: 0,
    leasesHeld: 0,
    leasesTaken: 0,
    leasesStolen: 0,
    leasesLost: 0,
    leasesExpired: 0,
    leasesReleased: 0,
    shardsEnded: 0,
    stalledShards: 0,
    lagMs: 0,
    lastReadAt: 0,
    lastCommitAt: 0,
  };
}

/**
 * Why a lease was taken: it was `free`; its owner stopped renewing it
 * (`expired`: crashed, hung or cut off); it was this worker's own lease
 * from before (`own`: after a restart with the same id, or after this
 * worker gave it up during an outage); or it was moved from a busier worker
 * to balance the load (`rebalance`).
 */
export type LeaseTakeReason = "free" | "expired" | "own" | "rebalance";

/** Something that happened in a worker, for logs and alerts. */
export type StreamWorkerEvent =
  | {
    readonly kind: "lease_taken";
    readonly shardId: string;
    readonly epoch: number;
    readonly reason: LeaseTakeReason;
    /** The previous owner (`expired`, `rebalance`). */
    readonly from?: string;
  }
  /** Another worker holds the lease now: a fenced write was refused. */
  | {
    readonly kind: "lease_lost";
    readonly shardId: string;
    /** The new owner, when the store said. */
    readonly owner?: string;
  }
  /** This worker could not renew the lease for a lease duration and stopped using it. */
  | {
    readonly kind: "lease_expired";
    readonly shardId: string;
    /** Time since the last successful renewal. */
    readonly unrenewedMs: number;
  }
  | { readonly kind: "lease_released"; readonly shardId: string }
  | {
    readonly kind: "shard_ended";
    readonly shardId: string;
    readonly children: readonly string[];
  }
  /** Trimmed data: records between the position and the trim horizon are gone. Never skipped silently. */
  | {
    readonly kind: "data_loss";
    readonly shardId: string;
    readonly afterSequenceNumber?: string;
    readonly action: "stalled" | "skipped_to_trim_horizon";
    readonly error: Error;
  }
  | {
    readonly kind: "dead_letter";
    readonly shardId: string;
    readonly sequenceNumber: string;
    readonly reason: DeadLetterReason;
    /** The record's key attributes as text (`PK`, `SK`). */
    readonly key: Readonly<Record<string, string>>;
    /** Why, in words. */
    readonly error: Error;
  }
  | {
    readonly kind: "iterator_expired";
    readonly shardId: string;
    readonly afterSequenceNumber?: string;
  }
  | {
    readonly kind: "throttled";
    readonly shardId?: string;
    readonly delayMs: number;
  }
  /** A failure the worker lives through (renewal, discovery, a read); `failure` says how it was classified. */
  | {
    readonly kind: "error";
    readonly shardId?: string;
    readonly error: Error;
    readonly failure?: FailureClass;
  }
  /** Reachability of DynamoDB or DynamoDB Streams (see `DependencyHealth`). */
  | { readonly kind: "dependency"; readonly event: DependencyEvent };

/** One processed batch, as reported by `runStreamWorker()`'s `onBatch`. */
export interface BatchObservation {
  /** The workload (lease group) that processed the batch; none for a single stream worker. */
  readonly workload?: string;
  /** Wall time from the start of processing to its outcome, in ms. */
  readonly durationMs: number;
  /** Records in the batch (framework and filtered records included). */
  readonly records: number;
  /**
   * Time from the creation of the batch's oldest record
   * (`ApproximateCreationDateTime`) to the end of processing, in ms; absent
   * when the stream gave no creation time.
   */
  readonly endToEndLagMs?: number;
}

/** One successful commit (effects and checkpoint) under a lease fence. */
export interface CommitObservation {
  /** The workload that committed; none for a single stream worker. */
  readonly workload?: string;
  /** Latency of the `TransactWriteItems` call, in ms. */
  readonly latencyMs: number;
}

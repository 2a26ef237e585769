/**
 * Counters and events of a stream worker, as plain data. An HTTP or OTel
 * exporter can read the counters object; nothing here does I/O.
 *
 * @module
 */
import type { DeadLetterReason } from "./batch_processor.ts";

/** Counters of one worker. Monotonic except the gauges `leasesHeld`, `stalledShards` and `lagMs`. */
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
  /** Leases lost to another worker. */
  leasesLost: number;
  /** Leases released on shutdown. */
  leasesReleased: number;
  /** Shards read to their end. */
  shardsEnded: number;
  /** Owned shards stopped on data loss (gauge). */
  stalledShards: number;
  /** Age of the newest record read, max over owned shards, in ms (gauge). */
  lagMs: number;
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
    leasesReleased: 0,
    shardsEnded: 0,
    stalledShards: 0,
    lagMs: 0,
  };
}

/** Something that happened in a worker, for logs and alerts. */
export type StreamWorkerEvent =
  | {
    readonly kind: "lease_taken";
    readonly shardId: string;
    readonly epoch: number;
    readonly stolenFrom?: string;
  }
  | { readonly kind: "lease_lost"; readonly shardId: string }
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
  /** A non-fatal failure (renewal, discovery); the worker keeps going. */
  | {
    readonly kind: "error";
    readonly shardId?: string;
    readonly error: Error;
  };

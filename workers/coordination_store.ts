/**
 * The `CoordinationStore` port: one lease + checkpoint item per shard, and
 * the transactional "effects + checkpoint" commit. Two implementations:
 * {@linkcode createMemoryCoordinationStore} here (tests, single process) and
 * `createDynamoDbCoordinationStore` in `coordination_store_dynamodb.ts`.
 *
 * Fencing: every write made on behalf of an owner is conditioned on
 * `owner = :me AND epoch = :epoch`. `epoch` changes whenever ownership
 * changes (take, steal, release), so a stale owner's checkpoint or effects
 * are rejected as a whole. `counter` changes on every renewal; observers
 * judge expiry by how long `counter` has stayed the same on their own clock.
 *
 * Checkpoints only move forward: a write that carries a checkpoint at or
 * behind the stored one does not move it, and a commit whose checkpoint is
 * already stored reports `committed` without applying its effects again.
 * So a commit retried after an answer was lost (a reset connection, a
 * timeout, a 500) is applied exactly once, and a late deferred checkpoint
 * never rewinds one a commit wrote.
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { RESERVED_NAMESPACE } from "../core/keys.ts";
import { compareSequence } from "./_util.ts";
import { StreamWorkerError } from "./errors.ts";

/** Partition-key prefix of every framework item (`_/STREAM#`). Records with it are dropped at stage 0. */
export const COORDINATION_PK_PREFIX = `${RESERVED_NAMESPACE}/STREAM#`;
/** Sort-key prefix of lease items. */
export const LEASE_SK_PREFIX = "#SHARD#";
/** DynamoDB's limit of actions per `TransactWriteItems`. */
export const MAX_TRANSACT_ITEMS = 100;
/** Effects per commit: the limit minus the checkpoint update. */
export const MAX_EFFECTS_PER_COMMIT = MAX_TRANSACT_ITEMS - 1;

/** Where a shard without a checkpoint starts. */
export type LeaseStart = "TRIM_HORIZON" | "LATEST";

/** A lease + checkpoint item. */
export interface LeaseItem {
  /** Shard id. */
  readonly shardId: string;
  /** Parent shard id, when the shard has one. */
  readonly parentShardId?: string;
  /** Current owner (worker id); absent when free. */
  readonly owner?: string;
  /** Ownership generation: bumped on take, steal and release. */
  readonly epoch: number;
  /** Liveness counter: bumped on every renewal and ownership change. */
  readonly counter: number;
  /** Last committed sequence number; absent before the first commit. */
  readonly checkpoint?: string;
  /** Set once the shard was read to its end. */
  readonly ended: boolean;
  /** Where to start without a checkpoint. */
  readonly start: LeaseStart;
}

/** The new lease written by discovery. */
export interface NewLease {
  /** Shard id. */
  readonly shardId: string;
  /** Parent shard id. */
  readonly parentShardId?: string;
  /** Where to start without a checkpoint. */
  readonly start: LeaseStart;
}

/** The identity a fenced write is conditioned on. */
export interface LeaseFence {
  /** Shard id. */
  readonly shardId: string;
  /** Worker id that must still own the lease. */
  readonly owner: string;
  /** Epoch that must still be current. */
  readonly epoch: number;
}

/** Result of a conditional lease write. */
export type LeaseWriteResult =
  | { readonly kind: "ok"; readonly lease: LeaseItem }
  /** The fence failed; `owner` is the lease's current owner when the store knows it. */
  | { readonly kind: "lost"; readonly owner?: string };

/** Result of {@linkcode CoordinationStore.commit}. */
export type CommitResult =
  /** Written; `replayed` when an earlier attempt of the same commit had already landed (nothing applied twice). */
  | { readonly kind: "committed"; readonly replayed?: boolean }
  /** The fence no longer holds: nothing was written; `owner` is the current owner when known. */
  | { readonly kind: "lease_lost"; readonly owner?: string }
  /** An effect's own condition failed or the effects are invalid: nothing was written. */
  | { readonly kind: "rejected"; readonly reason: string };

/** Lease and checkpoint storage for one consumer of one stream. */
export interface CoordinationStore {
  /** Every lease of this consumer (strongly consistent). */
  listLeases(signal?: AbortSignal): Promise<LeaseItem[]>;
  /** Creates a free lease unless one exists; `true` when created. */
  createLease(lease: NewLease, signal?: AbortSignal): Promise<boolean>;
  /** Takes (or steals) a lease if its epoch and counter are still the observed ones. */
  takeLease(
    shardId: string,
    owner: string,
    observed: { readonly epoch: number; readonly counter: number },
    signal?: AbortSignal,
  ): Promise<LeaseWriteResult>;
  /** Bumps the counter (and optionally writes a checkpoint) under the fence. */
  renewLease(
    fence: LeaseFence,
    checkpoint: string | undefined,
    signal?: AbortSignal,
  ): Promise<LeaseWriteResult>;
  /** Frees the lease (optionally writing a final checkpoint) under the fence. */
  releaseLease(
    fence: LeaseFence,
    checkpoint: string | undefined,
    signal?: AbortSignal,
  ): Promise<LeaseWriteResult>;
  /** Marks the shard ended and frees the lease under the fence, so children become eligible. */
  endLease(
    fence: LeaseFence,
    checkpoint: string | undefined,
    signal?: AbortSignal,
  ): Promise<LeaseWriteResult>;
  /**
   * Writes `effects` and the checkpoint atomically under the fence.
   *
   * @throws {RangeError} when `effects` has more than {@linkcode MAX_EFFECTS_PER_COMMIT} items
   * @throws {StreamWorkerError} `COORDINATION_CONFLICT` (retryable) on a transaction conflict
   */
  commit(
    fence: LeaseFence,
    checkpoint: string,
    effects: readonly TransactWriteItem[],
    signal?: AbortSignal,
  ): Promise<CommitResult>;
}

/** One transaction applied by the in-memory store. */
export interface CommittedTransaction {
  /** Shard id. */
  readonly shardId: string;
  /** Checkpoint written. */
  readonly checkpoint: string;
  /** Effects applied together with it. */
  readonly effects: readonly TransactWriteItem[];
}

/** Options of {@linkcode createMemoryCoordinationStore}. */
export interface MemoryCoordinationStoreOptions {
  /** Returns a reason to reject a set of effects (simulates a failed effect condition). @default never rejects */
  readonly rejectEffects?: (
    effects: readonly TransactWriteItem[],
  ) => string | undefined;
}

/** The in-memory store plus the log of applied transactions. */
export interface MemoryCoordinationStore extends CoordinationStore {
  /** Every committed transaction, in order. */
  readonly committed: readonly CommittedTransaction[];
  /** The current lease of a shard. */
  lease(shardId: string): LeaseItem | undefined;
}

/** Whether sequence number `a` is after `b` (`b` absent: always). */
function isAfter(a: string, b: string | undefined): boolean {
  return b === undefined || compareSequence(a, b) > 0;
}

/** Throws when `effects` would not fit in one transaction with the checkpoint. */
export function assertCommitSize(effects: readonly unknown[]): void {
  if (effects.length > MAX_EFFECTS_PER_COMMIT) {
    throw new RangeError(
      `Cannot commit ${effects.length} effects: at most ${MAX_EFFECTS_PER_COMMIT} fit next to the checkpoint`,
    );
  }
}

/**
 * Creates an in-memory {@linkcode CoordinationStore}. Writes are atomic, so
 * it has the same fencing and exactly-once commit semantics as DynamoDB.
 *
 * @example Fencing rejects a stale owner
 * ```ts
 * import assert from "node:assert/strict";
 * import { createMemoryCoordinationStore } from "./coordination_store.ts";
 *
 * const store = createMemoryCoordinationStore();
 * await store.createLease({ shardId: "s1", start: "TRIM_HORIZON" });
 * const a = await store.takeLease("s1", "a", { epoch: 0, counter: 0 });
 * assert.equal(a.kind, "ok");
 * const b = await store.takeLease("s1", "b", { epoch: 1, counter: 1 }); // steal
 * assert.equal(b.kind, "ok");
 * const stale = await store.commit({ shardId: "s1", owner: "a", epoch: 1 }, "100", []);
 * assert.equal(stale.kind, "lease_lost");
 * ```
 */
export function createMemoryCoordinationStore(
  options: MemoryCoordinationStoreOptions = {},
): MemoryCoordinationStore {
  const leases = new Map<string, LeaseItem>();
  const committed: CommittedTransaction[] = [];

  function fenced(fence: LeaseFence): LeaseItem | undefined {
    const lease = leases.get(fence.shardId);
    if (
      lease === undefined || lease.owner !== fence.owner ||
      lease.epoch !== fence.epoch
    ) return undefined;
    return lease;
  }
  function lost(shardId: string): LeaseWriteResult {
    const owner = leases.get(shardId)?.owner;
    return owner === undefined ? { kind: "lost" } : { kind: "lost", owner };
  }
  function withCheckpoint(
    lease: LeaseItem,
    checkpoint: string | undefined,
  ): LeaseItem {
    return checkpoint === undefined || !isAfter(checkpoint, lease.checkpoint)
      ? lease
      : { ...lease, checkpoint };
  }
  function free(lease: LeaseItem): LeaseItem {
    const { owner: _owner, ...rest } = lease;
    return rest;
  }

  return {
    committed,
    lease(shardId: string): LeaseItem | undefined {
      return leases.get(shardId);
    },
    listLeases(signal?: AbortSignal): Promise<LeaseItem[]> {
      signal?.throwIfAborted();
      return Promise.resolve([...leases.values()]);
    },
    createLease(lease: NewLease, signal?: AbortSignal): Promise<boolean> {
      signal?.throwIfAborted();
      if (leases.has(lease.shardId)) return Promise.resolve(false);
      leases.set(lease.shardId, {
        ...lease,
        epoch: 0,
        counter: 0,
        ended: false,
      });
      return Promise.resolve(true);
    },
    takeLease(shardId, owner, observed, signal): Promise<LeaseWriteResult> {
      signal?.throwIfAborted();
      const lease = leases.get(shardId);
      if (
        lease === undefined || lease.ended || lease.epoch !== observed.epoch ||
        lease.counter !== observed.counter
      ) {
        return Promise.resolve(lost(shardId));
      }
      const next: LeaseItem = {
        ...lease,
        owner,
        epoch: lease.epoch + 1,
        counter: lease.counter + 1,
      };
      leases.set(shardId, next);
      return Promise.resolve({ kind: "ok", lease: next });
    },
    renewLease(fence, checkpoint, signal): Promise<LeaseWriteResult> {
      signal?.throwIfAborted();
      const lease = fenced(fence);
      if (lease === undefined) return Promise.resolve(lost(fence.shardId));
      const next = withCheckpoint(
        { ...lease, counter: lease.counter + 1 },
        checkpoint,
      );
      leases.set(fence.shardId, next);
      return Promise.resolve({ kind: "ok", lease: next });
    },
    releaseLease(fence, checkpoint, signal): Promise<LeaseWriteResult> {
      signal?.throwIfAborted();
      const lease = fenced(fence);
      if (lease === undefined) return Promise.resolve(lost(fence.shardId));
      const next = free(
        withCheckpoint({
          ...lease,
          epoch: lease.epoch + 1,
          counter: lease.counter + 1,
        }, checkpoint),
      );
      leases.set(fence.shardId, next);
      return Promise.resolve({ kind: "ok", lease: next });
    },
    endLease(fence, checkpoint, signal): Promise<LeaseWriteResult> {
      signal?.throwIfAborted();
      const lease = fenced(fence);
      if (lease === undefined) return Promise.resolve(lost(fence.shardId));
      const next = free(
        withCheckpoint({
          ...lease,
          ended: true,
          epoch: lease.epoch + 1,
          counter: lease.counter + 1,
        }, checkpoint),
      );
      leases.set(fence.shardId, next);
      return Promise.resolve({ kind: "ok", lease: next });
    },
    commit(fence, checkpoint, effects, signal): Promise<CommitResult> {
      signal?.throwIfAborted();
      assertCommitSize(effects);
      const lease = fenced(fence);
      if (lease === undefined) {
        const owner = leases.get(fence.shardId)?.owner;
        return Promise.resolve(
          owner === undefined
            ? { kind: "lease_lost" }
            : { kind: "lease_lost", owner },
        );
      }
      if (!isAfter(checkpoint, lease.checkpoint)) {
        return Promise.resolve({ kind: "committed", replayed: true });
      }
      const reason = options.rejectEffects?.(effects);
      if (reason !== undefined) {
        return Promise.resolve({ kind: "rejected", reason });
      }
      leases.set(fence.shardId, { ...lease, checkpoint });
      committed.push({
        shardId: fence.shardId,
        checkpoint,
        effects: [...effects],
      });
      return Promise.resolve({ kind: "committed" });
    },
  };
}

/** Re-exported for implementations: the retryable conflict error. */
export function coordinationConflict(
  action: string,
  cause?: unknown,
): StreamWorkerError {
  return new StreamWorkerError(
    "COORDINATION_CONFLICT",
    `Cannot ${action}: transaction conflict`,
    {
      retryable: true,
      ...(cause === undefined ? {} : { cause }),
    },
  );
}

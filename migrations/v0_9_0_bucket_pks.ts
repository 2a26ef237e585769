/**
 * Migration 0.9.0 (spec 06 §5.1): a no-op kept for the version history.
 *
 * 0.9.0 moved bucket state to its own partition per shard,
 * `BUCKET#{id}#{resource}#{shard}` / `#STATE`. Old buckets at
 * `ENTITY#{id}` / `#BUCKET#{resource}` are not converted: clients stop
 * reading them and recreate buckets full on the next acquire (token state
 * resets naturally). The namespace-keys migration later deletes them with
 * the other originals.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { bucketPksMigration } from "./v0_9_0_bucket_pks.ts";
 *
 * assert.equal(bucketPksMigration.version, "0.9.0");
 * assert.equal(bucketPksMigration.reversible, false);
 * ```
 *
 * @module
 */
import {
  EMPTY_REPORT,
  type IrreversibleMigration,
  type MigrationContext,
  type MigrationReport,
} from "./migration.ts";

/** Registry entry for 0.9.0. */
export const bucketPksMigration: IrreversibleMigration = {
  id: "0.9.0-bucket-pks",
  version: "0.9.0",
  description:
    "Per-shard bucket partitions (no data change: pre-0.9 buckets are orphaned and refill on next use)",
  reversible: false,
  apply(ctx: MigrationContext): Promise<MigrationReport> {
    ctx.signal.throwIfAborted();
    return Promise.resolve({
      ...EMPTY_REPORT,
      notes: ["no-op: pre-0.9 bucket items are orphaned, not converted"],
    });
  },
};

/**
 * Migration 0.10.0 (LSIs, spec 06 §5.1): a no-op kept for the version
 * history. Local secondary indexes can only be defined when a table is
 * created; existing tables keep working without them (no code reads them).
 * Recreate the table (backup, deploy, copy) to get them.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { lsisMigration } from "./v0_10_0_lsis.ts";
 *
 * assert.equal(lsisMigration.id, "0.10.0-lsis");
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

/** Registry entry for the 0.10.0 LSI change. */
export const lsisMigration: IrreversibleMigration = {
  id: "0.10.0-lsis",
  version: "0.10.0",
  description:
    "Reserved LSI1-LSI5 (no data change: LSIs exist only on tables created at 0.10.0 or later)",
  reversible: false,
  apply(ctx: MigrationContext): Promise<MigrationReport> {
    ctx.signal.throwIfAborted();
    return Promise.resolve({
      ...EMPTY_REPORT,
      notes: ["no-op: LSIs can only be added by recreating the table"],
    });
  },
};

/**
 * A workload is one job fed by the stream (usage aggregation, audit
 * archiving, ...). Several workloads share one stream worker, so each shard
 * is read once (DynamoDB Streams allows two readers per shard) and every
 * workload's DynamoDB effects are committed in the same transaction as the
 * checkpoint.
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import type {
  HandlerContext,
  RecordFilter,
  RejectedRecord,
  StreamHandler,
} from "./batch_processor.ts";
import type { StreamRecord } from "./stream_source.ts";

/** One job fed by the stream. */
export interface Workload {
  /** Short name (`aggregator`, `archiver`), used in logs and metric labels. */
  readonly name: string;
  /** Whether the workload wants this record; must be cheap and never throw. */
  accepts(record: StreamRecord): boolean;
  /**
   * Handles the accepted records of a batch, in shard order. Effects are
   * committed atomically with the checkpoint; other side effects must be
   * idempotent (the records may be delivered again after a crash). Records
   * it cannot use are returned as `rejected`, with the reason: they become
   * dead letters.
   */
  handle(
    records: readonly StreamRecord[],
    ctx: HandlerContext,
  ): Promise<
    {
      readonly effects?: readonly TransactWriteItem[];
      readonly rejected?: readonly RejectedRecord[];
    } | void
  >;
  /** Counters for `/metrics` (name → value), monotonic. */
  counters(): Readonly<Record<string, number>>;
}

/** The filter and handler of a stream worker running `workloads` together. */
export interface CombinedWorkloads {
  /** Passes a record when some workload accepts it. */
  readonly filter: RecordFilter;
  /** Hands each workload the records it accepts; concatenates the effects and rejections. */
  readonly handler: StreamHandler;
}

/**
 * Combines workloads into one filter and one handler.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { combineWorkloads } from "./workload.ts";
 *
 * const { filter } = combineWorkloads([{
 *   name: "inserts",
 *   accepts: (r) => r.eventName === "INSERT",
 *   handle: () => Promise.resolve(),
 *   counters: () => ({}),
 * }]);
 * assert.equal(filter({ eventName: "REMOVE" } as never), false);
 * ```
 */
export function combineWorkloads(
  workloads: readonly Workload[],
): CombinedWorkloads {
  if (workloads.length === 0) {
    throw new RangeError("Cannot run a stream worker without a workload");
  }
  const names = new Set<string>();
  for (const w of workloads) {
    if (names.has(w.name)) {
      throw new RangeError(`Cannot run workload "${w.name}" twice`);
    }
    names.add(w.name);
  }
  return {
    filter: (record) => workloads.some((w) => w.accepts(record)),
    handler: async (records, ctx) => {
      const effects: TransactWriteItem[] = [];
      const rejected: RejectedRecord[] = [];
      for (const w of workloads) {
        const mine = records.filter((r) => w.accepts(r));
        if (mine.length === 0) continue;
        const out = await w.handle(mine, ctx);
        if (out?.effects) effects.push(...out.effects);
        if (out?.rejected) rejected.push(...out.rejected);
      }
      return rejected.length > 0 ? { effects, rejected } : { effects };
    },
  };
}

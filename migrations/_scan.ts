/**
 * Internal: parallel Scan segments processed page by page, with optional
 * checkpoints (`_/SYSTEM#` / `{prefix}{segment}` holding the
 * `LastEvaluatedKey`) so an interrupted run resumes where it stopped, and
 * progress snapshots after every page. Never holds more than one page per
 * segment in memory.
 *
 * @module
 */
import {
  DeleteItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  type ScanCommandInput,
  type ScanCommandOutput,
} from "@aws-sdk/client-dynamodb";
import { isoSeconds } from "../core/clock.ts";
import { type Item, num } from "../core/expr.ts";
import { pkSystem, RESERVED_NAMESPACE } from "../core/keys.ts";
import {
  approximateItemCount,
  type CapacityBudget,
  capacityOf,
  retryThrottled,
} from "./_dynamo.ts";
import { type MigrationContext, toError, withContext } from "./migration.ts";
import type { ProgressPhase, ProgressSnapshot } from "./progress.ts";

/** The partition of every migration bookkeeping item. */
export const SYSTEM_PK: string = pkSystem(RESERVED_NAMESPACE);

/** A saved position of one scan segment. */
export interface SegmentCheckpoint {
  /** Sort key of the checkpoint item. */
  readonly sk: string;
  /** Segment number. */
  readonly segment: number;
  /** `TotalSegments` the position belongs to. */
  readonly totalSegments: number;
  /** `ExclusiveStartKey` to resume from; `null` at the start or when done. */
  readonly lastKey: Item | null;
  /** Whether the segment is finished. */
  readonly done: boolean;
  /** Items scanned in this segment by all runs so far. */
  readonly scanned: number;
}

/** Every item under `_/SYSTEM#` whose SK starts with `prefix` (all pages, strongly consistent). */
export async function queryReservedPrefix(
  ctx: MigrationContext,
  prefix: string,
): Promise<Item[]> {
  const out: Item[] = [];
  let start: Item | undefined;
  do {
    const res = await ctx.client.send(
      new QueryCommand({
        TableName: ctx.tableName,
        KeyConditionExpression: "PK = :pk AND begins_with(SK, :p)",
        ExpressionAttributeValues: {
          ":pk": { S: SYSTEM_PK },
          ":p": { S: prefix },
        },
        ConsistentRead: true,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    out.push(...(res.Items ?? []));
    start = res.LastEvaluatedKey;
  } while (start);
  return out;
}

/** Loads the checkpoints stored under an SK prefix. */
export async function loadCheckpoints(
  ctx: MigrationContext,
  prefix: string,
): Promise<SegmentCheckpoint[]> {
  return (await queryReservedPrefix(ctx, prefix)).map((it) => {
    const last = it["last_key"];
    return {
      sk: it["SK"]?.S ?? "",
      segment: num(it, "segment") ?? 0,
      totalSegments: num(it, "total_segments") ?? 0,
      lastKey: last && last.M ? last.M : null,
      done: it["done"]?.BOOL === true,
      scanned: num(it, "scanned") ?? 0,
    };
  }).sort((a, b) => a.segment - b.segment);
}

async function saveCheckpoint(
  ctx: MigrationContext,
  cp: SegmentCheckpoint,
): Promise<void> {
  // No abort signal: a checkpoint is written whole or the page is simply redone.
  await retryThrottled(
    withContext(ctx, { signal: new AbortController().signal }),
    () =>
      ctx.client.send(
        new PutItemCommand({
          TableName: ctx.tableName,
          Item: {
            PK: { S: SYSTEM_PK },
            SK: { S: cp.sk },
            segment: { N: String(cp.segment) },
            total_segments: { N: String(cp.totalSegments) },
            last_key: cp.lastKey ? { M: cp.lastKey } : { NULL: true },
            done: { BOOL: cp.done },
            scanned: { N: String(cp.scanned) },
            updated_at: { S: isoSeconds(ctx.clock.now()) },
            GSI4PK: { S: RESERVED_NAMESPACE },
            GSI4SK: { S: SYSTEM_PK },
          },
        }),
      ),
  );
}

/** Deletes every checkpoint under an SK prefix; returns how many. */
export async function clearCheckpoints(
  ctx: MigrationContext,
  prefix: string,
): Promise<number> {
  const cps = await loadCheckpoints(ctx, prefix);
  for (const cp of cps) {
    await ctx.client.send(
      new DeleteItemCommand({
        TableName: ctx.tableName,
        Key: { PK: { S: SYSTEM_PK }, SK: { S: cp.sk } },
      }),
    );
  }
  return cps.length;
}

/** Items of a prefetching segment's first page (see {@linkcode ScanPhaseOptions.prefetch}). */
export const FIRST_PAGE_LIMIT = 64;

/** What one page's processing did. */
export interface PageOutcome {
  /** Items written. */
  readonly written: number;
  /** Writes skipped because the target existed. */
  readonly alreadyPresent: number;
  /** Items deleted. */
  readonly deleted: number;
}

/** Options of {@linkcode runScanPhase}. */
export interface ScanPhaseOptions {
  /** Migration id for progress events. */
  readonly migration: string;
  /** Phase name for progress events. */
  readonly phase: ProgressPhase;
  /** SK prefix of the checkpoints, or `null` for none (read-only phases). */
  readonly checkpointPrefix: string | null;
  /** Strongly consistent scan. @default false */
  readonly consistentRead?: boolean;
  /**
   * Scan a segment's next page while its current page is processed (at
   * most two pages per segment in memory; checkpoints stay in page order).
   * A segment's first page is then at most {@linkcode FIRST_PAGE_LIMIT}
   * items, so its writes start after a short scan and the full-size
   * second page is scanned meanwhile.
   * @default false
   */
  readonly prefetch?: boolean;
  /** Scan read budget. */
  readonly readBudget: CapacityBudget;
  /** Write budget (for progress: consumed WCU). */
  readonly writeBudget: CapacityBudget;
  /** Processes one page. `ctx.signal` there also fires when another segment fails. */
  readonly onPage: (
    items: readonly Item[],
    ctx: MigrationContext,
    segment: number,
  ) => Promise<PageOutcome>;
}

/** Totals of a scan phase (this run). */
export interface ScanPhaseResult {
  /** Segments used. */
  readonly segments: number;
  /** Items scanned by this run. */
  readonly scanned: number;
  /** Items scanned by earlier runs (resumed from checkpoints). */
  readonly baseline: number;
  /** Segments that were already finished. */
  readonly skippedSegments: number;
  /** Items written. */
  readonly written: number;
  /** Writes skipped. */
  readonly alreadyPresent: number;
  /** Items deleted. */
  readonly deleted: number;
}

/**
 * Scans the table in `ctx.options.segments` parallel segments (or the
 * segment count of existing checkpoints), one page at a time per segment.
 * After a page is fully processed its `LastEvaluatedKey` is checkpointed,
 * so an interruption loses at most one page per segment of work (which the
 * resumed run redoes; the writes must therefore be idempotent).
 *
 * @throws the abort reason when `ctx.signal` aborts, or the first failure of any segment
 */
export async function runScanPhase(
  ctx: MigrationContext,
  options: ScanPhaseOptions,
): Promise<ScanPhaseResult> {
  const prefix = options.checkpointPrefix;
  let saved: SegmentCheckpoint[] = [];
  // Both reads at once: the item count only feeds the progress estimate.
  const [, total] = await Promise.all([
    prefix === null
      ? null
      : ctx.options.restart
      ? clearCheckpoints(ctx, prefix)
      : loadCheckpoints(ctx, prefix).then((cps) => {
        saved = cps;
      }),
    approximateItemCount(ctx),
  ]);
  let segments = ctx.options.segments;
  const savedTotal = saved[0]?.totalSegments;
  if (savedTotal !== undefined && savedTotal !== segments) {
    ctx.report({
      kind: "log",
      level: "warn",
      migration: options.migration,
      message:
        `resuming with ${savedTotal} segments (the checkpoints were written with ${savedTotal}, not ${segments})`,
    });
    segments = savedTotal;
  }
  const bySegment = new Map(
    saved.filter((c) => c.totalSegments === segments).map((
      c,
    ) => [c.segment, c]),
  );
  const startedAt = ctx.clock.now();
  let baseline = 0;
  let skippedSegments = 0;
  for (const c of bySegment.values()) {
    baseline += c.scanned;
    if (c.done) skippedSegments++;
  }
  const totals = {
    scanned: 0,
    written: 0,
    alreadyPresent: 0,
    deleted: 0,
    segmentsDone: skippedSegments,
  };
  const snapshot = (): ProgressSnapshot => ({
    phase: options.phase,
    scanned: baseline + totals.scanned,
    baseline,
    total,
    written: totals.written,
    alreadyPresent: totals.alreadyPresent,
    deleted: totals.deleted,
    segmentsDone: totals.segmentsDone,
    segments,
    consumedWcu: options.writeBudget.spent(),
    consumedRcu: options.readBudget.spent(),
    startedAt,
    now: ctx.clock.now(),
  });
  if (bySegment.size > 0) {
    ctx.report({
      kind: "log",
      level: "info",
      migration: options.migration,
      message:
        `resuming: ${skippedSegments}/${segments} segments already done, ${baseline} items scanned before`,
    });
  }

  const inner = new AbortController();
  const signal = AbortSignal.any([ctx.signal, inner.signal]);
  const segCtx = withContext(ctx, { signal });

  async function runSegment(segment: number): Promise<void> {
    const cp = bySegment.get(segment);
    if (cp?.done) return;
    let start: Item | undefined = cp?.lastKey ?? undefined;
    let scannedHere = cp?.scanned ?? 0;
    let firstPage = options.prefetch === true;
    const fetchPage = async (
      from: Item | undefined,
    ): Promise<ScanCommandOutput> => {
      signal.throwIfAborted();
      await ctx.keepAlive();
      const limit = firstPage
        ? Math.min(ctx.options.pageSize, FIRST_PAGE_LIMIT)
        : ctx.options.pageSize;
      firstPage = false;
      const input: ScanCommandInput = {
        TableName: ctx.tableName,
        Segment: segment,
        TotalSegments: segments,
        Limit: limit,
        ConsistentRead: options.consistentRead ?? false,
        ReturnConsumedCapacity: "TOTAL",
        ...(from ? { ExclusiveStartKey: from } : {}),
      };
      // Estimate: a full page of ~1 KB items, eventually consistent.
      const estimate = Math.max(0.5, limit / 8);
      await options.readBudget.take(estimate, signal);
      const page = await retryThrottled(
        segCtx,
        () => ctx.client.send(new ScanCommand(input), { abortSignal: signal }),
      );
      const measured = capacityOf(page.ConsumedCapacity);
      if (measured !== null) options.readBudget.adjust(measured - estimate);
      return page;
    };
    let next: Promise<ScanCommandOutput> = fetchPage(start);
    try {
      await processPages();
    } catch (e) {
      // Stop a prefetched scan and let it settle before the segment fails.
      if (!inner.signal.aborted) inner.abort(toError(e));
      await next.catch(() => {});
      throw e;
    }

    async function processPages(): Promise<void> {
      for (;;) {
        const page = await next;
        if (options.prefetch && page.LastEvaluatedKey !== undefined) {
          next = fetchPage(page.LastEvaluatedKey);
          // Awaited on the next turn; a failure meanwhile must not go unhandled.
          next.catch(() => {});
        } else next = Promise.resolve({ $metadata: {} });
        const items = page.Items ?? [];
        const outcome = await options.onPage(items, segCtx, segment);
        totals.scanned += items.length;
        totals.written += outcome.written;
        totals.alreadyPresent += outcome.alreadyPresent;
        totals.deleted += outcome.deleted;
        scannedHere += items.length;
        start = page.LastEvaluatedKey;
        const done = start === undefined;
        if (prefix !== null) {
          await saveCheckpoint(ctx, {
            sk: `${prefix}${segment}`,
            segment,
            totalSegments: segments,
            lastKey: start ?? null,
            done,
            scanned: scannedHere,
          });
        }
        if (done) totals.segmentsDone++;
        ctx.report({
          kind: "progress",
          migration: options.migration,
          snapshot: snapshot(),
        });
        if (done) return;
        if (!options.prefetch) next = fetchPage(start);
      }
    }
  }

  const runs: Promise<void>[] = [];
  for (let s = 0; s < segments; s++) {
    runs.push(
      runSegment(s).catch((e: unknown) => {
        if (!inner.signal.aborted) inner.abort(toError(e));
        throw e;
      }),
    );
  }
  const settled = await Promise.allSettled(runs);
  if (ctx.signal.aborted) throw ctx.signal.reason;
  if (settled.some((r) => r.status === "rejected")) throw inner.signal.reason;
  return {
    segments,
    scanned: totals.scanned,
    baseline,
    skippedSegments,
    written: totals.written,
    alreadyPresent: totals.alreadyPresent,
    deleted: totals.deleted,
  };
}

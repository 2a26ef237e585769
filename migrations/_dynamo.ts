/**
 * Internal helpers shared by the migrations: a capacity budget fed by
 * `ConsumedCapacity`, a bounded-concurrency loop that honours an abort
 * signal, item-size estimates, batch reads/deletes that retry unprocessed
 * keys, and a retry wrapper for throttling errors. Not part of the API.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { errorName } from "../core/_sdk_errors.ts";
import { exponentialBackoff } from "../core/_backoff.ts";
import {
  type AttributeValue,
  BatchGetItemCommand,
  BatchWriteItemCommand,
  type ConsumedCapacity,
  DescribeTableCommand,
  type WriteRequest,
} from "@aws-sdk/client-dynamodb";
import type { Clock } from "../core/clock.ts";
import type { Item } from "../core/expr.ts";
import type { MigrationContext } from "./migration.ts";

/** A write or read capacity budget: a token bucket refilled at `rate` units per second. */
export interface CapacityBudget {
  /** Waits until `units` may be spent, then spends them (an estimate). */
  take(units: number, signal: AbortSignal): Promise<void>;
  /** Corrects the last estimate with the measured value (`actual - estimate`). */
  adjust(delta: number): void;
  /** Units spent so far (estimates corrected by measurements). */
  spent(): number;
  /**
   * Whether the next call should ask DynamoDB for its `ConsumedCapacity`:
   * always when the budget paces (a rate is set), otherwise the first call
   * and one in {@linkcode UNPACED_MEASURE_EVERY} after it. Asking is not
   * free: DynamoDB Local spends about a fifth more CPU on a conditional
   * PutItem that returns its capacity, which an unpaced copy near the
   * write floor cannot afford on every item.
   */
  shouldMeasure(): boolean;
  /**
   * Settles one call charged with `take(estimate)`: a `measured` value
   * replaces the estimate (and teaches the budget the measured/estimated
   * ratio); without one, the estimate is scaled by the ratio learned so
   * far, so `spent()` stays an unbiased figure when only a sample is
   * measured.
   */
  settle(estimate: number, measured: number | null): void;
}

/** An unpaced budget measures the first call and one in this many after it. */
export const UNPACED_MEASURE_EVERY = 32;

/**
 * Creates a budget of `rate` units per second (burst: one second's worth);
 * `null` = unlimited but still counted. The balance may go negative after an
 * {@linkcode CapacityBudget.adjust}; the next `take` then waits the debt off.
 */
export function createCapacityBudget(
  rate: number | null,
  clock: Clock,
): CapacityBudget {
  let tokens = rate ?? 0;
  let last = clock.now();
  let spent = 0;
  let calls = 0;
  let measuredSum = 0;
  let estimatedSum = 0;
  const charge = (delta: number): void => {
    spent += delta;
    if (rate !== null) tokens -= delta;
  };
  const refill = (): void => {
    if (rate === null) return;
    const now = clock.now();
    if (now > last) {
      tokens = Math.min(rate, tokens + ((now - last) * rate) / 1000);
      last = now;
    }
  };
  return {
    async take(units: number, signal: AbortSignal): Promise<void> {
      spent += units;
      if (rate === null) return;
      // A request larger than the burst is allowed once the bucket is full.
      const need = Math.min(units, rate);
      for (;;) {
        signal.throwIfAborted();
        refill();
        if (tokens >= need) {
          tokens -= units;
          return;
        }
        const waitMs = Math.max(1, Math.ceil(((need - tokens) * 1000) / rate));
        await clock.sleep(waitMs, signal);
      }
    },
    adjust: charge,
    spent: () => spent,
    shouldMeasure(): boolean {
      return rate !== null || calls++ % UNPACED_MEASURE_EVERY === 0;
    },
    settle(estimate: number, measured: number | null): void {
      if (measured !== null) {
        measuredSum += measured;
        estimatedSum += estimate;
        charge(measured - estimate);
      } else if (estimatedSum > 0) {
        charge(estimate * (measuredSum / estimatedSum - 1));
      }
    },
  };
}

/** Sum of `CapacityUnits` of a response (0 when DynamoDB did not report it). */
export function capacityOf(
  c: ConsumedCapacity | ConsumedCapacity[] | undefined,
): number | null {
  if (c === undefined) return null;
  const list = Array.isArray(c) ? c : [c];
  let total = 0;
  let seen = false;
  for (const x of list) {
    if (typeof x.CapacityUnits === "number") {
      total += x.CapacityUnits;
      seen = true;
    }
  }
  return seen ? total : null;
}

/**
 * Runs `fn` over `items` with at most `limit` in flight. Stops starting new
 * work once the signal aborts or one call fails, waits for the calls in
 * flight, then rethrows the first failure (or the abort reason).
 */
export async function forEachConcurrent<T>(
  items: readonly T[],
  limit: number,
  signal: AbortSignal,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  let failure: unknown;
  async function worker(): Promise<void> {
    while (!failed && next < items.length) {
      if (signal.aborted) {
        if (!failed) {
          failed = true;
          failure = signal.reason;
        }
        return;
      }
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (e) {
        if (!failed) {
          failed = true;
          failure = e;
        }
        return;
      }
    }
  }
  const workers: Promise<void>[] = [];
  for (let i = 0; i < Math.min(limit, items.length); i++) {
    workers.push(worker());
  }
  await Promise.all(workers);
  if (failed) throw failure;
}

/**
 * A pool of conditional writes shared by every scan segment: at most
 * `limit()` calls in flight, so a segment waiting on its scan or finishing
 * the tail of a page leaves its slots to the others. The limit adapts to
 * throttling (AIMD): a throttled call halves it (never below 1), and each
 * `limit()` successful calls in a row raise it by one, up to `max`.
 */
export interface WritePool {
  /** Waits for a slot (abort-aware), runs `fn`, frees the slot. */
  run<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T>;
  /** Reports a throttled call: halves the limit. */
  throttled(): void;
  /** The current limit. */
  limit(): number;
  /** Calls in flight now. */
  inFlight(): number;
}

/** Creates a {@linkcode WritePool} of at most `max` calls in flight. */
export function createWritePool(max: number): WritePool {
  let limit = Math.max(1, max);
  let inFlight = 0;
  let streak = 0;
  const waiters: (() => void)[] = [];
  const wake = (): void => {
    while (inFlight < limit && waiters.length > 0) {
      inFlight++;
      (waiters.shift() as () => void)();
    }
  };
  function acquire(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    if (inFlight < limit && waiters.length === 0) {
      inFlight++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const i = waiters.indexOf(grant);
        if (i >= 0) waiters.splice(i, 1);
        reject(signal.reason);
      };
      const grant = (): void => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      waiters.push(grant);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }
  return {
    async run<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
      await acquire(signal);
      try {
        const out = await fn();
        if (++streak >= limit && limit < max) {
          limit++;
          streak = 0;
        }
        return out;
      } finally {
        inFlight--;
        wake();
      }
    },
    throttled(): void {
      limit = Math.max(1, Math.floor(limit / 2));
      streak = 0;
    },
    limit: () => limit,
    inFlight: () => inFlight,
  };
}

/**
 * Runs `fn` over `items` through a shared {@linkcode WritePool}. The first
 * failure (or an abort) stops the items not started yet; the calls in
 * flight settle, then the failure is rethrown.
 */
export async function forEachPooled<T>(
  items: readonly T[],
  pool: WritePool,
  signal: AbortSignal,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const stop = new AbortController();
  const both = AbortSignal.any([signal, stop.signal]);
  let failure: { readonly error: unknown } | null = null;
  await Promise.all(items.map(async (item) => {
    try {
      await pool.run(both, () => fn(item));
    } catch (e) {
      if (failure === null) {
        failure = { error: signal.aborted ? signal.reason : e };
        stop.abort(e);
      }
    }
  }));
  if (failure !== null) throw (failure as { readonly error: unknown }).error;
}

const THROTTLE_ERRORS = new Set([
  "ProvisionedThroughputExceededException",
  "ThrottlingException",
  "RequestLimitExceeded",
  "LimitExceededException",
]);

/** Whether an SDK error is a throttling error worth retrying. */
export function isThrottled(e: unknown): boolean {
  return THROTTLE_ERRORS.has(errorName(e));
}

export { isConditionFailed } from "../core/_sdk_errors.ts";

/** Backoff for attempt `n` (0-based): 50 ms doubling, capped at 5 s. */
export function backoffMs(attempt: number): number {
  return exponentialBackoff(attempt, 50, 5000);
}

/**
 * Calls `op`, retrying throttling errors (after the SDK's own retries) with
 * backoff up to `attempts` times; `onThrottle` hears each one (a
 * {@linkcode WritePool} halves its limit).
 */
export async function retryThrottled<T>(
  ctx: MigrationContext,
  op: () => Promise<T>,
  options: {
    /** Attempts in all. @default 10 */
    readonly attempts?: number;
    /** Hears each throttled attempt. */
    readonly onThrottle?: () => void;
  } = {},
): Promise<T> {
  const attempts = options.attempts ?? 10;
  for (let attempt = 0;; attempt++) {
    ctx.signal.throwIfAborted();
    try {
      return await op();
    } catch (e) {
      if (!isThrottled(e) || attempt + 1 >= attempts) throw e;
      options.onThrottle?.();
      await ctx.clock.sleep(backoffMs(attempt), ctx.signal);
    }
  }
}

/** `PK\0SK` of an item or key. */
export function keyOf(item: Item): string {
  return `${item["PK"]?.S ?? ""}\u0000${item["SK"]?.S ?? ""}`;
}

/**
 * Reads items by key (strongly consistent BatchGetItem, 100 per call,
 * unprocessed keys retried with backoff). Returns them by `keyOf`.
 */
export async function batchGetItems(
  ctx: MigrationContext,
  keys: readonly Item[],
  budget: CapacityBudget,
  options: { readonly keysOnly?: boolean } = {},
): Promise<Map<string, Item>> {
  const found = new Map<string, Item>();
  for (let i = 0; i < keys.length; i += 100) {
    let pending: Record<string, AttributeValue>[] = keys.slice(i, i + 100)
      .map((k) => ({ PK: k["PK"] ?? { S: "" }, SK: k["SK"] ?? { S: "" } }));
    for (let attempt = 0; pending.length > 0; attempt++) {
      ctx.signal.throwIfAborted();
      const estimate = pending.length;
      await budget.take(estimate, ctx.signal);
      const batch = pending;
      const res = await retryThrottled(ctx, () =>
        ctx.client.send(
          new BatchGetItemCommand({
            RequestItems: {
              [ctx.tableName]: {
                Keys: batch,
                ConsistentRead: true,
                ...(options.keysOnly ? { ProjectionExpression: "PK, SK" } : {}),
              },
            },
            ReturnConsumedCapacity: "TOTAL",
          }),
          { abortSignal: ctx.signal },
        ));
      const measured = capacityOf(res.ConsumedCapacity);
      if (measured !== null) budget.adjust(measured - estimate);
      for (const it of res.Responses?.[ctx.tableName] ?? []) {
        found.set(keyOf(it), it);
      }
      pending = res.UnprocessedKeys?.[ctx.tableName]?.Keys ?? [];
      if (pending.length > 0) {
        await ctx.clock.sleep(backoffMs(attempt), ctx.signal);
      }
    }
  }
  return found;
}

/**
 * Deletes keys with BatchWriteItem (25 per call), retrying
 * `UnprocessedItems` with backoff until none are left. Returns the count.
 */
export async function deleteKeys(
  ctx: MigrationContext,
  keys: readonly Item[],
  budget: CapacityBudget,
  estimateWcu: (key: Item) => number = () => 1,
): Promise<number> {
  for (let i = 0; i < keys.length; i += 25) {
    let pending: WriteRequest[] = keys.slice(i, i + 25).map((k) => ({
      DeleteRequest: {
        Key: { PK: k["PK"] ?? { S: "" }, SK: k["SK"] ?? { S: "" } },
      },
    }));
    for (let attempt = 0; pending.length > 0; attempt++) {
      ctx.signal.throwIfAborted();
      const estimate = pending.reduce(
        (sum, r) => sum + estimateWcu(r.DeleteRequest?.Key ?? {}),
        0,
      );
      await budget.take(estimate, ctx.signal);
      const batch = pending;
      const res = await retryThrottled(ctx, () =>
        ctx.client.send(
          new BatchWriteItemCommand({
            RequestItems: { [ctx.tableName]: batch },
            ReturnConsumedCapacity: "TOTAL",
          }),
          { abortSignal: ctx.signal },
        ));
      const measured = capacityOf(res.ConsumedCapacity);
      if (measured !== null) budget.adjust(measured - estimate);
      pending = res.UnprocessedItems?.[ctx.tableName] ?? [];
      if (pending.length > 0) {
        await ctx.clock.sleep(backoffMs(attempt), ctx.signal);
      }
    }
  }
  return keys.length;
}

/** UTF-8 bytes of `s` (a lone surrogate counts as U+FFFD, 3 bytes), without encoding it. */
export function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}

function valueSize(v: AttributeValue): number {
  if (v.S !== undefined) return utf8Length(v.S);
  if (v.N !== undefined) {
    const digits = v.N.replace(/^-/, "").replace(".", "").replace(
      /^0+/,
      "",
    ).length;
    return Math.ceil(digits / 2) + 1;
  }
  if (v.B !== undefined) return v.B.length;
  if (v.BOOL !== undefined || v.NULL !== undefined) return 1;
  if (v.SS !== undefined) return v.SS.reduce((a, s) => a + utf8Length(s), 0);
  if (v.NS !== undefined) {
    return v.NS.reduce((a, n) => a + valueSize({ N: n }), 0);
  }
  if (v.BS !== undefined) return v.BS.reduce((a, b) => a + b.length, 0);
  if (v.L !== undefined) {
    return 3 + v.L.reduce((a, x) => a + 1 + valueSize(x), 0);
  }
  if (v.M !== undefined) {
    return 3 +
      Object.entries(v.M).reduce(
        (a, [k, x]) => a + 1 + utf8Length(k) + valueSize(x),
        0,
      );
  }
  return 1;
}

/** DynamoDB's item size: attribute names plus values, in bytes (an estimate for numbers). */
export function itemSizeBytes(item: Item): number {
  let size = 0;
  for (const [name, value] of Object.entries(item)) {
    size += utf8Length(name) + valueSize(value);
  }
  return size;
}

/** The table's approximate item count (refreshed by DynamoDB every ~6 hours), or `null`. */
export async function approximateItemCount(
  ctx: MigrationContext,
): Promise<number | null> {
  try {
    const d = await ctx.client.send(
      new DescribeTableCommand({ TableName: ctx.tableName }),
      { abortSignal: ctx.signal },
    );
    return typeof d.Table?.ItemCount === "number" ? d.Table.ItemCount : null;
  } catch (e) {
    if (ctx.signal.aborted) throw e;
    return null;
  }
}

/**
 * Whether the table lacks GSI4, which the 0.10 layout needs (namespace
 * discovery and purge). `false` when DescribeTable cannot say (no table
 * description, or the call failed for another reason than an abort).
 */
export async function lacksGsi4(ctx: MigrationContext): Promise<boolean> {
  try {
    const d = await ctx.client.send(
      new DescribeTableCommand({ TableName: ctx.tableName }),
      { abortSignal: ctx.signal },
    );
    if (!d.Table) return false;
    return !(d.Table.GlobalSecondaryIndexes ?? []).some((i) =>
      i.IndexName === "GSI4"
    );
  } catch (e) {
    if (ctx.signal.aborted) throw e;
    return false;
  }
}

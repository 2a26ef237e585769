/**
 * The options of `RateLimiter` (re-exported by `limiter.ts`): ports,
 * policies and the limiter-wide defaults of the optional behaviours (lease
 * deadline, local fallback, concurrency slots, local reserve), with the
 * default bucket store and error report.
 *
 * @module
 */
import type { BucketStore } from "./acquire/bucket_store.ts";
import type { SlotStoreOptions } from "./acquire/concurrency.ts";
import type { LeaseDeadlineOptions } from "./acquire/lease_deadline.ts";
import type { LimiterSource } from "./acquire/limiter_source.ts";
import type { LocalReserveOptions } from "./acquire/reserve_config.ts";
import type { StrandedCharge } from "./lease.ts";
import type { LocalFallbackLimiterOptions } from "./local_fallback.ts";
import { Repository } from "./repository.ts";
import { DynamoBucketStore } from "./store/dynamo_bucket_store.ts";
import { tableOf } from "./store/table.ts";
import type { TelemetryOptions } from "./telemetry.ts";

/** Options of {@linkcode RateLimiter}. */
export interface RateLimiterOptions
  extends LeaseDeadlineOptions, LocalFallbackLimiterOptions, SlotStoreOptions {
  /** Try the one-write fast path first. @default true */
  readonly speculativeWrites?: boolean;
  /** Called with errors that are handled without failing the call (rollback failures, allow-mode outages). */
  readonly onError?: (error: unknown, context: string) => void;
  /** Random numbers in [0, 1) for shard choice and jitter. @default Math.random */
  readonly random?: () => number;
  /**
   * Remember refusals in memory: until the Retry-After passes, a request for
   * the same entity and resource asking at least as much is refused without
   * a DynamoDB call. It never admits, so it cannot over-admit; tokens given
   * back meanwhile by other processes are seen after the wait. 0 disables.
   * @default 10000 (entries)
   */
  readonly refusalCacheSize?: number;
  /**
   * Deadline in milliseconds of each call that reaches DynamoDB (acquire,
   * available, timeUntilAvailable, lease consume/commit/rollback), retries
   * included; a call can shorten it with its own `timeoutMs` or `signal`.
   * When it passes, `onUnavailable` applies. @default 3000
   */
  readonly timeoutMs?: number;
  /**
   * Called with each charge that may stand in a bucket without a lease to
   * account for it (a write that failed in a way that may have applied it,
   * a give-back that could not be placed): under-admission, never
   * over-admission. @default reports to `onError` with context "stranded"
   */
  readonly onStranded?: (charge: StrandedCharge) => void;
  /**
   * OpenTelemetry providers for decision metrics and acquire spans.
   * @default the global providers (no-ops unless an SDK is installed before the limiter is created)
   */
  readonly telemetry?: TelemetryOptions;
  /**
   * Where bucket items live. @default the repository's DynamoDB table;
   * tests pass a `MemoryBucketStore` (from the `./testing` export) to
   * inject faults at the store, configuration still coming from the
   * repository
   */
  readonly bucketStore?: BucketStore;
  /**
   * Local reserve (opt-in): take slices of hot buckets in one conditional
   * write each and admit later acquires from memory; unused tokens go back
   * when a slice expires and at `RateLimiter.close()`. Never
   * admits more than the bucket allowed; see the README section "Local
   * reserve" for the bounds. Off on AWS Lambda unless
   * `allowShortLived` is set. `true` takes every default.
   * @default false
   */
  readonly localReserve?: boolean | LocalReserveOptions;
  /**
   * Coalesce concurrent acquires of this limiter on the same bucket item:
   * while a write to the item is in flight, later acquires queue, and the
   * next write charges their sum under one condition; each request is
   * still admitted or refused on its own (all or nothing across its limits
   * and its cascade parent, never over-admitting, a refusal decided on
   * fresh state with its own Retry-After). An acquire on an idle item is
   * written at once. `false` is strict mode: every decision is its own
   * write. See the README section "Coalescing". @default true
   */
  readonly coalesceWrites?: boolean;
}

/** The default bucket store: the repository's table (a memory source must pass one). */
export function dynamoStore(source: Repository | LimiterSource): BucketStore {
  if (!(source instanceof Repository)) {
    throw new TypeError(
      "A RateLimiter on a memory source needs options.bucketStore (a MemoryBucketStore)",
    );
  }
  return new DynamoBucketStore(tableOf(source));
}

/**
 * The user's `onError` (else {@linkcode reportToConsole}) made safe to call
 * from the library's catch blocks and background settlements: when it
 * throws, the console gets both errors instead of the library's caller.
 */
export function contained(
  onError: ((error: unknown, context: string) => void) | undefined,
): (error: unknown, context: string) => void {
  if (!onError) return reportToConsole;
  return (error, context) => {
    try {
      onError(error, context);
    } catch (thrown) {
      reportToConsole(error, context);
      reportToConsole(thrown, "onError threw");
    }
  };
}

/**
 * The `onStranded` the library calls: the user's, contained (a throw goes
 * to `onError`, context `"onStranded"`), else a report to `onError`
 * (context `"stranded"`). It is called from catch blocks and background
 * settlements, so it never throws.
 */
export function strandedReporter(
  onStranded: ((charge: StrandedCharge) => void) | undefined,
  onError: (error: unknown, context: string) => void,
): (charge: StrandedCharge) => void {
  if (!onStranded) {
    return (c) =>
      onError(
        new Error(
          `Stranded ${c.kind} on ${c.entityId}/${c.resource}: ${
            JSON.stringify(c.amounts)
          }`,
          { cause: c.cause },
        ),
        "stranded",
      );
  }
  return (c) => {
    try {
      onStranded(c);
    } catch (e) {
      onError(e, "onStranded");
    }
  };
}

/** The default `onError`: a warning on the console (a rollback that failed must not go unseen). */
export function reportToConsole(error: unknown, context: string): void {
  // deno-lint-ignore no-console -- the library's only default report; pass onError to route it
  console.warn(
    `zae-limiter: ${context}: ${
      error instanceof Error ? error.message : String(error)
    }`,
  );
}

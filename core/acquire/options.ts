/**
 * The options of an acquire and of the capacity queries of
 * `RateLimiter` (re-exported by `limiter.ts`): what to acquire,
 * the per-call overrides, and the optional behaviours (lease deadline,
 * partial grant, waiting).
 *
 * @module
 */
import type { ConcurrencyLimit } from "../concurrency_limit.ts";
import type { Limit } from "../limit.ts";
import type { OnUnavailable } from "../models.ts";
import type { ShadowSelection } from "./shadow.ts";
import type { WaitOptions } from "./wait.ts";

/** What to acquire. */
export interface AcquireOptions {
  /** Entity (API key, user, project…). */
  readonly entityId: string;
  /** Resource (`openai/gpt-4`). */
  readonly resource: string;
  /** Whole tokens to take per limit name, e.g. `{ rpm: 1, tpm: 500 }`. */
  readonly consume: Readonly<Record<string, number>>;
  /** Limits to use instead of the stored ones (applies to the parent too). */
  readonly limits?: readonly Limit[];
  /**
   * Behaviour when DynamoDB fails; overrides the stored system setting.
   * `"local"` (needs the limiter's `localFallback`): admit from the
   * in-process fallback buckets.
   */
  readonly onUnavailable?: OnUnavailable | "local";
  /** Aborts the acquire (then `onUnavailable` applies). */
  readonly signal?: AbortSignal;
  /**
   * Deadline of the admission in milliseconds (the callback body is not
   * included). With `wait`, it bounds each try, not the wait: see `wait`.
   */
  readonly timeoutMs?: number;
  /**
   * Deadline of the lease, in milliseconds from the start of this acquire
   * (with `wait`, from the start of the try that admitted it):
   * after it the lease refuses `adjust`, `release`, `consume` and `commit`
   * with `LeaseDeadlineExceeded`, a rollback is a no-op, and what it
   * charged (the estimate) stays charged, nothing is given back.
   * @default the limiter's `maxHoldMs` (none)
   */
  readonly maxHoldMs?: number;
  /**
   * Shadow mode for this call: these limit names (or `true`: every name in
   * `consume`) are decided and reported in `lease.shadow` but never refuse
   * and are not charged; the other limits keep all or nothing. Limits stored
   * with the shadow flag are shadowed on every call. @default []
   */
  readonly shadow?: ShadowSelection;
  /**
   * In-flight limits (`Limit.concurrent(...)`) of this entity and resource:
   * the acquire takes a slot of each (all or nothing with the rate limits)
   * and the lease frees it when it ends; its deadline is at most the
   * shortest `leaseMs`. Not stored; not applied to a cascade parent. See
   * `concurrency.ts` for the DynamoDB calls it adds. @default []
   */
  readonly concurrency?: readonly ConcurrencyLimit[];
  /**
   * Partial grant: the least whole tokens to grant per limit name of
   * `consume` (each ≤ its ask). The most that fits between `min` and the
   * ask is granted, all or nothing across the limits and the cascade
   * parent, and `lease.granted` says how much (clamp `max_tokens` to it).
   * A refusal means even `min` did not fit. See `acquire/partial.ts`.
   * @default undefined (the whole ask or nothing)
   */
  readonly min?: Readonly<Record<string, number>>;
  /**
   * Wait up to `wait.maxMs` for capacity instead of refusing: a refused try
   * sleeps its Retry-After (with jitter) and tries again. A request that
   * can never fit is refused at once; `signal` cancels the wait (rejecting
   * with its reason, nothing charged). `timeoutMs` bounds each try, so the
   * call takes at most `maxMs` plus one `timeoutMs`. See `acquire/wait.ts`.
   * @default undefined (no waiting)
   */
  readonly wait?: WaitOptions;
}

/** Options of {@linkcode RateLimiter.available} and {@linkcode RateLimiter.timeUntilAvailable}. */
export interface CapacityOptions {
  /** Entity. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Limits to use instead of the stored ones. */
  readonly limits?: readonly Limit[];
  /** Aborts the call. */
  readonly signal?: AbortSignal;
  /** Deadline in milliseconds. */
  readonly timeoutMs?: number;
}

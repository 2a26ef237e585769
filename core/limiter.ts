/**
 * The rate limiter: admission decisions over one DynamoDB round trip on the
 * hot path (spec 02 §3-§6), exact against the ideal token bucket (see
 * {@linkcode BucketWriter} for how the stored pair stays exact).
 *
 * Paths:
 * - **fast** (the bucket's state is known from an earlier answer): one
 *   conditional write per bucket item (the entity's and, with cascade, its
 *   parent's, sent together): a plain ADD under the saturation ceiling, or a
 *   refill under the `rf` lock. A failed condition answers with the item, so
 *   a lost race costs one more write and a refusal is decided on fresh data.
 * - **slow** (cold, or the cascade flags are due for a re-read): one
 *   consistent `BatchGetItem`, a decision with refill, and one write under
 *   the `rf` lock (a transaction when a parent is charged too).
 *
 * Every call runs under a deadline; a request larger than a capacity is
 * refused before any write.
 *
 * @module
 */
import type { BucketStore, BucketWrite } from "./acquire/bucket_store.ts";
import {
  type BucketParams,
  paramsOf,
  planRefill,
  refill,
  retryAfterSeconds,
  sameParams,
  settleParams,
  shardParams,
  wholeTokens,
} from "./bucket.ts";
import {
  type BucketItem,
  type BucketRef,
  type PlannedLimit,
  WCU_PER_WRITE,
  wcuPlanned,
} from "./bucket_item.ts";
import {
  BucketWriter,
  type ChargeOutcome,
  type LimitSpec,
  type Target,
} from "./bucket_writer.ts";
import type { Clock } from "./clock.ts";
import { DynamoBucketStore } from "./store/dynamo_bucket_store.ts";
import {
  CommitFailedError,
  RateLimiterUnavailable,
  RateLimitExceeded,
  RequestExceedsCapacity,
  ValidationError,
  ZAELimiterError,
} from "./errors.ts";
import {
  Lease,
  type LeaseEntry,
  type LeaseOptions,
  type StrandedCharge,
} from "./lease.ts";
import { type Limit, validateLimitList } from "./limit.ts";
import type { ConfigSource, LimitStatus, OnUnavailable } from "./models.ts";
import type { Repository } from "./repository.ts";
import type {
  LimiterSource,
  ResolvedLimits,
} from "./acquire/limiter_source.ts";
import {
  LimiterTelemetry,
  markPath,
  type TelemetryOptions,
} from "./telemetry.ts";
import {
  certainlyNotApplied,
  checkDeadline,
  withDeadline,
  withGrace,
} from "./transport.ts";
import { errorName, isTransactionConflictOnly } from "./_sdk_errors.ts";
import {
  validateAmount,
  validateAmounts,
  validateConfiguredNames,
  validateIdentifier,
  validateLimitName,
  validateOptions,
  validateResource,
} from "./validation.ts";

/** Options of {@linkcode RateLimiter}. */
export interface RateLimiterOptions {
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
}

interface Refusal {
  readonly until: number;
  readonly amounts: ReadonlyMap<string, bigint>;
  readonly error: RateLimitExceeded;
}

function dynamoStore(source: Repository | LimiterSource): BucketStore {
  if (!("send" in source)) {
    throw new TypeError(
      "A RateLimiter on a memory source needs options.bucketStore (a MemoryBucketStore)",
    );
  }
  const repo = source as Repository;
  return new DynamoBucketStore(repo.tableName, (c: unknown) => repo.send(c));
}

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
  /** Behaviour when DynamoDB fails; overrides the stored system setting. */
  readonly onUnavailable?: OnUnavailable;
  /** Aborts the acquire (then `onUnavailable` applies). */
  readonly signal?: AbortSignal;
  /** Deadline of the admission in milliseconds (the callback body is not included). */
  readonly timeoutMs?: number;
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

type Side = {
  readonly entityId: string;
  readonly resolved: ResolvedLimits;
  /** Millitokens to take per limit name (only names this side has). */
  readonly charge: Map<string, bigint>;
  readonly shard: number;
  readonly shards: number;
};

type Plan = {
  readonly side: Side;
  readonly ref: BucketRef;
  readonly item: BucketItem | null;
  readonly limits: PlannedLimit[];
  readonly statuses: LimitStatus[];
  readonly wcuShort: boolean;
  /** The `rf` the write stores: the read `rf` plus the refill span claimed (now for a new item). */
  readonly rfAfter: bigint;
  readonly cascade: boolean;
  readonly parentId: string | null;
};

const MAX_SLOW_ATTEMPTS = 4;
const MAX_CONFLICT_RETRIES = 16;
/** Time a compensating give-back may take after the caller's deadline passed. */
const COMPENSATION_GRACE_MS = 1000;
/** Time to read the stored `on_unavailable` once the deadline passed (usually cached: no I/O). */
const ON_UNAVAILABLE_GRACE_MS = 250;

/** The default `onError`: a warning on the console (a rollback that failed must not go unseen). */
function reportToConsole(error: unknown, context: string): void {
  // deno-lint-ignore no-console -- the library's only default report; pass onError to route it
  console.warn(
    `zae-limiter: ${context}: ${
      error instanceof Error ? error.message : String(error)
    }`,
  );
}

/**
 * Admits or refuses requests against stored or given limits.
 *
 * @example Callback-scoped lease (commit on success, rollback on error)
 * ```ts ignore
 * const limiter = new RateLimiter(await Repository.open({ client }));
 * const answer = await limiter.acquire(
 *   { entityId: "key-1", resource: "openai/gpt-4", consume: { rpm: 1, tpm: 500 } },
 *   async (lease) => {
 *     const r = await callModel();
 *     lease.adjust({ tpm: r.usage.total_tokens - 500 });
 *     return r;
 *   },
 * );
 * ```
 */
export class RateLimiter {
  readonly #repo: LimiterSource;
  readonly #speculative: boolean;
  readonly #onError: (error: unknown, context: string) => void;
  readonly #random: () => number;
  readonly #clock: Clock;
  readonly #refusals = new Map<string, Refusal>();
  readonly #refusalCacheSize: number;
  readonly #writer: BucketWriter;
  readonly #store: BucketStore;
  readonly #timeoutMs: number;
  readonly #onStranded: (charge: StrandedCharge) => void;
  readonly #leaseOptions: LeaseOptions;
  readonly #telemetry: LimiterTelemetry;
  readonly #specCache = new WeakMap<
    readonly Limit[],
    Map<number, readonly LimitSpec[]>
  >();

  /**
   * Creates a limiter over a repository (or, for tests, a
   * `MemoryLimiterSource` with a `MemoryBucketStore` as `bucketStore`: see
   * the `./testing` export).
   */
  constructor(
    repository: Repository | LimiterSource,
    options: RateLimiterOptions = {},
  ) {
    this.#repo = repository;
    this.#speculative = options.speculativeWrites ?? true;
    this.#onError = options.onError ?? reportToConsole;
    this.#random = options.random ?? Math.random;
    this.#clock = repository.clock;
    this.#refusalCacheSize = options.refusalCacheSize ?? 10_000;
    this.#store = options.bucketStore ?? dynamoStore(repository);
    this.#writer = new BucketWriter(this.#store, this.#clock, this.#random);
    this.#timeoutMs = options.timeoutMs ?? 3000;
    this.#onStranded = options.onStranded ??
      ((c) =>
        this.#onError(
          new Error(
            `Stranded ${c.kind} on ${c.entityId}/${c.resource}: ${
              JSON.stringify(c.amounts)
            }`,
            { cause: c.cause },
          ),
          "stranded",
        ));
    this.#telemetry = new LimiterTelemetry(
      repository.namespaceName,
      options.telemetry,
    );
    this.#leaseOptions = {
      timeoutMs: this.#timeoutMs,
      onStranded: this.#onStranded,
      stackName: repository.tableName,
    };
  }

  /** The repository (a limiter built on a `MemoryLimiterSource` has none: it throws). */
  get repository(): Repository {
    if (!("send" in this.#repo)) {
      throw new TypeError(
        "This limiter runs on a memory source, not on a Repository",
      );
    }
    return this.#repo as Repository;
  }

  /**
   * Acquires tokens. Without a callback, returns an open lease for
   * `await using` (call `lease.commit()` on success; disposal rolls back
   * otherwise). With a callback, runs it with the lease, commits when it
   * returns, rolls back and rethrows when it throws, and returns its value.
   *
   * @throws {RateLimitExceeded} a limit refused; nothing was consumed
   * @throws {ValidationError} bad input or no limits configured; nothing was written
   * @throws {RateLimiterUnavailable} DynamoDB failed and `onUnavailable` is `block`
   */
  acquire(options: AcquireOptions): Promise<Lease>;
  /**
   * Acquires tokens, runs `body` with the lease, commits when it returns and
   * rolls back when it throws; resolves to the body's value.
   *
   * @throws {RateLimitExceeded} a limit refused; nothing was consumed
   * @throws {ValidationError} bad input or no limits configured; nothing was written
   * @throws {RateLimiterUnavailable} DynamoDB failed and `onUnavailable` is `block`
   */
  acquire<T>(
    options: AcquireOptions,
    body: (lease: Lease) => Promise<T> | T,
  ): Promise<T>;
  async acquire<T>(
    options: AcquireOptions,
    body?: (lease: Lease) => Promise<T> | T,
  ): Promise<Lease | T> {
    const lease = this.#telemetry.on
      ? await this.#telemetry.observe(options, () => this.#admit(options))
      : await this.#admit(options);
    if (!body) return lease;
    let result: T;
    try {
      result = await body(lease);
    } catch (e) {
      await lease.rollback().catch((err) => this.#onError(err, "rollback"));
      throw e;
    }
    try {
      await lease.commit();
    } catch (e) {
      if (
        options.onUnavailable === "allow" ||
        this.#repo.cachedOnUnavailable() === "allow"
      ) {
        this.#onError(e, "commit");
      } else {
        // The body's work was paid for: hand it back with the open lease.
        throw new CommitFailedError(result, lease, {
          cause: e instanceof RateLimiterUnavailable ? e.cause : e,
          stackName: this.#repo.tableName,
          entityId: lease.entityId,
          resource: lease.resource,
        });
      }
    }
    return result;
  }

  #unavailable(
    e: unknown,
    o: { entityId: string; resource: string },
  ): RateLimiterUnavailable {
    return new RateLimiterUnavailable(
      `DynamoDB call failed: ${e instanceof Error ? e.message : String(e)}`,
      {
        cause: e,
        stackName: this.#repo.tableName,
        entityId: o.entityId,
        resource: o.resource,
      },
    );
  }

  async #admit(o: AcquireOptions): Promise<Lease> {
    validateOptions(o, "options", "{ entityId, resource, consume }");
    const entityId = validateIdentifier(o.entityId);
    const resource = validateResource(o.resource);
    if (
      o.onUnavailable !== undefined && o.onUnavailable !== "allow" &&
      o.onUnavailable !== "block"
    ) {
      throw new ValidationError(
        "on_unavailable",
        o.onUnavailable,
        "must be 'allow' or 'block'",
      );
    }
    if (!o.consume || typeof o.consume !== "object") {
      throw new ValidationError(
        "consume",
        o.consume,
        "must map limit names to whole token amounts",
      );
    }
    const consume = new Map<string, bigint>();
    for (const [name, amount] of Object.entries(o.consume)) {
      validateLimitName(name, "consume");
      validateAmount(amount, `consume.${name}`);
      consume.set(name, BigInt(amount) * 1000n);
    }
    if (o.limits !== undefined) {
      validateLimitList(o.limits);
      if (o.limits.length === 0) {
        throw new ValidationError(
          "limits",
          "[]",
          "give at least one limit or omit it",
        );
      }
    }
    try {
      return await withDeadline(
        o,
        this.#timeoutMs,
        () => this.#decide(entityId, resource, consume, o.limits ?? null),
      );
    } catch (e) {
      if (e instanceof ZAELimiterError) throw e;
      const mode = o.onUnavailable ?? await withGrace(
        ON_UNAVAILABLE_GRACE_MS,
        () => this.#repo.resolveOnUnavailable(),
      ).catch(() => this.#repo.cachedOnUnavailable() ?? "block");
      if (mode === "allow") {
        this.#onError(e, "acquire");
        return new Lease(
          null,
          entityId,
          resource,
          [],
          true,
          this.#leaseOptions,
        );
      }
      throw this.#unavailable(e, { entityId, resource });
    }
  }

  async #resolve(
    entityId: string,
    resource: string,
    override: readonly Limit[] | null,
  ): Promise<ResolvedLimits> {
    if (override) return { limits: override, source: "override" };
    const r = await this.#repo.resolveLimits(entityId, resource);
    if (!r) {
      throw new ValidationError(
        "limits",
        `entity=${entityId}, resource=${resource}`,
        "no limits are configured at entity, resource or system level; store some (setLimits, " +
          "setResourceDefaults, setSystemDefaults) or pass limits",
      );
    }
    return r;
  }

  #side(
    entityId: string,
    resolved: ResolvedLimits,
    consume: Map<string, bigint>,
    shards: number,
    strict: boolean,
  ): Side {
    const names = new Set(resolved.limits.map((l) => l.name));
    const charge = new Map<string, bigint>();
    for (const [name, amount] of consume) {
      if (!names.has(name)) {
        if (strict) {
          throw new ValidationError(
            "consume",
            name,
            `no limit "${name}" is configured for entity "${entityId}" (configured: ${
              [...names].join(", ")
            })`,
          );
        }
        continue;
      }
      if (amount > 0n) charge.set(name, amount);
    }
    const shard = shards > 1 ? Math.floor(this.#random() * shards) : 0;
    return { entityId, resolved, charge, shard, shards };
  }

  async #decide(
    entityId: string,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease> {
    const key = `${this.#repo.namespaceId}\u0000${entityId}\u0000${resource}`;
    // A request that can never fit is told so even while refusals are cached.
    const resolved = await this.#resolve(entityId, resource, override);
    const info = this.#repo.entityInfo(entityId);
    const child = this.#side(
      entityId,
      resolved,
      consume,
      info?.shards.get(resource) ?? 1,
      true,
    );
    this.#checkSatisfiable(child, resource);
    if (override === null) this.#checkRefusal(key, consume);
    try {
      return await this.#decideRemote(child, resource, consume, override);
    } catch (e) {
      if (e instanceof RateLimitExceeded && override === null) {
        this.#rememberRefusal(key, consume, e);
      }
      throw e;
    }
  }

  #checkRefusal(key: string, consume: Map<string, bigint>): void {
    const r = this.#refusals.get(key);
    if (!r) return;
    const now = this.#clock.now();
    if (now >= r.until) {
      this.#refusals.delete(key);
      return;
    }
    for (const [name, amount] of r.amounts) {
      if ((consume.get(name) ?? 0n) < amount) return; // a smaller request may fit: ask DynamoDB
    }
    const wait = (r.until - now) / 1000;
    throw new RateLimitExceeded(
      r.error.statuses.map((s) =>
        s.exceeded
          ? { ...s, retryAfterSeconds: Math.min(s.retryAfterSeconds, wait) }
          : s
      ),
    );
  }

  #rememberRefusal(
    key: string,
    consume: Map<string, bigint>,
    e: RateLimitExceeded,
  ): void {
    if (this.#refusalCacheSize <= 0) return;
    const amounts = new Map<string, bigint>();
    for (const v of e.violations) {
      const a = consume.get(v.limitName);
      if (a !== undefined && a > 0n) amounts.set(v.limitName, a);
    }
    if (amounts.size === 0) return;
    if (
      !this.#refusals.has(key) && this.#refusals.size >= this.#refusalCacheSize
    ) {
      const oldest = this.#refusals.keys().next();
      if (!oldest.done) this.#refusals.delete(oldest.value);
    }
    const wait = Math.min(...e.violations.map((v) => v.retryAfterSeconds));
    this.#refusals.set(key, {
      until: this.#clock.now() + Math.floor(wait * 1000),
      amounts,
      error: e,
    });
  }

  async #decideRemote(
    side: Side,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease> {
    let child = side;
    if (this.#speculative && child.charge.size > 0) {
      let lease = await this.#fast(child, resource, consume, override);
      if (lease === "params") {
        // The stored parameters differ from the cached config: read it again.
        child = await this.#refreshed(child, resource, consume, override);
        markPath("retry");
        lease = await this.#fast(child, resource, consume, override);
      }
      if (lease && lease !== "params") return lease;
    }
    markPath("slow");
    return await this.#slow(child, resource, consume, override);
  }

  /**
   * The side again with its config read fresh (and its cascade parent's):
   * another writer changed the stored limits, or this process's cache is
   * stale. Overrides are what the caller passed and are kept.
   */
  async #refreshed(
    side: Side,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Side> {
    if (override !== null) return side;
    const fresh = await this.#repo.resolveLimits(side.entityId, resource, {
      fresh: true,
    });
    const parentId = this.#repo.entityInfo(side.entityId)?.parentId;
    if (parentId) {
      await this.#repo.resolveLimits(parentId, resource, { fresh: true });
    }
    if (!fresh) return await this.#resolveSide(side, resource, consume);
    const next = this.#side(side.entityId, fresh, consume, side.shards, true);
    this.#checkSatisfiable(next, resource);
    return { ...next, shard: side.shard };
  }

  async #resolveSide(
    side: Side,
    resource: string,
    consume: Map<string, bigint>,
  ): Promise<Side> {
    const r = await this.#resolve(side.entityId, resource, null);
    return this.#side(side.entityId, r, consume, side.shards, true);
  }

  // ------------------------------------------------------------------ fast path

  #target(side: Side, resource: string, nowMs: number): Target {
    return {
      ref: {
        ns: this.#repo.namespaceId,
        entityId: side.entityId,
        resource,
        shard: side.shard,
      },
      limits: this.#specs(side.resolved.limits, side.shards),
      shards: side.shards,
      ttl: this.#repo.bucketTtl(side.resolved, nowMs),
    };
  }

  /** Limit specs, computed once per limit set (the config cache hands out the same array until it refetches). */
  #specs(limits: readonly Limit[], shards: number): readonly LimitSpec[] {
    let byShards = this.#specCache.get(limits);
    if (!byShards) {
      byShards = new Map();
      this.#specCache.set(limits, byShards);
    }
    let specs = byShards.get(shards);
    if (!specs) {
      specs = limits.map((l) => ({
        limit: l,
        stored: paramsOf(l),
        eff: paramsOf(l, shards),
      }));
      byShards.set(shards, specs);
    }
    return specs;
  }

  /**
   * Refuses a request no bucket could ever admit (more than a limit's
   * capacity), before any write: a Retry-After would have the caller loop.
   */
  #checkSatisfiable(side: Side, resource: string): void {
    const over: LimitStatus[] = [];
    for (const l of side.resolved.limits) {
      const a = side.charge.get(l.name) ?? 0n;
      const cp = paramsOf(l, side.shards).cp;
      if (a > cp) {
        over.push(
          this.#status(
            side.entityId,
            resource,
            l,
            wholeTokens(cp),
            a,
            false,
            0,
          ),
        );
      }
    }
    if (over.length > 0) throw new RequestExceedsCapacity(over);
  }

  /** Passing statuses of a side from what the writer knows of its item. */
  #passing(side: Side, resource: string): LimitStatus[] {
    const k = this.#writer.known({
      ns: this.#repo.namespaceId,
      entityId: side.entityId,
      resource,
      shard: side.shard,
    });
    return side.resolved.limits.map((l) => {
      const eff = paramsOf(l, side.shards);
      const tk = k?.limits.get(l.name)?.tk ?? eff.cp;
      return this.#status(
        side.entityId,
        resource,
        l,
        wholeTokens(tk > eff.cp ? eff.cp : tk),
        side.charge.get(l.name) ?? 0n,
        true,
        0,
      );
    });
  }

  /**
   * Gives a side's charge back (and its `wcu` write, so usage snapshots do
   * not count a refused acquire). Runs with its own short grace when the
   * caller's deadline has passed; a failure is reported as stranded.
   */
  async #compensate(side: Side, resource: string): Promise<void> {
    const deltas = new Map<string, bigint>();
    for (const [n, a] of side.charge) deltas.set(n, -a);
    const ref: BucketRef = {
      ns: this.#repo.namespaceId,
      entityId: side.entityId,
      resource,
      shard: side.shard,
    };
    try {
      const left = await withGrace(
        COMPENSATION_GRACE_MS,
        () => this.#writer.apply(ref, side.shards, deltas, -WCU_PER_WRITE),
      );
      if (left > 0n) {
        this.#stranded(ref, new Map([["*", left]]), "giveback", null);
      }
    } catch (e) {
      this.#stranded(ref, side.charge, "debit", e);
    }
  }

  /** Reports a charge that may stand in the bucket without a lease (under-admission). */
  #stranded(
    ref: BucketRef,
    amounts: ReadonlyMap<string, bigint>,
    kind: "debit" | "giveback",
    cause: unknown,
  ): void {
    const tokens: Record<string, number> = {};
    for (const [n, a] of amounts) tokens[n] = Number(a) / 1000;
    this.#onStranded({
      entityId: ref.entityId,
      resource: ref.resource,
      shard: ref.shard,
      kind,
      amounts: tokens,
      cause,
    });
  }

  async #parentSide(
    parentId: string,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Side | null> {
    let resolved: ResolvedLimits;
    try {
      resolved = await this.#resolve(parentId, resource, override);
    } catch (e) {
      if (e instanceof ValidationError) return null; // a parent without limits is not charged
      throw e;
    }
    const info = this.#repo.entityInfo(parentId);
    return this.#side(
      parentId,
      resolved,
      consume,
      info?.shards.get(resource) ?? 1,
      false,
    );
  }

  /**
   * The fast path: one write per side (entity and, with cascade, parent,
   * sent together) from the state the last answers showed. `null` sends the
   * caller to the slow path (nothing known, item or limit missing);
   * `"params"` asks it to re-read the config.
   */
  async #fast(
    child: Side,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease | "params" | null> {
    const nowMs = this.#clock.now();
    const info = this.#repo.entityInfo(child.entityId);
    // Unknown entity, or its cascade flags are due for a re-read: the slow path reads META.
    if (info === undefined || info.refreshAt <= nowMs) return null;
    const sides: Side[] = [child];
    if (info.cascade && info.parentId) {
      const parent = await this.#parentSide(
        info.parentId,
        resource,
        consume,
        override,
      );
      if (parent && parent.charge.size > 0) {
        this.#checkSatisfiable(parent, resource);
        sides.push(parent);
      }
    }
    const targets = sides.map((s) => this.#target(s, resource, nowMs));
    if (targets.some((t) => this.#writer.known(t.ref) === undefined)) {
      return null;
    }
    const results = await Promise.allSettled(
      sides.map((s, i) => this.#writer.charge(targets[i] as Target, s.charge)),
    );
    const ok = results.map((r) =>
      r.status === "fulfilled" && r.value.kind === "ok"
    );
    if (ok.every(Boolean)) {
      return new Lease(
        this.#writer,
        child.entityId,
        resource,
        sides.flatMap((s) => this.#entries(s, resource, s.shard)),
        false,
        this.#leaseOptions,
      );
    }
    // All or nothing: give back what was charged, then answer for the rest.
    await Promise.all(
      sides.map((s, i) => ok[i] ? this.#compensate(s, resource) : null),
    );
    let statuses: LimitStatus[] | null = null;
    let next: "params" | null | undefined = undefined;
    // Every side whose write may have applied is reported, then the first failure thrown.
    const failed = results.flatMap((r, i) => {
      if (r.status !== "rejected") return [];
      this.#maybeStranded(targets[i] as Target, sides[i] as Side, r.reason);
      return [r.reason];
    });
    if (failed.length > 0) throw failed[0];
    for (let i = 0; i < sides.length; i++) {
      const r = results[i] as PromiseSettledResult<ChargeOutcome>;
      if (r.status === "rejected") continue;
      const o = r.value;
      if (o.kind === "refused" || o.kind === "contended") {
        statuses ??= [];
        statuses.push(...o.statuses);
      } else if (o.kind === "params") next = "params";
      else if (o.kind === "missing" && next === undefined) next = null;
    }
    if (statuses) {
      const refusedIds = new Set(statuses.map((s) => s.entityId));
      for (const s of sides) {
        if (!refusedIds.has(s.entityId)) {
          statuses.push(...this.#passing(s, resource));
        }
      }
      throw new RateLimitExceeded(statuses);
    }
    return next ?? null;
  }

  /** A write that failed without a verdict may have applied: report it. */
  #maybeStranded(target: Target, side: Side, e: unknown): void {
    if (certainlyNotApplied(e)) return;
    this.#writer.remember(target.ref, null);
    this.#stranded(target.ref, side.charge, "debit", e);
  }

  #status(
    entityId: string,
    resource: string,
    limit: Limit,
    available: number,
    amount: bigint,
    ok: boolean,
    retryAfter: number,
  ): LimitStatus {
    return {
      entityId,
      resource,
      limitName: limit.name,
      limit,
      available,
      requested: Number(amount / 1000n),
      exceeded: !ok,
      retryAfterSeconds: ok ? 0 : retryAfter,
    };
  }

  #entries(side: Side, resource: string, shard: number): LeaseEntry[] {
    const ref: BucketRef = {
      ns: this.#repo.namespaceId,
      entityId: side.entityId,
      resource,
      shard,
    };
    return side.resolved.limits.map((l) => {
      const amount = side.charge.get(l.name) ?? 0n;
      return {
        ref,
        limit: l,
        params: paramsOf(l, side.shards),
        shards: side.shards,
        consumed: amount,
        written: amount,
      };
    });
  }

  #learn(entityId: string, resource: string, item: BucketItem | null): void {
    if (!item) return;
    this.#repo.rememberEntity(entityId, {
      cascade: item.cascade,
      parentId: item.parentId,
    }, {
      resource,
      count: item.shardCount,
    });
  }

  // ------------------------------------------------------------------ slow path

  #plan(
    side: Side,
    resource: string,
    item: BucketItem | null,
    nowMs: number,
    meta: {
      cascade: boolean;
      parentId: string | null;
    },
  ): Plan {
    const now = BigInt(nowMs);
    const ref: BucketRef = {
      ns: this.#repo.namespaceId,
      entityId: side.entityId,
      resource,
      shard: side.shard,
    };
    const rf = item ? item.rf : now;
    const effective = side.resolved.limits.map((l) => paramsOf(l, side.shards));
    // A limit new to the item starts full (its balance is clamped like the
    // others). A limit whose stored parameters differ (changed at some
    // unknown time since rf) is refilled under the smaller capacity and the
    // slower rate of the two.
    const refilled = planRefill(
      rf,
      now,
      side.resolved.limits.map((l, i) => {
        const eff = effective[i] as BucketParams;
        const stored = item?.limits.get(l.name);
        return {
          tk: stored ? stored.tk : eff.cp,
          p: stored && !sameParams(stored.params, paramsOf(l))
            ? settleParams(shardParams(stored.params, side.shards), eff)
            : eff,
        };
      }),
    );
    const limits: PlannedLimit[] = [];
    const statuses: LimitStatus[] = [];
    side.resolved.limits.forEach((l, i) => {
      const eff = effective[i] as BucketParams;
      const stored = item?.limits.get(l.name);
      const amount = side.charge.get(l.name) ?? 0n;
      const tk = refilled.tk[i] as bigint;
      const ok = amount <= 0n || tk >= amount;
      statuses.push(
        this.#status(
          side.entityId,
          resource,
          l,
          wholeTokens(tk),
          amount,
          ok,
          ok ? 0 : retryAfterSeconds(amount - tk, eff),
        ),
      );
      limits.push({
        name: l.name,
        params: paramsOf(l),
        paramsBefore: stored ? stored.params : null,
        tkBefore: stored ? stored.tk : null,
        tkAfter: ok ? tk - amount : tk,
        consumed: ok ? amount : 0n,
        capped: stored !== undefined,
        exact: stored !== undefined && refilled.clamped[i] === true,
      });
    });
    const wcu = wcuPlanned(item, refilled.rf, WCU_PER_WRITE);
    limits.push(wcu);
    return {
      side,
      ref,
      item,
      limits,
      statuses,
      wcuShort: wcu.tkAfter < 0n,
      rfAfter: item ? refilled.rf : now,
      cascade: meta.cascade,
      parentId: meta.parentId,
    };
  }

  #write(plan: Plan, nowMs: number): BucketWrite {
    const item = plan.item;
    return {
      kind: "slow",
      write: {
        ref: plan.ref,
        create: item === null,
        expectedRf: item ? item.rf : 0n,
        now: plan.rfAfter,
        limits: plan.limits,
        cascade: plan.cascade,
        parentId: plan.parentId,
        shardCount: plan.side.shards,
        ttl: this.#repo.bucketTtl(plan.side.resolved, nowMs),
      },
    };
  }

  /** The item as a successful slow-path write left it (balances are upper bounds under concurrency). */
  #after(plan: Plan, nowMs: number): BucketItem {
    const limits = new Map(plan.item?.limits ?? []);
    for (const l of plan.limits) {
      const old = plan.item?.limits.get(l.name);
      limits.set(l.name, {
        tk: l.tkAfter,
        params: l.params,
        tc: old ? (old.tc ?? 0n) + l.consumed : l.consumed,
      });
    }
    const ttl = this.#repo.bucketTtl(plan.side.resolved, nowMs);
    return {
      entityId: plan.side.entityId,
      resource: plan.ref.resource,
      shard: plan.ref.shard,
      rf: plan.rfAfter,
      shardCount: plan.item?.shardCount ?? plan.side.shards,
      cascade: plan.cascade,
      parentId: plan.parentId,
      ttl: typeof ttl === "number"
        ? ttl
        : ttl === "remove"
        ? null
        : (plan.item?.ttl ?? null),
      limits,
    };
  }

  /** Whether a read item stores other parameters than the side resolved (a config changed somewhere). */
  #staleParams(side: Side, item: BucketItem | null): boolean {
    if (!item) return false;
    return side.resolved.limits.some((l) => {
      const st = item.limits.get(l.name);
      if (!st) return false;
      const p = paramsOf(l);
      return st.params.cp !== p.cp || st.params.ra !== p.ra ||
        st.params.rp !== p.rp;
    });
  }

  async #slow(
    child0: Side,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease> {
    let child = child0;
    let refreshed = false;
    for (let attempt = 0;; attempt++) {
      checkDeadline();
      const nowMs = this.#clock.now();
      const ns = this.#repo.namespaceId;
      const known = this.#repo.entityInfo(child.entityId);
      const guessParent = known?.cascade && known.parentId
        ? known.parentId
        : null;
      const parentShards = guessParent
        ? this.#repo.entityInfo(guessParent)?.shards.get(resource) ?? 1
        : 1;
      const parentShard = parentShards > 1
        ? Math.floor(this.#random() * parentShards)
        : 0;
      const childRef: BucketRef = {
        ns,
        entityId: child.entityId,
        resource,
        shard: child.shard,
      };
      const refs = [childRef];
      if (guessParent) {
        refs.push({ ns, entityId: guessParent, resource, shard: parentShard });
      }
      const read = await this.#store.read(refs, {
        ns,
        entityId: child.entityId,
      });
      const cascade = read.link?.cascade ?? false;
      const parentId = read.link?.parentId ?? null;
      this.#repo.rememberEntity(child.entityId, { cascade, parentId });
      const childItem = read.items[0] ?? null;
      if (childItem) this.#learn(child.entityId, resource, childItem);
      if (childItem && childItem.shardCount !== child.shards) {
        child = { ...child, shards: childItem.shardCount };
      }
      const plans: Plan[] = [
        this.#plan(child, resource, childItem, nowMs, { cascade, parentId }),
      ];
      let parentStale = false;
      if (cascade && parentId) {
        const parent = await this.#parentSide(
          parentId,
          resource,
          consume,
          override,
        );
        if (parent && parent.charge.size > 0) {
          this.#checkSatisfiable(parent, resource);
          // The parent's bucket was read in the same batch when the cache knew the parent.
          const shard = parentId === guessParent ? parentShard : parent.shard;
          const pItem = parentId === guessParent
            ? read.items[1] ?? null
            : (await this.#store.read([{
              ns,
              entityId: parentId,
              resource,
              shard,
            }])).items[0] ?? null;
          parentStale = this.#staleParams(parent, pItem);
          plans.push(
            this.#parentPlan({ ...parent, shard }, resource, pItem, nowMs),
          );
        }
      }
      if (
        override === null && !refreshed &&
        (parentStale || this.#staleParams(child, childItem))
      ) {
        // Never write a cached config over a newer one: read it again first.
        refreshed = true;
        child = await this.#refreshed(child, resource, consume, override);
        continue;
      }
      for (const p of plans) {
        const ref = p.ref;
        this.#writer.remember(ref, p.item);
      }
      const statuses = plans.flatMap((p) => p.statuses);
      if (statuses.some((s) => s.exceeded)) {
        throw new RateLimitExceeded(statuses);
      }
      for (const p of plans) {
        if (p.wcuShort) {
          await this.#bumpShards(p.side.entityId, resource, p.item);
        }
      }
      const writes = plans.map((p) => this.#write(p, nowMs));
      const outcome = await this.#send(writes, plans);
      if (outcome === "ok") {
        for (const p of plans) {
          this.#writer.remember(p.ref, this.#after(p, nowMs));
        }
        return new Lease(
          this.#writer,
          child.entityId,
          resource,
          plans.flatMap((p) => this.#entries(p.side, resource, p.ref.shard)),
          false,
          this.#leaseOptions,
        );
      }
      // Lost the `rf` lock or a create race. The failed write brought the
      // items back: the fast path decides again from them without a read.
      if (plans.every((p) => this.#writer.known(p.ref) !== undefined)) {
        const lease = await this.#fast(child, resource, consume, override);
        if (lease && lease !== "params") return lease;
      }
      if (attempt + 1 >= MAX_SLOW_ATTEMPTS) {
        throw new RateLimitExceeded(this.#contended(plans));
      }
      markPath("retry");
      await this.#writer.backoff(attempt);
    }
  }

  /**
   * Statuses for a request that lost the race for the last tokens several
   * times in a row: the charged limits are refused with the time to the next
   * token, so the caller backs off instead of seeing an outage.
   */
  #contended(plans: Plan[]): LimitStatus[] {
    return plans.flatMap((p) =>
      p.side.resolved.limits.map((l) => {
        const planned = p.limits.find((x) => x.name === l.name);
        const amount = p.side.charge.get(l.name) ?? 0n;
        const eff = paramsOf(l, p.side.shards);
        const tk = planned ? planned.tkAfter + amount : 0n;
        return this.#status(
          p.side.entityId,
          p.ref.resource,
          l,
          wholeTokens(tk),
          amount,
          amount === 0n,
          retryAfterSeconds(amount > 0n ? amount : 1000n, eff),
        );
      })
    );
  }

  #parentPlan(
    parent: Side,
    resource: string,
    item: BucketItem | null,
    nowMs: number,
  ): Plan {
    if (item) this.#learn(parent.entityId, resource, item);
    const side = item && item.shardCount !== parent.shards
      ? { ...parent, shards: item.shardCount }
      : parent;
    return this.#plan(side, resource, item, nowMs, {
      cascade: item?.cascade ?? false,
      parentId: item?.parentId ?? null,
    });
  }

  /**
   * Sends the slow-path writes; `conflict` when a condition failed (the old
   * images it brings back are remembered). Retries pure transaction
   * conflicts, which DynamoDB refused before applying anything.
   */
  async #send(
    writes: BucketWrite[],
    plans: Plan[],
  ): Promise<"ok" | "conflict"> {
    for (let attempt = 0;; attempt++) {
      try {
        const r = await this.#store.transact(writes);
        if (r.ok) return "ok";
        plans.forEach((p, i) =>
          this.#writer.remember(p.ref, r.olds[i] ?? null)
        );
        return "conflict";
      } catch (e) {
        // Other writers on the same items (a transaction, or a write racing one).
        const conflict = isTransactionConflictOnly(e) ||
          errorName(e) === "TransactionConflictException";
        if (conflict && attempt < MAX_CONFLICT_RETRIES) {
          await this.#writer.backoff(attempt);
          continue;
        }
        if (conflict) throw new RateLimitExceeded(this.#contended(plans));
        if (!certainlyNotApplied(e)) {
          for (const p of plans) {
            this.#writer.remember(p.ref, null);
            this.#stranded(p.ref, p.side.charge, "debit", e);
          }
        }
        throw e;
      }
    }
  }

  async #bumpShards(
    entityId: string,
    resource: string,
    item: BucketItem | null,
  ): Promise<void> {
    const current = item?.shardCount ?? 1;
    const ref: BucketRef = {
      ns: this.#repo.namespaceId,
      entityId,
      resource,
      shard: 0,
    };
    const r = await this.#store.write({
      kind: "shards",
      ref,
      from: current,
      to: current * 2,
    });
    if (!r.ok) return;
    this.#repo.rememberEntity(entityId, {
      cascade: item?.cascade ?? false,
      parentId: item?.parentId ?? null,
    }, { resource, count: current * 2 });
  }

  // ------------------------------------------------------------------ capacity queries

  async #capacityItems(o: CapacityOptions): Promise<
    {
      side: ResolvedLimits;
      entityId: string;
      items: BucketItem[];
      shards: number;
    }[]
  > {
    validateOptions(o, "options", "{ entityId, resource }");
    const entityId = validateIdentifier(o.entityId);
    const resource = validateResource(o.resource);
    try {
      return await withDeadline(
        o,
        this.#timeoutMs,
        () => this.#loadCapacity(o, entityId, resource),
      );
    } catch (e) {
      if (e instanceof ZAELimiterError) throw e;
      throw this.#unavailable(e, { entityId, resource });
    }
  }

  async #loadCapacity(
    o: CapacityOptions,
    entityId: string,
    resource: string,
  ): Promise<
    {
      side: ResolvedLimits;
      entityId: string;
      items: BucketItem[];
      shards: number;
    }[]
  > {
    const resolved = await this.#resolve(entityId, resource, o.limits ?? null);
    const entity = await this.#repo.getEntity(entityId);
    const out: {
      side: ResolvedLimits;
      entityId: string;
      items: BucketItem[];
      shards: number;
    }[] = [];
    const load = async (id: string, r: ResolvedLimits): Promise<void> => {
      const ns = this.#repo.namespaceId;
      const ref = (shard: number): BucketRef => ({
        ns,
        entityId: id,
        resource,
        shard,
      });
      const first = (await this.#store.read([ref(0)])).items[0] ?? null;
      const shards = first?.shardCount ?? 1;
      const items: BucketItem[] = first ? [first] : [];
      if (shards > 1) {
        const rest = await this.#store.read(
          Array.from({ length: shards - 1 }, (_, i) => ref(i + 1)),
        );
        for (const it of rest.items) if (it) items.push(it);
      }
      out.push({ side: r, entityId: id, items, shards });
    };
    await load(entityId, resolved);
    if (entity?.cascade && entity.parentId) {
      const pr = await this.#repo.resolveLimits(entity.parentId, resource)
        .catch(() => null);
      const pl = o.limits
        ? { limits: o.limits, source: "override" as ConfigSource }
        : pr;
      if (pl) await load(entity.parentId, pl);
    }
    return out;
  }

  /**
   * Whole tokens available now per limit name: the minimum over the entity
   * and, with cascade, its parent (reference weakness 34), summed over shards.
   * May be negative (debt).
   */
  async available(options: CapacityOptions): Promise<Record<string, number>> {
    const now = BigInt(this.#clock.now());
    const result: Record<string, number> = {};
    for (const { side, items, shards } of await this.#capacityItems(options)) {
      for (const l of side.limits) {
        const eff = paramsOf(l, shards);
        let total = 0n;
        for (let s = 0; s < shards; s++) {
          const it = items.find((i) => i.shard === s);
          const st = it?.limits.get(l.name);
          total += st && it
            ? refill(st.tk > eff.cp ? eff.cp : st.tk, it.rf, now, eff).tk
            : eff.cp;
        }
        const tokens = wholeTokens(total);
        const prev = result[l.name];
        result[l.name] = prev === undefined ? tokens : Math.min(prev, tokens);
      }
    }
    return result;
  }

  /** Seconds until `needed` whole tokens per limit would be admitted (entity and, with cascade, parent). */
  async timeUntilAvailable(
    options: CapacityOptions & { needed: Readonly<Record<string, number>> },
  ): Promise<number> {
    validateOptions(options, "options", "{ entityId, resource, needed }");
    const needed = validateAmounts(options.needed, "needed");
    const now = BigInt(this.#clock.now());
    let wait = 0;
    const sides = await this.#capacityItems(options);
    validateConfiguredNames(
      needed.keys(),
      sides.flatMap((x) => x.side.limits.map((l) => l.name)),
      "needed",
      `entity "${options.entityId}" and resource "${options.resource}"`,
    );
    for (const { side, items, shards } of sides) {
      for (const l of side.limits) {
        const need = options.needed[l.name];
        if (need === undefined || need <= 0) continue;
        validateAmount(need, `needed.${l.name}`);
        const eff = paramsOf(l, shards);
        let best = Infinity;
        for (let s = 0; s < shards; s++) {
          const it = items.find((i) => i.shard === s);
          const st = it?.limits.get(l.name);
          const tk = st && it
            ? refill(st.tk > eff.cp ? eff.cp : st.tk, it.rf, now, eff).tk
            : eff.cp;
          best = Math.min(
            best,
            tk >= BigInt(need) * 1000n
              ? 0
              : retryAfterSeconds(BigInt(need) * 1000n - tk, eff),
          );
        }
        wait = Math.max(wait, best);
      }
    }
    return wait;
  }
}

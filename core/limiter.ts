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
 * This file is the facade (options, validation, deadlines, `onUnavailable`,
 * telemetry, and the choice of path); the algorithm is in `acquire/`. A
 * warm acquire walks `limiter.ts` → `acquire/fast_path.ts` →
 * `bucket_writer.ts` → the store (`store/dynamo_bucket_store.ts`) →
 * `lease.ts`, using the pure helpers of `acquire/plan.ts`, the shared steps
 * of `acquire/admission.ts` and the refusal cache
 * (`acquire/refusal_cache.ts`). A cold one takes `acquire/slow_path.ts`
 * instead of the fast path; `acquire/cascade.ts` adds the parent on either
 * path; `acquire/capacity.ts` answers the capacity queries. Options are in
 * `acquire/options.ts`; `acquire/wait.ts` (waiting) and `acquire/partial.ts`
 * (partial grants, through `acquire/grant.ts`) repeat a try.
 * `acquire/concurrency.ts` takes the slots of concurrency limits around a
 * try (`acquire/slot_store.ts`, `store/*_slot_store.ts`);
 * `acquire/lease_deadline.ts` sets the lease's deadline;
 * `acquire/local_admission.ts` admits from `local_fallback.ts` when
 * DynamoDB fails. The limiter's options are in `limiter_options.ts`.
 *
 * @module
 */
import {
  type Admission,
  cachedLimits,
  refreshedSide,
  resolveLimits,
} from "./acquire/admission.ts";
import { capacityNow, capacityWait } from "./acquire/capacity.ts";
import { fastPath } from "./acquire/fast_path.ts";
import { lateSettled } from "./acquire/late_charge.ts";
import { holdDeadline, validateMaxHold } from "./acquire/lease_deadline.ts";
import { fallBackLocally, SKIPPED } from "./acquire/local_admission.ts";
import { LocalFallback } from "./local_fallback.ts";
import {
  createSlotContext,
  type SlotContext,
  withSlots,
} from "./acquire/concurrency.ts";
import type { ConcurrencyLimit } from "./concurrency_limit.ts";
import { DynamoSlotStore } from "./store/dynamo_slot_store.ts";
import { MemorySlotStore } from "./store/memory_slot_store.ts";
import type {
  LimiterSource,
  ResolvedLimits,
} from "./acquire/limiter_source.ts";
import { chargeSide, checkSatisfiable, type Side } from "./acquire/plan.ts";
import { grant, grantOf } from "./acquire/grant.ts";
import { RefusalCache, refusalKey } from "./acquire/refusal_cache.ts";
import { parseAcquire } from "./acquire/request.ts";
import {
  chargesNothing,
  judgeShadow,
  nothingToJudge,
} from "./acquire/shadow.ts";
import { stampWindows } from "./calendar_bucket.ts";
import { slowPath } from "./acquire/slow_path.ts";
import { waitForCapacity } from "./acquire/wait.ts";
import type { AcquireOptions, CapacityOptions } from "./acquire/options.ts";
import { LocalReserve } from "./acquire/reserve.ts";
import { reportUnreturned } from "./acquire/rollback_stranded.ts";
import {
  type LocalReserveStats,
  resolveReserveConfig,
} from "./acquire/reserve_config.ts";
import { BucketWriter } from "./bucket_writer.ts";
import { Coalescer } from "./acquire/coalescer.ts";
import {
  contained,
  dynamoStore,
  type RateLimiterOptions,
  strandedReporter,
} from "./limiter_options.ts";
import {
  CommitFailedError,
  LeaseDeadlineExceeded,
  RateLimiterUnavailable,
  RateLimitExceeded,
  ValidationError,
  ZAELimiterError,
} from "./errors.ts";
import { Lease } from "./lease.ts";
import type { Limit } from "./limit.ts";
import { Repository } from "./repository.ts";
import { tableOf } from "./store/table.ts";
import { LimiterTelemetry, markPath } from "./telemetry.ts";
import { withDeadline, withGrace } from "./transport.ts";

export type { AcquireOptions, CapacityOptions } from "./acquire/options.ts";
export type { RateLimiterOptions } from "./limiter_options.ts";

/** Time to read the stored `on_unavailable` once the deadline passed (usually cached: no I/O). */
const ON_UNAVAILABLE_GRACE_MS = 250;

/**
 * Admits or refuses requests against stored or given limits.
 *
 * @example Callback-scoped lease (commit on success, rollback on error)
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit, RateLimiter } from "@zae/limiter";
 * import { MemoryBucketStore, MemoryLimiterSource } from "@zae/limiter/testing";
 *
 * // In production: new RateLimiter(await Repository.open({ client })).
 * const store = new MemoryBucketStore();
 * const source = new MemoryLimiterSource(store);
 * source.setSystemDefaults([Limit.perMinute("rpm", 60), Limit.perMinute("tpm", 10_000)]);
 * const limiter = new RateLimiter(source, { bucketStore: store });
 *
 * const callModel = () => Promise.resolve({ text: "hi", usage: { total_tokens: 120 } });
 * const answer = await limiter.acquire(
 *   { entityId: "key-1", resource: "openai/gpt-4", consume: { rpm: 1, tpm: 500 } },
 *   async (lease) => {
 *     const r = await callModel();
 *     lease.adjust({ tpm: r.usage.total_tokens - 500 });
 *     return r;
 *   },
 * );
 * assert.equal(answer.text, "hi");
 * const left = await limiter.available({ entityId: "key-1", resource: "openai/gpt-4" });
 * assert.ok((left.tpm ?? 0) >= 10_000 - 120); // 120 used, plus what refilled since
 * ```
 */
export class RateLimiter {
  readonly #repo: LimiterSource;
  readonly #speculative: boolean;
  readonly #onError: (error: unknown, context: string) => void;
  readonly #refusals: RefusalCache;
  readonly #timeoutMs: number;
  readonly #telemetry: LimiterTelemetry;
  readonly #adm: Admission;
  readonly #maxHoldMs: number | undefined;
  readonly #local: LocalFallback | null;
  readonly #reserve: LocalReserve | null;
  readonly #slots: SlotContext;

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
    this.#onError = contained(options.onError);
    const random = options.random ?? Math.random;
    const clock = repository.clock;
    this.#refusals = new RefusalCache(
      options.refusalCacheSize ?? 10_000,
      clock,
    );
    const store = options.bucketStore ?? dynamoStore(repository);
    this.#timeoutMs = options.timeoutMs ?? 3000;
    this.#maxHoldMs = validateMaxHold(options.maxHoldMs);
    this.#slots = createSlotContext({
      store: options.slotStore ??
        (repository instanceof Repository
          ? new DynamoSlotStore(tableOf(repository))
          : new MemorySlotStore()),
      clock,
      random,
      namespaceId: repository.namespaceId,
      onError: (e, context) => this.#onError(e, context),
    });
    this.#local = options.localFallback
      ? new LocalFallback(options.localFallback, clock)
      : null;
    const onStranded = strandedReporter(options.onStranded, this.#onError);
    this.#telemetry = new LimiterTelemetry(
      repository.namespaceName,
      options.telemetry,
      this.#onError,
    );
    const writer = new BucketWriter(store, clock, random);
    const coalescer = new Coalescer(
      writer,
      clock,
      options.coalesceWrites ?? true,
    );
    this.#adm = {
      source: repository,
      store,
      writer,
      coalescer,
      clock,
      random,
      leaseOptions: {
        timeoutMs: this.#timeoutMs,
        onStranded,
        stackName: repository.tableName,
        apply: (...args) => coalescer.apply(...args),
      },
      onStranded,
    };
    const reserve = resolveReserveConfig(
      options.localReserve,
      (message) => this.#onError(new Error(message), "localReserve"),
    );
    this.#reserve = reserve ? new LocalReserve(this.#adm, reserve) : null;
  }

  /**
   * Gives back every local reserve slice (see
   * {@linkcode RateLimiterOptions.localReserve}) and waits for the writes;
   * later acquires go to DynamoDB. Also waits for the writes left running
   * past their callers' deadlines (at most 10 s each) and their charges'
   * give-backs or stranded reports.
   */
  async close(): Promise<void> {
    await Promise.all([this.#reserve?.close(), lateSettled(this.#adm)]);
  }

  /** {@linkcode RateLimiter.close} for `await using`. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** What the local reserve did so far, or `null` when it is off. */
  reserveStats(): LocalReserveStats | null {
    return this.#reserve?.stats() ?? null;
  }

  /** The repository (a limiter built on a `MemoryLimiterSource` has none: it throws). */
  get repository(): Repository {
    if (!(this.#repo instanceof Repository)) {
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
      await lease.rollback().catch((err) => {
        this.#onError(err, "rollback");
        // The lease is not handed back: what it still holds is stranded.
        reportUnreturned(this.#adm, lease, err);
      });
      throw e;
    }
    try {
      await lease.commit();
    } catch (e) {
      if (e instanceof LeaseDeadlineExceeded) throw e;
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
    const {
      entityId,
      resource,
      consume,
      min,
      wait,
      maxHold,
      shadow,
      concurrency,
    } = parseAcquire(o, {
      maxHoldMs: this.#maxHoldMs,
      local: this.#local !== null,
    });
    const once = (): Promise<Lease> =>
      this.#attempt(o, entityId, resource, consume, min, {
        waiting: wait !== null,
        maxHold,
        shadow,
        concurrency,
      });
    if (wait === null) return await once();
    return await waitForCapacity(once, {
      wait,
      clock: this.#adm.clock,
      random: this.#adm.random,
      released: new Set(concurrency.map((c) => c.name)),
      ...(o.signal ? { signal: o.signal } : {}),
    });
  }

  /**
   * One try of an acquire (a partial grant with `min`) under its deadline;
   * the lease's hold deadline counts from the start of the try.
   */
  async #attempt(
    o: AcquireOptions,
    entityId: string,
    resource: string,
    consume: Map<string, bigint>,
    min: ReadonlyMap<string, bigint> | null,
    t: {
      readonly waiting: boolean;
      readonly maxHold: number | undefined;
      readonly shadow: ReadonlySet<string>;
      readonly concurrency: readonly ConcurrencyLimit[];
    },
  ): Promise<Lease> {
    const start = this.#adm.clock.now();
    const deadline = holdDeadline(start, t.maxHold);
    const hold = (lease: Lease): Lease => {
      lease.setHold({ deadline, clock: this.#adm.clock });
      return lease;
    };
    const local = (o.onUnavailable ?? "local") === "local" ? this.#local : null;
    try {
      if (local?.down) throw SKIPPED;
      // A partial grant reads the amounts available from each refusal,
      // so it asks DynamoDB rather than the refusal cache (old statuses).
      const decide = () =>
        grantOf(consume, min, (c) =>
          this.#decideShadow(
            entityId,
            resource,
            c === consume ? consume : new Map(c),
            t.shadow,
            o,
            min === null,
          ));
      const lease = await withDeadline(
        o,
        this.#timeoutMs,
        () =>
          t.concurrency.length === 0 ? decide() : withSlots(
            this.#slots,
            t.concurrency,
            { entityId, resource },
            start,
            decide,
          ),
      );
      local?.markUp();
      return hold(lease);
    } catch (e) {
      if (e instanceof ZAELimiterError) throw e;
      // A cancelled wait ends as cancelled, never as an unchecked admission.
      if (t.waiting && o.signal?.aborted) throw o.signal.reason;
      if (local) {
        const lease = await fallBackLocally(this.#adm, local, e, {
          entityId,
          resource,
          consume: new Map([...consume].filter(([n]) => !t.shadow.has(n))),
          min,
          override: o.limits ?? null,
          concurrency: t.concurrency,
          start,
          onError: this.#onError,
          callerAborted: o.signal?.aborted === true,
        });
        if (!lease) throw this.#unavailable(e, { entityId, resource });
        return hold(lease);
      }
      const mode = o.onUnavailable ?? await withGrace(
        ON_UNAVAILABLE_GRACE_MS,
        () => this.#repo.resolveOnUnavailable(),
      ).catch(() => this.#repo.cachedOnUnavailable() ?? "block");
      if (mode === "allow") {
        this.#onError(e, "acquire");
        return grant(
          new Lease(
            null,
            entityId,
            resource,
            [],
            true,
            this.#adm.leaseOptions,
          ),
          consume,
        );
      }
      throw this.#unavailable(e, { entityId, resource });
    }
  }

  /**
   * Decides the enforced limits, then judges the shadow ones (per-call
   * names and stored flags, see `acquire/shadow.ts`). A failure to judge
   * does not undo the admission: it is reported through `onError`.
   */
  async #decideShadow(
    entityId: string,
    resource: string,
    consume: Map<string, bigint>,
    shadow: ReadonlySet<string>,
    o: AcquireOptions,
    cached = true,
  ): Promise<Lease> {
    const adm = this.#adm;
    const override = o.limits ?? null;
    const enforced = shadow.size === 0
      ? consume
      : new Map([...consume].filter(([name]) => !shadow.has(name)));
    // Resolved once for the charge (the shadow judgement reads them again after it).
    const resolved = cachedLimits(adm, entityId, resource, override) ??
      await resolveLimits(adm, entityId, resource, override);
    const none = chargesNothing(adm, entityId, resolved, consume, shadow);
    const lease = !none
      ? await this.#decide(
        entityId,
        resource,
        enforced,
        override,
        resolved,
        cached,
      )
      : new Lease(adm.writer, entityId, resource, [], false, adm.leaseOptions);
    stampWindows(this.#adm, lease);
    if (nothingToJudge(adm, entityId, resolved, shadow)) return lease;
    try {
      const judged = await judgeShadow(
        this.#adm,
        lease,
        consume,
        shadow,
        override,
      );
      if (judged) lease.attachShadow(judged.report, judged.ignored);
    } catch (e) {
      if (e instanceof ValidationError) throw e;
      this.#onError(e, "shadow");
    }
    return lease;
  }

  /** Refuses what can never fit or was just refused, then decides remotely. */
  async #decide(
    entityId: string,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
    resolved: ResolvedLimits,
    cached = true,
  ): Promise<Lease> {
    const adm = this.#adm;
    const key = refusalKey(adm.source.namespaceId, entityId, resource);
    // A request that can never fit is told so even while refusals are cached.
    if (override === null) {
      this.#local?.remember(entityId, resource, resolved.limits);
    }
    const info = adm.source.entityInfo(entityId);
    const child = chargeSide(
      entityId,
      resolved,
      consume,
      info?.shards.get(resource) ?? 1,
      true,
      adm.random,
    );
    checkSatisfiable(child, resource);
    if (override === null && cached) this.#refusals.check(key, consume);
    try {
      return await this.#decideRemote(child, resource, consume, override);
    } catch (e) {
      if (e instanceof RateLimitExceeded && override === null) {
        this.#refusals.remember(key, consume, e);
      }
      throw e;
    }
  }

  /** The fast path when the state is known, else (or when it cannot decide) the slow path. */
  async #decideRemote(
    side: Side,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease> {
    const adm = this.#adm;
    let child = side;
    if (this.#reserve && child.charge.size > 0) {
      const lease = await this.#reserve.acquire(
        child,
        resource,
        consume,
        override,
      );
      if (lease) return lease;
    }
    if (this.#speculative && child.charge.size > 0) {
      let lease = await fastPath(adm, child, resource, consume, override);
      if (lease === "params") {
        // The stored parameters differ from the cached config: read it again.
        child = await refreshedSide(adm, child, resource, consume, override);
        markPath("retry");
        lease = await fastPath(adm, child, resource, consume, override);
      }
      if (lease && lease !== "params") return lease;
    }
    markPath("slow");
    return await slowPath(adm, child, resource, consume, override);
  }

  // ------------------------------------------------------------------ capacity queries

  /**
   * Whole tokens available now per limit name: the minimum over the entity
   * and, with cascade, its parent (reference weakness 34), summed over shards.
   * May be negative (debt).
   */
  available(options: CapacityOptions): Promise<Record<string, number>> {
    return capacityNow(this.#adm, options, this.#timeoutMs, this.#fail);
  }

  /** Seconds until `needed` whole tokens per limit would be admitted (entity and, with cascade, parent). */
  timeUntilAvailable(
    options: CapacityOptions & { needed: Readonly<Record<string, number>> },
  ): Promise<number> {
    return capacityWait(this.#adm, options, this.#timeoutMs, this.#fail);
  }

  readonly #fail = (e: unknown, at: { entityId: string; resource: string }) =>
    this.#unavailable(e, at);
}

/**
 * The rate limiter: admission decisions over one DynamoDB round trip on the
 * hot path (spec 02 §3-§6, with the reference's weaknesses 24-37 fixed where
 * they apply).
 *
 * Paths:
 * - **fast** (warm caches): one conditional `UpdateItem` per bucket item
 *   (the entity's and, with cascade, its parent's, sent together). A refusal
 *   that refill cannot fix is answered from the failed write's old image,
 *   with no second call and nothing written.
 * - **slow**: one consistent `BatchGetItem`, a decision with refill, and one
 *   write guarded by the `rf` optimistic lock and a token floor (a
 *   transaction when a parent is charged too).
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import { UpdateItemCommand } from "@aws-sdk/client-dynamodb";
import {
  type BucketParams,
  paramsOf,
  refill,
  retryAfterSeconds,
  sharedRefillSpan,
  tryConsume,
  wholeTokens,
} from "./bucket.ts";
import {
  type BucketItem,
  bucketKey,
  type BucketRef,
  consumeOnlyUpdate,
  decodeBucket,
  deltaUpdate,
  type PlannedLimit,
  slowPathWrite,
  type SpeculativeCharge,
  speculativeUpdate,
  WCU_PARAMS,
  WCU_PER_WRITE,
} from "./bucket_item.ts";
import type { Clock } from "./clock.ts";
import {
  RateLimiterUnavailable,
  RateLimitExceeded,
  ValidationError,
  ZAELimiterError,
} from "./errors.ts";
import { bool, type Item, str } from "./expr.ts";
import { pkEntity, SK } from "./keys.ts";
import { Lease, type LeaseEntry } from "./lease.ts";
import { type Limit, validateLimitList } from "./limit.ts";
import type { ConfigSource, LimitStatus, OnUnavailable } from "./models.ts";
import type { Repository, ResolvedLimits } from "./repository.ts";
import {
  cancellationCodes,
  errorName,
  isConditionFailed,
  isTransactionConflictOnly,
} from "./_sdk_errors.ts";
import {
  validateAmount,
  validateIdentifier,
  validateLimitName,
  validateResource,
  WCU_LIMIT_NAME,
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
}

interface Refusal {
  readonly until: number;
  readonly amounts: ReadonlyMap<string, bigint>;
  readonly error: RateLimitExceeded;
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
}

/** Options of {@linkcode RateLimiter.available} and {@linkcode RateLimiter.timeUntilAvailable}. */
export interface CapacityOptions {
  /** Entity. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Limits to use instead of the stored ones. */
  readonly limits?: readonly Limit[];
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
const MAX_CONFLICT_RETRIES = 6;

/** A TTL to SET on a speculative write (a removal is left to the slow path). */
function numericTtl(ttl: number | "remove" | null): number | null {
  return typeof ttl === "number" ? ttl : null;
}

function oldImage(e: unknown): Item | undefined {
  return (e as { Item?: Item }).Item;
}

function sameParams(a: BucketParams, b: BucketParams): boolean {
  return a.cp === b.cp && a.ra === b.ra && a.rp === b.rp;
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
  readonly #repo: Repository;
  readonly #speculative: boolean;
  readonly #onError: (error: unknown, context: string) => void;
  readonly #random: () => number;
  readonly #clock: Clock;
  readonly #refusals = new Map<string, Refusal>();
  /**
   * The limit set (by identity: the config cache hands out the same array
   * until it refetches) that a full write last verified against each bucket's
   * stored parameters. Only then may a write skip that check.
   */
  readonly #verified = new Map<string, readonly Limit[]>();
  readonly #refusalCacheSize: number;

  /** Creates a limiter over a repository. */
  constructor(repository: Repository, options: RateLimiterOptions = {}) {
    this.#repo = repository;
    this.#speculative = options.speculativeWrites ?? true;
    this.#onError = options.onError ?? (() => {});
    this.#random = options.random ?? Math.random;
    this.#clock = repository.clock;
    this.#refusalCacheSize = options.refusalCacheSize ?? 10_000;
  }

  /** The repository. */
  get repository(): Repository {
    return this.#repo;
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
    const lease = await this.#admit(options);
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
        throw this.#unavailable(e, options);
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
      return await this.#decide(entityId, resource, consume, o.limits ?? null);
    } catch (e) {
      if (e instanceof ZAELimiterError) throw e;
      const mode = o.onUnavailable ?? await this.#repo.resolveOnUnavailable();
      if (mode === "allow") {
        this.#onError(e, "acquire");
        return new Lease(null, entityId, resource, [], true);
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
    if (override === null) this.#checkRefusal(key, consume);
    try {
      return await this.#decideRemote(entityId, resource, consume, override);
    } catch (e) {
      if (e instanceof RateLimitExceeded && override === null) {
        this.#rememberRefusal(key, consume, e);
      }
      throw e;
    }
  }

  #verifiedKey(entityId: string, resource: string, shard: number): string {
    return `${this.#repo.namespaceId}\u0000${entityId}\u0000${resource}\u0000${shard}`;
  }

  #markVerified(key: string, limits: readonly Limit[]): void {
    if (!this.#verified.has(key) && this.#verified.size >= 100_000) {
      const oldest = this.#verified.keys().next();
      if (!oldest.done) this.#verified.delete(oldest.value);
    }
    this.#verified.set(key, limits);
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
    entityId: string,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease> {
    const resolved = await this.#resolve(entityId, resource, override);
    const info = this.#repo.entityInfo(entityId);
    const child = this.#side(
      entityId,
      resolved,
      consume,
      info?.shards.get(resource) ?? 1,
      true,
    );
    if (this.#speculative && child.charge.size > 0) {
      const lease = await this.#fast(child, resource, consume, override);
      if (lease) return lease;
    }
    return await this.#slow(child, resource, consume, override);
  }

  // ------------------------------------------------------------------ fast path

  #charges(side: Side): SpeculativeCharge[] {
    const out: SpeculativeCharge[] = [];
    for (const l of side.resolved.limits) {
      const amount = side.charge.get(l.name);
      if (amount !== undefined) {
        out.push({ name: l.name, amount, params: paramsOf(l) });
      }
    }
    return out;
  }

  async #specWrite(
    side: Side,
    resource: string,
    shard: number,
    nowMs: number,
  ): Promise<
    { ok: true; item: BucketItem | null } | {
      ok: false;
      old: BucketItem | null;
    }
  > {
    const info = this.#repo.entityInfo(side.entityId);
    const key = this.#verifiedKey(side.entityId, resource, shard);
    // A warm write is the bare conditional ADD; anything not yet verified gets the full write.
    const full = info === undefined || info.refreshAt <= nowMs ||
      this.#verified.get(key) !== side.resolved.limits;
    const update = speculativeUpdate(
      this.#repo.tableName,
      { ns: this.#repo.namespaceId, entityId: side.entityId, resource, shard },
      this.#charges(side),
      Math.floor(nowMs / 1000),
      full ? numericTtl(this.#repo.bucketTtl(side.resolved, nowMs)) : null,
      full,
    );
    try {
      const out = await this.#repo.send<{ Attributes?: Item }>(
        new UpdateItemCommand(update),
      );
      return {
        ok: true,
        item: full ? decodeBucket(out.Attributes ?? {}, shard) : null,
      };
    } catch (e) {
      if (!isConditionFailed(e)) throw e;
      const old = oldImage(e);
      return { ok: false, old: old ? decodeBucket(old, shard) : null };
    }
  }

  /** Why a failed speculative write failed: `refuse` (refill cannot help) or `slow`. */
  #classify(
    side: Side,
    old: BucketItem | null,
    nowMs: number,
  ): { kind: "slow" } | {
    kind: "refuse";
    statuses: LimitStatus[];
  } {
    if (!old) return { kind: "slow" };
    if (old.ttl !== null && old.ttl <= Math.floor(nowMs / 1000)) {
      return { kind: "slow" };
    }
    const statuses: LimitStatus[] = [];
    let refuse = false;
    const now = BigInt(nowMs);
    for (const l of side.resolved.limits) {
      const stored = old.limits.get(l.name);
      const amount = side.charge.get(l.name) ?? 0n;
      if (!stored) {
        if (amount > 0n) return { kind: "slow" };
        continue;
      }
      if (amount > 0n && !sameParams(stored.params, paramsOf(l))) {
        return { kind: "slow" };
      }
      const eff = paramsOf(l, side.shards);
      const c = tryConsume(stored.tk, old.rf, now, eff, amount);
      if (!c.ok) refuse = true;
      statuses.push(
        this.#status(
          side.entityId,
          old.resource,
          l,
          c.available,
          amount,
          c.ok,
          c.retryAfterSeconds,
        ),
      );
    }
    const wcu = old.limits.get(WCU_LIMIT_NAME);
    if (!refuse && wcu && wcu.tk < WCU_PER_WRITE) return { kind: "slow" };
    return refuse ? { kind: "refuse", statuses } : { kind: "slow" };
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
        consumed: amount,
        written: amount,
      };
    });
  }

  /** Gives a side's charge back (unconditional); returns the item afterwards. */
  async #compensate(
    side: Side,
    resource: string,
    shard: number,
  ): Promise<BucketItem | null> {
    const deltas = new Map<string, bigint>();
    for (const [n, a] of side.charge) deltas.set(n, -a);
    // The write is given back too, so usage snapshots do not count a refused acquire as an event.
    deltas.set(WCU_LIMIT_NAME, -WCU_PER_WRITE);
    const ref = {
      ns: this.#repo.namespaceId,
      entityId: side.entityId,
      resource,
      shard,
    };
    try {
      const out = await this.#repo.send<{ Attributes?: Item }>(
        new UpdateItemCommand({
          ...deltaUpdate(this.#repo.tableName, ref, deltas),
          ReturnValues: "ALL_NEW",
        }),
      );
      return out.Attributes ? decodeBucket(out.Attributes, shard) : null;
    } catch (e) {
      this.#onError(e, "compensate");
      throw e;
    }
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

  async #fast(
    child: Side,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease | null> {
    const nowMs = this.#clock.now();
    const info = this.#repo.entityInfo(child.entityId);
    let parent: Side | null = null;
    if (info?.cascade && info.parentId) {
      parent = await this.#parentSide(
        info.parentId,
        resource,
        consume,
        override,
      );
    }
    const parentCharged = parent !== null && parent.charge.size > 0;
    const [c, p] = await Promise.all([
      this.#specWrite(child, resource, child.shard, nowMs),
      parentCharged && parent
        ? this.#specWrite(parent, resource, parent.shard, nowMs)
        : Promise.resolve(null),
    ]);

    if (!c.ok) {
      if (p?.ok && parent) {
        await this.#compensate(parent, resource, parent.shard);
      }
      const verdict = this.#classify(child, c.old, nowMs);
      if (verdict.kind === "refuse" && child.shards > 1) {
        // Another shard may still hold tokens.
        for (let i = 1; i < Math.min(child.shards, 3); i++) {
          const other = (child.shard + i) % child.shards;
          const r = await this.#specWrite(child, resource, other, nowMs);
          if (r.ok) {
            this.#learn(child.entityId, resource, r.item);
            return await this.#withParent(
              child,
              resource,
              other,
              r.item,
              consume,
              override,
              nowMs,
              info !== undefined,
            );
          }
        }
      }
      if (verdict.kind === "refuse") {
        throw new RateLimitExceeded(verdict.statuses);
      }
      return null;
    }
    this.#learn(child.entityId, resource, c.item);
    if (p === null) {
      return await this.#withParent(
        child,
        resource,
        child.shard,
        c.item,
        consume,
        override,
        nowMs,
        info !== undefined,
      );
    }
    const charged = parent as Side;
    if (p.ok) {
      this.#learn(charged.entityId, resource, p.item);
      return new Lease(this.#repo, child.entityId, resource, [
        ...this.#entries(child, resource, child.shard),
        ...this.#entries(charged, resource, charged.shard),
      ]);
    }
    return await this.#parentFailed(
      child,
      charged,
      resource,
      child.shard,
      p.old,
      nowMs,
    );
  }

  /** After the child's write: charge the parent when the item says so and the cache did not know. */
  async #withParent(
    child: Side,
    resource: string,
    shard: number,
    item: BucketItem | null,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
    nowMs: number,
    cacheKnew: boolean,
  ): Promise<Lease> {
    const entries = this.#entries(child, resource, shard);
    if (cacheKnew || !item || !item.cascade || !item.parentId) {
      return new Lease(this.#repo, child.entityId, resource, entries);
    }
    const parent = await this.#parentSide(
      item.parentId,
      resource,
      consume,
      override,
    );
    if (!parent || parent.charge.size === 0) {
      return new Lease(this.#repo, child.entityId, resource, entries);
    }
    const p = await this.#specWrite(parent, resource, parent.shard, nowMs);
    if (p.ok) {
      this.#learn(parent.entityId, resource, p.item);
      return new Lease(this.#repo, child.entityId, resource, [
        ...entries,
        ...this.#entries(parent, resource, parent.shard),
      ]);
    }
    const lease = await this.#parentFailed(
      child,
      parent,
      resource,
      shard,
      p.old,
      nowMs,
    );
    if (lease) return lease;
    return await this.#slow(child, resource, consume, override);
  }

  async #parentFailed(
    child: Side,
    parent: Side,
    resource: string,
    childShard: number,
    old: BucketItem | null,
    nowMs: number,
  ): Promise<Lease | null> {
    const after = await this.#compensate(child, resource, childShard);
    const verdict = this.#classify(parent, old, nowMs);
    if (verdict.kind === "refuse") {
      // The child's own view, from its item as it is after the compensation.
      const now = BigInt(nowMs);
      const childStatuses = child.resolved.limits.map((l) => {
        const a = child.charge.get(l.name) ?? 0n;
        const stored = after?.limits.get(l.name);
        const eff = paramsOf(l, child.shards);
        const c = stored && after
          ? tryConsume(stored.tk, after.rf, now, eff, a)
          : null;
        return this.#status(
          child.entityId,
          resource,
          l,
          c ? c.available : wholeTokens(eff.cp),
          a,
          true,
          0,
        );
      });
      throw new RateLimitExceeded([...childStatuses, ...verdict.statuses]);
    }
    return null;
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
    const span = item ? sharedRefillSpan(rf, now, effective) : 0n;
    const claimed = rf + span;
    const limits: PlannedLimit[] = [];
    const statuses: LimitStatus[] = [];
    side.resolved.limits.forEach((l, i) => {
      const eff = effective[i] as BucketParams;
      const stored = item?.limits.get(l.name);
      const amount = side.charge.get(l.name) ?? 0n;
      const start = stored ? stored.tk : eff.cp;
      // Clamp a balance above a lowered capacity even when no refill is due.
      const base = start > eff.cp ? eff.cp : start;
      const c = tryConsume(base, rf, claimed, eff, amount);
      statuses.push(
        this.#status(
          side.entityId,
          resource,
          l,
          c.available,
          amount,
          c.ok,
          c.ok ? 0 : (
            // The wait is measured from now, not from the claimed refill time.
            retryAfterSeconds(amount - refill(base, rf, now, eff).tk, eff)
          ),
        ),
      );
      limits.push({
        name: l.name,
        params: paramsOf(l),
        tkBefore: stored ? stored.tk : null,
        tkAfter: c.tk,
        consumed: c.ok ? amount : 0n,
      });
    });
    const wcu = item?.limits.get(WCU_LIMIT_NAME);
    const wcuNow = wcu
      ? refill(wcu.tk, rf, claimed, WCU_PARAMS).tk
      : WCU_PARAMS.cp;
    limits.push({
      name: WCU_LIMIT_NAME,
      params: WCU_PARAMS,
      tkBefore: wcu ? wcu.tk : null,
      tkAfter: wcuNow - WCU_PER_WRITE,
      consumed: WCU_PER_WRITE,
    });
    return {
      side,
      ref,
      item,
      limits,
      statuses,
      wcuShort: wcuNow < WCU_PER_WRITE,
      rfAfter: item ? claimed : now,
      cascade: meta.cascade,
      parentId: meta.parentId,
    };
  }

  #write(plan: Plan, nowMs: number): TransactWriteItem {
    const item = plan.item;
    return slowPathWrite(this.#repo.tableName, {
      ref: plan.ref,
      create: item === null,
      expectedRf: item ? item.rf : 0n,
      now: plan.rfAfter,
      limits: plan.limits,
      cascade: plan.cascade,
      parentId: plan.parentId,
      shardCount: plan.side.shards,
      ttl: this.#repo.bucketTtl(plan.side.resolved, nowMs),
    });
  }

  async #slow(
    child0: Side,
    resource: string,
    consume: Map<string, bigint>,
    override: readonly Limit[] | null,
  ): Promise<Lease> {
    let child = child0;
    for (let attempt = 0;; attempt++) {
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
      const keys: Item[] = [
        { PK: { S: pkEntity(ns, child.entityId) }, SK: { S: SK.META } },
        bucketKey({
          ns,
          entityId: child.entityId,
          resource,
          shard: child.shard,
        }),
      ];
      if (guessParent) {
        keys.push(
          bucketKey({
            ns,
            entityId: guessParent,
            resource,
            shard: parentShard,
          }),
        );
      }
      const items = await this.#repo.batchGet(keys, true);
      const byPk = new Map(items.map((i) => [str(i, "PK") ?? "", i]));
      const metaItem = byPk.get(pkEntity(ns, child.entityId));
      const cascade = metaItem ? bool(metaItem, "cascade") ?? false : false;
      const parentId = metaItem ? str(metaItem, "parent_id") : null;
      this.#repo.rememberEntity(child.entityId, { cascade, parentId });
      const childItemRaw = byPk.get(
        this.#repo.bucketPk(child.entityId, resource, child.shard),
      );
      const childItem = childItemRaw
        ? decodeBucket(childItemRaw, child.shard)
        : null;
      if (childItem) this.#learn(child.entityId, resource, childItem);
      if (childItem && childItem.shardCount !== child.shards) {
        child = { ...child, shards: childItem.shardCount };
      }
      const plans: Plan[] = [
        this.#plan(child, resource, childItem, nowMs, { cascade, parentId }),
      ];
      if (cascade && parentId) {
        const parent = await this.#parentSide(
          parentId,
          resource,
          consume,
          override,
        );
        if (parent && parent.charge.size > 0) {
          // The parent's bucket was read in the same batch when the cache knew the parent.
          const shard = parentId === guessParent ? parentShard : parent.shard;
          const raw = parentId === guessParent
            ? byPk.get(this.#repo.bucketPk(parentId, resource, shard))
            : undefined;
          const pItem = parentId === guessParent
            ? (raw ? decodeBucket(raw, shard) : null)
            : await this.#repo.getBucketItem(parentId, resource, shard);
          plans.push(
            this.#parentPlan({ ...parent, shard }, resource, pItem, nowMs),
          );
        }
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
          this.#markVerified(
            this.#verifiedKey(p.side.entityId, resource, p.ref.shard),
            p.side.resolved.limits,
          );
        }
        return new Lease(
          this.#repo,
          child.entityId,
          resource,
          plans.flatMap((p) => this.#entries(p.side, resource, p.ref.shard)),
        );
      }
      // Lost the optimistic lock or a create race. When every charged limit
      // existed, a consume-only write (no refill claimed) usually still fits.
      const canRetryPath = plans.every((p) =>
        p.item !== null &&
        p.limits.every((l) => l.tkBefore !== null || l.consumed === 0n)
      );
      if (canRetryPath && await this.#retryPath(plans) === "ok") {
        return new Lease(
          this.#repo,
          child.entityId,
          resource,
          plans.flatMap((p) => this.#entries(p.side, resource, p.ref.shard)),
        );
      }
      // Otherwise read again: the next decision reports true balances if it refuses.
      if (attempt + 1 >= MAX_SLOW_ATTEMPTS) {
        throw new RateLimitExceeded(this.#contended(plans));
      }
      const base = 10 * 2 ** attempt;
      await this.#clock.sleep(this.#random() * base);
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

  /** Sends the writes; `conflict` when a condition failed. Retries pure transaction conflicts. */
  async #send(
    writes: TransactWriteItem[],
    plans?: Plan[],
  ): Promise<"ok" | "conflict"> {
    for (let attempt = 0;; attempt++) {
      try {
        await this.#repo.writeItems(writes);
        return "ok";
      } catch (e) {
        if (isConditionFailed(e)) return "conflict";
        if (cancellationCodes(e).includes("ConditionalCheckFailed")) {
          return "conflict";
        }
        // Other writers on the same items (a transaction, or a write racing one).
        const conflict = isTransactionConflictOnly(e) ||
          errorName(e) === "TransactionConflictException";
        if (conflict && attempt < MAX_CONFLICT_RETRIES) {
          const base = 25 * 2 ** Math.min(attempt, 4);
          await this.#clock.sleep(base / 2 + this.#random() * base);
          continue;
        }
        if (conflict && plans) {
          throw new RateLimitExceeded(this.#contended(plans));
        }
        throw e;
      }
    }
  }

  /** Consume-only writes that claim no refill (spec 02 §4.2 retry path). */
  async #retryPath(plans: Plan[]): Promise<"ok" | "conflict"> {
    const writes: TransactWriteItem[] = plans.map((p) => {
      const amounts = new Map<string, bigint>();
      for (const l of p.limits) {
        if (l.name !== WCU_LIMIT_NAME && l.consumed > 0n) {
          amounts.set(l.name, l.consumed);
        }
      }
      return {
        Update: consumeOnlyUpdate(this.#repo.tableName, p.ref, amounts, true),
      };
    });
    return await this.#send(writes, plans);
  }

  async #bumpShards(
    entityId: string,
    resource: string,
    item: BucketItem | null,
  ): Promise<void> {
    const current = item?.shardCount ?? 1;
    const key = bucketKey({
      ns: this.#repo.namespaceId,
      entityId,
      resource,
      shard: 0,
    });
    try {
      await this.#repo.send(
        new UpdateItemCommand({
          TableName: this.#repo.tableName,
          Key: key,
          UpdateExpression: "SET shard_count = :n",
          ConditionExpression: "shard_count = :c",
          ExpressionAttributeValues: {
            ":n": { N: String(current * 2) },
            ":c": { N: String(current) },
          },
        }),
      );
      this.#repo.rememberEntity(entityId, {
        cascade: item?.cascade ?? false,
        parentId: item?.parentId ?? null,
      }, { resource, count: current * 2 });
    } catch (e) {
      if (!isConditionFailed(e)) throw e;
    }
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
    const entityId = validateIdentifier(o.entityId);
    const resource = validateResource(o.resource);
    const resolved = await this.#resolve(entityId, resource, o.limits ?? null);
    const entity = await this.#repo.getEntity(entityId);
    const out: {
      side: ResolvedLimits;
      entityId: string;
      items: BucketItem[];
      shards: number;
    }[] = [];
    const load = async (id: string, r: ResolvedLimits): Promise<void> => {
      const first = await this.#repo.getBucketItem(id, resource, 0);
      const shards = first?.shardCount ?? 1;
      const items: BucketItem[] = first ? [first] : [];
      for (let s = 1; s < shards; s++) {
        const it = await this.#repo.getBucketItem(id, resource, s);
        if (it) items.push(it);
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
    const now = BigInt(this.#clock.now());
    let wait = 0;
    for (const { side, items, shards } of await this.#capacityItems(options)) {
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

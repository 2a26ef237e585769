/**
 * The options of `Repository.open` and the configuration resolved from them
 * once: the table helper over the guarded, counted send, the clock (synced
 * to DynamoDB's when asked), the caches' sizes and the policies' defaults.
 *
 * @module
 */
import { type Clock, systemClock } from "./clock.ts";
import { EntityCache } from "./store/entity_cache.ts";
import {
  createTableClient,
  type DynamoDbClientLike,
  type TableClient,
} from "./store/table.ts";
import { countingSend } from "./telemetry.ts";
import { ClockSync, guardedSend, type Send } from "./transport.ts";
import { createUlid } from "./ulid.ts";

/** Options of {@linkcode Repository.open}. */
export interface RepositoryOptions {
  /** An SDK client (or anything with its `send`). Required. */
  readonly client: DynamoDbClientLike;
  /** Stack (= table) name. @default "zae-limiter" */
  readonly stack?: string;
  /** Namespace name. @default "default" */
  readonly namespace?: string;
  /**
   * Create the table when it is missing. Off by default: applications should
   * not provision infrastructure; the CLI's `deploy` does.
   * @default false
   */
  readonly provision?: boolean;
  /** Register the namespace when it is unknown (reference weakness 42: off by default). @default false */
  readonly registerNamespace?: boolean;
  /** Config cache time to live in seconds; 0 disables. @default 60 */
  readonly configCacheTtlSeconds?: number;
  /** Bucket TTL = time to fill × this; ≤ 0 disables. @default 7 */
  readonly bucketTtlMultiplier?: number;
  /** Audit retention when the system config does not say. @default 90 */
  readonly auditRetentionDays?: number;
  /** Clock. @default systemClock */
  readonly clock?: Clock;
  /** Who is acting, for audit events, when a call names no principal. @default () => null */
  readonly principal?: () => Promise<string | null>;
  /** Skip the version check (tools that inspect or migrate old tables). @default false */
  readonly skipVersionCheck?: boolean;
  /** Maximum entity-cache entries. @default 100000 */
  readonly entityCacheSize?: number;
  /**
   * Deadline in milliseconds of each DynamoDB command sent outside a call
   * that has its own (the limiter's calls carry theirs; see
   * {@linkcode Repository.withDeadline}). @default 10000
   */
  readonly timeoutMs?: number;
  /**
   * Correct the clock by the offset the `Date` headers of DynamoDB's answers
   * prove (bounds clock skew between clients; see the README).
   * @default true unless a `clock` is given
   */
  readonly clockSync?: boolean;
}

/** What every repository of one `open` shares. */
export interface ResolvedRepositoryConfig {
  /** The table helper (guarded, counted send; synced clock). */
  readonly io: TableClient;
  /** The clock sync, or `null` when off. */
  readonly clockSync: ClockSync | null;
  /** Default deadline of a command, in milliseconds. */
  readonly timeoutMs: number;
  /** Audit event ids. */
  readonly ulid: (now: number) => string;
  /** The entity cache of every namespace. */
  readonly entityCache: EntityCache;
  /** Namespace ids learnt so far (name → id). */
  readonly namespaceIds: Map<string, string>;
  /** Who is acting when a call names no principal. */
  readonly principal: () => Promise<string | null>;
  /** Bucket TTL multiplier. */
  readonly bucketTtlMultiplier: number;
  /** Audit retention when the system config does not say. */
  readonly auditRetentionDays: number;
  /** Config cache time to live in seconds. */
  readonly configCacheTtlSeconds: number;
}

/** Resolves the options of a table named `tableName` (already validated). */
export function resolveRepositoryConfig(
  tableName: string,
  options: RepositoryOptions,
): ResolvedRepositoryConfig {
  const localClock = options.clock ?? systemClock;
  const sync = (options.clockSync ?? options.clock === undefined)
    ? new ClockSync()
    : undefined;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const rawSend = options.client.send.bind(options.client) as Send;
  const clock = sync ? sync.clock(localClock) : localClock;
  const io = createTableClient({
    send: guardedSend(countingSend(rawSend), {
      defaultTimeoutMs: timeoutMs,
      clockSync: sync,
      localClock,
    }),
  }, { tableName, clock });
  const configCacheTtlSeconds = options.configCacheTtlSeconds ?? 60;
  return {
    io,
    clockSync: sync ?? null,
    timeoutMs,
    ulid: createUlid(),
    entityCache: new EntityCache({
      clock,
      size: options.entityCacheSize ?? 100_000,
      refreshSeconds: Math.max(1, configCacheTtlSeconds),
    }),
    namespaceIds: new Map(),
    principal: options.principal ?? (() => Promise.resolve(null)),
    bucketTtlMultiplier: options.bucketTtlMultiplier ?? 7,
    auditRetentionDays: options.auditRetentionDays ?? 90,
    configCacheTtlSeconds,
  };
}

/**
 * zae-limiter: a distributed rate limiter on DynamoDB.
 *
 * Token buckets in integer millitokens; several named limits charged
 * all-or-nothing in one call; leases that consume on acquire, adjust later
 * (LLM token reconciliation, debt allowed) and roll back on error;
 * parent/child entities with cascade; stored limits with a four-level
 * hierarchy and a cache; multi-tenant namespaces; audit events; one DynamoDB
 * round trip on the hot path. The stored format is the Python reference's
 * schema 0.10, so both clients can share a table.
 *
 * @example Acquire with a callback-scoped lease
 * ```ts ignore
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { Limit, RateLimiter, Repository } from "@zae/limiter";
 *
 * const repo = await Repository.open({ client: new DynamoDBClient({}), stack: "zae-limiter" });
 * const limiter = new RateLimiter(repo);
 * await repo.setSystemDefaults([Limit.perMinute("rpm", 100), Limit.perMinute("tpm", 10_000)]);
 * await limiter.acquire({ entityId: "key-1", resource: "openai/gpt-4", consume: { rpm: 1, tpm: 500 } }, async (lease) => {
 *   lease.adjust({ tpm: 120 }); // the answer used 620 tokens
 * });
 * ```
 *
 * @module
 */
export {
  CommitFailedError,
  EntityError,
  EntityExistsError,
  EntityNotFoundError,
  IncompatibleSchemaError,
  InfrastructureError,
  InfrastructureNotFoundError,
  InvalidIdentifierError,
  InvalidNameError,
  LeaseDeadlineExceeded,
  LeaseExpiredError,
  MinimumClientVersionError,
  NamespaceNotFoundError,
  NamespaceStateError,
  RateLimitError,
  RateLimiterUnavailable,
  RateLimitExceeded,
  RequestExceedsCapacity,
  StackAlreadyExistsError,
  StackOperationError,
  StreamBudgetExceeded,
  UsageReportError,
  ValidationError,
  VersionError,
  VersionMismatchError,
  ZAELimiterError,
} from "./core/errors.ts";
export type {
  MigrationErrorCode,
  StreamWorkerErrorCode,
  UnavailableContext,
  UsageIssue,
  WorkerErrorCode,
  ZaeLimiterErrorCode,
  ZAELimiterErrorOptions,
} from "./core/errors.ts";
export { Limit, LimitName } from "./core/limit.ts";
export type {
  LimitDict,
  LimitOptions,
  PerCalendarOptions,
} from "./core/limit.ts";
export { CALENDAR_PERIODS, calendarWindow } from "./core/calendar.ts";
export type {
  CalendarPeriod,
  CalendarSpec,
  CalendarWindow,
} from "./core/calendar.ts";
export type { ShadowReport, ShadowSelection } from "./core/acquire/shadow.ts";
export { ConcurrencyLimit } from "./core/concurrency_limit.ts";
export type { ConcurrencyLimitOptions } from "./core/concurrency_limit.ts";
export type { SlotStoreOptions } from "./core/acquire/concurrency.ts";
export type {
  SlotRef,
  SlotState,
  SlotStore,
  SlotTake,
  TakeResult,
} from "./core/acquire/slot_store.ts";
export type { LeaseDeadlineOptions } from "./core/acquire/lease_deadline.ts";
export { AuditAction } from "./core/models.ts";
export type {
  AuditActionName,
  AuditEvent,
  CacheStats,
  ConfigSource,
  Entity,
  LimitStatus,
  NamespaceInfo,
  OnUnavailable,
  UsageSnapshot,
  UsageSnapshotFilter,
} from "./core/models.ts";
export { RateLimiter } from "./core/limiter.ts";
export type {
  AcquireOptions,
  CapacityOptions,
  RateLimiterOptions,
} from "./core/limiter.ts";
export type { WaitOptions } from "./core/acquire/wait.ts";
export {
  leaseHolds,
  parseAnthropicUsage,
  parseOpenAIUsage,
  reconcileUsage,
  safeParseAnthropicUsage,
  safeParseOpenAIUsage,
  usageCharges,
  usageDeltas,
} from "./core/llm_usage.ts";
export type {
  TokenPrices,
  TokenUsage,
  UsageChargeOptions,
  UsageLimitNames,
  UsageParseResult,
} from "./core/llm_usage.ts";
export { meterStream } from "./core/llm_stream.ts";
export type { MeterStreamOptions } from "./core/llm_stream.ts";
export { Lease } from "./core/lease.ts";
export type {
  LocalFallbackLimiterOptions,
  LocalFallbackOptions,
} from "./core/local_fallback.ts";
export type {
  LocalReserveOptions,
  LocalReserveStats,
  SliceEvent,
} from "./core/acquire/reserve_config.ts";
export type {
  DecisionOutcome,
  DecisionPath,
  MeterProviderLike,
  TelemetryOptions,
  TracerProviderLike,
} from "./core/telemetry.ts";
export type {
  LeaseEnding,
  LeaseEntry,
  LeaseState,
  StrandedCharge,
} from "./core/lease.ts";
export {
  AmbiguousWriteError,
  DeadlineExceededError,
  type DeadlineOptions,
} from "./core/transport.ts";
export { Repository } from "./core/repository.ts";
export type {
  CreateEntityOptions,
  DynamoDbClientLike,
  EntityInfo,
  RepositoryOptions,
  ResolvedLimits,
} from "./core/repository.ts";
export type {
  EntityCapacity,
  LimitCapacity,
  ResourceCapacity,
  ResourceCapacityOptions,
  ResourceCapacityProgress,
} from "./core/resource_capacity.ts";
export type { BucketItem, BucketRef, StoredLimit } from "./core/bucket_item.ts";
export type { BucketParams } from "./core/bucket.ts";
export { type Clock, systemClock } from "./core/clock.ts";
export { checkCompatibility } from "./core/version.ts";
export type {
  Compatibility,
  CompatibilityIssue,
  VersionRecord,
} from "./core/version.ts";
export { CLIENT_VERSION, SCHEMA_VERSION } from "./core/schema.ts";
export {
  DEFAULT_NAMESPACE,
  DEFAULT_RESOURCE,
  isUnprefixedKey,
  KeyParseError,
  parseBucketPk,
  parseNamespace,
  RESERVED_NAMESPACE,
  safeParseBucketPk,
  safeParseNamespace,
} from "./core/keys.ts";
export type {
  BucketKey,
  KeyIssue,
  NamespacedKey,
  ParseResult,
} from "./core/keys.ts";

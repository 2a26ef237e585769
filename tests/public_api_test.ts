/**
 * Pins the public surface of `mod.ts`: every exported name and its kind. An
 * API change is then a visible diff of this file (house style A.3).
 */
import assert from "node:assert/strict";
import * as api from "../mod.ts";

/** Every runtime export of `mod.ts` and its kind. */
const RUNTIME_EXPORTS: Readonly<Record<string, string>> = {
  AmbiguousWriteError: "class",
  AuditAction: "object",
  CALENDAR_PERIODS: "object",
  CLIENT_VERSION: "string",
  CommitFailedError: "class",
  ConcurrencyLimit: "class",
  DEFAULT_NAMESPACE: "string",
  DEFAULT_RESOURCE: "string",
  DeadlineExceededError: "class",
  EntityError: "class",
  EntityExistsError: "class",
  EntityNotFoundError: "class",
  IncompatibleSchemaError: "class",
  InfrastructureError: "class",
  InfrastructureNotFoundError: "class",
  InvalidIdentifierError: "class",
  InvalidNameError: "class",
  KeyParseError: "class",
  Lease: "class",
  LeaseDeadlineExceeded: "class",
  LeaseExpiredError: "class",
  Limit: "class",
  LimitName: "object",
  MinimumClientVersionError: "class",
  NamespaceNotFoundError: "class",
  NamespaceStateError: "class",
  RESERVED_NAMESPACE: "string",
  RateLimitError: "class",
  RateLimitExceeded: "class",
  RateLimiter: "class",
  RateLimiterUnavailable: "class",
  Repository: "class",
  RequestExceedsCapacity: "class",
  SCHEMA_VERSION: "string",
  StackAlreadyExistsError: "class",
  StackOperationError: "class",
  StreamBudgetExceeded: "class",
  UsageReportError: "class",
  ValidationError: "class",
  VersionError: "class",
  VersionMismatchError: "class",
  ZAELimiterError: "class",
  calendarWindow: "function",
  checkCompatibility: "function",
  isUnprefixedKey: "function",
  leaseHolds: "function",
  meterStream: "function",
  parseAnthropicUsage: "function",
  parseBucketPk: "function",
  parseNamespace: "function",
  parseOpenAIUsage: "function",
  reconcileUsage: "function",
  safeParseAnthropicUsage: "function",
  safeParseBucketPk: "function",
  safeParseNamespace: "function",
  safeParseOpenAIUsage: "function",
  systemClock: "object",
  usageCharges: "function",
  usageDeltas: "function",
};

/** Every type-only export of `mod.ts` (erased at runtime, read from its text). */
const TYPE_EXPORTS: readonly string[] = [
  "AcquireOptions",
  "AuditActionName",
  "AuditEvent",
  "BucketItem",
  "BucketKey",
  "BucketParams",
  "BucketRef",
  "CacheStats",
  "CalendarPeriod",
  "CalendarSpec",
  "CalendarWindow",
  "CapacityOptions",
  "Clock",
  "Compatibility",
  "CompatibilityIssue",
  "ConfigSource",
  "CreateEntityOptions",
  "DeadlineOptions",
  "DecisionOutcome",
  "DecisionPath",
  "DynamoDbClientLike",
  "Entity",
  "EntityCapacity",
  "EntityInfo",
  "KeyIssue",
  "LeaseEnding",
  "LeaseEntry",
  "LeaseState",
  "LocalFallbackLimiterOptions",
  "LeaseDeadlineOptions",
  "TakeResult",
  "SlotTake",
  "SlotStore",
  "SlotState",
  "SlotRef",
  "SlotStoreOptions",
  "ConcurrencyLimitOptions",
  "LimitCapacity",
  "LimitDict",
  "LimitOptions",
  "LimitStatus",
  "LocalReserveOptions",
  "LocalReserveStats",
  "LocalFallbackOptions",
  "MeterProviderLike",
  "MeterStreamOptions",
  "MigrationErrorCode",
  "NamespaceInfo",
  "NamespacedKey",
  "OnUnavailable",
  "ParseResult",
  "PerCalendarOptions",
  "RateLimiterOptions",
  "RepositoryOptions",
  "ResolvedLimits",
  "ResourceCapacity",
  "ResourceCapacityOptions",
  "ResourceCapacityProgress",
  "ShadowReport",
  "ShadowSelection",
  "SliceEvent",
  "StoredLimit",
  "StrandedCharge",
  "StreamWorkerErrorCode",
  "TelemetryOptions",
  "TokenPrices",
  "TokenUsage",
  "TracerProviderLike",
  "UnavailableContext",
  "UsageChargeOptions",
  "UsageIssue",
  "UsageLimitNames",
  "UsageParseResult",
  "UsageSnapshot",
  "UsageSnapshotFilter",
  "VersionRecord",
  "WaitOptions",
  "WorkerErrorCode",
  "ZAELimiterErrorOptions",
  "ZaeLimiterErrorCode",
];

function kindOf(value: unknown): string {
  if (typeof value === "function") {
    return /^class\b/.test(Function.prototype.toString.call(value))
      ? "class"
      : "function";
  }
  return value === null ? "null" : typeof value;
}

/** The names `mod.ts` exports, split by kind of export clause. */
function declaredExports(
  source: string,
): { values: string[]; types: string[] } {
  const values: string[] = [];
  const types: string[] = [];
  const clause = /export\s+(type\s+)?\{([^}]*)\}\s*from\s*"[^"]+";/g;
  for (const [, typeOnly, body] of source.matchAll(clause)) {
    for (const raw of (body ?? "").split(",")) {
      const entry = raw.replace(/\/\/.*$/gm, "").trim();
      if (entry === "") continue;
      const isType = typeOnly !== undefined || entry.startsWith("type ");
      const name = entry.replace(/^type\s+/, "").split(/\s+as\s+/).at(-1)
        ?.trim() as string;
      (isType ? types : values).push(name);
    }
  }
  assert.doesNotMatch(
    source,
    /export\s+\*|export\s+(const|let|function|class|interface|type\s+\w+\s*=|default)\b/,
    "mod.ts lists re-exports by name only",
  );
  return { values: values.sort(), types: types.sort() };
}

Deno.test("mod.ts exports exactly the pinned runtime names, each of its kind", () => {
  const actual = Object.fromEntries(
    Object.keys(api).sort().map((k) => [
      k,
      kindOf((api as Record<string, unknown>)[k]),
    ]),
  );
  assert.deepEqual(actual, RUNTIME_EXPORTS);
});

Deno.test("mod.ts exports exactly the pinned type names", async () => {
  const source = await Deno.readTextFile(new URL("../mod.ts", import.meta.url));
  const { values, types } = declaredExports(source);
  assert.deepEqual(values, Object.keys(RUNTIME_EXPORTS).sort());
  assert.deepEqual(types, [...TYPE_EXPORTS].sort());
});

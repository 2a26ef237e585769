/**
 * The one base class of the library's errors, and the one union of their
 * stable codes (API: never renamed or reused). The error classes of the
 * limiter live in `errors.ts`, the migration error in
 * `migrations/migration.ts`, the stream worker errors in `workers/`; all of
 * them extend {@linkcode ZAELimiterError} and use a code of this union.
 *
 * Limiter and repository (`errors.ts`):
 *
 * | code | class | meaning |
 * |------|-------|---------|
 * | `RATE_LIMIT_EXCEEDED` | `RateLimitExceeded` | one or more limits refused the request |
 * | `REQUEST_EXCEEDS_CAPACITY` | `RequestExceedsCapacity` | the request is larger than a limit's capacity: it can never be admitted |
 * | `USAGE_INVALID` | `UsageReportError` | a provider's usage report is missing a field or has a negative, fractional or non-number count (`issues` names each field) |
 * | `STREAM_BUDGET_EXCEEDED` | `StreamBudgetExceeded` | a metered stream would cross its token budget and was stopped |
 * | `LEASE_EXPIRED` | `LeaseExpiredError` | the lease was already committed or rolled back |
 * | `LEASE_DEADLINE_EXCEEDED` | `LeaseDeadlineExceeded` | the lease's `maxHoldMs` (or a concurrency limit's `leaseMs`) passed: it can no longer be adjusted, consumed from or committed; what it charged stays charged |
 * | `RATE_LIMITER_UNAVAILABLE` | `RateLimiterUnavailable` | DynamoDB failed and `onUnavailable` is `block` |
 * | `STACK_OPERATION_FAILED` | `StackOperationError` | a CloudFormation operation failed |
 * | `STACK_ALREADY_EXISTS` | `StackAlreadyExistsError` | |
 * | `INFRASTRUCTURE_NOT_FOUND` | `InfrastructureNotFoundError` | the table does not exist |
 * | `NAMESPACE_NOT_FOUND` | `NamespaceNotFoundError` | the namespace name is not registered |
 * | `NAMESPACE_STATE` | `NamespaceStateError` | the namespace is in the wrong state for the operation |
 * | `ENTITY_NOT_FOUND` | `EntityNotFoundError` | |
 * | `ENTITY_EXISTS` | `EntityExistsError` | |
 * | `VERSION_MISMATCH` | `VersionMismatchError` | workers are older than the client |
 * | `INCOMPATIBLE_SCHEMA` | `IncompatibleSchemaError` | a migration is required |
 * | `MINIMUM_CLIENT_VERSION` | `MinimumClientVersionError` | the table requires a newer client |
 * | `VALIDATION_FAILED` | `ValidationError` | an input value is invalid |
 * | `INVALID_IDENTIFIER` | `InvalidIdentifierError` | an entity id, parent id or principal is invalid |
 * | `INVALID_NAME` | `InvalidNameError` | a limit or resource name is invalid |
 *
 * Migrations (`MigrationError`, {@linkcode MigrationErrorCode}):
 *
 * | code | meaning |
 * |------|---------|
 * | `MIGRATION_LOCKED` | another run holds the migration lock (`details.owner`, `details.expiresAt`, `details.stale`) |
 * | `MIGRATION_LOCK_LOST` | this run's lock was taken over (it expired and was broken) |
 * | `MIGRATION_FAILED` | a migration threw (`cause`; `details.migration`, `details.applied`) |
 * | `MIGRATION_NOT_INITIALIZED` | the table has no version record at all |
 * | `MIGRATION_NAMESPACE_MISSING` | the target namespace is not registered and registration is off |
 * | `MIGRATION_DRIFT` | the delete phase found originals changed after their copy (`details.keys`); nothing of that page was deleted |
 * | `MIGRATION_SCHEMA_MISSING` | the table lacks what the 0.10 layout needs (`details.missing`, e.g. `GSI4`) |
 *
 * Stream workers (`StreamWorkerError`, {@linkcode StreamWorkerErrorCode}):
 *
 * | code | meaning |
 * |------|---------|
 * | `STREAM_THROTTLED` | DynamoDB Streams refused the call for rate (`LimitExceededException`, throttling) |
 * | `STREAM_ITERATOR_EXPIRED` | the shard iterator is older than 15 minutes (`ExpiredIteratorException`) |
 * | `STREAM_DATA_TRIMMED` | the requested position is older than the 24 h retention (`TrimmedDataAccessException`) |
 * | `STREAM_NOT_FOUND` | the stream or shard does not exist (`ResourceNotFoundException`) |
 * | `STREAM_UNAVAILABLE` | any other failure of the Streams service or the network |
 * | `COORDINATION_CONFLICT` | a lease or commit write lost a race that is worth retrying (transaction conflict) |
 * | `DEPENDENCY_TIMEOUT` | a DynamoDB or DynamoDB Streams call did not answer within its deadline (retryable) |
 *
 * Worker process (`workers/runtime.ts`, {@linkcode WorkerErrorCode}):
 *
 * | code | class | meaning |
 * |------|-------|---------|
 * | `WORKER_STOPPED` | `WorkerStoppedError` | the worker stopped on a failure no retry can fix (`cause`) |
 * | `CONFIG_INVALID` | {@linkcode ZAELimiterError} | the worker's configuration cannot run (e.g. the archiver without a destination) |
 *
 * @module
 */

import { escapeText } from "./_escape_text.ts";

/** Stable codes of `MigrationError` (`migrations/migration.ts`). */
export type MigrationErrorCode =
  | "MIGRATION_LOCKED"
  | "MIGRATION_LOCK_LOST"
  | "MIGRATION_FAILED"
  | "MIGRATION_NOT_INITIALIZED"
  | "MIGRATION_NAMESPACE_MISSING"
  | "MIGRATION_DRIFT"
  | "MIGRATION_SCHEMA_MISSING";

/** Stable codes of `StreamWorkerError` (`workers/errors.ts`). */
export type StreamWorkerErrorCode =
  | "STREAM_THROTTLED"
  | "STREAM_ITERATOR_EXPIRED"
  | "STREAM_DATA_TRIMMED"
  | "STREAM_NOT_FOUND"
  | "STREAM_UNAVAILABLE"
  | "COORDINATION_CONFLICT"
  | "DEPENDENCY_TIMEOUT";

/** Stable codes of the worker process (`workers/runtime.ts`). */
export type WorkerErrorCode = "WORKER_STOPPED" | "CONFIG_INVALID";

/** Every stable error code (the tables above document each one). */
export type ZaeLimiterErrorCode =
  | "RATE_LIMIT_EXCEEDED"
  | "LEASE_EXPIRED"
  | "LEASE_DEADLINE_EXCEEDED"
  | "RATE_LIMITER_UNAVAILABLE"
  | "STACK_OPERATION_FAILED"
  | "STACK_ALREADY_EXISTS"
  | "INFRASTRUCTURE_NOT_FOUND"
  | "NAMESPACE_NOT_FOUND"
  | "NAMESPACE_STATE"
  | "ENTITY_NOT_FOUND"
  | "ENTITY_EXISTS"
  | "VERSION_MISMATCH"
  | "INCOMPATIBLE_SCHEMA"
  | "MINIMUM_CLIENT_VERSION"
  | "VALIDATION_FAILED"
  | "INVALID_IDENTIFIER"
  | "INVALID_NAME"
  | "REQUEST_EXCEEDS_CAPACITY"
  | "USAGE_INVALID"
  | "STREAM_BUDGET_EXCEEDED"
  | MigrationErrorCode
  | StreamWorkerErrorCode
  | WorkerErrorCode;

/** Options of {@linkcode ZAELimiterError}. */
export interface ZAELimiterErrorOptions extends ErrorOptions {
  /** Whether retrying the same call later may succeed. @default false */
  retryable?: boolean;
  /** Who must act: the caller (`client`) or the operator / AWS (`server`). @default "client" */
  fault?: "client" | "server";
}

/**
 * Base class of every error this library throws on purpose.
 *
 * @example Match on the code, not the prose
 * ```ts
 * import assert from "node:assert/strict";
 * import { ZAELimiterError } from "./zae_limiter_error.ts";
 *
 * const e = new ZAELimiterError("CONFIG_INVALID", "Cannot run the archiver: no destination");
 * assert.equal(e.code, "CONFIG_INVALID");
 * assert.equal(e.retryable, false);
 * assert.equal(e.fault, "client");
 * ```
 */
export class ZAELimiterError extends Error {
  /** Stable machine-readable code. */
  readonly code: ZaeLimiterErrorCode;
  /** Whether retrying the same call later may succeed. */
  readonly retryable: boolean;
  /** Who must act: the caller (`client`) or the operator / AWS (`server`). */
  readonly fault: "client" | "server";

  /** Creates an error with a code; `options.cause` is forwarded. */
  constructor(
    code: ZaeLimiterErrorCode,
    message: string,
    options: ZAELimiterErrorOptions = {},
  ) {
    // A safety net: no message carries a raw control character.
    super(
      escapeText(message),
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "ZAELimiterError";
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.fault = options.fault ?? "client";
  }
}

/**
 * Normalizes a thrown value into an `Error` (an `Error` as is, anything else
 * wrapped with its string form).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { toError } from "./zae_limiter_error.ts";
 *
 * assert.equal(toError("boom").message, "Non-error thrown: boom");
 * ```
 */
export function toError(error: unknown): Error {
  return error instanceof Error
    ? error
    : new Error(`Non-error thrown: ${String(error)}`);
}

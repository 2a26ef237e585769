/**
 * The error hierarchy. Class names match the Python reference byte for byte;
 * every error also carries a stable `code` (API: never renamed or reused).
 *
 * | code | class | meaning |
 * |------|-------|---------|
 * | `RATE_LIMIT_EXCEEDED` | {@linkcode RateLimitExceeded} | one or more limits refused the request |
 * | `LEASE_EXPIRED` | {@linkcode LeaseExpiredError} | the lease was already committed or rolled back |
 * | `RATE_LIMITER_UNAVAILABLE` | {@linkcode RateLimiterUnavailable} | DynamoDB failed and `onUnavailable` is `block` |
 * | `STACK_OPERATION_FAILED` | {@linkcode StackOperationError} | a CloudFormation operation failed |
 * | `STACK_ALREADY_EXISTS` | {@linkcode StackAlreadyExistsError} | |
 * | `INFRASTRUCTURE_NOT_FOUND` | {@linkcode InfrastructureNotFoundError} | the table does not exist |
 * | `NAMESPACE_NOT_FOUND` | {@linkcode NamespaceNotFoundError} | the namespace name is not registered |
 * | `NAMESPACE_STATE` | {@linkcode NamespaceStateError} | the namespace is in the wrong state for the operation |
 * | `ENTITY_NOT_FOUND` | {@linkcode EntityNotFoundError} | |
 * | `ENTITY_EXISTS` | {@linkcode EntityExistsError} | |
 * | `VERSION_MISMATCH` | {@linkcode VersionMismatchError} | workers are older than the client |
 * | `INCOMPATIBLE_SCHEMA` | {@linkcode IncompatibleSchemaError} | a migration is required |
 * | `MINIMUM_CLIENT_VERSION` | {@linkcode MinimumClientVersionError} | the table requires a newer client |
 * | `VALIDATION_FAILED` | {@linkcode ValidationError} | an input value is invalid |
 * | `INVALID_IDENTIFIER` | {@linkcode InvalidIdentifierError} | an entity id, parent id or principal is invalid |
 * | `INVALID_NAME` | {@linkcode InvalidNameError} | a limit or resource name is invalid |
 *
 * @module
 */

import type { LimitStatus } from "./models.ts";

/** Every stable error code. */
export type ZaeLimiterErrorCode =
  | "RATE_LIMIT_EXCEEDED"
  | "LEASE_EXPIRED"
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
  | "INVALID_NAME";

/** Base class of every error this library throws on purpose. */
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
    options: ErrorOptions & {
      retryable?: boolean;
      fault?: "client" | "server";
    } = {},
  ) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "ZAELimiterError";
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.fault = options.fault ?? "client";
  }
}

/** Parent of rate-limit outcomes. */
export class RateLimitError extends ZAELimiterError {
  /** @internal */
  constructor(
    code: ZaeLimiterErrorCode,
    message: string,
    options: ErrorOptions & { retryable?: boolean } = {},
  ) {
    super(code, message, options);
    this.name = "RateLimitError";
  }
}

function formatSeconds(s: number): string {
  return s.toFixed(1);
}

/**
 * One or more limits refused the request. Nothing was consumed.
 *
 * `statuses` lists every limit checked (passing and failing), so an API can
 * answer with all of them; {@linkcode RateLimitExceeded.retryAfterHeader}
 * is the value for an HTTP `Retry-After` header.
 */
export class RateLimitExceeded extends RateLimitError {
  /** Every limit checked, passing or not. */
  readonly statuses: readonly LimitStatus[];
  /** The limits that refused. Never empty. */
  readonly violations: readonly LimitStatus[];
  /** The limits that would have admitted the request. */
  readonly passed: readonly LimitStatus[];
  /** The violation with the longest wait. */
  readonly primaryViolation: LimitStatus;
  /** Seconds until the primary violation would admit the request. */
  readonly retryAfterSeconds: number;

  /**
   * Creates the error from every status checked.
   *
   * @throws {RangeError} when `statuses` holds no exceeded status.
   */
  constructor(statuses: readonly LimitStatus[]) {
    const violations = statuses.filter((s) => s.exceeded);
    if (violations.length === 0) {
      throw new RangeError(
        "Cannot create RateLimitExceeded: no status is exceeded",
      );
    }
    let primary = violations[0] as LimitStatus;
    for (const v of violations) {
      if (v.retryAfterSeconds > primary.retryAfterSeconds) primary = v;
    }
    super(
      "RATE_LIMIT_EXCEEDED",
      `Rate limit exceeded for ${primary.entityId}/${primary.resource}: [${
        violations.map((v) => v.limitName).join(", ")
      }]. Retry after ${formatSeconds(primary.retryAfterSeconds)}s`,
      { retryable: true },
    );
    this.name = "RateLimitExceeded";
    this.statuses = statuses;
    this.violations = violations;
    this.passed = statuses.filter((s) => !s.exceeded);
    this.primaryViolation = primary;
    this.retryAfterSeconds = primary.retryAfterSeconds;
  }

  /** Value for the HTTP `Retry-After` header: whole seconds, rounded up, at least 1. */
  get retryAfterHeader(): string {
    return String(Math.floor(this.retryAfterSeconds) + 1);
  }

  /** A JSON-ready body for an HTTP 429 answer (the reference's `as_dict`). */
  toJSON(): Record<string, unknown> {
    return {
      error: "rate_limit_exceeded",
      message: this.message,
      "retry_after_seconds": this.retryAfterSeconds,
      "retry_after_ms": Math.floor(this.retryAfterSeconds * 1000),
      limits: this.statuses.map((s) => ({
        "entity_id": s.entityId,
        resource: s.resource,
        "limit_name": s.limitName,
        capacity: s.limit.capacity,
        "refill_amount": s.limit.refillAmount,
        "refill_period_seconds": s.limit.refillPeriodSeconds,
        available: s.available,
        requested: s.requested,
        exceeded: s.exceeded,
        "retry_after_seconds": s.retryAfterSeconds,
      })),
    };
  }
}

/** The lease was already committed or rolled back. */
export class LeaseExpiredError extends RateLimitError {
  /** Creates the error. */
  constructor() {
    super("LEASE_EXPIRED", "Lease is no longer active");
    this.name = "LeaseExpiredError";
  }
}

/** Parent of infrastructure errors. */
export class InfrastructureError extends ZAELimiterError {
  /** @internal */
  constructor(
    code: ZaeLimiterErrorCode,
    message: string,
    options: ErrorOptions & {
      retryable?: boolean;
      fault?: "client" | "server";
    } = {},
  ) {
    super(code, message, { fault: "server", ...options });
    this.name = "InfrastructureError";
  }
}

/** Context of a {@linkcode RateLimiterUnavailable}. */
export interface UnavailableContext {
  /** The stack (table) name. */
  readonly stackName?: string;
  /** The entity of the failed call. */
  readonly entityId?: string;
  /** The resource of the failed call. */
  readonly resource?: string;
}

/** DynamoDB could not be reached or failed, and the policy is `block`. */
export class RateLimiterUnavailable extends InfrastructureError {
  /** The stack (table) name, or `""`. */
  readonly stackName: string;
  /** The entity of the failed call, or `""`. */
  readonly entityId: string;
  /** The resource of the failed call, or `""`. */
  readonly resource: string;

  /** Appends ` [stack=…, entity=…, resource=…]` with the non-empty parts. */
  constructor(
    message: string,
    options: ErrorOptions & UnavailableContext = {},
  ) {
    const parts: string[] = [];
    if (options.stackName) parts.push(`stack=${options.stackName}`);
    if (options.entityId) parts.push(`entity=${options.entityId}`);
    if (options.resource) parts.push(`resource=${options.resource}`);
    super(
      "RATE_LIMITER_UNAVAILABLE",
      parts.length ? `${message} [${parts.join(", ")}]` : message,
      { retryable: true, cause: options.cause },
    );
    this.name = "RateLimiterUnavailable";
    this.stackName = options.stackName ?? "";
    this.entityId = options.entityId ?? "";
    this.resource = options.resource ?? "";
  }
}

/** A CloudFormation operation failed. */
export class StackOperationError extends InfrastructureError {
  /** The stack. */
  readonly stackName: string;
  /** Why it failed. */
  readonly reason: string;
  /** The failing stack events, newest first. */
  readonly events: readonly string[];
  /** Creates the error. */
  constructor(
    stackName: string,
    reason: string,
    events: readonly string[] = [],
  ) {
    super(
      "STACK_OPERATION_FAILED",
      `Stack '${stackName}' operation failed: ${reason}`,
    );
    this.name = "StackOperationError";
    this.stackName = stackName;
    this.reason = reason;
    this.events = events;
  }
}

/** The stack already exists. */
export class StackAlreadyExistsError extends InfrastructureError {
  /** The stack. */
  readonly stackName: string;
  /** Creates the error. */
  constructor(stackName: string) {
    super("STACK_ALREADY_EXISTS", `Stack '${stackName}' already exists`, {
      fault: "client",
    });
    this.name = "StackAlreadyExistsError";
    this.stackName = stackName;
  }
}

/** The table does not exist. */
export class InfrastructureNotFoundError extends InfrastructureError {
  /** The stack. */
  readonly stackName: string;
  /** Creates the error. */
  constructor(stackName: string) {
    super(
      "INFRASTRUCTURE_NOT_FOUND",
      `Infrastructure not found for stack '${stackName}'. Run 'zae-limiter deploy --name ${stackName}' ` +
        "or open the repository with { provision: true }.",
    );
    this.name = "InfrastructureNotFoundError";
    this.stackName = stackName;
  }
}

/** The namespace name is not registered (or was deleted). */
export class NamespaceNotFoundError extends InfrastructureError {
  /** The namespace name. */
  readonly namespaceName: string;
  /** Creates the error. */
  constructor(namespaceName: string) {
    super(
      "NAMESPACE_NOT_FOUND",
      `Namespace '${namespaceName}' not found. Register it first ` +
        `('zae-limiter namespace register ${namespaceName}') or check for typos.`,
      { fault: "client" },
    );
    this.name = "NamespaceNotFoundError";
    this.namespaceName = namespaceName;
  }
}

/** The namespace is in a state that forbids the operation. */
export class NamespaceStateError extends InfrastructureError {
  /** The namespace name, or `""`. */
  readonly namespaceName: string;
  /** The state (`active`, `deleted`, `purging`, `re-registered`), or `""`. */
  readonly state: string;
  /** Creates the error. */
  constructor(
    message: string,
    options: { namespaceName?: string; state?: string } = {},
  ) {
    super("NAMESPACE_STATE", message, { fault: "client" });
    this.name = "NamespaceStateError";
    this.namespaceName = options.namespaceName ?? "";
    this.state = options.state ?? "";
  }
}

/** Parent of entity errors. */
export class EntityError extends ZAELimiterError {
  /** The entity. */
  readonly entityId: string;
  /** @internal */
  constructor(code: ZaeLimiterErrorCode, message: string, entityId: string) {
    super(code, message);
    this.name = "EntityError";
    this.entityId = entityId;
  }
}

/** The entity does not exist. */
export class EntityNotFoundError extends EntityError {
  /** Creates the error. */
  constructor(entityId: string) {
    super("ENTITY_NOT_FOUND", `Entity not found: ${entityId}`, entityId);
    this.name = "EntityNotFoundError";
  }
}

/** The entity already exists. */
export class EntityExistsError extends EntityError {
  /** Creates the error. */
  constructor(entityId: string) {
    super("ENTITY_EXISTS", `Entity already exists: ${entityId}`, entityId);
    this.name = "EntityExistsError";
  }
}

/** Parent of version errors. */
export class VersionError extends ZAELimiterError {
  /** @internal */
  constructor(code: ZaeLimiterErrorCode, message: string) {
    super(code, message, { fault: "server" });
    this.name = "VersionError";
  }
}

/** The stream workers are older than this client: run `zae-limiter upgrade --workers-only`. */
export class VersionMismatchError extends VersionError {
  /** This client's version. */
  readonly clientVersion: string;
  /** The table's schema version. */
  readonly schemaVersion: string;
  /** The workers' version, or `null` when unknown. */
  readonly lambdaVersion: string | null;
  /** Whether an automatic update is possible. Always `false` here. */
  readonly canAutoUpdate: boolean;
  /** Creates the error. */
  constructor(
    clientVersion: string,
    schemaVersion: string,
    lambdaVersion: string | null,
    message: string,
    canAutoUpdate = false,
  ) {
    super(
      "VERSION_MISMATCH",
      `Version mismatch: client=${clientVersion}, schema=${schemaVersion}, lambda=${
        lambdaVersion ?? "unknown"
      }. ${message}`,
    );
    this.name = "VersionMismatchError";
    this.clientVersion = clientVersion;
    this.schemaVersion = schemaVersion;
    this.lambdaVersion = lambdaVersion;
    this.canAutoUpdate = canAutoUpdate;
  }
}

/** The table's schema needs a migration before this client can use it. */
export class IncompatibleSchemaError extends VersionError {
  /** This client's schema version. */
  readonly clientVersion: string;
  /** The table's schema version. */
  readonly schemaVersion: string;
  /** Where the migration is documented, or `null`. */
  readonly migrationGuideUrl: string | null;
  /** Creates the error. */
  constructor(
    clientVersion: string,
    schemaVersion: string,
    message: string,
    migrationGuideUrl: string | null = null,
  ) {
    super(
      "INCOMPATIBLE_SCHEMA",
      `Incompatible schema: client ${clientVersion} is not compatible with schema ${schemaVersion}. ${message}` +
        (migrationGuideUrl ? ` See: ${migrationGuideUrl}` : ""),
    );
    this.name = "IncompatibleSchemaError";
    this.clientVersion = clientVersion;
    this.schemaVersion = schemaVersion;
    this.migrationGuideUrl = migrationGuideUrl;
  }
}

/** The table records a minimum client version above this client's. */
export class MinimumClientVersionError extends VersionError {
  /** This client's version. */
  readonly clientVersion: string;
  /** The minimum the table requires. */
  readonly minimumVersion: string;
  /** Creates the error. */
  constructor(clientVersion: string, minimumVersion: string) {
    super(
      "MINIMUM_CLIENT_VERSION",
      `Client version ${clientVersion} is below the minimum ${minimumVersion} recorded in the table. ` +
        `Install zae-limiter ${minimumVersion} or newer.`,
    );
    this.name = "MinimumClientVersionError";
    this.clientVersion = clientVersion;
    this.minimumVersion = minimumVersion;
  }
}

function truncate(value: unknown): string {
  const s = typeof value === "string" ? value : show(value);
  return s.length > 50 ? `${s.slice(0, 50)}...` : s;
}

function show(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    // A bigint or a circular structure: JSON cannot encode it.
    return String(value);
  }
}

/** An input value is invalid. Nothing was written. */
export class ValidationError extends ZAELimiterError {
  /** The field (`entity_id`, `resource`, `name`, `limits`, `consume`, …). */
  readonly field: string;
  /** The offending value, truncated to 50 characters. */
  readonly value: string;
  /** Why it is invalid. */
  readonly reason: string;
  /** Creates the error: message `Invalid {field} "{value}": {reason}`. */
  constructor(
    field: string,
    value: unknown,
    reason: string,
    code: ZaeLimiterErrorCode = "VALIDATION_FAILED",
  ) {
    const shown = truncate(value);
    super(code, `Invalid ${field} "${shown}": ${reason}`);
    this.name = "ValidationError";
    this.field = field;
    this.value = shown;
    this.reason = reason;
  }
}

/** An entity id, parent id or principal is invalid. */
export class InvalidIdentifierError extends ValidationError {
  /** Creates the error. */
  constructor(field: string, value: unknown, reason: string) {
    super(field, value, reason, "INVALID_IDENTIFIER");
    this.name = "InvalidIdentifierError";
  }
}

/** A limit or resource name is invalid. */
export class InvalidNameError extends ValidationError {
  /** Creates the error. */
  constructor(field: string, value: unknown, reason: string) {
    super(field, value, reason, "INVALID_NAME");
    this.name = "InvalidNameError";
  }
}

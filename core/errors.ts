/**
 * The error hierarchy of the limiter and the repository. Class names match
 * the Python reference byte for byte; every error also carries a stable
 * `code` (API: never renamed or reused). The base class and the one union
 * of codes, with each code documented, are in `zae_limiter_error.ts`.
 *
 * @module
 */

import type { LimitStatus } from "./models.ts";
import {
  ZAELimiterError,
  type ZaeLimiterErrorCode,
} from "./zae_limiter_error.ts";
import {
  describeValue,
  echo,
  escapeText,
  MAX_REASON_LENGTH,
} from "./_escape_text.ts";

export {
  describeValue,
  escapeText,
  MAX_REASON_LENGTH,
  MAX_SHOWN_LENGTH,
} from "./_escape_text.ts";

export {
  IncompatibleSchemaError,
  MinimumClientVersionError,
  VersionError,
  VersionMismatchError,
} from "./version_errors.ts";

export {
  type MigrationErrorCode,
  type StreamWorkerErrorCode,
  toError,
  type WorkerErrorCode,
  ZAELimiterError,
  type ZaeLimiterErrorCode,
  type ZAELimiterErrorOptions,
} from "./zae_limiter_error.ts";

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
      `Rate limit exceeded for ${echo(primary.entityId)}/${
        echo(primary.resource)
      }: [${
        violations.map((v) => echo(v.limitName)).join(", ")
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

/**
 * The lease's deadline (`maxHoldMs` on acquire or the limiter, or the
 * shortest `leaseMs` of its concurrency limits) has passed: `adjust`,
 * `release`, `consume` and `commit` are refused. What the lease wrote
 * stays charged (as if its holder had crashed); adjustments not yet written
 * are dropped, and a rollback is a no-op. Not retryable: acquire again.
 */
export class LeaseDeadlineExceeded extends RateLimitError {
  /** The deadline, epoch milliseconds on the limiter's clock. */
  readonly deadline: number;
  /** The entity of the lease. */
  readonly entityId: string;
  /** The resource of the lease. */
  readonly resource: string;

  /** Creates the error for the refused `action` (`adjust`, `consume`, `commit`, ...). */
  constructor(
    action: string,
    lease: { readonly entityId: string; readonly resource: string },
    deadline: number,
    now: number,
  ) {
    super(
      "LEASE_DEADLINE_EXCEEDED",
      `Cannot ${action} the lease of ${echo(lease.entityId)}/${
        echo(lease.resource)
      }: its deadline passed ${
        Math.max(0, now - deadline)
      } ms ago; what it charged stays charged. Acquire again, or raise maxHoldMs`,
      { retryable: false },
    );
    this.name = "LeaseDeadlineExceeded";
    this.deadline = deadline;
    this.entityId = lease.entityId;
    this.resource = lease.resource;
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
    if (options.stackName) parts.push(`stack=${echo(options.stackName)}`);
    if (options.entityId) parts.push(`entity=${echo(options.entityId)}`);
    if (options.resource) parts.push(`resource=${echo(options.resource)}`);
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
      `Stack '${echo(stackName)}' operation failed: ${reason}`,
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
    super("STACK_ALREADY_EXISTS", `Stack '${echo(stackName)}' already exists`, {
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
      `Infrastructure not found for stack '${
        echo(stackName)
      }'. Run 'zae-limiter deploy --name ${echo(stackName)}' ` +
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
      `Namespace '${echo(namespaceName)}' not found. Register it first ` +
        `('zae-limiter namespace register ${
          echo(namespaceName)
        }') or check for typos.`,
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
    super("ENTITY_NOT_FOUND", `Entity not found: ${echo(entityId)}`, entityId);
    this.name = "EntityNotFoundError";
  }
}

/** The entity already exists. */
export class EntityExistsError extends EntityError {
  /** Creates the error. */
  constructor(entityId: string) {
    super(
      "ENTITY_EXISTS",
      `Entity already exists: ${echo(entityId)}`,
      entityId,
    );
    this.name = "EntityExistsError";
  }
}

/**
 * An input value is invalid. Nothing was written.
 *
 * The message is `Invalid {field} "{shown}": {reason}`, with ` ({n}
 * characters)` after the closing quote when the value was cut. Nothing from
 * the input reaches the message raw: control characters are escaped (`\n`,
 * `\u001b`, …) in the field, the value and the reason, and each is cut to a
 * bounded length ({@linkcode MAX_SHOWN_LENGTH}, {@linkcode MAX_REASON_LENGTH}).
 *
 * @example The raw value for programs, an escaped one in the message
 * ```ts
 * import assert from "node:assert/strict";
 * import { ValidationError } from "./errors.ts";
 *
 * const e = new ValidationError("entity_id", "a\nb", "bad");
 * assert.equal(e.value, "a\nb");
 * assert.equal(e.shownValue, "a\\nb");
 * assert.equal(e.message, 'Invalid entity_id "a\\nb": bad');
 * assert.equal(new ValidationError("consume.rpm", NaN, "bad").shownValue, "NaN");
 * ```
 */
export class ValidationError extends ZAELimiterError {
  /** The field (`entity_id`, `resource`, `name`, `limits`, `consume`, …), as given. */
  readonly field: string;
  /**
   * The offending value exactly as given (any type, not cut or escaped), for
   * programs. Not enumerable, so loggers that serialize an error's own
   * properties do not copy a huge or hostile value; they get
   * {@linkcode ValidationError.shownValue}.
   */
  declare readonly value: unknown;
  /**
   * The value as the message shows it: a string as the body of a JSON string
   * literal, anything else JSON-like with `NaN`, `Infinity`, `-Infinity`,
   * `undefined` and bigints as themselves; cut to
   * {@linkcode MAX_SHOWN_LENGTH} characters plus `...`.
   */
  readonly shownValue: string;
  /** Why it is invalid, as given. */
  readonly reason: string;
  /** Creates the error: message `Invalid {field} "{value}": {reason}`. */
  constructor(
    field: string,
    value: unknown,
    reason: string,
    code: ZaeLimiterErrorCode = "VALIDATION_FAILED",
  ) {
    const { shown, note } = describeValue(value);
    super(
      code,
      `Invalid ${echo(field)} "${shown}"${note === null ? "" : ` (${note})`}: ${
        escapeText(String(reason), { max: MAX_REASON_LENGTH })
      }`,
    );
    this.name = "ValidationError";
    this.field = field;
    Object.defineProperty(this, "value", {
      value,
      enumerable: false,
      writable: false,
      configurable: false,
    });
    this.shownValue = shown;
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

/**
 * A request no bucket can ever admit: it asks more of a limit than the
 * limit's capacity (per shard). Not retryable: waiting does not help, so
 * there is no Retry-After; answer HTTP 400/413, or raise the limit.
 */
export class RequestExceedsCapacity extends RateLimitError {
  /** The limits whose capacity is below the request (`available` is the capacity). */
  readonly statuses: readonly LimitStatus[];

  /** Creates the error from the statuses of the limits too small for the request. */
  constructor(statuses: readonly LimitStatus[]) {
    const first = statuses[0];
    super(
      "REQUEST_EXCEEDS_CAPACITY",
      first
        ? `Request can never be admitted for ${echo(first.entityId)}/${
          echo(first.resource)
        }: ${
          statuses.map((s) =>
            `${
              echo(s.limitName)
            } asks ${s.requested} but its capacity is ${s.available}`
          ).join("; ")
        }. Lower the request or raise the limit's capacity`
        : "Request can never be admitted",
      { retryable: false },
    );
    this.name = "RequestExceedsCapacity";
    this.statuses = statuses;
  }
}

/**
 * The body of an `acquire` callback succeeded but the lease could not be
 * committed (block mode). The body's `result` is not lost, and the `lease`
 * is still open: call `lease.commit()` again, or `lease.rollback()`.
 */
export class CommitFailedError<T = unknown> extends RateLimiterUnavailable {
  /** What the body returned. */
  readonly result: T;
  /** The open lease. */
  readonly lease: { commit(): Promise<void>; rollback(): Promise<void> };

  /** Creates the error. */
  constructor(
    result: T,
    lease: { commit(): Promise<void>; rollback(): Promise<void> },
    options: ErrorOptions & UnavailableContext = {},
  ) {
    super(
      `The work succeeded but its lease could not be committed: ${
        options.cause instanceof Error
          ? options.cause.message
          : String(options.cause)
      }; the result is on error.result and error.lease is open (commit again or roll back)`,
      options,
    );
    this.name = "CommitFailedError";
    this.result = result;
    this.lease = lease;
  }
}

/** One problem of a provider's usage report (`path` is the field, such as `usage.prompt_tokens`). */
export interface UsageIssue {
  /** The field, from the report's root (`usage.prompt_tokens_details.cached_tokens`). */
  readonly path: string;
  /** What is wrong, and what was expected. */
  readonly message: string;
}

/**
 * A provider's usage report (an OpenAI- or Anthropic-shaped `usage`
 * object) could not be turned into token counts: a field is missing, not a
 * number, negative, fractional or inconsistent. `issues` lists every
 * problem; `field` is the first one's path. Nothing was adjusted.
 */
export class UsageReportError extends ValidationError {
  /** Every problem found. Never empty. */
  readonly issues: readonly UsageIssue[];

  /** Creates the error from every issue found in `value`. */
  constructor(issues: readonly UsageIssue[], value: unknown) {
    const first = issues[0] ?? { path: "usage", message: "is invalid" };
    super(
      first.path,
      value,
      issues.map((i) => `${i.path} ${i.message}`).join("; "),
      "USAGE_INVALID",
    );
    this.name = "UsageReportError";
    this.issues = issues;
  }
}

/**
 * A metered stream would cross its token budget on `limitName`: it was
 * stopped before the chunk that crossed it reached the caller, and the
 * lease was adjusted to the tokens the stream used (that chunk included,
 * since the provider produced it). Not retryable as is.
 */
export class StreamBudgetExceeded extends RateLimitError {
  /** The limit whose budget was crossed. */
  readonly limitName: string;
  /** The budget, whole tokens. */
  readonly budget: number;
  /** Tokens the stream used, the crossing chunk included. */
  readonly used: number;

  /** Creates the error. */
  constructor(limitName: string, budget: number, used: number) {
    super(
      "STREAM_BUDGET_EXCEEDED",
      `Cannot continue the stream: ${
        echo(limitName)
      } would use ${used} tokens, over its budget of ${budget}; the stream was stopped and the lease charged what it used`,
      { retryable: false },
    );
    this.name = "StreamBudgetExceeded";
    this.limitName = limitName;
    this.budget = budget;
    this.used = used;
  }
}

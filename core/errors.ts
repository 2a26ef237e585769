/**
 * The error hierarchy. Class names match the Python reference byte for byte;
 * every error also carries a stable `code` (API: never renamed or reused).
 *
 * | code | class | meaning |
 * |------|-------|---------|
 * | `RATE_LIMIT_EXCEEDED` | {@linkcode RateLimitExceeded} | one or more limits refused the request |
 * | `REQUEST_EXCEEDS_CAPACITY` | {@linkcode RequestExceedsCapacity} | the request is larger than a limit's capacity: it can never be admitted |
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
  | "INVALID_NAME"
  | "REQUEST_EXCEEDS_CAPACITY";

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
      `Version mismatch: client=${echo(clientVersion)}, schema=${
        echo(schemaVersion)
      }, lambda=${
        lambdaVersion === null ? "unknown" : echo(lambdaVersion)
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
      `Incompatible schema: client ${
        echo(clientVersion)
      } is not compatible with schema ${echo(schemaVersion)}. ${message}` +
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
      `Client version ${echo(clientVersion)} is below the minimum ${
        echo(minimumVersion)
      } recorded in the table. ` +
        `Install zae-limiter ${echo(minimumVersion)} or newer.`,
    );
    this.name = "MinimumClientVersionError";
    this.clientVersion = clientVersion;
    this.minimumVersion = minimumVersion;
  }
}

/**
 * Longest echo of an input value, field or identifier in a message, in
 * characters after escaping. A longer one is cut at a character boundary,
 * marked with `...`, and (for a string or an array) followed by its length.
 */
export const MAX_SHOWN_LENGTH = 200;

/** Longest {@linkcode ValidationError.reason} kept in the message, after escaping. */
export const MAX_REASON_LENGTH = 1000;

/**
 * Characters never echoed raw (log and terminal injection): C0 and C1
 * controls, DEL, line and paragraph separators, bidirectional marks,
 * embeddings, overrides and isolates, and the byte order mark. Lone
 * surrogates are escaped too.
 */
function isUnsafe(cp: number): boolean {
  return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp === 0x061c ||
    cp === 0x200e || cp === 0x200f || (cp >= 0x2028 && cp <= 0x202e) ||
    (cp >= 0x2066 && cp <= 0x2069) || (cp >= 0xd800 && cp <= 0xdfff) ||
    cp === 0xfeff;
}

function escapePoint(cp: number, ch: string, quotes: boolean): string {
  if (quotes && (ch === "\\" || ch === '"')) return `\\${ch}`;
  if (!isUnsafe(cp)) return ch;
  switch (cp) {
    case 0x08:
      return "\\b";
    case 0x09:
      return "\\t";
    case 0x0a:
      return "\\n";
    case 0x0c:
      return "\\f";
    case 0x0d:
      return "\\r";
  }
  return `\\u${cp.toString(16).padStart(4, "0")}`;
}

/** Text built from atomic pieces (an escape is never split) up to a cap. */
class Echo {
  text = "";
  cut = false;
  readonly cap: number;
  constructor(cap: number) {
    this.cap = cap;
  }

  add(piece: string): boolean {
    if (this.cut) return false;
    if (this.text.length + piece.length > this.cap) {
      this.cut = true;
      return false;
    }
    this.text += piece;
    return true;
  }

  /** Adds a string's code points, escaped; `quotes` also escapes `\` and `"`. */
  addString(s: string, quotes: boolean): boolean {
    for (let i = 0; i < s.length;) {
      const cp = s.codePointAt(i) as number;
      const n = cp > 0xffff ? 2 : 1;
      if (!this.add(escapePoint(cp, s.slice(i, i + n), quotes))) return false;
      i += n;
    }
    return true;
  }

  get shown(): string {
    return this.cut ? `${this.text}...` : this.text;
  }
}

/**
 * Escapes the characters of `text` that must not reach a log or a terminal
 * raw (`\n`, `\r`, `\t`, `\b`, `\f` or `\uXXXX`, as in JSON), and cuts it
 * to `max` characters plus `...`. `quotes` also escapes `\` and `"`, so the
 * result is the body of a JSON string literal and cannot fake a closing quote.
 */
export function escapeText(
  text: string,
  options: { max?: number; quotes?: boolean } = {},
): string {
  const out = new Echo(options.max ?? Infinity);
  out.addString(text, options.quotes ?? false);
  return out.shown;
}

function formatInto(
  out: Echo,
  value: unknown,
  top: boolean,
  path: Set<object>,
): void {
  switch (typeof value) {
    case "string":
      if (top) out.addString(value, true);
      else if (out.add('"') && out.addString(value, true)) out.add('"');
      return;
    case "number": // NaN, Infinity and -Infinity as themselves, not JSON's null
    case "bigint":
    case "boolean":
    case "undefined":
      out.add(String(value));
      return;
    case "symbol":
      out.addString(String(value), true);
      return;
    case "function":
      out.add("[Function]");
      return;
  }
  if (value === null) {
    out.add("null");
    return;
  }
  const obj = value as object;
  if (path.has(obj)) {
    out.add("[Circular]");
    return;
  }
  path.add(obj);
  try {
    const toJSON = (obj as { toJSON?: unknown }).toJSON;
    const json = typeof toJSON === "function" ? toJSON.call(obj) : obj;
    if (json !== obj) {
      formatInto(out, json, false, path);
    } else if (Array.isArray(obj)) {
      out.add("[");
      for (let i = 0; i < obj.length; i++) {
        if (i > 0 && !out.add(",")) return;
        formatInto(out, obj[i], false, path);
        if (out.cut) return;
      }
      out.add("]");
    } else if (obj instanceof Map || obj instanceof Set) {
      out.add(`${obj instanceof Map ? "Map" : "Set"}(${obj.size})`);
    } else {
      out.add("{");
      let first = true;
      for (const k of Object.keys(obj)) {
        if (!first && !out.add(",")) return;
        first = false;
        if (!out.add('"') || !out.addString(k, true) || !out.add('":')) return;
        formatInto(out, (obj as Record<string, unknown>)[k], false, path);
        if (out.cut) return;
      }
      out.add("}");
    }
  } finally {
    path.delete(obj);
  }
}

/**
 * How a value of any type is echoed in a message: a string as the body of a
 * JSON string literal (control characters escaped), anything else in a
 * JSON-like form that shows `NaN`, `Infinity`, `-Infinity`, `undefined` and
 * bigints as themselves; cut to {@linkcode MAX_SHOWN_LENGTH} characters plus
 * `...`. `note` gives the full length when it was cut.
 */
export function describeValue(
  value: unknown,
): { shown: string; note: string | null } {
  const out = new Echo(MAX_SHOWN_LENGTH);
  try {
    formatInto(out, value, true, new Set());
  } catch {
    // A throwing getter, toJSON or proxy trap.
    return {
      shown: escapeText(Object.prototype.toString.call(value)),
      note: null,
    };
  }
  if (!out.cut) return { shown: out.text, note: null };
  let note: string | null = null;
  if (typeof value === "string") note = `${value.length} characters`;
  else if (Array.isArray(value)) note = `${value.length} items`;
  return { shown: out.shown, note };
}

/** An identifier or name from input, for a message. */
function echo(text: string): string {
  return escapeText(String(text), { max: MAX_SHOWN_LENGTH, quotes: true });
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

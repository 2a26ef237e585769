/**
 * Errors of the stream-consumer framework: {@linkcode StreamWorkerError}
 * extends the library's base `ZAELimiterError`, and its codes
 * ({@linkcode StreamWorkerErrorCode}) are part of the library's one code
 * union, documented in `core/zae_limiter_error.ts`.
 *
 * @module
 */

import {
  type StreamWorkerErrorCode,
  toError,
  ZAELimiterError,
} from "../core/zae_limiter_error.ts";

export { type StreamWorkerErrorCode, toError };

/** Options of {@linkcode StreamWorkerError}. */
export interface StreamWorkerErrorOptions extends ErrorOptions {
  /** Whether the same call may succeed later. @default false */
  readonly retryable?: boolean;
}

/**
 * An error of the stream-consumer framework with a stable `code`. The
 * service (DynamoDB Streams, DynamoDB) failed, so `fault` is `server`.
 *
 * @example Classify a throttle
 * ```ts
 * import assert from "node:assert/strict";
 * import { StreamWorkerError } from "./errors.ts";
 *
 * const e = new StreamWorkerError("STREAM_THROTTLED", "Cannot read shard \"s1\": throttled", { retryable: true });
 * assert.equal(e.code, "STREAM_THROTTLED");
 * assert.equal(e.retryable, true);
 * ```
 */
export class StreamWorkerError extends ZAELimiterError {
  /** Stable machine-readable code. */
  declare readonly code: StreamWorkerErrorCode;

  /** Creates the error; `options.cause` is forwarded. */
  constructor(
    code: StreamWorkerErrorCode,
    message: string,
    options: StreamWorkerErrorOptions = {},
  ) {
    super(code, message, {
      retryable: options.retryable ?? false,
      fault: "server",
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.name = "StreamWorkerError";
  }
}

/** Whether `error` is a {@linkcode StreamWorkerError} with the given code. */
export function isStreamWorkerError(
  error: unknown,
  code?: StreamWorkerErrorCode,
): error is StreamWorkerError {
  return error instanceof StreamWorkerError &&
    (code === undefined || error.code === code);
}

/**
 * How the worker treats a failed call to DynamoDB or DynamoDB Streams:
 *
 * - `unreachable`: no answer (refused, reset or timed-out connection, a
 *   call past its deadline, a 5xx): retried with backoff, and counted
 *   towards an outage;
 * - `throttled`: the service answered "slow down" (throttling, transaction
 *   conflicts): retried with backoff; the service is reachable;
 * - `fatal`: the service answered that the call can never succeed as it is
 *   (access denied, missing table or stream, invalid request) or the code
 *   itself is wrong: the worker stops with this error as its reason.
 */
export type FailureClass = "unreachable" | "throttled" | "fatal";

const THROTTLE_NAMES = new Set([
  "ThrottlingException",
  "Throttling",
  "ProvisionedThroughputExceededException",
  "RequestLimitExceeded",
  "LimitExceededException",
  "TransactionConflictException",
  "TransactionInProgressException",
  "TooManyRequestsException",
]);

/** AWS answers that no retry fixes (a 4xx that is not a throttle). */
const FATAL_NAMES = new Set([
  "AccessDeniedException",
  "AccessDenied",
  "UnrecognizedClientException",
  "InvalidClientTokenId",
  "MissingAuthenticationTokenException",
  "ResourceNotFoundException",
  "ValidationException",
  "SerializationException",
  "UnknownOperationException",
]);

/** AWS answers that look like a client fault but pass (expired session, clock skew, timeouts). */
const RETRYABLE_CLIENT_NAMES = new Set([
  "ExpiredTokenException",
  "RequestExpired",
  "RequestTimeout",
  "RequestTimeoutException",
  "InvalidSignatureException",
  "SignatureDoesNotMatch",
  "IDPCommunicationError",
]);

/**
 * Classifies a failed DynamoDB or DynamoDB Streams call (see
 * {@linkcode FailureClass}). Abort reasons and errors without an HTTP
 * status (network errors) are `unreachable`; built-in programming errors
 * without a network `code` (`TypeError`, `RangeError`, ...) are `fatal`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { classifyFailure } from "./errors.ts";
 *
 * const refused = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });
 * assert.equal(classifyFailure(refused), "unreachable");
 * const denied = Object.assign(new Error("no"), { name: "AccessDeniedException", $metadata: { httpStatusCode: 400 } });
 * assert.equal(classifyFailure(denied), "fatal");
 * ```
 */
export function classifyFailure(error: unknown): FailureClass {
  if (error instanceof StreamWorkerError) {
    if (error.code === "STREAM_THROTTLED") return "throttled";
    if (error.code === "COORDINATION_CONFLICT") return "throttled";
    if (error.cause !== undefined && !error.retryable) {
      return classifyFailure(error.cause);
    }
    return error.retryable ? "unreachable" : "fatal";
  }
  if (typeof error !== "object" || error === null) return "unreachable";
  const e = error as {
    name?: unknown;
    code?: unknown;
    $metadata?: { httpStatusCode?: unknown };
    $retryable?: unknown;
  };
  const name = typeof e.name === "string" ? e.name : "";
  if (THROTTLE_NAMES.has(name)) return "throttled";
  if (e.$retryable !== undefined && e.$retryable !== null) {
    const throttling = (e.$retryable as { throttling?: unknown }).throttling;
    return throttling === true ? "throttled" : "unreachable";
  }
  if (RETRYABLE_CLIENT_NAMES.has(name)) return "unreachable";
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === "number") {
    if (status === 429) return "throttled";
    if (status === 408 || status >= 500) return "unreachable";
    if (status >= 400) return "fatal";
  }
  if (FATAL_NAMES.has(name)) return "fatal";
  if (
    typeof e.code !== "string" &&
    (error instanceof TypeError || error instanceof RangeError ||
      error instanceof SyntaxError || error instanceof ReferenceError)
  ) return "fatal";
  return "unreachable";
}

/**
 * Errors of the stream-consumer framework.
 *
 * | code | meaning |
 * |------|---------|
 * | `STREAM_THROTTLED` | DynamoDB Streams refused the call for rate (`LimitExceededException`, throttling) |
 * | `STREAM_ITERATOR_EXPIRED` | the shard iterator is older than 15 minutes (`ExpiredIteratorException`) |
 * | `STREAM_DATA_TRIMMED` | the requested position is older than the 24 h retention (`TrimmedDataAccessException`) |
 * | `STREAM_NOT_FOUND` | the stream or shard does not exist (`ResourceNotFoundException`) |
 * | `STREAM_UNAVAILABLE` | any other failure of the Streams service or the network |
 * | `COORDINATION_CONFLICT` | a lease or commit write lost a race that is worth retrying (transaction conflict) |
 *
 * These codes belong next to `ZaeLimiterErrorCode` in `core/errors.ts` once the
 * framework is exported from `mod.ts`.
 *
 * @module
 */

/** Stable codes of {@linkcode StreamWorkerError}. */
export type StreamWorkerErrorCode =
  | "STREAM_THROTTLED"
  | "STREAM_ITERATOR_EXPIRED"
  | "STREAM_DATA_TRIMMED"
  | "STREAM_NOT_FOUND"
  | "STREAM_UNAVAILABLE"
  | "COORDINATION_CONFLICT";

/** Options of {@linkcode StreamWorkerError}. */
export interface StreamWorkerErrorOptions extends ErrorOptions {
  /** Whether the same call may succeed later. @default false */
  readonly retryable?: boolean;
}

/**
 * An error of the stream-consumer framework with a stable `code`.
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
export class StreamWorkerError extends Error {
  /** Stable machine-readable code. */
  readonly code: StreamWorkerErrorCode;
  /** Whether the same call may succeed later. */
  readonly retryable: boolean;

  /** Creates the error; `options.cause` is forwarded. */
  constructor(
    code: StreamWorkerErrorCode,
    message: string,
    options: StreamWorkerErrorOptions = {},
  ) {
    super(
      message,
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = "StreamWorkerError";
    this.code = code;
    this.retryable = options.retryable ?? false;
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

/** Normalizes a thrown value into an `Error`. */
export function toError(error: unknown): Error {
  return error instanceof Error
    ? error
    : new Error(`Non-error thrown: ${String(error)}`);
}

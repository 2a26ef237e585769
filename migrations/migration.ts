/**
 * The migration value type and the context every migration runs in.
 *
 * A migration is data: an id, the schema version it brings the table to, a
 * description, whether it can be undone, and an `apply` function (plus a
 * `rollback` when it is reversible). Migrations never read `Deno.*`: the
 * caller builds a {@linkcode MigrationContext} with
 * {@linkcode createMigrationContext} and passes it in.
 *
 * @example Build a context with defaults
 * ```ts
 * import assert from "node:assert/strict";
 * import { createMigrationContext } from "./migration.ts";
 *
 * const ctx = createMigrationContext({ client: { send: () => Promise.reject(new Error("offline")) }, tableName: "my-app" });
 * assert.equal(ctx.options.segments, 4);
 * assert.equal(ctx.options.delete, false);
 * assert.equal(ctx.options.maxWcuPerSecond, null);
 * ```
 *
 * @module
 */
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import { type Clock, systemClock } from "../core/clock.ts";
import {
  type MigrationErrorCode,
  toError,
  ZAELimiterError,
} from "../core/zae_limiter_error.ts";
import type { DynamoDbClientLike } from "../core/store/table.ts";
import type { ProgressSnapshot } from "./progress.ts";

/** What a migration did. Counts are of this run only. */
export interface MigrationReport {
  /** Items read by scans. */
  readonly scanned: number;
  /** Items written (created or updated). */
  readonly written: number;
  /** Writes skipped because the target already existed (a re-run or a resumed page). */
  readonly alreadyPresent: number;
  /** Items deleted. */
  readonly deleted: number;
  /** Free-text remarks for the operator. */
  readonly notes: readonly string[];
}

/** An empty report (for no-op migrations). */
export const EMPTY_REPORT: MigrationReport = Object.freeze({
  scanned: 0,
  written: 0,
  alreadyPresent: 0,
  deleted: 0,
  notes: Object.freeze([]) as readonly string[],
});

interface MigrationBase {
  /** Unique id, `{version}-{slug}` (several migrations may share a version). */
  readonly id: string;
  /** The schema version the table has after this migration. */
  readonly version: string;
  /** One line for `migrate status`. */
  readonly description: string;
  /** Brings the table to `version`. Must be idempotent: running it twice leaves the same table. */
  apply(ctx: MigrationContext): Promise<MigrationReport>;
}

/** A migration that cannot be undone in place: recovery is a backup or PITR restore. */
export interface IrreversibleMigration extends MigrationBase {
  /** Discriminant. */
  readonly reversible: false;
}

/** A migration with an in-place rollback. */
export interface ReversibleMigration extends MigrationBase {
  /** Discriminant. */
  readonly reversible: true;
  /** Undoes `apply`. Must be idempotent. */
  rollback(ctx: MigrationContext): Promise<MigrationReport>;
}

/** One schema migration (spec 06 §5; style rule 39). */
export type Migration = IrreversibleMigration | ReversibleMigration;

/** Something a migration or the runner tells the operator. */
export type MigrationEvent =
  | {
    readonly kind: "log";
    readonly level: "info" | "warn";
    /** Migration id, or `null` for the runner. */
    readonly migration: string | null;
    readonly message: string;
  }
  | {
    readonly kind: "progress";
    readonly migration: string;
    readonly snapshot: ProgressSnapshot;
  }
  | {
    readonly kind: "migration_started";
    readonly migration: string;
    readonly version: string;
  }
  | {
    readonly kind: "migration_finished";
    readonly migration: string;
    readonly version: string;
    readonly report: MigrationReport;
  };

/** Resolved options every migration may read. */
export interface MigrationOptions {
  /** Also delete the originals that a copy migration replaced. */
  readonly delete: boolean;
  /** Parallel Scan segments (`TotalSegments`). */
  readonly segments: number;
  /** Write budget in write capacity units per second, measured by `ConsumedCapacity`; `null` = unthrottled. */
  readonly maxWcuPerSecond: number | null;
  /** Read budget for scans in read capacity units per second; `null` = unthrottled. */
  readonly maxRcuPerSecond: number | null;
  /** Writes in flight per segment. */
  readonly writeConcurrency: number;
  /** Scan page size (`Limit`). */
  readonly pageSize: number;
  /** Namespace name unprefixed items are moved into. */
  readonly namespace: string;
  /** Register `namespace` when it is missing (otherwise fail). */
  readonly registerNamespace: boolean;
  /** Ignore saved checkpoints and scan from the start. */
  readonly restart: boolean;
  /** Delete phase: copy a changed original over its copy instead of refusing. */
  readonly overwriteDrift: boolean;
}

/** The SDK's typed `send` (what every {@linkcode DynamoDbClientLike} is at run time). */
export type SdkClient = Pick<DynamoDBClient, "send">;

/** Views any client as the SDK's typed client (it is one at run time; fakes implement the same commands). */
export function asSdkClient(client: DynamoDbClientLike): SdkClient {
  return client as unknown as SdkClient;
}

/** Everything a migration needs. Build with {@linkcode createMigrationContext}. */
export interface MigrationContext {
  /** DynamoDB client (typed view). */
  readonly client: SdkClient;
  /** Table (= stack) name. */
  readonly tableName: string;
  /** Clock (sleep included: a fake clock removes real waits). */
  readonly clock: Clock;
  /** Stops the work; migrations stop between pages and reject with `signal.reason`. */
  readonly signal: AbortSignal;
  /** Resolved options. */
  readonly options: MigrationOptions;
  /** Receives logs and progress snapshots. */
  readonly report: (event: MigrationEvent) => void;
  /** Called by long migrations between pages; the runner renews its lock here. */
  readonly keepAlive: () => Promise<void>;
}

/** Options of {@linkcode createMigrationContext}; all but `client` and `tableName` are optional. */
export interface MigrationContextOptions {
  /** DynamoDB client. */
  readonly client: DynamoDbClientLike;
  /** Table (= stack) name. */
  readonly tableName: string;
  /** Clock. @default systemClock */
  readonly clock?: Clock;
  /** Abort signal. @default a signal that never aborts */
  readonly signal?: AbortSignal;
  /** Event sink (logs and progress). @default ignore */
  readonly onEvent?: (event: MigrationEvent) => void;
  /** Delete originals after copying. @default false */
  readonly delete?: boolean;
  /** Parallel scan segments, 1–1000. @default 4 */
  readonly segments?: number;
  /** Write budget (WCU/s); omit for none. */
  readonly maxWcuPerSecond?: number;
  /** Scan budget (RCU/s); omit for none. */
  readonly maxRcuPerSecond?: number;
  /** Writes in flight per segment, 1–100. @default 8 */
  readonly writeConcurrency?: number;
  /** Scan page size, 1–10000. @default 500 */
  readonly pageSize?: number;
  /** Target namespace for unprefixed items. @default "default" */
  readonly namespace?: string;
  /** Register the target namespace when missing. @default true */
  readonly registerNamespace?: boolean;
  /** Ignore checkpoints. @default false */
  readonly restart?: boolean;
  /**
   * Delete phase: when an original differs from its copy (an old client
   * wrote it after the copy), copy it again and delete it instead of
   * refusing with `MIGRATION_DRIFT`. @default false
   */
  readonly overwriteDrift?: boolean;
  /** Lock renewal hook (set by the runner). @default no-op */
  readonly keepAlive?: () => Promise<void>;
}

function intInRange(
  field: string,
  value: number | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(
      `Cannot use migration option "${field}": current value is ${v}, expected an integer from ${min} to ${max}`,
    );
  }
  return v;
}

function positiveOrNull(
  field: string,
  value: number | undefined,
): number | null {
  if (value === undefined) return null;
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `Cannot use migration option "${field}": current value is ${value}, expected a positive number`,
    );
  }
  return value;
}

/**
 * Resolves options into a context, validating them once.
 *
 * @throws {RangeError} for an out-of-range option
 */
export function createMigrationContext(
  options: MigrationContextOptions,
): MigrationContext {
  if (options.tableName.length === 0) {
    throw new TypeError("Cannot create migration context: tableName is empty");
  }
  const resolved: MigrationOptions = Object.freeze({
    delete: options.delete ?? false,
    segments: intInRange("segments", options.segments, 4, 1, 1000),
    maxWcuPerSecond: positiveOrNull("maxWcuPerSecond", options.maxWcuPerSecond),
    maxRcuPerSecond: positiveOrNull("maxRcuPerSecond", options.maxRcuPerSecond),
    writeConcurrency: intInRange(
      "writeConcurrency",
      options.writeConcurrency,
      8,
      1,
      100,
    ),
    pageSize: intInRange("pageSize", options.pageSize, 500, 1, 10_000),
    namespace: options.namespace ?? "default",
    registerNamespace: options.registerNamespace ?? true,
    restart: options.restart ?? false,
    overwriteDrift: options.overwriteDrift ?? false,
  });
  const onEvent = options.onEvent ?? ((): void => {});
  return {
    client: asSdkClient(options.client),
    tableName: options.tableName,
    clock: options.clock ?? systemClock,
    signal: options.signal ?? new AbortController().signal,
    options: resolved,
    report: onEvent,
    keepAlive: options.keepAlive ?? (() => Promise.resolve()),
  };
}

/** A copy of a context with some fields replaced (the runner uses it to install `keepAlive`). */
export function withContext(
  ctx: MigrationContext,
  patch: Partial<MigrationContext>,
): MigrationContext {
  return { ...ctx, ...patch };
}

export { type MigrationErrorCode, toError };

/**
 * A migration condition callers are expected to handle. It extends the
 * library's base `ZAELimiterError`; its codes ({@linkcode MigrationErrorCode})
 * are documented with the library's one code union in
 * `core/zae_limiter_error.ts`.
 */
export class MigrationError extends ZAELimiterError {
  /** Stable code. */
  declare readonly code: MigrationErrorCode;
  /** Facts for the caller (owner of a lock, applied migrations, …). */
  readonly details: Readonly<Record<string, unknown>>;

  /** Creates the error; `options.cause` is forwarded. */
  constructor(
    code: MigrationErrorCode,
    message: string,
    options: ErrorOptions & {
      retryable?: boolean;
      details?: Record<string, unknown>;
    } = {},
  ) {
    super(code, message, {
      retryable: options.retryable ?? false,
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.name = "MigrationError";
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }
}

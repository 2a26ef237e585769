/**
 * Runs migrations: a table-wide lock, pending migrations in order, the
 * version record advanced only after a version's migrations all succeed,
 * a history item per migration, status, and rollback (in place for
 * reversible migrations; a backup/PITR recovery plan otherwise).
 *
 * Bookkeeping items, all under `_/SYSTEM#`:
 *
 * | SK | What |
 * |----|------|
 * | `#MIGRATION_LOCK` | `owner`, `expires_at` (epoch ms), `acquired_at`, `operation` |
 * | `#MIGRATION_HISTORY#{id}` | `version`, `started_at`, `finished_at`, `owner`, counts |
 * | `#MIGRATION#{version}#…` | checkpoints of resumable migrations |
 *
 * Where the version record lives: `SYSTEM#` / `#VERSION` below 0.10.0 (the
 * legacy layout), `_/SYSTEM#` / `#VERSION` from 0.10.0 on; when both exist
 * the `_/SYSTEM#` one wins.
 *
 * @example Apply everything pending (needs a table)
 * ```ts ignore
 * import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
 * import { createMigrationContext } from "./migration.ts";
 * import { createProgressReporter } from "./progress.ts";
 * import { applyMigrations } from "./runner.ts";
 *
 * const ctx = createMigrationContext({
 *   client: new DynamoDBClient({}), tableName: "my-app", maxWcuPerSecond: 500,
 *   onEvent: createProgressReporter({ write: (t) => stderr.write(t), tty: true, clock: { now: Date.now } }),
 * });
 * const result = await applyMigrations(ctx, { to: "0.10.0" });
 * ```
 *
 * @module
 */
import {
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { isoSeconds } from "../core/clock.ts";
import { Expr, type Item, num, str } from "../core/expr.ts";
import { RESERVED_NAMESPACE, SK } from "../core/keys.ts";
import { SCHEMA_VERSION } from "../core/schema.ts";
import {
  decodeVersionRecord,
  LEGACY_VERSION_PK,
} from "../core/store/version_record.ts";
import { compareVersions, parseVersion } from "../core/version.ts";
import { isConditionFailed } from "./_dynamo.ts";
import { queryReservedPrefix, SYSTEM_PK } from "./_scan.ts";
import {
  type Migration,
  type MigrationContext,
  MigrationError,
  type MigrationReport,
  toError,
  withContext,
} from "./migration.ts";
import { migrationsBetween } from "./registry.ts";
import { NAMESPACE_KEYS_ID } from "./v0_10_0_namespace_keys.ts";

/** SK of the lock item. */
export const LOCK_SK = "#MIGRATION_LOCK";
const HISTORY_SK = "#MIGRATION_HISTORY#";
const LEGACY_SYSTEM_PK = LEGACY_VERSION_PK;
/** First schema version whose version record lives under `_/SYSTEM#`. */
const NAMESPACED_SCHEMA = "0.10.0";

// ------------------------------------------------------------------ version record

/** The stored version record and where it was found. */
export interface StoredVersion {
  /** Schema version (`1.0.0` when the attribute is missing, as the reference). */
  readonly schemaVersion: string;
  /** Minimum client version. */
  readonly clientMinVersion: string;
  /** Workers' version, or `null`. */
  readonly lambdaVersion: string | null;
  /** Last update, or `null`. */
  readonly updatedAt: string | null;
  /** Last writer, or `null`. */
  readonly updatedBy: string | null;
  /** `reserved`: `_/SYSTEM#` (0.10+); `legacy`: `SYSTEM#` (before 0.10). */
  readonly location: "reserved" | "legacy";
  /**
   * Set when a `_/SYSTEM#` record claims this version although the table
   * still has a pre-0.10 legacy record and no namespace-keys migration was
   * recorded (e.g. a 0.10 client opened the legacy table with
   * `skipVersionCheck`, which writes a fresh record). The legacy version is
   * then the effective one, so the data migration is not skipped.
   */
  readonly reservedClaim: string | null;
}

async function getItem(
  ctx: MigrationContext,
  pk: string,
  sk: string,
): Promise<Item | undefined> {
  const out = await ctx.client.send(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: { PK: { S: pk }, SK: { S: sk } },
      ConsistentRead: true,
    }),
  );
  return out.Item;
}

function decodeVersion(
  item: Item,
  location: StoredVersion["location"],
): StoredVersion {
  return { ...decodeVersionRecord(item), location, reservedClaim: null };
}

/** Reads the version record (`_/SYSTEM#` first, then the legacy `SYSTEM#`), or `null`. */
export async function readStoredVersion(
  ctx: MigrationContext,
): Promise<StoredVersion | null> {
  const reservedItem = await getItem(ctx, SYSTEM_PK, SK.VERSION);
  const legacyItem = await getItem(ctx, LEGACY_SYSTEM_PK, SK.VERSION);
  const reserved = reservedItem
    ? decodeVersion(reservedItem, "reserved")
    : null;
  const legacy = legacyItem ? decodeVersion(legacyItem, "legacy") : null;
  if (reserved === null) return legacy;
  if (
    legacy !== null &&
    compareVersions(reserved.schemaVersion, NAMESPACED_SCHEMA) >= 0 &&
    compareVersions(legacy.schemaVersion, NAMESPACED_SCHEMA) < 0
  ) {
    const migrated = await getItem(
      ctx,
      SYSTEM_PK,
      `${HISTORY_SK}${NAMESPACE_KEYS_ID}`,
    );
    if (!migrated) {
      return { ...legacy, reservedClaim: reserved.schemaVersion };
    }
  }
  return reserved;
}

async function writeStoredVersion(
  ctx: MigrationContext,
  version: string,
  updatedBy: string,
  previous: StoredVersion,
): Promise<void> {
  const targets: string[] = [];
  const namespaced = compareVersions(version, NAMESPACED_SCHEMA) >= 0;
  if (namespaced || previous.location === "reserved") targets.push(SYSTEM_PK);
  if (!namespaced) targets.push(LEGACY_SYSTEM_PK);
  for (const pk of targets) {
    const e = new Expr();
    const set = [
      `${e.n("schema_version")} = ${e.str(version)}`,
      `${e.n("updated_at")} = ${e.str(isoSeconds(ctx.clock.now()))}`,
      `${e.n("updated_by")} = ${e.str(updatedBy)}`,
      // Carried over from the effective record read under the lock.
      `${e.n("client_min_version")} = ${e.str(previous.clientMinVersion)}`,
      `${e.n("lambda_version")} = ${
        e.v(
          previous.lambdaVersion === null
            ? { NULL: true }
            : { S: previous.lambdaVersion },
        )
      }`,
    ];
    if (pk === SYSTEM_PK) {
      set.push(
        `${e.n("GSI4PK")} = ${e.str(RESERVED_NAMESPACE)}`,
        `${e.n("GSI4SK")} = ${e.str(SYSTEM_PK)}`,
      );
    }
    await ctx.client.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: { PK: { S: pk }, SK: { S: SK.VERSION } },
        UpdateExpression: `SET ${set.join(", ")}`,
        ...e.attrs(),
      }),
    );
  }
}

// ------------------------------------------------------------------ lock

/** The migration lock as stored. */
export interface LockInfo {
  /** Who holds it. */
  readonly owner: string;
  /** Epoch ms after which it may be broken. */
  readonly expiresAt: number;
  /** When it was taken (`YYYY-MM-DDTHH:MM:SSZ`). */
  readonly acquiredAt: string | null;
  /** What the holder is doing. */
  readonly operation: string | null;
  /** Host of the holder's process, when recorded. */
  readonly host: string | null;
  /** Process id of the holder on `host`, when recorded. */
  readonly pid: number | null;
  /** Epoch ms of the holder's last renewal (heartbeat), when recorded. */
  readonly heartbeatAt: number | null;
}

/** Where the lock holder runs (recorded in the lock so a dead holder can be recognised). */
export interface LockHolder {
  /** Host identity (the CLI uses hostname plus boot id). */
  readonly host: string;
  /** Process id on that host. */
  readonly pid: number;
}

/** Options of the lock. */
export interface LockOptions {
  /** Lock owner id (e.g. `host:pid`). @default a random UUID */
  readonly owner?: string;
  /** Lock lifetime; renewed while the migration runs. @default 300000 */
  readonly lockTtlMs?: number;
  /**
   * Take over a lock left by a crashed run: an expired one, or one whose
   * holder `isHolderDead` proves dead. @default false
   */
  readonly breakStaleLock?: boolean;
  /**
   * Take over, without `breakStaleLock`, a lock whose holder
   * `isHolderDead` proves dead (a crashed run on this host): no waiting and
   * no flag, since that holder cannot be running. An expired lock of a
   * holder not proven dead still needs `breakStaleLock`. @default false
   */
  readonly takeOverDeadHolder?: boolean;
  /** Recorded in the lock (host and pid of this run). @default not recorded */
  readonly holder?: LockHolder;
  /**
   * Whether the holder of a lock is provably not running (e.g. same host,
   * no such pid). `false` when unknown. @default () => false
   */
  readonly isHolderDead?: (lock: LockInfo) => boolean;
}

/** Reads the lock, or `null`. */
export async function readLock(
  ctx: MigrationContext,
): Promise<LockInfo | null> {
  const it = await getItem(ctx, SYSTEM_PK, LOCK_SK);
  if (!it) return null;
  return {
    owner: str(it, "owner") ?? "",
    expiresAt: num(it, "expires_at") ?? 0,
    acquiredAt: str(it, "acquired_at"),
    operation: str(it, "operation"),
    host: str(it, "host"),
    pid: num(it, "pid"),
    heartbeatAt: num(it, "heartbeat_at"),
  };
}

function lockItem(
  ctx: MigrationContext,
  owner: string,
  ttlMs: number,
  operation: string,
  holder: LockHolder | undefined,
): Item {
  const now = ctx.clock.now();
  return {
    PK: { S: SYSTEM_PK },
    SK: { S: LOCK_SK },
    owner: { S: owner },
    expires_at: { N: String(now + ttlMs) },
    heartbeat_at: { N: String(now) },
    acquired_at: { S: isoSeconds(now) },
    operation: { S: operation },
    ...(holder
      ? { host: { S: holder.host }, pid: { N: String(holder.pid) } }
      : {}),
    GSI4PK: { S: RESERVED_NAMESPACE },
    GSI4SK: { S: SYSTEM_PK },
  };
}

async function acquireLock(
  ctx: MigrationContext,
  owner: string,
  ttlMs: number,
  breakStale: boolean,
  operation: string,
  holder: LockHolder | undefined,
  isHolderDead: (lock: LockInfo) => boolean,
  takeOverDead: boolean,
): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await ctx.client.send(
        new PutItemCommand({
          TableName: ctx.tableName,
          Item: lockItem(ctx, owner, ttlMs, operation, holder),
          ConditionExpression: "attribute_not_exists(PK)",
        }),
      );
      return;
    } catch (e) {
      if (!isConditionFailed(e)) throw e;
    }
    const held = await readLock(ctx);
    if (held === null) continue; // released meanwhile
    const expired = held.expiresAt <= ctx.clock.now();
    const dead = held.owner !== owner && isHolderDead(held);
    const stale = expired || dead;
    if (
      held.owner !== owner && !(stale && breakStale) &&
      !(dead && takeOverDead)
    ) {
      const who = `"${held.owner}"${
        held.host === null ? "" : ` (host ${held.host}, pid ${held.pid})`
      }`;
      throw new MigrationError(
        "MIGRATION_LOCKED",
        dead
          ? `Cannot take the migration lock: it is held by ${who}, which is no longer running (a crashed run)`
          : expired
          ? `Cannot take the migration lock: it is held by ${who} and expired at ${
            new Date(held.expiresAt).toISOString()
          } (a crashed run?)`
          : `Cannot take the migration lock: it is held by ${who} until ${
            new Date(held.expiresAt).toISOString()
          }`,
        {
          retryable: !stale,
          details: {
            owner: held.owner,
            expiresAt: held.expiresAt,
            operation: held.operation,
            host: held.host,
            pid: held.pid,
            stale,
            dead,
          },
        },
      );
    }
    // Our own lock (same owner id), or a stale one we may break: swap it atomically.
    const e = new Expr();
    try {
      await ctx.client.send(
        new PutItemCommand({
          TableName: ctx.tableName,
          Item: lockItem(ctx, owner, ttlMs, operation, holder),
          ConditionExpression: `${e.n("owner")} = ${e.str(held.owner)} AND ${
            e.n("expires_at")
          } = ${e.num(held.expiresAt)}`,
          ...e.attrs(),
        }),
      );
      if (held.owner !== owner) {
        ctx.report({
          kind: "log",
          level: "warn",
          migration: null,
          message: dead
            ? `took over the migration lock of "${held.owner}": its holder (host ${held.host}, pid ${held.pid}) is no longer running (a crashed run)`
            : `broke the stale migration lock of "${held.owner}"`,
        });
      }
      return;
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
    }
  }
  throw new MigrationError(
    "MIGRATION_LOCKED",
    "Cannot take the migration lock: it changed hands during three attempts",
    { retryable: true },
  );
}

async function renewLock(
  ctx: MigrationContext,
  owner: string,
  ttlMs: number,
): Promise<void> {
  const e = new Expr();
  try {
    await ctx.client.send(
      new UpdateItemCommand({
        TableName: ctx.tableName,
        Key: { PK: { S: SYSTEM_PK }, SK: { S: LOCK_SK } },
        UpdateExpression: `SET ${e.n("expires_at")} = ${
          e.num(ctx.clock.now() + ttlMs)
        }, ${e.n("heartbeat_at")} = ${e.num(ctx.clock.now())}`,
        ConditionExpression: `${e.n("owner")} = ${e.str(owner)}`,
        ...e.attrs(),
      }),
    );
  } catch (err) {
    if (!isConditionFailed(err)) throw err;
    throw new MigrationError(
      "MIGRATION_LOCK_LOST",
      `Cannot renew the migration lock of "${owner}": another run took it over`,
      { cause: err, details: { owner } },
    );
  }
}

async function releaseLock(
  ctx: MigrationContext,
  owner: string,
): Promise<void> {
  const e = new Expr();
  try {
    await ctx.client.send(
      new DeleteItemCommand({
        TableName: ctx.tableName,
        Key: { PK: { S: SYSTEM_PK }, SK: { S: LOCK_SK } },
        ConditionExpression: `${e.n("owner")} = ${e.str(owner)}`,
        ...e.attrs(),
      }),
    );
  } catch (err) {
    if (!isConditionFailed(err)) throw err;
  }
}

/**
 * Runs `fn` while holding the migration lock. The context passed to `fn`
 * renews the lock from `keepAlive` (every third of its lifetime). The lock
 * is released however `fn` ends, even on abort.
 *
 * @throws {MigrationError} `MIGRATION_LOCKED` when another run holds it
 */
export async function withMigrationLock<T>(
  ctx: MigrationContext,
  fn: (ctx: MigrationContext) => Promise<T>,
  options: LockOptions & { readonly operation?: string } = {},
): Promise<T> {
  const owner = options.owner ?? `migrate-${crypto.randomUUID()}`;
  const ttlMs = options.lockTtlMs ?? 300_000;
  if (!Number.isFinite(ttlMs) || ttlMs < 1000) {
    throw new RangeError(
      `Cannot use lock option "lockTtlMs": current value is ${ttlMs}, expected at least 1000`,
    );
  }
  ctx.signal.throwIfAborted();
  await acquireLock(
    ctx,
    owner,
    ttlMs,
    options.breakStaleLock ?? false,
    options.operation ?? "migrate",
    options.holder,
    options.isHolderDead ?? (() => false),
    options.takeOverDeadHolder ?? false,
  );
  let renewedAt = ctx.clock.now();
  let renewing: Promise<void> | null = null;
  const outer = ctx.keepAlive;
  const locked = withContext(ctx, {
    keepAlive: async (): Promise<void> => {
      await outer();
      if (renewing) return await renewing;
      if (ctx.clock.now() - renewedAt < ttlMs / 3) return;
      renewing = renewLock(ctx, owner, ttlMs).then(() => {
        renewedAt = ctx.clock.now();
      }).finally(() => {
        renewing = null;
      });
      return await renewing;
    },
  });
  try {
    return await fn(locked);
  } finally {
    await releaseLock(ctx, owner);
  }
}

// ------------------------------------------------------------------ history

/** One applied migration as recorded. */
export interface HistoryEntry {
  /** Migration id. */
  readonly id: string;
  /** Its version. */
  readonly version: string;
  /** Start (`YYYY-MM-DDTHH:MM:SSZ`). */
  readonly startedAt: string | null;
  /** End. */
  readonly finishedAt: string | null;
  /** Lock owner of the run. */
  readonly owner: string | null;
}

async function writeHistory(
  ctx: MigrationContext,
  m: Migration,
  startedAt: string,
  report: MigrationReport,
  owner: string,
): Promise<void> {
  await ctx.client.send(
    new PutItemCommand({
      TableName: ctx.tableName,
      Item: {
        PK: { S: SYSTEM_PK },
        SK: { S: `${HISTORY_SK}${m.id}` },
        migration_id: { S: m.id },
        version: { S: m.version },
        started_at: { S: startedAt },
        finished_at: { S: isoSeconds(ctx.clock.now()) },
        owner: { S: owner },
        scanned: { N: String(report.scanned) },
        written: { N: String(report.written) },
        deleted: { N: String(report.deleted) },
        GSI4PK: { S: RESERVED_NAMESPACE },
        GSI4SK: { S: SYSTEM_PK },
      },
    }),
  );
}

/** Applied migrations recorded in the table, in version order. */
export async function readHistory(
  ctx: MigrationContext,
): Promise<HistoryEntry[]> {
  return (await queryReservedPrefix(ctx, HISTORY_SK)).map((it) => ({
    id: str(it, "migration_id") ?? "",
    version: str(it, "version") ?? "0.0.0",
    startedAt: str(it, "started_at"),
    finishedAt: str(it, "finished_at"),
    owner: str(it, "owner"),
  })).sort((a, b) => compareVersions(a.version, b.version));
}

// ------------------------------------------------------------------ apply

/** A migration as listed by status and results. */
export interface MigrationInfo {
  /** Id. */
  readonly id: string;
  /** Version. */
  readonly version: string;
  /** Description. */
  readonly description: string;
  /** Whether it can be rolled back in place. */
  readonly reversible: boolean;
}

function info(m: Migration): MigrationInfo {
  return {
    id: m.id,
    version: m.version,
    description: m.description,
    reversible: m.reversible,
  };
}

/** One migration run by {@linkcode applyMigrations} or {@linkcode rollbackMigrations}. */
export interface StepResult {
  /** The migration. */
  readonly migration: MigrationInfo;
  /** What it did. */
  readonly report: MigrationReport;
}

/** Options of {@linkcode applyMigrations}. */
export interface ApplyOptions extends LockOptions {
  /** Target schema version. @default SCHEMA_VERSION of this client */
  readonly to?: string;
  /** Registry. @default MIGRATIONS */
  readonly registry?: readonly Migration[];
}

/** Outcome of {@linkcode applyMigrations}. */
export type ApplyResult =
  | { readonly kind: "up_to_date"; readonly version: string }
  | {
    readonly kind: "applied";
    readonly from: string;
    readonly to: string;
    readonly steps: readonly StepResult[];
  }
  | {
    /** The signal aborted; run again to resume (checkpoints keep the progress). */
    readonly kind: "interrupted";
    readonly from: string;
    /** The version recorded in the table now. */
    readonly reached: string;
    readonly steps: readonly StepResult[];
    /** The migration that was running. */
    readonly during: MigrationInfo;
  };

function notInitialized(ctx: MigrationContext): MigrationError {
  return new MigrationError(
    "MIGRATION_NOT_INITIALIZED",
    `Cannot migrate table "${ctx.tableName}": it has no version record (deploy it first)`,
    { details: { table: ctx.tableName } },
  );
}

/**
 * Applies every migration between the table's version and `to`, under the
 * migration lock. The version record is advanced (updated_by
 * `migration:{version}`) only once all migrations of a version succeeded.
 * An abort returns `interrupted`; run again to resume.
 *
 * @throws {MigrationError} `MIGRATION_LOCKED`, `MIGRATION_NOT_INITIALIZED`, `MIGRATION_FAILED` (cause: the migration's error), `MIGRATION_LOCK_LOST`
 */
export function applyMigrations(
  ctx: MigrationContext,
  options: ApplyOptions = {},
): Promise<ApplyResult> {
  const to = options.to ?? SCHEMA_VERSION;
  parseVersion(to);
  const owner = options.owner ?? `migrate-${crypto.randomUUID()}`;
  return withMigrationLock(ctx, async (lctx): Promise<ApplyResult> => {
    const current = await readStoredVersion(lctx);
    if (current === null) throw notInitialized(lctx);
    const pending = migrationsBetween(
      current.schemaVersion,
      to,
      options.registry ? { registry: options.registry } : {},
    );
    if (pending.length === 0) {
      return { kind: "up_to_date", version: current.schemaVersion };
    }
    const steps: StepResult[] = [];
    let reached = current.schemaVersion;
    let stored = current;
    for (let i = 0; i < pending.length; i++) {
      const m = pending[i] as Migration;
      lctx.report({
        kind: "migration_started",
        migration: m.id,
        version: m.version,
      });
      const startedAt = isoSeconds(lctx.clock.now());
      let report: MigrationReport;
      try {
        lctx.signal.throwIfAborted();
        report = await m.apply(lctx);
      } catch (e) {
        if (lctx.signal.aborted) {
          return {
            kind: "interrupted",
            from: current.schemaVersion,
            reached,
            steps,
            during: info(m),
          };
        }
        if (e instanceof MigrationError && e.code === "MIGRATION_LOCK_LOST") {
          throw e;
        }
        const err = toError(e);
        throw new MigrationError(
          "MIGRATION_FAILED",
          `Cannot apply migration "${m.id}": ${err.message}`,
          {
            cause: e,
            details: {
              migration: m.id,
              applied: steps.map((s) => s.migration.id),
              reached,
            },
          },
        );
      }
      await writeHistory(lctx, m, startedAt, report, owner);
      steps.push({ migration: info(m), report });
      lctx.report({
        kind: "migration_finished",
        migration: m.id,
        version: m.version,
        report,
      });
      const next = pending[i + 1];
      if (next === undefined || next.version !== m.version) {
        await writeStoredVersion(
          lctx,
          m.version,
          `migration:${m.version}`,
          stored,
        );
        reached = m.version;
        stored = (await readStoredVersion(lctx)) ?? stored;
      }
    }
    return { kind: "applied", from: current.schemaVersion, to: reached, steps };
  }, { ...options, owner, operation: `apply to ${to}` });
}

// ------------------------------------------------------------------ status

/** A checkpoint item as listed by status. */
export interface CheckpointInfo {
  /** Its sort key (`#MIGRATION#0.10.0#SEGMENT#3`). */
  readonly sk: string;
  /** Whether the segment finished. */
  readonly done: boolean;
}

/** Result of {@linkcode migrationStatus}. */
export interface MigrationStatus {
  /** The version record, or `null` when the table has none. */
  readonly current: StoredVersion | null;
  /** Target version. */
  readonly target: string;
  /** Migrations that {@linkcode applyMigrations} would run. */
  readonly pending: readonly MigrationInfo[];
  /** Migrations recorded as applied. */
  readonly history: readonly HistoryEntry[];
  /** The lock, with whether it has expired, or `null`. */
  readonly lock: (LockInfo & { readonly stale: boolean }) | null;
  /** Saved checkpoints (an interrupted run can resume). */
  readonly checkpoints: readonly CheckpointInfo[];
}

/** Options of {@linkcode migrationStatus}. */
export interface StatusOptions {
  /** Target version. @default SCHEMA_VERSION */
  readonly to?: string;
  /** Registry. @default MIGRATIONS */
  readonly registry?: readonly Migration[];
  /** See {@linkcode LockOptions.isHolderDead}. */
  readonly isHolderDead?: (lock: LockInfo) => boolean;
}

/** Reads the version, pending migrations, history, lock and checkpoints. Read-only. */
export async function migrationStatus(
  ctx: MigrationContext,
  options: StatusOptions = {},
): Promise<MigrationStatus> {
  const to = options.to ?? SCHEMA_VERSION;
  const current = await readStoredVersion(ctx);
  const pending = current === null ? [] : migrationsBetween(
    current.schemaVersion,
    to,
    options.registry ? { registry: options.registry } : {},
  );
  const lock = await readLock(ctx);
  const checkpoints = (await queryReservedPrefix(ctx, "#MIGRATION#")).map((
    it,
  ) => ({
    sk: str(it, "SK") ?? "",
    done: it["done"]?.BOOL === true,
  }));
  return {
    current,
    target: to,
    pending: pending.map(info),
    history: await readHistory(ctx),
    lock: lock === null ? null : {
      ...lock,
      stale: lock.expiresAt <= ctx.clock.now() ||
        (options.isHolderDead?.(lock) ?? false),
    },
    checkpoints,
  };
}

// ------------------------------------------------------------------ rollback

/** One way back from an irreversible migration. */
export interface RecoveryCommand {
  /** `pitr`: restore to a time before the migration; `backup`: restore an on-demand backup; `downgrade`: keep using the untouched originals. */
  readonly kind: "pitr" | "backup" | "downgrade";
  /** What it does and its caveats. */
  readonly description: string;
  /** The exact commands to run, in order. */
  readonly commands: readonly string[];
}

/** How to recover when a rollback crosses an irreversible migration. */
export interface RecoveryPlan {
  /** One paragraph for the operator. */
  readonly summary: string;
  /** Latest safe restore time (one minute before the earliest blocking migration started), or `null` when unknown. */
  readonly restoreBefore: string | null;
  /** Whether the pre-0.10 originals are still in the table (namespace-keys migration without delete). */
  readonly originalsPresent: boolean;
  /** Ways back, preferred first. */
  readonly options: readonly RecoveryCommand[];
}

/** Options of {@linkcode rollbackMigrations}. */
export interface RollbackOptions extends LockOptions {
  /** Version to go back to. Required. */
  readonly to: string;
  /** Registry. @default MIGRATIONS */
  readonly registry?: readonly Migration[];
  /** Region for the rendered commands. @default "<REGION>" */
  readonly region?: string;
}

/** Outcome of {@linkcode rollbackMigrations}. */
export type RollbackResult =
  | { readonly kind: "up_to_date"; readonly version: string }
  | {
    readonly kind: "rolled_back";
    readonly from: string;
    readonly to: string;
    readonly steps: readonly StepResult[];
  }
  | {
    /** Nothing was changed: at least one migration on the way cannot be undone in place. */
    readonly kind: "irreversible";
    readonly from: string;
    readonly to: string;
    readonly blockers: readonly MigrationInfo[];
    readonly recovery: RecoveryPlan;
  }
  | {
    readonly kind: "interrupted";
    readonly from: string;
    readonly reached: string;
    readonly steps: readonly StepResult[];
    readonly during: MigrationInfo;
  };

/**
 * Builds the recovery plan for irreversible migrations (pure).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { recoveryPlan } from "./runner.ts";
 *
 * const plan = recoveryPlan({
 *   table: "my-app", region: "eu-west-1", to: "0.9.0", startedAt: "2026-01-15T12:00:00Z", originalsPresent: false,
 *   blockers: [{ id: "0.10.0-namespace-keys", version: "0.10.0", description: "", reversible: false }],
 * });
 * assert.equal(plan.restoreBefore, "2026-01-15T11:59:00Z");
 * assert.ok(plan.options[0]?.commands.some((c) => c.startsWith("zae-limiter pitr restore --name my-app")));
 * ```
 */
export function recoveryPlan(input: {
  readonly table: string;
  readonly region: string;
  readonly to: string;
  readonly blockers: readonly MigrationInfo[];
  /** When the earliest blocker started (history), or `null`. */
  readonly startedAt: string | null;
  readonly originalsPresent: boolean;
}): RecoveryPlan {
  const restoreBefore = input.startedAt === null
    ? null
    : isoSeconds(Date.parse(input.startedAt) - 60_000);
  const time = restoreBefore ??
    "<TIME BEFORE THE MIGRATION, e.g. 2026-01-15T11:59:00Z>";
  const restored = `${input.table}-restored`;
  const region = `--region ${input.region}`;
  const names = input.blockers.map((b) => b.id).join(", ");
  const options: RecoveryCommand[] = [];
  const onlyNamespaceKeys = input.blockers.every((b) =>
    b.id === "0.10.0-namespace-keys" || b.id === "0.10.0-lsis"
  );
  if (input.originalsPresent && onlyNamespaceKeys) {
    options.push({
      kind: "downgrade",
      description:
        `The unprefixed originals and the legacy version record are still in the table: clients older than 0.10.0 keep working on them. Writes made by 0.10 clients since the migration are not in the originals. Delete the prefixed copies later with 'zae-limiter namespace purge' if wanted.`,
      commands: [
        `npm install zae-limiter@"<0.10.0"   # or: pip install "zae-limiter<0.10.0"`,
        `zae-limiter check --name ${input.table} ${region}`,
      ],
    });
  }
  options.push({
    kind: "pitr",
    description:
      `Restore the table as it was before ${names} into a new table (PITR keeps up to 35 days), then point clients at it (the table name is the stack name) or swap names. Everything written after ${time} is lost.`,
    commands: [
      `zae-limiter pitr restore --name ${input.table} ${region} --time ${time} --target-table ${restored}`,
      `zae-limiter check --name ${restored} ${region}`,
    ],
  });
  options.push({
    kind: "backup",
    description:
      `Restore the on-demand backup taken before the migration into a new table, then point clients at it. Everything written after the backup is lost.`,
    commands: [
      `zae-limiter backup list --name ${input.table} ${region}`,
      `zae-limiter backup restore --name ${input.table} ${region} --backup-arn <BACKUP_ARN> --target-table ${restored}`,
      `zae-limiter check --name ${restored} ${region}`,
    ],
  });
  return {
    summary:
      `Cannot roll back to ${input.to} in place: ${names} cannot be undone. Install a client for schema ${input.to}, then restore a copy of the table from before the migration.`,
    restoreBefore,
    originalsPresent: input.originalsPresent,
    options,
  };
}

/**
 * Rolls the table back to `to`. When every migration on the way is
 * reversible they are rolled back newest first (the version record follows
 * after each version); otherwise nothing is changed and the result carries
 * the backup/PITR recovery plan.
 *
 * @throws {MigrationError} `MIGRATION_LOCKED`, `MIGRATION_NOT_INITIALIZED`, `MIGRATION_FAILED`
 */
export function rollbackMigrations(
  ctx: MigrationContext,
  options: RollbackOptions,
): Promise<RollbackResult> {
  const to = options.to;
  parseVersion(to);
  return withMigrationLock(ctx, async (lctx): Promise<RollbackResult> => {
    const current = await readStoredVersion(lctx);
    if (current === null) throw notInitialized(lctx);
    const list = migrationsBetween(
      to,
      current.schemaVersion,
      options.registry ? { registry: options.registry } : {},
    ).reverse();
    if (list.length === 0) {
      return { kind: "up_to_date", version: current.schemaVersion };
    }
    const blockers = list.filter((m) => !m.reversible);
    if (blockers.length > 0) {
      const history = await readHistory(lctx);
      const started = history.filter((h) => blockers.some((b) => b.id === h.id))
        .map((h) => h.startedAt).filter((t): t is string => t !== null).sort();
      const legacyVersion = await getItem(lctx, LEGACY_SYSTEM_PK, SK.VERSION);
      return {
        kind: "irreversible",
        from: current.schemaVersion,
        to,
        blockers: blockers.map(info),
        recovery: recoveryPlan({
          table: lctx.tableName,
          region: options.region ?? "<REGION>",
          to,
          blockers: blockers.map(info),
          startedAt: started[0] ?? null,
          originalsPresent: legacyVersion !== undefined,
        }),
      };
    }
    const steps: StepResult[] = [];
    let reached = current.schemaVersion;
    let stored = current;
    for (let i = 0; i < list.length; i++) {
      const m = list[i] as Migration;
      if (!m.reversible) continue; // unreachable: checked above
      let report: MigrationReport;
      try {
        lctx.signal.throwIfAborted();
        report = await m.rollback(lctx);
      } catch (e) {
        if (lctx.signal.aborted) {
          return {
            kind: "interrupted",
            from: current.schemaVersion,
            reached,
            steps,
            during: info(m),
          };
        }
        throw new MigrationError(
          "MIGRATION_FAILED",
          `Cannot roll back migration "${m.id}": ${toError(e).message}`,
          { cause: e, details: { migration: m.id, reached } },
        );
      }
      steps.push({ migration: info(m), report });
      await lctx.client.send(
        new DeleteItemCommand({
          TableName: lctx.tableName,
          Key: { PK: { S: SYSTEM_PK }, SK: { S: `${HISTORY_SK}${m.id}` } },
        }),
      );
      const next = list[i + 1];
      if (next === undefined || next.version !== m.version) {
        const version = next === undefined ? to : next.version;
        await writeStoredVersion(
          lctx,
          version,
          `rollback:${m.version}`,
          stored,
        );
        reached = version;
        stored = (await readStoredVersion(lctx)) ?? stored;
      }
    }
    return {
      kind: "rolled_back",
      from: current.schemaVersion,
      to: reached,
      steps,
    };
  }, { ...options, operation: `rollback to ${to}` });
}

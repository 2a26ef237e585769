/**
 * The repository: every DynamoDB read and write of the library, bound to one
 * namespace. It owns the namespace registry, the version record, entity and
 * config records, audit events and bucket reads; the acquire write paths are
 * driven by the limiter through {@linkcode Repository.send}.
 *
 * @module
 */
import {
  type AttributeValue,
  CreateTableCommand,
  DeleteItemCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type QueryCommandInput,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  UpdateTimeToLiveCommand,
} from "@aws-sdk/client-dynamodb";
import {
  cancellationCodes,
  errorName,
  isConditionFailed,
  isResourceNotFound,
} from "./_sdk_errors.ts";
import { bucketTtlSeconds } from "./bucket.ts";
import {
  type BucketItem,
  bucketKey,
  decodeBucket,
  settleWrite,
} from "./bucket_item.ts";
import {
  getActiveNamespaceRecord,
  registerNamespaceRecords,
} from "./namespace_registry.ts";
import { type Clock, isoSeconds, systemClock } from "./clock.ts";
import { ConfigCache, type ConfigSlot } from "./config_cache.ts";
import {
  EntityExistsError,
  EntityNotFoundError,
  IncompatibleSchemaError,
  InfrastructureNotFoundError,
  MinimumClientVersionError,
  NamespaceNotFoundError,
  NamespaceStateError,
  RateLimiterUnavailable,
  ValidationError,
  ZAELimiterError,
} from "./errors.ts";
import {
  bool,
  Expr,
  fromAttr,
  type Item,
  num,
  str,
  toAttr,
  updateExpression,
} from "./expr.ts";
import {
  bucketAttr,
  DEFAULT_NAMESPACE,
  DEFAULT_RESOURCE,
  gsi1PkParent,
  gsi1SkChild,
  gsi2PkResource,
  gsi3PkEntity,
  gsi3PkEntityConfig,
  isUnprefixedKey,
  limitAttr,
  parseLimitAttr,
  pkAudit,
  pkBucket,
  pkEntity,
  pkResource,
  pkSystem,
  RESERVED_NAMESPACE,
  SK,
  skAudit,
  skConfig,
  skNamespace,
  skNsid,
} from "./keys.ts";
import { Limit, validateLimitList } from "./limit.ts";
import type {
  AuditActionName,
  AuditEvent,
  CacheStats,
  ConfigSource,
  Entity,
  NamespaceInfo,
  OnUnavailable,
  UsageSnapshot,
  UsageSnapshotFilter,
} from "./models.ts";
import {
  CLIENT_VERSION,
  createTableInput,
  SCHEMA_VERSION,
  TTL_ATTRIBUTE,
} from "./schema.ts";
import { createUlid } from "./ulid.ts";
import {
  bindTable,
  createTableClient,
  type DynamoDbClientLike,
  type SdkClient,
  type TableClient,
} from "./store/table.ts";
import {
  type ResourceCapacity,
  ResourceCapacityAccumulator,
  type ResourceCapacityOptions,
} from "./resource_capacity.ts";
import { decodeSnapshot } from "./usage.ts";
import {
  validateDisplayName,
  validateIdentifier,
  validateLimitName,
  validateMetadata,
  validateNamespaceName,
  validatePrincipal,
  validateResource,
  validateStackName,
} from "./validation.ts";
import { checkCompatibility, type VersionRecord } from "./version.ts";
import { countingSend } from "./telemetry.ts";
import {
  ClockSync,
  type DeadlineOptions,
  guardedSend,
  type Send,
  untilAborted,
  withDeadline,
} from "./transport.ts";

export type { DynamoDbClientLike } from "./store/table.ts";

/** Options of {@linkcode Repository.open}. */
export interface RepositoryOptions {
  /** An SDK client (or anything with its `send`). Required. */
  readonly client: DynamoDbClientLike;
  /** Stack (= table) name. @default "zae-limiter" */
  readonly stack?: string;
  /** Namespace name. @default "default" */
  readonly namespace?: string;
  /**
   * Create the table when it is missing. Off by default: applications should
   * not provision infrastructure; the CLI's `deploy` does.
   * @default false
   */
  readonly provision?: boolean;
  /** Register the namespace when it is unknown (reference weakness 42: off by default). @default false */
  readonly registerNamespace?: boolean;
  /** Config cache time to live in seconds; 0 disables. @default 60 */
  readonly configCacheTtlSeconds?: number;
  /** Bucket TTL = time to fill × this; ≤ 0 disables. @default 7 */
  readonly bucketTtlMultiplier?: number;
  /** Audit retention when the system config does not say. @default 90 */
  readonly auditRetentionDays?: number;
  /** Clock. @default systemClock */
  readonly clock?: Clock;
  /** Who is acting, for audit events, when a call names no principal. @default () => null */
  readonly principal?: () => Promise<string | null>;
  /** Skip the version check (tools that inspect or migrate old tables). @default false */
  readonly skipVersionCheck?: boolean;
  /** Maximum entity-cache entries. @default 100000 */
  readonly entityCacheSize?: number;
  /**
   * Deadline in milliseconds of each DynamoDB command sent outside a call
   * that has its own (the limiter's calls carry theirs; see
   * {@linkcode Repository.withDeadline}). @default 10000
   */
  readonly timeoutMs?: number;
  /**
   * Correct the clock by the offset the `Date` headers of DynamoDB's answers
   * prove (bounds clock skew between clients; see the README).
   * @default true unless a `clock` is given
   */
  readonly clockSync?: boolean;
}

/** What the limiter knows about an entity without reading it. */
export interface EntityInfo {
  /** Cascade flag. */
  readonly cascade: boolean;
  /** Parent id. */
  readonly parentId: string | null;
  /** Shard count per resource. */
  readonly shards: ReadonlyMap<string, number>;
  /** Clock time after which the next write should re-read the denormalised flags. */
  readonly refreshAt: number;
}

/** Resolved limits and where they came from. */
export interface ResolvedLimits {
  /** The limits. */
  readonly limits: readonly Limit[];
  /** Their level. */
  readonly source: ConfigSource;
}

/** Options of {@linkcode Repository.createEntity}. */
export interface CreateEntityOptions {
  /** Display name, at most 256 characters (`MAX_DISPLAY_NAME_LENGTH`). @default the id */
  readonly name?: string;
  /** Parent id. */
  readonly parentId?: string;
  /** Also consume from the parent on every acquire. Requires `parentId`. @default false */
  readonly cascade?: boolean;
  /**
   * String metadata: at most 50 entries, keys of 1 to 128 characters, values
   * of at most 512 (`MAX_METADATA_*` in `core/validation.ts`).
   */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Who is acting, for the audit event. */
  readonly principal?: string;
}

interface Shared {
  readonly client: SdkClient;
  readonly io: TableClient;
  readonly table: string;
  readonly clock: Clock;
  readonly clockSync: ClockSync | null;
  readonly timeoutMs: number;
  readonly ulid: (now: number) => string;
  readonly entityCache: Map<string, EntityInfo>;
  readonly entityCacheSize: number;
  readonly namespaceIds: Map<string, string>;
  readonly principal: () => Promise<string | null>;
  readonly bucketTtlMultiplier: number;
  readonly auditRetentionDays: number;
  readonly configCacheTtlSeconds: number;
}

function limitsFromItem(item: Item | undefined): Limit[] {
  if (!item) return [];
  const out: Limit[] = [];
  for (const attr of Object.keys(item).sort()) {
    const p = parseLimitAttr(attr);
    if (!p || p.field !== "cp") continue;
    out.push(
      new Limit(
        p.limitName,
        num(item, attr) ?? 0,
        num(item, limitAttr(p.limitName, "ra")) ?? 0,
        num(item, limitAttr(p.limitName, "rp")) ?? 0,
      ),
    );
  }
  return out;
}

function limitAttrs(limits: readonly Limit[]): Item {
  const out: Item = {};
  for (const l of limits) {
    out[limitAttr(l.name, "cp")] = { N: String(l.capacity) };
    out[limitAttr(l.name, "ra")] = { N: String(l.refillAmount) };
    out[limitAttr(l.name, "rp")] = { N: String(l.refillPeriodSeconds) };
  }
  return out;
}

function slotKey(pk: string, sk: string): string {
  return `${pk}\u0000${sk}`;
}

function entityFromItem(item: Item): Entity {
  const md = fromAttr(item["metadata"]);
  const metadata: Record<string, string> = {};
  if (md && typeof md === "object") {
    for (const [k, v] of Object.entries(md as Record<string, unknown>)) {
      metadata[k] = String(v);
    }
  }
  const id = str(item, "entity_id") ?? "";
  return {
    id,
    name: str(item, "name") ?? id,
    parentId: str(item, "parent_id"),
    cascade: bool(item, "cascade") ?? false,
    metadata,
    createdAt: str(item, "created_at"),
  };
}

/**
 * All DynamoDB I/O of one namespace. Open with {@linkcode Repository.open};
 * {@linkcode Repository.namespace} gives a sibling bound to another namespace
 * that shares the client and the entity cache.
 */
export class Repository {
  readonly #s: Shared;
  /** Namespace name. */
  readonly namespaceName: string;
  /** Opaque namespace id (the key prefix). */
  readonly namespaceId: string;
  readonly #config: ConfigCache;

  /** Use {@linkcode Repository.open} (or {@linkcode Repository.namespace}). */
  private constructor(
    shared: Shared,
    namespaceName: string,
    namespaceId: string,
  ) {
    this.#s = shared;
    bindTable(this, shared.io);
    this.namespaceName = namespaceName;
    this.namespaceId = namespaceId;
    this.#config = new ConfigCache(
      this.#s.clock,
      this.#s.configCacheTtlSeconds,
    );
  }

  /**
   * Opens a repository: checks the table (creating it only with `provision`),
   * resolves the namespace (registering it only with `registerNamespace`, or
   * on a table this call created), and checks version compatibility. Without
   * `provision` or `registerNamespace` it writes nothing.
   *
   * @throws {InfrastructureNotFoundError} the table is missing and `provision` is off
   * @throws {NamespaceNotFoundError} the namespace is not registered
   * @throws {IncompatibleSchemaError} the table needs a migration
   * @throws {MinimumClientVersionError} the table requires a newer client
   */
  static async open(options: RepositoryOptions): Promise<Repository> {
    try {
      return await Repository.#open(options);
    } catch (e) {
      if (e instanceof ZAELimiterError) throw e;
      if (errorName(e) === "ValidationException") {
        // DynamoDB refused the request itself (e.g. a table name it does not accept).
        throw new ValidationError(
          "stack",
          options.stack ?? "zae-limiter",
          `DynamoDB refused it: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
      throw new RateLimiterUnavailable(
        `Could not open the table: ${
          e instanceof Error ? e.message : String(e)
        }`,
        { cause: e, stackName: options.stack ?? "zae-limiter" },
      );
    }
  }

  static async #open(options: RepositoryOptions): Promise<Repository> {
    const table = validateStackName(options.stack ?? "zae-limiter", "stack");
    const nsName = validateNamespaceName(
      options.namespace ?? DEFAULT_NAMESPACE,
    );
    const localClock = options.clock ?? systemClock;
    const sync = (options.clockSync ?? options.clock === undefined)
      ? new ClockSync()
      : undefined;
    const timeoutMs = options.timeoutMs ?? 10_000;
    const rawSend = options.client.send.bind(options.client) as Send;
    const clock = sync ? sync.clock(localClock) : localClock;
    const io = createTableClient({
      send: guardedSend(countingSend(rawSend), {
        defaultTimeoutMs: timeoutMs,
        clockSync: sync,
        localClock,
      }),
    }, { tableName: table, clock });
    const shared: Shared = {
      client: io.client,
      io,
      table,
      clock,
      clockSync: sync ?? null,
      timeoutMs,
      ulid: createUlid(),
      entityCache: new Map(),
      entityCacheSize: options.entityCacheSize ?? 100_000,
      namespaceIds: new Map(),
      principal: options.principal ?? (() => Promise.resolve(null)),
      bucketTtlMultiplier: options.bucketTtlMultiplier ?? 7,
      auditRetentionDays: options.auditRetentionDays ?? 90,
      configCacheTtlSeconds: options.configCacheTtlSeconds ?? 60,
    };
    const system = new Repository(
      shared,
      RESERVED_NAMESPACE,
      RESERVED_NAMESPACE,
    );
    // One round trip: the namespace's forward record and the version record.
    let forward: Item | undefined;
    let version: Item | undefined;
    let created = false;
    try {
      const got = await shared.io.batchGet([
        {
          PK: { S: pkSystem(RESERVED_NAMESPACE) },
          SK: { S: skNamespace(nsName) },
        },
        { PK: { S: pkSystem(RESERVED_NAMESPACE) }, SK: { S: SK.VERSION } },
      ], true);
      forward = got.find((i) => str(i, "SK") === skNamespace(nsName));
      version = got.find((i) => str(i, "SK") === SK.VERSION);
    } catch (e) {
      if (!isResourceNotFound(e)) throw e;
      if (!options.provision) throw new InfrastructureNotFoundError(table);
      await system.createTable();
      created = true;
    }
    // Writes happen only on a table this call created, or when asked to
    // provision: opening is otherwise read-only (the CLI's read commands rely on it).
    const mayWrite = created || options.provision === true;
    if (!version) {
      if (!created && !options.skipVersionCheck) {
        await system.#rejectLegacyTable();
      }
      if (mayWrite) {
        await system.setVersionRecord({
          schemaVersion: SCHEMA_VERSION,
          updatedBy: `client:${CLIENT_VERSION}`,
        });
      } else if (!options.skipVersionCheck) {
        throw new InfrastructureNotFoundError(table);
      }
    } else if (!options.skipVersionCheck) {
      Repository.#enforceVersion(Repository.#decodeVersion(version));
    }
    let nsId: string | undefined;
    if (forward && str(forward, "status") === "active") {
      nsId = str(forward, "namespace_id") ?? undefined;
    }
    if (nsId === undefined) {
      const mayRegister = options.registerNamespace === true ||
        (mayWrite && nsName === DEFAULT_NAMESPACE);
      if (!mayRegister && !created) throw new NamespaceNotFoundError(nsName);
      nsId = await system.registerNamespace(nsName);
    }
    if (created && nsName !== DEFAULT_NAMESPACE) {
      await system.registerNamespace(DEFAULT_NAMESPACE);
    }
    shared.namespaceIds.set(nsName, nsId);
    return new Repository(shared, nsName, nsId);
  }

  static #enforceVersion(record: VersionRecord): void {
    const r = checkCompatibility({
      clientVersion: CLIENT_VERSION,
      schemaVersion: SCHEMA_VERSION,
    }, record);
    for (const issue of r.issues) {
      if (issue.kind === "schema_incompatible") {
        throw new IncompatibleSchemaError(
          SCHEMA_VERSION,
          record.schemaVersion,
          `Migration required: ${issue.action}.`,
        );
      }
      if (issue.kind === "client_too_old") {
        throw new MinimumClientVersionError(CLIENT_VERSION, issue.minimum);
      }
    }
  }

  /** A pre-0.10 table keeps its version record unprefixed: refuse it with the migration to run. */
  async #rejectLegacyTable(): Promise<void> {
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: "SYSTEM#" }, SK: { S: SK.VERSION } },
        ConsistentRead: true,
      }),
    );
    if (out.Item) {
      const legacy = str(out.Item, "schema_version") ?? "1.0.0";
      throw new IncompatibleSchemaError(
        SCHEMA_VERSION,
        legacy,
        `Migration required: run 'zae-limiter migrate apply --to ${SCHEMA_VERSION}' (namespace-keys migration).`,
      );
    }
  }

  static #decodeVersion(item: Item): VersionRecord {
    return {
      schemaVersion: str(item, "schema_version") ?? "1.0.0",
      clientMinVersion: str(item, "client_min_version") ?? "0.0.0",
      lambdaVersion: str(item, "lambda_version"),
      updatedAt: str(item, "updated_at"),
      updatedBy: str(item, "updated_by"),
    };
  }

  /** Table (= stack) name. */
  get tableName(): string {
    return this.#s.table;
  }
  /** The SDK client. */
  get client(): DynamoDbClientLike {
    return this.#s.client;
  }
  /** The clock. */
  get clock(): Clock {
    return this.#s.clock;
  }
  /**
   * The bucket TTL policy (spec 02 §9): no TTL for entity-level limits
   * (`"remove"`), none when the multiplier is ≤ 0 (`null`: leave as is), else
   * now + time to fill × multiplier, but at least twice the refresh interval
   * because warm writes do not refresh the TTL.
   */
  bucketTtl(resolved: ResolvedLimits, nowMs: number): number | "remove" | null {
    if (resolved.source === "entity") return "remove";
    const s = bucketTtlSeconds(resolved.limits, this.#s.bucketTtlMultiplier);
    if (s === null) return null;
    return Math.floor(nowMs / 1000) +
      Math.max(s, 2 * this.refreshIntervalSeconds);
  }

  /** How often cached entity and config data are re-checked, in seconds. */
  get refreshIntervalSeconds(): number {
    return Math.max(1, this.#s.configCacheTtlSeconds);
  }

  /** Bucket TTL multiplier. */
  get bucketTtlMultiplier(): number {
    return this.#s.bucketTtlMultiplier;
  }

  /**
   * A repository bound to another registered namespace, sharing the client
   * and the entity cache, with its own config cache.
   *
   * @throws {NamespaceNotFoundError} when the name is not registered
   */
  async namespace(name: string): Promise<Repository> {
    validateNamespaceName(name);
    let id = this.#s.namespaceIds.get(name);
    if (id === undefined) {
      const info = await this.getNamespace(name);
      if (!info) throw new NamespaceNotFoundError(name);
      id = info.namespaceId;
      this.#s.namespaceIds.set(name, id);
    }
    return new Repository(this.#s, name, id);
  }

  /**
   * Runs `fn` with a deadline: every DynamoDB command it sends carries the
   * signal, and the call fails (with an abort error) once `timeoutMs` has
   * passed or `signal` aborted.
   */
  withDeadline<T>(
    options: DeadlineOptions,
    fn: () => Promise<T>,
  ): Promise<T> {
    return withDeadline(options, this.#s.timeoutMs, () => fn());
  }

  /** The clock-sync bounds `[lo, hi]` in ms (local + offset = DynamoDB time), or `null` when off. */
  get clockOffsetBounds(): readonly [number, number] | null {
    return this.#s.clockSync?.bounds ?? null;
  }

  /**
   * Sends any SDK command through this repository's client.
   *
   * @deprecated Internal: use `tableOf(repo).send` from `core/store/table.ts`.
   * @ignore
   */
  send<T>(command: unknown): Promise<T> {
    return this.#s.io.send<T>(command);
  }

  // ---------------------------------------------------------------- table

  /** Creates the table (schema 0.10) and enables TTL; an existing table is left as is. */
  async createTable(): Promise<void> {
    try {
      await this.#s.client.send(
        new CreateTableCommand(createTableInput(this.#s.table)),
      );
    } catch (e) {
      if (errorName(e) !== "ResourceInUseException") throw e;
      return;
    }
    for (let i = 0; i < 120; i++) {
      const d = await this.#s.client.send(
        new DescribeTableCommand({ TableName: this.#s.table }),
      );
      if (d.Table?.TableStatus === "ACTIVE") break;
      await this.#s.clock.sleep(500);
    }
    await this.#s.client.send(
      new UpdateTimeToLiveCommand({
        TableName: this.#s.table,
        TimeToLiveSpecification: {
          AttributeName: TTL_ATTRIBUTE,
          Enabled: true,
        },
      }),
    );
  }

  /** Deletes the table; a missing table is ignored. */
  async deleteTable(): Promise<void> {
    try {
      await this.#s.client.send(
        new DeleteTableCommand({ TableName: this.#s.table }),
      );
    } catch (e) {
      if (!isResourceNotFound(e)) throw e;
    }
  }

  /** Whether DynamoDB answers for this table within `timeoutMs`; never throws. */
  async ping(timeoutMs = 1000): Promise<boolean> {
    try {
      await this.#s.client.send(
        new GetItemCommand({
          TableName: this.#s.table,
          Key: {
            PK: { S: pkSystem(RESERVED_NAMESPACE) },
            SK: { S: SK.VERSION },
          },
        }),
        { abortSignal: AbortSignal.timeout(timeoutMs) },
      );
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Reads items by key (unprocessed keys retried).
   *
   * @deprecated Internal: use `tableOf(repo).batchGet` from `core/store/table.ts`.
   * @ignore
   */
  batchGet(keys: Item[], consistent = true): Promise<Item[]> {
    return this.#s.io.batchGet(keys, consistent);
  }

  // ---------------------------------------------------------------- namespace registry

  /**
   * Registers a namespace name and returns its id; idempotent.
   *
   * @throws {ValidationError} for `_` or a malformed name
   */
  async registerNamespace(name: string): Promise<string> {
    const id = await registerNamespaceRecords(
      { client: this.#s.client, table: this.#s.table, clock: this.#s.clock },
      name,
    );
    this.#s.namespaceIds.set(name, id);
    return id;
  }

  /** The active namespace of that name, or `null`. */
  async getNamespace(name: string): Promise<NamespaceInfo | null> {
    const item = await getActiveNamespaceRecord(
      { client: this.#s.client, table: this.#s.table, clock: this.#s.clock },
      name,
    );
    return item ? this.#nsInfo(item) : null;
  }

  #nsInfo(item: Item): NamespaceInfo {
    return {
      name: str(item, "namespace_name") ?? "",
      namespaceId: str(item, "namespace_id") ?? "",
      status: str(item, "status") ?? "active",
      createdAt: str(item, "created_at"),
      deletedAt: str(item, "deleted_at"),
    };
  }

  /** Every active namespace, sorted by name. */
  async listNamespaces(): Promise<NamespaceInfo[]> {
    const items = await this.#s.io.queryAll({
      KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
      ExpressionAttributeValues: {
        ":pk": { S: pkSystem(RESERVED_NAMESPACE) },
        ":sk": { S: SK.NAMESPACE },
      },
      ConsistentRead: true,
    });
    return items.filter((i) => str(i, "status") === "active").map((i) =>
      this.#nsInfo(i)
    )
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Soft-deletes a namespace (its data stays until purged); unknown names are ignored. */
  async deleteNamespace(name: string): Promise<void> {
    validateNamespaceName(name);
    const info = await this.getNamespace(name);
    if (!info) return;
    const sys = pkSystem(RESERVED_NAMESPACE);
    await this.#s.client.send(
      new TransactWriteItemsCommand({
        TransactItems: [
          {
            Delete: {
              TableName: this.#s.table,
              Key: { PK: { S: sys }, SK: { S: skNamespace(name) } },
            },
          },
          {
            Update: {
              TableName: this.#s.table,
              Key: { PK: { S: sys }, SK: { S: skNsid(info.namespaceId) } },
              UpdateExpression: "SET #st = :d, deleted_at = :t",
              ExpressionAttributeNames: { "#st": "status" },
              ExpressionAttributeValues: {
                ":d": { S: "deleted" },
                ":t": { S: isoSeconds(this.#s.clock.now()) },
              },
            },
          },
        ],
      }),
    );
    this.#s.namespaceIds.delete(name);
  }

  /**
   * Recovers a soft-deleted namespace by id and returns its name.
   *
   * @throws {EntityNotFoundError} no such id
   * @throws {NamespaceStateError} active, purging, or the name was registered again
   */
  async recoverNamespace(namespaceId: string): Promise<string> {
    const sys = pkSystem(RESERVED_NAMESPACE);
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: sys }, SK: { S: skNsid(namespaceId) } },
        ConsistentRead: true,
      }),
    );
    if (!out.Item) throw new EntityNotFoundError(namespaceId);
    const info = this.#nsInfo(out.Item);
    if (info.status === "active") {
      throw new NamespaceStateError(
        `Cannot recover namespace "${info.name}": it is active`,
        {
          namespaceName: info.name,
          state: "active",
        },
      );
    }
    if (info.status === "purging") {
      throw new NamespaceStateError(
        `Cannot recover namespace "${info.name}": purging is terminal`,
        {
          namespaceName: info.name,
          state: "purging",
        },
      );
    }
    const common = {
      "namespace_id": { S: namespaceId },
      "namespace_name": { S: info.name },
      status: { S: "active" },
      "created_at": { S: info.createdAt ?? isoSeconds(this.#s.clock.now()) },
      GSI4PK: { S: RESERVED_NAMESPACE },
      GSI4SK: { S: sys },
    };
    try {
      await this.#s.client.send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Put: {
                TableName: this.#s.table,
                Item: {
                  PK: { S: sys },
                  SK: { S: skNamespace(info.name) },
                  ...common,
                },
                ConditionExpression: "attribute_not_exists(PK)",
              },
            },
            {
              Put: {
                TableName: this.#s.table,
                Item: {
                  PK: { S: sys },
                  SK: { S: skNsid(namespaceId) },
                  ...common,
                },
                ConditionExpression: "#st = :d",
                ExpressionAttributeNames: { "#st": "status" },
                ExpressionAttributeValues: { ":d": { S: "deleted" } },
              },
            },
          ],
        }),
      );
    } catch (e) {
      if (cancellationCodes(e)[0] === "ConditionalCheckFailed") {
        throw new NamespaceStateError(
          `Cannot recover namespace "${info.name}": the name was registered again with another id`,
          { namespaceName: info.name, state: "re-registered" },
        );
      }
      throw e;
    }
    this.#s.namespaceIds.set(info.name, namespaceId);
    return info.name;
  }

  /** Soft-deleted namespaces that can be recovered or purged. */
  async listOrphanNamespaces(): Promise<NamespaceInfo[]> {
    const items = await this.#s.io.queryAll({
      KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
      ExpressionAttributeValues: {
        ":pk": { S: pkSystem(RESERVED_NAMESPACE) },
        ":sk": { S: SK.NSID },
      },
      ConsistentRead: true,
    });
    return items.filter((i) => str(i, "status") === "deleted").map((i) =>
      this.#nsInfo(i)
    );
  }

  /**
   * Deletes every item of a soft-deleted namespace (GSI4), then its registry record.
   * Returns the number of items deleted.
   *
   * @throws {NamespaceStateError} when the namespace is active
   */
  async purgeNamespace(
    namespaceId: string,
    onProgress?: (deleted: number) => void,
  ): Promise<number> {
    const sys = pkSystem(RESERVED_NAMESPACE);
    const key = { PK: { S: sys }, SK: { S: skNsid(namespaceId) } };
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: key,
        ConsistentRead: true,
      }),
    );
    if (!out.Item) return 0;
    if (str(out.Item, "status") === "active") {
      throw new NamespaceStateError(
        `Cannot purge namespace "${
          str(out.Item, "namespace_name")
        }": it is active; delete it first`,
        {
          namespaceName: str(out.Item, "namespace_name") ?? "",
          state: "active",
        },
      );
    }
    await this.#s.client.send(
      new UpdateItemCommand({
        TableName: this.#s.table,
        Key: key,
        UpdateExpression: "SET #st = :p",
        ExpressionAttributeNames: { "#st": "status" },
        ExpressionAttributeValues: { ":p": { S: "purging" } },
      }),
    );
    let deleted = 0;
    let start: Record<string, AttributeValue> | undefined;
    do {
      const res = await this.#s.client.send(
        new QueryCommand({
          TableName: this.#s.table,
          IndexName: "GSI4",
          KeyConditionExpression: "GSI4PK = :ns",
          ExpressionAttributeValues: { ":ns": { S: namespaceId } },
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      const keys = (res.Items ?? []).map((i) => ({
        PK: i["PK"] as AttributeValue,
        SK: i["SK"] as AttributeValue,
      }));
      deleted += await this.#s.io.batchDelete(keys);
      onProgress?.(deleted);
      start = res.LastEvaluatedKey;
    } while (start);
    await this.#s.client.send(
      new DeleteItemCommand({ TableName: this.#s.table, Key: key }),
    );
    return deleted;
  }

  // ---------------------------------------------------------------- version record

  /** The version record, or `null` when the table has none. */
  async getVersionRecord(): Promise<VersionRecord | null> {
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: pkSystem(RESERVED_NAMESPACE) }, SK: { S: SK.VERSION } },
        ConsistentRead: true,
      }),
    );
    return out.Item ? Repository.#decodeVersion(out.Item) : null;
  }

  /** Writes the version record (unconditional Put, as the reference). */
  async setVersionRecord(
    record: Partial<VersionRecord> & { readonly schemaVersion: string },
  ): Promise<void> {
    const sys = pkSystem(RESERVED_NAMESPACE);
    await this.#s.client.send(
      new PutItemCommand({
        TableName: this.#s.table,
        Item: {
          PK: { S: sys },
          SK: { S: SK.VERSION },
          "schema_version": { S: record.schemaVersion },
          "client_min_version": { S: record.clientMinVersion ?? "0.0.0" },
          "lambda_version": record.lambdaVersion
            ? { S: record.lambdaVersion }
            : { NULL: true },
          "updated_at": { S: isoSeconds(this.#s.clock.now()) },
          "updated_by": record.updatedBy
            ? { S: record.updatedBy }
            : { NULL: true },
          GSI4PK: { S: RESERVED_NAMESPACE },
          GSI4SK: { S: sys },
        },
      }),
    );
  }

  // ---------------------------------------------------------------- config resolution

  #levels(
    entityId: string,
    resource: string,
  ): { key: Item; slot: string; source: ConfigSource }[] {
    const ns = this.namespaceId;
    const levels: { key: Item; slot: string; source: ConfigSource }[] = [];
    const add = (pk: string, sk: string, source: ConfigSource): void => {
      levels.push({
        key: { PK: { S: pk }, SK: { S: sk } },
        slot: slotKey(pk, sk),
        source,
      });
    };
    add(pkEntity(ns, entityId), skConfig(resource), "entity");
    if (resource !== DEFAULT_RESOURCE) {
      add(pkEntity(ns, entityId), skConfig(DEFAULT_RESOURCE), "entity_default");
    }
    add(pkResource(ns, resource), SK.CONFIG, "resource");
    add(pkSystem(ns), SK.CONFIG, "system");
    return levels;
  }

  #slotFrom(item: Item | undefined): ConfigSlot {
    const ou = item ? str(item, "on_unavailable") : null;
    return {
      limits: limitsFromItem(item),
      onUnavailable: ou === "allow" || ou === "block" ? ou : null,
      auditRetentionDays: item ? num(item, "audit_retention_days") : null,
    };
  }

  readonly #inflight = new Map<string, Promise<void>>();

  async #fill(
    levels: { key: Item; slot: string }[],
  ): Promise<Map<string, ConfigSlot>> {
    const found = new Map<string, ConfigSlot>();
    const missing: { key: Item; slot: string }[] = [];
    for (const l of levels) {
      const v = this.#config.get(l.slot);
      if (v) found.set(l.slot, v);
      else missing.push(l);
    }
    if (missing.length === 0) return found;
    const waitFor: Promise<void>[] = [];
    const toFetch: { key: Item; slot: string }[] = [];
    for (const m of missing) {
      const p = this.#inflight.get(m.slot);
      if (p) waitFor.push(p);
      else toFetch.push(m);
    }
    const fetched = new Map<string, ConfigSlot>();
    if (toFetch.length > 0) {
      const run = (async () => {
        const items = await this.#s.io.batchGet(
          toFetch.map((m) => m.key),
          false,
        );
        const bySlot = new Map(
          items.map((
            i,
          ) => [slotKey(str(i, "PK") ?? "", str(i, "SK") ?? ""), i]),
        );
        for (const m of toFetch) {
          const slot = this.#slotFrom(bySlot.get(m.slot));
          fetched.set(m.slot, slot);
          this.#config.set(m.slot, slot);
        }
      })();
      for (const m of toFetch) this.#inflight.set(m.slot, run);
      try {
        await run;
      } finally {
        for (const m of toFetch) this.#inflight.delete(m.slot);
      }
    }
    // Bounded by this call's own deadline, not by the one that started the read.
    if (waitFor.length > 0) await untilAborted(Promise.all(waitFor));
    for (const m of missing) {
      const v = fetched.get(m.slot) ?? this.#config.get(m.slot);
      // With caching disabled the concurrent fetch left nothing behind: read again.
      found.set(
        m.slot,
        v ?? this.#slotFrom((await this.#s.io.batchGet([m.key], false))[0]),
      );
    }
    return found;
  }

  /**
   * Resolves the stored limits of an entity and resource through the four
   * levels (entity+resource, entity default, resource default, system), one
   * BatchGetItem for the levels not in the cache; `null` when none is set.
   */
  async resolveLimits(
    entityId: string,
    resource: string,
    options: { fresh?: boolean } = {},
  ): Promise<ResolvedLimits | null> {
    const levels = this.#levels(entityId, resource);
    if (options.fresh) { for (const l of levels) this.#config.evict(l.slot); }
    const slots = await this.#fill(levels);
    for (const l of levels) {
      const s = slots.get(l.slot);
      if (s && s.limits.length > 0) {
        return { limits: s.limits, source: l.source };
      }
    }
    return null;
  }

  #lastOnUnavailable: OnUnavailable | null = null;

  /** `on_unavailable` from the system config (cached); the last known value or `block` on failure; never throws. */
  async resolveOnUnavailable(): Promise<OnUnavailable> {
    try {
      const pk = pkSystem(this.namespaceId);
      const slots = await this.#fill([{
        key: { PK: { S: pk }, SK: { S: SK.CONFIG } },
        slot: slotKey(pk, SK.CONFIG),
      }]);
      const v = slots.get(slotKey(pk, SK.CONFIG))?.onUnavailable ?? null;
      if (v) this.#lastOnUnavailable = v;
      return v ?? this.#lastOnUnavailable ?? "block";
    } catch {
      return this.#lastOnUnavailable ?? "block";
    }
  }

  /** The cached `on_unavailable`, without I/O (`null` when unknown). */
  cachedOnUnavailable(): OnUnavailable | null {
    const pk = pkSystem(this.namespaceId);
    return this.#config.get(slotKey(pk, SK.CONFIG))?.onUnavailable ??
      this.#lastOnUnavailable;
  }

  /** Clears the config cache and the remembered `on_unavailable`. */
  invalidateConfigCache(): void {
    this.#config.clear();
    this.#lastOnUnavailable = null;
  }

  /** Config cache counters. */
  getCacheStats(): CacheStats {
    return this.#config.stats();
  }

  // ---------------------------------------------------------------- entity cache

  /** Cached cascade/parent/shard info of an entity, or `undefined`. */
  entityInfo(entityId: string): EntityInfo | undefined {
    return this.#s.entityCache.get(`${this.namespaceId}\u0000${entityId}`);
  }

  /** Updates the cached cascade/parent and (optionally) one resource's shard count. */
  rememberEntity(
    entityId: string,
    info: { cascade: boolean; parentId: string | null },
    shard?: { resource: string; count: number },
  ): void {
    const key = `${this.namespaceId}\u0000${entityId}`;
    const cache = this.#s.entityCache;
    const old = cache.get(key);
    const shards = new Map(old?.shards ?? []);
    if (shard) shards.set(shard.resource, shard.count);
    if (old) cache.delete(key);
    else if (cache.size >= this.#s.entityCacheSize) {
      const oldest = cache.keys().next();
      if (!oldest.done) cache.delete(oldest.value);
    }
    cache.set(key, {
      cascade: info.cascade,
      parentId: info.parentId,
      shards,
      // Another process may create the entity (or its parent link) later: look again now and then.
      refreshAt: this.#s.clock.now() +
        Math.max(1, this.#s.configCacheTtlSeconds) * 1000,
    });
  }

  /** Forgets an entity's cached info. */
  forgetEntity(entityId: string): void {
    this.#s.entityCache.delete(`${this.namespaceId}\u0000${entityId}`);
  }

  // ---------------------------------------------------------------- buckets

  /** Reads one bucket item (strongly consistent), or `null`. */
  async getBucketItem(
    entityId: string,
    resource: string,
    shard = 0,
  ): Promise<BucketItem | null> {
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: bucketKey({ ns: this.namespaceId, entityId, resource, shard }),
        ConsistentRead: true,
      }),
    );
    return out.Item ? decodeBucket(out.Item, shard) : null;
  }

  /** Every bucket item of an entity (all resources and shards), through GSI3. */
  async getEntityBuckets(entityId: string): Promise<BucketItem[]> {
    const keys = await this.#s.io.queryAll({
      IndexName: "GSI3",
      KeyConditionExpression: "GSI3PK = :pk AND begins_with(GSI3SK, :b)",
      ExpressionAttributeValues: {
        ":pk": { S: gsi3PkEntity(this.namespaceId, entityId) },
        ":b": { S: "BUCKET#" },
      },
    });
    if (keys.length === 0) return [];
    const items = await this.#s.io.batchGet(
      keys.map((k) => ({
        PK: k["PK"] as AttributeValue,
        SK: k["SK"] as AttributeValue,
      })),
      true,
    );
    return items.map((i) => {
      const pk = str(i, "PK") ?? "";
      return decodeBucket(i, Number(pk.slice(pk.lastIndexOf("#") + 1)) || 0);
    });
  }

  /**
   * Deletes the bucket items of one entity (one resource, or all): they are
   * recreated full on the next acquire. Returns the number deleted.
   */
  async resetBuckets(entityId: string, resource?: string): Promise<number> {
    validateIdentifier(entityId);
    if (resource !== undefined) validateResource(resource);
    const buckets = await this.getEntityBuckets(entityId);
    const keys = buckets.filter((b) =>
      resource === undefined || b.resource === resource
    ).map((b) =>
      bucketKey({
        ns: this.namespaceId,
        entityId,
        resource: b.resource,
        shard: b.shard,
      })
    );
    this.forgetEntity(entityId);
    return await this.#s.io.batchDelete(keys);
  }

  /**
   * Capacity of a resource summed across the entities holding a bucket for
   * it: per limit, the entities, the total capacity and the tokens available
   * now (refilled to the repository's clock, shards summed), read page by
   * page from GSI2 with flat memory. GSI2 is eventually consistent, so a
   * bucket written a moment ago may be missing; entities that never acquired
   * the resource have no bucket and are not counted.
   *
   * @param resource The resource.
   * @param options `limitName`, `parentsOnly`, `pageSize`, `signal`, and
   * `onEntity` / `onPage` callbacks.
   * @returns Totals per limit name.
   * @throws {InvalidNameError} bad resource or limit name
   */
  async getResourceCapacity(
    resource: string,
    options: ResourceCapacityOptions = {},
  ): Promise<ResourceCapacity> {
    validateResource(resource);
    if (options.limitName !== undefined) {
      validateLimitName(options.limitName, "limitName");
    }
    const acc = new ResourceCapacityAccumulator(
      resource,
      this.#s.clock.now(),
      options,
    );
    const pages = this.#s.io.queryPages({
      IndexName: "GSI2",
      KeyConditionExpression: "GSI2PK = :pk AND begins_with(GSI2SK, :b)",
      ExpressionAttributeValues: {
        ":pk": { S: gsi2PkResource(this.namespaceId, resource) },
        ":b": { S: "BUCKET#" },
      },
      ...(options.pageSize !== undefined ? { Limit: options.pageSize } : {}),
    }, options.signal);
    for await (const page of pages) {
      for (const item of page) {
        const sk = str(item, "GSI2SK") ?? "";
        acc.add(
          decodeBucket(item, Number(sk.slice(sk.lastIndexOf("#") + 1)) || 0),
        );
      }
      options.onPage?.(acc.progress);
    }
    return acc.finish();
  }

  // ---------------------------------------------------------------- audit

  async #principal(explicit: string | undefined): Promise<string | null> {
    if (explicit !== undefined) return validatePrincipal(explicit);
    try {
      return await this.#s.principal();
    } catch {
      return null;
    }
  }

  /** Writes an audit event; returns it. */
  async audit(
    action: AuditActionName,
    entityId: string,
    options: {
      resource?: string | null;
      details?: Record<string, unknown>;
      principal?: string;
    } = {},
  ): Promise<AuditEvent> {
    const principal = await this.#principal(options.principal);
    const now = this.#s.clock.now();
    const sysSlot = await this.#fill([{
      key: { PK: { S: pkSystem(this.namespaceId) }, SK: { S: SK.CONFIG } },
      slot: slotKey(pkSystem(this.namespaceId), SK.CONFIG),
    }]).catch(() => new Map<string, ConfigSlot>());
    const days = sysSlot.get(slotKey(pkSystem(this.namespaceId), SK.CONFIG))
      ?.auditRetentionDays ??
      this.#s.auditRetentionDays;
    const event: AuditEvent = {
      eventId: this.#s.ulid(now),
      timestamp: isoSeconds(now),
      action,
      entityId,
      principal,
      resource: options.resource ?? null,
      details: options.details ?? {},
    };
    await this.#s.client.send(
      new PutItemCommand({
        TableName: this.#s.table,
        Item: {
          PK: { S: pkAudit(this.namespaceId, entityId) },
          SK: { S: skAudit(event.eventId) },
          "event_id": { S: event.eventId },
          "entity_id": { S: entityId },
          timestamp: { S: event.timestamp },
          action: { S: action },
          principal: toAttr(principal),
          resource: toAttr(event.resource),
          details: toAttr(event.details),
          ttl: { N: String(Math.floor(now / 1000) + days * 86400) },
          GSI4PK: { S: this.namespaceId },
          GSI4SK: { S: pkAudit(this.namespaceId, entityId) },
        },
      }),
    );
    return event;
  }

  /**
   * Usage snapshots of an entity (its partition) or of a resource (GSI2),
   * in key order, optionally of one window type and a range of window
   * starts; at most `limit`, with `more` when others match.
   *
   * @throws {ValidationError} when neither `entityId` nor `resource` is given
   */
  async getUsageSnapshots(
    filter: UsageSnapshotFilter,
  ): Promise<{ snapshots: UsageSnapshot[]; more: boolean }> {
    const ns = this.namespaceId;
    let input: Omit<QueryCommandInput, "TableName">;
    if (filter.entityId !== undefined) {
      input = {
        ...(filter.consistent ? { ConsistentRead: true } : {}),
        KeyConditionExpression: "PK = :pk AND begins_with(SK, :sk)",
        ExpressionAttributeValues: {
          ":pk": { S: pkEntity(ns, filter.entityId) },
          ":sk": {
            S: filter.resource !== undefined
              ? `${SK.USAGE}${filter.resource}#`
              : SK.USAGE,
          },
        },
      };
    } else if (filter.resource !== undefined) {
      input = {
        IndexName: "GSI2",
        KeyConditionExpression: "GSI2PK = :pk AND begins_with(GSI2SK, :sk)",
        ExpressionAttributeValues: {
          ":pk": { S: gsi2PkResource(ns, filter.resource) },
          ":sk": { S: "USAGE#" },
        },
      };
    } else {
      throw new ValidationError(
        "filter",
        "{}",
        "give entityId or resource (or both)",
      );
    }
    const max = filter.limit;
    const matches = (s: UsageSnapshot): boolean =>
      (filter.windowType === undefined || s.windowType === filter.windowType) &&
      (filter.start === undefined || s.windowStart >= filter.start) &&
      (filter.end === undefined || s.windowStart <= filter.end);
    const out: UsageSnapshot[] = [];
    const pages = this.#s.io.queryPages({
      ...input,
      ...(max !== undefined ? { Limit: max + 1 } : {}),
    });
    for await (const page of pages) {
      for (const item of page) {
        const s = decodeSnapshot(item);
        if (matches(s)) out.push(s);
      }
      // One match past the limit proves there are more (DynamoDB reports a
      // LastEvaluatedKey when a page ends exactly at its Limit).
      if (max !== undefined && out.length > max) {
        return { snapshots: out.slice(0, max), more: true };
      }
    }
    return { snapshots: out, more: false };
  }

  /** Audit events of an entity, newest first; `startEventId` is exclusive. */
  async getAuditEvents(
    entityId: string,
    options: { limit?: number; startEventId?: string } = {},
  ): Promise<AuditEvent[]> {
    const limit = options.limit ?? 100;
    const res = await this.#s.client.send(
      new QueryCommand({
        TableName: this.#s.table,
        KeyConditionExpression: options.startEventId
          ? "PK = :pk AND SK < :start"
          : "PK = :pk AND begins_with(SK, :p)",
        ExpressionAttributeValues: {
          ":pk": { S: pkAudit(this.namespaceId, entityId) },
          ...(options.startEventId
            ? { ":start": { S: skAudit(options.startEventId) } }
            : { ":p": { S: SK.AUDIT } }),
        },
        ScanIndexForward: false,
        Limit: limit,
      }),
    );
    return (res.Items ?? []).filter((i) =>
      (str(i, "SK") ?? "").startsWith(SK.AUDIT)
    ).map((i) => ({
      eventId: str(i, "event_id") ?? "",
      timestamp: str(i, "timestamp") ?? "",
      action: (str(i, "action") ?? "") as AuditActionName,
      entityId: str(i, "entity_id") ?? entityId,
      principal: str(i, "principal"),
      resource: str(i, "resource"),
      details: (fromAttr(i["details"]) ?? {}) as Record<string, unknown>,
    }));
  }

  // ---------------------------------------------------------------- entities

  /**
   * Creates an entity, refreshes the cascade flags of buckets that already
   * exist for it (reference weakness 30), and writes an `entity_created` event.
   *
   * @throws {InvalidIdentifierError} bad id, parent id or principal
   * @throws {ValidationError} `cascade` without a parent, a parent equal to
   * the entity, or a display name or metadata over the size limits (checked
   * before anything is written)
   * @throws {EntityExistsError} the entity exists
   */
  async createEntity(
    entityId: string,
    options: CreateEntityOptions = {},
  ): Promise<Entity> {
    validateIdentifier(entityId);
    const parentId = options.parentId === undefined
      ? null
      : validateIdentifier(options.parentId, "parent_id");
    const cascade = options.cascade ?? false;
    if (typeof cascade !== "boolean") {
      throw new ValidationError("cascade", cascade, "must be true or false");
    }
    if (cascade && parentId === null) {
      throw new ValidationError(
        "cascade",
        cascade,
        "cascade needs a parent_id; set parentId or drop cascade",
      );
    }
    if (parentId === entityId) {
      throw new ValidationError(
        "parent_id",
        parentId,
        "an entity cannot be its own parent",
      );
    }
    const name = options.name === undefined
      ? entityId
      : validateDisplayName(options.name);
    const metadata = validateMetadata(options.metadata ?? {});
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.namespaceId;
    const createdAt = isoSeconds(this.#s.clock.now());
    const item: Item = {
      PK: { S: pkEntity(ns, entityId) },
      SK: { S: SK.META },
      "entity_id": { S: entityId },
      name: { S: name },
      "parent_id": parentId === null ? { NULL: true } : { S: parentId },
      cascade: { BOOL: cascade },
      metadata: toAttr(metadata),
      "created_at": { S: createdAt },
      GSI4PK: { S: ns },
      GSI4SK: { S: pkEntity(ns, entityId) },
    };
    if (parentId !== null) {
      item["GSI1PK"] = { S: gsi1PkParent(ns, parentId) };
      item["GSI1SK"] = { S: gsi1SkChild(entityId) };
    }
    try {
      await this.#s.client.send(
        new PutItemCommand({
          TableName: this.#s.table,
          Item: item,
          ConditionExpression: "attribute_not_exists(PK)",
        }),
      );
    } catch (e) {
      if (isConditionFailed(e)) throw new EntityExistsError(entityId);
      throw e;
    }
    // Buckets created before the entity (e.g. by acquire with defaults) learn the cascade now.
    for (const b of await this.getEntityBuckets(entityId)) {
      const e = new Expr();
      await this.#s.client.send(
        new UpdateItemCommand({
          TableName: this.#s.table,
          Key: bucketKey({
            ns,
            entityId,
            resource: b.resource,
            shard: b.shard,
          }),
          UpdateExpression: parentId === null
            ? `SET ${e.n("cascade")} = ${e.v({ BOOL: cascade })} REMOVE ${
              e.n("parent_id")
            }`
            : `SET ${e.n("cascade")} = ${e.v({ BOOL: cascade })}, ${
              e.n("parent_id")
            } = ${e.str(parentId)}`,
          ConditionExpression: "attribute_exists(PK)",
          ...e.attrs(),
        }),
      ).catch((err) => {
        if (!isConditionFailed(err)) throw err;
      });
    }
    this.rememberEntity(entityId, { cascade, parentId });
    await this.audit("entity_created", entityId, {
      details: {
        name,
        "parent_id": parentId,
        cascade,
        metadata,
      },
      ...(principal !== undefined ? { principal } : {}),
    });
    return {
      id: entityId,
      name,
      parentId,
      cascade,
      metadata,
      createdAt,
    };
  }

  /** The entity, or `null`. */
  async getEntity(entityId: string): Promise<Entity | null> {
    validateIdentifier(entityId);
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: {
          PK: { S: pkEntity(this.namespaceId, entityId) },
          SK: { S: SK.META },
        },
        ConsistentRead: true,
      }),
    );
    if (!out.Item) return null;
    const entity = entityFromItem(out.Item);
    this.rememberEntity(entityId, {
      cascade: entity.cascade,
      parentId: entity.parentId,
    });
    return entity;
  }

  /** Children of a parent (all pages). */
  async getChildren(parentId: string): Promise<Entity[]> {
    validateIdentifier(parentId, "parent_id");
    const items = await this.#s.io.queryAll({
      IndexName: "GSI1",
      KeyConditionExpression: "GSI1PK = :pk",
      ExpressionAttributeValues: {
        ":pk": { S: gsi1PkParent(this.namespaceId, parentId) },
      },
    });
    return items.map(entityFromItem);
  }

  /**
   * Deletes an entity with its configs, usage snapshots and every bucket
   * shard (all pages, unprocessed items retried; reference weakness 33).
   * Audit history is kept (it expires by TTL). Returns the items deleted.
   *
   * @throws {ValidationError} when the entity still has children
   */
  async deleteEntity(
    entityId: string,
    options: { principal?: string } = {},
  ): Promise<number> {
    validateIdentifier(entityId);
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const children = await this.getChildren(entityId);
    if (children.length > 0) {
      throw new ValidationError(
        "entity_id",
        entityId,
        `it has ${children.length} child(ren) (${
          children.slice(0, 5).map((c) => c.id).join(", ")
        }); delete them first`,
      );
    }
    const own = await this.#s.io.queryAll({
      KeyConditionExpression: "PK = :pk",
      ExpressionAttributeValues: {
        ":pk": { S: pkEntity(this.namespaceId, entityId) },
      },
      ProjectionExpression: "PK, SK",
    });
    const buckets = await this.#s.io.queryAll({
      IndexName: "GSI3",
      KeyConditionExpression: "GSI3PK = :pk AND begins_with(GSI3SK, :b)",
      ExpressionAttributeValues: {
        ":pk": { S: gsi3PkEntity(this.namespaceId, entityId) },
        ":b": { S: "BUCKET#" },
      },
    });
    const keys = [...own, ...buckets].map((i) => ({
      PK: i["PK"] as AttributeValue,
      SK: i["SK"] as AttributeValue,
    }));
    if (keys.length === 0) return 0;
    const configResources = own.map((i) => str(i, "SK") ?? "").filter((sk) =>
      sk.startsWith(`${SK.CONFIG}#`)
    )
      .map((sk) => sk.slice(SK.CONFIG.length + 1));
    const deleted = await this.#s.io.batchDelete(keys);
    for (const r of configResources) {
      await this.#decrementConfigRegistry(r);
      this.#config.evict(
        slotKey(pkEntity(this.namespaceId, entityId), skConfig(r)),
      );
    }
    this.forgetEntity(entityId);
    await this.audit("entity_deleted", entityId, {
      details: { records_deleted: deleted },
      ...(principal !== undefined ? { principal } : {}),
    });
    return deleted;
  }

  // ---------------------------------------------------------------- stored limits

  async #decrementConfigRegistry(resource: string): Promise<void> {
    const key = {
      PK: { S: pkSystem(this.namespaceId) },
      SK: { S: SK.ENTITY_CONFIG_RESOURCES },
    };
    const e = new Expr();
    const res = await this.#s.client.send(
      new UpdateItemCommand({
        TableName: this.#s.table,
        Key: key,
        UpdateExpression: `ADD ${e.n(resource)} ${e.num(-1)}`,
        ConditionExpression: `attribute_exists(${e.n(resource)})`,
        ReturnValues: "UPDATED_NEW",
        ...e.attrs(),
      }),
    ).catch((err) => {
      if (isConditionFailed(err)) return null;
      throw err;
    });
    const left = res?.Attributes ? num(res.Attributes, resource) : null;
    if (left !== null && left <= 0) {
      const r = new Expr();
      await this.#s.client.send(
        new UpdateItemCommand({
          TableName: this.#s.table,
          Key: key,
          UpdateExpression: `REMOVE ${r.n(resource)}`,
          ConditionExpression: `${r.n(resource)} <= ${r.num(0)}`,
          ...r.attrs(),
        }),
      ).catch((err) => {
        if (!isConditionFailed(err)) throw err;
      });
    }
  }

  /**
   * Stores an entity's limits for a resource (`_default_`: all resources),
   * updates the registry, syncs the bucket's parameters and removes its TTL,
   * evicts the cache and writes a `limits_set` event.
   *
   * @throws {ValidationError} bad id, resource or limits
   */
  async setLimits(
    entityId: string,
    limits: readonly Limit[],
    options: { resource?: string; principal?: string } = {},
  ): Promise<void> {
    validateIdentifier(entityId);
    const resource = options.resource ?? DEFAULT_RESOURCE;
    if (resource !== DEFAULT_RESOURCE) validateResource(resource);
    validateLimitList(limits);
    if (limits.length === 0) {
      throw new ValidationError(
        "limits",
        "[]",
        "give at least one limit, or use deleteLimits to remove them",
      );
    }
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.namespaceId;
    const item: Item = {
      PK: { S: pkEntity(ns, entityId) },
      SK: { S: skConfig(resource) },
      "entity_id": { S: entityId },
      resource: { S: resource },
      "config_version": { N: "1" },
      ...limitAttrs(limits),
      GSI3PK: { S: gsi3PkEntityConfig(ns, resource) },
      GSI3SK: { S: entityId },
      GSI4PK: { S: ns },
      GSI4SK: { S: pkEntity(ns, entityId) },
    };
    const reg = new Expr();
    try {
      await this.#s.client.send(
        new TransactWriteItemsCommand({
          TransactItems: [
            {
              Put: {
                TableName: this.#s.table,
                Item: item,
                ConditionExpression: "attribute_not_exists(PK)",
              },
            },
            {
              Update: {
                TableName: this.#s.table,
                Key: {
                  PK: { S: pkSystem(ns) },
                  SK: { S: SK.ENTITY_CONFIG_RESOURCES },
                },
                UpdateExpression: `ADD ${reg.n(resource)} ${reg.num(1)} SET ${
                  reg.n("GSI4PK")
                } = if_not_exists(${reg.n("GSI4PK")}, ${reg.str(ns)}), ${
                  reg.n("GSI4SK")
                } = if_not_exists(${reg.n("GSI4SK")}, ${
                  reg.str(pkSystem(ns))
                })`,
                ...reg.attrs(),
              },
            },
          ],
        }),
      );
    } catch (e) {
      if (cancellationCodes(e)[0] !== "ConditionalCheckFailed") throw e;
      await this.#s.client.send(
        new PutItemCommand({ TableName: this.#s.table, Item: item }),
      );
    }
    if (resource !== DEFAULT_RESOURCE) {
      await this.#syncBucket(entityId, resource, limits, "remove", []);
    }
    this.#config.evict(slotKey(pkEntity(ns, entityId), skConfig(resource)));
    await this.audit("limits_set", entityId, {
      resource,
      details: { limits: limits.map((l) => l.toDict()) },
      ...(principal !== undefined ? { principal } : {}),
    });
  }

  /** Sets `cp/ra/rp` of the shard-0 bucket to `limits` (a missing bucket is ignored). */
  async #syncBucket(
    entityId: string,
    resource: string,
    limits: readonly Limit[],
    ttl: number | "remove" | null,
    stale: readonly string[],
  ): Promise<void> {
    const ref = { ns: this.namespaceId, entityId, resource, shard: 0 };
    if (stale.length > 0) {
      const e = new Expr();
      const remove: string[] = [];
      for (const name of stale) {
        for (const f of ["tk", "cp", "ra", "rp", "tc"] as const) {
          remove.push(e.n(bucketAttr(name, f)));
        }
      }
      await this.#s.client.send(
        new UpdateItemCommand({
          TableName: this.#s.table,
          Key: bucketKey(ref),
          UpdateExpression: updateExpression({ remove }),
          ConditionExpression: "attribute_exists(PK)",
          ...e.attrs(),
        }),
      ).catch((err) => {
        if (!isConditionFailed(err)) throw err;
      });
    }
    // The new parameters take effect now: the refill since rf is settled
    // first (under the smaller capacity and the slower rate of old and new,
    // since the change time is unknown to the bucket), under the rf lock.
    for (let attempt = 0; attempt < 8; attempt++) {
      const item = await this.getBucketItem(entityId, resource, 0);
      if (!item) return;
      const write = settleWrite(
        this.#s.table,
        ref,
        item,
        limits,
        ttl,
        this.#s.clock.now(),
      );
      if (!write) return;
      try {
        await this.#s.client.send(new UpdateItemCommand(write));
        return;
      } catch (err) {
        if (!isConditionFailed(err)) throw err;
      }
    }
  }

  /** An entity's stored limits for a resource (`[]` when none; strongly consistent). */
  async getLimits(
    entityId: string,
    options: { resource?: string } = {},
  ): Promise<Limit[]> {
    validateIdentifier(entityId);
    const resource = options.resource ?? DEFAULT_RESOURCE;
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: {
          PK: { S: pkEntity(this.namespaceId, entityId) },
          SK: { S: skConfig(resource) },
        },
        ConsistentRead: true,
      }),
    );
    return limitsFromItem(out.Item);
  }

  /**
   * Deletes an entity's limits for a resource, reconciles the bucket to the
   * limits now in effect, and writes `limits_deleted`; a missing config is a no-op.
   */
  async deleteLimits(
    entityId: string,
    options: { resource?: string; principal?: string } = {},
  ): Promise<void> {
    validateIdentifier(entityId);
    const resource = options.resource ?? DEFAULT_RESOURCE;
    if (resource !== DEFAULT_RESOURCE) validateResource(resource);
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.namespaceId;
    const old = await this.getLimits(entityId, { resource });
    try {
      await this.#s.client.send(
        new DeleteItemCommand({
          TableName: this.#s.table,
          Key: {
            PK: { S: pkEntity(ns, entityId) },
            SK: { S: skConfig(resource) },
          },
          ConditionExpression: "attribute_exists(PK)",
        }),
      );
    } catch (e) {
      if (isConditionFailed(e)) return;
      throw e;
    }
    await this.#decrementConfigRegistry(resource);
    this.#config.evict(slotKey(pkEntity(ns, entityId), skConfig(resource)));
    await this.audit("limits_deleted", entityId, {
      resource,
      details: { limits: old.map((l) => l.name) },
      ...(principal !== undefined ? { principal } : {}),
    });
    if (resource === DEFAULT_RESOURCE) return;
    const effective = await this.resolveLimits(entityId, resource);
    if (!effective) return;
    const names = new Set(effective.limits.map((l) => l.name));
    await this.#syncBucket(
      entityId,
      resource,
      effective.limits,
      this.bucketTtl(effective, this.#s.clock.now()) ?? "remove",
      old.map((l) => l.name).filter((n) => !names.has(n)),
    );
  }

  /** Entity ids with custom limits for a resource (GSI3, all pages). */
  async listEntitiesWithCustomLimits(resource: string): Promise<string[]> {
    const items = await this.#s.io.queryAll({
      IndexName: "GSI3",
      KeyConditionExpression: "GSI3PK = :pk",
      ExpressionAttributeValues: {
        ":pk": { S: gsi3PkEntityConfig(this.namespaceId, resource) },
      },
    });
    return items.map((i) => str(i, "GSI3SK") ?? "").filter(Boolean).sort();
  }

  /** Resources that have at least one entity config. */
  async listResourcesWithEntityConfigs(): Promise<string[]> {
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: {
          PK: { S: pkSystem(this.namespaceId) },
          SK: { S: SK.ENTITY_CONFIG_RESOURCES },
        },
        ConsistentRead: true,
      }),
    );
    if (!out.Item) return [];
    return Object.keys(out.Item).filter((k) =>
      !["PK", "SK", "GSI4PK", "GSI4SK"].includes(k) &&
      (num(out.Item as Item, k) ?? 0) > 0
    ).sort();
  }

  /** Stores resource-level default limits and writes an audit event for `$RESOURCE:{resource}`. */
  async setResourceDefaults(
    resource: string,
    limits: readonly Limit[],
    options: { principal?: string } = {},
  ): Promise<void> {
    validateResource(resource);
    validateLimitList(limits);
    if (limits.length === 0) {
      throw new ValidationError(
        "limits",
        "[]",
        "give at least one limit, or use deleteResourceDefaults",
      );
    }
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.namespaceId;
    await this.#s.client.send(
      new PutItemCommand({
        TableName: this.#s.table,
        Item: {
          PK: { S: pkResource(ns, resource) },
          SK: { S: SK.CONFIG },
          resource: { S: resource },
          "config_version": { N: "1" },
          ...limitAttrs(limits),
          GSI4PK: { S: ns },
          GSI4SK: { S: pkResource(ns, resource) },
        },
      }),
    );
    await this.#registry("ADD", resource);
    this.#config.evict(slotKey(pkResource(ns, resource), SK.CONFIG));
    await this.audit("limits_set", `$RESOURCE:${resource}`, {
      resource,
      details: { limits: limits.map((l) => l.toDict()) },
      ...(principal !== undefined ? { principal } : {}),
    });
  }

  async #registry(op: "ADD" | "DELETE", resource: string): Promise<void> {
    const ns = this.namespaceId;
    const e = new Expr();
    await this.#s.client.send(
      new UpdateItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: pkSystem(ns) }, SK: { S: SK.RESOURCES } },
        UpdateExpression: op === "ADD"
          ? `ADD ${e.n("resources")} ${e.v({ SS: [resource] })} SET ${
            e.n("GSI4PK")
          } = if_not_exists(${e.n("GSI4PK")}, ${e.str(ns)}), ${
            e.n("GSI4SK")
          } = if_not_exists(${e.n("GSI4SK")}, ${e.str(pkSystem(ns))})`
          : `DELETE ${e.n("resources")} ${e.v({ SS: [resource] })}`,
        ...e.attrs(),
      }),
    );
  }

  /** Resource-level default limits (`[]` when none). */
  async getResourceDefaults(resource: string): Promise<Limit[]> {
    validateResource(resource);
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: {
          PK: { S: pkResource(this.namespaceId, resource) },
          SK: { S: SK.CONFIG },
        },
        ConsistentRead: true,
      }),
    );
    return limitsFromItem(out.Item);
  }

  /** Deletes resource-level defaults and writes an audit event. */
  async deleteResourceDefaults(
    resource: string,
    options: { principal?: string } = {},
  ): Promise<void> {
    validateResource(resource);
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.namespaceId;
    await this.#s.client.send(
      new DeleteItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: pkResource(ns, resource) }, SK: { S: SK.CONFIG } },
      }),
    );
    await this.#registry("DELETE", resource);
    this.#config.evict(slotKey(pkResource(ns, resource), SK.CONFIG));
    await this.audit("limits_deleted", `$RESOURCE:${resource}`, {
      resource,
      ...(principal !== undefined ? { principal } : {}),
    });
  }

  /** Resources with resource-level defaults, sorted. */
  async listResourcesWithDefaults(): Promise<string[]> {
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: pkSystem(this.namespaceId) }, SK: { S: SK.RESOURCES } },
        ConsistentRead: true,
      }),
    );
    const ss = out.Item?.["resources"];
    return ss && "SS" in ss && ss.SS ? [...ss.SS].sort() : [];
  }

  /**
   * Replaces the system defaults (limits and `onUnavailable`), keeping the
   * stored `audit_retention_days` (reference weakness 19).
   *
   * @throws {ValidationError} bad limits, `onUnavailable` or
   * `auditRetentionDays`; an empty list (call
   * {@linkcode Repository.deleteSystemDefaults} to remove the system defaults)
   */
  async setSystemDefaults(
    limits: readonly Limit[],
    options: {
      onUnavailable?: OnUnavailable;
      auditRetentionDays?: number;
      principal?: string;
    } = {},
  ): Promise<void> {
    validateLimitList(limits);
    if (limits.length === 0) {
      throw new ValidationError(
        "limits",
        "[]",
        "give at least one limit, or use deleteSystemDefaults to remove the system defaults",
      );
    }
    if (
      options.onUnavailable !== undefined &&
      options.onUnavailable !== "allow" && options.onUnavailable !== "block"
    ) {
      throw new ValidationError(
        "on_unavailable",
        options.onUnavailable,
        "must be 'allow' or 'block'",
      );
    }
    if (
      options.auditRetentionDays !== undefined &&
      (!Number.isSafeInteger(options.auditRetentionDays) ||
        options.auditRetentionDays <= 0)
    ) {
      throw new ValidationError(
        "audit_retention_days",
        options.auditRetentionDays,
        "must be a positive whole number",
      );
    }
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const ns = this.namespaceId;
    const key = { PK: { S: pkSystem(ns) }, SK: { S: SK.CONFIG } };
    const current = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: key,
        ConsistentRead: true,
      }),
    );
    const retention = options.auditRetentionDays ??
      (current.Item ? num(current.Item, "audit_retention_days") : null);
    const item: Item = {
      ...key,
      "config_version": { N: "1" },
      ...limitAttrs(limits),
      GSI4PK: { S: ns },
      GSI4SK: { S: pkSystem(ns) },
    };
    if (options.onUnavailable) {
      item["on_unavailable"] = { S: options.onUnavailable };
    }
    if (retention !== null) {
      item["audit_retention_days"] = { N: String(retention) };
    }
    await this.#s.client.send(
      new PutItemCommand({ TableName: this.#s.table, Item: item }),
    );
    this.#config.evict(slotKey(pkSystem(ns), SK.CONFIG));
    if (options.onUnavailable) this.#lastOnUnavailable = options.onUnavailable;
    await this.audit("limits_set", "$SYSTEM", {
      details: {
        limits: limits.map((l) => l.toDict()),
        "on_unavailable": options.onUnavailable ?? null,
      },
      ...(principal !== undefined ? { principal } : {}),
    });
  }

  /** System defaults: limits, `onUnavailable` and `auditRetentionDays`. */
  async getSystemDefaults(): Promise<
    {
      limits: Limit[];
      onUnavailable: OnUnavailable | null;
      auditRetentionDays: number | null;
    }
  > {
    const out = await this.#s.client.send(
      new GetItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: pkSystem(this.namespaceId) }, SK: { S: SK.CONFIG } },
        ConsistentRead: true,
      }),
    );
    const slot = this.#slotFrom(out.Item);
    return {
      limits: [...slot.limits],
      onUnavailable: slot.onUnavailable,
      auditRetentionDays: slot.auditRetentionDays,
    };
  }

  /** Deletes the system defaults and writes an audit event. */
  async deleteSystemDefaults(
    options: { principal?: string } = {},
  ): Promise<void> {
    const principal = options.principal === undefined
      ? undefined
      : validatePrincipal(options.principal);
    const old = await this.getSystemDefaults();
    await this.#s.client.send(
      new DeleteItemCommand({
        TableName: this.#s.table,
        Key: { PK: { S: pkSystem(this.namespaceId) }, SK: { S: SK.CONFIG } },
      }),
    );
    this.#config.evict(slotKey(pkSystem(this.namespaceId), SK.CONFIG));
    await this.audit("limits_deleted", "$SYSTEM", {
      details: {
        limits: old.limits.map((l) => l.name),
        "on_unavailable": old.onUnavailable,
      },
      ...(principal !== undefined ? { principal } : {}),
    });
  }

  /** Whether any partition key in the first `sample` items of a scan is unprefixed (pre-0.10 data). */
  static looksLegacy(keys: readonly string[]): boolean {
    return keys.some((k) => isUnprefixedKey(k));
  }

  /** Bucket PK helper for callers outside the repository. */
  bucketPk(entityId: string, resource: string, shard = 0): string {
    return pkBucket(this.namespaceId, entityId, resource, shard);
  }

  /**
   * Sends a one-item write, or a transaction for several.
   *
   * @deprecated Internal: use `tableOf(repo).writeItems` from `core/store/table.ts`.
   * @ignore
   */
  writeItems(items: readonly TransactWriteItem[]): Promise<void> {
    return this.#s.io.writeItems(items);
  }
}

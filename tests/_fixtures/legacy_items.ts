/**
 * Legacy (pre-0.10) fixtures for tests and benchmarks (was
 * `migrations/bench_support.ts`; `dev/bench_migrations.ts` imports it too): builders of items in
 * the exact unprefixed layouts of spec 01 §5 and the namespace-keys runbook,
 * and a fast seeder (BatchWriteItem, 25 per call, several in flight,
 * unprocessed items retried).
 *
 * @example Build one legacy entity's items (pure)
 * ```ts
 * import assert from "node:assert/strict";
 * import { legacyEntityItems } from "./legacy_items.ts";
 *
 * const items = legacyEntityItems({ id: "u1", parentId: "org-1", resources: ["openai/gpt-4"] });
 * const meta = items.find((i) => i["SK"]?.S === "#META");
 * assert.equal(meta?.["PK"]?.S, "ENTITY#u1");
 * assert.equal(meta?.["GSI1PK"]?.S, "PARENT#org-1");
 * assert.ok(items.some((i) => i["PK"]?.S === "BUCKET#u1#openai/gpt-4#0"));
 * ```
 *
 * @module
 */
import {
  BatchWriteItemCommand,
  CreateTableCommand,
  DescribeTableCommand,
  type WriteRequest,
} from "@aws-sdk/client-dynamodb";
import { type Clock, isoSeconds, systemClock } from "../../core/clock.ts";
import type { Item } from "../../core/expr.ts";
import type { DynamoDbClientLike } from "../../core/store/table.ts";
import { createTableInput } from "../../core/schema.ts";
import { createUlid } from "../../core/ulid.ts";
import { backoffMs, forEachConcurrent } from "../../migrations/_dynamo.ts";
import { asSdkClient } from "../../migrations/migration.ts";
import { seededRandom } from "../../dev/_seeded_random.ts";

export { seededRandom };

const n = (v: number | bigint): { N: string } => ({ N: String(v) });
const s = (v: string): { S: string } => ({ S: v });

/** One legacy entity to build. */
export interface LegacyEntitySpec {
  /** Entity id. */
  readonly id: string;
  /** Parent id. */
  readonly parentId?: string;
  /** Cascade flag (needs a parent). @default false */
  readonly cascade?: boolean;
  /** Resources with an entity config and a 0.9 bucket each (names may contain `/`). @default [] */
  readonly resources?: readonly string[];
  /** Shards per bucket. @default 1 */
  readonly shards?: number;
  /** Audit events. @default 2 */
  readonly auditEvents?: number;
  /** Hourly usage snapshots per resource. @default 1 */
  readonly usageWindows?: number;
  /** Also a pre-0.9 bucket (`ENTITY#{id}` / `#BUCKET#{r}`) for the first resource. @default false */
  readonly preV09Bucket?: boolean;
  /** Clock time the items are "from". @default 2026-01-15T12:00:00Z */
  readonly now?: number;
  /** Random source (token levels, ULIDs). @default seededRandom(1) */
  readonly random?: () => number;
}

const DEFAULT_NOW = Date.UTC(2026, 0, 15, 12, 0, 0);

/**
 * Every item of one entity in the pre-0.10 layouts: `#META` (with GSI1 when
 * it has a parent), one `#CONFIG#{r}` per resource (GSI3
 * `ENTITY_CONFIG#{r}`), 0.9 buckets `BUCKET#{id}#{r}#{shard}` / `#STATE`
 * (GSI2 `RESOURCE#{r}`, GSI3 `ENTITY#{id}`), audit events `AUDIT#{id}`,
 * hourly usage snapshots, and optionally a pre-0.9 bucket.
 */
export function legacyEntityItems(spec: LegacyEntitySpec): Item[] {
  const now = spec.now ?? DEFAULT_NOW;
  const random = spec.random ?? seededRandom(1);
  const resources = spec.resources ?? [];
  const shards = spec.shards ?? 1;
  const id = spec.id;
  const out: Item[] = [];
  const meta: Item = {
    PK: s(`ENTITY#${id}`),
    SK: s("#META"),
    "entity_id": s(id),
    name: s(`Entity ${id}`),
    "parent_id": spec.parentId === undefined
      ? { NULL: true }
      : s(spec.parentId),
    cascade: { BOOL: spec.cascade ?? false },
    metadata: { M: { tier: s(random() < 0.5 ? "free" : "pro") } },
    "created_at": s(isoSeconds(now - 86_400_000)),
  };
  if (spec.parentId !== undefined) {
    meta["GSI1PK"] = s(`PARENT#${spec.parentId}`);
    meta["GSI1SK"] = s(`CHILD#${id}`);
  }
  out.push(meta);
  for (const r of resources) {
    const rpm = 10 + Math.floor(random() * 1000);
    out.push({
      PK: s(`ENTITY#${id}`),
      SK: s(`#CONFIG#${r}`),
      entity_id: s(id),
      resource: s(r),
      config_version: n(1),
      l_rpm_cp: n(rpm),
      l_rpm_ra: n(rpm),
      l_rpm_rp: n(60),
      l_tpm_cp: n(rpm * 100),
      l_tpm_ra: n(rpm * 100),
      l_tpm_rp: n(60),
      GSI3PK: s(`ENTITY_CONFIG#${r}`),
      GSI3SK: s(id),
    });
    for (let shard = 0; shard < shards; shard++) {
      const bucket: Item = {
        PK: s(`BUCKET#${id}#${r}#${shard}`),
        SK: s("#STATE"),
        "entity_id": s(id),
        resource: s(r),
        rf: n(now - Math.floor(random() * 60_000)),
        "shard_count": n(shards),
        cascade: { BOOL: spec.cascade ?? false },
        "b_rpm_tk": n(Math.floor(random() * rpm * 1000)),
        "b_rpm_cp": n(rpm * 1000),
        "b_rpm_ra": n(rpm * 1000),
        "b_rpm_rp": n(60_000),
        "b_rpm_tc": n(Math.floor(random() * 5_000_000)),
        "b_wcu_tk": n(1_000_000),
        "b_wcu_cp": n(1_000_000),
        "b_wcu_ra": n(1_000_000),
        "b_wcu_rp": n(1000),
        "b_wcu_tc": n(0),
        GSI2PK: s(`RESOURCE#${r}`),
        GSI2SK: s(`BUCKET#${id}#${shard}`),
        GSI3PK: s(`ENTITY#${id}`),
        GSI3SK: s(`BUCKET#${r}#${shard}`),
      };
      if (spec.parentId !== undefined) bucket["parent_id"] = s(spec.parentId);
      out.push(bucket);
    }
    for (let w = 0; w < (spec.usageWindows ?? 1); w++) {
      const window = isoSeconds(now - (w + 1) * 3_600_000).slice(0, 13) +
        ":00:00Z";
      out.push({
        PK: s(`ENTITY#${id}`),
        SK: s(`#USAGE#${r}#${window}`),
        entity_id: s(id),
        resource: s(r),
        window: s("hourly"),
        window_start: s(window),
        rpm: n(Math.floor(random() * 500)),
        total_events: n(Math.floor(random() * 500)),
        ttl: n(Math.floor(now / 1000) + 90 * 86400),
        GSI2PK: s(`RESOURCE#${r}`),
        GSI2SK: s(`USAGE#${window}#${id}`),
      });
    }
  }
  const first = resources[0];
  if (spec.preV09Bucket && first !== undefined) {
    out.push({
      PK: s(`ENTITY#${id}`),
      SK: s(`#BUCKET#${first}`),
      entity_id: s(id),
      resource: s(first),
      rf: n(now - 3_600_000),
      b_rpm_tk: n(1000),
      b_rpm_cp: n(100_000),
      b_rpm_ra: n(100_000),
      b_rpm_rp: n(60_000),
      GSI2PK: s(`RESOURCE#${first}`),
      GSI2SK: s(`BUCKET#${id}`),
    });
  }
  const ulid = createUlid((bytes) => {
    for (let i = 0; i < bytes.length; i++) {
      bytes[i] = Math.floor(random() * 256);
    }
  });
  const actions = ["entity_created", "limits_set", "limits_deleted"];
  for (let e = 0; e < (spec.auditEvents ?? 2); e++) {
    const at = now - (spec.auditEvents ?? 2) * 1000 + e * 1000;
    const eventId = ulid(at);
    out.push({
      PK: s(`AUDIT#${id}`),
      SK: s(`#AUDIT#${eventId}`),
      event_id: s(eventId),
      entity_id: s(id),
      timestamp: s(isoSeconds(at)),
      action: s(actions[e % actions.length] as string),
      principal: e % 2 === 0 ? s("admin@example.com") : { NULL: true },
      resource: resources[0] === undefined ? { NULL: true } : s(resources[0]),
      details: { M: { n: n(e), note: s("seeded") } },
      ttl: n(Math.floor(at / 1000) + 90 * 86400),
    });
  }
  return out;
}

/** Options of {@linkcode legacySystemItems}. */
export interface LegacySystemOptions {
  /** Schema version in the legacy version record. @default "0.9.0" */
  readonly schemaVersion?: string;
  /** Resources with resource-level defaults. @default ["openai/gpt-4"] */
  readonly resources?: readonly string[];
  /** Resources with entity configs and their counts. @default {} */
  readonly entityConfigCounts?: Readonly<Record<string, number>>;
  /** Include the provisioner record. @default true */
  readonly provisioner?: boolean;
}

/**
 * Table-wide legacy items: the version record `SYSTEM#` / `#VERSION`, the
 * system config `SYSTEM#` / `#CONFIG` (with `on_unavailable`), resource
 * configs `RESOURCE#{r}` / `#CONFIG`, and the registries `#RESOURCES`,
 * `#ENTITY_CONFIG_RESOURCES` and `#PROVISIONER`.
 */
export function legacySystemItems(options: LegacySystemOptions = {}): Item[] {
  const resources = options.resources ?? ["openai/gpt-4"];
  const out: Item[] = [
    {
      PK: s("SYSTEM#"),
      SK: s("#VERSION"),
      schema_version: s(options.schemaVersion ?? "0.9.0"),
      client_min_version: s("0.0.0"),
      lambda_version: s(options.schemaVersion ?? "0.9.0"),
      updated_at: s("2025-12-01T00:00:00Z"),
      updated_by: s(`cli:${options.schemaVersion ?? "0.9.0"}`),
    },
    {
      PK: s("SYSTEM#"),
      SK: s("#CONFIG"),
      config_version: n(1),
      on_unavailable: s("allow"),
      audit_retention_days: n(30),
      l_rpm_cp: n(100),
      l_rpm_ra: n(100),
      l_rpm_rp: n(60),
    },
  ];
  for (const r of resources) {
    out.push({
      PK: s(`RESOURCE#${r}`),
      SK: s("#CONFIG"),
      resource: s(r),
      config_version: n(1),
      l_tpm_cp: n(50_000),
      l_tpm_ra: n(40_000),
      l_tpm_rp: n(60),
    });
  }
  if (resources.length > 0) {
    out.push({
      PK: s("SYSTEM#"),
      SK: s("#RESOURCES"),
      resources: { SS: [...resources] },
    });
  }
  const counts = Object.entries(options.entityConfigCounts ?? {});
  if (counts.length > 0) {
    const reg: Item = { PK: s("SYSTEM#"), SK: s("#ENTITY_CONFIG_RESOURCES") };
    for (const [r, c] of counts) reg[r] = n(c);
    out.push(reg);
  }
  if (options.provisioner ?? true) {
    out.push({
      PK: s("SYSTEM#"),
      SK: s("#PROVISIONER"),
      managed_system: { BOOL: true },
      managed_resources: { L: resources.map((r) => s(r)) },
      managed_entities: { M: {} },
      last_applied: s("2025-12-01T00:00:00Z"),
      applied_hash: s("sha256:00"),
    });
  }
  return out;
}

/** One pre-0.8 per-limit item (`#LIMIT#…`), with `burst` when given. */
export function legacyLimitItem(input: {
  /** `SYSTEM#`, `RESOURCE#{r}` or `ENTITY#{id}`. */
  readonly pk: string;
  /** Resource (entity level only). */
  readonly resource?: string;
  /** Limit name. */
  readonly name: string;
  /** Old capacity. */
  readonly capacity: number;
  /** Old burst (the new capacity). */
  readonly burst?: number;
  /** Refill amount. */
  readonly refillAmount: number;
  /** Refill period in seconds. */
  readonly refillPeriodSeconds: number;
}): Item {
  const sk = input.resource === undefined
    ? `#LIMIT#${input.name}`
    : `#LIMIT#${input.resource}#${input.name}`;
  const item: Item = {
    PK: s(input.pk),
    SK: s(sk),
    "limit_name": s(input.name),
    capacity: n(input.capacity),
    "refill_amount": n(input.refillAmount),
    "refill_period_seconds": n(input.refillPeriodSeconds),
  };
  if (input.burst !== undefined) item["burst"] = n(input.burst);
  return item;
}

/** Creates a table with the current layout (GSI1–4, LSIs) and waits until it is active. */
export async function createTable(
  client: DynamoDbClientLike,
  tableName: string,
  options: { readonly clock?: Clock } = {},
): Promise<void> {
  const clock = options.clock ?? systemClock;
  await asSdkClient(client).send(
    new CreateTableCommand(createTableInput(tableName)),
  );
  for (let i = 0; i < 240; i++) {
    const d = await asSdkClient(client).send(
      new DescribeTableCommand({ TableName: tableName }),
    );
    if (d.Table?.TableStatus === "ACTIVE") return;
    await clock.sleep(250);
  }
}

/** Options of {@linkcode putItemsBatched}. */
export interface PutItemsOptions {
  /** BatchWriteItem calls in flight. @default 8 */
  readonly concurrency?: number;
  /** Abort signal. */
  readonly signal?: AbortSignal;
  /** Clock for backoff. @default systemClock */
  readonly clock?: Clock;
}

/** Writes items unconditionally with BatchWriteItem (25 per call), retrying unprocessed items. */
export async function putItemsBatched(
  client: DynamoDbClientLike,
  tableName: string,
  items: readonly Item[],
  options: PutItemsOptions = {},
): Promise<number> {
  const clock = options.clock ?? systemClock;
  const signal = options.signal ?? new AbortController().signal;
  const chunks: Item[][] = [];
  for (let i = 0; i < items.length; i += 25) {
    chunks.push(items.slice(i, i + 25));
  }
  await forEachConcurrent(
    chunks,
    options.concurrency ?? 8,
    signal,
    async (chunk) => {
      let pending: WriteRequest[] = chunk.map((Item) => ({
        PutRequest: { Item },
      }));
      for (let attempt = 0; pending.length > 0; attempt++) {
        const batch = pending;
        const res = await asSdkClient(client).send(
          new BatchWriteItemCommand({ RequestItems: { [tableName]: batch } }),
          { abortSignal: signal },
        );
        pending = res.UnprocessedItems?.[tableName] ?? [];
        if (pending.length > 0) await clock.sleep(backoffMs(attempt), signal);
      }
    },
  );
  return items.length;
}

/** Options of {@linkcode seedLegacyTable}. */
export interface SeedOptions extends PutItemsOptions {
  /** Approximate number of items to write (at least the system items). */
  readonly items: number;
  /** PRNG seed. @default 1 */
  readonly seed?: number;
  /** Legacy schema version. @default "0.9.0" */
  readonly schemaVersion?: string;
}

/**
 * Seeds a pre-0.10 table with about `items` items: the system items, then
 * entities (a third with parents, resources including `openai/gpt-4`) until
 * the count is reached. Returns the exact number written.
 */
export async function seedLegacyTable(
  client: DynamoDbClientLike,
  tableName: string,
  options: SeedOptions,
): Promise<number> {
  const random = seededRandom(options.seed ?? 1);
  const resources = ["openai/gpt-4", "anthropic/claude-3", "api"];
  const system = legacySystemItems({
    ...(options.schemaVersion ? { schemaVersion: options.schemaVersion } : {}),
    resources,
  });
  let written = await putItemsBatched(client, tableName, system, options);
  let buffer: Item[] = [];
  for (let i = 0; written + buffer.length < options.items; i++) {
    const items = legacyEntityItems({
      id: `user-${i}`,
      ...(i % 3 === 1 ? { parentId: `user-${i - 1}` } : {}),
      resources: resources.slice(0, 1 + (i % resources.length)),
      auditEvents: 1 + (i % 3),
      random,
    });
    buffer.push(...items.slice(0, options.items - written - buffer.length));
    if (buffer.length >= 500) {
      written += await putItemsBatched(client, tableName, buffer, options);
      buffer = [];
    }
  }
  written += await putItemsBatched(client, tableName, buffer, options);
  return written;
}

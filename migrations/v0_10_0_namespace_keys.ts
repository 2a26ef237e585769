/**
 * The namespace-keys migration (pre-0.10 → 0.10.0, spec 06 §6): rewrite
 * every unprefixed item (`ENTITY#u1`) as a namespace-prefixed copy
 * (`{nsId}/ENTITY#u1`), then optionally delete the originals.
 *
 * What it fixes in the operator script it replaces:
 *
 * * **Memory** — parallel Scan segments processed one page at a time; no
 *   list of the table is ever built.
 * * **Resumability** — after each page the segment's `LastEvaluatedKey` is
 *   checkpointed at `_/SYSTEM#` / `#MIGRATION#0.10.0#SEGMENT#{n}`; a crashed
 *   or aborted run resumes from there (redoing at most one page per segment,
 *   which the conditional writes make harmless).
 * * **Throughput** — conditional PutItems through one write pool shared
 *   by every segment (`segments × writeConcurrency` in flight, halved on
 *   each throttled write and grown back one by one), each segment scanning
 *   its next page while the current one is written (its first page is
 *   short, so writing starts at once), paced by a token bucket fed with
 *   the measured `ConsumedCapacity` against `maxWcuPerSecond`. Unpaced,
 *   only the first write and one in 32 ask for `ConsumedCapacity` (the
 *   rest are counted from the measured/estimated ratio): returning it costs
 *   DynamoDB Local about a fifth more CPU per write.
 * * **Verification** — {@linkcode verifyNamespaceKeys} compares counts per
 *   record type, checks every original has its copy (and, after deletion,
 *   that nothing unprefixed is left) and reads samples back through the
 *   library; {@linkcode planNamespaceKeys} is the dry run with a cost
 *   estimate. The delete phase itself re-checks each original's copy
 *   (consistent read) and writes it if missing before deleting.
 *
 * Why conditional PutItem and not a batch: BatchWriteItem cannot carry a
 * condition, and an unconditional put could overwrite a copy that a 0.10
 * client has already updated (a bucket's tokens, a changed config) with
 * stale legacy data. TransactWriteItems of up to 100 conditional puts would
 * be conditional, but it costs two WCUs per item (doubling the bill), and a
 * single existing target cancels the whole transaction — which is the
 * common case on a resumed page. Concurrent single-item puts cost one WCU
 * each, fail independently, and reach the same throughput.
 *
 * @example Decide what happens to one legacy item (pure)
 * ```ts
 * import assert from "node:assert/strict";
 * import { planItemCopy } from "./v0_10_0_namespace_keys.ts";
 *
 * const d = planItemCopy({
 *   PK: { S: "RESOURCE#openai/gpt-4" }, SK: { S: "#CONFIG" }, resource: { S: "openai/gpt-4" },
 * }, "a7x3kq_9Qw1");
 * assert.equal(d.kind, "copy");
 * if (d.kind === "copy") {
 *   assert.equal(d.item["PK"]?.S, "a7x3kq_9Qw1/RESOURCE#openai/gpt-4");
 *   assert.equal(d.item["GSI4PK"]?.S, "a7x3kq_9Qw1");
 * }
 * ```
 *
 * @module
 */
import {
  type AttributeValue,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
} from "@aws-sdk/client-dynamodb";
import { decodeBucket, MIGRATED_FROM_ATTRIBUTE } from "../core/bucket_item.ts";
import { bool, fromAttr, type Item, num, str } from "../core/expr.ts";
import {
  isUnprefixedKey,
  parseLimitAttr,
  prefixKey,
  RESERVED_NAMESPACE,
  safeParseNamespace,
  SK,
} from "../core/keys.ts";
import {
  getActiveNamespaceRecord,
  registerNamespaceRecords,
  type RegistryTarget,
} from "../core/namespace_registry.ts";
import { Repository } from "../core/repository.ts";
import { validateNamespaceName } from "../core/validation.ts";
import {
  batchGetItems,
  type CapacityBudget,
  capacityOf,
  createCapacityBudget,
  createWritePool,
  deleteKeys,
  forEachConcurrent,
  forEachPooled,
  isConditionFailed,
  itemSizeBytes,
  keyOf,
  lacksGsi4,
  retryThrottled,
  type WritePool,
} from "./_dynamo.ts";
import {
  clearCheckpoints,
  type PageOutcome,
  runScanPhase,
  SYSTEM_PK,
} from "./_scan.ts";
import {
  type IrreversibleMigration,
  type MigrationContext,
  MigrationError,
  type MigrationReport,
} from "./migration.ts";

/** Id of this migration in the registry. */
export const NAMESPACE_KEYS_ID = "0.10.0-namespace-keys";
const VERSION = "0.10.0";
/** SK prefix of the copy phase's checkpoints (`{prefix}{segment}`). */
export const COPY_CHECKPOINT_PREFIX = "#MIGRATION#0.10.0#SEGMENT#";
/** SK prefix of the delete phase's checkpoints. */
export const DELETE_CHECKPOINT_PREFIX = "#MIGRATION#0.10.0#DELETE#SEGMENT#";
const ALL_CHECKPOINTS_PREFIX = "#MIGRATION#0.10.0#";

/** Record types told apart by the plan and the verification. */
export const RECORD_TYPES = [
  "entity",
  "config",
  "bucket",
  "bucket_pre_0_9",
  "usage",
  "audit",
  "registry",
  "version",
  "legacy_limit",
  "other",
] as const;
/** One of {@linkcode RECORD_TYPES}. */
export type RecordType = typeof RECORD_TYPES[number];
/** Item counts per record type. */
export type RecordCounts = Readonly<Record<RecordType, number>>;

function zeroCounts(): Record<RecordType, number> {
  const out = {} as Record<RecordType, number>;
  for (const t of RECORD_TYPES) out[t] = 0;
  return out;
}

/**
 * The record type of a key, given the partition key *without* namespace
 * prefix (a legacy PK as is, or the remainder of a prefixed one).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { classifyRecord } from "./v0_10_0_namespace_keys.ts";
 *
 * assert.equal(classifyRecord("ENTITY#u1", "#BUCKET#openai/gpt-4"), "bucket_pre_0_9");
 * assert.equal(classifyRecord("BUCKET#u1#openai/gpt-4#0", "#STATE"), "bucket");
 * assert.equal(classifyRecord("SYSTEM#", "#VERSION"), "version");
 * ```
 */
export function classifyRecord(pkRest: string, sk: string): RecordType {
  if (pkRest.startsWith("SYSTEM#")) {
    if (sk === SK.VERSION) return "version";
    if (sk === SK.CONFIG) return "config";
    if (sk.startsWith("#LIMIT#")) return "legacy_limit";
    if (
      sk === SK.RESOURCES || sk === SK.ENTITY_CONFIG_RESOURCES ||
      sk === SK.PROVISIONER
    ) return "registry";
    return "other";
  }
  if (pkRest.startsWith("RESOURCE#")) {
    if (sk === SK.CONFIG) return "config";
    if (sk.startsWith("#LIMIT#")) return "legacy_limit";
    return "other";
  }
  if (pkRest.startsWith("ENTITY#")) {
    if (sk === SK.META) return "entity";
    if (sk.startsWith(`${SK.CONFIG}#`)) return "config";
    if (sk.startsWith("#BUCKET#")) return "bucket_pre_0_9";
    if (sk.startsWith(SK.USAGE)) return "usage";
    if (sk.startsWith("#LIMIT#")) return "legacy_limit";
    return "other";
  }
  if (pkRest.startsWith("BUCKET#")) return "bucket";
  if (pkRest.startsWith("AUDIT#")) return "audit";
  return "other";
}

/** What happens to one scanned item. */
export type CopyDecision =
  | {
    readonly kind: "copy";
    readonly type: RecordType;
    /** The prefixed copy to write. */
    readonly item: Item;
  }
  | {
    readonly kind: "skip";
    readonly type: RecordType | null;
    /**
     * `already_prefixed`: not a legacy item. `orphaned_bucket`: a pre-0.9
     * bucket (`ENTITY#{id}` / `#BUCKET#{r}`) no client reads since 0.9.0;
     * copying it would only put ghost rows in GSI2. It is deleted with the
     * originals.
     */
    readonly reason: "already_prefixed" | "orphaned_bucket";
  };

const GSI_HASH_KEYS = ["GSI1PK", "GSI2PK", "GSI3PK"] as const;

/**
 * Record types whose copy is live state once copied: a bucket's tokens
 * (consumed by 0.10 clients on the copy) and a usage snapshot (counted by
 * the 0.10 aggregator on the copy). A difference between original and copy
 * is expected for them and never resolved by copying the original again.
 * Every other type (entity, config, registry, audit, …) follows the
 * dual-format rule: **until `--delete`, the original is the source of
 * truth** — old clients write it, so a re-run copies a changed original
 * over its copy, verify fails on such drift, and the delete phase refuses
 * to delete an original whose copy differs.
 */
export const LIVE_COPY_TYPES: ReadonlySet<RecordType> = new Set<RecordType>([
  "bucket",
  "usage",
  "version",
]);

/**
 * Decides, without I/O, what to do with a scanned item: skip it, or write
 * the returned prefixed copy. The version record goes to the reserved
 * namespace `_`; everything else to `namespaceId`. `PK` and each present
 * `GSI1PK`/`GSI2PK`/`GSI3PK` get the prefix; `GSI4PK` is the namespace id
 * and `GSI4SK` the new PK — except buckets, whose `GSI4SK` is
 * `BUCKET#{id}#{r}#{shard}` (spec 01 §4.2); bucket copies also carry
 * `migrated_from` (the usage aggregator does not count their `INSERT`).
 * Sort keys are unchanged.
 */
export function planItemCopy(item: Item, namespaceId: string): CopyDecision {
  const pk = str(item, "PK") ?? "";
  const sk = str(item, "SK") ?? "";
  if (!isUnprefixedKey(pk)) {
    return { kind: "skip", type: null, reason: "already_prefixed" };
  }
  const type = classifyRecord(pk, sk);
  if (type === "bucket_pre_0_9") {
    return { kind: "skip", type, reason: "orphaned_bucket" };
  }
  const ns = type === "version" ? RESERVED_NAMESPACE : namespaceId;
  const newPk = prefixKey(ns, pk);
  const copy: Item = { ...item, PK: { S: newPk } };
  for (const attr of GSI_HASH_KEYS) {
    const v = str(item, attr);
    if (v !== null && isUnprefixedKey(v)) copy[attr] = { S: prefixKey(ns, v) };
  }
  copy["GSI4PK"] = { S: ns };
  copy["GSI4SK"] = { S: type === "bucket" ? pk : newPk };
  if (type === "bucket") copy[MIGRATED_FROM_ATTRIBUTE] = { S: pk };
  return { kind: "copy", type, item: copy };
}

/**
 * Write units DynamoDB charges to put (or delete) this item: one per KB of
 * the item, plus the index entries it has (GSI1/GSI2 project ALL, GSI3/GSI4
 * KEYS_ONLY). An estimate; measured `ConsumedCapacity` corrects it.
 */
export function estimateWriteUnits(item: Item): number {
  const kb = Math.max(1, Math.ceil(itemSizeBytes(item) / 1024));
  let units = kb;
  const has = (a: string): boolean => item[a] !== undefined;
  if (has("GSI1PK") && has("GSI1SK")) units += kb;
  if (has("GSI2PK") && has("GSI2SK")) units += kb;
  if (has("GSI3PK") && has("GSI3SK")) units += 1;
  if (has("GSI4PK") && has("GSI4SK")) units += 1;
  return units;
}

// ------------------------------------------------------------------ namespace

/** The active id of a namespace name, or `null`. Never writes. */
export async function lookupNamespaceId(
  ctx: MigrationContext,
  name: string,
): Promise<string | null> {
  const item = await getActiveNamespaceRecord(registryTarget(ctx), name);
  return item ? str(item, "namespace_id") : null;
}

function registryTarget(ctx: MigrationContext): RegistryTarget {
  return {
    client: ctx.client,
    table: ctx.tableName,
    clock: ctx.clock,
    signal: ctx.signal,
  };
}

/**
 * Resolves the target namespace id, registering the name (both registry
 * records, spec 01 §4.6) when missing and `registerNamespace` is on.
 * Deliberately does not use `Repository.open`, which on a table without a
 * `_/SYSTEM#` version record would write a 0.10.0 record before any data
 * is migrated.
 *
 * @throws {MigrationError} `MIGRATION_NAMESPACE_MISSING` when missing and registration is off
 */
export async function resolveTargetNamespace(
  ctx: MigrationContext,
  options: {
    /**
     * A check run alongside the (read-only) lookup; nothing is registered
     * unless it passed.
     */
    readonly check?: (ctx: MigrationContext) => Promise<void>;
  } = {},
): Promise<string> {
  const name = validateNamespaceName(ctx.options.namespace);
  const [, found] = await Promise.all([
    options.check?.(ctx),
    lookupNamespaceId(ctx, name),
  ]);
  if (found !== null) return found;
  if (!ctx.options.registerNamespace) {
    throw new MigrationError(
      "MIGRATION_NAMESPACE_MISSING",
      `Cannot migrate keys into namespace "${name}": it is not registered (run 'zae-limiter namespace register ${name}' or 'zae-limiter upgrade' first)`,
      { details: { namespace: name } },
    );
  }
  // The library's own registration write (both records, conditional, conflicts retried).
  const id = await registerNamespaceRecords(registryTarget(ctx), name);
  ctx.report({
    kind: "log",
    level: "info",
    migration: NAMESPACE_KEYS_ID,
    message: `registered namespace "${name}" with id ${id}`,
  });
  return id;
}

/**
 * Refuses to migrate into a table without GSI4: the copies would carry
 * `GSI4PK`/`GSI4SK` that no index holds, and `namespace purge` and
 * discovery would fail later.
 *
 * @throws {MigrationError} `MIGRATION_SCHEMA_MISSING`
 */
export async function requireGsi4(ctx: MigrationContext): Promise<void> {
  if (!(await lacksGsi4(ctx))) return;
  throw new MigrationError(
    "MIGRATION_SCHEMA_MISSING",
    `Cannot migrate table "${ctx.tableName}" to namespace keys: it has no GSI4, which the 0.10 layout needs (run 'zae-limiter upgrade --name ${ctx.tableName}' first: it adds GSI4 and the namespace policies and registers "default")`,
    { details: { missing: ["GSI4"] } },
  );
}

// ------------------------------------------------------------------ writes

type PutOutcome =
  | { readonly written: true }
  | { readonly written: false; readonly existing: Item | null };

async function putIfAbsent(
  ctx: MigrationContext,
  item: Item,
  budget: CapacityBudget,
): Promise<boolean> {
  return (await putCopy(ctx, item, budget)).written;
}

/**
 * Conditional put of a copy (only when absent). With `returnExisting`, a
 * failed condition returns the existing copy (no extra read).
 */
async function putCopy(
  ctx: MigrationContext,
  item: Item,
  budget: CapacityBudget,
  options: {
    readonly returnExisting?: boolean;
    readonly condition?: string;
    readonly pool?: WritePool;
  } = {},
): Promise<PutOutcome> {
  const returnExisting = options.returnExisting ?? false;
  const condition = options.condition ?? "attribute_not_exists(PK)";
  const pool = options.pool;
  const estimate = estimateWriteUnits(item);
  // A throttled page can outlast the lock: renew between writes too (a no-op until due).
  await ctx.keepAlive();
  await budget.take(estimate, ctx.signal);
  const measure = budget.shouldMeasure();
  try {
    const res = await retryThrottled(
      ctx,
      () =>
        ctx.client.send(
          new PutItemCommand({
            TableName: ctx.tableName,
            Item: item,
            ConditionExpression: condition,
            ...(returnExisting
              ? { ReturnValuesOnConditionCheckFailure: "ALL_OLD" as const }
              : {}),
            ...(measure ? { ReturnConsumedCapacity: "TOTAL" as const } : {}),
          }),
          { abortSignal: ctx.signal },
        ),
      pool ? { onThrottle: () => pool.throttled() } : {},
    );
    budget.settle(estimate, measure ? capacityOf(res.ConsumedCapacity) : null);
    return { written: true };
  } catch (e) {
    if (!isConditionFailed(e)) throw e;
    // A failed condition is charged for the item only, not for index writes.
    budget.adjust(
      Math.max(1, Math.ceil(itemSizeBytes(item) / 1024)) - estimate,
    );
    const existing = (e as { Item?: Item }).Item ?? null;
    return { written: false, existing };
  }
}

async function copyPage(
  ctx: MigrationContext,
  items: readonly Item[],
  namespaceId: string,
  budget: CapacityBudget,
  pool: WritePool,
): Promise<PageOutcome> {
  const copies: { item: Item; type: RecordType }[] = [];
  for (const it of items) {
    const d = planItemCopy(it, namespaceId);
    if (d.kind === "copy") copies.push({ item: d.item, type: d.type });
  }
  let written = 0;
  let alreadyPresent = 0;
  await forEachPooled(
    copies,
    pool,
    ctx.signal,
    async ({ item: copy, type }) => {
      const live = LIVE_COPY_TYPES.has(type);
      const r = await putCopy(ctx, copy, budget, {
        returnExisting: !live,
        pool,
      });
      if (r.written) {
        written++;
        return;
      }
      if (
        live || r.existing === null || payload(r.existing) === payload(copy)
      ) {
        alreadyPresent++;
        return;
      }
      // Drift: an old client changed the original after it was copied. The
      // original wins until --delete (no 0.10 client writes these record
      // types before the seed's step 4), so the copy is replaced.
      const seen = await putCopy(ctx, copy, budget, {
        condition: "attribute_exists(PK)",
        pool,
      });
      if (seen.written) {
        written++;
        ctx.report({
          kind: "log",
          level: "info",
          migration: NAMESPACE_KEYS_ID,
          message: `re-copied changed original PK=${str(copy, "PK")} SK=${
            str(copy, "SK")
          }`,
        });
      } else alreadyPresent++;
    },
  );
  return { written, alreadyPresent, deleted: 0 };
}

/** Result of {@linkcode copyNamespaceKeys} and {@linkcode deleteUnprefixedOriginals}. */
export interface NamespaceKeysReport extends MigrationReport {
  /** The id unprefixed items were moved under. */
  readonly namespaceId: string;
  /** Segments that were already finished by an earlier run. */
  readonly resumedSegments: number;
}

/**
 * Copy phase: writes the prefixed copy of every unprefixed item
 * (conditional on the copy not existing), resuming from checkpoints.
 * The originals stay, so clients before 0.10 keep working.
 *
 * @throws the abort reason when `ctx.signal` aborts (resume by calling again)
 * @throws {MigrationError} `MIGRATION_NAMESPACE_MISSING`
 */
export async function copyNamespaceKeys(
  ctx: MigrationContext,
): Promise<NamespaceKeysReport> {
  const namespaceId = await resolveTargetNamespace(ctx, { check: requireGsi4 });
  const writeBudget = createCapacityBudget(
    ctx.options.maxWcuPerSecond,
    ctx.clock,
  );
  const readBudget = createCapacityBudget(
    ctx.options.maxRcuPerSecond,
    ctx.clock,
  );
  // One pool for every segment: segments × writeConcurrency writes in flight.
  const pool = createWritePool(
    ctx.options.segments * ctx.options.writeConcurrency,
  );
  const r = await runScanPhase(ctx, {
    migration: NAMESPACE_KEYS_ID,
    phase: "copy",
    checkpointPrefix: COPY_CHECKPOINT_PREFIX,
    readBudget,
    writeBudget,
    prefetch: true,
    onPage: (items, c) => copyPage(c, items, namespaceId, writeBudget, pool),
  });
  return {
    namespaceId,
    resumedSegments: r.skippedSegments,
    scanned: r.scanned,
    written: r.written,
    alreadyPresent: r.alreadyPresent,
    deleted: 0,
    notes: [
      `copied unprefixed items into namespace "${ctx.options.namespace}" (${namespaceId}); originals kept`,
    ],
  };
}

/**
 * Delete phase: removes every unprefixed original. Each page is checked
 * first (strongly consistent BatchGetItem of the copies' keys); a missing
 * copy — an item written by an old client after the copy phase — is copied
 * before its original is deleted. Deletes use BatchWriteItem, retrying
 * `UnprocessedItems` until none are left. Pre-0.9 bucket items are deleted
 * without a copy. When the phase completes, all 0.10.0 checkpoints are
 * removed.
 *
 * Stop clients older than 0.10.0 first: an original they update between the
 * check and the delete loses that update.
 *
 * @throws the abort reason when `ctx.signal` aborts (resume by calling again)
 */
export async function deleteUnprefixedOriginals(
  ctx: MigrationContext,
): Promise<NamespaceKeysReport> {
  const namespaceId = await resolveTargetNamespace(ctx);
  const writeBudget = createCapacityBudget(
    ctx.options.maxWcuPerSecond,
    ctx.clock,
  );
  const readBudget = createCapacityBudget(
    ctx.options.maxRcuPerSecond,
    ctx.clock,
  );
  const r = await runScanPhase(ctx, {
    migration: NAMESPACE_KEYS_ID,
    phase: "delete",
    checkpointPrefix: DELETE_CHECKPOINT_PREFIX,
    consistentRead: true,
    readBudget,
    writeBudget,
    onPage: async (items, c): Promise<PageOutcome> => {
      const legacy = items.filter((it) => isUnprefixedKey(str(it, "PK") ?? ""));
      if (legacy.length === 0) {
        return { written: 0, alreadyPresent: 0, deleted: 0 };
      }
      const copies: Item[] = [];
      const drifted: Item[] = [];
      for (const it of legacy) {
        const d = planItemCopy(it, namespaceId);
        if (d.kind === "copy") copies.push(d.item);
      }
      const present = await batchGetItems(c, copies, readBudget);
      for (const copy of copies) {
        const found = present.get(keyOf(copy));
        const pk = str(copy, "PK") ?? "";
        const rest = safeParseNamespace(pk);
        const type = rest.ok
          ? classifyRecord(rest.value.rest, str(copy, "SK") ?? "")
          : "other";
        if (
          found && !LIVE_COPY_TYPES.has(type) &&
          payload(found) !== payload(copy)
        ) drifted.push(copy);
      }
      if (drifted.length > 0 && !c.options.overwriteDrift) {
        const keys = drifted.map((d) =>
          `PK=${str(d, "PK")} SK=${str(d, "SK")}`
        );
        throw new MigrationError(
          "MIGRATION_DRIFT",
          `Cannot delete originals: ${drifted.length} changed after their copy (${
            keys.slice(0, 5).join("; ")
          }${
            keys.length > 5 ? "; …" : ""
          }); run 'zae-limiter migrate apply --yes' (without --delete) to copy them again, or pass --overwrite-drift`,
          { details: { keys } },
        );
      }
      const missing = copies.filter((copy) => !present.has(keyOf(copy)));
      let written = 0;
      let alreadyPresent = copies.length - missing.length - drifted.length;
      await forEachConcurrent(
        drifted,
        c.options.writeConcurrency,
        c.signal,
        async (copy) => {
          await putCopy(c, copy, writeBudget, {
            condition: "attribute_exists(PK)",
          });
          written++;
        },
      );
      await forEachConcurrent(
        missing,
        c.options.writeConcurrency,
        c.signal,
        async (copy) => {
          if (await putIfAbsent(c, copy, writeBudget)) written++;
          else alreadyPresent++;
        },
      );
      const sizes = new Map(
        legacy.map((it) => [keyOf(it), estimateWriteUnits(it)]),
      );
      const deleted = await deleteKeys(
        c,
        legacy.map((it) => ({
          PK: it["PK"] as AttributeValue,
          SK: it["SK"] as AttributeValue,
        })),
        writeBudget,
        (k) => sizes.get(keyOf(k)) ?? 1,
      );
      return { written, alreadyPresent, deleted };
    },
  });
  const cleared = await clearCheckpoints(ctx, ALL_CHECKPOINTS_PREFIX);
  return {
    namespaceId,
    resumedSegments: r.skippedSegments,
    scanned: r.scanned,
    written: r.written,
    alreadyPresent: r.alreadyPresent,
    deleted: r.deleted,
    notes: [
      `deleted ${r.deleted} unprefixed originals (${r.written} late copies written first); ${cleared} checkpoints removed`,
    ],
  };
}

/** Removes the copy phase's checkpoints so a re-copy scans the whole table. */
export function clearCopyCheckpoints(ctx: MigrationContext): Promise<number> {
  return clearCheckpoints(ctx, COPY_CHECKPOINT_PREFIX);
}

/** Removes this migration's checkpoints so the next run starts from the beginning. */
export function clearNamespaceKeysCheckpoints(
  ctx: MigrationContext,
): Promise<number> {
  return clearCheckpoints(ctx, ALL_CHECKPOINTS_PREFIX);
}

/**
 * The registry entry: copy phase, then (with `ctx.options.delete`) the
 * delete phase. Irreversible: once originals are deleted only a restore
 * brings them back; before that, old clients still work on them.
 */
export const namespaceKeysMigration: IrreversibleMigration = {
  id: NAMESPACE_KEYS_ID,
  version: VERSION,
  description:
    "Namespace-prefixed keys: copy every unprefixed item under the default namespace id (version record under _), optionally delete the originals",
  reversible: false,
  async apply(ctx: MigrationContext): Promise<MigrationReport> {
    const copy = await copyNamespaceKeys(ctx);
    if (!ctx.options.delete) {
      return {
        ...copy,
        notes: [
          ...copy.notes,
          "run again with delete after verifying to remove the originals",
        ],
      };
    }
    const del = await deleteUnprefixedOriginals(ctx);
    return {
      scanned: copy.scanned + del.scanned,
      written: copy.written + del.written,
      alreadyPresent: copy.alreadyPresent + del.alreadyPresent,
      deleted: del.deleted,
      notes: [...copy.notes, ...del.notes],
    };
  },
};

// ------------------------------------------------------------------ plan

/** On-demand prices in USD per million request units. */
export interface Pricing {
  /** Per million read request units. */
  readonly readPerMillion: number;
  /** Per million write request units. */
  readonly writePerMillion: number;
}

/** On-demand prices of us-east-1 (the figures of the seed's cost table). */
export const ON_DEMAND_PRICING: Pricing = Object.freeze({
  readPerMillion: 0.125,
  writePerMillion: 0.625,
});

/** Capacity and cost estimate of the migration. */
export interface CostEstimate {
  /** Read units of the copy phase's scan (eventually consistent: 0.5 per 4 KB). */
  readonly copyRcu: number;
  /** Write units of the copies (item plus index entries). */
  readonly copyWcu: number;
  /** Read units of the delete phase (consistent scan plus the copy checks). */
  readonly deleteRcu: number;
  /** Write units of the deletes (item plus index entries). */
  readonly deleteWcu: number;
  /** USD on demand. */
  readonly costUsd: {
    readonly copy: number;
    readonly delete: number;
    readonly total: number;
  };
  /** Seconds the copy writes take at `maxWcuPerSecond`, or `null` when unthrottled. */
  readonly copySeconds: number | null;
  /** Seconds the deletes take at `maxWcuPerSecond`, or `null`. */
  readonly deleteSeconds: number | null;
}

/** Result of {@linkcode planNamespaceKeys}. */
export interface NamespaceKeysPlan {
  /** Target namespace name. */
  readonly namespace: string;
  /** Its id, or `null` when the migration would register it. */
  readonly namespaceId: string | null;
  /** Items scanned. */
  readonly scanned: number;
  /** Unprefixed items per record type. */
  readonly legacy: RecordCounts;
  /** Copies the migration would write (at most; existing copies are skipped). */
  readonly toCopy: number;
  /** Unprefixed items not copied (pre-0.9 buckets). */
  readonly notCopied: number;
  /** Items already prefixed. */
  readonly alreadyPrefixed: number;
  /** Bytes of the unprefixed items. */
  readonly legacyBytes: number;
  /** Estimate. */
  readonly estimate: CostEstimate;
}

/** Options of {@linkcode planNamespaceKeys}. */
export interface PlanOptions {
  /** Prices. @default ON_DEMAND_PRICING */
  readonly pricing?: Pricing;
}

/**
 * Dry run: scans the table (read-only, no checkpoints, no registration)
 * and reports what the migration would do and cost.
 */
export async function planNamespaceKeys(
  ctx: MigrationContext,
  options: PlanOptions = {},
): Promise<NamespaceKeysPlan> {
  const pricing = options.pricing ?? ON_DEMAND_PRICING;
  await requireGsi4(ctx);
  const name = validateNamespaceName(ctx.options.namespace);
  const namespaceId = await lookupNamespaceId(ctx, name);
  const placeholder = namespaceId ?? "xxxxxxxxxxx";
  const legacy = zeroCounts();
  const acc = {
    scanned: 0,
    toCopy: 0,
    notCopied: 0,
    alreadyPrefixed: 0,
    legacyBytes: 0,
    tableBytes: 0,
    copyWcu: 0,
    deleteWcu: 0,
    deleteReads: 0,
  };
  const readBudget = createCapacityBudget(
    ctx.options.maxRcuPerSecond,
    ctx.clock,
  );
  const writeBudget = createCapacityBudget(null, ctx.clock);
  await runScanPhase(ctx, {
    migration: NAMESPACE_KEYS_ID,
    phase: "plan",
    checkpointPrefix: null,
    readBudget,
    writeBudget,
    onPage: (items): Promise<PageOutcome> => {
      for (const it of items) {
        acc.scanned++;
        const size = itemSizeBytes(it);
        acc.tableBytes += size;
        const d = planItemCopy(it, placeholder);
        if (d.kind === "skip" && d.reason === "already_prefixed") {
          acc.alreadyPrefixed++;
          continue;
        }
        legacy[d.type ?? "other"]++;
        acc.legacyBytes += size;
        acc.deleteWcu += estimateWriteUnits(it);
        if (d.kind === "copy") {
          acc.toCopy++;
          acc.copyWcu += estimateWriteUnits(d.item);
          acc.deleteReads += Math.max(1, Math.ceil(size / 4096));
        } else acc.notCopied++;
      }
      return Promise.resolve({ written: 0, alreadyPresent: 0, deleted: 0 });
    },
  });
  const scanRcu = Math.ceil(acc.tableBytes / 4096) * 0.5;
  const copyRcu = scanRcu;
  const deleteRcu = scanRcu * 2 + acc.deleteReads;
  const copyCost = (copyRcu * pricing.readPerMillion +
    acc.copyWcu * pricing.writePerMillion) / 1e6;
  const deleteCost = (deleteRcu * pricing.readPerMillion +
    acc.deleteWcu * pricing.writePerMillion) / 1e6;
  const rate = ctx.options.maxWcuPerSecond;
  return {
    namespace: name,
    namespaceId,
    scanned: acc.scanned,
    legacy,
    toCopy: acc.toCopy,
    notCopied: acc.notCopied,
    alreadyPrefixed: acc.alreadyPrefixed,
    legacyBytes: acc.legacyBytes,
    estimate: {
      copyRcu,
      copyWcu: acc.copyWcu,
      deleteRcu,
      deleteWcu: acc.deleteWcu,
      costUsd: {
        copy: copyCost,
        delete: deleteCost,
        total: copyCost + deleteCost,
      },
      copySeconds: rate === null ? null : acc.copyWcu / rate,
      deleteSeconds: rate === null ? null : acc.deleteWcu / rate,
    },
  };
}

/**
 * Renders a plan as a small text report (pure).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { formatNamespaceKeysPlan, RECORD_TYPES } from "./v0_10_0_namespace_keys.ts";
 *
 * const legacy = Object.fromEntries(RECORD_TYPES.map((t) => [t, 0])) as Record<typeof RECORD_TYPES[number], number>;
 * legacy.entity = 3;
 * const text = formatNamespaceKeysPlan({
 *   namespace: "default", namespaceId: null, scanned: 3, legacy, toCopy: 3, notCopied: 0,
 *   alreadyPrefixed: 0, legacyBytes: 300,
 *   estimate: { copyRcu: 0.5, copyWcu: 6, deleteRcu: 4, deleteWcu: 3, costUsd: { copy: 0.0000038, delete: 0.0000024, total: 0.0000062 }, copySeconds: null, deleteSeconds: null },
 * });
 * assert.match(text, /entity\s+3/);
 * assert.match(text, /will be registered/);
 * ```
 */
export function formatNamespaceKeysPlan(plan: NamespaceKeysPlan): string {
  const lines: string[] = [];
  lines.push(
    `Target namespace: ${plan.namespace} (${
      plan.namespaceId ?? "not registered yet; will be registered"
    })`,
  );
  lines.push(
    `Scanned ${plan.scanned} items: ${plan.alreadyPrefixed} already prefixed, ${
      plan.toCopy + plan.notCopied
    } unprefixed (${plan.legacyBytes} bytes)`,
  );
  lines.push("");
  lines.push("Record type        Unprefixed");
  for (const t of RECORD_TYPES) {
    if (plan.legacy[t] === 0) continue;
    lines.push(`${t.padEnd(18)} ${String(plan.legacy[t]).padStart(10)}`);
  }
  const e = plan.estimate;
  const usd = (n: number): string => `$${n.toFixed(n < 0.01 ? 6 : 2)}`;
  const secs = (n: number | null): string =>
    n === null ? "unthrottled" : `${Math.ceil(n)} s at the WCU limit`;
  lines.push("");
  lines.push("Phase    RCU          WCU          Cost         Time");
  lines.push(
    `copy     ${String(e.copyRcu).padEnd(12)} ${String(e.copyWcu).padEnd(12)} ${
      usd(e.costUsd.copy).padEnd(12)
    } ${secs(e.copySeconds)}`,
  );
  lines.push(
    `delete   ${String(e.deleteRcu).padEnd(12)} ${
      String(e.deleteWcu).padEnd(12)
    } ${usd(e.costUsd.delete).padEnd(12)} ${secs(e.deleteSeconds)}`,
  );
  lines.push(`Total on-demand cost: ${usd(e.costUsd.total)}`);
  if (plan.notCopied > 0) {
    lines.push(
      `${plan.notCopied} pre-0.9 bucket items are orphaned: not copied, deleted with the originals`,
    );
  }
  return lines.join("\n");
}

// ------------------------------------------------------------------ verify

/** A problem found by {@linkcode verifyNamespaceKeys}. */
export type VerifyIssue =
  | {
    readonly kind: "missing_copy";
    readonly type: RecordType;
    readonly pk: string;
    readonly sk: string;
  }
  | { readonly kind: "unprefixed_left"; readonly count: number }
  | { readonly kind: "namespace_missing"; readonly namespace: string }
  | { readonly kind: "version_not_migrated" }
  | { readonly kind: "gsi4_missing" }
  | {
    /** An original changed after its copy (an old client wrote it): run `migrate apply` again. */
    readonly kind: "drifted_copy";
    readonly type: RecordType;
    readonly pk: string;
    readonly sk: string;
  }
  | {
    readonly kind: "sample_mismatch";
    readonly entityId: string;
    readonly check: "entity" | "limits" | "buckets" | "audit";
    readonly expected: string;
    readonly actual: string;
  };

/** One sampled entity read back through the library. */
export interface SampleCheck {
  /** Entity id. */
  readonly entityId: string;
  /** `compared`: library reads equal the legacy items; `read_only`: originals are gone, only readability checked. */
  readonly mode: "compared" | "read_only";
  /** Whether every check passed. */
  readonly ok: boolean;
}

/** Result of {@linkcode verifyNamespaceKeys}. */
export interface NamespaceKeysVerification {
  /** No issue found. */
  readonly ok: boolean;
  /** Target namespace id (`null` when not registered). */
  readonly namespaceId: string | null;
  /** Items scanned. */
  readonly scanned: number;
  /** Unprefixed items per type ("before"). */
  readonly legacy: RecordCounts;
  /** Items in the target namespace per type, plus the version record under `_` ("after"). */
  readonly migrated: RecordCounts;
  /** Unprefixed items left (pre-0.9 buckets included). */
  readonly unprefixedRemaining: number;
  /** Originals without a copy. */
  readonly missingCopies: number;
  /** Originals whose copy differs, of record types where the original is the truth until `--delete` (a failure: run `migrate apply` again). */
  readonly driftedCopies: number;
  /** Bucket and usage copies that differ from their original (live state since the copy; informational). The version record is not compared. */
  readonly liveDriftedCopies: number;
  /** Sampled entities. */
  readonly samples: readonly SampleCheck[];
  /** Problems (at most 20 `missing_copy` entries are listed). */
  readonly issues: readonly VerifyIssue[];
}

/** Options of {@linkcode verifyNamespaceKeys}. */
export interface VerifyOptions {
  /** Entities read back through the library. @default 5 */
  readonly sampleSize?: number;
  /** Require that no unprefixed item is left. @default ctx.options.delete */
  readonly expectDeleted?: boolean;
}

const COPY_IGNORED = new Set([
  "PK",
  "GSI1PK",
  "GSI2PK",
  "GSI3PK",
  "GSI4PK",
  "GSI4SK",
]);

function canonical(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === "bigint") return `${v}n`;
    if (v instanceof Map) return Object.fromEntries([...v.entries()].sort());
    if (v && typeof v === "object" && !Array.isArray(v)) {
      return Object.fromEntries(
        Object.entries(v as Record<string, unknown>).sort(([a], [b]) =>
          a < b ? -1 : a > b ? 1 : 0
        ),
      );
    }
    return v;
  });
}

function payload(item: Item): string {
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(item)) {
    if (!COPY_IGNORED.has(k)) rest[k] = fromAttr(v);
  }
  return canonical(rest);
}

/**
 * Verifies the migration: counts per record type before (unprefixed) and
 * after (target namespace), every remaining original has its copy, nothing
 * unprefixed is left when deletion was expected, the version record is
 * under `_/SYSTEM#`, and for a sample of entities the library
 * (`Repository.open` on the target namespace; `getEntity`, `getLimits`,
 * `getEntityBuckets`, `getAuditEvents`) returns the legacy values. Read-only.
 */
export async function verifyNamespaceKeys(
  ctx: MigrationContext,
  options: VerifyOptions = {},
): Promise<NamespaceKeysVerification> {
  const sampleSize = options.sampleSize ?? 5;
  const expectDeleted = options.expectDeleted ?? ctx.options.delete;
  const name = validateNamespaceName(ctx.options.namespace);
  const namespaceId = await lookupNamespaceId(ctx, name);
  const issues: VerifyIssue[] = [];
  const legacy = zeroCounts();
  const migrated = zeroCounts();
  let scanned = 0;
  let unprefixedRemaining = 0;
  let missingCopies = 0;
  let driftedCopies = 0;
  let liveDriftedCopies = 0;
  const legacyIds = new Set<string>();
  const migratedIds = new Set<string>();
  const keep = (set: Set<string>, id: string): void => {
    set.add(id);
    if (set.size > sampleSize) {
      const largest = [...set].sort().at(-1);
      if (largest !== undefined) set.delete(largest);
    }
  };
  const readBudget = createCapacityBudget(
    ctx.options.maxRcuPerSecond,
    ctx.clock,
  );
  const writeBudget = createCapacityBudget(null, ctx.clock);
  if (namespaceId === null) {
    issues.push({ kind: "namespace_missing", namespace: name });
  }
  if (await lacksGsi4(ctx)) issues.push({ kind: "gsi4_missing" });
  const placeholder = namespaceId ?? "\u0000missing";
  await runScanPhase(ctx, {
    migration: NAMESPACE_KEYS_ID,
    phase: "verify",
    checkpointPrefix: null,
    readBudget,
    writeBudget,
    onPage: async (items, c): Promise<PageOutcome> => {
      const copies: { original: Item; copy: Item; type: RecordType }[] = [];
      for (const it of items) {
        scanned++;
        const pk = str(it, "PK") ?? "";
        const sk = str(it, "SK") ?? "";
        if (isUnprefixedKey(pk)) {
          unprefixedRemaining++;
          const d = planItemCopy(it, placeholder);
          const type = d.type ?? "other";
          legacy[type]++;
          if (type === "entity") keep(legacyIds, str(it, "entity_id") ?? "");
          if (d.kind === "copy" && namespaceId !== null) {
            copies.push({ original: it, copy: d.item, type });
          }
          continue;
        }
        const parsed = safeParseNamespace(pk);
        if (!parsed.ok) continue;
        const { namespaceId: ns, rest } = parsed.value;
        if (
          ns === RESERVED_NAMESPACE && rest === "SYSTEM#" && sk === SK.VERSION
        ) {
          migrated.version++;
        } else if (ns === namespaceId) {
          const type = classifyRecord(rest, sk);
          migrated[type]++;
          if (type === "entity") keep(migratedIds, str(it, "entity_id") ?? "");
        }
      }
      if (copies.length > 0) {
        const got = await batchGetItems(
          c,
          copies.map((x) => x.copy),
          readBudget,
        );
        for (const x of copies) {
          const found = got.get(keyOf(x.copy));
          if (!found) {
            missingCopies++;
            if (missingCopies <= 20) {
              issues.push({
                kind: "missing_copy",
                type: x.type,
                pk: str(x.original, "PK") ?? "",
                sk: str(x.original, "SK") ?? "",
              });
            }
          } else if (
            x.type !== "version" && payload(found) !== payload(x.copy)
          ) {
            if (LIVE_COPY_TYPES.has(x.type)) liveDriftedCopies++;
            else {
              driftedCopies++;
              if (driftedCopies <= 20) {
                issues.push({
                  kind: "drifted_copy",
                  type: x.type,
                  pk: str(x.original, "PK") ?? "",
                  sk: str(x.original, "SK") ?? "",
                });
              }
            }
          }
        }
      }
      return { written: 0, alreadyPresent: 0, deleted: 0 };
    },
  });
  if (expectDeleted && unprefixedRemaining > 0) {
    issues.push({ kind: "unprefixed_left", count: unprefixedRemaining });
  }
  const version = await ctx.client.send(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: { PK: { S: SYSTEM_PK }, SK: { S: SK.VERSION } },
      ConsistentRead: true,
    }),
    { abortSignal: ctx.signal },
  );
  const samples: SampleCheck[] = [];
  if (!version.Item) issues.push({ kind: "version_not_migrated" });
  else if (namespaceId !== null && sampleSize > 0) {
    // Safe: with a `_/SYSTEM#` version record and a registered namespace, open() writes nothing.
    const repo = await Repository.open({
      client: ctx.client,
      stack: ctx.tableName,
      namespace: name,
      skipVersionCheck: true,
      configCacheTtlSeconds: 0,
      clock: ctx.clock,
    });
    const compared = legacyIds.size > 0;
    const ids = [...(compared ? legacyIds : migratedIds)].sort();
    for (const id of ids) {
      ctx.signal.throwIfAborted();
      const found = compared
        ? await compareSample(ctx, repo, id)
        : (await repo.getEntity(id)) === null
        ? [{
          kind: "sample_mismatch" as const,
          entityId: id,
          check: "entity" as const,
          expected: "an entity",
          actual: "null",
        }]
        : [];
      issues.push(...found);
      samples.push({
        entityId: id,
        mode: compared ? "compared" : "read_only",
        ok: found.length === 0,
      });
    }
  }
  return {
    ok: issues.length === 0,
    namespaceId,
    scanned,
    legacy,
    migrated,
    unprefixedRemaining,
    missingCopies,
    driftedCopies,
    liveDriftedCopies,
    samples,
    issues,
  };
}

async function queryLegacy(
  ctx: MigrationContext,
  input: {
    index?: string;
    key: string;
    pk: string;
    begins: string;
    newestFirst?: boolean;
  },
): Promise<Item[]> {
  const out: Item[] = [];
  let start: Item | undefined;
  do {
    const res = await ctx.client.send(
      new QueryCommand({
        TableName: ctx.tableName,
        ...(input.index ? { IndexName: input.index } : {}),
        KeyConditionExpression: `${input.key} = :pk AND begins_with(${
          input.key === "PK" ? "SK" : input.key.replace("PK", "SK")
        }, :b)`,
        ExpressionAttributeValues: {
          ":pk": { S: input.pk },
          ":b": { S: input.begins },
        },
        ScanIndexForward: !input.newestFirst,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
      { abortSignal: ctx.signal },
    );
    out.push(...(res.Items ?? []));
    start = res.LastEvaluatedKey;
  } while (start);
  return out;
}

function mismatch(
  entityId: string,
  check: "entity" | "limits" | "buckets" | "audit",
  expected: unknown,
  actual: unknown,
): VerifyIssue[] {
  const e = canonical(expected);
  const a = canonical(actual);
  if (e === a) return [];
  return [{
    kind: "sample_mismatch",
    entityId,
    check,
    expected: e.slice(0, 500),
    actual: a.slice(0, 500),
  }];
}

function limitTriples(item: Item): Record<string, [number, number, number]> {
  const out: Record<string, [number, number, number]> = {};
  for (const attr of Object.keys(item)) {
    const p = parseLimitAttr(attr);
    if (!p || p.field !== "cp") continue;
    out[p.limitName] = [
      num(item, attr) ?? 0,
      num(item, `l_${p.limitName}_ra`) ?? 0,
      num(item, `l_${p.limitName}_rp`) ?? 0,
    ];
  }
  return out;
}

async function compareSample(
  ctx: MigrationContext,
  repo: Repository,
  id: string,
): Promise<VerifyIssue[]> {
  const issues: VerifyIssue[] = [];
  // Entity
  const meta = await ctx.client.send(
    new GetItemCommand({
      TableName: ctx.tableName,
      Key: { PK: { S: `ENTITY#${id}` }, SK: { S: SK.META } },
      ConsistentRead: true,
    }),
    { abortSignal: ctx.signal },
  );
  const entity = await repo.getEntity(id);
  const legacyEntity = meta.Item
    ? {
      name: str(meta.Item, "name") ?? id,
      parentId: str(meta.Item, "parent_id"),
      cascade: bool(meta.Item, "cascade") ?? false,
      metadata: Object.fromEntries(
        Object.entries(
          (fromAttr(meta.Item["metadata"]) ?? {}) as Record<string, unknown>,
        ).map(([k, v]) => [k, String(v)]),
      ),
    }
    : null;
  issues.push(...mismatch(
    id,
    "entity",
    legacyEntity,
    entity === null ? null : {
      name: entity.name,
      parentId: entity.parentId,
      cascade: entity.cascade,
      metadata: entity.metadata,
    },
  ));
  // Limits per resource
  const configs = await queryLegacy(ctx, {
    key: "PK",
    pk: `ENTITY#${id}`,
    begins: `${SK.CONFIG}#`,
  });
  const expectedLimits: Record<string, unknown> = {};
  const actualLimits: Record<string, unknown> = {};
  for (const c of configs) {
    const resource = (str(c, "SK") ?? "").slice(SK.CONFIG.length + 1);
    expectedLimits[resource] = limitTriples(c);
    const got = await repo.getLimits(id, { resource });
    actualLimits[resource] = Object.fromEntries(
      got.map((
        l,
      ) => [l.name, [l.capacity, l.refillAmount, l.refillPeriodSeconds]]),
    );
  }
  issues.push(...mismatch(id, "limits", expectedLimits, actualLimits));
  // Buckets (0.9 layout, found through the legacy GSI3 key)
  const bucketKeys = await queryLegacy(ctx, {
    index: "GSI3",
    key: "GSI3PK",
    pk: `ENTITY#${id}`,
    begins: "BUCKET#",
  });
  const legacyBuckets = await batchGetItems(
    ctx,
    bucketKeys,
    createCapacityBudget(null, ctx.clock),
  );
  const describe = (b: ReturnType<typeof decodeBucket>): unknown => ({
    resource: b.resource,
    shard: b.shard,
    rf: b.rf,
    shardCount: b.shardCount,
    cascade: b.cascade,
    parentId: b.parentId,
    limits: b.limits,
  });
  const expectedBuckets = [...legacyBuckets.values()].map((it) => {
    const pk = str(it, "PK") ?? "";
    return describe(
      decodeBucket(it, Number(pk.slice(pk.lastIndexOf("#") + 1)) || 0),
    );
  }).map(canonical).sort();
  const actualBuckets = (await repo.getEntityBuckets(id)).map(describe).map(
    canonical,
  ).sort();
  issues.push(...mismatch(id, "buckets", expectedBuckets, actualBuckets));
  // Audit (newest first, as the library returns them)
  const audit = await queryLegacy(ctx, {
    key: "PK",
    pk: `AUDIT#${id}`,
    begins: SK.AUDIT,
    newestFirst: true,
  });
  const expectedAudit = audit.slice(0, 100).map((i) => ({
    eventId: str(i, "event_id"),
    action: str(i, "action"),
    timestamp: str(i, "timestamp"),
    principal: str(i, "principal"),
    resource: str(i, "resource"),
    details: fromAttr(i["details"]) ?? {},
  }));
  const actualAudit = (await repo.getAuditEvents(id, { limit: 100 })).map((
    e,
  ) => ({
    eventId: e.eventId,
    action: e.action,
    timestamp: e.timestamp,
    principal: e.principal,
    resource: e.resource,
    details: e.details,
  }));
  issues.push(...mismatch(id, "audit", expectedAudit, actualAudit));
  return issues;
}

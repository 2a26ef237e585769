/**
 * Migration 0.8.0 (spec 06 §5.1): per-limit config items become composite
 * config items.
 *
 * Before: one item per limit — SK `#LIMIT#{name}` under `SYSTEM#` or
 * `RESOURCE#{r}`, `#LIMIT#{r}#{name}` under `ENTITY#{id}` — with
 * `limit_name`, `capacity`, `burst`, `refill_amount`,
 * `refill_period_seconds`. After: one `#CONFIG` / `#CONFIG#{r}` item with
 * `l_{name}_cp` (the old `burst`, or `capacity` when there was no burst),
 * `l_{name}_ra`, `l_{name}_rp` and `config_version = 1`.
 *
 * Differences from the reference: keys keep whatever prefix the item had
 * (the reference wrote the literal namespace `default`, weakness 20); the
 * whole table is scanned page by page (every `#LIMIT#` item, not only
 * resources listed in `#RESOURCES`); composite items are written with
 * `SET` so an existing `on_unavailable` survives and a limit group split
 * across pages merges; entity configs carry their GSI3 keys and bump the
 * `#ENTITY_CONFIG_RESOURCES` count atomically on creation; resource
 * configs are added to `#RESOURCES`. Old items are deleted only after their
 * composite item is written, so a re-run converges. Items without
 * `limit_name` are left alone.
 *
 * @example Group one page of legacy items (pure)
 * ```ts
 * import assert from "node:assert/strict";
 * import { groupLegacyLimits } from "./v0_8_0_composite_configs.ts";
 *
 * const groups = groupLegacyLimits([
 *   { PK: { S: "SYSTEM#" }, SK: { S: "#LIMIT#rpm" }, limit_name: { S: "rpm" }, capacity: { N: "100" },
 *     burst: { N: "150" }, refill_amount: { N: "100" }, refill_period_seconds: { N: "60" } },
 * ]);
 * assert.equal(groups.length, 1);
 * assert.deepEqual(groups[0]?.limits, [{ name: "rpm", capacity: "150", refillAmount: "100", refillPeriodSeconds: "60" }]);
 * ```
 *
 * @module
 */
import {
  type AttributeValue,
  TransactWriteItemsCommand,
  type Update,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { Expr, type Item, str } from "../core/expr.ts";
import {
  DEFAULT_RESOURCE,
  isUnprefixedKey,
  limitAttr,
  SK,
} from "../core/keys.ts";
import {
  createCapacityBudget,
  deleteKeys,
  forEachConcurrent,
  retryThrottled,
} from "./_dynamo.ts";
import { type PageOutcome, runScanPhase } from "./_scan.ts";
import type {
  IrreversibleMigration,
  MigrationContext,
  MigrationReport,
} from "./migration.ts";

/** Id of this migration. */
export const COMPOSITE_CONFIGS_ID = "0.8.0-composite-configs";
const LIMIT_SK = "#LIMIT#";

/** One limit of a legacy group, as stored numbers (whole units). */
export interface LegacyLimit {
  /** Limit name. */
  readonly name: string;
  /** New capacity: the old `burst`, else the old `capacity`. */
  readonly capacity: string;
  /** Refill amount. */
  readonly refillAmount: string;
  /** Refill period in seconds. */
  readonly refillPeriodSeconds: string;
}

/** Legacy limit items that become one composite config item. */
export interface LegacyLimitGroup {
  /** Level of the config. */
  readonly level: "system" | "resource" | "entity";
  /** Partition key (unchanged). */
  readonly pk: string;
  /** Namespace prefix of the key including `/`, or `""` for an unprefixed key. */
  readonly prefix: string;
  /** Target sort key: `#CONFIG` or `#CONFIG#{resource}`. */
  readonly sk: string;
  /** Resource (resource and entity levels). */
  readonly resource: string | null;
  /** Entity id (entity level). */
  readonly entityId: string | null;
  /** The limits, sorted by name. */
  readonly limits: readonly LegacyLimit[];
  /** Keys of the legacy items to delete afterwards. */
  readonly oldKeys: readonly Item[];
}

function numText(item: Item, name: string): string | null {
  const a = item[name];
  return a && typeof a.N === "string" ? a.N : null;
}

/**
 * Groups legacy `#LIMIT#` items by target config item (pure). Items without
 * `limit_name` or under an unknown partition are ignored.
 */
export function groupLegacyLimits(items: readonly Item[]): LegacyLimitGroup[] {
  const groups = new Map<string, {
    level: LegacyLimitGroup["level"];
    pk: string;
    prefix: string;
    sk: string;
    resource: string | null;
    entityId: string | null;
    limits: LegacyLimit[];
    oldKeys: Item[];
  }>();
  for (const it of items) {
    const pk = str(it, "PK") ?? "";
    const sk = str(it, "SK") ?? "";
    const name = str(it, "limit_name");
    if (!sk.startsWith(LIMIT_SK) || name === null) continue;
    const slash = isUnprefixedKey(pk) ? -1 : pk.indexOf("/");
    const prefix = slash < 0 ? "" : pk.slice(0, slash + 1);
    const rest = pk.slice(prefix.length);
    let level: LegacyLimitGroup["level"];
    let resource: string | null = null;
    let entityId: string | null = null;
    let target: string;
    if (rest === "SYSTEM#") {
      level = "system";
      target = SK.CONFIG;
    } else if (rest.startsWith("RESOURCE#")) {
      level = "resource";
      resource = rest.slice("RESOURCE#".length);
      target = SK.CONFIG;
    } else if (rest.startsWith("ENTITY#")) {
      level = "entity";
      entityId = rest.slice("ENTITY#".length);
      const body = sk.slice(LIMIT_SK.length);
      resource = body.endsWith(`#${name}`)
        ? body.slice(0, body.length - name.length - 1)
        : "";
      if (resource === "") resource = DEFAULT_RESOURCE;
      target = `${SK.CONFIG}#${resource}`;
    } else continue;
    const capacity = numText(it, "burst") ?? numText(it, "capacity") ?? "0";
    const key = `${pk}\u0000${target}`;
    let g = groups.get(key);
    if (!g) {
      g = {
        level,
        pk,
        prefix,
        sk: target,
        resource,
        entityId,
        limits: [],
        oldKeys: [],
      };
      groups.set(key, g);
    }
    g.limits.push({
      name,
      capacity,
      refillAmount: numText(it, "refill_amount") ?? "0",
      refillPeriodSeconds: numText(it, "refill_period_seconds") ?? "0",
    });
    g.oldKeys.push({
      PK: it["PK"] as AttributeValue,
      SK: it["SK"] as AttributeValue,
    });
  }
  return [...groups.values()].map((g) => ({
    ...g,
    limits: g.limits.sort((a, b) => (a.name < b.name ? -1 : 1)),
  }));
}

function configUpdate(
  table: string,
  g: LegacyLimitGroup,
  createOnly: boolean,
): Update {
  const e = new Expr();
  const set: string[] = [`${e.n("config_version")} = ${e.num(1)}`];
  for (const l of g.limits) {
    set.push(
      `${e.n(limitAttr(l.name, "cp"))} = ${e.v({ N: l.capacity })}`,
      `${e.n(limitAttr(l.name, "ra"))} = ${e.v({ N: l.refillAmount })}`,
      `${e.n(limitAttr(l.name, "rp"))} = ${e.v({ N: l.refillPeriodSeconds })}`,
    );
  }
  if (g.resource !== null && g.level !== "system") {
    set.push(`${e.n("resource")} = ${e.str(g.resource)}`);
  }
  if (g.level === "entity" && g.entityId !== null && g.resource !== null) {
    set.push(
      `${e.n("entity_id")} = ${e.str(g.entityId)}`,
      `${e.n("GSI3PK")} = ${e.str(`${g.prefix}ENTITY_CONFIG#${g.resource}`)}`,
      `${e.n("GSI3SK")} = ${e.str(g.entityId)}`,
    );
  }
  return {
    TableName: table,
    Key: { PK: { S: g.pk }, SK: { S: g.sk } },
    UpdateExpression: `SET ${set.join(", ")}`,
    ...(createOnly ? { ConditionExpression: "attribute_not_exists(PK)" } : {}),
    ...e.attrs(),
  };
}

async function writeGroup(
  ctx: MigrationContext,
  g: LegacyLimitGroup,
): Promise<void> {
  const sysPk = `${g.prefix}SYSTEM#`;
  if (g.level === "entity" && g.resource !== null) {
    // Create + count atomically; an existing config is merged without counting.
    const reg = new Expr();
    try {
      await retryThrottled(ctx, () =>
        ctx.client.send(
          new TransactWriteItemsCommand({
            TransactItems: [
              { Update: configUpdate(ctx.tableName, g, true) },
              {
                Update: {
                  TableName: ctx.tableName,
                  Key: {
                    PK: { S: sysPk },
                    SK: { S: SK.ENTITY_CONFIG_RESOURCES },
                  },
                  UpdateExpression: `ADD ${reg.n(g.resource ?? "")} ${
                    reg.num(1)
                  }`,
                  ...reg.attrs(),
                },
              },
            ],
          }),
          { abortSignal: ctx.signal },
        ));
      return;
    } catch (e) {
      if (
        !(e && typeof e === "object" && "name" in e &&
          e.name === "TransactionCanceledException")
      ) throw e;
    }
  }
  await retryThrottled(ctx, () =>
    ctx.client.send(
      new UpdateItemCommand(configUpdate(ctx.tableName, g, false)),
      { abortSignal: ctx.signal },
    ));
  if (g.level === "resource" && g.resource !== null) {
    const e = new Expr();
    await retryThrottled(ctx, () =>
      ctx.client.send(
        new UpdateItemCommand({
          TableName: ctx.tableName,
          Key: { PK: { S: sysPk }, SK: { S: SK.RESOURCES } },
          UpdateExpression: `ADD ${e.n("resources")} ${
            e.v({ SS: [g.resource ?? ""] })
          }`,
          ...e.attrs(),
        }),
        { abortSignal: ctx.signal },
      ));
  }
}

/** Converts every legacy per-limit item; idempotent. */
export async function convertLegacyLimits(
  ctx: MigrationContext,
): Promise<MigrationReport> {
  const writeBudget = createCapacityBudget(
    ctx.options.maxWcuPerSecond,
    ctx.clock,
  );
  const readBudget = createCapacityBudget(
    ctx.options.maxRcuPerSecond,
    ctx.clock,
  );
  let groupsWritten = 0;
  const r = await runScanPhase(ctx, {
    migration: COMPOSITE_CONFIGS_ID,
    phase: "convert",
    checkpointPrefix: null,
    consistentRead: true,
    readBudget,
    writeBudget,
    onPage: async (items, c): Promise<PageOutcome> => {
      const groups = groupLegacyLimits(items);
      let deleted = 0;
      await forEachConcurrent(
        groups,
        c.options.writeConcurrency,
        c.signal,
        async (g) => {
          await writeBudget.take(1, c.signal);
          await writeGroup(c, g);
          deleted += await deleteKeys(c, g.oldKeys, writeBudget);
        },
      );
      groupsWritten += groups.length;
      return { written: groups.length, alreadyPresent: 0, deleted };
    },
  });
  return {
    scanned: r.scanned,
    written: r.written,
    alreadyPresent: 0,
    deleted: r.deleted,
    notes: [`${groupsWritten} composite config items written`],
  };
}

/** Registry entry for 0.8.0. */
export const compositeConfigsMigration: IrreversibleMigration = {
  id: COMPOSITE_CONFIGS_ID,
  version: "0.8.0",
  description:
    "Composite configs: per-limit #LIMIT# items become one #CONFIG item per level (old burst becomes capacity)",
  reversible: false,
  apply: convertLegacyLimits,
};

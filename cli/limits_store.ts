/**
 * Reads the live limits of a namespace and applies a {@linkcode LimitsPlan}.
 *
 * Apply writes only the planned changes, one unit at a time: the system
 * defaults; one resource's defaults with the resource registry; all of one
 * entity's changed resources with the entity-config registry, in one
 * transaction (atomic per entity). Every write is conditioned on the values
 * the plan was computed from, so a target changed meanwhile by someone else
 * is not overwritten: that unit fails and says to plan again. An audit event
 * is written for each changed target once its unit has committed.
 *
 * @module
 */
import type { TransactWriteItem } from "@aws-sdk/client-dynamodb";
import type { OnUnavailable, Repository } from "../mod.ts";
import { Limit } from "../mod.ts";
import { exponentialBackoff } from "../core/_backoff.ts";
import {
  cancellationCodes,
  errorName,
  isConditionFailed,
  isTransactionConflictOnly,
} from "../core/_sdk_errors.ts";
import { Expr, type Item, num, str, updateExpression } from "../core/expr.ts";
import {
  gsi3PkEntityConfig,
  limitAttr,
  parseLimitAttr,
  pkEntity,
  pkResource,
  pkSystem,
  SK,
  skConfig,
} from "../core/keys.ts";
import { tableOf } from "../core/store/table.ts";
import type { LimitSet, LimitsState } from "./limits_manifest.ts";
import type {
  Change,
  LimitsPlan,
  LiveState,
  LiveTarget,
  TargetRef,
} from "./limits_plan.ts";

/** Attribute marking a config item as written by `limits apply`. */
export const MANAGED_ATTRIBUTE = "managed_by";
/** Its value. */
export const MANAGED_VALUE = "limits-manifest";
/** Attributes a system config item may hold that apply owns; any other keeps the item alive on delete. */
const SYSTEM_OWNED = new Set([
  "PK",
  "SK",
  "config_version",
  "on_unavailable",
  "GSI4PK",
  "GSI4SK",
  MANAGED_ATTRIBUTE,
]);
/** Items per transaction (DynamoDB allows 100). */
const MAX_TRANSACTION_ITEMS = 100;

function decodeLimits(item: Item): Map<string, Limit> {
  const out = new Map<string, Limit>();
  for (const attr of Object.keys(item).sort()) {
    const p = parseLimitAttr(attr);
    if (!p || p.field !== "cp") continue;
    try {
      out.set(
        p.limitName,
        new Limit(
          p.limitName,
          num(item, attr) ?? 0,
          num(item, limitAttr(p.limitName, "ra")) ?? 0,
          num(item, limitAttr(p.limitName, "rp")) ?? 0,
        ),
      );
    } catch {
      // A malformed stored limit is shown as absent: the plan rewrites it.
    }
  }
  return out;
}

function decodeTarget(item: Item): LiveTarget {
  const ou = str(item, "on_unavailable");
  return {
    limits: decodeLimits(item),
    onUnavailable: ou === "allow" || ou === "block" ? ou : null,
    managed: str(item, MANAGED_ATTRIBUTE) === MANAGED_VALUE,
    item,
  };
}

function keyOf(ns: string, t: TargetRef): Item {
  switch (t.level) {
    case "system":
      return { PK: { S: pkSystem(ns) }, SK: { S: SK.CONFIG } };
    case "resource":
      return { PK: { S: pkResource(ns, t.resource) }, SK: { S: SK.CONFIG } };
    case "entity":
      return {
        PK: { S: pkEntity(ns, t.entityId) },
        SK: { S: skConfig(t.resource) },
      };
    default: {
      const _exhaustive: never = t;
      throw new Error(`Unknown target ${String(_exhaustive)}`);
    }
  }
}

function targetOf(ns: string, item: Item): TargetRef | null {
  const pk = str(item, "PK") ?? "";
  const sk = str(item, "SK") ?? "";
  if (pk === pkSystem(ns) && sk === SK.CONFIG) return { level: "system" };
  const resourcePrefix = pkResource(ns, "");
  if (pk.startsWith(resourcePrefix) && sk === SK.CONFIG) {
    return { level: "resource", resource: pk.slice(resourcePrefix.length) };
  }
  const entityPrefix = pkEntity(ns, "");
  const configPrefix = `${SK.CONFIG}#`;
  if (pk.startsWith(entityPrefix) && sk.startsWith(configPrefix)) {
    return {
      level: "entity",
      entityId: pk.slice(entityPrefix.length),
      resource: sk.slice(configPrefix.length),
    };
  }
  return null;
}

/** Options of {@linkcode readLiveLimits}. */
export interface ReadLiveOptions {
  /** Targets to read by key besides those the registries list (the manifest's: GSI3 lags behind writes). */
  readonly also?: LimitsState;
  /** Called as config items are read. */
  readonly onProgress?: (itemsRead: number) => void;
}

/**
 * Reads every limits config item of the repository's namespace: the system
 * config, the resources in the resource registry, and the entity configs of
 * every resource in the entity-config registry (GSI3), plus the targets of
 * `also` by key. Items are read strongly consistent.
 */
export async function readLiveLimits(
  repo: Repository,
  options: ReadLiveOptions = {},
): Promise<LiveState> {
  const ns = repo.namespaceId;
  const keys = new Map<string, Item>();
  const want = (t: TargetRef): void => {
    const k = keyOf(ns, t);
    keys.set(`${k["PK"]?.S}\u0000${k["SK"]?.S}`, k);
  };
  want({ level: "system" });
  for (const r of await repo.listResourcesWithDefaults()) {
    want({ level: "resource", resource: r });
  }
  for (const r of await repo.listResourcesWithEntityConfigs()) {
    const ids = (await tableOf(repo).queryAll({
      IndexName: "GSI3",
      KeyConditionExpression: "GSI3PK = :pk",
      ExpressionAttributeValues: { ":pk": { S: gsi3PkEntityConfig(ns, r) } },
    })).map((i) => str(i, "GSI3SK") ?? "").filter(Boolean);
    for (const id of ids) want({ level: "entity", entityId: id, resource: r });
    options.onProgress?.(keys.size);
  }
  const also = options.also;
  if (also) {
    for (const r of also.resources.keys()) {
      want({ level: "resource", resource: r });
    }
    for (const [id, byResource] of also.entities) {
      for (const r of byResource.keys()) {
        want({ level: "entity", entityId: id, resource: r });
      }
    }
  }
  const all = [...keys.values()];
  const items: Item[] = [];
  for (let i = 0; i < all.length; i += 1000) {
    items.push(...await tableOf(repo).batchGet(all.slice(i, i + 1000), true));
    options.onProgress?.(items.length);
  }
  let system: LiveTarget | null = null;
  const resources = new Map<string, LiveTarget>();
  const entities = new Map<string, Map<string, LiveTarget>>();
  for (const item of items) {
    const t = targetOf(ns, item);
    if (!t) continue;
    const live = decodeTarget(item);
    if (t.level === "system") system = live;
    else if (t.level === "resource") resources.set(t.resource, live);
    else {
      const m = entities.get(t.entityId) ?? new Map<string, LiveTarget>();
      m.set(t.resource, live);
      entities.set(t.entityId, m);
    }
  }
  return { namespace: repo.namespaceName, system, resources, entities };
}

/** The condition that the item still holds what the plan read. */
function unchangedSince(
  e: Expr,
  live: LiveTarget | null,
  after: LimitSet,
): string {
  if (!live) return `attribute_not_exists(${e.n("PK")})`;
  const parts = [`attribute_exists(${e.n("PK")})`];
  for (const [attr, value] of Object.entries(live.item)) {
    if (!parseLimitAttr(attr) || !("N" in value)) continue;
    parts.push(`${e.n(attr)} = ${e.v(value)}`);
  }
  for (const name of after.keys()) {
    if (!live.item[limitAttr(name, "cp")]) {
      parts.push(`attribute_not_exists(${e.n(limitAttr(name, "cp"))})`);
    }
  }
  const ou = str(live.item, "on_unavailable");
  parts.push(
    ou === null
      ? `attribute_not_exists(${e.n("on_unavailable")})`
      : `${e.n("on_unavailable")} = ${e.str(ou)}`,
  );
  return parts.join(" AND ");
}

function limitClauses(
  e: Expr,
  live: LiveTarget | null,
  after: LimitSet,
): { set: string[]; remove: string[] } {
  const set: string[] = [];
  const remove: string[] = [];
  for (const l of after.values()) {
    set.push(
      `${e.n(limitAttr(l.name, "cp"))} = ${e.num(l.capacity)}`,
      `${e.n(limitAttr(l.name, "ra"))} = ${e.num(l.refillAmount)}`,
      `${e.n(limitAttr(l.name, "rp"))} = ${e.num(l.refillPeriodSeconds)}`,
    );
  }
  for (const attr of Object.keys(live?.item ?? {})) {
    const p = parseLimitAttr(attr);
    if (p && !after.has(p.limitName)) remove.push(e.n(attr));
  }
  return { set, remove };
}

/** The config-item write of one change. */
function configWrite(table: string, ns: string, c: Change): TransactWriteItem {
  const key = keyOf(ns, c.target);
  const e = new Expr();
  const condition = unchangedSince(e, c.live, c.after);
  if (c.action === "delete") {
    const keepItem = c.target.level === "system" && c.live &&
      Object.keys(c.live.item).some((a) =>
        !SYSTEM_OWNED.has(a) && !parseLimitAttr(a)
      );
    if (!keepItem) {
      return {
        Delete: {
          TableName: table,
          Key: key,
          ConditionExpression: condition,
          ...e.attrs(),
        },
      };
    }
    // The system item also keeps audit_retention_days: remove only what apply owns.
    const { remove } = limitClauses(e, c.live, new Map());
    remove.push(e.n("on_unavailable"), e.n(MANAGED_ATTRIBUTE));
    return {
      Update: {
        TableName: table,
        Key: key,
        UpdateExpression: updateExpression({ remove }),
        ConditionExpression: condition,
        ...e.attrs(),
      },
    };
  }
  const { set, remove } = limitClauses(e, c.live, c.after);
  const pk = key["PK"]?.S ?? "";
  set.push(
    `${e.n("config_version")} = if_not_exists(${e.n("config_version")}, ${
      e.num(1)
    })`,
    `${e.n("GSI4PK")} = ${e.str(ns)}`,
    `${e.n("GSI4SK")} = ${e.str(pk)}`,
    `${e.n(MANAGED_ATTRIBUTE)} = ${e.str(MANAGED_VALUE)}`,
  );
  const t = c.target;
  if (t.level === "system") {
    if (c.onUnavailableAfter) {
      set.push(`${e.n("on_unavailable")} = ${e.str(c.onUnavailableAfter)}`);
    } else if (c.live && str(c.live.item, "on_unavailable") !== null) {
      remove.push(e.n("on_unavailable"));
    }
  } else if (t.level === "resource") {
    set.push(`${e.n("resource")} = ${e.str(t.resource)}`);
  } else {
    set.push(
      `${e.n("entity_id")} = ${e.str(t.entityId)}`,
      `${e.n("resource")} = ${e.str(t.resource)}`,
      `${e.n("GSI3PK")} = ${e.str(gsi3PkEntityConfig(ns, t.resource))}`,
      `${e.n("GSI3SK")} = ${e.str(t.entityId)}`,
    );
  }
  return {
    Update: {
      TableName: table,
      Key: key,
      UpdateExpression: updateExpression({ set, remove }),
      ConditionExpression: condition,
      ...e.attrs(),
    },
  };
}

/** Whether a change adds a config item (create) or removes one (delete). */
function itemDelta(c: Change): number {
  if (c.action === "create" && !c.live) return 1;
  if (c.action === "delete") {
    const keepItem = c.target.level === "system";
    return keepItem ? 0 : -1;
  }
  return 0;
}

/** One atomic group of changes. */
export interface ApplyUnit {
  /** `system`, `resource gpt`, `entity key-1`. */
  readonly label: string;
  /** Its changes. */
  readonly changes: readonly Change[];
}

/** Groups changes into units: the system, each resource, each entity. */
export function applyUnits(plan: LimitsPlan): ApplyUnit[] {
  const units: ApplyUnit[] = [];
  const byEntity = new Map<string, Change[]>();
  for (const c of plan.changes) {
    const t = c.target;
    if (t.level === "entity") {
      const list = byEntity.get(t.entityId) ?? [];
      list.push(c);
      byEntity.set(t.entityId, list);
    } else {
      units.push({
        label: t.level === "system" ? "system" : `resource ${t.resource}`,
        changes: [c],
      });
    }
  }
  for (const [id, changes] of byEntity) {
    // Chunks keep room for the registry update in each transaction.
    for (let i = 0; i < changes.length; i += MAX_TRANSACTION_ITEMS - 1) {
      units.push({
        label: `entity ${id}`,
        changes: changes.slice(i, i + MAX_TRANSACTION_ITEMS - 1),
      });
    }
  }
  return units;
}

function registryWrites(
  table: string,
  ns: string,
  unit: ApplyUnit,
): { writes: TransactWriteItem[]; emptied: string[] } {
  const writes: TransactWriteItem[] = [];
  const emptied: string[] = [];
  const first = unit.changes[0];
  if (!first) return { writes, emptied };
  if (first.target.level === "resource") {
    const d = itemDelta(first);
    if (d === 0) return { writes, emptied };
    const e = new Expr();
    const set = e.v({ SS: [first.target.resource] });
    writes.push({
      Update: {
        TableName: table,
        Key: { PK: { S: pkSystem(ns) }, SK: { S: SK.RESOURCES } },
        UpdateExpression: d > 0
          ? `ADD ${e.n("resources")} ${set} SET ${
            e.n("GSI4PK")
          } = if_not_exists(${e.n("GSI4PK")}, ${e.str(ns)}), ${
            e.n("GSI4SK")
          } = if_not_exists(${e.n("GSI4SK")}, ${e.str(pkSystem(ns))})`
          : `DELETE ${e.n("resources")} ${set}`,
        ...e.attrs(),
      },
    });
  } else if (first.target.level === "entity") {
    const e = new Expr();
    const add: string[] = [];
    for (const c of unit.changes) {
      if (c.target.level !== "entity") continue;
      const d = itemDelta(c);
      if (d === 0) continue;
      add.push(`${e.n(c.target.resource)} ${e.num(d)}`);
      if (d < 0) emptied.push(c.target.resource);
    }
    if (add.length === 0) return { writes, emptied };
    writes.push({
      Update: {
        TableName: table,
        Key: {
          PK: { S: pkSystem(ns) },
          SK: { S: SK.ENTITY_CONFIG_RESOURCES },
        },
        UpdateExpression: `ADD ${add.join(", ")} SET ${e.n("GSI4PK")} = ${
          e.str(ns)
        }, ${e.n("GSI4SK")} = ${e.str(pkSystem(ns))}`,
        ...e.attrs(),
      },
    });
  }
  return { writes, emptied };
}

/** Outcome of one unit. */
export type UnitResult =
  | {
    readonly ok: true;
    readonly unit: ApplyUnit;
    /** Set when the unit was written but an audit event was not. */
    readonly warning?: string;
  }
  | {
    readonly ok: false;
    readonly unit: ApplyUnit;
    /** `stale`: the live values changed after the plan was read; `failed`: another error. */
    readonly kind: "stale" | "failed";
    readonly message: string;
  };

/** Options of {@linkcode applyLimitsPlan}. */
export interface ApplyOptions {
  /** Principal of the audit events. */
  readonly principal: string;
  /** Called after each unit. */
  readonly onUnit?: (result: UnitResult, done: number, total: number) => void;
  /** Stops between units. */
  readonly signal?: AbortSignal;
  /** Waits between retries of a transaction conflict. */
  readonly sleep?: (ms: number) => Promise<void>;
}

async function writeUnit(
  repo: Repository,
  writes: TransactWriteItem[],
  sleep: (ms: number) => Promise<void>,
): Promise<void> {
  for (let attempt = 0;; attempt++) {
    try {
      await tableOf(repo).writeItems(writes);
      return;
    } catch (e) {
      const conflict = isTransactionConflictOnly(e) ||
        errorName(e) === "TransactionConflictException";
      if (!conflict || attempt >= 5) throw e;
      // Up to 50 ms of jitter on top of the doubling delay (attempts 0-4).
      await sleep(
        exponentialBackoff(attempt, 50, Infinity) +
          Math.floor(Math.random() * 50),
      );
    }
  }
}

function auditTarget(t: TargetRef): { entityId: string; resource?: string } {
  switch (t.level) {
    case "system":
      return { entityId: "$SYSTEM" };
    case "resource":
      return { entityId: `$RESOURCE:${t.resource}`, resource: t.resource };
    case "entity":
      return { entityId: t.entityId, resource: t.resource };
    default: {
      const _exhaustive: never = t;
      throw new Error(`Unknown target ${String(_exhaustive)}`);
    }
  }
}

async function auditChange(
  repo: Repository,
  c: Change,
  principal: string,
): Promise<void> {
  const { entityId, resource } = auditTarget(c.target);
  const previous = [...(c.live?.limits.values() ?? [])].map((l) => l.toDict());
  const onUnavailable: { "on_unavailable"?: OnUnavailable | null } =
    c.target.level === "system"
      ? { "on_unavailable": c.onUnavailableAfter }
      : {};
  if (c.action === "delete") {
    await repo.audit("limits_deleted", entityId, {
      ...(resource !== undefined ? { resource } : {}),
      details: {
        limits: previous.map((l) => l.name),
        via: "limits apply",
      },
      principal,
    });
    return;
  }
  await repo.audit("limits_set", entityId, {
    ...(resource !== undefined ? { resource } : {}),
    details: {
      limits: [...c.after.values()].map((l) => l.toDict()),
      previous,
      ...onUnavailable,
      via: "limits apply",
    },
    principal,
  });
}

/**
 * Applies the changes of a plan unit by unit (see the module doc). A unit
 * that fails does not stop the others; each result is reported.
 *
 * @returns One result per unit, in order.
 */
export async function applyLimitsPlan(
  repo: Repository,
  plan: LimitsPlan,
  options: ApplyOptions,
): Promise<UnitResult[]> {
  const table = repo.tableName;
  const ns = repo.namespaceId;
  const sleep = options.sleep ??
    ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const units = applyUnits(plan);
  const results: UnitResult[] = [];
  for (const unit of units) {
    options.signal?.throwIfAborted();
    const writes = unit.changes.map((c) => configWrite(table, ns, c));
    const registry = registryWrites(table, ns, unit);
    let result: UnitResult;
    try {
      await writeUnit(repo, [...writes, ...registry.writes], sleep);
      try {
        for (const r of registry.emptied) await dropEmptyCount(repo, r);
        for (const c of unit.changes) {
          await auditChange(repo, c, options.principal);
        }
        result = { ok: true, unit };
      } catch (e) {
        result = {
          ok: true,
          unit,
          warning: `written, but its audit event or registry clean-up failed: ${
            e instanceof Error ? e.message : String(e)
          }`,
        };
      }
    } catch (e) {
      const stale = isConditionFailed(e) ||
        cancellationCodes(e).includes("ConditionalCheckFailed");
      result = {
        ok: false,
        unit,
        kind: stale ? "stale" : "failed",
        message: stale
          ? "its live limits changed after they were read; nothing of this unit was written (run the command again to plan against the new values)"
          : `${errorName(e) || "Error"}: ${
            e instanceof Error ? e.message : String(e)
          }`,
      };
    }
    results.push(result);
    options.onUnit?.(result, results.length, units.length);
  }
  return results;
}

/** Removes a resource's entity-config count once it reaches 0 (as `Repository.deleteLimits` does). */
async function dropEmptyCount(
  repo: Repository,
  resource: string,
): Promise<void> {
  const e = new Expr();
  await tableOf(repo).writeItems([{
    Update: {
      TableName: repo.tableName,
      Key: {
        PK: { S: pkSystem(repo.namespaceId) },
        SK: { S: SK.ENTITY_CONFIG_RESOURCES },
      },
      UpdateExpression: `REMOVE ${e.n(resource)}`,
      ConditionExpression: `${e.n(resource)} <= ${e.num(0)}`,
      ...e.attrs(),
    },
  }]).catch((err) => {
    if (!isConditionFailed(err)) throw err;
  });
}

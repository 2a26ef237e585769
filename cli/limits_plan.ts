/**
 * The plan of `limits plan|apply|diff`: the difference between a manifest
 * and the live limits of a namespace, per target (the system defaults, one
 * resource's defaults, one entity's limits on one resource), with the old
 * and new value of every limit. Pure: reading and writing are in
 * `limits_store.ts`.
 *
 * Ownership: a target that `limits apply` created or changed is marked as
 * managed by the manifest, so removing it from the manifest deletes it.
 * Targets set by other means (the library, `entity set-limits`) are left
 * alone when the manifest does not name them, unless `prune` is set.
 *
 * @module
 */
import type { Limit, OnUnavailable } from "../mod.ts";
import type { Item } from "../core/expr.ts";
import { formatLimit } from "./limit_spec.ts";
import type { LimitSet, LimitsState, SystemLimits } from "./limits_manifest.ts";

/** What a change applies to. */
export type TargetRef =
  | { readonly level: "system" }
  | { readonly level: "resource"; readonly resource: string }
  | {
    readonly level: "entity";
    readonly entityId: string;
    readonly resource: string;
  };

/** A target as read from the table. */
export interface LiveTarget {
  /** Its limits (empty when the item holds none). */
  readonly limits: LimitSet;
  /** `on_unavailable` (system only), or `null`. */
  readonly onUnavailable: OnUnavailable | null;
  /** Whether `limits apply` wrote it last (it carries the manifest's mark). */
  readonly managed: boolean;
  /** The raw item, for the conditional write. */
  readonly item: Item;
}

/** The live limits of a namespace, with what apply needs to write safely. */
export interface LiveState {
  /** Namespace name. */
  readonly namespace: string;
  /** The system config item, or `null`. */
  readonly system: LiveTarget | null;
  /** Resource config items by resource. */
  readonly resources: ReadonlyMap<string, LiveTarget>;
  /** Entity config items by entity, then resource. */
  readonly entities: ReadonlyMap<string, ReadonlyMap<string, LiveTarget>>;
}

/** Old and new value of one limit in a change (`null`: absent). */
export interface LimitDelta {
  /** Limit name. */
  readonly name: string;
  /** Before, or `null` when added. */
  readonly before: Limit | null;
  /** After, or `null` when removed. */
  readonly after: Limit | null;
}

/** One planned change. */
export interface Change {
  /** `create`: the target has no limits; `update`: they differ; `delete`: the manifest no longer declares it. */
  readonly action: "create" | "update" | "delete";
  /** The target. */
  readonly target: TargetRef;
  /** Every limit that is added, changed or removed (unchanged ones are left out), by name. */
  readonly limits: readonly LimitDelta[];
  /** `on_unavailable` before and after, when it changes (system only). */
  readonly onUnavailable:
    | {
      readonly before: OnUnavailable | null;
      readonly after: OnUnavailable | null;
    }
    | null;
  /** The limits the target has afterwards (empty for a delete). */
  readonly after: LimitSet;
  /** `on_unavailable` afterwards (system only). */
  readonly onUnavailableAfter: OnUnavailable | null;
  /** The live target, or `null` when there is none. */
  readonly live: LiveTarget | null;
  /** Why a delete happens: the manifest dropped a target it managed, or `prune`. */
  readonly reason: "declared" | "removed" | "pruned";
}

/** The result of {@linkcode planLimits}. */
export interface LimitsPlan {
  /** Namespace name. */
  readonly namespace: string;
  /** Changes in order: system, resources, entities (sorted). */
  readonly changes: readonly Change[];
  /** Targets whose live limits match the manifest. */
  readonly unchanged: number;
  /** Live targets the manifest does not declare and did not create: left alone (without `prune`). */
  readonly unmanaged: readonly TargetRef[];
}

/** Options of {@linkcode planLimits}. */
export interface PlanOptions {
  /** Also delete live targets the manifest does not declare, even those it did not create. @default false */
  readonly prune?: boolean;
}

function sameLimit(a: Limit, b: Limit): boolean {
  return a.capacity === b.capacity && a.refillAmount === b.refillAmount &&
    a.refillPeriodSeconds === b.refillPeriodSeconds;
}

function sorted<V>(m: ReadonlyMap<string, V>): [string, V][] {
  return [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function deltas(before: LimitSet, after: LimitSet): LimitDelta[] {
  const names = [...new Set([...before.keys(), ...after.keys()])].sort();
  const out: LimitDelta[] = [];
  for (const name of names) {
    const b = before.get(name) ?? null;
    const a = after.get(name) ?? null;
    if (b && a && sameLimit(a, b)) continue;
    out.push({ name, before: b, after: a });
  }
  return out;
}

function isEmpty(t: LiveTarget | null): boolean {
  return !t || (t.limits.size === 0 && t.onUnavailable === null);
}

const NO_LIMITS: LimitSet = new Map();

function compare(
  target: TargetRef,
  desired: SystemLimits | LimitSet | null,
  live: LiveTarget | null,
  prune: boolean,
  plan: { changes: Change[]; unchanged: number; unmanaged: TargetRef[] },
): void {
  const want = desired === null
    ? null
    : desired instanceof Map
    ? { limits: desired as LimitSet, onUnavailable: null }
    : desired as SystemLimits;
  const present = !isEmpty(live);
  if (want === null) {
    if (!present || !live) return;
    if (!live.managed && !prune) {
      plan.unmanaged.push(target);
      return;
    }
    plan.changes.push({
      action: "delete",
      target,
      limits: deltas(live.limits, NO_LIMITS),
      onUnavailable: live.onUnavailable === null
        ? null
        : { before: live.onUnavailable, after: null },
      after: NO_LIMITS,
      onUnavailableAfter: null,
      live,
      reason: live.managed ? "removed" : "pruned",
    });
    return;
  }
  const before = present && live ? live.limits : NO_LIMITS;
  const ouBefore = present && live ? live.onUnavailable : null;
  const d = deltas(before, want.limits);
  const ou = ouBefore === want.onUnavailable
    ? null
    : { before: ouBefore, after: want.onUnavailable };
  if (d.length === 0 && ou === null) {
    plan.unchanged++;
    return;
  }
  plan.changes.push({
    action: present ? "update" : "create",
    target,
    limits: d,
    onUnavailable: ou,
    after: want.limits,
    onUnavailableAfter: want.onUnavailable,
    live,
    reason: "declared",
  });
}

/**
 * Compares a manifest with the live limits of its namespace.
 *
 * @param desired The manifest's limits.
 * @param live The live limits.
 * @param options `prune`.
 * @returns The changes, the unchanged count and the unmanaged targets left alone.
 *
 * @example An edited limit is an update with old and new values
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit } from "../mod.ts";
 * import { planLimits } from "./limits_plan.ts";
 *
 * const plan = planLimits(
 *   { namespace: "default", system: null, resources: new Map([["gpt", new Map([["rpm", Limit.perMinute("rpm", 200)]])]]), entities: new Map() },
 *   { namespace: "default", system: null, entities: new Map(), resources: new Map([["gpt", {
 *     limits: new Map([["rpm", Limit.perMinute("rpm", 100)]]), onUnavailable: null, managed: true, item: {},
 *   }]]) },
 * );
 * assert.equal(plan.changes[0]?.action, "update");
 * assert.equal(plan.changes[0]?.limits[0]?.before?.capacity, 100);
 * assert.equal(plan.changes[0]?.limits[0]?.after?.capacity, 200);
 * ```
 */
export function planLimits(
  desired: LimitsState,
  live: LiveState,
  options: PlanOptions = {},
): LimitsPlan {
  const prune = options.prune ?? false;
  const plan = {
    changes: [] as Change[],
    unchanged: 0,
    unmanaged: [] as TargetRef[],
  };
  compare({ level: "system" }, desired.system, live.system, prune, plan);
  const resources = [
    ...new Set([...desired.resources.keys(), ...live.resources.keys()]),
  ].sort();
  for (const r of resources) {
    compare(
      { level: "resource", resource: r },
      desired.resources.get(r) ?? null,
      live.resources.get(r) ?? null,
      prune,
      plan,
    );
  }
  const entities = [
    ...new Set([...desired.entities.keys(), ...live.entities.keys()]),
  ].sort();
  for (const id of entities) {
    const want = desired.entities.get(id) ?? new Map<string, LimitSet>();
    const have = live.entities.get(id) ?? new Map<string, LiveTarget>();
    for (const r of [...new Set([...want.keys(), ...have.keys()])].sort()) {
      compare(
        { level: "entity", entityId: id, resource: r },
        want.get(r) ?? null,
        have.get(r) ?? null,
        prune,
        plan,
      );
    }
  }
  return { namespace: desired.namespace, ...plan };
}

/** The live state as plain limits (what `limits export` writes). */
export function liveAsState(live: LiveState): LimitsState {
  const keep = (t: LiveTarget | null | undefined) => t && !isEmpty(t);
  const resources = new Map<string, LimitSet>();
  for (const [r, t] of sorted(live.resources)) {
    if (keep(t)) resources.set(r, t.limits);
  }
  const entities = new Map<string, Map<string, LimitSet>>();
  for (const [id, byResource] of sorted(live.entities)) {
    const m = new Map<string, LimitSet>();
    for (const [r, t] of sorted(byResource)) if (keep(t)) m.set(r, t.limits);
    if (m.size > 0) entities.set(id, m);
  }
  return {
    namespace: live.namespace,
    system: keep(live.system) && live.system
      ? { limits: live.system.limits, onUnavailable: live.system.onUnavailable }
      : null,
    resources,
    entities,
  };
}

/** `system`, `resource openai/gpt-4`, `entity key-1 / openai/gpt-4`. */
export function targetLabel(t: TargetRef): string {
  switch (t.level) {
    case "system":
      return "system";
    case "resource":
      return `resource ${t.resource}`;
    case "entity":
      return `entity ${t.entityId} / ${t.resource}`;
    default: {
      const _exhaustive: never = t;
      return String(_exhaustive);
    }
  }
}

/** The value part of {@linkcode formatLimit}: `1,000/min (burst: 1,500)`. */
export function limitValue(l: Limit): string {
  return formatLimit(l).slice(l.name.length + 2);
}

const SYMBOL = { create: "+", update: "~", delete: "-" } as const;

/**
 * Lines describing one change: the target, then each limit with
 * `old -> new`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Limit } from "../mod.ts";
 * import { formatChange } from "./limits_plan.ts";
 *
 * const lines = formatChange({
 *   action: "update", target: { level: "system" }, reason: "declared", live: null,
 *   limits: [{ name: "rpm", before: Limit.perMinute("rpm", 100), after: Limit.perMinute("rpm", 200) }],
 *   onUnavailable: { before: "allow", after: "block" }, after: new Map(), onUnavailableAfter: "block",
 * });
 * assert.deepEqual(lines, ["  ~ system", "      ~ rpm: 100/min -> 200/min", "      ~ on_unavailable: allow -> block"]);
 * ```
 */
export function formatChange(c: Change): string[] {
  const note = c.action === "delete"
    ? c.reason === "pruned"
      ? "   (not in the manifest; --prune)"
      : "   (removed from the manifest)"
    : c.action === "update" && c.live && !c.live.managed
    ? "   (set outside the manifest; apply makes it managed)"
    : "";
  const lines = [`  ${SYMBOL[c.action]} ${targetLabel(c.target)}${note}`];
  for (const d of c.limits) {
    if (d.before && d.after) {
      lines.push(
        `      ~ ${d.name}: ${limitValue(d.before)} -> ${limitValue(d.after)}`,
      );
    } else if (d.after) {
      lines.push(`      + ${d.name}: ${limitValue(d.after)}`);
    } else if (d.before) {
      lines.push(`      - ${d.name}: ${limitValue(d.before)}`);
    }
  }
  const ou = c.onUnavailable;
  if (ou?.before && ou.after) {
    lines.push(`      ~ on_unavailable: ${ou.before} -> ${ou.after}`);
  } else if (ou?.after) {
    lines.push(`      + on_unavailable: ${ou.after}`);
  } else if (ou?.before) {
    lines.push(`      - on_unavailable: ${ou.before}`);
  }
  return lines;
}

function limitJson(l: Limit | null): Record<string, number> | null {
  return l
    ? {
      capacity: l.capacity,
      "refill_amount": l.refillAmount,
      "refill_period": l.refillPeriodSeconds,
    }
    : null;
}

/** JSON form of a target. */
export function targetJson(t: TargetRef): Record<string, string> {
  return { ...t };
}

/** JSON form of a change (`--output json`). */
export function changeJson(c: Change): Record<string, unknown> {
  return {
    action: c.action,
    target: targetJson(c.target),
    ...(c.action === "delete" ? { reason: c.reason } : {}),
    limits: c.limits.map((d) => ({
      name: d.name,
      before: limitJson(d.before),
      after: limitJson(d.after),
    })),
    ...(c.onUnavailable ? { "on_unavailable": c.onUnavailable } : {}),
  };
}

/** Counts of a plan by action. */
export function summarize(
  plan: LimitsPlan,
): {
  create: number;
  update: number;
  delete: number;
  unchanged: number;
  unmanaged: number;
} {
  const n = (a: Change["action"]) =>
    plan.changes.filter((c) => c.action === a).length;
  return {
    create: n("create"),
    update: n("update"),
    delete: n("delete"),
    unchanged: plan.unchanged,
    unmanaged: plan.unmanaged.length,
  };
}

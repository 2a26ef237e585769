/**
 * Usage snapshots (spec 01 §4.8): window keys, the counter attributes, the
 * snapshot update the aggregator commits and the decoder the CLI reads with.
 * Pure: no I/O.
 *
 * The stored layout is flat (`{limit_name}` is a top-level number), so a
 * limit called `ttl`, `window` or `total_events` would overwrite the
 * snapshot's own attributes (reference weakness 6). Such a limit's counter
 * is stored as `limit#{name}` instead: `#` is not allowed in limit names, so
 * the escaped form never collides, and older readers still see it as a
 * counter (every unknown number is one).
 *
 * @module
 */
import type { Update } from "@aws-sdk/client-dynamodb";
import { ValidationError } from "./errors.ts";
import { Expr, type Item, updateExpression } from "./expr.ts";
import {
  gsi2PkResource,
  gsi2SkUsage,
  pkEntity,
  skUsage,
  skUsageWindow,
} from "./keys.ts";
import type { UsageSnapshot } from "./models.ts";

/** Snapshot windows, shortest first. */
export const SNAPSHOT_WINDOWS = ["hourly", "daily", "monthly"] as const;
/** A snapshot window. */
export type SnapshotWindow = typeof SNAPSHOT_WINDOWS[number];

/** Attributes of a snapshot item that are not counters. */
export const SNAPSHOT_ATTRIBUTES: ReadonlySet<string> = new Set([
  "PK",
  "SK",
  "entity_id",
  "resource",
  "window",
  "window_start",
  "total_events",
  "GSI2PK",
  "GSI2SK",
  "GSI4PK",
  "GSI4SK",
  "ttl",
]);

/** Prefix of a counter whose limit name collides with a snapshot attribute. */
export const ESCAPED_COUNTER_PREFIX = "limit#";

/** The attribute holding `limitName`'s counter in a snapshot. */
export function counterAttribute(limitName: string): string {
  return SNAPSHOT_ATTRIBUTES.has(limitName)
    ? `${ESCAPED_COUNTER_PREFIX}${limitName}`
    : limitName;
}

/** The limit name of a snapshot attribute, or `null` when it is not a counter. */
export function counterName(attribute: string): string | null {
  if (attribute.startsWith(ESCAPED_COUNTER_PREFIX)) {
    return attribute.slice(ESCAPED_COUNTER_PREFIX.length) || null;
  }
  return SNAPSHOT_ATTRIBUTES.has(attribute) ? null : attribute;
}

/**
 * Parses a comma-separated window list (`hourly,daily`).
 *
 * @throws {ValidationError} on an empty list or an unknown window
 */
export function parseSnapshotWindows(list: string): SnapshotWindow[] {
  const out: SnapshotWindow[] = [];
  for (const raw of list.split(",")) {
    const w = raw.trim();
    if (w === "") continue;
    if (!(SNAPSHOT_WINDOWS as readonly string[]).includes(w)) {
      throw new ValidationError(
        "window",
        w,
        `expected one of ${SNAPSHOT_WINDOWS.join(", ")}`,
      );
    }
    if (!out.includes(w as SnapshotWindow)) out.push(w as SnapshotWindow);
  }
  if (out.length === 0) {
    throw new ValidationError("window", list, "expected at least one window");
  }
  return out;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}

/**
 * The window key (UTC start) containing `epochMs`: hourly
 * `YYYY-MM-DDTHH:00:00Z`, daily `YYYY-MM-DDT00:00:00Z`, monthly
 * `YYYY-MM-01T00:00:00Z`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { windowKey } from "./usage.ts";
 *
 * const t = Date.parse("2024-01-15T14:30:00Z");
 * assert.equal(windowKey("hourly", t), "2024-01-15T14:00:00Z");
 * assert.equal(windowKey("monthly", t), "2024-01-01T00:00:00Z");
 * ```
 */
export function windowKey(window: SnapshotWindow, epochMs: number): string {
  const d = new Date(epochMs);
  const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}`;
  switch (window) {
    case "hourly":
      return `${day}-${pad(d.getUTCDate())}T${pad(d.getUTCHours())}:00:00Z`;
    case "daily":
      return `${day}-${pad(d.getUTCDate())}T00:00:00Z`;
    case "monthly":
      return `${day}-01T00:00:00Z`;
    default: {
      const _exhaustive: never = window;
      throw new ValidationError("window", _exhaustive, "unknown window");
    }
  }
}

/** The last second of a window, as `YYYY-MM-DDTHH:MM:SSZ`; the key itself for an unknown window. */
export function windowEnd(window: string, key: string): string {
  const start = Date.parse(key);
  if (Number.isNaN(start)) return key;
  const d = new Date(start);
  let next: number;
  if (window === "hourly") next = start + 3_600_000;
  else if (window === "daily") next = start + 86_400_000;
  else if (window === "monthly") {
    next = Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
  } else return key;
  return new Date(next - 1000).toISOString().replace(".000Z", "Z");
}

/** One snapshot increment. */
export interface SnapshotIncrement {
  /** Namespace id. */
  readonly ns: string;
  /** Entity. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** Window. */
  readonly window: SnapshotWindow;
  /** Window key ({@linkcode windowKey}). */
  readonly windowKey: string;
  /** Whole tokens to add per limit (refunds are negative). */
  readonly counters: ReadonlyMap<string, bigint>;
  /** Acquires to add to `total_events`. */
  readonly events: number;
  /** TTL (epoch seconds) set when the item is created. */
  readonly ttl: number;
  /**
   * Whether the window has its own item, `#USAGE#{r}#{key}#{window}`
   * ({@linkcode skUsageWindow}): a finer window whose key is a coarser
   * window's (hour 00, day 1), while the coarser one keeps the shared
   * `#USAGE#{r}#{key}` item. @default false
   */
  readonly windowItem?: boolean;
}

/**
 * The snapshot write (spec 05 §3.2): creates the item and adds to its
 * counters in one atomic update; a colliding limit name is escaped.
 *
 * Unlike the reference (`window = if_not_exists(window, :window)`), the
 * `window` label is set on every write: the shared `#USAGE#{r}#{key}` item
 * of a key where windows start together holds the coarsest window's count
 * (the finer ones have their own items), so an item the Python aggregator
 * created and labeled with a finer window is relabeled by the first
 * increment this aggregator adds to it.
 */
export function snapshotUpdate(table: string, s: SnapshotIncrement): Update {
  const e = new Expr();
  const keep = (attr: string, value: string): string => {
    const n = e.n(attr);
    return `${n} = if_not_exists(${n}, ${e.str(value)})`;
  };
  const set = [
    `${e.n("entity_id")} = ${e.str(s.entityId)}`,
    keep("resource", s.resource),
    `${e.n("window")} = ${e.str(s.window)}`,
    keep("window_start", s.windowKey),
    `${e.n("GSI2PK")} = ${e.str(gsi2PkResource(s.ns, s.resource))}`,
    `${e.n("GSI2SK")} = ${e.str(gsi2SkUsage(s.windowKey, s.entityId))}`,
    keep("GSI4PK", s.ns),
    keep("GSI4SK", pkEntity(s.ns, s.entityId)),
    `${e.n("ttl")} = if_not_exists(${e.n("ttl")}, ${e.num(s.ttl)})`,
  ];
  const add: string[] = [];
  for (const [name, value] of s.counters) {
    add.push(`${e.n(counterAttribute(name))} ${e.num(value)}`);
  }
  add.push(`${e.n("total_events")} ${e.num(s.events)}`);
  return {
    TableName: table,
    Key: {
      PK: { S: pkEntity(s.ns, s.entityId) },
      SK: {
        S: s.windowItem
          ? skUsageWindow(s.resource, s.windowKey, s.window)
          : skUsage(s.resource, s.windowKey),
      },
    },
    UpdateExpression: updateExpression({ set, add }),
    ...e.attrs(),
  };
}

function text(item: Item, k: string): string {
  const a = item[k];
  return a && "S" in a && typeof a.S === "string" ? a.S : "";
}

/**
 * Decodes a snapshot item: every number attribute other than the snapshot's
 * own is a counter; escaped counters get their limit name back.
 */
export function decodeSnapshot(item: Item): UsageSnapshot {
  const counters: Record<string, number> = {};
  let total = 0;
  for (const [k, a] of Object.entries(item)) {
    if (!("N" in a) || typeof a.N !== "string") continue;
    if (k === "total_events") {
      total = Number(a.N);
      continue;
    }
    const name = counterName(k);
    if (name !== null) counters[name] = Number(a.N);
  }
  const window = text(item, "window");
  const start = text(item, "window_start");
  return {
    entityId: text(item, "entity_id"),
    resource: text(item, "resource"),
    windowType: window,
    windowStart: start,
    windowEnd: windowEnd(window, start),
    counters,
    totalEvents: total,
  };
}

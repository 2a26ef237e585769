/**
 * The config item codec: limits as `l_{name}_cp`, `l_{name}_ra`, `l_{name}_rp`
 * attributes (schema 0.10, shared with the Python client), and a config
 * item as the config cache's slot.
 *
 * @module
 */
import type { ConfigSlot } from "../config_cache.ts";
import { type Item, num, str } from "../expr.ts";
import { limitAttr, parseLimitAttr } from "../keys.ts";
import type { CalendarPeriod } from "../calendar.ts";
import { Limit } from "../limit.ts";

/** The limits stored in a config item (`[]` for none). */
export function limitsFromItem(item: Item | undefined): Limit[] {
  if (!item) return [];
  const out: Limit[] = [];
  for (const attr of Object.keys(item).sort()) {
    const p = parseLimitAttr(attr);
    if (!p || p.field !== "cp") continue;
    const period = str(item, limitAttr(p.limitName, "cal"));
    const timeZone = str(item, limitAttr(p.limitName, "tz")) ?? "UTC";
    out.push(
      new Limit(
        p.limitName,
        num(item, attr) ?? 0,
        num(item, limitAttr(p.limitName, "ra")) ?? 0,
        num(item, limitAttr(p.limitName, "rp")) ?? 0,
        {
          shadow: num(item, limitAttr(p.limitName, "sh")) === 1,
          calendar: period === null ? null : {
            period: period as CalendarPeriod,
            timeZone,
          },
        },
      ),
    );
  }
  return out;
}

/**
 * The `l_{name}_cp/ra/rp` attributes of a list of limits, plus the new
 * `l_{name}_sh` (N 1, shadow mode) and `l_{name}_cal` / `l_{name}_tz` (S,
 * calendar period and zone) only where set.
 */
export function limitAttrs(limits: readonly Limit[]): Item {
  const out: Item = {};
  for (const l of limits) {
    out[limitAttr(l.name, "cp")] = { N: String(l.capacity) };
    out[limitAttr(l.name, "ra")] = { N: String(l.refillAmount) };
    out[limitAttr(l.name, "rp")] = { N: String(l.refillPeriodSeconds) };
    if (l.shadow) out[limitAttr(l.name, "sh")] = { N: "1" };
    if (l.calendar) {
      out[limitAttr(l.name, "cal")] = { S: l.calendar.period };
      out[limitAttr(l.name, "tz")] = { S: l.calendar.timeZone };
    }
  }
  return out;
}

/** The config cache key of an item key. */
export function slotKey(pk: string, sk: string): string {
  return `${pk}\u0000${sk}`;
}

/** A config item (or none) as a cache slot. */
export function slotFrom(item: Item | undefined): ConfigSlot {
  const ou = item ? str(item, "on_unavailable") : null;
  return {
    limits: limitsFromItem(item),
    onUnavailable: ou === "allow" || ou === "block" ? ou : null,
    auditRetentionDays: item ? num(item, "audit_retention_days") : null,
  };
}

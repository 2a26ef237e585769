/**
 * A reader of schema 0.10 items written from the spec's layouts (docs/spec/01
 * §4, 02 §1, 05 §3.1), standing in for the Python 0.10 client (there is no
 * Python on this machine): for each record type, the attributes the
 * reference reads, with their types and the checks its models apply
 * (`Limit` numbers positive, limits discovered by `l_*_cp` / `b_*_tk`).
 * {@linkcode readItem} returns the issues of one item: a required attribute
 * missing or of the wrong type, or an attribute the 0.10 layout does not
 * have and that is not a known extension (`newAttributes`). It is checked
 * against the repository's hand-written reference items
 * (`tests/integration/_reference_items.ts`) in `tests/py010_reader_test.ts`.
 */
import type { AttributeValue } from "@aws-sdk/client-dynamodb";

type Item = Record<string, AttributeValue>;
type Kind = "S" | "N" | "BOOL" | "M" | "L" | "SS" | "NULL";

/** What one item decoded to under the 0.10 rules. */
export interface Read010 {
  /** The record type (`bucket`, `config`, `entity`, ...), or `unknown`. */
  readonly type: string;
  /** Problems a 0.10 reader would have (empty: it reads the item). */
  readonly issues: string[];
  /** Attributes outside the 0.10 layout that are known extensions. */
  readonly extensions: string[];
  /** Limits found (config: whole tokens; bucket: millitokens). */
  readonly limits: Record<string, { cp: number; ra: number; rp: number }>;
}

/** Attribute name patterns that are extensions a 0.10 reader ignores. */
export interface Extensions {
  /** Per-limit config fields (`l_{name}_{field}`). */
  readonly config: readonly string[];
  /** Per-limit bucket fields (`b_{name}_{field}`). */
  readonly bucket: readonly string[];
}

const KEYS = ["PK", "SK"];
const GSI = [
  "GSI1PK",
  "GSI1SK",
  "GSI2PK",
  "GSI2SK",
  "GSI3PK",
  "GSI3SK",
  "GSI4PK",
  "GSI4SK",
];

function kindOf(a: AttributeValue | undefined): Kind | null {
  if (!a) return null;
  for (const k of ["S", "N", "BOOL", "M", "L", "SS", "NULL"] as const) {
    if ((a as unknown as Record<string, unknown>)[k] !== undefined) return k;
  }
  return null;
}

function need(
  item: Item,
  issues: string[],
  name: string,
  ...kinds: Kind[]
): void {
  const k = kindOf(item[name]);
  if (k === null) issues.push(`missing ${name}`);
  else if (!kinds.includes(k)) issues.push(`${name} is ${k}, not ${kinds}`);
}

function optional(
  item: Item,
  issues: string[],
  name: string,
  ...kinds: Kind[]
) {
  if (item[name] !== undefined) need(item, issues, name, ...kinds);
}

function triple(n: readonly number[]): { cp: number; ra: number; rp: number } {
  const [cp = 0, ra = 0, rp = 0] = n;
  return { cp, ra, rp };
}

function wholeN(a: AttributeValue | undefined): number | null {
  const n = a && "N" in a ? a.N : undefined;
  return typeof n === "string" && /^-?\d+$/.test(n) ? Number(n) : null;
}

/** `parse_*_attr`: strip the prefix, split at the last `_`. */
function parseAttr(
  attr: string,
  prefix: string,
): { name: string; field: string } | null {
  if (!attr.startsWith(prefix)) return null;
  const rest = attr.slice(prefix.length);
  const i = rest.lastIndexOf("_");
  if (i <= 0) return null;
  return { name: rest.slice(0, i), field: rest.slice(i + 1) };
}

function typeOf(pk: string, sk: string): string {
  const rest = pk.includes("/") ? pk.slice(pk.indexOf("/") + 1) : pk;
  if (pk.startsWith("_/")) {
    if (sk === "#VERSION") return "version";
    if (sk.startsWith("#NAMESPACE#") || sk.startsWith("#NSID#")) {
      return "namespace";
    }
  }
  if (rest.startsWith("BUCKET#") && sk === "#STATE") return "bucket";
  if (rest === "SYSTEM#") {
    if (sk === "#CONFIG") return "system_config";
    if (sk === "#RESOURCES") return "resources";
    if (sk === "#ENTITY_CONFIG_RESOURCES") return "entity_config_resources";
    if (sk === "#PROVISIONER") return "provisioner";
  }
  if (rest.startsWith("RESOURCE#") && sk === "#CONFIG") {
    return "resource_config";
  }
  if (rest.startsWith("ENTITY#")) {
    if (sk === "#META") return "entity";
    if (sk.startsWith("#CONFIG#")) return "entity_config";
    if (sk.startsWith("#USAGE#")) return "usage";
  }
  if (rest.startsWith("AUDIT#") && sk.startsWith("#AUDIT#")) return "audit";
  return "unknown";
}

/** Reads one item as the 0.10 client does (see the module doc). */
export function readItem(item: Item, ext: Extensions): Read010 {
  const issues: string[] = [];
  const extensions: string[] = [];
  const limits: Read010["limits"] = {};
  const pk = item["PK"]?.S ?? "";
  const sk = item["SK"]?.S ?? "";
  const type = typeOf(pk, sk);
  const known = new Set([...KEYS, ...GSI]);
  const allow = (...names: string[]) => names.forEach((n) => known.add(n));
  const configLimits = () => {
    allow("config_version");
    need(item, issues, "config_version", "N");
    for (const attr of Object.keys(item)) {
      const p = parseAttr(attr, "l_");
      if (!p) continue;
      if (["cp", "ra", "rp"].includes(p.field)) {
        known.add(attr);
        if (p.field !== "cp") continue;
        const nums = ["cp", "ra", "rp"].map((f) =>
          wholeN(item[`l_${p.name}_${f}`]) ?? 0
        );
        // Limit(name, capacity, refill_amount, refill_period_seconds) rejects ≤ 0.
        if (nums.some((v) => v <= 0)) {
          issues.push(`limit ${p.name}: ${nums} not all positive`);
        }
        limits[p.name] = triple(nums);
      } else if (ext.config.includes(p.field)) extensions.push(attr);
    }
  };
  switch (type) {
    case "bucket": {
      allow(
        "entity_id",
        "resource",
        "rf",
        "shard_count",
        "cascade",
        "parent_id",
        "ttl",
      );
      need(item, issues, "entity_id", "S");
      need(item, issues, "resource", "S");
      need(item, issues, "rf", "N");
      optional(item, issues, "shard_count", "N");
      optional(item, issues, "cascade", "BOOL");
      optional(item, issues, "parent_id", "S");
      optional(item, issues, "ttl", "N");
      for (const attr of Object.keys(item)) {
        const p = parseAttr(attr, "b_");
        if (!p) continue;
        if (["tk", "cp", "ra", "rp", "tc"].includes(p.field)) {
          known.add(attr);
          if (wholeN(item[attr]) === null) issues.push(`${attr} not a whole N`);
          if (p.field !== "tk") continue;
          const nums = ["cp", "ra", "rp"].map((f) =>
            wholeN(item[`b_${p.name}_${f}`]) ?? 0
          );
          // The refill divides by rp and by ra (Retry-After): both must be > 0.
          if (nums.some((v) => v <= 0)) {
            issues.push(`bucket limit ${p.name}: ${nums} not all positive`);
          }
          limits[p.name] = triple(nums);
        } else if (ext.bucket.includes(p.field)) {
          extensions.push(attr);
          if (wholeN(item[attr]) === null) issues.push(`${attr} not a whole N`);
        }
      }
      break;
    }
    case "system_config":
      allow("on_unavailable", "audit_retention_days");
      optional(item, issues, "on_unavailable", "S");
      optional(item, issues, "audit_retention_days", "N");
      configLimits();
      break;
    case "resource_config":
      allow("resource");
      need(item, issues, "resource", "S");
      configLimits();
      break;
    case "entity_config":
      allow("entity_id", "resource");
      need(item, issues, "entity_id", "S");
      need(item, issues, "resource", "S");
      configLimits();
      break;
    case "entity":
      allow(
        "entity_id",
        "name",
        "parent_id",
        "cascade",
        "metadata",
        "created_at",
      );
      need(item, issues, "entity_id", "S");
      need(item, issues, "name", "S");
      need(item, issues, "parent_id", "S", "NULL");
      optional(item, issues, "cascade", "BOOL");
      need(item, issues, "metadata", "M");
      need(item, issues, "created_at", "S");
      break;
    case "audit":
      allow(
        "event_id",
        "entity_id",
        "timestamp",
        "action",
        "principal",
        "resource",
        "details",
        "ttl",
      );
      for (const n of ["event_id", "entity_id", "timestamp", "action"]) {
        need(item, issues, n, "S");
      }
      need(item, issues, "principal", "S", "NULL");
      need(item, issues, "resource", "S", "NULL");
      need(item, issues, "details", "M");
      need(item, issues, "ttl", "N");
      break;
    case "resources":
      allow("resources");
      need(item, issues, "resources", "SS");
      break;
    case "entity_config_resources":
      for (const [k, v] of Object.entries(item)) {
        if (known.has(k)) continue;
        known.add(k);
        if (kindOf(v) !== "N") issues.push(`${k} not N`);
      }
      break;
    case "version":
      allow(
        "schema_version",
        "client_min_version",
        "lambda_version",
        "updated_at",
        "updated_by",
      );
      need(item, issues, "schema_version", "S");
      break;
    case "namespace":
      allow(
        "namespace_id",
        "namespace_name",
        "status",
        "created_at",
        "deleted_at",
      );
      need(item, issues, "namespace_id", "S");
      need(item, issues, "namespace_name", "S");
      need(item, issues, "status", "S");
      break;
    case "provisioner":
      allow(
        "managed_system",
        "managed_resources",
        "managed_entities",
        "last_applied",
        "applied_hash",
      );
      break;
    case "usage":
      // Every numeric attribute but the fixed ones is a counter (01 §4.8).
      allow(
        "entity_id",
        "resource",
        "window",
        "window_start",
        "total_events",
        "ttl",
      );
      for (const [k, v] of Object.entries(item)) {
        if (!known.has(k) && kindOf(v) === "N") known.add(k);
      }
      break;
    default:
      issues.push(`not a 0.10 record: ${pk} ${sk}`);
  }
  for (const attr of Object.keys(item)) {
    if (!known.has(attr) && !extensions.includes(attr)) {
      issues.push(`attribute ${attr} is not in the 0.10 layout of ${type}`);
    }
  }
  return { type, issues, extensions, limits };
}

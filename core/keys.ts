/**
 * Key builders and parsers for the stored format of schema 0.10 (spec 01 §3).
 *
 * Every partition key and GSI1-3 hash key is `{namespaceId}/{remainder}`;
 * `GSI4PK` is the bare namespace id; sort keys are not prefixed. Builders
 * are used by writers. Two kinds of parser exist: strict ones that throw
 * (for our own, current-format keys) and `safe*` ones that never throw and
 * tell a pre-0.10 unprefixed key apart (for stream consumers and migrations).
 *
 * @example Round trip of a bucket key whose resource contains "/"
 * ```ts
 * import assert from "node:assert/strict";
 * import { pkBucket, parseBucketPk } from "./keys.ts";
 *
 * const pk = pkBucket("a7x3kq_9Qw1", "user-1", "openai/gpt-4", 0);
 * assert.equal(pk, "a7x3kq_9Qw1/BUCKET#user-1#openai/gpt-4#0");
 * assert.deepEqual(parseBucketPk(pk), {
 *   namespaceId: "a7x3kq_9Qw1", entityId: "user-1", resource: "openai/gpt-4", shard: 0,
 * });
 * ```
 *
 * @module
 */

/** The namespace holding table-wide records (version, namespace registry, worker leases). */
export const RESERVED_NAMESPACE = "_";
/** The namespace every table has. */
export const DEFAULT_NAMESPACE = "default";
/** The entity-level "all resources" config resource. */
export const DEFAULT_RESOURCE = "_default_";

/** Prefixes of partition-key remainders. */
export const PREFIX = {
  ENTITY: "ENTITY#",
  SYSTEM: "SYSTEM#",
  RESOURCE: "RESOURCE#",
  AUDIT: "AUDIT#",
  BUCKET: "BUCKET#",
  PARENT: "PARENT#",
  CHILD: "CHILD#",
  ENTITY_CONFIG: "ENTITY_CONFIG#",
} as const;

/** Sort keys. */
export const SK = {
  META: "#META",
  STATE: "#STATE",
  CONFIG: "#CONFIG",
  VERSION: "#VERSION",
  RESOURCES: "#RESOURCES",
  ENTITY_CONFIG_RESOURCES: "#ENTITY_CONFIG_RESOURCES",
  AUDIT: "#AUDIT#",
  USAGE: "#USAGE#",
  NAMESPACE: "#NAMESPACE#",
  NSID: "#NSID#",
  PROVISIONER: "#PROVISIONER",
} as const;

/** `{ns}/ENTITY#{id}` */
export function pkEntity(ns: string, entityId: string): string {
  return `${ns}/ENTITY#${entityId}`;
}
/** `{ns}/SYSTEM#` */
export function pkSystem(ns: string): string {
  return `${ns}/SYSTEM#`;
}
/** `{ns}/RESOURCE#{r}` */
export function pkResource(ns: string, resource: string): string {
  return `${ns}/RESOURCE#${resource}`;
}
/** `{ns}/AUDIT#{id}` */
export function pkAudit(ns: string, entityId: string): string {
  return `${ns}/AUDIT#${entityId}`;
}
/** `{ns}/BUCKET#{id}#{r}#{shard}` */
export function pkBucket(
  ns: string,
  entityId: string,
  resource: string,
  shard: number,
): string {
  return `${ns}/BUCKET#${entityId}#${resource}#${shard}`;
}
/** `#CONFIG` or `#CONFIG#{r}` */
export function skConfig(resource?: string): string {
  return resource === undefined ? SK.CONFIG : `${SK.CONFIG}#${resource}`;
}
/** `#AUDIT#{eventId}` */
export function skAudit(eventId: string): string {
  return `${SK.AUDIT}${eventId}`;
}
/** `#USAGE#{r}#{windowKey}` */
export function skUsage(resource: string, windowKey: string): string {
  return `${SK.USAGE}${resource}#${windowKey}`;
}
/**
 * `#USAGE#{r}#{windowKey}#{window}`: the snapshot item of a window whose
 * key is also a coarser window's (hour 00 is its day's key, day 1 its
 * month's), which keeps the shared `#USAGE#{r}#{windowKey}` item.
 */
export function skUsageWindow(
  resource: string,
  windowKey: string,
  window: string,
): string {
  return `${SK.USAGE}${resource}#${windowKey}#${window}`;
}
/** `#NAMESPACE#{name}` */
export function skNamespace(name: string): string {
  return `${SK.NAMESPACE}${name}`;
}
/** `#NSID#{id}` */
export function skNsid(namespaceId: string): string {
  return `${SK.NSID}${namespaceId}`;
}
/** `{ns}/PARENT#{parent}` */
export function gsi1PkParent(ns: string, parentId: string): string {
  return `${ns}/PARENT#${parentId}`;
}
/** `CHILD#{id}` */
export function gsi1SkChild(entityId: string): string {
  return `CHILD#${entityId}`;
}
/** `{ns}/RESOURCE#{r}` */
export function gsi2PkResource(ns: string, resource: string): string {
  return `${ns}/RESOURCE#${resource}`;
}
/** `BUCKET#{id}#{shard}` */
export function gsi2SkBucket(entityId: string, shard = 0): string {
  return `BUCKET#${entityId}#${shard}`;
}
/** `USAGE#{windowKey}#{id}` */
export function gsi2SkUsage(windowKey: string, entityId: string): string {
  return `USAGE#${windowKey}#${entityId}`;
}
/** `{ns}/ENTITY_CONFIG#{r}` */
export function gsi3PkEntityConfig(ns: string, resource: string): string {
  return `${ns}/ENTITY_CONFIG#${resource}`;
}
/** `{ns}/ENTITY#{id}` */
export function gsi3PkEntity(ns: string, entityId: string): string {
  return `${ns}/ENTITY#${entityId}`;
}
/** `BUCKET#{r}#{shard}` */
export function gsi3SkBucket(resource: string, shard: number): string {
  return `BUCKET#${resource}#${shard}`;
}
/** `BUCKET#{id}#{r}#{shard}` (no namespace prefix) */
export function gsi4SkBucket(
  entityId: string,
  resource: string,
  shard: number,
): string {
  return `BUCKET#${entityId}#${resource}#${shard}`;
}
/** Bucket attribute names per limit name, built once (the warm path builds a write per acquire). */
const BUCKET_ATTRS = new Map<string, Partial<Record<BucketField, string>>>();

/** `b_{limit}_{field}` */
export function bucketAttr(limitName: string, field: BucketField): string {
  let names = BUCKET_ATTRS.get(limitName);
  if (names === undefined) {
    // Limit names are few; a process that makes up many is capped, not cached.
    names = {};
    if (BUCKET_ATTRS.size < 10_000) BUCKET_ATTRS.set(limitName, names);
  }
  return names[field] ??= `b_${limitName}_${field}`;
}
/** `l_{limit}_{field}` */
export function limitAttr(limitName: string, field: LimitField): string {
  return `l_${limitName}_${field}`;
}

/**
 * Per-limit bucket attribute suffixes: the five of schema 0.10, plus the
 * calendar quota's window start and end (`ws`, `we`, epoch ms; new, the
 * Python client ignores them).
 */
export type BucketField = "tk" | "cp" | "ra" | "rp" | "tc" | "ws" | "we";
/**
 * Per-limit config attribute suffixes: the three of schema 0.10, plus
 * shadow mode (`sh`, N 1) and the calendar period and zone (`cal`, `tz`,
 * S; new, the Python client ignores them).
 */
export type LimitField = "cp" | "ra" | "rp" | "sh" | "cal" | "tz";

/** Splits `b_{limit}_{field}` at the last `_`; `null` when it is not one. */
export function parseBucketAttr(
  attr: string,
): { limitName: string; field: string } | null {
  return parsePrefixedAttr(attr, "b_");
}
/** Splits `l_{limit}_{field}` at the last `_`; `null` when it is not one. */
export function parseLimitAttr(
  attr: string,
): { limitName: string; field: string } | null {
  return parsePrefixedAttr(attr, "l_");
}
function parsePrefixedAttr(
  attr: string,
  prefix: string,
): { limitName: string; field: string } | null {
  if (!attr.startsWith(prefix)) return null;
  const rest = attr.slice(prefix.length);
  const i = rest.lastIndexOf("_");
  if (i <= 0) return null;
  return { limitName: rest.slice(0, i), field: rest.slice(i + 1) };
}

/** A key split into namespace id and remainder. */
export interface NamespacedKey {
  /** The namespace id (`_` for table-wide records). */
  readonly namespaceId: string;
  /** Everything after the first `/`. */
  readonly rest: string;
}

/** Why {@linkcode safeParseNamespace} could not split a key. */
export type KeyIssue =
  | "empty"
  /** No `/`, or a `#` before the first `/`: a pre-0.10 key such as `ENTITY#u1` or `RESOURCE#openai/gpt-4`. */
  | "unprefixed"
  /** The text before `/` is not a possible namespace id. */
  | "bad_namespace"
  | "not_a_bucket"
  | "bad_shard";

/** Result of a tolerant parse: never throws. */
export type ParseResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly issue: KeyIssue; readonly key: string };

const NAMESPACE_ID = /^[A-Za-z0-9_-]+$/;

/**
 * Whether a key is a pre-0.10 unprefixed key: no `/`, or the first `#`
 * comes before the first `/` (the migration's rule; it keeps
 * `RESOURCE#openai/gpt-4` unprefixed).
 */
export function isUnprefixedKey(key: string): boolean {
  const slash = key.indexOf("/");
  if (slash < 0) return true;
  const hash = key.indexOf("#");
  return hash >= 0 && hash < slash;
}

/** Splits a key at the first `/`, without throwing. */
export function safeParseNamespace(key: string): ParseResult<NamespacedKey> {
  if (key.length === 0) return { ok: false, issue: "empty", key };
  if (isUnprefixedKey(key)) return { ok: false, issue: "unprefixed", key };
  const slash = key.indexOf("/");
  const namespaceId = key.slice(0, slash);
  if (!NAMESPACE_ID.test(namespaceId)) {
    return { ok: false, issue: "bad_namespace", key };
  }
  return { ok: true, value: { namespaceId, rest: key.slice(slash + 1) } };
}

/** Thrown by the strict parsers. */
export class KeyParseError extends SyntaxError {
  /** The key. */
  readonly key: string;
  /** What is wrong with it. */
  readonly issue: KeyIssue;
  /** Creates the error. */
  constructor(key: string, issue: KeyIssue) {
    super(`Cannot parse key "${key}": ${issue.replaceAll("_", " ")}`);
    this.name = "KeyParseError";
    this.key = key;
    this.issue = issue;
  }
}

/**
 * Splits a namespaced key at the first `/`.
 *
 * @throws {KeyParseError} for an empty, unprefixed (pre-0.10) or malformed key
 */
export function parseNamespace(key: string): NamespacedKey {
  const r = safeParseNamespace(key);
  if (!r.ok) throw new KeyParseError(key, r.issue);
  return r.value;
}

/** The parts of a bucket partition key. */
export interface BucketKey {
  /** Namespace id. */
  readonly namespaceId: string;
  /** Entity id. */
  readonly entityId: string;
  /** Resource (may contain `/`). */
  readonly resource: string;
  /** Shard number. */
  readonly shard: number;
}

/** Parses `{ns}/BUCKET#{id}#{r}#{shard}` without throwing. */
export function safeParseBucketPk(pk: string): ParseResult<BucketKey> {
  const ns = safeParseNamespace(pk);
  if (!ns.ok) return ns;
  const rest = ns.value.rest;
  if (!rest.startsWith(PREFIX.BUCKET)) {
    return { ok: false, issue: "not_a_bucket", key: pk };
  }
  const body = rest.slice(PREFIX.BUCKET.length);
  const last = body.lastIndexOf("#");
  if (last < 0) return { ok: false, issue: "not_a_bucket", key: pk };
  const shardText = body.slice(last + 1);
  if (!/^\d+$/.test(shardText)) {
    return { ok: false, issue: "bad_shard", key: pk };
  }
  const er = body.slice(0, last);
  const first = er.indexOf("#");
  if (first <= 0 || first === er.length - 1) {
    return { ok: false, issue: "not_a_bucket", key: pk };
  }
  return {
    ok: true,
    value: {
      namespaceId: ns.value.namespaceId,
      entityId: er.slice(0, first),
      resource: er.slice(first + 1),
      shard: Number(shardText),
    },
  };
}

/**
 * Parses `{ns}/BUCKET#{id}#{r}#{shard}`.
 *
 * @throws {KeyParseError} when it is not a current-format bucket key
 */
export function parseBucketPk(pk: string): BucketKey {
  const r = safeParseBucketPk(pk);
  if (!r.ok) throw new KeyParseError(pk, r.issue);
  return r.value;
}

/** Adds the namespace prefix to an unprefixed key (used by the namespace-keys migration). */
export function prefixKey(namespaceId: string, key: string): string {
  return `${namespaceId}/${key}`;
}

/**
 * Items exactly as the Python reference stores them (spec 01 §4, legacy
 * layouts §5), written out by hand from the spec rather than built by the
 * migration's own code, so a test can compare what the migration produces
 * with what the reference itself would store at 0.10:
 *
 * * {@linkcode referenceLegacyItems}: a 0.9 table (unprefixed keys, no GSI4
 *   attributes, version at `SYSTEM#`, 0.9 buckets, one orphaned pre-0.9
 *   bucket, one item of each record type the reference writes).
 * * {@linkcode referenceV010Items}: the same data as the reference stores it
 *   at 0.10 under namespace id `ns` (version record excluded: its
 *   `updated_at`/`updated_by` depend on who wrote it).
 */
import type { AttributeValue } from "@aws-sdk/client-dynamodb";

type Item = Record<string, AttributeValue>;
const s = (v: string): AttributeValue => ({ S: v });
const n = (v: number): AttributeValue => ({ N: String(v) });

const R = "openai/gpt-4";
const WINDOW = "2026-01-15T11:00:00Z";
const EVENT = "01JHF3Z6Q0S8W6X1Y2Z3A4B5C6";

/** The data of every record, keyed by a short name, without keys. */
function records(): Record<string, Item> {
  return {
    systemConfig: {
      "config_version": n(1),
      "on_unavailable": s("allow"),
      "audit_retention_days": n(30),
      "l_rpm_cp": n(100),
      "l_rpm_ra": n(100),
      "l_rpm_rp": n(60),
    },
    resourceConfig: {
      resource: s(R),
      "config_version": n(1),
      "l_tpm_cp": n(50_000),
      "l_tpm_ra": n(40_000),
      "l_tpm_rp": n(60),
    },
    resources: { resources: { SS: [R] } },
    entityConfigResources: { [R]: n(1) },
    provisioner: {
      "managed_system": { BOOL: true },
      "managed_resources": { L: [s(R)] },
      "managed_entities": { M: { "user-1": { L: [s(R)] } } },
      "last_applied": s("2025-12-01T00:00:00Z"),
      "applied_hash": s("sha256:00"),
    },
    parentMeta: {
      "entity_id": s("org-1"),
      name: s("Org One"),
      "parent_id": { NULL: true },
      cascade: { BOOL: false },
      metadata: { M: {} },
      "created_at": s("2025-11-30T09:00:00Z"),
    },
    childMeta: {
      "entity_id": s("user-1"),
      name: s("user-1"),
      "parent_id": s("org-1"),
      cascade: { BOOL: true },
      metadata: { M: { tier: s("pro") } },
      "created_at": s("2025-11-30T09:05:00Z"),
    },
    entityConfig: {
      "entity_id": s("user-1"),
      resource: s(R),
      "config_version": n(1),
      "l_rpm_cp": n(600),
      "l_rpm_ra": n(600),
      "l_rpm_rp": n(60),
    },
    bucket: {
      "entity_id": s("user-1"),
      resource: s(R),
      rf: n(1_768_474_800_000),
      "shard_count": n(1),
      cascade: { BOOL: true },
      "parent_id": s("org-1"),
      "b_rpm_tk": n(512_000),
      "b_rpm_cp": n(600_000),
      "b_rpm_ra": n(600_000),
      "b_rpm_rp": n(60_000),
      "b_rpm_tc": n(88_000),
      "b_wcu_tk": n(1_000_000),
      "b_wcu_cp": n(1_000_000),
      "b_wcu_ra": n(1_000_000),
      "b_wcu_rp": n(1000),
      "b_wcu_tc": n(0),
    },
    audit: {
      "event_id": s(EVENT),
      "entity_id": s("user-1"),
      timestamp: s("2025-11-30T09:05:00Z"),
      action: s("limits_set"),
      principal: s("admin@example.com"),
      resource: s(R),
      details: { M: { limits: { L: [s("rpm")] } } },
      ttl: n(1_772_442_300),
    },
    usage: {
      "entity_id": s("user-1"),
      resource: s(R),
      window: s("hourly"),
      "window_start": s(WINDOW),
      rpm: n(88),
      "total_events": n(88),
      ttl: n(1_776_250_800),
    },
  };
}

/** A 0.9 table as the reference leaves it (spec 01 §5). */
export function referenceLegacyItems(): Item[] {
  const r = records();
  return [
    {
      PK: s("SYSTEM#"),
      SK: s("#VERSION"),
      "schema_version": s("0.9.0"),
      "client_min_version": s("0.0.0"),
      "lambda_version": s("0.9.0"),
      "updated_at": s("2025-12-01T00:00:00Z"),
      "updated_by": s("cli:0.9.0"),
    },
    { PK: s("SYSTEM#"), SK: s("#CONFIG"), ...r.systemConfig },
    { PK: s(`RESOURCE#${R}`), SK: s("#CONFIG"), ...r.resourceConfig },
    { PK: s("SYSTEM#"), SK: s("#RESOURCES"), ...r.resources },
    {
      PK: s("SYSTEM#"),
      SK: s("#ENTITY_CONFIG_RESOURCES"),
      ...r.entityConfigResources,
    },
    { PK: s("SYSTEM#"), SK: s("#PROVISIONER"), ...r.provisioner },
    { PK: s("ENTITY#org-1"), SK: s("#META"), ...r.parentMeta },
    {
      PK: s("ENTITY#user-1"),
      SK: s("#META"),
      ...r.childMeta,
      GSI1PK: s("PARENT#org-1"),
      GSI1SK: s("CHILD#user-1"),
    },
    {
      PK: s("ENTITY#user-1"),
      SK: s(`#CONFIG#${R}`),
      ...r.entityConfig,
      GSI3PK: s(`ENTITY_CONFIG#${R}`),
      GSI3SK: s("user-1"),
    },
    {
      PK: s(`BUCKET#user-1#${R}#0`),
      SK: s("#STATE"),
      ...r.bucket,
      GSI2PK: s(`RESOURCE#${R}`),
      GSI2SK: s("BUCKET#user-1#0"),
      GSI3PK: s("ENTITY#user-1"),
      GSI3SK: s(`BUCKET#${R}#0`),
    },
    {
      PK: s("AUDIT#user-1"),
      SK: s(`#AUDIT#${EVENT}`),
      ...r.audit,
    },
    {
      PK: s("ENTITY#user-1"),
      SK: s(`#USAGE#${R}#${WINDOW}`),
      ...r.usage,
      GSI2PK: s(`RESOURCE#${R}`),
      GSI2SK: s(`USAGE#${WINDOW}#user-1`),
    },
    // Pre-0.9 bucket: no client reads it since 0.9 (orphaned).
    {
      PK: s("ENTITY#user-1"),
      SK: s(`#BUCKET#${R}`),
      "entity_id": s("user-1"),
      resource: s(R),
      rf: n(1_700_000_000_000),
      "b_rpm_tk": n(1000),
      "b_rpm_cp": n(600_000),
      "b_rpm_ra": n(600_000),
      "b_rpm_rp": n(60_000),
    },
  ];
}

/** The same data as the reference stores it at 0.10 under namespace id `ns` (spec 01 §4). */
export function referenceV010Items(ns: string): Item[] {
  const r = records();
  const sys = `${ns}/SYSTEM#`;
  return [
    {
      PK: s(sys),
      SK: s("#CONFIG"),
      ...r.systemConfig,
      GSI4PK: s(ns),
      GSI4SK: s(sys),
    },
    {
      PK: s(`${ns}/RESOURCE#${R}`),
      SK: s("#CONFIG"),
      ...r.resourceConfig,
      GSI4PK: s(ns),
      GSI4SK: s(`${ns}/RESOURCE#${R}`),
    },
    {
      PK: s(sys),
      SK: s("#RESOURCES"),
      ...r.resources,
      GSI4PK: s(ns),
      GSI4SK: s(sys),
    },
    {
      PK: s(sys),
      SK: s("#ENTITY_CONFIG_RESOURCES"),
      ...r.entityConfigResources,
      GSI4PK: s(ns),
      GSI4SK: s(sys),
    },
    // The reference writes GSI4PK only here (so purge misses it: spec 00
    // weakness 23); the migration's copy also carries GSI4SK (README).
    {
      PK: s(sys),
      SK: s("#PROVISIONER"),
      ...r.provisioner,
      GSI4PK: s(ns),
    },
    {
      PK: s(`${ns}/ENTITY#org-1`),
      SK: s("#META"),
      ...r.parentMeta,
      GSI4PK: s(ns),
      GSI4SK: s(`${ns}/ENTITY#org-1`),
    },
    {
      PK: s(`${ns}/ENTITY#user-1`),
      SK: s("#META"),
      ...r.childMeta,
      GSI1PK: s(`${ns}/PARENT#org-1`),
      GSI1SK: s("CHILD#user-1"),
      GSI4PK: s(ns),
      GSI4SK: s(`${ns}/ENTITY#user-1`),
    },
    {
      PK: s(`${ns}/ENTITY#user-1`),
      SK: s(`#CONFIG#${R}`),
      ...r.entityConfig,
      GSI3PK: s(`${ns}/ENTITY_CONFIG#${R}`),
      GSI3SK: s("user-1"),
      GSI4PK: s(ns),
      GSI4SK: s(`${ns}/ENTITY#user-1`),
    },
    {
      PK: s(`${ns}/BUCKET#user-1#${R}#0`),
      SK: s("#STATE"),
      ...r.bucket,
      GSI2PK: s(`${ns}/RESOURCE#${R}`),
      GSI2SK: s("BUCKET#user-1#0"),
      GSI3PK: s(`${ns}/ENTITY#user-1`),
      GSI3SK: s(`BUCKET#${R}#0`),
      GSI4PK: s(ns),
      GSI4SK: s(`BUCKET#user-1#${R}#0`),
    },
    {
      PK: s(`${ns}/AUDIT#user-1`),
      SK: s(`#AUDIT#${EVENT}`),
      ...r.audit,
      GSI4PK: s(ns),
      GSI4SK: s(`${ns}/AUDIT#user-1`),
    },
    {
      PK: s(`${ns}/ENTITY#user-1`),
      SK: s(`#USAGE#${R}#${WINDOW}`),
      ...r.usage,
      GSI2PK: s(`${ns}/RESOURCE#${R}`),
      GSI2SK: s(`USAGE#${WINDOW}#user-1`),
      GSI4PK: s(ns),
      GSI4SK: s(`${ns}/ENTITY#user-1`),
    },
  ];
}

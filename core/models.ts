/**
 * Plain data models shared by the repository and the limiter.
 *
 * @module
 */
import type { Limit } from "./limit.ts";

/** Result of checking one limit. */
export interface LimitStatus {
  /** Entity checked. */
  readonly entityId: string;
  /** Resource checked. */
  readonly resource: string;
  /** Limit name. */
  readonly limitName: string;
  /** The limit as configured. */
  readonly limit: Limit;
  /** Whole tokens available now (may be negative when in debt). */
  readonly available: number;
  /** Whole tokens requested. */
  readonly requested: number;
  /** Whether this limit refused. */
  readonly exceeded: boolean;
  /** Seconds until the request would fit (0 when it fits now). */
  readonly retryAfterSeconds: number;
}

/** An entity (API key, user, project…) with an optional parent. */
export interface Entity {
  /** Entity id. */
  readonly id: string;
  /** Display name (defaults to the id). */
  readonly name: string;
  /** Parent entity id, or `null`. */
  readonly parentId: string | null;
  /** Whether acquires also consume from the parent. */
  readonly cascade: boolean;
  /** Free-form string metadata. */
  readonly metadata: Readonly<Record<string, string>>;
  /** `YYYY-MM-DDTHH:MM:SSZ`, or `null`. */
  readonly createdAt: string | null;
}

/** Where a resolved limit set came from. */
export type ConfigSource =
  | "override"
  | "entity"
  | "entity_default"
  | "resource"
  | "system";

/** Behaviour when DynamoDB fails: admit (`allow`) or refuse (`block`). */
export type OnUnavailable = "allow" | "block";

/** Audit actions. */
export const AuditAction = {
  ENTITY_CREATED: "entity_created",
  ENTITY_DELETED: "entity_deleted",
  LIMITS_SET: "limits_set",
  LIMITS_DELETED: "limits_deleted",
} as const;

/** One of {@linkcode AuditAction}'s values. */
export type AuditActionName = typeof AuditAction[keyof typeof AuditAction];

/** A stored audit event. */
export interface AuditEvent {
  /** ULID, monotonic per process. */
  readonly eventId: string;
  /** `YYYY-MM-DDTHH:MM:SSZ`. */
  readonly timestamp: string;
  /** What happened. */
  readonly action: AuditActionName;
  /** Entity id, `$SYSTEM`, or `$RESOURCE:{resource}`. */
  readonly entityId: string;
  /** Who did it, or `null`. */
  readonly principal: string | null;
  /** Resource concerned, or `null`. */
  readonly resource: string | null;
  /** Action details. */
  readonly details: Readonly<Record<string, unknown>>;
}

/** A registered namespace. */
export interface NamespaceInfo {
  /** Human-readable name. */
  readonly name: string;
  /** Opaque id used as key prefix. */
  readonly namespaceId: string;
  /** `active`, `deleted` or `purging`. */
  readonly status: string;
  /** `YYYY-MM-DDTHH:MM:SSZ`. */
  readonly createdAt: string | null;
  /** Set while deleted. */
  readonly deletedAt?: string | null;
}

/** Config cache counters. */
export interface CacheStats {
  /** Slots found fresh. */
  readonly hits: number;
  /** Slots fetched. */
  readonly misses: number;
  /** Entries held. */
  readonly size: number;
  /** Time to live in seconds (0 = disabled). */
  readonly ttlSeconds: number;
}

/** Which usage snapshots {@linkcode Repository.getUsageSnapshots} reads. */
export interface UsageSnapshotFilter {
  /** Entity (reads its partition); give this or `resource`. */
  readonly entityId?: string;
  /** Resource (with `entityId`: narrows it; alone: reads GSI2). */
  readonly resource?: string;
  /** `hourly`, `daily` or `monthly`. */
  readonly windowType?: string;
  /** First window start (inclusive), `YYYY-MM-DDTHH:MM:SSZ`. */
  readonly start?: string;
  /** Last window start (inclusive). */
  readonly end?: string;
  /** At most this many snapshots; `more` tells whether others match. */
  readonly limit?: number;
  /** Strongly consistent read (entity reads only; GSI2 is always eventual). @default false */
  readonly consistent?: boolean;
}

/** A usage snapshot written by the aggregator (spec 01 §4.8). */
export interface UsageSnapshot {
  /** Entity. */
  readonly entityId: string;
  /** Resource. */
  readonly resource: string;
  /** `hourly`, `daily` or `monthly`. */
  readonly windowType: string;
  /** Window start `YYYY-MM-DDTHH:MM:SSZ`. */
  readonly windowStart: string;
  /** Window end (last second). */
  readonly windowEnd: string;
  /** Tokens consumed per limit in the window. */
  readonly counters: Readonly<Record<string, number>>;
  /** Acquire events in the window. */
  readonly totalEvents: number;
}

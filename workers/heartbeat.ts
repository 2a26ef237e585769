/**
 * Worker heartbeats: each running worker keeps one item (reserved
 * namespace, next to its leases) with its version, workloads and leases
 * held, so `zae-limiter version` / `check` can tell which worker versions
 * run against a table.
 *
 * | attribute | value |
 * |-----------|-------|
 * | `PK` / `SK` | `_/STREAM#{consumer}#WORKERS` / `#WORKER#{workerId}` |
 * | `version`, `schema_version`, `workloads` (list), `host` | the worker |
 * | `started_at`, `updated_at` | ISO times |
 * | `updated_at_ms` | epoch ms of the last beat |
 * | `leases_held` | N |
 * | `draining` | BOOL, true once shutdown began |
 * | `ttl` | last beat + 15 min (readers judge freshness by `updated_at_ms`) |
 *
 * A worker that died without removing its row (SIGKILL, lost host) is
 * listed as stale for 15 minutes, then no more: readers skip rows whose
 * `ttl` has passed (DynamoDB deletes them late, DynamoDB Local never), and
 * running workers delete such rows ({@linkcode removeExpiredHeartbeats}).
 * @module
 */
import {
  type AttributeValue,
  DeleteItemCommand,
  PutItemCommand,
  type QueryCommand,
} from "@aws-sdk/client-dynamodb";
import { queryAllItems } from "../core/store/table.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { COORDINATION_PK_PREFIX } from "./coordination_store.ts";

/** Consumer name of the zae-limiter workers (leases, heartbeats, dead letters). */
export const WORKER_CONSUMER_NAME = "zae-workers";
/** A heartbeat older than this is reported as stale. */
export const HEARTBEAT_STALE_MS = 60_000;
/** A heartbeat older than this is forgotten (its `ttl`). */
export const HEARTBEAT_EXPIRY_MS = 15 * 60_000;

/** The part of `DynamoDBClient` heartbeats use. */
export interface HeartbeatClient {
  /** Sends one command. */
  send(
    command: PutItemCommand | DeleteItemCommand | QueryCommand,
    options?: { abortSignal?: AbortSignal },
  ): Promise<unknown>;
}

/** A worker as seen in its heartbeat. */
export interface WorkerHeartbeat {
  /** Worker id. */
  readonly workerId: string;
  /** Package version of the worker. */
  readonly version: string;
  /** Schema version the worker was built for. */
  readonly schemaVersion: string;
  /** Workloads it runs. */
  readonly workloads: readonly string[];
  /** Host name. */
  readonly host: string;
  /** ISO start time. */
  readonly startedAt: string;
  /** ISO time of the last beat. */
  readonly updatedAt: string;
  /** Epoch ms of the last beat. */
  readonly updatedAtMs: number;
  /** Leases held at the last beat. */
  readonly leasesHeld: number;
  /** Whether it is shutting down. */
  readonly draining: boolean;
  /** Epoch seconds after which the row is forgotten. */
  readonly ttl: number;
}

/** The partition key of the heartbeats. */
export function heartbeatPartitionKey(
  consumer: string = WORKER_CONSUMER_NAME,
): string {
  return `${COORDINATION_PK_PREFIX}${consumer}#WORKERS`;
}

/** Options of {@linkcode createHeartbeat}. */
export interface HeartbeatOptions {
  /** The table. */
  readonly tableName: string;
  /** This worker. */
  readonly workerId: string;
  /** Package version. */
  readonly version: string;
  /** Schema version. */
  readonly schemaVersion: string;
  /** Workloads run. */
  readonly workloads: readonly string[];
  /** Host name. @default "" */
  readonly host?: string;
  /** Consumer. @default WORKER_CONSUMER_NAME */
  readonly consumerName?: string;
  /** Clock. */
  readonly clock?: Clock;
}

/** Writes and removes this worker's heartbeat. */
export interface Heartbeat {
  /** Writes the heartbeat (the whole item: idempotent). */
  beat(
    state: { leasesHeld: number; draining: boolean },
    signal?: AbortSignal,
  ): Promise<void>;
  /** Removes the heartbeat (graceful shutdown). */
  remove(signal?: AbortSignal): Promise<void>;
}

/** Creates the heartbeat writer of one worker. */
export function createHeartbeat(
  client: HeartbeatClient,
  options: HeartbeatOptions,
): Heartbeat {
  const clock = options.clock ?? systemClock;
  const key = {
    PK: { S: heartbeatPartitionKey(options.consumerName) },
    SK: { S: `#WORKER#${options.workerId}` },
  };
  const startedAt = new Date(clock.now()).toISOString();
  // A beat still in flight when the worker stops would land after the
  // delete and leave a live-looking row: remove() waits for it, and no beat
  // is written after remove() began.
  let inFlight: Promise<unknown> = Promise.resolve();
  let removed = false;
  return {
    async beat(state, signal) {
      if (removed) return;
      const now = clock.now();
      const put = client.send(
        new PutItemCommand({
          TableName: options.tableName,
          Item: {
            ...key,
            "worker_id": { S: options.workerId },
            version: { S: options.version },
            "schema_version": { S: options.schemaVersion },
            workloads: { L: options.workloads.map((w) => ({ S: w })) },
            host: { S: options.host ?? "" },
            "started_at": { S: startedAt },
            "updated_at": { S: new Date(now).toISOString() },
            "updated_at_ms": { N: String(now) },
            "leases_held": { N: String(state.leasesHeld) },
            draining: { BOOL: state.draining },
            ttl: {
              N: String(Math.floor((now + HEARTBEAT_EXPIRY_MS) / 1000)),
            },
          },
        }),
        signal ? { abortSignal: signal } : {},
      );
      inFlight = put.catch(() => {});
      await put;
    },
    async remove(signal) {
      removed = true;
      await inFlight;
      await client.send(
        new DeleteItemCommand({ TableName: options.tableName, Key: key }),
        signal ? { abortSignal: signal } : {},
      );
    },
  };
}

function fromItem(item: Record<string, AttributeValue>): WorkerHeartbeat {
  const text = (k: string): string => item[k]?.S ?? "";
  return {
    workerId: text("worker_id"),
    version: text("version"),
    schemaVersion: text("schema_version"),
    workloads: (item["workloads"]?.L ?? []).map((a) => a.S ?? ""),
    host: text("host"),
    startedAt: text("started_at"),
    updatedAt: text("updated_at"),
    updatedAtMs: Number(item["updated_at_ms"]?.N ?? "0"),
    leasesHeld: Number(item["leases_held"]?.N ?? "0"),
    draining: item["draining"]?.BOOL ?? false,
    ttl: Number(item["ttl"]?.N ?? "0"),
  };
}

/** Whether a heartbeat row is past its `ttl` (forgotten, whether or not DynamoDB deleted it yet). */
export function isExpired(hb: WorkerHeartbeat, nowMs: number): boolean {
  return hb.ttl > 0 && hb.ttl * 1000 <= nowMs;
}

/**
 * Reads the heartbeats, fresh and stale, sorted by worker id; rows past
 * their `ttl` only with `includeExpired`.
 */
export async function readHeartbeats(
  client: HeartbeatClient,
  tableName: string,
  options: {
    consumerName?: string;
    signal?: AbortSignal;
    /** Also rows past their `ttl`. @default false */
    includeExpired?: boolean;
    /** Epoch ms that `ttl` is compared with. @default Date.now() */
    nowMs?: number;
  } = {},
): Promise<WorkerHeartbeat[]> {
  const items = await queryAllItems(client, {
    TableName: tableName,
    KeyConditionExpression: "PK = :pk",
    ExpressionAttributeValues: {
      ":pk": { S: heartbeatPartitionKey(options.consumerName) },
    },
  }, options.signal);
  const now = options.nowMs ?? Date.now();
  return items.map(fromItem)
    .filter((hb) => options.includeExpired === true || !isExpired(hb, now))
    .sort((a, b) => a.workerId.localeCompare(b.workerId));
}

/**
 * Deletes heartbeat rows past their `ttl` (workers that died without
 * removing theirs), each only if it was not written since it was read.
 * Returns the ids removed.
 */
export async function removeExpiredHeartbeats(
  client: HeartbeatClient,
  tableName: string,
  options: { consumerName?: string; signal?: AbortSignal; nowMs: number },
): Promise<string[]> {
  const all = await readHeartbeats(client, tableName, {
    ...options,
    includeExpired: true,
  });
  const removed: string[] = [];
  for (const hb of all) {
    if (!isExpired(hb, options.nowMs)) continue;
    try {
      await client.send(
        new DeleteItemCommand({
          TableName: tableName,
          Key: {
            PK: { S: heartbeatPartitionKey(options.consumerName) },
            SK: { S: `#WORKER#${hb.workerId}` },
          },
          ConditionExpression: "updated_at_ms = :seen",
          ExpressionAttributeValues: { ":seen": { N: String(hb.updatedAtMs) } },
        }),
        options.signal ? { abortSignal: options.signal } : {},
      );
      removed.push(hb.workerId);
    } catch (error) {
      if (
        (error as { name?: unknown }).name !== "ConditionalCheckFailedException"
      ) {
        throw error;
      }
    }
  }
  return removed;
}

/** Whether a heartbeat is recent enough to count the worker as alive. */
export function isAlive(
  hb: WorkerHeartbeat,
  nowMs: number,
  staleMs: number = HEARTBEAT_STALE_MS,
): boolean {
  return nowMs - hb.updatedAtMs <= staleMs;
}

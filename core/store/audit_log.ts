/**
 * The audit log: one item per event in the entity's audit partition
 * (`{ns}/AUDIT#{entity}`), expiring after the namespace's retention, and the
 * newest-first read of an entity's events.
 *
 * @module
 */
import { PutItemCommand, QueryCommand } from "@aws-sdk/client-dynamodb";
import { isoSeconds } from "../clock.ts";
import { fromAttr, str, toAttr } from "../expr.ts";
import { pkAudit, SK, skAudit } from "../keys.ts";
import type { AuditActionName, AuditEvent } from "../models.ts";
import { validatePrincipal } from "../validation.ts";
import type { TableClient } from "./table.ts";

/** Options of {@linkcode AuditLog.write}. */
export interface AuditWriteOptions {
  /** The resource the event is about. @default null */
  readonly resource?: string | null;
  /** Free-form details. @default {} */
  readonly details?: Record<string, unknown>;
  /** Who is acting. @default the log's principal provider */
  readonly principal?: string;
}

/** How an {@linkcode AuditLog} fills in what a call does not say. */
export interface AuditLogOptions {
  /** Event ids (ULIDs) from a clock time. */
  readonly ulid: (now: number) => string;
  /** Who is acting when a call names no principal (failures count as `null`). */
  readonly principal: () => Promise<string | null>;
  /** The namespace's stored retention in days, or `null` (failures count as `null`). */
  readonly retentionDays: () => Promise<number | null>;
  /** Retention in days when the namespace stores none. */
  readonly defaultRetentionDays: number;
}

/** Audit events of one namespace. */
export class AuditLog {
  readonly #io: TableClient;
  readonly #ns: string;
  readonly #options: AuditLogOptions;

  /** The log of namespace id `ns` on `io`. */
  constructor(io: TableClient, ns: string, options: AuditLogOptions) {
    this.#io = io;
    this.#ns = ns;
    this.#options = options;
  }

  async #principal(explicit: string | undefined): Promise<string | null> {
    if (explicit !== undefined) return validatePrincipal(explicit);
    try {
      return await this.#options.principal();
    } catch {
      return null;
    }
  }

  /** Writes an audit event; returns it. */
  async write(
    action: AuditActionName,
    entityId: string,
    options: AuditWriteOptions = {},
  ): Promise<AuditEvent> {
    const principal = await this.#principal(options.principal);
    const now = this.#io.clock.now();
    const stored = await this.#options.retentionDays().catch(() => null);
    const days = stored ?? this.#options.defaultRetentionDays;
    const event: AuditEvent = {
      eventId: this.#options.ulid(now),
      timestamp: isoSeconds(now),
      action,
      entityId,
      principal,
      resource: options.resource ?? null,
      details: options.details ?? {},
    };
    await this.#io.client.send(
      new PutItemCommand({
        TableName: this.#io.name,
        Item: {
          PK: { S: pkAudit(this.#ns, entityId) },
          SK: { S: skAudit(event.eventId) },
          "event_id": { S: event.eventId },
          "entity_id": { S: entityId },
          timestamp: { S: event.timestamp },
          action: { S: action },
          principal: toAttr(principal),
          resource: toAttr(event.resource),
          details: toAttr(event.details),
          ttl: { N: String(Math.floor(now / 1000) + days * 86400) },
          GSI4PK: { S: this.#ns },
          GSI4SK: { S: pkAudit(this.#ns, entityId) },
        },
      }),
    );
    return event;
  }

  /** Audit events of an entity, newest first; `startEventId` is exclusive. */
  async events(
    entityId: string,
    options: { limit?: number; startEventId?: string } = {},
  ): Promise<AuditEvent[]> {
    const limit = options.limit ?? 100;
    const res = await this.#io.client.send(
      new QueryCommand({
        TableName: this.#io.name,
        KeyConditionExpression: options.startEventId
          ? "PK = :pk AND SK < :start"
          : "PK = :pk AND begins_with(SK, :p)",
        ExpressionAttributeValues: {
          ":pk": { S: pkAudit(this.#ns, entityId) },
          ...(options.startEventId
            ? { ":start": { S: skAudit(options.startEventId) } }
            : { ":p": { S: SK.AUDIT } }),
        },
        ScanIndexForward: false,
        Limit: limit,
      }),
    );
    return (res.Items ?? []).filter((i) =>
      (str(i, "SK") ?? "").startsWith(SK.AUDIT)
    ).map((i) => ({
      eventId: str(i, "event_id") ?? "",
      timestamp: str(i, "timestamp") ?? "",
      action: (str(i, "action") ?? "") as AuditActionName,
      entityId: str(i, "entity_id") ?? entityId,
      principal: str(i, "principal"),
      resource: str(i, "resource"),
      details: (fromAttr(i["details"]) ?? {}) as Record<string, unknown>,
    }));
  }
}

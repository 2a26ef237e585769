/**
 * The three stored config levels as a target (entity + resource, resource
 * default, system default), and the checks and audit subject of a write
 * to one (used by `config_store.ts`).
 *
 * @module
 */
import { ValidationError } from "../errors.ts";
import { DEFAULT_RESOURCE } from "../keys.ts";
import type { OnUnavailable } from "../models.ts";
import { validateIdentifier, validateResource } from "../validation.ts";

/** Which stored config: an entity's (for a resource, or `_default_`), a resource's default, or the system default. */
export type ConfigTarget =
  | {
    readonly level: "entity";
    readonly entityId: string;
    readonly resource: string;
  }
  | { readonly level: "resource"; readonly resource: string }
  | { readonly level: "system" };

/** Options of `ConfigStore.set`. */
export interface SetConfigOptions {
  /** Who is acting, for the audit event. */
  readonly principal?: string;
  /** System level only: `on_unavailable`. */
  readonly onUnavailable?: OnUnavailable;
  /** System level only: audit retention in days (kept from the stored item when absent). */
  readonly auditRetentionDays?: number;
}

/** The audit event's entity id of a write to `target`. */
export function auditSubject(target: ConfigTarget): string {
  switch (target.level) {
    case "entity":
      return target.entityId;
    case "resource":
      return `$RESOURCE:${target.resource}`;
    case "system":
      return "$SYSTEM";
  }
}

/** Checks the names of a target (an entity's `_default_` resource passes). */
export function validateTarget(target: ConfigTarget): void {
  switch (target.level) {
    case "entity":
      validateIdentifier(target.entityId);
      if (target.resource !== DEFAULT_RESOURCE) {
        validateResource(target.resource);
      }
      return;
    case "resource":
      validateResource(target.resource);
      return;
    case "system":
      return;
  }
}

/** Checks the system level's own options. */
export function validateSystemOptions(options: SetConfigOptions): void {
  if (
    options.onUnavailable !== undefined &&
    options.onUnavailable !== "allow" && options.onUnavailable !== "block"
  ) {
    throw new ValidationError(
      "on_unavailable",
      options.onUnavailable,
      "must be 'allow' or 'block'",
    );
  }
  if (
    options.auditRetentionDays !== undefined &&
    (!Number.isSafeInteger(options.auditRetentionDays) ||
      options.auditRetentionDays <= 0)
  ) {
    throw new ValidationError(
      "audit_retention_days",
      options.auditRetentionDays,
      "must be a positive whole number",
    );
  }
}

/**
 * The migration registry: every built-in migration, sorted by semver
 * (migrations sharing a version keep their declared order). Append-only:
 * released migrations are never edited or removed.
 *
 * @example Which migrations bring a 0.9.0 table to 0.10.0
 * ```ts
 * import assert from "node:assert/strict";
 * import { migrationsBetween } from "./registry.ts";
 *
 * assert.deepEqual(
 *   migrationsBetween("0.9.0", "0.10.0").map((m) => m.id),
 *   ["0.10.0-lsis", "0.10.0-namespace-keys"],
 * );
 * assert.deepEqual(migrationsBetween("0.10.0", "0.9.0"), []);
 * ```
 *
 * @module
 */
import { compareVersions, parseVersion } from "../core/version.ts";
import type { Migration } from "./migration.ts";
import { compositeConfigsMigration } from "./v0_8_0_composite_configs.ts";
import { bucketPksMigration } from "./v0_9_0_bucket_pks.ts";
import { lsisMigration } from "./v0_10_0_lsis.ts";
import { namespaceKeysMigration } from "./v0_10_0_namespace_keys.ts";

/**
 * Validates a list of migrations (parsable versions, unique ids) and returns
 * a copy sorted by version; the sort is stable, so migrations of one
 * version run in the order given.
 *
 * @throws {TypeError} on a duplicate id
 * @throws {SyntaxError} on an unparsable version
 */
export function createRegistry(
  list: readonly Migration[],
): readonly Migration[] {
  const ids = new Set<string>();
  for (const m of list) {
    parseVersion(m.version);
    if (ids.has(m.id)) {
      throw new TypeError(`Cannot register migration "${m.id}": duplicate id`);
    }
    ids.add(m.id);
  }
  return Object.freeze(
    [...list].sort((a, b) => compareVersions(a.version, b.version)),
  );
}

/** Every built-in migration, in the order they run. */
export const MIGRATIONS: readonly Migration[] = createRegistry([
  compositeConfigsMigration,
  bucketPksMigration,
  lsisMigration,
  namespaceKeysMigration,
]);

/** A copy of the registry. */
export function getMigrations(): Migration[] {
  return [...MIGRATIONS];
}

/** Options of {@linkcode migrationsBetween}. */
export interface MigrationsBetweenOptions {
  /** Registry to search (sorted, e.g. from {@linkcode createRegistry}). @default MIGRATIONS */
  readonly registry?: readonly Migration[];
}

/**
 * Migrations with `from < version <= to`, in run order; empty when
 * `from >= to`.
 *
 * @throws {SyntaxError} when a version cannot be parsed
 */
export function migrationsBetween(
  from: string,
  to: string,
  options: MigrationsBetweenOptions = {},
): Migration[] {
  if (compareVersions(from, to) >= 0) return [];
  return (options.registry ?? MIGRATIONS).filter((m) =>
    compareVersions(m.version, from) > 0 && compareVersions(m.version, to) <= 0
  );
}

/** The migration with that id, or `undefined`. */
export function findMigration(
  id: string,
  options: MigrationsBetweenOptions = {},
): Migration | undefined {
  return (options.registry ?? MIGRATIONS).find((m) => m.id === id);
}

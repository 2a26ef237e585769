/**
 * The version record and the pure compatibility check (spec 06 §4, fixing
 * reference weaknesses 9 and 10: schema versions are compared with schema
 * versions, and the minimum client version is enforced).
 *
 * @module
 */

/** The stored version record (`_/SYSTEM#`, `#VERSION`). */
export interface VersionRecord {
  /** Stored-format version. */
  readonly schemaVersion: string;
  /** Oldest client allowed to use the table. */
  readonly clientMinVersion: string;
  /** Stream workers' version (the reference's Lambda version), or `null`. */
  readonly lambdaVersion: string | null;
  /** `YYYY-MM-DDTHH:MM:SSZ`, or `null`. */
  readonly updatedAt: string | null;
  /** Who wrote it (`cli:0.10.0`, `client:0.10.0`, `migration:0.10.0`), or `null`. */
  readonly updatedBy: string | null;
}

/** A parsed `MAJOR.MINOR.PATCH` version. */
export interface Semver {
  /** Major. */
  readonly major: number;
  /** Minor. */
  readonly minor: number;
  /** Patch. */
  readonly patch: number;
}

/**
 * Parses `1.2.3` (a leading `v` and a pre-release/build suffix are ignored).
 *
 * @throws {SyntaxError} when the text is not a version
 */
export function parseSemver(text: string): Semver {
  const m = /^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$/.exec(text.trim());
  if (!m) {
    throw new SyntaxError(
      `Cannot parse version "${text}": expected MAJOR.MINOR.PATCH`,
    );
  }
  return { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) };
}

/** Compares two versions: negative, zero or positive. */
export function compareSemver(a: string, b: string): number {
  const x = parseSemver(a);
  const y = parseSemver(b);
  return x.major - y.major || x.minor - y.minor || x.patch - y.patch;
}

/** The breaking line of a version: the major, or `0.minor` before 1.0. */
function line(v: Semver): string {
  return v.major === 0 ? `0.${v.minor}` : String(v.major);
}

/** One reason in a {@linkcode Compatibility}. */
export type CompatibilityIssue =
  | {
    readonly kind: "schema_incompatible";
    readonly clientSchema: string;
    readonly tableSchema: string;
    readonly action: string;
  }
  | {
    readonly kind: "client_too_old";
    readonly clientVersion: string;
    readonly minimum: string;
    readonly action: string;
  }
  | {
    readonly kind: "workers_outdated";
    readonly clientVersion: string;
    readonly workerVersion: string;
    readonly action: string;
  }
  | { readonly kind: "workers_unknown"; readonly action: string };

/** Result of {@linkcode checkCompatibility}. */
export interface Compatibility {
  /** No blocking issue. */
  readonly compatible: boolean;
  /** Workers could be upgraded (not blocking by itself). */
  readonly updateAvailable: boolean;
  /** Every issue found, blocking ones first. */
  readonly issues: readonly CompatibilityIssue[];
}

/**
 * Checks a client against a version record. Blocking: a different schema
 * line (migration needed) or a client below `clientMinVersion`. Not
 * blocking: workers older than the client (`updateAvailable`); the oldest
 * of `runningWorkerVersions` (live heartbeats) when any, else the recorded
 * worker version.
 *
 * @example A client on the same schema line
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkCompatibility } from "./version.ts";
 *
 * const r = checkCompatibility(
 *   { clientVersion: "0.10.2", schemaVersion: "0.10.0" },
 *   { schemaVersion: "0.10.0", clientMinVersion: "0.0.0", lambdaVersion: "0.10.0", updatedAt: null, updatedBy: null },
 * );
 * assert.equal(r.compatible, true);
 * assert.equal(r.updateAvailable, true);
 * ```
 */
export function checkCompatibility(
  client: { readonly clientVersion: string; readonly schemaVersion: string },
  record: VersionRecord,
  runningWorkerVersions: readonly string[] = [],
): Compatibility {
  const issues: CompatibilityIssue[] = [];
  const cs = parseSemver(client.schemaVersion);
  const ts = parseSemver(record.schemaVersion);
  if (line(cs) !== line(ts)) {
    const newer = compareSemver(client.schemaVersion, record.schemaVersion) > 0;
    issues.push({
      kind: "schema_incompatible",
      clientSchema: client.schemaVersion,
      tableSchema: record.schemaVersion,
      action: newer
        ? `run 'zae-limiter migrate apply --to ${client.schemaVersion}' (after a backup: 'zae-limiter backup create')`
        : `install a client for schema ${record.schemaVersion}`,
    });
  }
  if (compareSemver(client.clientVersion, record.clientMinVersion) < 0) {
    issues.push({
      kind: "client_too_old",
      clientVersion: client.clientVersion,
      minimum: record.clientMinVersion,
      action: `install zae-limiter ${record.clientMinVersion} or newer`,
    });
  }
  let updateAvailable = false;
  // Live worker heartbeats are better evidence than the recorded version.
  const workerVersion = runningWorkerVersions.length > 0
    ? [...runningWorkerVersions].sort(compareSemver)[0] ?? null
    : record.lambdaVersion;
  if (workerVersion === null) {
    issues.push({
      kind: "workers_unknown",
      action:
        "no worker version is recorded; deploy workers to get usage snapshots",
    });
  } else if (compareSemver(workerVersion, client.clientVersion) < 0) {
    updateAvailable = true;
    issues.push({
      kind: "workers_outdated",
      clientVersion: client.clientVersion,
      workerVersion,
      action: "run 'zae-limiter upgrade --workers-only'",
    });
  }
  const isBlocking = (i: CompatibilityIssue): boolean =>
    i.kind === "schema_incompatible" || i.kind === "client_too_old";
  const blocking = issues.filter(isBlocking);
  return {
    compatible: blocking.length === 0,
    updateAvailable,
    issues: [...blocking, ...issues.filter((i) => !isBlocking(i))],
  };
}

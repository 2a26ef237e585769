/**
 * The version record and the pure compatibility check (spec 06 §4, fixing
 * reference weaknesses 9 and 10: schema versions are compared with schema
 * versions, and the minimum client version is enforced).
 *
 * Versions are compared by npm `semver`. The Python client writes PEP 440
 * versions (`0.10.2.dev42+gced59de`, `0.11.0rc1`, `0.10.1.post1`); they are
 * read through a small adapter ({@linkcode safeParseVersion}) into semver
 * with the same order: dev < `a` < `b` < `rc` < release.
 *
 * @module
 */
import semver from "semver";

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

/** A text that is neither a semver version nor a PEP 440 `MAJOR.MINOR.PATCH…` version. */
export class VersionSyntaxError extends SyntaxError {
  /** The text as given. */
  readonly input: string;
  /** Creates the error. */
  constructor(input: string) {
    super(
      `Cannot parse version "${
        input.length > 64 ? `${input.slice(0, 64)}…` : input
      }": expected MAJOR.MINOR.PATCH (semver, or PEP 440 such as 0.11.0rc1 or 0.10.2.dev42+gabc)`,
    );
    this.name = "VersionSyntaxError";
    this.input = input;
  }
}

/** Result of {@linkcode safeParseVersion}: the version as semver text, or the error. */
export type VersionParseResult =
  | { readonly ok: true; readonly value: string }
  | { readonly ok: false; readonly error: VersionSyntaxError };

// PEP 440 with exactly three release numbers (spec 06 §4.1: `1.2` is invalid),
// no epoch; the spellings PEP 440 normalizes (alpha, c, -post, _dev, …) accepted.
const PEP440 = new RegExp(
  "^(?<release>(?:0|[1-9]\\d*)\\.(?:0|[1-9]\\d*)\\.(?:0|[1-9]\\d*))" +
    "(?:[-_.]?(?<pre>a|alpha|b|beta|rc|c|pre|preview)[-_.]?(?<preN>\\d+)?)?" +
    "(?:-(?<postImplicitN>\\d+)|[-_.]?(?<post>post|rev|r)[-_.]?(?<postN>\\d+)?)?" +
    "(?:[-_.]?(?<dev>dev)[-_.]?(?<devN>\\d+)?)?" +
    "(?:\\+(?<local>[a-z0-9]+(?:[-_.][a-z0-9]+)*))?$",
  "i",
);
const PRE_TAGS: Readonly<Record<string, string>> = {
  a: "a",
  alpha: "a",
  b: "b",
  beta: "b",
  rc: "rc",
  c: "rc",
  pre: "rc",
  preview: "rc",
};

/**
 * Reads a version: semver (`0.10.0`, `0.11.0-rc.1`, a leading `v` allowed),
 * or PEP 440 as the Python client writes it, mapped to semver:
 *
 * | PEP 440 | semver | why |
 * |---------|--------|-----|
 * | `0.11.0rc1`, `0.11.0b2`, `0.11.0a3` | `0.11.0-rc.1`, `0.11.0-b.2`, `0.11.0-a.3` | `a` < `b` < `rc` |
 * | `0.10.2.dev42+gced59de` | `0.10.2-0.dev.42+gced59de` | a dev build sorts below every pre-release |
 * | `0.10.1.post1`, `0.10.1.post2.dev1` | `0.10.1+post.1`, `0.10.1+post.2.dev.1` | a post-release compares equal to its release |
 *
 * A dev build of a pre-release (`0.11.0rc2.dev3`) becomes
 * `0.11.0-rc.2.dev.3`, which sorts just after `rc2` rather than just before.
 *
 * @param text The stored or given version.
 * @returns The version as semver text, or a {@linkcode VersionSyntaxError}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { safeParseVersion } from "./version.ts";
 *
 * assert.deepEqual(safeParseVersion("0.10.2.dev42+gced59de"), { ok: true, value: "0.10.2-0.dev.42+gced59de" });
 * assert.equal(safeParseVersion("1.2").ok, false);
 * ```
 */
export function safeParseVersion(text: string): VersionParseResult {
  const trimmed = text.trim();
  const parsed = semver.parse(trimmed);
  if (parsed) {
    const build = parsed.build.length ? `+${parsed.build.join(".")}` : "";
    return { ok: true, value: `${parsed.version}${build}` };
  }
  const g = PEP440.exec(trimmed.replace(/^v/i, ""))?.groups;
  if (!g) return { ok: false, error: new VersionSyntaxError(text) };
  const n = (digits: string | undefined): number => Number(digits ?? "0");
  const pre: (string | number)[] = [];
  if (g["pre"] !== undefined) {
    pre.push(PRE_TAGS[g["pre"].toLowerCase()] ?? "rc", n(g["preN"]));
  }
  const build: (string | number)[] = [];
  const isPost = g["post"] !== undefined || g["postImplicitN"] !== undefined;
  if (isPost) build.push("post", n(g["postN"] ?? g["postImplicitN"]));
  if (g["dev"] !== undefined) {
    if (isPost) {
      // A dev build of a post-release: equal to its release, like the post.
      build.push("dev", n(g["devN"]));
    } else {
      // A numeric identifier sorts below letters: dev < a < b < rc.
      if (pre.length === 0) pre.push(0);
      pre.push("dev", n(g["devN"]));
    }
  }
  if (g["local"] !== undefined) {
    build.push(...g["local"].toLowerCase().split(/[-_.]/));
  }
  const value = `${g["release"]}` +
    (pre.length ? `-${pre.join(".")}` : "") +
    (build.length ? `+${build.join(".")}` : "");
  return { ok: true, value };
}

/**
 * Reads a version like {@linkcode safeParseVersion}, throwing on failure.
 *
 * @param text The version.
 * @returns The version as semver text.
 * @throws {VersionSyntaxError} when the text is not a version
 */
export function parseVersion(text: string): string {
  const r = safeParseVersion(text);
  if (!r.ok) throw r.error;
  return r.value;
}

/**
 * Compares two versions (semver or PEP 440) by semver precedence.
 *
 * @returns Negative, zero or positive.
 * @throws {VersionSyntaxError} when either is not a version
 */
export function compareVersions(a: string, b: string): number {
  return semver.compare(parseVersion(a), parseVersion(b));
}

/** The breaking line of a parsed version: the major, or `0.minor` before 1.0. */
function line(version: string): string {
  const major = semver.major(version);
  return major === 0 ? `0.${semver.minor(version)}` : String(major);
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
  | { readonly kind: "workers_unknown"; readonly action: string }
  | {
    /**
     * A version that is neither semver nor PEP 440. Blocking for the
     * client's own versions; a stored minimum is read as `0.0.0` and a
     * worker version counts as outdated (spec 06 §4.2).
     */
    readonly kind: "version_unreadable";
    /** Which version. */
    readonly field:
      | "clientVersion"
      | "clientSchema"
      | "clientMinVersion"
      | "workerVersion";
    /** The text as found. */
    readonly value: string;
    readonly action: string;
  };

/** Result of {@linkcode checkCompatibility}. */
export interface Compatibility {
  /** No blocking issue. */
  readonly compatible: boolean;
  /** Workers could be upgraded (not blocking by itself). */
  readonly updateAvailable: boolean;
  /** Every issue found, blocking ones first. */
  readonly issues: readonly CompatibilityIssue[];
}

function isBlocking(i: CompatibilityIssue): boolean {
  return i.kind === "schema_incompatible" || i.kind === "client_too_old" ||
    (i.kind === "version_unreadable" &&
      (i.field === "clientVersion" || i.field === "clientSchema"));
}

/**
 * Checks a client against a version record. Blocking: a different schema
 * line (migration needed), an unreadable table schema version, or a client
 * below `clientMinVersion`. Not blocking: workers older than the client
 * (`updateAvailable`); the oldest of `runningWorkerVersions` (live
 * heartbeats) when any, else the recorded worker version. Every version may
 * be semver or PEP 440 (the Python client's); this function never throws:
 * an unreadable version is an issue of the result.
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
 *
 * @example A table a Python dev build initialised
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkCompatibility } from "./version.ts";
 *
 * const r = checkCompatibility(
 *   { clientVersion: "0.10.0", schemaVersion: "0.10.0" },
 *   { schemaVersion: "0.10.0", clientMinVersion: "0.0.0", lambdaVersion: "0.10.2.dev42+gced59de", updatedAt: null, updatedBy: "client:0.10.2.dev42+gced59de" },
 * );
 * assert.deepEqual(r, { compatible: true, updateAvailable: false, issues: [] });
 * ```
 */
export function checkCompatibility(
  client: { readonly clientVersion: string; readonly schemaVersion: string },
  record: VersionRecord,
  runningWorkerVersions: readonly string[] = [],
): Compatibility {
  const issues: CompatibilityIssue[] = [];
  const unreadable = (
    field: Extract<CompatibilityIssue, { kind: "version_unreadable" }>[
      "field"
    ],
    value: string,
    action: string,
  ): void => {
    issues.push({ kind: "version_unreadable", field, value, action });
  };
  const clientVersion = safeParseVersion(client.clientVersion);
  const clientSchema = safeParseVersion(client.schemaVersion);
  if (!clientVersion.ok) {
    unreadable(
      "clientVersion",
      client.clientVersion,
      "pass this client's version as MAJOR.MINOR.PATCH",
    );
  }
  if (!clientSchema.ok) {
    unreadable(
      "clientSchema",
      client.schemaVersion,
      "pass this client's schema version as MAJOR.MINOR.PATCH",
    );
  }
  const tableSchema = safeParseVersion(record.schemaVersion);
  if (!tableSchema.ok) {
    issues.push({
      kind: "schema_incompatible",
      clientSchema: client.schemaVersion,
      tableSchema: record.schemaVersion,
      action:
        "the table's schema version is not a version this client can read; inspect the version record ('zae-limiter version --output json')",
    });
  } else if (
    clientSchema.ok && line(clientSchema.value) !== line(tableSchema.value)
  ) {
    const newer = semver.gt(clientSchema.value, tableSchema.value);
    issues.push({
      kind: "schema_incompatible",
      clientSchema: client.schemaVersion,
      tableSchema: record.schemaVersion,
      action: newer
        ? `run 'zae-limiter migrate apply --to ${client.schemaVersion}' (after a backup: 'zae-limiter backup create')`
        : `install a client for schema ${record.schemaVersion}`,
    });
  }
  const minimum = safeParseVersion(record.clientMinVersion);
  if (!minimum.ok) {
    unreadable(
      "clientMinVersion",
      record.clientMinVersion,
      "the table's minimum client version is ignored (read as 0.0.0)",
    );
  } else if (
    clientVersion.ok && semver.lt(clientVersion.value, minimum.value)
  ) {
    issues.push({
      kind: "client_too_old",
      clientVersion: client.clientVersion,
      minimum: record.clientMinVersion,
      action: `install zae-limiter ${record.clientMinVersion} or newer`,
    });
  }
  let updateAvailable = false;
  // Live worker heartbeats are better evidence than the recorded version.
  const workerVersions = runningWorkerVersions.length > 0
    ? runningWorkerVersions
    : record.lambdaVersion === null
    ? []
    : [record.lambdaVersion];
  if (workerVersions.length === 0) {
    issues.push({
      kind: "workers_unknown",
      action:
        "no worker version is recorded; deploy workers to get usage snapshots",
    });
  }
  const readable: { text: string; value: string }[] = [];
  for (const text of new Set(workerVersions)) {
    const r = safeParseVersion(text);
    if (r.ok) {
      readable.push({ text, value: r.value });
    } else {
      updateAvailable = true;
      unreadable(
        "workerVersion",
        text,
        "cannot compare it with this client; run 'zae-limiter upgrade --workers-only'",
      );
    }
  }
  const oldest = readable.sort((a, b) => semver.compare(a.value, b.value))[0];
  if (
    oldest && clientVersion.ok && semver.lt(oldest.value, clientVersion.value)
  ) {
    updateAvailable = true;
    issues.push({
      kind: "workers_outdated",
      clientVersion: client.clientVersion,
      workerVersion: oldest.text,
      action: "run 'zae-limiter upgrade --workers-only'",
    });
  }
  const blocking = issues.filter(isBlocking);
  return {
    compatible: blocking.length === 0,
    updateAvailable,
    issues: [...blocking, ...issues.filter((i) => !isBlocking(i))],
  };
}

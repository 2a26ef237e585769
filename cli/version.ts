/**
 * `version` and `check`: read the version record with plain reads (never
 * creating, registering or upgrading anything) and report compatibility.
 *
 * @module
 */
import { Command } from "commander";
import {
  isAlive,
  readHeartbeats,
  type WorkerHeartbeat,
} from "../workers/heartbeat.ts";
import { compareVersions } from "../core/version.ts";
import {
  checkCompatibility,
  CLIENT_VERSION,
  type Compatibility,
  type CompatibilityIssue,
  SCHEMA_VERSION,
} from "../mod.ts";
import {
  action,
  type CliContext,
  dynamoClient,
  emit,
  EXIT,
  type GlobalConfig,
  readVersionState,
  resolveGlobals,
  type VersionState,
} from "./_context.ts";

/** The outcome of comparing this client with a table. */
export type CheckResult =
  | { readonly kind: "no-table" }
  | { readonly kind: "not-initialized" }
  | {
    readonly kind: "checked";
    readonly state: VersionState;
    readonly compatibility: Compatibility;
    /** Workers with a fresh heartbeat. */
    readonly workers: readonly WorkerHeartbeat[];
  };

/** Describes one compatibility issue in one line. */
export function describeIssue(issue: CompatibilityIssue): string {
  switch (issue.kind) {
    case "schema_incompatible":
      return `Schema ${issue.tableSchema} of the table is not compatible with this client's schema ${issue.clientSchema}: ${issue.action}`;
    case "client_too_old":
      return `Client ${issue.clientVersion} is below the minimum ${issue.minimum} recorded in the table: ${issue.action}`;
    case "workers_outdated":
      return `Workers ${issue.workerVersion} are older than the client ${issue.clientVersion}: ${issue.action}`;
    case "workers_unknown":
      return `Workers: ${issue.action}`;
    case "version_unreadable":
      return `Version "${issue.value}" (${issue.field}) is not a version: ${issue.action}`;
    default: {
      const _exhaustive: never = issue;
      return String(_exhaustive);
    }
  }
}

/** A blocking schema incompatibility with the given remedy. */
function schemaBlocked(tableSchema: string, action: string): Compatibility {
  return {
    compatible: false,
    updateAvailable: false,
    issues: [{
      kind: "schema_incompatible",
      clientSchema: SCHEMA_VERSION,
      tableSchema,
      action,
    }],
  };
}

function compatibilityOf(
  state: VersionState,
  workers: readonly WorkerHeartbeat[],
): Compatibility | null {
  switch (state.kind) {
    case "no-table":
    case "not-initialized":
      return null;
    case "legacy":
      return schemaBlocked(
        state.schemaVersion,
        `the table uses the pre-0.10 key layout; back it up ('zae-limiter backup create'), run 'zae-limiter upgrade' (GSI4, namespace policies, 'default' registered), then the namespace-keys migration to ${SCHEMA_VERSION} ('zae-limiter migrate apply')`,
      );
    case "record":
      // Never throws: an unreadable stored version is an issue of the result.
      return checkCompatibility(
        { clientVersion: CLIENT_VERSION, schemaVersion: SCHEMA_VERSION },
        state.record,
        workers.map((w) => w.version),
      );
    default: {
      const _exhaustive: never = state;
      return _exhaustive;
    }
  }
}

/** Reads the version record of the `--name` table (plain reads only) and compares. */
export async function checkTable(
  ctx: CliContext,
  g: GlobalConfig,
): Promise<CheckResult> {
  const client = dynamoClient(ctx, g);
  const state = await readVersionState(client, g.name);
  if (state.kind === "no-table" || state.kind === "not-initialized") {
    return { kind: state.kind };
  }
  const now = ctx.now();
  // Heartbeats are advisory: a read failure falls back to the recorded worker version.
  const workers = (await readHeartbeats(client, g.name, { nowMs: now }).catch(
    () => [],
  )).filter((w) => isAlive(w, now));
  const compatibility = compatibilityOf(state, workers);
  return compatibility
    ? { kind: "checked", state, compatibility, workers }
    : { kind: "not-initialized" };
}

/** Exit code of `check` for a result: 0 compatible, 3 incompatible, 4 update available, 1 otherwise. */
export function checkExitCode(result: CheckResult): number {
  if (result.kind !== "checked") return EXIT.FAILURE;
  if (!result.compatibility.compatible) return EXIT.INCOMPATIBLE;
  if (result.compatibility.updateAvailable) return EXIT.UPDATE_AVAILABLE;
  return EXIT.OK;
}

function verdict(c: Compatibility): string {
  if (!c.compatible) return "INCOMPATIBLE";
  if (c.updateAvailable) return "COMPATIBLE (update available)";
  return "COMPATIBLE";
}

function recordFields(state: VersionState): {
  tableSchema: string | null;
  clientMin: string | null;
  workers: string | null;
  updatedBy: string | null;
  updatedAt: string | null;
} {
  if (state.kind === "record" || state.kind === "legacy") {
    // A pre-0.10 record is shown as stored (at `SYSTEM#`), not as "unknown".
    return {
      tableSchema: state.record.schemaVersion,
      clientMin: state.record.clientMinVersion,
      workers: state.record.lambdaVersion,
      updatedBy: state.record.updatedBy,
      updatedAt: state.record.updatedAt,
    };
  }
  return {
    tableSchema: null,
    clientMin: null,
    workers: null,
    updatedBy: null,
    updatedAt: null,
  };
}

function toJson(g: GlobalConfig, result: CheckResult): Record<string, unknown> {
  const base = {
    table: g.name,
    client: CLIENT_VERSION,
    clientSchema: SCHEMA_VERSION,
  };
  if (result.kind !== "checked") {
    return {
      ...base,
      result: result.kind === "no-table"
        ? "TABLE NOT FOUND"
        : "NOT INITIALIZED",
    };
  }
  const c = result.compatibility;
  return {
    ...base,
    ...recordFields(result.state),
    result: c.compatible
      ? (c.updateAvailable ? "UPDATE_AVAILABLE" : "COMPATIBLE")
      : "INCOMPATIBLE",
    issues: c.issues.map((i) => ({ ...i, message: describeIssue(i) })),
    runningWorkers: result.workers.map((w) => ({
      workerId: w.workerId,
      version: w.version,
      workloads: w.workloads,
      leasesHeld: w.leasesHeld,
      updatedAt: w.updatedAt,
      draining: w.draining,
    })),
  };
}

function printMissing(
  ctx: CliContext,
  g: GlobalConfig,
  result: CheckResult,
): void {
  if (result.kind === "no-table") {
    ctx.io.out(`Result: TABLE NOT FOUND`);
    ctx.io.out(
      `Table '${g.name}' does not exist (nothing was created). Run 'zae-limiter deploy --name ${g.name}'.`,
    );
  } else {
    ctx.io.out(`Result: NOT INITIALIZED`);
    ctx.io.out(
      `Table '${g.name}' has no version record. Run 'zae-limiter deploy --name ${g.name}'.`,
    );
  }
}

/** The oldest of some versions (unreadable ones last), or `null` for none. */
function oldestVersion(versions: readonly string[]): string | null {
  const order = (a: string, b: string): number => {
    try {
      return compareVersions(a, b);
    } catch {
      return a < b ? -1 : a > b ? 1 : 0;
    }
  };
  return [...versions].sort(order)[0] ?? null;
}

/**
 * The worker version the compatibility verdict used, and where it comes
 * from: the oldest running worker (fresh heartbeats) when any runs, else the
 * version recorded by the last deploy, else none.
 */
export function describeWorkerVersion(
  recorded: string | null,
  running: readonly WorkerHeartbeat[],
): string {
  const oldest = oldestVersion(running.map((w) => w.version));
  if (oldest !== null) {
    const n = running.length;
    const from = `oldest of ${n} running worker${n === 1 ? "" : "s"}`;
    return recorded === null || recorded === oldest
      ? `${oldest} (${from})`
      : `${oldest} (${from}; recorded ${recorded})`;
  }
  return recorded === null
    ? "unknown (none recorded, none running)"
    : `${recorded} (recorded; no worker running)`;
}

function runningWorkers(workers: readonly WorkerHeartbeat[]): string {
  if (workers.length === 0) return "none (no fresh heartbeat)";
  return workers.map((w) => `${w.workerId} ${w.version}`).join(", ");
}

/** `check`: compatibility of this client with the table; exit 0, 1, 3 or 4. */
export function makeCheckCommand(ctx: CliContext): Command {
  return new Command("check")
    .description(
      "Check that this client is compatible with the table (read-only)",
    )
    .addHelpText(
      "after",
      `
Exit codes:
  0  COMPATIBLE
  1  the table is missing or not initialized, or the check failed
  2  usage error
  3  INCOMPATIBLE (schema migration or a newer client required)
  4  COMPATIBLE, update available (workers older than the client)`,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const result = await checkTable(ctx, g);
      emit(ctx, g, toJson(g, result), () => {
        ctx.io.out("Compatibility Check");
        ctx.io.out("====================");
        ctx.io.out(`Client:  ${CLIENT_VERSION} (schema ${SCHEMA_VERSION})`);
        if (result.kind !== "checked") return printMissing(ctx, g, result);
        const f = recordFields(result.state);
        ctx.io.out(`Schema:  ${f.tableSchema ?? "unknown"}`);
        ctx.io.out(
          `Workers: ${describeWorkerVersion(f.workers, result.workers)}`,
        );
        ctx.io.out(`Running: ${runningWorkers(result.workers)}`);
        ctx.io.out(`Result: ${verdict(result.compatibility)}`);
        for (const issue of result.compatibility.issues) {
          ctx.io.out(`  - ${describeIssue(issue)}`);
        }
        if (
          result.compatibility.compatible &&
          !result.compatibility.updateAvailable
        ) {
          ctx.io.out("Client and infrastructure are compatible.");
        }
      });
      return checkExitCode(result);
    }));
}

/** `version`: client, schema, table schema, minimum client and worker versions side by side. */
export function makeVersionCommand(ctx: CliContext): Command {
  return new Command("version")
    .description(
      "Show client, schema and infrastructure versions (read-only)",
    )
    .addHelpText(
      "after",
      `
Exit codes: 0 shown (compatible, update available or not initialized),
1 the table is missing or the read failed, 3 INCOMPATIBLE.`,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const result = await checkTable(ctx, g);
      emit(ctx, g, toJson(g, result), () => {
        ctx.io.out("zae-limiter Infrastructure Version");
        ctx.io.out("====================================");
        ctx.io.out(`Client Version:     ${CLIENT_VERSION}`);
        ctx.io.out(`Schema Version:     ${SCHEMA_VERSION}`);
        if (result.kind !== "checked") {
          ctx.io.out(
            `Infrastructure:     ${
              result.kind === "no-table" ? "Table not found" : "Not initialized"
            }`,
          );
          ctx.io.out(`Run 'zae-limiter deploy --name ${g.name}' first.`);
          return;
        }
        const f = recordFields(result.state);
        ctx.io.out(`Table Schema:       ${f.tableSchema ?? "unknown"}`);
        ctx.io.out(`Min Client Version: ${f.clientMin ?? "unknown"}`);
        ctx.io.out(
          `Worker Version:     ${
            describeWorkerVersion(f.workers, result.workers)
          }`,
        );
        ctx.io.out(`Running Workers:    ${runningWorkers(result.workers)}`);
        if (f.updatedBy) {
          ctx.io.out(
            `Updated By:         ${f.updatedBy} (${f.updatedAt ?? "?"})`,
          );
        }
        ctx.io.out(`Status: ${verdict(result.compatibility)}`);
        for (const issue of result.compatibility.issues) {
          ctx.io.out(`  - ${describeIssue(issue)}`);
        }
      });
      if (result.kind === "no-table") return EXIT.FAILURE;
      if (result.kind === "not-initialized") return EXIT.OK;
      return result.compatibility.compatible ? EXIT.OK : EXIT.INCOMPATIBLE;
    }));
}

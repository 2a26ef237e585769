/**
 * `migrate plan|apply|status|verify|rollback`: schema migrations (spec 06
 * §5) through the migrations/ library. `migrate` is the only command that
 * changes `schema_version`.
 *
 * @module
 */
import process from "node:process";
import { Command, InvalidArgumentError, Option } from "commander";
import { SCHEMA_VERSION } from "../core/schema.ts";
import { compareVersions, parseVersion } from "../core/version.ts";
import {
  createMigrationContext,
  type MigrationContext,
  type MigrationContextOptions,
  MigrationError,
  type MigrationReport,
} from "../migrations/migration.ts";
import { createProgressReporter } from "../migrations/progress.ts";
import { progressIntervalFromEnv, progressIsTerminal } from "./_progress.ts";
import {
  applyMigrations,
  type LockHolder,
  type LockInfo,
  migrationStatus,
  readStoredVersion,
  rollbackMigrations,
  type StepResult,
  withMigrationLock,
} from "../migrations/runner.ts";
import {
  clearCopyCheckpoints,
  copyNamespaceKeys,
  deleteUnprefixedOriginals,
  formatNamespaceKeysPlan,
  NAMESPACE_KEYS_ID,
  planNamespaceKeys,
  RECORD_TYPES,
  type VerifyIssue,
  verifyNamespaceKeys,
} from "../migrations/v0_10_0_namespace_keys.ts";
import {
  action,
  type CliContext,
  CliExit,
  CliUsageError,
  dynamoClient,
  emit,
  EXIT,
  type GlobalConfig,
  intInRange,
  isTableMissing,
  renderTable,
  requireYes,
  resolveGlobals,
  thousands,
} from "./_context.ts";

function versionArg(value: string): string {
  try {
    parseVersion(value);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
  return value.trim().replace(/^v/, "");
}

function positiveNumber(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    throw new InvalidArgumentError("Expected a positive number.");
  }
  return n;
}

/** `--to`: a version this client has a schema for (none past {@linkcode SCHEMA_VERSION}). */
function targetVersionArg(value: string): string {
  const v = versionArg(value);
  if (compareVersions(v, SCHEMA_VERSION) > 0) {
    throw new InvalidArgumentError(
      `Expected a schema version up to ${SCHEMA_VERSION}, the newest this client has.`,
    );
  }
  return v;
}

function toOption(description: string): Option {
  return new Option("--to <version>", description).argParser(
    targetVersionArg,
  );
}

/** Line-buffers raw progress text into `io.err` lines when no raw writer exists. */
function progressWriter(ctx: CliContext): (text: string) => void {
  const raw = ctx.io.errRaw;
  if (raw) return (t) => raw.call(ctx.io, t);
  let buffer = "";
  return (t) => {
    buffer += t;
    let nl = buffer.indexOf("\n");
    while (nl >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      // A bar rewritten with \r: keep only its last state.
      ctx.io.err(line.slice(line.lastIndexOf("\r") + 1));
      nl = buffer.indexOf("\n");
    }
  };
}

interface ContextFlags {
  readonly delete?: boolean;
  readonly overwriteDrift?: boolean;
  readonly segments?: number;
  readonly maxWcu?: number;
  readonly progress?: boolean;
  readonly signal?: AbortSignal;
}

function migrationContext(
  ctx: CliContext,
  g: GlobalConfig,
  flags: ContextFlags = {},
): MigrationContext {
  const tty = progressIsTerminal(ctx);
  const interval = progressIntervalFromEnv(ctx.env);
  const columns = ctx.io.columns?.();
  const options: MigrationContextOptions = {
    client: dynamoClient(ctx, g),
    tableName: g.name,
    namespace: g.namespace,
    delete: flags.delete ?? false,
    ...(flags.overwriteDrift ? { overwriteDrift: true } : {}),
    ...(flags.segments === undefined ? {} : { segments: flags.segments }),
    ...(flags.maxWcu === undefined ? {} : { maxWcuPerSecond: flags.maxWcu }),
    ...(flags.signal === undefined ? {} : { signal: flags.signal }),
    ...(flags.progress
      ? {
        onEvent: createProgressReporter({
          write: progressWriter(ctx),
          tty,
          clock: { now: () => ctx.now() },
          ...(columns ? { columns } : {}),
          ...(interval === undefined ? {} : { minIntervalMs: interval }),
        }),
      }
      : {}),
  };
  return createMigrationContext(options);
}

/**
 * This process as a lock holder: hostname plus the kernel boot id (so a
 * reboot or another machine with the same name is never mistaken for this
 * one), and the pid.
 */
function lockHolder(): LockHolder {
  let boot = "";
  try {
    boot = Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim()
      .slice(0, 8);
  } catch {
    // Not Linux: the hostname alone.
  }
  let host = "unknown";
  try {
    host = Deno.hostname();
  } catch {
    // No permission: keep "unknown", which never proves a holder dead.
  }
  return { host: boot ? `${host}/${boot}` : host, pid: Deno.pid };
}

/**
 * Whether a lock's holder provably is not running: it recorded this host
 * and no process has its pid. Asked first with signal 0 (`kill -0`: ESRCH
 * means no such process; needs `--allow-run`), then through `/proc` (Deno
 * 2.9 lets only `--allow-all` read it). Unknown (another host, neither
 * permission) counts as alive.
 */
function isHolderDead(lock: LockInfo): boolean {
  const me = lockHolder();
  if (lock.host === null || lock.pid === null || lock.host !== me.host) {
    return false;
  }
  if (lock.host === "unknown" || lock.pid === me.pid) return false;
  try {
    process.kill(lock.pid, 0);
    return false;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === "ESRCH") return true;
    if (code === "EPERM") return false;
    // No permission to signal: try /proc.
  }
  try {
    Deno.statSync("/proc/self");
  } catch {
    return false;
  }
  try {
    Deno.statSync(`/proc/${lock.pid}`);
    return false;
  } catch {
    return true;
  }
}

/** Whether this process may signal others (`kill -0`), i.e. has `--allow-run`. */
function canSignal(): boolean {
  try {
    process.kill(1, 0);
    return true;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return code === "EPERM" || code === "ESRCH";
  }
}

/** Lock options of a CLI run. */
function lockOptions(breakStaleLock: boolean | undefined): {
  breakStaleLock: boolean;
  holder: LockHolder;
  isHolderDead: (lock: LockInfo) => boolean;
  takeOverDeadHolder: boolean;
} {
  return {
    breakStaleLock: breakStaleLock ?? false,
    holder: lockHolder(),
    isHolderDead,
    // A run killed on this host (no such pid) is taken over at once.
    takeOverDeadHolder: true,
  };
}

/** Turns library and SDK errors into one-line CLI failures. */
async function guarded<T>(g: GlobalConfig, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (isTableMissing(e)) {
      throw new CliExit(
        EXIT.FAILURE,
        `Cannot migrate table '${g.name}': it does not exist`,
        { cause: e },
      );
    }
    if (e instanceof MigrationError) {
      const cause = e.cause instanceof Error ? e.cause : null;
      const hint = e.code === "MIGRATION_LOCKED" && e.details["stale"] === true
        ? "; pass --break-stale-lock to take it over"
        : e.code === "MIGRATION_LOCKED" &&
            e.details["host"] === lockHolder().host &&
            typeof e.details["pid"] === "number" && !canSignal()
        ? `; if that run crashed, this process cannot tell (checking pid ${
          e.details["pid"]
        } needs 'deno run --allow-run'): run it with --allow-run and it takes the lock over at once`
        : e.code === "MIGRATION_FAILED"
        ? "; fix the cause and run 'migrate apply' again to resume"
        : "";
      throw new CliExit(
        EXIT.FAILURE,
        `${e.message}${hint}${
          cause && !e.message.includes(cause.message)
            ? ` (cause: ${cause.message})`
            : ""
        }`,
        { cause: e },
      );
    }
    throw e;
  }
}

function stepRows(steps: readonly StepResult[]): string[][] {
  return steps.map((s) => [
    s.migration.id,
    s.migration.version,
    thousands(s.report.scanned),
    thousands(s.report.written),
    thousands(s.report.alreadyPresent),
    thousands(s.report.deleted),
  ]);
}

function printSteps(ctx: CliContext, steps: readonly StepResult[]): void {
  if (steps.length === 0) return;
  ctx.io.out(
    renderTable(
      ["Migration", "Version", "Scanned", "Written", "Present", "Deleted"],
      stepRows(steps),
      { rightAlign: [2, 3, 4, 5] },
    ),
  );
  for (const s of steps) {
    for (const note of s.report.notes) {
      ctx.io.out(`  ${s.migration.id}: ${note}`);
    }
  }
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function describeIssue(i: VerifyIssue): string {
  switch (i.kind) {
    case "missing_copy":
      return `missing copy of ${i.type} item PK=${i.pk} SK=${i.sk}`;
    case "unprefixed_left":
      return `${thousands(i.count)} unprefixed item(s) left (expected none)`;
    case "namespace_missing":
      return `namespace '${i.namespace}' is not registered`;
    case "gsi4_missing":
      return "the table has no GSI4 (run 'zae-limiter upgrade' first)";
    case "drifted_copy":
      return `${i.type} item PK=${i.pk} SK=${i.sk} changed after its copy (run 'zae-limiter migrate apply --yes' to copy it again)`;
    case "version_not_migrated":
      return "the version record is not under _/SYSTEM# (migration not applied)";
    case "sample_mismatch":
      return `entity '${i.entityId}' ${i.check}: expected ${i.expected}, got ${i.actual}`;
    default: {
      const _exhaustive: never = i;
      return String(_exhaustive);
    }
  }
}

async function runPlan(ctx: CliContext, cmd: Command): Promise<number> {
  const g = resolveGlobals(cmd);
  const { to } = cmd.opts<{ to?: string }>();
  const target = to ?? SCHEMA_VERSION;
  return await guarded(g, async () => {
    const mctx = migrationContext(ctx, g);
    const status = await migrationStatus(mctx, { to: target });
    if (status.current === null) {
      throw new CliExit(
        EXIT.FAILURE,
        `Cannot plan a migration of '${g.name}': it has no version record (run 'zae-limiter deploy --name ${g.name}')`,
      );
    }
    const needsKeys = status.pending.some((m) => m.id === NAMESPACE_KEYS_ID);
    const plan = needsKeys ? await planNamespaceKeys(mctx) : null;
    emit(ctx, g, {
      table: g.name,
      current: status.current.schemaVersion,
      target,
      pending: status.pending,
      namespaceKeys: plan,
    }, () => {
      ctx.io.out(`Table:          ${g.name}`);
      ctx.io.out(
        `Schema version: ${status.current?.schemaVersion} (${
          status.current?.location === "legacy"
            ? "pre-0.10 key layout"
            : "namespaced"
        })`,
      );
      ctx.io.out(`Target:         ${target}`);
      if (status.pending.length === 0) {
        ctx.io.out("Nothing to apply: the table is up to date.");
        return;
      }
      ctx.io.out("");
      ctx.io.out("Pending migrations (in order):");
      ctx.io.out(
        renderTable(
          ["Migration", "Version", "Reversible", "Description"],
          status.pending.map((m) => [
            m.id,
            m.version,
            m.reversible ? "yes" : "no",
            m.description,
          ]),
        ),
      );
      if (plan) {
        ctx.io.out("");
        ctx.io.out(formatNamespaceKeysPlan(plan));
      }
      ctx.io.out("");
      ctx.io.out(
        "Dry run: nothing was written. Back up the table (zae-limiter backup create / pitr enable), then run 'zae-limiter migrate apply --yes'.",
      );
    });
    return EXIT.OK;
  });
}

interface ApplyFlags {
  to?: string;
  delete?: boolean;
  segments?: number;
  maxWcu?: number;
  breakStaleLock?: boolean;
  overwriteDrift?: boolean;
  yes?: boolean;
}

async function runApply(ctx: CliContext, cmd: Command): Promise<number> {
  const g = resolveGlobals(cmd);
  const o = cmd.opts<ApplyFlags>();
  requireYes(o.yes, "apply migrations");
  const target = o.to ?? SCHEMA_VERSION;
  const signal = ctx.io.interruptSignal?.();
  const mctx = migrationContext(ctx, g, {
    delete: o.delete ?? false,
    ...(o.overwriteDrift ? { overwriteDrift: true } : {}),
    ...(o.segments === undefined ? {} : { segments: o.segments }),
    ...(o.maxWcu === undefined ? {} : { maxWcu: o.maxWcu }),
    ...(signal === undefined ? {} : { signal }),
    progress: true,
  });
  const lock = lockOptions(o.breakStaleLock);
  const started = ctx.now();
  const interrupted = (during: string): number => {
    ctx.io.err(
      `Interrupted during ${during} after ${
        seconds(ctx.now() - started)
      }: progress is checkpointed; run the same 'migrate apply' again to resume.`,
    );
    return EXIT.FAILURE;
  };
  return await guarded(g, async () => {
    const result = await applyMigrations(mctx, { to: target, ...lock });
    switch (result.kind) {
      case "interrupted":
        printSteps(ctx, result.steps);
        ctx.io.out(
          `Schema version: ${result.from} -> ${result.reached} (stopped before ${result.during.version})`,
        );
        return interrupted(result.during.id);
      case "applied":
        printSteps(ctx, result.steps);
        ctx.io.out(
          `Migrated '${g.name}': schema ${result.from} -> ${result.to} in ${
            seconds(ctx.now() - started)
          }`,
        );
        if (
          !o.delete &&
          result.steps.some((s) => s.migration.id === NAMESPACE_KEYS_ID)
        ) {
          ctx.io.out(
            "Unprefixed originals were kept. Run 'zae-limiter migrate verify', then 'zae-limiter migrate apply --delete --yes' to remove them.",
          );
        }
        return EXIT.OK;
      case "up_to_date": {
        const version = result.version;
        if (compareVersions(version, "0.10.0") < 0) {
          ctx.io.out(
            `Table '${g.name}' is already at schema ${version}; nothing to apply.`,
          );
          return EXIT.OK;
        }
        if (!o.delete) {
          // The dual-format window: copy again what old clients wrote since
          // (new originals, and changed ones: the original wins until --delete).
          let report: MigrationReport | null = null;
          try {
            report = await withMigrationLock(
              mctx,
              async (lctx) => {
                await clearCopyCheckpoints(lctx);
                return await copyNamespaceKeys(lctx);
              },
              { ...lock, operation: "re-copy unprefixed originals" },
            );
          } catch (e) {
            if (mctx.signal.aborted) return interrupted("the re-copy");
            throw e;
          }
          printSteps(ctx, [{
            migration: {
              id: NAMESPACE_KEYS_ID,
              version,
              description: "re-copy unprefixed originals",
              reversible: false,
            },
            report,
          }]);
          ctx.io.out(
            `Table '${g.name}' is at schema ${version}; copied ${
              thousands(report.written)
            } new or changed original(s) again (${
              thousands(report.alreadyPresent)
            } unchanged).`,
          );
          return EXIT.OK;
        }
        // The copy already ran: --delete removes the kept originals, but
        // not while an original differs from its copy (checked before any
        // delete; the delete phase re-checks each page against races).
        if (!o.overwriteDrift) {
          const v = await verifyNamespaceKeys(mctx, { sampleSize: 0 });
          const drifted = v.issues.filter((i) => i.kind === "drifted_copy");
          if (v.driftedCopies > 0) {
            for (const i of drifted) ctx.io.err(`  - ${describeIssue(i)}`);
            throw new CliExit(
              EXIT.FAILURE,
              `Cannot delete originals: ${
                thousands(v.driftedCopies)
              } changed after their copy (an old client wrote them); run 'zae-limiter migrate apply --yes' (without --delete) to copy them again, or pass --overwrite-drift. Nothing was deleted.`,
            );
          }
        }
        let report: MigrationReport | null = null;
        try {
          report = await withMigrationLock(
            mctx,
            (lctx) => deleteUnprefixedOriginals(lctx),
            { ...lock, operation: "delete unprefixed originals" },
          );
        } catch (e) {
          if (mctx.signal.aborted) return interrupted("the delete phase");
          throw e;
        }
        const step: StepResult = {
          migration: {
            id: NAMESPACE_KEYS_ID,
            version,
            description: "delete unprefixed originals",
            reversible: false,
          },
          report,
        };
        printSteps(ctx, [step]);
        ctx.io.out(
          `Table '${g.name}' is at schema ${version}; deleted ${
            thousands(report.deleted)
          } unprefixed original(s) in ${seconds(ctx.now() - started)}`,
        );
        return EXIT.OK;
      }
      default: {
        const _exhaustive: never = result;
        return _exhaustive;
      }
    }
  });
}

async function runStatus(ctx: CliContext, cmd: Command): Promise<number> {
  const g = resolveGlobals(cmd);
  const { to } = cmd.opts<{ to?: string }>();
  return await guarded(g, async () => {
    const s = await migrationStatus(migrationContext(ctx, g), {
      to: to ?? SCHEMA_VERSION,
      isHolderDead,
    });
    emit(ctx, g, s, () => {
      ctx.io.out(`Table:          ${g.name}`);
      ctx.io.out(
        s.current === null
          ? "Schema version: (no version record)"
          : `Schema version: ${s.current.schemaVersion} (${
            s.current.location === "legacy"
              ? "legacy record SYSTEM#"
              : "_/SYSTEM#"
          })`,
      );
      ctx.io.out(`Target:         ${s.target}`);
      ctx.io.out(
        `Pending:        ${
          s.pending.length === 0
            ? "none"
            : s.pending.map((m) => m.id).join(", ")
        }`,
      );
      ctx.io.out(
        `Lock:           ${
          s.lock === null
            ? "free"
            : `held by ${s.lock.owner}${
              s.lock.host === null
                ? ""
                : ` (host ${s.lock.host}, pid ${s.lock.pid})`
            }${s.lock.operation ? ` for '${s.lock.operation}'` : ""}; expires ${
              new Date(s.lock.expiresAt).toISOString()
            }${
              s.lock.heartbeatAt === null
                ? ""
                : `; last heartbeat ${
                  new Date(s.lock.heartbeatAt).toISOString()
                }`
            }${
              s.lock.stale
                ? " (stale: pass --break-stale-lock to 'migrate apply')"
                : ""
            }`
        }`,
      );
      const open = s.checkpoints.filter((c) => !c.done).length;
      ctx.io.out(
        `Checkpoints:    ${s.checkpoints.length} (${open} unfinished)${
          s.checkpoints.length > 0 && s.lock === null
            ? "; 'migrate apply' resumes from them"
            : ""
        }`,
      );
      if (s.history.length > 0) {
        ctx.io.out("");
        ctx.io.out(
          renderTable(
            ["Applied migration", "Version", "Started", "Finished"],
            s.history.map((h) => [
              h.id,
              h.version,
              h.startedAt ?? "-",
              h.finishedAt ?? "-",
            ]),
          ),
        );
      }
    });
    return EXIT.OK;
  });
}

async function runVerify(ctx: CliContext, cmd: Command): Promise<number> {
  const g = resolveGlobals(cmd);
  const o = cmd.opts<{ expectDeleted?: boolean; sample?: number }>();
  return await guarded(g, async () => {
    const mctx = migrationContext(ctx, g, { progress: true });
    const stored = await readStoredVersion(mctx);
    if (stored === null) {
      throw new CliExit(
        EXIT.FAILURE,
        `Cannot verify '${g.name}': it has no version record`,
      );
    }
    const v = await verifyNamespaceKeys(mctx, {
      ...(o.expectDeleted ? { expectDeleted: true } : {}),
      ...(o.sample === undefined ? {} : { sampleSize: o.sample }),
    });
    emit(ctx, g, v, () => {
      ctx.io.out(
        `Verified '${g.name}' (namespace ${g.namespace} = ${
          v.namespaceId ?? "not registered"
        }): scanned ${thousands(v.scanned)} items`,
      );
      ctx.io.out(
        renderTable(
          ["Record type", "Unprefixed", "Migrated"],
          RECORD_TYPES.filter((t) => v.legacy[t] > 0 || v.migrated[t] > 0)
            .map((t) => [t, thousands(v.legacy[t]), thousands(v.migrated[t])]),
          { rightAlign: [1, 2] },
        ),
      );
      ctx.io.out(
        `Unprefixed left: ${
          thousands(v.unprefixedRemaining)
        }; missing copies: ${
          thousands(v.missingCopies)
        }; changed originals (re-run 'migrate apply'): ${
          thousands(v.driftedCopies)
        }; bucket/usage copies used since (informational): ${
          thousands(v.liveDriftedCopies)
        }`,
      );
      ctx.io.out(
        `Sampled entities: ${v.samples.length} (${
          v.samples.filter((s) => s.ok).length
        } ok)`,
      );
    });
    if (v.ok) {
      if (g.output !== "json") ctx.io.out("Verification passed.");
      return EXIT.OK;
    }
    ctx.io.err(`Verification failed: ${v.issues.length} issue(s)`);
    for (const i of v.issues) ctx.io.err(`  - ${describeIssue(i)}`);
    if (v.missingCopies > 20) {
      ctx.io.err(`  ... ${v.missingCopies - 20} more missing copies`);
    }
    if (v.driftedCopies > 20) {
      ctx.io.err(`  ... ${v.driftedCopies - 20} more changed originals`);
    }
    return EXIT.FAILURE;
  });
}

async function runRollback(ctx: CliContext, cmd: Command): Promise<number> {
  const g = resolveGlobals(cmd);
  const o = cmd.opts<
    { to: string; breakStaleLock?: boolean; yes?: boolean }
  >();
  requireYes(o.yes, "roll back migrations");
  const signal = ctx.io.interruptSignal?.();
  const mctx = migrationContext(ctx, g, {
    ...(signal === undefined ? {} : { signal }),
    progress: true,
  });
  const region = g.region ?? ctx.env["AWS_REGION"] ??
    ctx.env["AWS_DEFAULT_REGION"];
  return await guarded(g, async () => {
    const r = await rollbackMigrations(mctx, {
      to: o.to,
      ...lockOptions(o.breakStaleLock),
      ...(region ? { region } : {}),
    });
    switch (r.kind) {
      case "up_to_date":
        if (compareVersions(o.to, r.version) > 0) {
          throw new CliUsageError(
            `Invalid --to '${o.to}': table '${g.name}' is at schema ${r.version}; a rollback goes to an earlier version`,
          );
        }
        ctx.io.out(
          `Table '${g.name}' is at schema ${r.version}; nothing to roll back.`,
        );
        return EXIT.OK;
      case "rolled_back":
        printSteps(ctx, r.steps);
        ctx.io.out(`Rolled back '${g.name}': schema ${r.from} -> ${r.to}`);
        return EXIT.OK;
      case "interrupted":
        printSteps(ctx, r.steps);
        ctx.io.err(
          `Interrupted during rollback of ${r.during.id} (schema now ${r.reached}); run the same command again to resume.`,
        );
        return EXIT.FAILURE;
      case "irreversible": {
        const p = r.recovery;
        ctx.io.err(p.summary);
        ctx.io.err(
          `Irreversible: ${
            r.blockers.map((b) => b.id).join(", ")
          }. Nothing was changed.`,
        );
        if (p.restoreBefore) {
          ctx.io.out(`Latest safe restore time: ${p.restoreBefore}`);
        }
        p.options.forEach((opt, i) => {
          ctx.io.out("");
          ctx.io.out(`Option ${i + 1} (${opt.kind}): ${opt.description}`);
          for (const c of opt.commands) ctx.io.out(`  ${c}`);
        });
        return EXIT.FAILURE;
      }
      default: {
        const _exhaustive: never = r;
        return _exhaustive;
      }
    }
  });
}

/** The `migrate` command group. */
export function makeMigrateCommand(ctx: CliContext): Command {
  const migrate = new Command("migrate").description(
    "Plan, apply, verify and roll back schema migrations (the only command that changes schema_version)",
  );
  migrate.command("plan")
    .description(
      "Dry run: pending migrations, items per record type, RCU/WCU and cost estimate (no writes)",
    )
    .addOption(toOption(`target schema version (default ${SCHEMA_VERSION})`))
    .action(action(ctx, (cmd) => runPlan(ctx, cmd)));
  migrate.command("apply")
    .description(
      "Apply pending migrations under the migration lock; resumable (run again after an interruption)",
    )
    .addOption(toOption(`target schema version (default ${SCHEMA_VERSION})`))
    .option(
      "--delete",
      "also delete the unprefixed originals (after 'migrate verify'; stop clients older than 0.10 first)",
    )
    .option(
      "--segments <n>",
      "parallel scan segments (default 4)",
      intInRange(1, 1000),
    )
    .option(
      "--max-wcu <n>",
      "write budget in WCU per second (default unthrottled)",
      positiveNumber,
    )
    .option(
      "--overwrite-drift",
      "with --delete: copy originals changed after their copy again instead of refusing",
    )
    .option(
      "--break-stale-lock",
      "take over a lock left by a crashed run (expired, or its owner on this host is not running)",
    )
    .option("--yes", "confirm (this command does not prompt)")
    .action(action(ctx, (cmd) => runApply(ctx, cmd)));
  migrate.command("status")
    .description(
      "Schema version, pending migrations, history, lock and checkpoints",
    )
    .addOption(toOption(`target schema version (default ${SCHEMA_VERSION})`))
    .action(action(ctx, (cmd) => runStatus(ctx, cmd)));
  migrate.command("verify")
    .description(
      "Check the namespace-keys migration: counts per record type, missing copies, sampled entities (exit 1 on a difference)",
    )
    .option("--expect-deleted", "also require that no unprefixed item is left")
    .option(
      "--sample <n>",
      "entities read back through the library (default 5)",
      intInRange(0, 1000),
    )
    .action(action(ctx, (cmd) => runVerify(ctx, cmd)));
  migrate.command("rollback")
    .description(
      "Roll back reversible migrations in place; for irreversible ones print the backup/PITR recovery plan and exit 1",
    )
    .addOption(
      toOption("schema version to go back to").makeOptionMandatory(),
    )
    .option(
      "--break-stale-lock",
      "take over an expired lock left by a crashed run",
    )
    .option("--yes", "confirm (this command does not prompt)")
    .action(action(ctx, (cmd) => runRollback(ctx, cmd)));
  return migrate;
}

/**
 * `backup create|list|restore` and `pitr status|enable|restore`: the
 * recovery runbook's DynamoDB calls (spec 06 §7). Restores always go into a
 * new table (`--target-table`); the source table is never touched.
 *
 * @module
 */
import {
  CreateBackupCommand,
  DescribeContinuousBackupsCommand,
  ListBackupsCommand,
  RestoreTableFromBackupCommand,
  RestoreTableToPointInTimeCommand,
  UpdateContinuousBackupsCommand,
} from "@aws-sdk/client-dynamodb";
import { Command, InvalidArgumentError } from "commander";
import {
  action,
  type CliContext,
  CliUsageError,
  dynamoClient,
  emit,
  EXIT,
  intInRange,
  renderTable,
  resolveGlobals,
} from "./_context.ts";
import { awsOnly, LOCAL_BACKUP_INSTEAD } from "./_aws_only.ts";
import { isoTimeArg } from "./_iso_time.ts";

/** The alternative to point-in-time recovery on DynamoDB Local. */
const LOCAL_PITR_INSTEAD =
  "the deployed template enables it on AWS; locally, keep a copy of the --data-dir of 'zae-limiter local up' (stopped) to go back to";

/**
 * A commander parser for a name DynamoDB takes for a table or a backup: 3 to
 * 255 letters, digits, `_`, `-` and `.`; anything else is a usage error
 * before any call.
 */
function dynamoName(what: string): (value: string) => string {
  return function parseDynamoName(value: string): string {
    if (!/^[A-Za-z0-9_.-]{3,255}$/.test(value)) {
      throw new InvalidArgumentError(
        `Invalid ${what} "${value}": must be 3 to 255 letters, digits, '_', '-' or '.'`,
      );
    }
    return value;
  };
}

function iso(d: Date | undefined): string | null {
  return d ? d.toISOString() : null;
}

function stamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, "").slice(0, 15);
}

/** The `backup` command group. */
export function makeBackupCommand(ctx: CliContext): Command {
  const backup = new Command("backup").description(
    "On-demand DynamoDB backups of the table",
  );

  backup.command("create")
    .description("Create an on-demand backup of the table")
    .option(
      "--backup-name <name>",
      "backup name (default: {table}-{timestamp})",
      dynamoName("backup name"),
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const { backupName } = cmd.opts<{ backupName?: string }>();
      const name = backupName ?? `${g.name}-${stamp(ctx.now())}`;
      const out = await awsOnly(g, {
        action: `create a backup of table '${g.name}'`,
        missing: "on-demand backups",
        instead: LOCAL_BACKUP_INSTEAD,
      }, () =>
        dynamoClient(ctx, g).send(
          new CreateBackupCommand({ TableName: g.name, BackupName: name }),
        ));
      const d = out.BackupDetails;
      emit(ctx, g, {
        backupArn: d?.BackupArn ?? null,
        backupName: d?.BackupName ?? name,
        status: d?.BackupStatus ?? null,
      }, () => {
        ctx.io.out(
          `✓ Backup '${d?.BackupName ?? name}' ${
            (d?.BackupStatus ?? "requested").toLowerCase()
          }`,
        );
        ctx.io.out(`  ARN: ${d?.BackupArn ?? "-"}`);
      });
      return EXIT.OK;
    }));

  backup.command("list")
    .description("List backups of the table (read-only)")
    .option(
      "--since <iso>",
      "only backups created at or after this time",
      isoTimeArg,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const { since } = cmd.opts<{ since?: string }>();
      const lower = since === undefined ? undefined : new Date(since);
      if (lower && Number.isNaN(lower.getTime())) {
        throw new CliUsageError(
          `Invalid --since '${since}': use an ISO 8601 time`,
        );
      }
      const client = dynamoClient(ctx, g);
      const rows: {
        name: string;
        arn: string;
        status: string;
        created: string | null;
        sizeBytes: number | null;
      }[] = [];
      let start: string | undefined;
      do {
        const from = start;
        const out = await awsOnly(g, {
          action: `list backups of table '${g.name}'`,
          missing: "on-demand backups",
          instead: LOCAL_BACKUP_INSTEAD,
        }, () =>
          client.send(
            new ListBackupsCommand({
              TableName: g.name,
              ...(lower ? { TimeRangeLowerBound: lower } : {}),
              ...(from ? { ExclusiveStartBackupArn: from } : {}),
            }),
          ));
        for (const b of out.BackupSummaries ?? []) {
          rows.push({
            name: b.BackupName ?? "",
            arn: b.BackupArn ?? "",
            status: b.BackupStatus ?? "",
            created: iso(b.BackupCreationDateTime),
            sizeBytes: b.BackupSizeBytes ?? null,
          });
        }
        start = out.LastEvaluatedBackupArn;
      } while (start);
      emit(ctx, g, rows, () => {
        if (rows.length === 0) {
          return ctx.io.out(`No backups for table '${g.name}'`);
        }
        ctx.io.out(renderTable(
          ["Name", "Status", "Created", "ARN"],
          rows.map((r) => [r.name, r.status, r.created ?? "-", r.arn]),
        ));
        ctx.io.out(`Total: ${rows.length} backup(s)`);
      });
      return EXIT.OK;
    }));

  backup.command("restore")
    .description("Restore a backup into a NEW table")
    .requiredOption("--backup-arn <arn>", "backup to restore")
    .requiredOption(
      "--target-table <name>",
      "name of the new table",
      dynamoName("table name"),
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<{ backupArn: string; targetTable: string }>();
      const out = await awsOnly(g, {
        action: `restore a backup into table '${o.targetTable}'`,
        missing: "on-demand backups",
        instead: LOCAL_BACKUP_INSTEAD,
      }, () =>
        dynamoClient(ctx, g).send(
          new RestoreTableFromBackupCommand({
            BackupArn: o.backupArn,
            TargetTableName: o.targetTable,
          }),
        ));
      const status = out.TableDescription?.TableStatus ?? "CREATING";
      emit(ctx, g, {
        backupArn: o.backupArn,
        targetTable: o.targetTable,
        status,
      }, () => {
        ctx.io.out(`✓ Restore into '${o.targetTable}' started (${status})`);
        ctx.io.out(
          `  The restored table has a new name: point clients at it (--name ${o.targetTable}) or restore under the original name after deleting the old table.`,
        );
      });
      return EXIT.OK;
    }));
  return backup;
}

/** The `pitr` command group. */
export function makePitrCommand(ctx: CliContext): Command {
  const pitr = new Command("pitr").description(
    "Point-in-time recovery of the table",
  );

  pitr.command("status")
    .description("Show point-in-time recovery settings (read-only)")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const out = await awsOnly(g, {
        action: `show point-in-time recovery of table '${g.name}'`,
        missing: "point-in-time recovery",
        instead: LOCAL_PITR_INSTEAD,
      }, () =>
        dynamoClient(ctx, g).send(
          new DescribeContinuousBackupsCommand({ TableName: g.name }),
        ));
      const p = out.ContinuousBackupsDescription
        ?.PointInTimeRecoveryDescription;
      const status = {
        table: g.name,
        pointInTimeRecovery: p?.PointInTimeRecoveryStatus ?? "DISABLED",
        recoveryPeriodDays: p?.RecoveryPeriodInDays ?? null,
        earliestRestorableTime: iso(p?.EarliestRestorableDateTime),
        latestRestorableTime: iso(p?.LatestRestorableDateTime),
      };
      emit(ctx, g, status, () => {
        ctx.io.out(`Table:     ${g.name}`);
        ctx.io.out(`PITR:      ${status.pointInTimeRecovery}`);
        if (status.recoveryPeriodDays !== null) {
          ctx.io.out(`Period:    ${status.recoveryPeriodDays} day(s)`);
        }
        if (status.earliestRestorableTime) {
          ctx.io.out(
            `Window:    ${status.earliestRestorableTime} to ${status.latestRestorableTime}`,
          );
        }
      });
      return EXIT.OK;
    }));

  pitr.command("enable")
    .description("Enable point-in-time recovery")
    .option(
      "--recovery-days <n>",
      "recovery period in days (1-35)",
      intInRange(1, 35),
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const { recoveryDays } = cmd.opts<{ recoveryDays?: number }>();
      await awsOnly(g, {
        action: `enable point-in-time recovery of table '${g.name}'`,
        missing: "point-in-time recovery",
        instead: LOCAL_PITR_INSTEAD,
      }, () =>
        dynamoClient(ctx, g).send(
          new UpdateContinuousBackupsCommand({
            TableName: g.name,
            PointInTimeRecoverySpecification: {
              PointInTimeRecoveryEnabled: true,
              ...(recoveryDays !== undefined
                ? { RecoveryPeriodInDays: recoveryDays }
                : {}),
            },
          }),
        ));
      emit(
        ctx,
        g,
        {
          table: g.name,
          pointInTimeRecovery: true,
          recoveryDays: recoveryDays ?? null,
        },
        () => ctx.io.out(`✓ Point-in-time recovery enabled for '${g.name}'`),
      );
      return EXIT.OK;
    }));

  pitr.command("restore")
    .description("Restore the table as of a time into a NEW table")
    .requiredOption(
      "--target-table <name>",
      "name of the new table",
      dynamoName("table name"),
    )
    .option(
      "--time <iso>",
      "restore time, e.g. 2026-01-15T10:00:00Z",
      isoTimeArg,
    )
    .option("--latest", "restore to the latest restorable time")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<
        { targetTable: string; time?: string; latest?: boolean }
      >();
      if ((o.time === undefined) === (o.latest !== true)) {
        throw new CliUsageError("Give exactly one of --time <iso> or --latest");
      }
      const when = o.time === undefined ? undefined : new Date(o.time);
      if (when && Number.isNaN(when.getTime())) {
        throw new CliUsageError(
          `Invalid --time '${o.time}': use an ISO 8601 time`,
        );
      }
      await awsOnly(g, {
        action: `restore table '${g.name}' to a point in time`,
        missing: "point-in-time recovery",
        instead: LOCAL_BACKUP_INSTEAD,
      }, () =>
        dynamoClient(ctx, g).send(
          new RestoreTableToPointInTimeCommand({
            SourceTableName: g.name,
            TargetTableName: o.targetTable,
            ...(when
              ? { RestoreDateTime: when }
              : { UseLatestRestorableTime: true }),
          }),
        ));
      emit(ctx, g, {
        sourceTable: g.name,
        targetTable: o.targetTable,
        restoreTime: when ? when.toISOString() : "latest",
        status: "CREATING",
      }, () =>
        ctx.io.out(
          `✓ Restore of '${g.name}' ${
            when
              ? `as of ${when.toISOString()}`
              : "to the latest restorable time"
          } into '${o.targetTable}' started`,
        ));
      return EXIT.OK;
    }));
  return pitr;
}

/**
 * Infrastructure commands: `deploy`, `upgrade`, `delete`, `status`, `list`
 * and `cfn-template`. Stacks are created and updated through change sets
 * with the template from `infra/template.ts`; with `--endpoint-url` the
 * table is created directly (DynamoDB Local, no stack).
 *
 * @module
 */
import { errorName } from "../core/_sdk_errors.ts";
import { sleep } from "../core/clock.ts";
import { registerNamespaceRecords } from "../core/namespace_registry.ts";
import {
  type CloudFormationClient,
  CreateChangeSetCommand,
  DeleteChangeSetCommand,
  DeleteStackCommand,
  DescribeChangeSetCommand,
  type DescribeChangeSetCommandOutput,
  DescribeStackEventsCommand,
  DescribeStackResourcesCommand,
  DescribeStacksCommand,
  ExecuteChangeSetCommand,
  type Parameter,
  type Stack,
  type Tag,
} from "@aws-sdk/client-cloudformation";
import {
  DeleteTableCommand,
  DescribeTableCommand,
  UpdateTableCommand,
} from "@aws-sdk/client-dynamodb";
import { createTableInput } from "../core/schema.ts";
import { Command, Option } from "commander";
import { CLIENT_VERSION, Repository, SCHEMA_VERSION } from "../mod.ts";
import {
  LOG_RETENTION_DAYS,
  renderTemplate,
  renderTemplateJson,
} from "../infra/template.ts";
import {
  action,
  type CliContext,
  CliExit,
  CliUsageError,
  cloudFormationClient,
  connect,
  dynamoClient,
  emit,
  EXIT,
  type GlobalConfig,
  intInRange,
  isTableMissing,
  readVersionState,
  renderTable,
  requireYes,
  resolveGlobals,
} from "./_context.ts";
import { awsOnly } from "./_aws_only.ts";
import { checkTable, describeIssue } from "./version.ts";
import { type Progress, startProgress } from "./_progress.ts";

/** Milliseconds between polls of a stack or change set. */
export const POLL_INTERVAL_MS = 5000;
/** Polls before a stack operation is reported as timed out (1 hour). */
const MAX_POLLS = 720;

/** Deploy flags that map to template parameters (absent = template default). */
export interface DeployFlags {
  /** `--worker-image`. */
  readonly workerImage?: string;
  /** `--worker-subnet-ids`. */
  readonly workerSubnetIds?: string;
  /** `--worker-security-group-ids`. */
  readonly workerSecurityGroupIds?: string;
  /** `--snapshot-windows`. */
  readonly snapshotWindows?: string;
  /** `--usage-retention-days`. */
  readonly usageRetentionDays?: number;
  /** `--pitr-recovery-days`. */
  readonly pitrRecoveryDays?: number;
  /** `--log-retention-days`. */
  readonly logRetentionDays?: string;
  /** `--alarms` / `--no-alarms`. */
  readonly alarms?: boolean;
  /** `--alarm-sns-topic`. */
  readonly alarmSnsTopic?: string;
  /** `--permission-boundary`. */
  readonly permissionBoundary?: string;
  /** `--iam` / `--no-iam`. */
  readonly iam?: boolean;
  /** `--create-iam-roles`. */
  readonly createIamRoles?: boolean;
  /** `--audit-archival` / `--no-audit-archival`. */
  readonly auditArchival?: boolean;
  /** `--audit-archive-glacier-days`. */
  readonly auditArchiveGlacierDays?: number;
  /** `--enable-deletion-protection`. */
  readonly enableDeletionProtection?: boolean;
  /** `--tag KEY=VALUE` (repeatable). */
  readonly tag?: readonly string[];
}

/**
 * Template parameters for a new stack: `SchemaVersion` (always current)
 * plus every flag that was given.
 *
 * @throws {CliUsageError} for `--create-iam-roles` with `--no-iam`
 */
export function deployParameters(flags: DeployFlags): Parameter[] {
  if (flags.createIamRoles && flags.iam === false) {
    throw new CliUsageError("--create-iam-roles cannot be used with --no-iam");
  }
  const p: Record<string, string | undefined> = {
    SchemaVersion: SCHEMA_VERSION,
    WorkerImage: flags.workerImage,
    WorkerSubnetIds: flags.workerSubnetIds,
    WorkerSecurityGroupIds: flags.workerSecurityGroupIds,
    SnapshotWindows: flags.snapshotWindows,
    SnapshotRetentionDays: flags.usageRetentionDays?.toString(),
    PITRRecoveryPeriodDays: flags.pitrRecoveryDays?.toString(),
    LogRetentionDays: flags.logRetentionDays,
    EnableAlarms: flags.alarms === false ? "false" : undefined,
    AlarmSNSTopicArn: flags.alarmSnsTopic,
    PermissionBoundary: flags.permissionBoundary,
    EnableIAM: flags.iam === false ? "false" : undefined,
    EnableIAMRoles: flags.createIamRoles ? "true" : undefined,
    EnableAuditArchival: flags.auditArchival === false ? "false" : undefined,
    AuditArchiveGlacierTransitionDays: flags.auditArchiveGlacierDays
      ?.toString(),
    EnableDeletionProtection: flags.enableDeletionProtection
      ? "true"
      : undefined,
  };
  return Object.entries(p).filter(([, v]) => v !== undefined).map((
    [ParameterKey, ParameterValue],
  ) => ({ ParameterKey, ParameterValue }));
}

/**
 * Stack tags: user tags first, then the managed discovery tags, which win.
 *
 * @throws {CliUsageError} for a tag without `=`
 */
export function stackTags(
  name: string,
  options: {
    userTags?: readonly string[];
    schemaVersion: string;
    workerVersion: string | null;
  },
): Tag[] {
  const tags = new Map<string, string>();
  for (const t of options.userTags ?? []) {
    const i = t.indexOf("=");
    if (i <= 0) {
      throw new CliUsageError(`Invalid --tag '${t}': use KEY=VALUE`);
    }
    tags.set(t.slice(0, i), t.slice(i + 1));
  }
  tags.set("ManagedBy", "zae-limiter");
  tags.set("zae-limiter:name", name.replace(/^ZAEL-/, ""));
  tags.set("zae-limiter:type", "limiter");
  tags.set("zae-limiter:version", CLIENT_VERSION);
  tags.set("zae-limiter:schema-version", options.schemaVersion);
  if (options.workerVersion) {
    tags.set("zae-limiter:lambda-version", options.workerVersion);
  }
  return [...tags].map(([Key, Value]) => ({ Key, Value }));
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The stack, or `null` when it does not exist (or was deleted). */
export async function describeStack(
  cfn: CloudFormationClient,
  name: string,
): Promise<Stack | null> {
  try {
    const out = await cfn.send(new DescribeStacksCommand({ StackName: name }));
    const stack = out.Stacks?.[0];
    return stack && stack.StackStatus !== "DELETE_COMPLETE" ? stack : null;
  } catch (e) {
    if (
      errorName(e) === "ValidationError" &&
      /does not exist/.test(errorMessage(e))
    ) {
      return null;
    }
    throw e;
  }
}

/** Up to 20 failed stack events, newest first, one line each. */
export async function failedEvents(
  cfn: CloudFormationClient,
  name: string,
): Promise<string[]> {
  try {
    const out = await cfn.send(
      new DescribeStackEventsCommand({ StackName: name }),
    );
    return (out.StackEvents ?? [])
      .filter((e) => (e.ResourceStatus ?? "").endsWith("FAILED"))
      .slice(0, 20)
      .map((e) =>
        `${e.Timestamp?.toISOString() ?? "-"} ${e.LogicalResourceId ?? "?"} (${
          e.ResourceType ?? "?"
        }) ${e.ResourceStatus ?? "?"}: ${e.ResourceStatusReason ?? ""}`
      );
  } catch {
    return [];
  }
}

async function failWithEvents(
  ctx: CliContext,
  cfn: CloudFormationClient,
  name: string,
  reason: string,
): Promise<never> {
  const events = await failedEvents(cfn, name);
  if (events.length > 0) {
    ctx.io.err("Failing stack events (newest first):");
    for (const e of events) ctx.io.err(`  ${e}`);
  }
  throw new CliExit(EXIT.FAILURE, reason);
}

/** What a stack wait shows progress of. */
export interface StackWatch {
  /** Start of the progress line, e.g. `Creating stack 'prod'`. */
  readonly label: string;
  /** Logical IDs of the resources the operation changes (the total), or `null` when unknown. */
  readonly resources: ReadonlySet<string> | null;
  /** The newest stack event before the operation: only later events count. */
  readonly sinceEventId: string | null;
  /** Show nothing (`--output json`). */
  readonly quiet: boolean;
}

/** Stack event statuses that end a resource's part of an operation. */
const RESOURCE_DONE = /_(COMPLETE|FAILED|SKIPPED)$/;

/**
 * The newest event of a stack, or `null` (no stack, or the events cannot be
 * read: progress is best effort and never fails an operation).
 */
async function latestEventId(
  cfn: CloudFormationClient,
  name: string,
): Promise<string | null> {
  try {
    const out = await cfn.send(
      new DescribeStackEventsCommand({ StackName: name }),
    );
    return out.StackEvents?.[0]?.EventId ?? null;
  } catch {
    return null;
  }
}

/** Logical IDs of a stack's resources, or `null` when they cannot be read. */
async function stackResourceIds(
  cfn: CloudFormationClient,
  name: string,
): Promise<Set<string> | null> {
  try {
    const out = await cfn.send(
      new DescribeStackResourcesCommand({ StackName: name }),
    );
    const ids = (out.StackResources ?? []).flatMap((r) =>
      r.LogicalResourceId ? [r.LogicalResourceId] : []
    );
    return ids.length > 0 ? new Set(ids) : null;
  } catch {
    return null;
  }
}

/**
 * How many resources of the watch have finished since `sinceEventId`
 * (newest events first, at most 10 pages), or `null` when the events
 * cannot be read.
 */
async function finishedResources(
  cfn: CloudFormationClient,
  name: string,
  watch: StackWatch,
): Promise<number | null> {
  const done = new Set<string>();
  try {
    let token: string | undefined;
    for (let page = 0; page < 10; page++) {
      const out = await cfn.send(
        new DescribeStackEventsCommand({
          StackName: name,
          ...(token ? { NextToken: token } : {}),
        }),
      );
      for (const e of out.StackEvents ?? []) {
        if (e.EventId === watch.sinceEventId) return done.size;
        const id = e.LogicalResourceId;
        const counted = watch.resources
          ? id !== undefined && watch.resources.has(id)
          : e.ResourceType !== "AWS::CloudFormation::Stack";
        if (id && counted && RESOURCE_DONE.test(e.ResourceStatus ?? "")) {
          done.add(id);
        }
      }
      token = out.NextToken;
      if (!token) break;
    }
    return done.size;
  } catch {
    return null;
  }
}

/** A progress display for a wait on CloudFormation, shown at once. */
function stackProgress(ctx: CliContext, watch: StackWatch): Progress {
  return startProgress(ctx, {
    format: watch.resources
      ? "{label}: {status} {bar} {value}/{total} resources, {duration_formatted}"
      : "{label}: {status}, {value} resource(s) done, {duration_formatted}",
    total: watch.resources?.size ?? 0,
    payload: { label: watch.label, status: "waiting" },
    delayMs: 0,
  }, watch.quiet);
}

/**
 * Polls until the stack leaves `*_IN_PROGRESS`, showing how many of the
 * watched resources are done; fails unless it reaches `success`.
 */
async function waitForStack(
  ctx: CliContext,
  cfn: CloudFormationClient,
  name: string,
  success: string,
  watch: StackWatch,
): Promise<Stack | null> {
  const progress = stackProgress(ctx, watch);
  let done = 0;
  try {
    for (let i = 0; i < MAX_POLLS; i++) {
      const stack = await describeStack(cfn, name);
      const status = stack?.StackStatus ?? "DELETE_COMPLETE";
      if (status === success) {
        progress.update(watch.resources?.size ?? done, { status });
        return stack;
      }
      done = (await finishedResources(cfn, name, watch)) ?? done;
      progress.update(done, { status });
      if (!status.endsWith("_IN_PROGRESS")) {
        progress.stop();
        return await failWithEvents(
          ctx,
          cfn,
          name,
          `Stack '${name}' ended in ${status}${
            stack?.StackStatusReason ? `: ${stack.StackStatusReason}` : ""
          }`,
        );
      }
      await ctx.sleep(POLL_INTERVAL_MS);
    }
  } finally {
    progress.stop();
  }
  throw new CliExit(
    EXIT.FAILURE,
    `Stack '${name}' did not reach ${success} within ${
      (MAX_POLLS * POLL_INTERVAL_MS) / 60000
    } minutes`,
  );
}

/** Runs a cleanup call whose failure must not hide the original problem. */
async function bestEffort(fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch {
    // Cleanup only.
  }
}

function noChanges(reason: string): boolean {
  return /didn't contain changes|No updates are to be performed/i.test(reason);
}

/** What {@linkcode runChangeSet} did. */
type ChangeSetOutcome =
  | {
    readonly kind: "executed";
    /** Logical IDs of the resources the change set adds, modifies or removes. */
    readonly resources: ReadonlySet<string> | null;
    /** The newest stack event before the execution. */
    readonly sinceEventId: string | null;
  }
  | { readonly kind: "no-changes" };

/** Logical IDs in a ready change set (every page), or `null` when it lists none. */
async function changedResources(
  cfn: CloudFormationClient,
  first: DescribeChangeSetCommandOutput,
  stackName: string,
  changeSet: string,
): Promise<Set<string> | null> {
  const ids = new Set<string>();
  let page = first;
  try {
    for (let i = 0; i < 10; i++) {
      for (const c of page.Changes ?? []) {
        const id = c.ResourceChange?.LogicalResourceId;
        if (id) ids.add(id);
      }
      if (!page.NextToken) break;
      page = await cfn.send(
        new DescribeChangeSetCommand({
          StackName: stackName,
          ChangeSetName: changeSet,
          NextToken: page.NextToken,
        }),
      );
    }
  } catch {
    // Progress only: a partial list is a smaller total.
  }
  return ids.size > 0 ? ids : null;
}

/**
 * Creates a change set, waits until it is ready (with progress), and
 * executes it. Returns `"no-changes"` (and deletes the change set) when
 * there is nothing to do.
 */
async function runChangeSet(
  ctx: CliContext,
  cfn: CloudFormationClient,
  input: ConstructorParameters<typeof CreateChangeSetCommand>[0],
  quiet: boolean,
): Promise<ChangeSetOutcome> {
  const stackName = input.StackName ?? "";
  const created = await cfn.send(new CreateChangeSetCommand(input));
  const changeSet = created.Id ?? input.ChangeSetName ?? "";
  const progress = startProgress(ctx, {
    format:
      "Preparing change set for stack '{stack}': {status}, {duration_formatted}",
    payload: { stack: stackName, status: "CREATE_PENDING" },
    delayMs: 0,
  }, quiet);
  try {
    for (let i = 0; i < MAX_POLLS; i++) {
      const d = await cfn.send(
        new DescribeChangeSetCommand({
          StackName: stackName,
          ChangeSetName: changeSet,
        }),
      );
      progress.update(0, { status: d.Status ?? "?" });
      if (d.Status === "CREATE_COMPLETE") {
        progress.stop();
        const resources = await changedResources(
          cfn,
          d,
          stackName,
          changeSet,
        );
        const sinceEventId = await latestEventId(cfn, stackName);
        await cfn.send(
          new ExecuteChangeSetCommand({
            StackName: stackName,
            ChangeSetName: changeSet,
          }),
        );
        return { kind: "executed", resources, sinceEventId };
      }
      if (d.Status === "FAILED") {
        progress.stop();
        const reason = d.StatusReason ?? "unknown reason";
        await bestEffort(() =>
          cfn.send(
            new DeleteChangeSetCommand({
              StackName: stackName,
              ChangeSetName: changeSet,
            }),
          )
        );
        if (noChanges(reason)) return { kind: "no-changes" };
        if (input.ChangeSetType === "CREATE") {
          // The failed CREATE change set leaves an empty REVIEW_IN_PROGRESS stack.
          await bestEffort(() =>
            cfn.send(new DeleteStackCommand({ StackName: stackName }))
          );
        }
        throw new CliExit(
          EXIT.FAILURE,
          `Change set for stack '${stackName}' failed: ${reason}`,
        );
      }
      await ctx.sleep(POLL_INTERVAL_MS);
    }
  } finally {
    progress.stop();
  }
  throw new CliExit(
    EXIT.FAILURE,
    `Change set for stack '${stackName}' was not ready in time`,
  );
}

function changeSetName(ctx: CliContext, kind: string): string {
  return `zae-limiter-${kind}-${ctx.now()}`;
}

async function deployLocal(ctx: CliContext, g: GlobalConfig): Promise<number> {
  const client = dynamoClient(ctx, g);
  const state = await readVersionState(client, g.name);
  if (state.kind === "record") {
    ctx.io.out(
      `✓ Table '${g.name}' already exists (schema ${state.record.schemaVersion}); nothing changed`,
    );
    ctx.io.out("  Run 'zae-limiter check' to compare it with this client.");
    return EXIT.OK;
  }
  if (state.kind === "legacy") {
    throw new CliExit(
      EXIT.FAILURE,
      `Table '${g.name}' uses the pre-0.10 key layout (schema ${state.schemaVersion}); run the namespace-keys migration instead of deploy`,
    );
  }
  ctx.io.out(`Deploying table: ${g.name} (endpoint ${g.endpointUrl})`);
  ctx.io.out(
    "  Stack options are ignored with --endpoint-url: only the table is created.",
  );
  const repo = await Repository.open({
    client,
    stack: g.name,
    provision: true,
  });
  await repo.setVersionRecord({
    schemaVersion: SCHEMA_VERSION,
    clientMinVersion: "0.0.0",
    lambdaVersion: null,
    updatedBy: `cli:${CLIENT_VERSION}`,
  });
  const ns = await repo.getNamespace("default");
  ctx.io.out(
    state.kind === "no-table"
      ? `✓ Table '${g.name}' created`
      : `✓ Table '${g.name}' initialized`,
  );
  ctx.io.out(`✓ Version record initialized (schema ${SCHEMA_VERSION})`);
  ctx.io.out(`✓ Default namespace registered (${ns?.namespaceId ?? "?"})`);
  return EXIT.OK;
}

async function initVersionRecord(
  ctx: CliContext,
  g: GlobalConfig,
  workerVersion: string | null,
): Promise<void> {
  const client = dynamoClient(ctx, g);
  // The stack created the table: provisioning open() writes the first record and registers `default`.
  const repo = await Repository.open({
    client,
    stack: g.name,
    provision: true,
  });
  await repo.setVersionRecord({
    schemaVersion: SCHEMA_VERSION,
    clientMinVersion: "0.0.0",
    lambdaVersion: workerVersion,
    updatedBy: `cli:${CLIENT_VERSION}`,
  });
  ctx.io.out(`✓ Version record initialized (schema ${SCHEMA_VERSION})`);
  ctx.io.out("✓ Default namespace registered");
}

function makeDeployCommand(ctx: CliContext): Command {
  return new Command("deploy")
    .description(
      "Create the stack (or, with --endpoint-url, the table) and initialize the version record",
    )
    .option(
      "--worker-image <image>",
      "stream worker container image (empty: no worker)",
    )
    .option(
      "--worker-subnet-ids <ids>",
      "comma-separated subnets of the worker tasks",
    )
    .option(
      "--worker-security-group-ids <ids>",
      "comma-separated security groups of the worker",
    )
    .option(
      "--snapshot-windows <list>",
      "usage snapshot windows (template default hourly,daily)",
    )
    .option(
      "--usage-retention-days <n>",
      "days usage snapshots are kept (default 90)",
      intInRange(1, 3650),
    )
    .option(
      "--pitr-recovery-days <n>",
      "point-in-time recovery window, 1-35 days",
      intInRange(1, 35),
    )
    .addOption(
      new Option(
        "--log-retention-days <n>",
        "worker log retention in days (default 30)",
      )
        .choices(LOG_RETENTION_DAYS),
    )
    .option("--no-alarms", "do not create CloudWatch alarms")
    .option("--alarm-sns-topic <arn>", "SNS topic for alarm notifications")
    .option(
      "--permission-boundary <arn>",
      "permissions boundary policy ARN for every role",
    )
    .option("--no-iam", "create no IAM policies or roles")
    .option("--create-iam-roles", "create the app, admin and read-only roles")
    .option("--no-audit-archival", "do not create the audit archive bucket")
    .option(
      "--audit-archive-glacier-days <n>",
      "days before archived audit objects move to Glacier (default 90)",
      intInRange(1, 3650),
    )
    .option(
      "--enable-deletion-protection",
      "enable deletion protection on the table",
    )
    .option(
      "-t, --tag <key=value>",
      "stack tag; repeatable",
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .option("--no-wait", "return once the stack creation has started")
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      if (g.endpointUrl) return await deployLocal(ctx, g);
      const flags = cmd.opts<DeployFlags & { wait: boolean }>();
      const parameters = deployParameters(flags);
      const workerVersion = flags.workerImage ? CLIENT_VERSION : null;
      const tags = stackTags(g.name, {
        ...(flags.tag ? { userTags: flags.tag } : {}),
        schemaVersion: SCHEMA_VERSION,
        workerVersion,
      });
      ctx.io.out(`Deploying stack: ${g.name}`);
      ctx.io.out(`  Table name:      ${g.name}`);
      ctx.io.out(`  Region:          ${g.region ?? "default"}`);
      for (const p of parameters) {
        ctx.io.out(`  ${p.ParameterKey}: ${p.ParameterValue}`);
      }
      const cfn = cloudFormationClient(ctx, g);
      const existing = await describeStack(cfn, g.name);
      if (existing && existing.StackStatus !== "REVIEW_IN_PROGRESS") {
        ctx.io.out(
          `✓ Stack ${
            (existing.StackStatus ?? "").toLowerCase().replace(/_/g, " ")
          } (already exists; not changed)`,
        );
        ctx.io.out(
          "  Run 'zae-limiter upgrade' to apply the current template.",
        );
        return EXIT.OK;
      }
      const outcome = await runChangeSet(ctx, cfn, {
        StackName: g.name,
        ChangeSetName: changeSetName(ctx, "create"),
        ChangeSetType: "CREATE",
        TemplateBody: JSON.stringify(renderTemplate()),
        Parameters: parameters,
        Capabilities: ["CAPABILITY_NAMED_IAM"],
        Tags: tags,
      }, g.output === "json");
      if (outcome.kind === "no-changes") {
        throw new CliExit(EXIT.FAILURE, `Stack '${g.name}' was not created`);
      }
      if (!flags.wait) {
        ctx.io.out(
          "Stack creation initiated. Run 'zae-limiter status' to follow it; the version record is written by a deploy that waits.",
        );
        return EXIT.OK;
      }
      const stack = await waitForStack(ctx, cfn, g.name, "CREATE_COMPLETE", {
        label: `Creating stack '${g.name}'`,
        resources: outcome.resources,
        sinceEventId: outcome.sinceEventId,
        quiet: g.output === "json",
      });
      ctx.io.out(`✓ Stack create complete`);
      ctx.io.out(`  Stack ID: ${stack?.StackId ?? "-"}`);
      await initVersionRecord(ctx, g, workerVersion);
      return EXIT.OK;
    }));
}

/**
 * The image reference with its tag replaced by `tag` (added when it has
 * none); `null` when it is pinned by digest.
 */
function retagImage(image: string, tag: string): string | null {
  if (image.includes("@")) return null;
  const slash = image.lastIndexOf("/");
  const colon = image.lastIndexOf(":");
  const repo = colon > slash ? image.slice(0, colon) : image;
  return `${repo}:${tag}`;
}

/**
 * `upgrade --endpoint-url`: there is no stack, so only the template's
 * change to the table itself is applied, as CloudFormation would: indexes
 * the table lacks (GSI4 on a 0.9 table) are created and awaited. On a
 * pre-0.10 table `default` is registered too (seed 002 step 1), so the
 * runbook can be rehearsed locally in its own order. IAM policies and
 * workers exist only on AWS, which the output says.
 */
async function upgradeLocal(
  ctx: CliContext,
  g: GlobalConfig,
  workersOnly: boolean,
): Promise<number> {
  if (workersOnly) {
    throw new CliExit(
      EXIT.FAILURE,
      `Cannot upgrade workers of '${g.name}': ${g.endpointUrl} (DynamoDB Local) has no stack and no workers; run 'zae-limiter worker run' locally instead`,
    );
  }
  const result = await checkTable(ctx, g);
  if (result.kind !== "checked") {
    throw new CliExit(
      EXIT.FAILURE,
      `Infrastructure not initialized (${result.kind}). Run 'zae-limiter deploy --name ${g.name}' first.`,
    );
  }
  const legacy = result.state.kind === "legacy"
    ? result.state.schemaVersion
    : null;
  if (!result.compatibility.compatible && legacy === null) {
    ctx.io.err(
      "✗ Cannot upgrade: the table is not compatible with this client",
    );
    for (const i of result.compatibility.issues) {
      ctx.io.err(`  - ${describeIssue(i)}`);
    }
    return EXIT.INCOMPATIBLE;
  }
  const client = dynamoClient(ctx, g);
  const described = (await client.send(
    new DescribeTableCommand({ TableName: g.name }),
  )).Table;
  const have = new Set(
    (described?.GlobalSecondaryIndexes ?? []).map((i) => i.IndexName ?? ""),
  );
  const wanted = createTableInput(g.name);
  ctx.io.out(
    `Upgrading local table: ${g.name} (no stack at ${g.endpointUrl}: only the template's table changes apply; IAM policies and workers exist on AWS only)`,
  );
  for (const index of wanted.GlobalSecondaryIndexes ?? []) {
    const name = index.IndexName ?? "";
    if (have.has(name)) continue;
    const keys = new Set((index.KeySchema ?? []).map((k) => k.AttributeName));
    await client.send(
      new UpdateTableCommand({
        TableName: g.name,
        AttributeDefinitions: (wanted.AttributeDefinitions ?? []).filter((a) =>
          keys.has(a.AttributeName)
        ),
        GlobalSecondaryIndexUpdates: [{
          Create: {
            IndexName: name,
            KeySchema: index.KeySchema,
            Projection: index.Projection,
            ...(index.ProvisionedThroughput
              ? { ProvisionedThroughput: index.ProvisionedThroughput }
              : {}),
          },
        }],
      }),
    );
    for (let i = 0;; i++) {
      const d = await client.send(
        new DescribeTableCommand({ TableName: g.name }),
      );
      const status = d.Table?.GlobalSecondaryIndexes?.find((x) =>
        x.IndexName === name
      )?.IndexStatus;
      if (status === "ACTIVE") break;
      if (i >= 600) {
        throw new CliExit(
          EXIT.FAILURE,
          `Cannot upgrade table '${g.name}': index ${name} is still ${
            status ?? "missing"
          } after 60 s`,
        );
      }
      await ctx.sleep(100);
    }
    ctx.io.out(`✓ Index ${name} created`);
  }
  if (legacy === null) {
    ctx.io.out("✓ Upgrade complete!");
    return EXIT.OK;
  }
  const id = await registerNamespaceRecords({
    client,
    table: g.name,
    clock: { now: () => ctx.now(), sleep },
  }, "default");
  ctx.io.out(`✓ Namespace 'default' registered: ${id}`);
  ctx.io.out(
    `  The data still uses the pre-0.10 key layout (schema ${legacy}); GSI4 starts empty.`,
  );
  ctx.io.out(
    `  Next: 'zae-limiter namespace show default --name ${g.name}', then 'zae-limiter migrate plan --name ${g.name}' and 'migrate apply --yes'.`,
  );
  ctx.io.out("✓ Upgrade complete (data migration pending)");
  return EXIT.OK;
}

function makeUpgradeCommand(ctx: CliContext): Command {
  return new Command("upgrade")
    .description(
      "Apply the current template to an existing stack through a change set (never changes the schema version)",
    )
    .option(
      "--workers-only",
      "keep the deployed template and update only the worker image",
    )
    .addOption(
      new Option("--lambda-only", "alias of --workers-only").hideHelp(),
    )
    .option("--worker-image <image>", "stream worker container image to deploy")
    .addHelpText(
      "after",
      `
Schema changes are never made here: when the table needs a migration,
upgrade stops (exit 3) and names the migration to run.
Exit codes: 0 upgraded or already up to date, 1 failure, 2 usage error,
3 INCOMPATIBLE (migration or newer client required).`,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<
        { workersOnly?: boolean; lambdaOnly?: boolean; workerImage?: string }
      >();
      const workersOnly = Boolean(o.workersOnly || o.lambdaOnly);
      if (g.endpointUrl) return await upgradeLocal(ctx, g, workersOnly);
      const result = await checkTable(ctx, g);
      if (result.kind !== "checked") {
        throw new CliExit(
          EXIT.FAILURE,
          `Infrastructure not initialized (${result.kind}). Run 'zae-limiter deploy --name ${g.name}' first.`,
        );
      }
      // Seed 002 step 1: a pre-0.10 table gets the template (GSI4, the
      // namespace policies) and the "default" registration before its data
      // is migrated; its version record stays where the migration expects it.
      const legacy = result.state.kind === "legacy" && !workersOnly
        ? result.state.schemaVersion
        : null;
      if (!result.compatibility.compatible && legacy === null) {
        ctx.io.err(
          "✗ Cannot upgrade: the table is not compatible with this client",
        );
        for (const i of result.compatibility.issues) {
          ctx.io.err(`  - ${describeIssue(i)}`);
        }
        return EXIT.INCOMPATIBLE;
      }
      const record = result.state.kind === "record"
        ? result.state.record
        : legacy !== null && result.state.kind === "legacy"
        ? result.state.record
        : null;
      if (record === null) return EXIT.INCOMPATIBLE;
      const cfn = cloudFormationClient(ctx, g);
      const stack = await describeStack(cfn, g.name);
      if (!stack) {
        throw new CliExit(EXIT.FAILURE, `Stack '${g.name}' not found`);
      }
      if ((stack.StackStatus ?? "").endsWith("_IN_PROGRESS")) {
        throw new CliExit(
          EXIT.FAILURE,
          `Stack '${g.name}' is busy (${stack.StackStatus}); try again later`,
        );
      }
      const previous = new Map(
        (stack.Parameters ?? []).map((
          p,
        ) => [p.ParameterKey ?? "", p.ParameterValue ?? ""]),
      );
      // Seed 000's `upgrade --lambda-only`: without --worker-image, the
      // deployed worker image moves to this client's version tag.
      let chosenImage = o.workerImage;
      if (workersOnly && chosenImage === undefined) {
        const deployed = previous.get("WorkerImage") ?? "";
        if (deployed === "") {
          ctx.io.out(
            `No workers are deployed on stack '${g.name}' (WorkerImage is empty): nothing to update. Deploy them with 'upgrade --worker-image <image>'.`,
          );
          return EXIT.OK;
        }
        const retagged = retagImage(deployed, CLIENT_VERSION);
        if (retagged === null) {
          throw new CliUsageError(
            `--workers-only without --worker-image moves the deployed image to tag ${CLIENT_VERSION}, but '${deployed}' is pinned by digest: pass --worker-image <image>`,
          );
        }
        chosenImage = retagged;
        ctx.io.out(
          `Worker image: ${deployed} -> ${retagged} (this client's version; --worker-image chooses another)`,
        );
      }
      const keys = workersOnly
        ? [...previous.keys()]
        : Object.keys(renderTemplate().Parameters).filter((k) =>
          previous.has(k)
        );
      const parameters: Parameter[] = keys.map((k) =>
        k === "WorkerImage" && chosenImage
          ? { ParameterKey: k, ParameterValue: chosenImage }
          : { ParameterKey: k, UsePreviousValue: true }
      );
      if (chosenImage && !previous.has("WorkerImage") && !workersOnly) {
        parameters.push({
          ParameterKey: "WorkerImage",
          ParameterValue: chosenImage,
        });
      }
      const workerImage = chosenImage ?? previous.get("WorkerImage") ?? "";
      const workerVersion = workerImage ? CLIENT_VERSION : record.lambdaVersion;
      const userTags = (stack.Tags ?? [])
        .filter((t) =>
          t.Key && !t.Key.startsWith("zae-limiter:") && t.Key !== "ManagedBy"
        )
        .map((t) => `${t.Key}=${t.Value ?? ""}`);
      ctx.io.out(
        `Upgrading stack: ${g.name}${workersOnly ? " (workers only)" : ""}`,
      );
      ctx.io.out(`  Schema (unchanged): ${record.schemaVersion}`);
      ctx.io.out(
        `  Workers: ${record.lambdaVersion ?? "unknown"} -> ${
          workerVersion ?? "none"
        }`,
      );
      const outcome = await runChangeSet(ctx, cfn, {
        StackName: g.name,
        ChangeSetName: changeSetName(ctx, "upgrade"),
        ChangeSetType: "UPDATE",
        ...(workersOnly
          ? { UsePreviousTemplate: true }
          : { TemplateBody: JSON.stringify(renderTemplate()) }),
        Parameters: parameters,
        Capabilities: ["CAPABILITY_NAMED_IAM"],
        Tags: stackTags(g.name, {
          userTags,
          schemaVersion: record.schemaVersion,
          workerVersion,
        }),
      }, g.output === "json");
      if (outcome.kind === "no-changes") {
        ctx.io.out("✓ Stack already up to date (no changes)");
      } else {
        await waitForStack(ctx, cfn, g.name, "UPDATE_COMPLETE", {
          label: `Updating stack '${g.name}'`,
          resources: outcome.resources,
          sinceEventId: outcome.sinceEventId,
          quiet: g.output === "json",
        });
        ctx.io.out("✓ Stack update complete");
      }
      if (legacy !== null) {
        const id = await registerNamespaceRecords({
          client: dynamoClient(ctx, g),
          table: g.name,
          clock: { now: () => ctx.now(), sleep },
        }, "default");
        ctx.io.out(`✓ Namespace 'default' registered: ${id}`);
        ctx.io.out(
          `  The data still uses the pre-0.10 key layout (schema ${legacy}); GSI4 starts empty.`,
        );
        ctx.io.out(
          `  Next: 'zae-limiter namespace show default --name ${g.name}', then 'zae-limiter migrate plan --name ${g.name}' and 'migrate apply --yes'.`,
        );
        ctx.io.out("✓ Upgrade complete (data migration pending)");
        return EXIT.OK;
      }
      if (workerVersion !== record.lambdaVersion) {
        const repo = await connect(ctx, cmd, { namespace: "default" });
        await repo.setVersionRecord({
          schemaVersion: record.schemaVersion,
          clientMinVersion: record.clientMinVersion,
          lambdaVersion: workerVersion,
          updatedBy: `cli:${CLIENT_VERSION}`,
        });
        ctx.io.out(
          `✓ Version record updated (workers ${
            workerVersion ?? "none"
          }, schema ${record.schemaVersion} unchanged)`,
        );
      }
      ctx.io.out("✓ Upgrade complete!");
      return EXIT.OK;
    }));
}

function makeDeleteCommand(ctx: CliContext): Command {
  return new Command("delete")
    .description(
      "Delete the stack; the table is retained (with --endpoint-url the local table is kept too, unless --drop-table)",
    )
    .option("-y, --yes", "confirm")
    .option("--no-wait", "return once deletion has started")
    .option(
      "--drop-table",
      "with --endpoint-url: also delete the local table and its data",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<
        { yes?: boolean; wait: boolean; dropTable?: boolean }
      >();
      if (o.dropTable && !g.endpointUrl) {
        throw new CliUsageError(
          "--drop-table is for --endpoint-url (a local table); on AWS the table is retained by the stack's DeletionPolicy",
        );
      }
      if (g.endpointUrl && !o.dropTable) {
        // As on AWS (DeletionPolicy: Retain): the data stays.
        requireYes(o.yes, `delete stack '${g.name}'`);
        ctx.io.out(
          `Table '${g.name}' kept with its data: ${g.endpointUrl} has no CloudFormation stack to delete, and on AWS 'delete' retains the table too. Pass --drop-table to delete the local table.`,
        );
        return EXIT.OK;
      }
      if (g.endpointUrl) {
        requireYes(o.yes, `delete local table '${g.name}' and all its data`);
        try {
          await dynamoClient(ctx, g).send(
            new DeleteTableCommand({ TableName: g.name }),
          );
        } catch (e) {
          if (!isTableMissing(e)) throw e;
          ctx.io.out(`Table '${g.name}' does not exist`);
          return EXIT.OK;
        }
        ctx.io.out(`✓ Local table '${g.name}' deleted`);
        return EXIT.OK;
      }
      requireYes(o.yes, `delete stack '${g.name}'`);
      const cfn = cloudFormationClient(ctx, g);
      if (!(await describeStack(cfn, g.name))) {
        ctx.io.out(`Stack '${g.name}' does not exist; nothing to delete`);
        return EXIT.OK;
      }
      ctx.io.out(`Deleting stack: ${g.name}`);
      const resources = o.wait ? await stackResourceIds(cfn, g.name) : null;
      const sinceEventId = o.wait ? await latestEventId(cfn, g.name) : null;
      await cfn.send(new DeleteStackCommand({ StackName: g.name }));
      if (o.wait) {
        await waitForStack(ctx, cfn, g.name, "DELETE_COMPLETE", {
          label: `Deleting stack '${g.name}'`,
          resources,
          sinceEventId,
          quiet: g.output === "json",
        });
        ctx.io.out(`✓ Stack '${g.name}' deleted successfully`);
      } else {
        ctx.io.out("Stack deletion initiated.");
      }
      ctx.io.out(
        `  Table '${g.name}' is retained with its data (DeletionPolicy: Retain). ` +
          "Redeploying with the same name needs the table deleted or restored under another name; " +
          "back it up first ('zae-limiter backup create').",
      );
      return EXIT.OK;
    }));
}

function fmtCount(n: number | undefined): string {
  if (n === undefined) return "N/A";
  if (n >= 1e6) return `~${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `~${(n / 1e3).toFixed(1)}K`;
  return `~${n}`;
}

function fmtBytes(n: number | undefined): string {
  if (n === undefined) return "N/A";
  const units = ["B", "KB", "MB", "GB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `~${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

function makeStatusCommand(ctx: CliContext): Command {
  return new Command("status")
    .description("Show stack, table and version status (read-only)")
    .addHelpText(
      "after",
      "\nExit codes: 0 available, 1 table unavailable or stack failed, 3 the table needs a migration before this client can use it.",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const client = dynamoClient(ctx, g);
      const t0 = ctx.now();
      let table:
        | {
          status: string;
          items?: number;
          bytes?: number;
          stream: boolean;
          deletionProtection: boolean;
        }
        | null = null;
      let tableError: string | null = null;
      try {
        const d = (await client.send(
          new DescribeTableCommand({ TableName: g.name }),
        )).Table;
        table = {
          status: d?.TableStatus ?? "UNKNOWN",
          ...(d?.ItemCount !== undefined ? { items: d.ItemCount } : {}),
          ...(d?.TableSizeBytes !== undefined
            ? { bytes: d.TableSizeBytes }
            : {}),
          stream: d?.StreamSpecification?.StreamEnabled ?? false,
          deletionProtection: d?.DeletionProtectionEnabled ?? false,
        };
      } catch (e) {
        if (!isTableMissing(e)) tableError = errorMessage(e);
      }
      const latency = ctx.now() - t0;
      let stack: Stack | null = null;
      let stackError: string | null = null;
      if (!g.endpointUrl) {
        try {
          stack = await describeStack(cloudFormationClient(ctx, g), g.name);
        } catch (e) {
          stackError = errorMessage(e);
        }
      }
      const version = table
        ? await readVersionState(client, g.name)
        : { kind: "no-table" as const };
      const stackStatus = stack?.StackStatus ?? null;
      const status = {
        name: g.name,
        region: g.region ?? "default",
        available: table !== null,
        latencyMs: table ? latency : null,
        stack: g.endpointUrl ? "n/a (--endpoint-url)" : stackStatus,
        stackError,
        table,
        tableError,
        version: version.kind === "record"
          ? version.record
          : version.kind === "legacy"
          ? { legacySchemaVersion: version.schemaVersion }
          : version.kind,
        outputs: Object.fromEntries(
          (stack?.Outputs ?? []).map((
            o,
          ) => [o.OutputKey ?? "", o.OutputValue ?? ""]),
        ),
      };
      emit(ctx, g, status, () => {
        ctx.io.out(`Status: ${g.name}`);
        ctx.io.out("=".repeat(50));
        ctx.io.out("Connectivity");
        ctx.io.out(`  Available:     ${table ? "✓ Yes" : "✗ No"}`);
        ctx.io.out(`  Latency:       ${table ? `${latency}ms` : "N/A"}`);
        ctx.io.out(`  Region:        ${status.region}`);
        ctx.io.out("Infrastructure");
        ctx.io.out(
          `  Stack:         ${
            g.endpointUrl ? "n/a (--endpoint-url)" : stackStatus ??
              (stackError ? `unknown (${stackError})` : "Not found")
          }`,
        );
        ctx.io.out(
          `  Table:         ${
            table?.status ??
              (tableError ? `unknown (${tableError})` : "Not found")
          }`,
        );
        ctx.io.out(
          `  Stream:        ${table?.stream ? "Enabled" : "Disabled"}`,
        );
        ctx.io.out("Versions");
        ctx.io.out(`  Client:        ${CLIENT_VERSION}`);
        ctx.io.out(
          `  Schema:        ${
            version.kind === "record"
              ? version.record.schemaVersion
              : version.kind === "legacy"
              ? `${version.schemaVersion} (pre-0.10 layout)`
              : version.kind === "no-table"
              ? "N/A"
              : "not initialized"
          }`,
        );
        ctx.io.out(
          `  Workers:       ${
            version.kind === "record"
              ? version.record.lambdaVersion ?? "unknown"
              : "N/A"
          }`,
        );
        ctx.io.out("Table Metrics");
        ctx.io.out(`  Items:         ${fmtCount(table?.items)}`);
        ctx.io.out(`  Size:          ${fmtBytes(table?.bytes)}`);
        const roles = ["AppRoleArn", "AdminRoleArn", "ReadOnlyRoleArn"]
          .filter((k) => status.outputs[k]);
        if (roles.length > 0) {
          ctx.io.out("IAM Roles");
          for (const k of roles) ctx.io.out(`  ${k}: ${status.outputs[k]}`);
        }
        ctx.io.out("");
        if (!table) ctx.io.out("✗ Infrastructure is not available");
        else if (version.kind === "legacy") {
          ctx.io.out(
            `✗ Table uses the pre-0.10 key layout (schema ${version.schemaVersion}): no ${CLIENT_VERSION} client can open it. Run 'zae-limiter upgrade --name ${g.name}', then 'zae-limiter migrate apply --name ${g.name} --yes'.`,
          );
        } else if (stackStatus && /FAILED|ROLLBACK/.test(stackStatus)) {
          ctx.io.out("✗ Stack is in failed state");
        } else if (stackStatus?.endsWith("IN_PROGRESS")) {
          ctx.io.out("⏳ Operation in progress...");
        } else ctx.io.out("✓ Infrastructure is ready");
      });
      if (!table) return EXIT.FAILURE;
      if (stackStatus && /FAILED|ROLLBACK/.test(stackStatus)) {
        return EXIT.FAILURE;
      }
      if (version.kind === "legacy") return EXIT.INCOMPATIBLE;
      return EXIT.OK;
    }));
}

function makeListCommand(ctx: CliContext): Command {
  return new Command("list")
    .description(
      "List zae-limiter stacks in the region (tag ManagedBy=zae-limiter; read-only)",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const cfn = cloudFormationClient(ctx, g);
      const found: {
        name: string;
        status: string;
        version: string;
        created: string;
      }[] = [];
      let token: string | undefined;
      do {
        const next = token;
        const out = await awsOnly(g, {
          action: "list stacks",
          missing: "CloudFormation stacks",
          instead:
            "locally, 'zae-limiter local status' shows the local DynamoDB and 'zae-limiter status --name <table>' one table",
        }, () =>
          cfn.send(
            new DescribeStacksCommand(next ? { NextToken: next } : {}),
          ));
        for (const s of out.Stacks ?? []) {
          const tags = new Map(
            (s.Tags ?? []).map((t) => [t.Key ?? "", t.Value ?? ""]),
          );
          const managed = tags.get("ManagedBy") === "zae-limiter" ||
            (s.StackName ?? "").startsWith("ZAEL-");
          const type = tags.get("zae-limiter:type") ?? "limiter";
          if (
            !managed || type !== "limiter" ||
            s.StackStatus === "DELETE_COMPLETE"
          ) continue;
          found.push({
            name: tags.get("zae-limiter:name") ??
              (s.StackName ?? "").replace(/^ZAEL-/, ""),
            status: s.StackStatus ?? "",
            version: tags.get("zae-limiter:version") ?? "-",
            created: s.CreationTime
              ? s.CreationTime.toISOString().slice(0, 10)
              : "unknown",
          });
        }
        token = out.NextToken;
      } while (token);
      found.sort((a, b) => a.name.localeCompare(b.name));
      emit(ctx, g, found, () => {
        if (found.length === 0) {
          ctx.io.out("No rate limiter instances found in region.");
          ctx.io.out("  Deploy one with: zae-limiter deploy --name <name>");
          return;
        }
        ctx.io.out(`Rate Limiter Instances (${g.region ?? "default"})`);
        ctx.io.out(renderTable(
          ["Name", "Status", "Version", "Created"],
          found.map((f) => [f.name, f.status, f.version, f.created]),
        ));
        ctx.io.out(`Total: ${found.length} instance(s)`);
        const failed = found.filter((f) =>
          /FAILED|ROLLBACK/.test(f.status)
        ).length;
        const busy = found.filter((f) =>
          f.status.endsWith("IN_PROGRESS")
        ).length;
        if (failed) ctx.io.out(`  ${failed} failed`);
        if (busy) ctx.io.out(`  ${busy} in progress`);
      });
      return EXIT.OK;
    }));
}

function makeCfnTemplateCommand(ctx: CliContext): Command {
  return new Command("cfn-template")
    .description("Print the CloudFormation template (JSON) to stdout")
    .option("--worker-image <image>", "default of the WorkerImage parameter")
    .action(action(ctx, (cmd) => {
      const { workerImage } = cmd.opts<{ workerImage?: string }>();
      ctx.io.out(
        renderTemplateJson(workerImage ? { workerImage } : {}).trimEnd(),
      );
      return Promise.resolve(EXIT.OK);
    }));
}

/** Factories of the infrastructure commands, by command name. */
export const INFRA_COMMANDS: Readonly<
  Record<string, (ctx: CliContext) => Command>
> = {
  deploy: makeDeployCommand,
  upgrade: makeUpgradeCommand,
  delete: makeDeleteCommand,
  status: makeStatusCommand,
  list: makeListCommand,
  "cfn-template": makeCfnTemplateCommand,
};

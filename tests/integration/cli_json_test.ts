/**
 * `--output json` on every command: the test walks the command tree, runs
 * every command but daemons and `local` (listed with the reason) against
 * DynamoDB Local, or against aws-sdk-client-mock for backup, PITR and
 * CloudFormation, and checks that standard output is exactly one JSON
 * document. A new command fails the test until it is listed here.
 */
import assert from "node:assert/strict";
import {
  CloudFormationClient,
  DescribeStacksCommand,
} from "@aws-sdk/client-cloudformation";
import {
  CreateBackupCommand,
  DescribeContinuousBackupsCommand,
  DynamoDBClient,
  ListBackupsCommand,
  RestoreTableFromBackupCommand,
  RestoreTableToPointInTimeCommand,
  UpdateContinuousBackupsCommand,
} from "@aws-sdk/client-dynamodb";
import { mockClient } from "aws-sdk-client-mock";
import type { Command } from "commander";
import { createProgram, main } from "../../cli.ts";
import type { CliContext } from "../../cli/_context.ts";
import { endpoint, tableName } from "./_harness.ts";

interface Run {
  readonly code: number;
  readonly out: string[];
  readonly err: string;
}

async function cli(argv: string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, {
    out: (t) => out.push(t),
    err: (t) => err.push(t),
    sleep: () => Promise.resolve(),
  }, {});
  return { code, out, err: err.join("\n") };
}

/** Every leaf command of the tree, as its path. */
function leafCommands(): string[] {
  const ctx: CliContext = {
    io: { out() {}, err() {} },
    env: {},
    sleep: () => Promise.resolve(),
    now: () => 0,
    exitCode: 0,
    clients: [],
  };
  const out: string[] = [];
  const walk = (c: Command, path: string[]): void => {
    if (c.commands.length === 0) out.push(path.join(" "));
    for (const s of c.commands) walk(s, [...path, s.name()]);
  };
  walk(createProgram(ctx), []);
  return out;
}

/** Commands not run here, and why. */
const NOT_RUN: Readonly<Record<string, string>> = {
  "upgrade":
    "CloudFormation only: cli_test.ts runs it with --output json on a mocked CloudFormation",
  "worker run": "a daemon: its output is JSON log lines on stderr",
  "local up": "starts its own DynamoDB Local (local_test.ts)",
  "local down":
    "stops the DynamoDB Local that 'local up' started (local_test.ts)",
  "local status": "reads 'local up' state (local_test.ts)",
  "local env": "reads 'local up' state (local_test.ts)",
  "loadtest": "runs for seconds (loadtest_test.ts reads its --output json)",
};

function mockDynamoDb(): ReturnType<typeof mockClient> {
  const ddb = mockClient(DynamoDBClient);
  ddb.on(CreateBackupCommand).resolves({
    BackupDetails: {
      BackupArn: "arn:b/1",
      BackupName: "bk1",
      BackupStatus: "CREATING",
      BackupSizeBytes: 0,
      BackupType: "USER",
      BackupCreationDateTime: new Date(),
    },
  });
  ddb.on(RestoreTableFromBackupCommand).resolves({
    TableDescription: { TableStatus: "CREATING" },
  });
  ddb.on(UpdateContinuousBackupsCommand).resolves({});
  ddb.on(RestoreTableToPointInTimeCommand).resolves({});
  ddb.on(ListBackupsCommand).resolves({
    BackupSummaries: [{
      TableName: "prod",
      BackupArn: "arn:b/1",
      BackupName: "bk1",
      BackupStatus: "AVAILABLE",
      BackupType: "USER",
      BackupCreationDateTime: new Date(),
      BackupSizeBytes: 10,
    }],
  });
  ddb.on(DescribeContinuousBackupsCommand).resolves({
    ContinuousBackupsDescription: {
      ContinuousBackupsStatus: "ENABLED",
      PointInTimeRecoveryDescription: {
        PointInTimeRecoveryStatus: "ENABLED",
        RecoveryPeriodInDays: 7,
        EarliestRestorableDateTime: new Date(0),
        LatestRestorableDateTime: new Date(),
      },
    },
  });
  return ddb;
}

function mockCloudFormation(): ReturnType<typeof mockClient> {
  const cfn = mockClient(CloudFormationClient);
  cfn.on(DescribeStacksCommand).resolves({
    Stacks: [{
      StackName: "prod",
      StackStatus: "CREATE_COMPLETE",
      CreationTime: new Date(0),
      Tags: [{ Key: "ManagedBy", Value: "zae-limiter" }],
    }],
  });
  return cfn;
}

const MANIFEST = `namespace: default
resources:
  openai/gpt-4:
    limits:
      rpm: 100/min
`;

Deno.test("every command accepts --output json and prints exactly one JSON document", async () => {
  const table = tableName("json");
  const ep = await endpoint();
  const dir = await Deno.makeTempDir({ prefix: "zael-json-" });
  const manifest = `${dir}/limits.yaml`;
  await Deno.writeTextFile(manifest, MANIFEST);
  const state: Record<string, string> = {};
  const local = (...argv: string[]) =>
    cli(["--endpoint-url", ep, "--name", table, "--output", "json", ...argv]);
  const cloud = (...argv: string[]) =>
    cli([
      "--region",
      "us-east-1",
      "--name",
      "prod",
      "--output",
      "json",
      ...argv,
    ]);
  /** Command path → how to run it (in this order). */
  const steps: [string, () => Promise<Run>][] = [
    ["deploy", () => local("deploy")],
    ["version", () => local("version")],
    ["check", () => local("check")],
    ["status", () => local("status")],
    ["namespace register", () => local("namespace", "register", "tenant-a")],
    ["namespace list", () => local("namespace", "list")],
    ["namespace show", () => local("namespace", "show", "tenant-a")],
    ["entity create", () => local("entity", "create", "e1")],
    ["entity show", () => local("entity", "show", "e1")],
    [
      "entity list",
      () => local("entity", "list", "--with-custom-limits", "r1"),
    ],
    [
      "entity set-limits",
      () => local("entity", "set-limits", "e1", "-l", "rpm:10/min", "-r", "r1"),
    ],
    [
      "entity get-limits",
      () => local("entity", "get-limits", "e1", "-r", "r1"),
    ],
    [
      "entity delete-limits",
      () => local("entity", "delete-limits", "e1", "-r", "r1", "--yes"),
    ],
    [
      "resource set-defaults",
      () => local("resource", "set-defaults", "r1", "-l", "rpm:10/min"),
    ],
    ["resource get-defaults", () => local("resource", "get-defaults", "r1")],
    ["resource list", () => local("resource", "list")],
    [
      "resource delete-defaults",
      () => local("resource", "delete-defaults", "r1", "--yes"),
    ],
    [
      "system set-defaults",
      () => local("system", "set-defaults", "-l", "rpm:10/min"),
    ],
    ["system get-defaults", () => local("system", "get-defaults")],
    [
      "system delete-defaults",
      () => local("system", "delete-defaults", "--yes"),
    ],
    ["bucket reset", () => local("bucket", "reset", "e1")],
    ["entity verify", () => local("entity", "verify", "e1")],
    ["entity children", () => local("entity", "children", "e1")],
    ["entity list-resources", () => local("entity", "list-resources")],
    ["resource capacity", () => local("resource", "capacity", "r1")],
    ["usage summary", () => local("usage", "summary", "-e", "e1")],
    ["migrate plan", () => local("migrate", "plan")],
    ["migrate status", () => local("migrate", "status")],
    ["migrate verify", () => local("migrate", "verify")],
    ["worker status", () => local("worker", "status")],
    ["cfn-template", () => local("cfn-template")],
    ["audit list", () => local("audit", "list", "-e", "e1")],
    ["usage list", () => local("usage", "list", "-e", "e1", "--plot")],
    ["entity delete", () => local("entity", "delete", "e1", "--yes")],
    [
      "namespace delete",
      () => local("namespace", "delete", "tenant-a", "--yes"),
    ],
    ["namespace orphans", () => local("namespace", "orphans")],
    [
      "namespace recover",
      () => local("namespace", "recover", state["nsid"] ?? "?"),
    ],
    ["namespace purge", async () => {
      const d = await local("namespace", "delete", "tenant-a", "--yes");
      assert.equal(d.code, 0, d.err);
      return await local("namespace", "purge", state["nsid"] ?? "?", "--yes");
    }],
    ["limits plan", () => local("limits", "plan", "-f", manifest)],
    ["limits apply", () => local("limits", "apply", "-f", manifest)],
    // After the apply: no difference, exit 0.
    ["limits diff", () => local("limits", "diff", "-f", manifest)],
    ["limits export", () => local("limits", "export")],
    ["migrate apply", () => local("migrate", "apply", "--yes")],
    [
      "migrate rollback",
      () => local("migrate", "rollback", "--to", "0.10.0", "--yes"),
    ],
    ["worker dead-letters list", () => local("worker", "dead-letters", "list")],
    [
      "worker dead-letters redrive",
      () => local("worker", "dead-letters", "redrive", "--yes"),
    ],
    [
      "worker dead-letters purge",
      () => local("worker", "dead-letters", "purge", "--yes"),
    ],
    ["completion", () => local("completion", "bash")],
    ["delete", () => local("delete", "--yes")],
    ["backup create", () => cloud("backup", "create", "--backup-name", "bk1")],
    [
      "backup restore",
      () =>
        cloud(
          "backup",
          "restore",
          "--backup-arn",
          "arn:b/1",
          "--target-table",
          "prod-restored",
        ),
    ],
    ["backup list", () => cloud("backup", "list")],
    ["pitr enable", () => cloud("pitr", "enable")],
    ["pitr status", () => cloud("pitr", "status")],
    [
      "pitr restore",
      () => cloud("pitr", "restore", "--target-table", "prod-pitr", "--latest"),
    ],
    ["list", () => cloud("list")],
  ];

  const leaves = leafCommands();
  const covered = new Set([...steps.map(([p]) => p), ...Object.keys(NOT_RUN)]);
  assert.deepEqual(
    leaves.filter((l) => !covered.has(l)),
    [],
    "every command is run here or listed in NOT_RUN with a reason",
  );
  assert.deepEqual(
    [...covered].filter((c) => !leaves.includes(c)),
    [],
    "no stale entries",
  );

  let ddb: ReturnType<typeof mockClient> | undefined;
  let cfn: ReturnType<typeof mockClient> | undefined;
  try {
    for (const [path, run] of steps) {
      if (path === "backup create") {
        // The cloud commands: DynamoDB and CloudFormation calls answered by mocks from here on.
        ddb = mockDynamoDb();
        cfn = mockCloudFormation();
      }
      const r = await run();
      assert.equal(r.code, 0, `${path}: ${r.err}`);
      assert.equal(
        r.out.length,
        1,
        `${path}: one write to stdout, got ${r.out.length}: ${
          r.out.join("\n")
        }\n${r.err}`,
      );
      let doc: unknown;
      try {
        doc = JSON.parse(r.out[0] ?? "");
      } catch {
        assert.fail(`${path}: stdout is not JSON: ${r.out[0]}`);
      }
      assert.ok(typeof doc === "object" && doc !== null, path);
      if (path === "namespace register") {
        const id = (doc as { namespaceId?: unknown }).namespaceId;
        assert.equal(typeof id, "string", JSON.stringify(doc));
        state["nsid"] = String(id);
      }
      if (path === "bucket reset") {
        assert.equal(
          typeof (doc as { bucketsDeleted?: unknown }).bucketsDeleted,
          "number",
        );
      }
    }
  } finally {
    ddb?.restore();
    cfn?.restore();
    await cli(["--endpoint-url", ep, "--name", table, "delete", "--yes"]);
    await Deno.remove(dir, { recursive: true });
  }
});

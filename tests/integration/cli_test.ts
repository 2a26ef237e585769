/**
 * The CLI in-process: DynamoDB commands against DynamoDB Local, and
 * CloudFormation / backup / PITR commands against aws-sdk-client-mock
 * (request shapes recorded, no real AWS).
 */
import assert from "node:assert/strict";
import {
  BatchGetItemCommand,
  CreateBackupCommand,
  DeleteItemCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  ListBackupsCommand,
  PutItemCommand,
  RestoreTableFromBackupCommand,
  RestoreTableToPointInTimeCommand,
  TransactWriteItemsCommand,
  UpdateContinuousBackupsCommand,
} from "@aws-sdk/client-dynamodb";
import {
  CloudFormationClient,
  CreateChangeSetCommand,
  DeleteChangeSetCommand,
  DeleteStackCommand,
  DescribeChangeSetCommand,
  DescribeStackEventsCommand,
  DescribeStackResourcesCommand,
  DescribeStacksCommand,
  ExecuteChangeSetCommand,
  type ResourceStatus,
  type StackStatus,
} from "@aws-sdk/client-cloudformation";
import { mockClient } from "aws-sdk-client-mock";
import { main } from "../../cli.ts";
import {
  CLIENT_VERSION,
  Limit,
  RateLimiter,
  Repository,
  SCHEMA_VERSION,
} from "../../mod.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

interface Run {
  readonly code: number;
  readonly out: string;
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
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** A CLI bound to one local table. */
async function localCli(): Promise<
  {
    table: string;
    run(...argv: string[]): Promise<Run>;
    repo(namespace?: string): Promise<Repository>;
    client: DynamoDBClient;
  } & AsyncDisposable
> {
  const table = tableName("cli");
  const ep = await endpoint();
  const { client } = await localClient();
  return {
    table,
    client,
    run: (...argv: string[]) =>
      cli(["--endpoint-url", ep, "--name", table, ...argv]),
    repo: (namespace = "default") =>
      Repository.open({ client, stack: table, namespace }),
    async [Symbol.asyncDispose]() {
      await cli([
        "--endpoint-url",
        ep,
        "--name",
        table,
        "delete",
        "--yes",
        "--drop-table",
      ]);
      client.destroy();
    },
  };
}

async function tableExists(
  client: DynamoDBClient,
  table: string,
): Promise<boolean> {
  try {
    await client.send(new DescribeTableCommand({ TableName: table }));
    return true;
  } catch (e) {
    if (e instanceof Error && e.name === "ResourceNotFoundException") {
      return false;
    }
    throw e;
  }
}

Deno.test("deploy creates the local table, the version record and the default namespace", async () => {
  await using env = await localCli();
  const r = await env.run("deploy");
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /✓ Table '.*' created/);
  assert.match(
    r.out,
    new RegExp(`Version record initialized \\(schema ${SCHEMA_VERSION}\\)`),
  );
  const record = await (await env.repo()).getVersionRecord();
  assert.equal(record?.schemaVersion, SCHEMA_VERSION);
  assert.equal(record?.updatedBy, `cli:${CLIENT_VERSION}`);
  assert.equal(record?.lambdaVersion, null);

  const again = await env.run("deploy");
  assert.equal(again.code, 0, again.err);
  assert.match(
    again.out,
    /already exists \(schema 0\.10\.0\); nothing changed/,
  );
});

Deno.test("namespace register, list and show work on a deployed table", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  const reg = await env.run("namespace", "register", "tenant-a");
  assert.equal(reg.code, 0, reg.err);
  const id = /Registered namespace 'tenant-a': (\S+)/.exec(reg.out)?.[1];
  assert.ok(id, reg.out);
  const many = await env.run("namespace", "register", "tenant-b", "tenant-c");
  assert.match(many.out, /Registered 2 namespace\(s\):/);

  const list = await env.run("--output", "json", "namespace", "list");
  assert.equal(list.code, 0, list.err);
  const names = (JSON.parse(list.out) as { name: string }[]).map((n) => n.name);
  assert.deepEqual(names, ["default", "tenant-a", "tenant-b", "tenant-c"]);
  const table = await env.run("namespace", "list");
  assert.match(table.out, /\| Name +\| Namespace ID +\| Created At +\|/);
  assert.match(table.out, /Total: 4 namespace\(s\)/);

  const show = await env.run("namespace", "show", "tenant-a");
  assert.equal(show.code, 0);
  assert.match(show.out, new RegExp(`Namespace ID: ${id}`));
  const missing = await env.run("namespace", "show", "nope");
  assert.equal(missing.code, 1);
  assert.match(missing.err, /Namespace 'nope' not found/);

  const del = await env.run("namespace", "delete", "tenant-c", "--yes");
  assert.equal(del.code, 0, del.err);
  const orphans = await env.run("--output", "json", "namespace", "orphans");
  const orphan =
    (JSON.parse(orphans.out) as { name: string; namespaceId: string }[])[0];
  assert.equal(orphan?.name, "tenant-c");
  const rec = await env.run("namespace", "recover", orphan?.namespaceId ?? "");
  assert.equal(rec.code, 0, rec.err);
  assert.match(rec.out, /Recovered namespace 'tenant-c'/);
});

Deno.test("check and version report compatibility with exit codes 0, 3 and 4", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  const ok = await env.run("check");
  assert.equal(ok.code, 0, ok.out + ok.err);
  assert.match(ok.out, /Result: COMPATIBLE/);
  assert.match(ok.out, /Workers: unknown/);

  const repo = await env.repo();
  await repo.setVersionRecord({
    schemaVersion: SCHEMA_VERSION,
    lambdaVersion: "0.9.0",
  });
  const update = await env.run("check");
  assert.equal(update.code, 4, update.out);
  assert.match(update.out, /COMPATIBLE \(update available\)/);
  assert.match(update.out, /Workers 0\.9\.0 are older/);

  await repo.setVersionRecord({
    schemaVersion: "0.9.0",
    lambdaVersion: CLIENT_VERSION,
  });
  const bad = await env.run("check");
  assert.equal(bad.code, 3, bad.out);
  assert.match(bad.out, /Result: INCOMPATIBLE/);
  assert.match(bad.out, /migrate apply/);
  const json = await env.run("--output", "json", "check");
  assert.equal(json.code, 3);
  assert.equal(JSON.parse(json.out).result, "INCOMPATIBLE");

  const version = await env.run("version");
  assert.equal(version.code, 3, version.out + version.err);
  assert.match(version.out, new RegExp(`Client Version: +${CLIENT_VERSION}`));
  assert.match(version.out, /Table Schema: +0\.9\.0/);
  assert.match(version.out, /Min Client Version: +0\.0\.0/);
  assert.match(version.out, new RegExp(`Worker Version: +${CLIENT_VERSION}`));

  // Read-only: the record was not rewritten by check/version.
  assert.equal((await repo.getVersionRecord())?.schemaVersion, "0.9.0");
  // Data commands refuse the incompatible table instead of touching it.
  const show = await env.run("entity", "show", "x");
  assert.equal(show.code, 1);
  assert.match(show.err, /Incompatible schema/);
});

Deno.test("status, check, version and data commands do not create a missing table", async () => {
  await using env = await localCli();
  const status = await env.run("status");
  assert.equal(status.code, 1);
  assert.match(status.out, /✗ Infrastructure is not available/);
  const check = await env.run("check");
  assert.equal(check.code, 1);
  assert.match(check.out, /TABLE NOT FOUND/);
  const version = await env.run("version");
  assert.equal(version.code, 1);
  const show = await env.run("entity", "show", "x");
  assert.equal(show.code, 1);
  assert.match(show.err, /does not exist \(nothing was created/);
  const ns = await env.run("namespace", "list");
  assert.equal(ns.code, 1);
  assert.equal(await tableExists(env.client, env.table), false);
});

Deno.test("check reports a pre-0.10 table as INCOMPATIBLE and data commands leave it untouched", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  await env.client.send(
    new DeleteItemCommand({
      TableName: env.table,
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#VERSION" } },
    }),
  );
  await env.client.send(
    new PutItemCommand({
      TableName: env.table,
      Item: {
        PK: { S: "SYSTEM#" },
        SK: { S: "#VERSION" },
        "schema_version": { S: "0.9.0" },
      },
    }),
  );
  const check = await env.run("check");
  assert.equal(check.code, 3, check.out);
  assert.match(check.out, /pre-0\.10 key layout/);
  const show = await env.run("entity", "show", "x");
  assert.equal(show.code, 1);
  assert.match(show.err, /pre-0\.10 key layout/);
  const current = await env.client.send(
    new GetItemCommand({
      TableName: env.table,
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#VERSION" } },
    }),
  );
  assert.equal(current.Item, undefined, "no version record was written");
});

Deno.test("status reports a deployed local table", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  const r = await env.run("status");
  assert.equal(r.code, 0, r.out + r.err);
  assert.match(r.out, /Available: +✓ Yes/);
  assert.match(r.out, /Table: +ACTIVE/);
  assert.match(r.out, /✓ Infrastructure is ready/);
});

Deno.test("-N typo entity show x fails without registering the namespace", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  const r = await env.run("-N", "typo", "entity", "show", "x");
  assert.equal(r.code, 1);
  assert.match(r.err, /Namespace 'typo' not found/);
  const w = await env.run("-N", "typo", "entity", "create", "x");
  assert.equal(w.code, 1);
  const names = (await (await env.repo()).listNamespaces()).map((n) => n.name);
  assert.deepEqual(names, ["default"]);
});

Deno.test("entity create, show, set-limits, get-limits, children and audit list", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  assert.equal((await env.run("namespace", "register", "t1")).code, 0);
  const parent = await env.run(
    "-N",
    "t1",
    "entity",
    "create",
    "org-1",
    "--display-name",
    "Org One",
  );
  assert.equal(parent.code, 0, parent.err);
  assert.match(parent.out, /Created entity 'org-1'/);
  const child = await env.run(
    "entity",
    "create",
    "key-1",
    "--parent",
    "org-1",
    "--cascade",
    "--metadata",
    "tier=gold",
    "-N",
    "t1",
  );
  assert.equal(child.code, 0, child.err);
  const dup = await env.run("-N", "t1", "entity", "create", "key-1");
  assert.equal(dup.code, 1);
  assert.match(dup.err, /Error: .*key-1/);

  const show = await env.run(
    "-N",
    "t1",
    "--output",
    "json",
    "entity",
    "show",
    "key-1",
  );
  assert.equal(show.code, 0, show.err);
  const e = JSON.parse(show.out);
  assert.deepEqual([e.parentId, e.cascade, e.metadata], ["org-1", true, {
    tier: "gold",
  }]);
  assert.equal(
    (await env.run("entity", "show", "key-1")).code,
    1,
    "other namespace",
  );

  const set = await env.run(
    "-N",
    "t1",
    "entity",
    "set-limits",
    "key-1",
    "-l",
    "rpm:100/min",
    "-l",
    "tpm:10000/min:15000",
    "--resource",
    "gpt-4",
  );
  assert.equal(set.code, 0, set.err);
  assert.match(
    set.out,
    /Set 2 limit\(s\) for entity 'key-1' on resource 'gpt-4':/,
  );
  assert.match(set.out, /tpm: 10,000\/min \(burst: 15,000\)/);
  const stored = await (await env.repo("t1")).getLimits("key-1", {
    resource: "gpt-4",
  });
  assert.deepEqual(
    stored.map((l) => l.toDict()).sort((a, b) => a.name.localeCompare(b.name)),
    [
      Limit.perMinute("rpm", 100).toDict(),
      Limit.perMinute("tpm", 10000, { burst: 15000 }).toDict(),
    ],
  );
  const get = await env.run(
    "-N",
    "t1",
    "entity",
    "get-limits",
    "key-1",
    "-r",
    "gpt-4",
  );
  assert.match(get.out, /rpm: 100\/min/);
  const none = await env.run("-N", "t1", "entity", "get-limits", "key-1");
  assert.match(
    none.out,
    /No limits configured for entity 'key-1' on resource '_default_'/,
  );

  const children = await env.run(
    "-N",
    "t1",
    "--output",
    "json",
    "entity",
    "children",
    "org-1",
  );
  assert.deepEqual(
    (JSON.parse(children.out) as { id: string }[]).map((c) => c.id),
    ["key-1"],
  );

  const audit = await env.run("-N", "t1", "audit", "list", "-e", "key-1");
  assert.equal(audit.code, 0, audit.err);
  assert.match(audit.out, /Audit Events for: key-1/);
  assert.match(audit.out, /limits_set/);
  assert.match(audit.out, /entity_created/);
  const json = await env.run(
    "-N",
    "t1",
    "--output",
    "json",
    "audit",
    "list",
    "-e",
    "key-1",
    "--limit",
    "1",
  );
  const events = JSON.parse(json.out) as {
    action: string;
    principal: string;
  }[];
  assert.equal(events.length, 1);
  assert.equal(events[0]?.action, "limits_set");
  assert.equal(events[0]?.principal, "cli");

  const del = await env.run(
    "-N",
    "t1",
    "entity",
    "delete-limits",
    "key-1",
    "-r",
    "gpt-4",
    "--yes",
  );
  assert.equal(del.code, 0, del.err);
  assert.deepEqual(
    await (await env.repo("t1")).getLimits("key-1", { resource: "gpt-4" }),
    [],
  );
});

Deno.test("resource and system defaults round-trip", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  const set = await env.run(
    "resource",
    "set-defaults",
    "gpt-4",
    "-l",
    "rpm:50",
  );
  assert.equal(set.code, 0, set.err);
  const list = await env.run("--output", "json", "resource", "list");
  assert.deepEqual(JSON.parse(list.out), ["gpt-4"]);
  const get = await env.run("resource", "get-defaults", "gpt-4");
  assert.match(get.out, /rpm: 50\/min/);
  const sys = await env.run(
    "system",
    "set-defaults",
    "-l",
    "rps:10/sec",
    "--on-unavailable",
    "allow",
  );
  assert.equal(sys.code, 0, sys.err);
  const sget = await env.run("--output", "json", "system", "get-defaults");
  const d = JSON.parse(sget.out);
  assert.equal(d.onUnavailable, "allow");
  assert.equal(d.limits[0].refill_period_seconds, 1);
  assert.equal((await env.run("system", "delete-defaults", "--yes")).code, 0);
  assert.match(
    (await env.run("system", "get-defaults")).out,
    /No system defaults configured/,
  );
});

Deno.test("bucket reset deletes an entity's buckets and entity verify reads capacity", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  assert.equal((await env.run("entity", "create", "k1")).code, 0);
  assert.equal(
    (await env.run("entity", "set-limits", "k1", "-l", "rpm:10", "-r", "api"))
      .code,
    0,
  );
  const repo = await env.repo();
  const limiter = new RateLimiter(repo);
  await limiter.acquire({
    entityId: "k1",
    resource: "api",
    consume: { rpm: 4 },
  }, () => {});
  assert.ok(await repo.getBucketItem("k1", "api"));

  const verify = await env.run("entity", "verify", "k1");
  assert.equal(verify.code, 0, verify.out + verify.err);
  assert.match(verify.out, /Entity: k1, parent: \(none\)/);
  assert.match(verify.out, /Available capacity \(health-check\): test=1000/);
  assert.match(verify.out, /✓ Entity 'k1' verified/);
  const verifyApi = await env.run(
    "--output",
    "json",
    "entity",
    "verify",
    "k1",
    "-r",
    "api",
  );
  assert.equal(JSON.parse(verifyApi.out).ok, true);

  const reset = await env.run("bucket", "reset", "k1", "--resource", "api");
  assert.equal(reset.code, 0, reset.err);
  assert.match(
    reset.out,
    /Reset 1 bucket item\(s\) for entity 'k1' on resource 'api'/,
  );
  assert.equal(await repo.getBucketItem("k1", "api"), null);
  const again = await env.run("bucket", "reset", "k1");
  assert.match(again.out, /Reset 0 bucket item\(s\)/);

  const missing = await env.run("entity", "verify", "ghost");
  assert.equal(missing.code, 1);
  assert.match(missing.err, /✗ entity 'ghost' not found/);
});

Deno.test("usage list and summary read snapshots by entity and by resource", async () => {
  await using env = await localCli();
  assert.equal((await env.run("deploy")).code, 0);
  const repo = await env.repo();
  const ns = repo.namespaceId;
  for (const [hour, rpm] of [["10", 5], ["11", 7]] as const) {
    const start = `2026-01-15T${hour}:00:00Z`;
    await env.client.send(
      new PutItemCommand({
        TableName: env.table,
        Item: {
          PK: { S: `${ns}/ENTITY#k1` },
          SK: { S: `#USAGE#api#${start}` },
          entity_id: { S: "k1" },
          resource: { S: "api" },
          window: { S: "hourly" },
          window_start: { S: start },
          rpm: { N: String(rpm) },
          tpm: { N: "1500" },
          total_events: { N: "2" },
          ttl: { N: "9999999999" },
          GSI2PK: { S: `${ns}/RESOURCE#api` },
          GSI2SK: { S: `USAGE#${start}#k1` },
        },
      }),
    );
  }
  const list = await env.run("usage", "list", "-e", "k1");
  assert.equal(list.code, 0, list.err);
  assert.match(list.out, /rpm=5, tpm=1,500/);
  assert.match(list.out, /Total: 2 snapshots/);
  const byResource = await env.run(
    "--output",
    "json",
    "usage",
    "list",
    "-r",
    "api",
    "--start",
    "2026-01-15T11:00:00Z",
  );
  const snaps = JSON.parse(byResource.out).snapshots as {
    counters: Record<string, number>;
  }[];
  assert.deepEqual(snaps.map((s) => s.counters), [{ rpm: 7, tpm: 1500 }]);
  const summary = await env.run(
    "--output",
    "json",
    "usage",
    "summary",
    "-e",
    "k1",
    "-w",
    "hourly",
  );
  const s = JSON.parse(summary.out);
  assert.deepEqual([s.snapshots, s.totals.rpm, s.averages.rpm], [2, 12, 6]);
  const page = JSON.parse(
    (await env.run(
      "--output",
      "json",
      "usage",
      "list",
      "-e",
      "k1",
      "--limit",
      "1",
    ))
      .out,
  );
  assert.deepEqual([page.snapshots.length, page.more], [1, true]);
  const all = JSON.parse(
    (await env.run(
      "--output",
      "json",
      "usage",
      "list",
      "-e",
      "k1",
      "--limit",
      "2",
    ))
      .out,
  );
  assert.deepEqual([all.snapshots.length, all.more], [2, false]);
});

// ------------------------------------------------------------------ mocked AWS

const REGION = ["--region", "us-east-1"];

Deno.test("deploy creates the stack through a change set and prints failing events", async () => {
  const cfn = mockClient(CloudFormationClient);
  const ddb = mockClient(DynamoDBClient);
  try {
    ddb.onAnyCommand().resolves({});
    cfn.on(DescribeStacksCommand)
      .rejectsOnce(
        Object.assign(new Error("Stack with id prod does not exist"), {
          name: "ValidationError",
        }),
      )
      .resolvesOnce({
        Stacks: [{
          StackName: "prod",
          StackStatus: "CREATE_IN_PROGRESS",
          CreationTime: new Date(),
        }],
      })
      .resolves({
        Stacks: [{
          StackName: "prod",
          StackId: "arn:stack/prod",
          StackStatus: "CREATE_COMPLETE",
          CreationTime: new Date(),
        }],
      });
    cfn.on(CreateChangeSetCommand).resolves({
      Id: "arn:cs/1",
      StackId: "arn:stack/prod",
    });
    cfn.on(DescribeChangeSetCommand)
      .resolvesOnce({ Status: "CREATE_PENDING" })
      .resolves({ Status: "CREATE_COMPLETE" });
    cfn.on(ExecuteChangeSetCommand).resolves({});
    const r = await cli([
      ...REGION,
      "--name",
      "prod",
      "deploy",
      "--pitr-recovery-days",
      "7",
      "-t",
      "team=core",
    ]);
    assert.equal(r.code, 0, r.out + r.err);
    const create = cfn.commandCalls(CreateChangeSetCommand)[0]?.args[0].input;
    assert.equal(create?.ChangeSetType, "CREATE");
    assert.equal(create?.StackName, "prod");
    assert.deepEqual(create?.Capabilities, ["CAPABILITY_NAMED_IAM"]);
    const template = JSON.parse(create?.TemplateBody ?? "{}");
    assert.equal(
      template.Resources.RateLimitsTable.Type,
      "AWS::DynamoDB::Table",
    );
    assert.ok((create?.TemplateBody ?? "").length < 51200, "fits TemplateBody");
    assert.deepEqual(create?.Parameters, [
      { ParameterKey: "SchemaVersion", ParameterValue: SCHEMA_VERSION },
      { ParameterKey: "PITRRecoveryPeriodDays", ParameterValue: "7" },
    ]);
    const tags = Object.fromEntries(
      (create?.Tags ?? []).map((t) => [t.Key, t.Value]),
    );
    assert.equal(tags["ManagedBy"], "zae-limiter");
    assert.equal(tags["team"], "core");
    assert.deepEqual(
      cfn.commandCalls(ExecuteChangeSetCommand)[0]?.args[0].input,
      {
        StackName: "prod",
        ChangeSetName: "arn:cs/1",
      },
    );
    // The version record is written once the stack is complete.
    const puts = ddb.commandCalls(PutItemCommand).map((c) =>
      c.args[0].input.Item
    );
    const last = puts.at(-1);
    assert.equal(last?.["SK"]?.S, "#VERSION");
    assert.equal(last?.["updated_by"]?.S, `cli:${CLIENT_VERSION}`);
    assert.ok(
      ddb.commandCalls(TransactWriteItemsCommand).length >= 1,
      "default registered",
    );
    assert.match(r.out, /✓ Stack create complete/);

    // A failed creation prints the failing events and exits 1.
    cfn.reset();
    cfn.on(DescribeStacksCommand)
      .rejectsOnce(
        Object.assign(new Error("Stack with id prod does not exist"), {
          name: "ValidationError",
        }),
      )
      .resolves({
        Stacks: [{
          StackName: "prod",
          StackStatus: "ROLLBACK_COMPLETE",
          CreationTime: new Date(),
        }],
      });
    cfn.on(CreateChangeSetCommand).resolves({ Id: "arn:cs/2" });
    cfn.on(DescribeChangeSetCommand).resolves({ Status: "CREATE_COMPLETE" });
    cfn.on(DescribeStackEventsCommand).resolves({
      StackEvents: [
        {
          StackId: "s",
          EventId: "1",
          StackName: "prod",
          Timestamp: new Date(0),
          LogicalResourceId: "AppRole",
          ResourceType: "AWS::IAM::Role",
          ResourceStatus: "CREATE_FAILED",
          ResourceStatusReason: "not authorized",
        },
        {
          StackId: "s",
          EventId: "2",
          StackName: "prod",
          Timestamp: new Date(0),
          LogicalResourceId: "RateLimitsTable",
          ResourceStatus: "CREATE_COMPLETE",
        },
      ],
    });
    const failed = await cli([...REGION, "--name", "prod", "deploy"]);
    assert.equal(failed.code, 1);
    assert.match(
      failed.err,
      /AppRole \(AWS::IAM::Role\) CREATE_FAILED: not authorized/,
    );
    assert.doesNotMatch(failed.err, /RateLimitsTable/);
    assert.match(failed.err, /ended in ROLLBACK_COMPLETE/);
  } finally {
    cfn.restore();
    ddb.restore();
  }
});

Deno.test("upgrade applies the template with previous parameters and keeps the schema version", async () => {
  const cfn = mockClient(CloudFormationClient);
  const ddb = mockClient(DynamoDBClient);
  try {
    const record = {
      PK: { S: "_/SYSTEM#" },
      SK: { S: "#VERSION" },
      "schema_version": { S: SCHEMA_VERSION },
      "client_min_version": { S: "0.0.0" },
      "lambda_version": { S: "0.9.0" },
    };
    ddb.onAnyCommand().resolves({});
    const defaultNs = {
      PK: { S: "_/SYSTEM#" },
      SK: { S: "#NAMESPACE#default" },
      status: { S: "active" },
      "namespace_id": { S: "abc" },
    };
    ddb.on(GetItemCommand).resolves({ Item: record });
    ddb.on(GetItemCommand, {
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#NAMESPACE#default" } },
    })
      .resolves({ Item: defaultNs });
    ddb.on(BatchGetItemCommand).resolves({
      Responses: { prod: [record, defaultNs] },
    });
    cfn.on(DescribeStacksCommand)
      .resolvesOnce({
        Stacks: [{
          StackName: "prod",
          StackStatus: "CREATE_COMPLETE",
          CreationTime: new Date(),
          Parameters: [
            { ParameterKey: "SchemaVersion", ParameterValue: "0.10.0" },
            { ParameterKey: "WorkerImage", ParameterValue: "img:0.9" },
            { ParameterKey: "LegacyThing", ParameterValue: "x" },
          ],
          Tags: [{ Key: "team", Value: "core" }, {
            Key: "ManagedBy",
            Value: "zae-limiter",
          }],
        }],
      })
      .resolves({
        Stacks: [{
          StackName: "prod",
          StackStatus: "UPDATE_COMPLETE",
          CreationTime: new Date(),
        }],
      });
    cfn.on(CreateChangeSetCommand).resolves({ Id: "arn:cs/u" });
    cfn.on(DescribeChangeSetCommand).resolves({ Status: "CREATE_COMPLETE" });
    cfn.on(ExecuteChangeSetCommand).resolves({});
    const r = await cli([
      ...REGION,
      "--name",
      "prod",
      "upgrade",
      "--worker-image",
      "img:0.10",
    ]);
    assert.equal(r.code, 0, r.out + r.err);
    const input = cfn.commandCalls(CreateChangeSetCommand)[0]?.args[0].input;
    assert.equal(input?.ChangeSetType, "UPDATE");
    assert.ok(input?.TemplateBody);
    assert.deepEqual(input?.Parameters, [
      { ParameterKey: "SchemaVersion", UsePreviousValue: true },
      { ParameterKey: "WorkerImage", ParameterValue: "img:0.10" },
    ]);
    const tags = Object.fromEntries(
      (input?.Tags ?? []).map((t) => [t.Key, t.Value]),
    );
    assert.equal(tags["team"], "core");
    assert.equal(tags["zae-limiter:schema-version"], SCHEMA_VERSION);
    const put = ddb.commandCalls(PutItemCommand).at(-1)?.args[0].input.Item;
    assert.equal(put?.["schema_version"]?.S, SCHEMA_VERSION);
    assert.equal(put?.["lambda_version"]?.S, CLIENT_VERSION);

    // --lambda-only keeps the deployed template; "no changes" is a success.
    cfn.reset();
    cfn.on(DescribeStacksCommand).resolves({
      Stacks: [{
        StackName: "prod",
        StackStatus: "UPDATE_COMPLETE",
        CreationTime: new Date(),
        Parameters: [{
          ParameterKey: "WorkerImage",
          ParameterValue: "img:0.10",
        }, { ParameterKey: "SchemaVersion", ParameterValue: "0.10.0" }],
      }],
    });
    cfn.on(CreateChangeSetCommand).resolves({ Id: "arn:cs/w" });
    cfn.on(DeleteChangeSetCommand).resolves({});
    cfn.on(DescribeChangeSetCommand).resolves({
      Status: "FAILED",
      StatusReason:
        "The submitted information didn't contain changes. Submit different information to create a change set.",
    });
    const w = await cli([
      ...REGION,
      "--name",
      "prod",
      "upgrade",
      "--lambda-only",
      "--worker-image",
      "img:0.10",
    ]);
    assert.equal(w.code, 0, w.out + w.err);
    assert.match(w.out, /already up to date/);
    const wi = cfn.commandCalls(CreateChangeSetCommand)[0]?.args[0].input;
    assert.equal(wi?.UsePreviousTemplate, true);
    assert.equal(wi?.TemplateBody, undefined);
    assert.deepEqual(wi?.Parameters, [
      { ParameterKey: "WorkerImage", ParameterValue: "img:0.10" },
      { ParameterKey: "SchemaVersion", UsePreviousValue: true },
    ]);
    assert.equal(cfn.commandCalls(ExecuteChangeSetCommand).length, 0);
    assert.equal(cfn.commandCalls(DeleteChangeSetCommand).length, 1);
  } finally {
    cfn.restore();
    ddb.restore();
  }
});

Deno.test("upgrade stops with exit 3 when the table needs a migration", async () => {
  const cfn = mockClient(CloudFormationClient);
  const ddb = mockClient(DynamoDBClient);
  try {
    ddb.onAnyCommand().resolves({
      Item: {
        PK: { S: "_/SYSTEM#" },
        SK: { S: "#VERSION" },
        "schema_version": { S: "0.9.0" },
      },
    });
    const r = await cli([...REGION, "--name", "prod", "upgrade"]);
    assert.equal(r.code, 3, r.out + r.err);
    assert.match(r.err, /not compatible/);
    assert.equal(cfn.commandCalls(CreateChangeSetCommand).length, 0);
  } finally {
    cfn.restore();
    ddb.restore();
  }
});

Deno.test("delete removes the stack, says the table is retained, and list filters managed stacks", async () => {
  const cfn = mockClient(CloudFormationClient);
  try {
    cfn.on(DescribeStacksCommand, { StackName: "prod" })
      .resolvesOnce({
        Stacks: [{
          StackName: "prod",
          StackStatus: "CREATE_COMPLETE",
          CreationTime: new Date(),
        }],
      })
      .rejects(
        Object.assign(new Error("Stack with id prod does not exist"), {
          name: "ValidationError",
        }),
      );
    cfn.on(DeleteStackCommand).resolves({});
    const r = await cli([...REGION, "--name", "prod", "delete", "--yes"]);
    assert.equal(r.code, 0, r.out + r.err);
    assert.deepEqual(cfn.commandCalls(DeleteStackCommand)[0]?.args[0].input, {
      StackName: "prod",
    });
    assert.match(r.out, /Table 'prod' is retained/);

    cfn.reset();
    cfn.on(DescribeStacksCommand).resolves({
      Stacks: [
        {
          StackName: "b-limiter",
          StackStatus: "CREATE_COMPLETE",
          CreationTime: new Date("2026-01-02T00:00:00Z"),
          Tags: [{ Key: "ManagedBy", Value: "zae-limiter" }, {
            Key: "zae-limiter:version",
            Value: "0.10.0",
          }],
        },
        {
          StackName: "other",
          StackStatus: "CREATE_COMPLETE",
          CreationTime: new Date(),
        },
        {
          StackName: "ZAEL-a",
          StackStatus: "UPDATE_ROLLBACK_FAILED",
          CreationTime: new Date("2025-01-01T00:00:00Z"),
        },
      ],
    });
    const list = await cli([...REGION, "--output", "json", "list"]);
    assert.equal(list.code, 0, list.err);
    assert.deepEqual(JSON.parse(list.out), [
      {
        name: "a",
        status: "UPDATE_ROLLBACK_FAILED",
        version: "-",
        created: "2025-01-01",
      },
      {
        name: "b-limiter",
        status: "CREATE_COMPLETE",
        version: "0.10.0",
        created: "2026-01-02",
      },
    ]);
  } finally {
    cfn.restore();
  }
});

Deno.test("backup and pitr commands send the recovery runbook's requests", async () => {
  const ddb = mockClient(DynamoDBClient);
  try {
    ddb.on(CreateBackupCommand).resolves({
      BackupDetails: {
        BackupArn: "arn:backup/1",
        BackupName: "bk1",
        BackupStatus: "CREATING",
        BackupSizeBytes: 0,
        BackupType: "USER",
        BackupCreationDateTime: new Date(),
      },
    });
    ddb.on(ListBackupsCommand).resolves({
      BackupSummaries: [{
        BackupName: "bk1",
        BackupArn: "arn:backup/1",
        BackupStatus: "AVAILABLE",
        BackupCreationDateTime: new Date("2026-01-01T00:00:00Z"),
      }],
    });
    ddb.on(RestoreTableFromBackupCommand).resolves({
      TableDescription: { TableStatus: "CREATING" },
    });
    ddb.on(UpdateContinuousBackupsCommand).resolves({});
    ddb.on(RestoreTableToPointInTimeCommand).resolves({});

    const create = await cli([
      ...REGION,
      "--name",
      "prod",
      "backup",
      "create",
      "--backup-name",
      "bk1",
    ]);
    assert.equal(create.code, 0, create.err);
    assert.deepEqual(ddb.commandCalls(CreateBackupCommand)[0]?.args[0].input, {
      TableName: "prod",
      BackupName: "bk1",
    });
    const list = await cli([
      ...REGION,
      "--name",
      "prod",
      "--output",
      "json",
      "backup",
      "list",
    ]);
    assert.equal(JSON.parse(list.out)[0].arn, "arn:backup/1");
    assert.equal(
      ddb.commandCalls(ListBackupsCommand)[0]?.args[0].input.TableName,
      "prod",
    );
    const restore = await cli([
      ...REGION,
      "--name",
      "prod",
      "backup",
      "restore",
      "--backup-arn",
      "arn:backup/1",
      "--target-table",
      "prod-restored",
    ]);
    assert.equal(restore.code, 0, restore.err);
    assert.deepEqual(
      ddb.commandCalls(RestoreTableFromBackupCommand)[0]?.args[0].input,
      {
        BackupArn: "arn:backup/1",
        TargetTableName: "prod-restored",
      },
    );

    assert.equal(
      (await cli([
        ...REGION,
        "--name",
        "prod",
        "pitr",
        "enable",
        "--recovery-days",
        "14",
      ])).code,
      0,
    );
    assert.deepEqual(
      ddb.commandCalls(UpdateContinuousBackupsCommand)[0]?.args[0].input,
      {
        TableName: "prod",
        PointInTimeRecoverySpecification: {
          PointInTimeRecoveryEnabled: true,
          RecoveryPeriodInDays: 14,
        },
      },
    );
    assert.equal(
      (await cli([
        ...REGION,
        "--name",
        "prod",
        "pitr",
        "restore",
        "--target-table",
        "pitr-2",
        "--time",
        "2026-01-15T10:00:00Z",
      ])).code,
      0,
    );
    assert.equal(
      (await cli([
        ...REGION,
        "--name",
        "prod",
        "pitr",
        "restore",
        "--target-table",
        "pitr-3",
        "--latest",
      ])).code,
      0,
    );
    const [atTime, latest] = ddb.commandCalls(RestoreTableToPointInTimeCommand)
      .map((c) => c.args[0].input);
    assert.deepEqual(atTime, {
      SourceTableName: "prod",
      TargetTableName: "pitr-2",
      RestoreDateTime: new Date("2026-01-15T10:00:00Z"),
    });
    assert.deepEqual(latest, {
      SourceTableName: "prod",
      TargetTableName: "pitr-3",
      UseLatestRestorableTime: true,
    });
  } finally {
    ddb.restore();
  }
});

Deno.test("migrate plan, apply, verify, status and apply --delete migrate a seeded legacy table", async () => {
  const { createTable, seedLegacyTable } = await import(
    "../_fixtures/legacy_items.ts"
  );
  const { DeleteTableCommand, ScanCommand } = await import(
    "@aws-sdk/client-dynamodb"
  );
  const table = tableName("cli-migrate");
  const ep = await endpoint();
  const { client } = await localClient();
  const run = (...argv: string[]) =>
    cli(["--endpoint-url", ep, "--name", table, ...argv]);
  const unprefixedPks = async (): Promise<string[]> => {
    const pks: string[] = [];
    let start:
      | Record<string, import("@aws-sdk/client-dynamodb").AttributeValue>
      | undefined;
    do {
      const page = await client.send(
        new ScanCommand({
          TableName: table,
          ConsistentRead: true,
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      for (const it of page.Items ?? []) {
        const pk = it["PK"]?.S ?? "";
        const slash = pk.indexOf("/");
        const hash = pk.indexOf("#");
        if (slash < 0 || (hash >= 0 && slash > hash)) pks.push(pk);
      }
      start = page.LastEvaluatedKey;
    } while (start);
    return pks;
  };
  try {
    await createTable(client, table);
    const seeded = await seedLegacyTable(client, table, { items: 300 });
    assert.equal(seeded, 300);

    const before = await run("check");
    assert.equal(before.code, 3, before.out);

    const plan = await run("migrate", "plan");
    assert.equal(plan.code, 0, plan.err);
    assert.match(plan.out, /0\.10\.0-namespace-keys/);
    assert.match(plan.out, /Scanned 300 items/);
    assert.match(plan.out, /Record type\s+Unprefixed/);
    assert.match(plan.out, /entity\s+\d+/);
    assert.match(plan.out, /Total on-demand cost: \$/);
    assert.match(plan.out, /Dry run: nothing was written/);
    assert.equal((await unprefixedPks()).length, 300, "plan wrote nothing");

    const noYes = await run("migrate", "apply");
    assert.equal(noYes.code, 2);
    assert.match(noYes.err, /--yes/);

    const apply = await run("migrate", "apply", "--yes", "--segments", "2");
    assert.equal(apply.code, 0, apply.err);
    assert.match(apply.out, /schema 0\.9\.0 -> 0\.10\.0/);
    assert.match(apply.out, /0\.10\.0-namespace-keys/);
    assert.match(apply.out, /migrate apply --delete --yes/);
    assert.match(apply.err, /applying 0\.10\.0-namespace-keys/);

    const verify = await run("migrate", "verify");
    assert.equal(verify.code, 0, verify.err);
    assert.match(verify.out, /Verification passed/);
    assert.match(verify.out, /Unprefixed left: 300/);

    const strict = await run("migrate", "verify", "--expect-deleted");
    assert.equal(strict.code, 1, strict.out);
    assert.match(strict.err, /Verification failed/);
    assert.match(strict.err, /unprefixed item\(s\) left/);

    const status = await run("migrate", "status");
    assert.equal(status.code, 0, status.err);
    assert.match(status.out, /Schema version: 0\.10\.0/);
    assert.match(status.out, /Pending:\s+none/);
    assert.match(status.out, /Lock:\s+free/);
    assert.match(status.out, /0\.10\.0-namespace-keys/);

    const check = await run("check");
    assert.ok(check.code === 0 || check.code === 4, check.out + check.err);
    assert.match(check.out, /COMPATIBLE/);
    assert.doesNotMatch(check.out, /INCOMPATIBLE/);

    const again = await run("migrate", "apply", "--yes");
    assert.equal(again.code, 0, again.err);
    // A re-run in the dual-format window copies again only what old clients changed.
    assert.match(again.out, /copied 0 new or changed original\(s\) again/);

    const rollback = await run("migrate", "rollback", "--to", "0.9.0", "--yes");
    assert.equal(rollback.code, 1, rollback.out);
    assert.match(rollback.err, /Cannot roll back to 0\.9\.0/);
    assert.match(rollback.out, /zae-limiter pitr restore --name /);

    const del = await run("migrate", "apply", "--delete", "--yes");
    assert.equal(del.code, 0, del.err);
    assert.match(del.out, /deleted 300 unprefixed original/);
    assert.deepEqual(await unprefixedPks(), []);

    const after = await run("migrate", "verify", "--expect-deleted");
    assert.equal(after.code, 0, after.err);
    assert.match(after.out, /Unprefixed left: 0/);
  } finally {
    await client.send(new DeleteTableCommand({ TableName: table })).catch(
      () => {},
    );
    client.destroy();
  }
});

Deno.test("migrate on a missing table fails with exit 1 and creates nothing", async () => {
  const ep = await endpoint();
  const table = tableName("cli-migrate-missing");
  const r = await cli([
    "--endpoint-url",
    ep,
    "--name",
    table,
    "migrate",
    "status",
  ]);
  assert.equal(r.code, 1, r.out);
  assert.match(r.err, /does not exist/);
});

Deno.test("an unreachable endpoint is one clear line naming it, exit 1", async () => {
  const r = await cli([
    "--endpoint-url",
    "http://127.0.0.1:1",
    "--region",
    "us-east-1",
    "namespace",
    "list",
  ]);
  assert.equal(r.code, 1);
  assert.equal(r.err.trim().split("\n").length, 1, r.err);
  assert.match(
    r.err,
    /^Error: cannot reach DynamoDB at 127\.0\.0\.1:1 \(connection refused\): check --endpoint-url/,
  );
  assert.doesNotMatch(r.err, /Error: Error/);
});

/**
 * Runs `cli.ts` as a process with only the given environment: no AWS
 * settings of this machine (no config or credentials files, no instance
 * metadata).
 */
async function spawnCli(
  args: string[],
  env: Record<string, string>,
): Promise<Run> {
  const root = new URL("../../", import.meta.url).pathname;
  const none = `${root}.no-such-aws-file`;
  const inherit = (name: string): Record<string, string> => {
    const v = Deno.env.get(name);
    return v === undefined ? {} : { [name]: v };
  };
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: root,
    clearEnv: true,
    env: {
      ...inherit("HOME"),
      ...inherit("PATH"),
      ...inherit("DENO_DIR"),
      AWS_EC2_METADATA_DISABLED: "true",
      AWS_CONFIG_FILE: none,
      AWS_SHARED_CREDENTIALS_FILE: none,
      NO_COLOR: "1",
      ...env,
    },
    stdin: "null",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const dec = new TextDecoder();
  return {
    code: r.code,
    out: dec.decode(r.stdout),
    err: dec.decode(r.stderr),
  };
}

Deno.test("a missing region, missing credentials or an unknown host is one line saying what to check, never 'Error: Error:'", async () => {
  const noRegion = await spawnCli(["--name", "prod", "namespace", "list"], {});
  assert.equal(noRegion.code, 1, noRegion.err);
  assert.equal(
    noRegion.err.trim(),
    "Error: no AWS region set: pass --region or set AWS_REGION (or pass --endpoint-url for DynamoDB Local)",
  );
  const noCredentials = await spawnCli(
    ["--name", "prod", "namespace", "list"],
    { AWS_REGION: "eu-west-1" },
  );
  assert.equal(noCredentials.code, 1, noCredentials.err);
  assert.equal(
    noCredentials.err.trim().split("\n").length,
    1,
    noCredentials.err,
  );
  assert.match(
    noCredentials.err,
    /^Error: no AWS credentials found in region eu-west-1 \(.*\): set AWS_PROFILE or AWS_ACCESS_KEY_ID\/AWS_SECRET_ACCESS_KEY/,
  );
  // deploy talks to CloudFormation: the line names that service and its host.
  const noHost = await spawnCli(
    ["--name", "prod", "--region", "xx-nowhere-9", "deploy"],
    { AWS_ACCESS_KEY_ID: "a", AWS_SECRET_ACCESS_KEY: "b" },
  );
  assert.equal(noHost.code, 1, noHost.err);
  assert.equal(noHost.err.trim().split("\n").length, 1, noHost.err);
  assert.match(
    noHost.err.trim(),
    /^Error: cannot reach CloudFormation at cloudformation\.xx-nowhere-9\.amazonaws\.com \((host not found|host name lookup failed|connection timed out)\): check --endpoint-url/,
  );
  for (const r of [noRegion, noCredentials, noHost]) {
    assert.doesNotMatch(r.err, /Error: Error/);
  }
});

Deno.test("deploy, upgrade and delete waits show progress: resources done of the change set, a bar on a terminal, plain lines otherwise", async () => {
  const cfn = mockClient(CloudFormationClient);
  const ddb = mockClient(DynamoDBClient);
  const event = (id: string, logical: string, status: ResourceStatus) => ({
    StackId: "arn:stack/prod",
    EventId: id,
    StackName: "prod",
    Timestamp: new Date(0),
    LogicalResourceId: logical,
    ResourceType: logical === "prod"
      ? "AWS::CloudFormation::Stack"
      : "AWS::Test::Thing",
    ResourceStatus: status,
  });
  const stack = (status: StackStatus) => ({
    Stacks: [{
      StackName: "prod",
      StackId: "arn:stack/prod",
      StackStatus: status,
      CreationTime: new Date(),
      Parameters: [{ ParameterKey: "SchemaVersion", ParameterValue: "x" }],
    }],
  });
  /** Mocks a create (or update) of three resources that finish over two polls. */
  const mockOperation = (kind: "CREATE" | "UPDATE") => {
    cfn.reset();
    const prefix = kind;
    const describe = cfn.on(DescribeStacksCommand);
    (kind === "CREATE"
      ? describe.rejectsOnce(
        Object.assign(new Error("Stack with id prod does not exist"), {
          name: "ValidationError",
        }),
      )
      : describe.resolvesOnce(stack("UPDATE_COMPLETE")))
      .resolvesOnce(stack(`${prefix}_IN_PROGRESS`))
      .resolvesOnce(stack(`${prefix}_IN_PROGRESS`))
      .resolves(stack(`${prefix}_COMPLETE`));
    cfn.on(CreateChangeSetCommand).resolves({ Id: "arn:cs/1" });
    cfn.on(DescribeChangeSetCommand)
      .resolvesOnce({ Status: "CREATE_PENDING" })
      .resolves({
        Status: "CREATE_COMPLETE",
        Changes: ["Table", "Role", "Alarm"].map((id) => ({
          Type: "Resource",
          ResourceChange: { Action: "Add", LogicalResourceId: id },
        })),
      });
    cfn.on(ExecuteChangeSetCommand).resolves({});
    // Before the execution; then one resource done (an earlier operation's
    // events are older than the first one read); then all three.
    const old = [
      event("e0", "prod", "CREATE_IN_PROGRESS"),
      event("old", "Table", `${prefix}_COMPLETE`),
    ];
    cfn.on(DescribeStackEventsCommand)
      .resolvesOnce({ StackEvents: old })
      .resolvesOnce({
        StackEvents: [
          event("e2", "Table", `${prefix}_COMPLETE`),
          event("e1", "Table", `${prefix}_IN_PROGRESS`),
          ...old,
        ],
      })
      .resolves({
        StackEvents: [
          event("e5", "Alarm", `${prefix}_COMPLETE`),
          event("e4", "Role", `${prefix}_COMPLETE`),
          event("e3", "Alarm", `${prefix}_IN_PROGRESS`),
          event("e2", "Table", `${prefix}_COMPLETE`),
          event("e1", "Table", `${prefix}_IN_PROGRESS`),
          ...old,
        ],
      });
  };
  const run = async (argv: string[], terminal: boolean, pollMs = 0) => {
    const out: string[] = [];
    const err: string[] = [];
    const raw: string[] = [];
    const code = await main([...REGION, "--name", "prod", ...argv], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      // cli-progress redraws at most every 200 ms: a terminal run polls slower.
      sleep: () => new Promise((resolve) => setTimeout(resolve, pollMs)),
      isTerminal: () => terminal,
      errRaw: (t) => raw.push(t),
      columns: () => 100,
    }, { ZAEL_PROGRESS_INTERVAL_MS: "0" });
    return { code, out: out.join("\n"), err, raw: raw.join("") };
  };
  try {
    ddb.onAnyCommand().resolves({});
    mockOperation("CREATE");
    const plain = await run(["deploy"], false);
    assert.equal(plain.code, 0, plain.err.join("\n"));
    const lines = plain.err.map((l) => l.replace(/, \d+s/, ""));
    assert.ok(
      lines.includes("Preparing change set for stack 'prod': CREATE_PENDING"),
      lines.join("\n"),
    );
    assert.deepEqual(
      lines.filter((l) => l.startsWith("Creating stack")),
      [
        "Creating stack 'prod': CREATE_IN_PROGRESS 1/3 resources (33%)",
        "Creating stack 'prod': CREATE_IN_PROGRESS 3/3 resources (100%)",
        "Creating stack 'prod': CREATE_COMPLETE 3/3 resources (100%)",
      ],
    );
    assert.equal(plain.raw, "", "no bar off a terminal");

    mockOperation("CREATE");
    const tty = await run(["deploy"], true, 250);
    assert.equal(tty.code, 0, tty.err.join("\n"));
    assert.deepEqual(tty.err, [], "a terminal gets the bar, not lines");
    assert.match(
      tty.raw,
      /Creating stack 'prod': CREATE_IN_PROGRESS [#-]+ \d\/3 resources/,
    );
    assert.match(
      tty.raw,
      /Creating stack 'prod': CREATE_COMPLETE #+ 3\/3 resources/,
    );
    assert.ok(
      tty.raw.includes("\x1b[2K"),
      "the bar line is cleared at the end",
    );

    // upgrade reads the version record and the default namespace first.
    const record = {
      PK: { S: "_/SYSTEM#" },
      SK: { S: "#VERSION" },
      "schema_version": { S: SCHEMA_VERSION },
      "client_min_version": { S: "0.0.0" },
      "lambda_version": { S: "0.9.0" },
    };
    const defaultNs = {
      PK: { S: "_/SYSTEM#" },
      SK: { S: "#NAMESPACE#default" },
      status: { S: "active" },
      "namespace_id": { S: "abc" },
    };
    ddb.on(GetItemCommand).resolves({ Item: record });
    ddb.on(GetItemCommand, {
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#NAMESPACE#default" } },
    }).resolves({ Item: defaultNs });
    ddb.on(BatchGetItemCommand).resolves({
      Responses: { prod: [record, defaultNs] },
    });
    mockOperation("UPDATE");
    const upgrade = await run(["upgrade"], false);
    assert.equal(upgrade.code, 0, upgrade.err.join("\n"));
    assert.ok(
      upgrade.err.some((l) =>
        /^Updating stack 'prod': UPDATE_IN_PROGRESS 1\/3 resources, \d+s \(33%\)$/
          .test(l)
      ),
      upgrade.err.join("\n"),
    );

    mockOperation("UPDATE");
    const json = await run(["--output", "json", "upgrade"], true);
    assert.equal(json.code, 0, json.err.join("\n"));
    assert.equal(json.raw, "", "nothing drawn with --output json");
    const doc = JSON.parse(json.out) as { ok?: unknown; messages?: unknown };
    assert.equal(doc.ok, true, json.out);
    assert.ok(Array.isArray(doc.messages), json.out);

    // delete: the stack's resources are the total.
    cfn.reset();
    cfn.on(DescribeStacksCommand)
      .resolvesOnce(stack("CREATE_COMPLETE"))
      .resolvesOnce(stack("DELETE_IN_PROGRESS"))
      .rejects(
        Object.assign(new Error("Stack with id prod does not exist"), {
          name: "ValidationError",
        }),
      );
    cfn.on(DescribeStackResourcesCommand).resolves({
      StackResources: ["Table", "Role"].map((id) => ({
        LogicalResourceId: id,
        ResourceType: "AWS::Test::Thing",
        ResourceStatus: "CREATE_COMPLETE",
        Timestamp: new Date(0),
      })),
    });
    cfn.on(DescribeStackEventsCommand)
      .resolvesOnce({ StackEvents: [event("d0", "prod", "CREATE_COMPLETE")] })
      .resolves({
        StackEvents: [
          event("d1", "Role", "DELETE_COMPLETE"),
          event("d0", "prod", "CREATE_COMPLETE"),
        ],
      });
    cfn.on(DeleteStackCommand).resolves({});
    const deleted = await run(["delete", "--yes"], false);
    assert.equal(deleted.code, 0, deleted.err.join("\n"));
    assert.deepEqual(
      deleted.err.map((l) => l.replace(/, \d+s/, "")),
      [
        "Deleting stack 'prod': DELETE_IN_PROGRESS 1/2 resources (50%)",
        "Deleting stack 'prod': DELETE_COMPLETE 2/2 resources (100%)",
      ],
    );
  } finally {
    cfn.restore();
    ddb.restore();
  }
});

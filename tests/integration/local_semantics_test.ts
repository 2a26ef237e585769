/**
 * The runbooks rehearsed on DynamoDB Local (issue 17, items 6-8): `delete`
 * keeps the local table as AWS keeps the real one, every AWS-only command
 * fails with one line naming what is missing and the alternative, bad
 * values exit 2 naming their flag, seed 000's `upgrade --lambda-only` runs
 * as written, and `version`/`status` tell the truth about a pre-0.10 table.
 */
import assert from "node:assert/strict";
import {
  BatchGetItemCommand,
  DeleteItemCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  CloudFormationClient,
  CreateChangeSetCommand,
  DeleteChangeSetCommand,
  DescribeChangeSetCommand,
  DescribeStacksCommand,
} from "@aws-sdk/client-cloudformation";
import { mockClient } from "aws-sdk-client-mock";
import { main } from "../../cli.ts";
import { CLIENT_VERSION, SCHEMA_VERSION } from "../../mod.ts";
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

async function localTable(prefix: string) {
  const table = tableName(prefix);
  const ep = await endpoint();
  const { client } = await localClient();
  const run = (...argv: string[]): Promise<Run> =>
    cli(["--endpoint-url", ep, "--name", table, ...argv]);
  return {
    table,
    ep,
    client,
    run,
    async [Symbol.asyncDispose](): Promise<void> {
      await run("delete", "--yes", "--drop-table");
      client.destroy();
    },
  };
}

/** Turns a deployed table into a 0.9 one: only the legacy version record. */
async function makeLegacy(client: DynamoDBClient, table: string) {
  await client.send(
    new DeleteItemCommand({
      TableName: table,
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#VERSION" } },
    }),
  );
  await client.send(
    new PutItemCommand({
      TableName: table,
      Item: {
        PK: { S: "SYSTEM#" },
        SK: { S: "#VERSION" },
        "schema_version": { S: "0.9.0" },
        "client_min_version": { S: "0.8.2" },
        "lambda_version": { S: "0.9.1" },
        "updated_at": { S: "2025-12-01T00:00:00Z" },
        "updated_by": { S: "cli:0.9.1" },
      },
    }),
  );
}

Deno.test("delete with --endpoint-url keeps the local table and its data unless --drop-table", async () => {
  await using env = await localTable("del");
  assert.equal((await env.run("deploy")).code, 0);
  assert.equal((await env.run("entity", "create", "keep-me")).code, 0);

  const kept = await env.run("delete", "--yes");
  assert.equal(kept.code, 0, kept.out + kept.err);
  assert.match(kept.out, /kept with its data.*--drop-table/);
  assert.equal(await tableExists(env.client, env.table), true);
  // Seed 001's "delete + redeploy (table retained)": the entity is still there.
  const show = await env.run("entity", "show", "keep-me");
  assert.equal(show.code, 0, show.out + show.err);

  const dropped = await env.run("delete", "--yes", "--drop-table");
  assert.equal(dropped.code, 0, dropped.out + dropped.err);
  assert.match(dropped.out, /Local table '.*' deleted/);
  assert.equal(await tableExists(env.client, env.table), false);

  const onAws = await cli([
    "--region",
    "us-east-1",
    "--name",
    "prod",
    "delete",
    "--yes",
    "--drop-table",
  ]);
  assert.equal(onAws.code, 2, onAws.out + onAws.err);
  assert.match(onAws.err, /--drop-table is for --endpoint-url/);
});

Deno.test("AWS-only commands against DynamoDB Local fail with one line naming what is missing and the alternative", async () => {
  await using env = await localTable("awsonly");
  assert.equal((await env.run("deploy")).code, 0);
  const cases: [string[], RegExp][] = [
    [["backup", "create"], /has no on-demand backups.*--data-dir/],
    [["backup", "list"], /has no on-demand backups.*--data-dir/],
    [
      [
        "backup",
        "restore",
        "--backup-arn",
        "arn:x",
        "--target-table",
        "restored-2",
      ],
      /has no on-demand backups.*--data-dir/,
    ],
    [["pitr", "status"], /has no point-in-time recovery.*--data-dir/],
    [["pitr", "enable"], /has no point-in-time recovery.*--data-dir/],
    [
      [
        "pitr",
        "restore",
        "--time",
        "2026-01-15T10:00:00Z",
        "--target-table",
        "restored-3",
      ],
      /has no point-in-time recovery.*--data-dir/,
    ],
    [["list"], /has no CloudFormation stacks.*local status/],
  ];
  for (const [argv, pattern] of cases) {
    const r = await env.run(...argv);
    assert.equal(r.code, 1, `${argv.join(" ")}: ${r.out}${r.err}`);
    assert.equal(r.err.split("\n").length, 1, `${argv.join(" ")}: ${r.err}`);
    assert.match(r.err, /^Error: Cannot .*DynamoDB Local/);
    assert.match(r.err, pattern, argv.join(" "));
    assert.doesNotMatch(r.err, /UnknownOperation|XML parse/);
  }
});

Deno.test("bad values exit 2 with a message naming the flag", async () => {
  await using env = await localTable("badin");
  assert.equal((await env.run("deploy")).code, 0);
  const cases: [string[], RegExp][] = [
    [["usage", "list", "-e", "u1", "--start", "notadate"], /--start/],
    [["usage", "list", "-e", "u1", "--end", "2026-13-45"], /--end/],
    [["usage", "summary", "-e", "u1", "--start", "1"], /--start/],
    [["migrate", "rollback", "--to", "99.0.0", "--yes"], /--to/],
    [["migrate", "rollback", "--to", "99.0.0"], /--to/],
    [["migrate", "apply", "--to", "0.11.0", "--yes"], /--to/],
    [["migrate", "plan", "--to", "0.11.0"], /--to/],
    [
      ["pitr", "restore", "--time", "1", "--target-table", "restored"],
      /--time/,
    ],
    [["backup", "list", "--since", "yesterday"], /--since/],
  ];
  for (const [argv, pattern] of cases) {
    const r = await env.run(...argv);
    assert.equal(r.code, 2, `${argv.join(" ")}: ${r.out}${r.err}`);
    assert.match(r.err, pattern, `${argv.join(" ")}: ${r.err}`);
  }
  // A valid time still works.
  const ok = await env.run(
    "usage",
    "list",
    "-e",
    "u1",
    "--start",
    "2026-01-15T00:00:00Z",
  );
  assert.equal(ok.code, 0, ok.out + ok.err);
});

Deno.test("migrate rollback --to a version above the table's exits 2 naming --to", async () => {
  await using env = await localTable("rbto");
  assert.equal((await env.run("deploy")).code, 0);
  await makeLegacy(env.client, env.table);
  const r = await env.run("migrate", "rollback", "--to", "0.10.0", "--yes");
  assert.equal(r.code, 2, r.out + r.err);
  assert.match(r.err, /Invalid --to '0\.10\.0'.*schema 0\.9\.0/);
});

Deno.test("version and status tell the truth about a pre-0.10 table", async () => {
  await using env = await localTable("legver");
  assert.equal((await env.run("deploy")).code, 0);
  await makeLegacy(env.client, env.table);
  const v = await env.run("version");
  assert.equal(v.code, 3, v.out + v.err);
  assert.match(v.out, /Table Schema: +0\.9\.0/);
  assert.match(v.out, /Min Client Version: +0\.8\.2/);
  assert.match(v.out, /Worker Version: +0\.9\.1/);
  assert.match(v.out, /Updated By: +cli:0\.9\.1/);
  assert.match(v.out, /zae-limiter upgrade/);
  const s = await env.run("status");
  assert.equal(s.code, 3, s.out + s.err);
  assert.doesNotMatch(s.out, /Infrastructure is ready/);
  assert.match(s.out, /pre-0\.10 key layout.*no .* client can open it/);
  assert.match(s.out, /upgrade.*migrate apply/);
  // Still read-only.
  const current = await env.client.send(
    new GetItemCommand({
      TableName: env.table,
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#VERSION" } },
    }),
  );
  assert.equal(current.Item, undefined);
});

Deno.test("upgrade --lambda-only as seed 000 writes it moves the deployed worker image to this client's version", async () => {
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
    const defaultNs = {
      PK: { S: "_/SYSTEM#" },
      SK: { S: "#NAMESPACE#default" },
      status: { S: "active" },
      "namespace_id": { S: "abc" },
    };
    ddb.onAnyCommand().resolves({});
    ddb.on(GetItemCommand).resolves({ Item: record });
    ddb.on(GetItemCommand, {
      Key: { PK: { S: "_/SYSTEM#" }, SK: { S: "#NAMESPACE#default" } },
    }).resolves({ Item: defaultNs });
    ddb.on(BatchGetItemCommand).resolves({
      Responses: { prod: [record, defaultNs] },
    });
    const stack = (image: string) => ({
      Stacks: [{
        StackName: "prod",
        StackStatus: "UPDATE_COMPLETE" as const,
        CreationTime: new Date(),
        Parameters: [
          { ParameterKey: "SchemaVersion", ParameterValue: SCHEMA_VERSION },
          { ParameterKey: "WorkerImage", ParameterValue: image },
        ],
      }],
    });
    cfn.on(DescribeStacksCommand).resolves(
      stack("registry.example.com/zae/worker:0.9.0"),
    );
    cfn.on(CreateChangeSetCommand).resolves({ Id: "arn:cs/1" });
    cfn.on(DescribeChangeSetCommand).resolves({
      Status: "FAILED",
      StatusReason:
        "The submitted information didn't contain changes. Submit different information to create a change set.",
    });
    cfn.on(DeleteChangeSetCommand).resolves({});
    const argv = [
      "--region",
      "us-east-1",
      "--name",
      "prod",
      "upgrade",
      "--lambda-only",
    ];
    const r = await cli(argv);
    assert.equal(r.code, 0, r.out + r.err);
    const input = cfn.commandCalls(CreateChangeSetCommand)[0]?.args[0].input;
    assert.equal(input?.UsePreviousTemplate, true);
    assert.deepEqual(input?.Parameters?.[1], {
      ParameterKey: "WorkerImage",
      ParameterValue: `registry.example.com/zae/worker:${CLIENT_VERSION}`,
    });
    assert.match(r.out, /worker:0\.9\.0 -> .*worker:0\.10/);

    // No workers deployed: nothing to update, said plainly.
    cfn.on(DescribeStacksCommand).resolves(stack(""));
    const none = await cli(argv);
    assert.equal(none.code, 0, none.out + none.err);
    assert.match(none.out, /No workers are deployed/);

    // Pinned by digest: a usage error naming --worker-image.
    cfn.on(DescribeStacksCommand).resolves(
      stack("registry.example.com/zae/worker@sha256:abc"),
    );
    const pinned = await cli(argv);
    assert.equal(pinned.code, 2, pinned.out + pinned.err);
    assert.match(pinned.err, /pinned by digest.*--worker-image/);
  } finally {
    cfn.restore();
    ddb.restore();
  }
});

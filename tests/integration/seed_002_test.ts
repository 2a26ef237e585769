/**
 * Seed 002 (the namespace-keys runbook) in its own order, on DynamoDB Local:
 * a 0.9 table without GSI4, the stack upgrade (the change set through
 * aws-sdk-client-mock; its effect on the table — GSI4 — applied with
 * UpdateTable, as CloudFormation would), namespace discovery on the
 * pre-0.10 table, plan, apply, an old client writing in the dual-format
 * window, verify, delete and check.
 */
import assert from "node:assert/strict";
import {
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  ScanCommand,
  TransactWriteItemsCommand,
  UpdateTableCommand,
} from "@aws-sdk/client-dynamodb";
import {
  CloudFormationClient,
  CreateChangeSetCommand,
  DescribeChangeSetCommand,
  DescribeStacksCommand,
  ExecuteChangeSetCommand,
} from "@aws-sdk/client-cloudformation";
import { mockClient } from "aws-sdk-client-mock";
import { main } from "../../cli.ts";
import { type Item, str } from "../../core/expr.ts";
import { isUnprefixedKey } from "../../core/keys.ts";
import { createTableInput } from "../../core/schema.ts";
import { Repository } from "../../mod.ts";
import {
  legacyEntityItems,
  legacySystemItems,
  putItemsBatched,
} from "../../migrations/bench_support.ts";
import { planItemCopy } from "../../migrations/v0_10_0_namespace_keys.ts";
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

async function scanAll(client: DynamoDBClient, table: string): Promise<Item[]> {
  const out: Item[] = [];
  let start: Item | undefined;
  do {
    const res = await client.send(
      new ScanCommand({
        TableName: table,
        ConsistentRead: true,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    out.push(...(res.Items ?? []));
    start = res.LastEvaluatedKey;
  } while (start);
  return out;
}

/** The 0.9 table layout: today's minus GSI4 (added by the 0.10 stack update). */
async function createLegacyTable(
  client: DynamoDBClient,
  table: string,
): Promise<void> {
  const input = createTableInput(table);
  await client.send(
    new CreateTableCommand({
      ...input,
      AttributeDefinitions: (input.AttributeDefinitions ?? []).filter((a) =>
        !a.AttributeName?.startsWith("GSI4")
      ),
      GlobalSecondaryIndexes: (input.GlobalSecondaryIndexes ?? []).filter((
        i,
      ) => i.IndexName !== "GSI4"),
    }),
  );
}

/** What the 0.10 template's table change does: add GSI4. */
async function addGsi4(client: DynamoDBClient, table: string): Promise<void> {
  const input = createTableInput(table);
  const gsi4 = (input.GlobalSecondaryIndexes ?? []).find((i) =>
    i.IndexName === "GSI4"
  );
  assert.ok(gsi4);
  await client.send(
    new UpdateTableCommand({
      TableName: table,
      AttributeDefinitions: (input.AttributeDefinitions ?? []).filter((a) =>
        a.AttributeName?.startsWith("GSI4")
      ),
      GlobalSecondaryIndexUpdates: [{
        Create: {
          IndexName: "GSI4",
          KeySchema: gsi4.KeySchema,
          Projection: gsi4.Projection,
          ...(gsi4.ProvisionedThroughput
            ? { ProvisionedThroughput: gsi4.ProvisionedThroughput }
            : {}),
        },
      }],
    }),
  );
  for (let i = 0; i < 200; i++) {
    const d = await client.send(new DescribeTableCommand({ TableName: table }));
    const idx = d.Table?.GlobalSecondaryIndexes?.find((x) =>
      x.IndexName === "GSI4"
    );
    if (idx?.IndexStatus === "ACTIVE") return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function legacyFixture(): Item[] {
  return [
    ...legacySystemItems({ schemaVersion: "0.9.0", resources: ["api"] }),
    ...legacyEntityItems({ id: "u1", resources: ["api", "openai/gpt-4"] }),
    ...legacyEntityItems({ id: "u2", parentId: "u1", resources: ["api"] }),
  ];
}

Deno.test("upgrade on a pre-0.10 table applies the template and registers 'default' without a version record", async () => {
  const cfn = mockClient(CloudFormationClient);
  const ddb = mockClient(DynamoDBClient);
  try {
    ddb.onAnyCommand().resolves({});
    ddb.on(GetItemCommand, {
      Key: { PK: { S: "SYSTEM#" }, SK: { S: "#VERSION" } },
    }).resolves({
      Item: {
        PK: { S: "SYSTEM#" },
        SK: { S: "#VERSION" },
        "schema_version": { S: "0.9.0" },
      },
    });
    cfn.on(DescribeStacksCommand).resolvesOnce({
      Stacks: [{
        StackName: "prod",
        StackStatus: "UPDATE_COMPLETE",
        CreationTime: new Date(),
        Parameters: [{
          ParameterKey: "SchemaVersion",
          ParameterValue: "0.9.0",
        }],
      }],
    }).resolves({
      Stacks: [{
        StackName: "prod",
        StackStatus: "UPDATE_COMPLETE",
        CreationTime: new Date(),
      }],
    });
    cfn.on(CreateChangeSetCommand).resolves({ Id: "arn:cs/u" });
    cfn.on(DescribeChangeSetCommand).resolves({ Status: "CREATE_COMPLETE" });
    cfn.on(ExecuteChangeSetCommand).resolves({});
    const r = await cli(["--region", "us-east-1", "--name", "prod", "upgrade"]);
    assert.equal(r.code, 0, r.out + r.err);
    const body = cfn.commandCalls(CreateChangeSetCommand)[0]?.args[0].input
      .TemplateBody ?? "";
    assert.match(body, /"GSI4"/);
    assert.match(body, /NamespaceAcquirePolicy/);
    const tx = ddb.commandCalls(TransactWriteItemsCommand)[0]?.args[0].input;
    const sks = (tx?.TransactItems ?? []).map((t) => t.Put?.Item?.["SK"]?.S);
    assert.equal(sks[0], "#NAMESPACE#default");
    assert.match(sks[1] ?? "", /^#NSID#/);
    // No version record is written: the migration moves the legacy one.
    assert.equal(ddb.commandCalls(PutItemCommand).length, 0);
    assert.match(r.out, /data migration pending/);
  } finally {
    cfn.restore();
    ddb.restore();
  }
});

Deno.test("seed 002 in order on a 0.9 table, with an old client writing in the dual-format window", async () => {
  const ep = await endpoint();
  const { client } = await localClient();
  const table = tableName("seed2");
  const run = (...argv: string[]) =>
    cli(["--endpoint-url", ep, "--name", table, ...argv]);
  try {
    await createLegacyTable(client, table);
    const legacy = legacyFixture();
    await putItemsBatched(client, table, legacy);

    // Migrating before step 1 is refused: no GSI4.
    const early = await run("migrate", "apply", "--yes");
    assert.equal(early.code, 1, early.out + early.err);
    assert.match(early.err, /no GSI4.*zae-limiter upgrade/);
    assert.deepEqual(
      (await scanAll(client, table)).filter((i) => {
        const pk = str(i, "PK") ?? "";
        return !isUnprefixedKey(pk) &&
          (!pk.startsWith("_/") ||
            (str(i, "SK") ?? "").startsWith("#NAMESPACE#"));
      }),
      [],
      "nothing was copied and nothing registered",
    );
    const earlyPlan = await run("migrate", "plan");
    assert.equal(earlyPlan.code, 1);

    // Step 1: upgrade (GSI4 from the template; 'default' registered).
    await addGsi4(client, table);
    const { registerNamespaceRecords } = await import(
      "../../core/namespace_registry.ts"
    );
    const { systemClock } = await import("../../core/clock.ts");
    await registerNamespaceRecords(
      { client, table, clock: systemClock },
      "default",
    );

    // Step 2: discover the id on the pre-0.10 table.
    const show = await run("namespace", "show", "default");
    assert.equal(show.code, 0, show.out + show.err);
    const id = /Namespace ID: (\S+)/.exec(show.out)?.[1];
    assert.ok(id);
    assert.match(show.err, /pre-0.10 key layout.*not migrated yet/);
    const list = await run("namespace", "list");
    assert.equal(list.code, 0, list.out + list.err);
    assert.match(list.out, new RegExp(`default\\s+\\| ${id}`));

    // Step 3: plan, apply (copies; originals kept).
    assert.equal((await run("migrate", "plan")).code, 0);
    const apply = await run("migrate", "apply", "--yes");
    assert.equal(apply.code, 0, apply.out + apply.err);

    // Dual-format window: an old client changes a limit and adds an entity.
    const cfg = legacy.find((i) =>
      str(i, "PK") === "ENTITY#u1" && str(i, "SK") === "#CONFIG#api"
    );
    assert.ok(cfg);
    await client.send(
      new PutItemCommand({
        TableName: table,
        Item: { ...cfg, l_rpm_cp: { N: "777" } },
      }),
    );
    await putItemsBatched(
      client,
      table,
      legacyEntityItems({ id: "late", resources: ["api"] }),
    );
    const drift = await run("migrate", "verify", "--sample", "0");
    assert.equal(drift.code, 1, drift.out + drift.err);
    assert.match(drift.err, /ENTITY#u1 SK=#CONFIG#api changed after its copy/);
    assert.match(drift.err, /missing copy of entity item PK=ENTITY#late/);
    const refused = await run("migrate", "apply", "--delete", "--yes");
    assert.equal(refused.code, 1, refused.out + refused.err);
    assert.match(
      refused.err,
      /changed after their copy.*--overwrite-drift.*Nothing was deleted/,
    );

    // Re-running apply copies what changed; verify passes.
    const again = await run("migrate", "apply", "--yes");
    assert.equal(again.code, 0, again.out + again.err);
    assert.match(again.out, /copied \d+ new or changed original/);
    const ok = await run("migrate", "verify");
    assert.equal(ok.code, 0, ok.out + ok.err);

    // Delete, then check.
    const del = await run("migrate", "apply", "--delete", "--yes");
    assert.equal(del.code, 0, del.out + del.err);
    const check = await run("check");
    // COMPATIBLE; exit 4 only says the recorded 0.9 workers can be updated.
    assert.equal(check.code, 4, check.out + check.err);
    assert.match(check.out, /Result: COMPATIBLE/);

    // Nothing the old client wrote is lost.
    const repo = await Repository.open({ client, stack: table });
    const limits = await repo.getLimits("u1", { resource: "api" });
    assert.equal(limits.find((l) => l.name === "rpm")?.capacity, 777);
    assert.equal((await repo.getEntity("late"))?.name, "Entity late");

    // Every migrated item is the original under the namespace id (spec 06
    // §6), apart from the documented bucket addition.
    const items = await scanAll(client, table);
    assert.deepEqual(
      items.filter((i) => isUnprefixedKey(str(i, "PK") ?? "")),
      [],
    );
    const originals = [
      ...legacy.map((i) =>
        str(i, "PK") === "ENTITY#u1" && str(i, "SK") === "#CONFIG#api"
          ? { ...i, l_rpm_cp: { N: "777" } }
          : i
      ),
      ...legacyEntityItems({ id: "late", resources: ["api"] }),
    ];
    const byKey = new Map(
      items.map((i) => [`${str(i, "PK")}|${str(i, "SK")}`, i]),
    );
    for (const o of originals) {
      const d = planItemCopy(o, id);
      if (d.kind !== "copy" || d.type === "version") continue;
      const got = byKey.get(`${str(d.item, "PK")}|${str(d.item, "SK")}`);
      assert.deepEqual(
        got,
        d.item,
        `${str(d.item, "PK")} ${str(d.item, "SK")}`,
      );
    }
  } finally {
    await client.send(new DeleteTableCommand({ TableName: table })).catch(
      () => {},
    );
    client.destroy();
  }
});

/**
 * Seed 002 (the namespace-keys runbook) in its own order, on DynamoDB Local:
 * a 0.9 table of the reference's items without GSI4; the stack upgrade
 * (on AWS through a change set, mocked here; on DynamoDB Local the
 * command itself adds GSI4 and registers `default`); namespace discovery
 * on the pre-0.10 table; plan, apply, an old client writing in the
 * dual-format window, verify, delete and check; then the migrated items
 * compared with what the reference stores at 0.10.
 */
import assert from "node:assert/strict";
import {
  CreateTableCommand,
  DeleteTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteItemsCommand,
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
  putItemsBatched,
} from "../_fixtures/legacy_items.ts";
import { planItemCopy } from "../../migrations/v0_10_0_namespace_keys.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";
import {
  referenceLegacyItems,
  referenceV010Items,
} from "./_reference_items.ts";

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

Deno.test("seed 002 in order on a 0.9 table of the reference's items, with an old client writing in the dual-format window", async () => {
  const ep = await endpoint();
  const { client } = await localClient();
  const table = tableName("seed2");
  const run = (...argv: string[]) =>
    cli(["--endpoint-url", ep, "--name", table, ...argv]);
  try {
    await createLegacyTable(client, table);
    const legacy = referenceLegacyItems();
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
    const status = await run("status");
    assert.equal(status.code, 3, status.out + status.err);
    assert.doesNotMatch(status.out, /Infrastructure is ready/);

    // Step 1: upgrade, as written (locally: the template's GSI4, 'default').
    const upgrade = await run("upgrade");
    assert.equal(upgrade.code, 0, upgrade.out + upgrade.err);
    assert.match(upgrade.out, /Index GSI4 created/);
    assert.match(upgrade.out, /Namespace 'default' registered/);
    assert.match(upgrade.out, /data migration pending/);
    const described = await client.send(
      new DescribeTableCommand({ TableName: table }),
    );
    assert.ok(
      described.Table?.GlobalSecondaryIndexes?.some((i) =>
        i.IndexName === "GSI4"
      ),
    );
    assert.equal((await run("upgrade")).code, 0, "upgrade runs twice");

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

    // Dual-format window: an old (0.9) client changes a limit, adds an
    // entity with its config, and records an audit event.
    const cfg = legacy.find((i) =>
      str(i, "PK") === "ENTITY#user-1" &&
      str(i, "SK") === "#CONFIG#openai/gpt-4"
    );
    assert.ok(cfg);
    const changedCfg = { ...cfg, "l_rpm_cp": { N: "777" } };
    await client.send(
      new PutItemCommand({ TableName: table, Item: changedCfg }),
    );
    const late = legacyEntityItems({ id: "late", resources: ["api"] });
    await putItemsBatched(client, table, late);
    const drift = await run("migrate", "verify", "--sample", "0");
    assert.equal(drift.code, 1, drift.out + drift.err);
    assert.match(
      drift.err,
      /ENTITY#user-1 SK=#CONFIG#openai\/gpt-4 changed after its copy/,
    );
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
    const ready = await run("status");
    assert.equal(ready.code, 0, ready.out + ready.err);
    assert.match(ready.out, /Infrastructure is ready/);

    // Nothing the old client wrote is lost.
    const repo = await Repository.open({ client, stack: table });
    const limits = await repo.getLimits("user-1", { resource: "openai/gpt-4" });
    assert.equal(limits.find((l) => l.name === "rpm")?.capacity, 777);
    assert.equal((await repo.getEntity("late"))?.name, "Entity late");
    assert.equal((await repo.getEntity("user-1"))?.parentId, "org-1");

    // The migrated table is what the reference stores at 0.10, apart from
    // the documented additions (README, "What the migration adds").
    const items = await scanAll(client, table);
    assert.deepEqual(
      items.filter((i) => isUnprefixedKey(str(i, "PK") ?? "")),
      [],
    );
    const byKey = new Map(
      items.map((i) => [`${str(i, "PK")}|${str(i, "SK")}`, i]),
    );
    const seen = new Set<string>();
    const expectOne = (expected: Item, additions: Item = {}): void => {
      const k = `${str(expected, "PK")}|${str(expected, "SK")}`;
      seen.add(k);
      assert.deepEqual(byKey.get(k), { ...expected, ...additions }, k);
    };
    for (const e of referenceV010Items(id)) {
      const pk = str(e, "PK") ?? "";
      const sk = str(e, "SK") ?? "";
      if (sk === "#CONFIG#openai/gpt-4" && pk.endsWith("/ENTITY#user-1")) {
        expectOne({ ...e, "l_rpm_cp": { N: "777" } });
      } else if (sk === "#STATE") {
        expectOne(e, {
          "migrated_from": { S: "BUCKET#user-1#openai/gpt-4#0" },
        });
      } else if (sk === "#PROVISIONER") {
        expectOne(e, { GSI4SK: { S: `${id}/SYSTEM#` } });
      } else expectOne(e);
    }
    // The old client's late items, as the reference would store them at 0.10.
    for (const o of late) {
      const d = planItemCopy(o, id);
      assert.equal(d.kind, "copy");
      if (d.kind === "copy") expectOne(d.item);
    }
    // The version record moved to `_` and says 0.10.0.
    const version = byKey.get("_/SYSTEM#|#VERSION");
    seen.add("_/SYSTEM#|#VERSION");
    assert.equal(version?.["schema_version"]?.S, "0.10.0");
    assert.equal(version?.["GSI4PK"]?.S, "_");
    assert.equal(version?.["GSI4SK"]?.S, "_/SYSTEM#");
    // Everything else: the namespace registry (the reference's own records)
    // and the migration history (a documented addition). No lock, no
    // checkpoint is left behind.
    const rest = [...byKey.keys()].filter((k) => !seen.has(k)).sort();
    assert.deepEqual(rest, [
      `_/SYSTEM#|#MIGRATION_HISTORY#0.10.0-lsis`,
      `_/SYSTEM#|#MIGRATION_HISTORY#0.10.0-namespace-keys`,
      `_/SYSTEM#|#NAMESPACE#default`,
      `_/SYSTEM#|#NSID#${id}`,
    ]);

    await referenceReadsIgnoreAdditions(client, table, id);
  } finally {
    await client.send(new DeleteTableCommand({ TableName: table })).catch(
      () => {},
    );
    client.destroy();
  }
});

/**
 * The Python client's read paths (spec 01 §7, spec 03) replayed with raw
 * requests on the migrated table. No Python runtime of the reference is
 * available here, so this is a structural proof from the spec: each path is
 * the query the reference sends, and its answer must not contain or be
 * changed by the additions (`migrated_from`, `#MIGRATION_HISTORY#` items,
 * the provisioner's GSI4SK).
 */
async function referenceReadsIgnoreAdditions(
  client: DynamoDBClient,
  table: string,
  ns: string,
): Promise<void> {
  const query = async (input: {
    index?: string;
    key: string;
    value: string;
    begins?: [string, string];
  }): Promise<Item[]> => {
    const out: Item[] = [];
    let start: Item | undefined;
    do {
      const r = await client.send(
        new QueryCommand({
          TableName: table,
          ...(input.index ? { IndexName: input.index } : {}),
          KeyConditionExpression: `${input.key} = :v${
            input.begins ? ` AND begins_with(${input.begins[0]}, :b)` : ""
          }`,
          ExpressionAttributeValues: {
            ":v": { S: input.value },
            ...(input.begins ? { ":b": { S: input.begins[1] } } : {}),
          },
          ...(start ? { ExclusiveStartKey: start } : {}),
        }),
      );
      out.push(...(r.Items ?? []));
      start = r.LastEvaluatedKey;
    } while (start);
    return out;
  };
  // list_namespaces(): forward records only.
  const forward = await query({
    key: "PK",
    value: "_/SYSTEM#",
    begins: ["SK", "#NAMESPACE#"],
  });
  assert.deepEqual(forward.map((i) => str(i, "SK")), ["#NAMESPACE#default"]);
  // list_orphan_namespaces(): reverse records.
  const reverse = await query({
    key: "PK",
    value: "_/SYSTEM#",
    begins: ["SK", "#NSID#"],
  });
  assert.deepEqual(reverse.map((i) => str(i, "SK")), [`#NSID#${ns}`]);
  // purge_namespace(ns): every GSI4 item of the namespace; the history
  // items are under `_`, which the reference can neither register, delete
  // nor purge (no reverse record).
  const purge = await query({ index: "GSI4", key: "GSI4PK", value: ns });
  assert.ok(purge.length > 0);
  for (const k of purge) {
    assert.ok((str(k, "PK") ?? "").startsWith(`${ns}/`), str(k, "PK") ?? "");
  }
  assert.ok(
    purge.some((k) => str(k, "SK") === "#PROVISIONER"),
    "the provisioner record is purged with its namespace",
  );
  const reserved = await query({ index: "GSI4", key: "GSI4PK", value: "_" });
  for (const k of reserved) {
    assert.equal(str(k, "PK"), "_/SYSTEM#");
  }
  // get_buckets(): limits are the attributes `b_{limit}_tk`; `wcu` removed.
  const bucket = (await query({
    index: "GSI3",
    key: "GSI3PK",
    value: `${ns}/ENTITY#user-1`,
    begins: ["GSI3SK", "BUCKET#"],
  }))[0];
  assert.ok(bucket);
  const full = await client.send(
    new GetItemCommand({
      TableName: table,
      Key: { PK: bucket["PK"] ?? { S: "" }, SK: bucket["SK"] ?? { S: "" } },
    }),
  );
  assert.ok(full.Item?.["migrated_from"]);
  const limitNames = (item: Item): string[] =>
    Object.keys(item).filter((a) => a.startsWith("b_") && a.endsWith("_tk"))
      .map((a) => a.slice(2, -3)).filter((l) => l !== "wcu").sort();
  const { "migrated_from": _dropped, ...without } = full.Item ?? {};
  assert.deepEqual(limitNames(full.Item ?? {}), ["rpm"]);
  assert.deepEqual(limitNames(full.Item ?? {}), limitNames(without));
}

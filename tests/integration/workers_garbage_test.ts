/**
 * Every bucket item the aggregator cannot use leaves a trace naming its key
 * (issue 16, item 5): a real worker process on DynamoDB Local, ten kinds of
 * garbage bucket writes (mistyped numeric attributes, a fraction, an empty
 * or unparsable bucket key, no entity, a non-bucket `#STATE` item), each
 * dead-lettered as `invalid_record` with its key and reason and logged with
 * its key; nothing is floored or counted, and the valid load around them is
 * counted exactly.
 */
import assert from "node:assert/strict";
import {
  type AttributeValue,
  PutItemCommand,
  UpdateItemCommand,
} from "@aws-sdk/client-dynamodb";
import { pkBucket } from "../../core/keys.ts";
import { main } from "../../cli.ts";
import { endpoint, freshRepo } from "./_harness.ts";
import {
  assertTotals,
  generousLimits,
  killAll,
  logEntries,
  runLoad,
  sameTotals,
  snapshotTotals,
  spawnWorker,
  stopWorker,
  waitFor,
  type WorkerProc,
} from "./_workers.ts";

type Item = Record<string, AttributeValue>;

function bucket(pk: string, overrides: Item = {}): Item {
  return {
    PK: { S: pk },
    SK: { S: "#STATE" },
    "entity_id": { S: "junk" },
    resource: { S: "gpt-4" },
    rf: { N: String(Date.now()) },
    "b_rpm_tk": { N: "90000" },
    "b_rpm_cp": { N: "100000" },
    "b_rpm_ra": { N: "100000" },
    "b_rpm_rp": { N: "60000" },
    "b_rpm_tc": { N: "10000" },
    ...overrides,
  };
}

Deno.test("a worker process dead-letters and logs every kind of garbage bucket item by key, and counts the valid load exactly", async () => {
  await using env = await freshRepo();
  await generousLimits(env.repo);
  const table = env.repo.tableName;
  const ns = env.repo.namespaceId;
  const url = await endpoint();
  const pk = (entity: string) => pkBucket(ns, entity, "gpt-4", 0);
  // Inserts: each is the creation of a bucket the aggregator would count.
  const garbage: readonly (readonly [string, Item, RegExp])[] = [
    [
      "string tc",
      bucket(pk("g-string"), { "b_rpm_tc": { S: "10000" } }),
      /"b_rpm_tc" is a string/,
    ],
    [
      "boolean tc",
      bucket(pk("g-bool"), { "b_rpm_tc": { BOOL: true } }),
      /"b_rpm_tc" is a boolean/,
    ],
    [
      "map tc",
      bucket(pk("g-map"), { "b_rpm_tc": { M: { n: { N: "1" } } } }),
      /"b_rpm_tc" is a map/,
    ],
    [
      "fractional tc",
      bucket(pk("g-fraction"), { "b_rpm_tc": { N: "10000.5" } }),
      /"b_rpm_tc" is 10000\.5, expected a whole number/,
    ],
    [
      "string tk",
      bucket(pk("g-tk"), { "b_rpm_tk": { S: "lots" } }),
      /"b_rpm_tk" is a string/,
    ],
    [
      "string rf",
      bucket(pk("g-rf"), { rf: { S: "yesterday" } }),
      /"rf" is a string/,
    ],
    [
      "empty bucket key",
      bucket(`${ns}/BUCKET#`),
      /(does not parse as|is not) a bucket key/,
    ],
    [
      "unparsable shard",
      bucket(`${ns}/BUCKET#g-shard#gpt-4#x`),
      /(does not parse as|is not) a bucket key/,
    ],
    [
      "no entity",
      bucket(pk("g-entity"), { "entity_id": { S: "" } }),
      /no entity_id/,
    ],
    [
      "non-bucket #STATE item",
      bucket(`${ns}/ENTITY#g-state`),
      /is not a bucket key/,
    ],
  ];
  const procs: WorkerProc[] = [];
  try {
    const worker = spawnWorker("garbage", table, url);
    procs.push(worker);
    const entities = ["valid1", "valid2"];
    const want = await runLoad(env.repo, { count: 10, entities });
    for (const [, item] of garbage) {
      await env.client.send(
        new PutItemCommand({ TableName: table, Item: item }),
      );
    }
    // A garbage MODIFY too: a fraction written over a valid counter.
    await env.client.send(
      new PutItemCommand({ TableName: table, Item: bucket(pk("g-modify")) }),
    );
    await env.client.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { PK: { S: pk("g-modify") }, SK: { S: "#STATE" } },
        UpdateExpression: "SET b_rpm_tc = :f",
        ExpressionAttributeValues: { ":f": { N: "10500.25" } },
      }),
    );
    await runLoad(env.repo, { count: 10, entities, into: want });

    const letters = async () => {
      const out: string[] = [];
      const code = await main(
        [
          "--endpoint-url",
          url,
          "--name",
          table,
          "--output",
          "json",
          "worker",
          "dead-letters",
          "list",
        ],
        { out: (t) => out.push(t), err: () => {} },
        {},
      );
      assert.equal(code, 0);
      return JSON.parse(out.join("\n")) as {
        record: { keys: { PK?: { S?: string } }; eventName: string };
        reason: string;
        error: string;
        workload?: string;
      }[];
    };
    await waitFor(
      "every garbage item dead-lettered",
      async () => (await letters()).length >= garbage.length + 1,
      30_000,
    );
    await waitFor(
      "the valid load counted",
      async () => sameTotals(await snapshotTotals(env.repo, entities), want),
      30_000,
    );

    const stored = await letters();
    for (const [what, item, reason] of garbage) {
      const key = item["PK"]?.S ?? "";
      const letter = stored.find((l) => l.record.keys.PK?.S === key);
      assert.ok(letter, `${what}: dead-lettered by its key ${key}`);
      assert.equal(letter.reason, "invalid_record", what);
      assert.equal(letter.workload, "aggregator", what);
      assert.match(letter.error, reason, what);
      assert.ok(
        letter.error.includes(JSON.stringify(key)),
        `${what}: names ${key}`,
      );
      // ... and logged with its key.
      assert.ok(
        logEntries(worker).some((e) =>
          e.event === "dead_letter" &&
          (e.key as { PK?: string } | undefined)?.PK === key &&
          e.reason === "invalid_record"
        ),
        `${what}: logged with its key`,
      );
    }
    const modify = stored.find((l) =>
      l.record.keys.PK?.S === pk("g-modify") && l.record.eventName === "MODIFY"
    );
    assert.match(modify?.error ?? "", /"b_rpm_tc" is 10500\.25/);
    assert.equal(stored.length, garbage.length + 1, "nothing else");
    // Nothing of the garbage is counted (only the valid INSERT of g-modify: 10 tokens).
    assertTotals(await snapshotTotals(env.repo, entities), want);
    const junk = await snapshotTotals(env.repo, [
      "g-string",
      "g-bool",
      "g-map",
      "g-fraction",
      "g-tk",
      "g-rf",
      "g-shard",
      "g-entity",
      "g-state",
      "g-modify",
    ]);
    assert.deepEqual(
      [...junk.tokens].filter(([, v]) => v !== 0),
      [["g-modify|gpt-4|rpm", 10]],
    );
    const { code } = await stopWorker(worker);
    assert.equal(code, 0);
  } finally {
    await killAll(procs);
  }
});

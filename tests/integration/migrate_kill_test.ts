/**
 * kill -9 of `migrate apply` (issue 17, Done-when): the CLI runs as its own
 * process on a legacy table large enough to be caught mid-copy, is killed
 * with SIGKILL once a checkpoint exists, and the same command run at once
 * resumes (taking over the dead run's lock without waiting for it to
 * expire) and ends in the same table as an uninterrupted run.
 */
import assert from "node:assert/strict";
import {
  DeleteTableCommand,
  type DynamoDBClient,
  QueryCommand,
  ScanCommand,
} from "@aws-sdk/client-dynamodb";
import { main } from "../../cli.ts";
import type { Item } from "../../core/expr.ts";
import { createTable, seedLegacyTable } from "../_fixtures/legacy_items.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

const ITEMS = 5000;
const CLI = new URL("../../cli.ts", import.meta.url).pathname;

async function scanAll(client: DynamoDBClient, table: string): Promise<Item[]> {
  const out: Item[] = [];
  let start: Item | undefined;
  do {
    const r = await client.send(
      new ScanCommand({
        TableName: table,
        ConsistentRead: true,
        ...(start ? { ExclusiveStartKey: start } : {}),
      }),
    );
    out.push(...(r.Items ?? []));
    start = r.LastEvaluatedKey;
  } while (start);
  return out;
}

async function checkpoints(
  client: DynamoDBClient,
  table: string,
): Promise<Item[]> {
  const r = await client.send(
    new QueryCommand({
      TableName: table,
      KeyConditionExpression: "PK = :pk AND begins_with(SK, :p)",
      ExpressionAttributeValues: {
        ":pk": { S: "_/SYSTEM#" },
        ":p": { S: "#MIGRATION#0.10.0#SEGMENT#" },
      },
      ConsistentRead: true,
    }),
  );
  return r.Items ?? [];
}

function canonical(value: unknown): string {
  return JSON.stringify(
    value,
    (_k, v: unknown) =>
      v && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) =>
            a < b ? -1 : a > b ? 1 : 0
          ),
        )
        : v,
  );
}

/** Every data item with the table's namespace id replaced by `NS` (ids are random per table). */
async function dataItems(
  client: DynamoDBClient,
  table: string,
): Promise<string[]> {
  const items = await scanAll(client, table);
  const ns = items.find((i) => i["SK"]?.S === "#NAMESPACE#default")
    ?.["namespace_id"]?.S;
  assert.ok(ns);
  return items
    .filter((i) => !(i["PK"]?.S ?? "").startsWith("_/"))
    .map((i) => canonical(i).replaceAll(ns, "NS"))
    .sort();
}

async function run(ep: string, table: string): Promise<{
  code: number;
  out: string;
  err: string;
}> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(
    ["--endpoint-url", ep, "--name", table, "migrate", "apply", "--yes"],
    { out: (t) => out.push(t), err: (t) => err.push(t) },
    {},
  );
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("migrate apply killed with SIGKILL mid-copy resumes at once when run again and ends as a clean run", async () => {
  const ep = await endpoint();
  const { client } = await localClient();
  const killed = tableName("kill9");
  const clean = tableName("clean");
  try {
    for (const t of [killed, clean]) {
      await createTable(client, t);
      await seedLegacyTable(client, t, { items: ITEMS, concurrency: 16 });
    }
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        "--allow-read",
        "--allow-env",
        "--allow-sys",
        CLI,
        "--endpoint-url",
        ep,
        "--name",
        killed,
        "migrate",
        "apply",
        "--yes",
        "--segments",
        "2",
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    // Wait for a checkpoint of an unfinished segment: mid-copy.
    let caught = false;
    for (let i = 0; i < 1200 && !caught; i++) {
      const cps = await checkpoints(client, killed);
      caught = cps.some((c) => Number(c["scanned"]?.N ?? "0") > 0) &&
        cps.every((c) => c["done"]?.BOOL !== true);
      if (!caught) await new Promise((r) => setTimeout(r, 50));
    }
    try {
      child.kill("SIGKILL");
    } catch {
      // ended by itself: reported below
    }
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL", await stderr);
    await stderr;
    assert.ok(caught, "the run was caught mid-copy");

    // Without --allow-run the CLI cannot prove the holder dead: it says how.
    const blind = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        "--allow-read",
        "--allow-env",
        "--allow-sys",
        CLI,
        "--endpoint-url",
        ep,
        "--name",
        killed,
        "migrate",
        "apply",
        "--yes",
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    const blindErr = new TextDecoder().decode(blind.stderr);
    assert.equal(blind.code, 1, blindErr);
    assert.match(blindErr, /cannot tell .*--allow-run.*takes the lock over/);

    // The same command, at once: no waiting for the 5-minute lock.
    const t0 = Date.now();
    const again = await run(ep, killed);
    const seconds = (Date.now() - t0) / 1000;
    assert.equal(again.code, 0, again.out + again.err);
    assert.match(
      again.err,
      /took over the migration lock .*pid \d+\) is no longer running/,
    );
    assert.match(again.err, /resuming/);
    assert.ok(seconds < 120, `resumed in ${seconds} s`);

    const reference = await run(ep, clean);
    assert.equal(reference.code, 0, reference.out + reference.err);
    assert.deepEqual(
      await dataItems(client, killed),
      await dataItems(client, clean),
    );
  } finally {
    for (const t of [killed, clean]) {
      await client.send(new DeleteTableCommand({ TableName: t })).catch(
        () => {},
      );
    }
    client.destroy();
  }
});

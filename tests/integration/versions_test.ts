/**
 * Version records written by other clients (the Python reference's PEP 440
 * dev builds, release candidates, post-releases) and unreadable ones, on
 * DynamoDB Local: `Repository.open`, `check` and `version`.
 */
import assert from "node:assert/strict";
import { PutItemCommand } from "@aws-sdk/client-dynamodb";
import { main } from "../../cli.ts";
import {
  IncompatibleSchemaError,
  Limit,
  RateLimiter,
  Repository,
} from "../../mod.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** A deployed local table, the CLI bound to it, and a raw version-record writer. */
async function deployedTable(): Promise<
  {
    table: string;
    run(...argv: string[]): Promise<Run>;
    putVersion(fields: Record<string, string>): Promise<void>;
    open(): Promise<Repository>;
  } & AsyncDisposable
> {
  const table = tableName("ver");
  const ep = await endpoint();
  const { client } = await localClient();
  const run = async (...argv: string[]): Promise<Run> => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(
      ["--endpoint-url", ep, "--name", table, ...argv],
      {
        out: (t) => out.push(t),
        err: (t) => err.push(t),
        sleep: () => Promise.resolve(),
      },
      {},
    );
    return { code, out: out.join("\n"), err: err.join("\n") };
  };
  const deployed = await run("deploy");
  assert.equal(deployed.code, 0, deployed.err);
  return {
    table,
    run,
    // The item exactly as the Python client writes it (spec 06 §3).
    async putVersion(fields) {
      await client.send(
        new PutItemCommand({
          TableName: table,
          Item: {
            PK: { S: "_/SYSTEM#" },
            SK: { S: "#VERSION" },
            GSI4PK: { S: "_" },
            GSI4SK: { S: "_/SYSTEM#" },
            "updated_at": { S: "2026-11-01T10:00:00Z" },
            ...Object.fromEntries(
              Object.entries(fields).map(([k, v]) => [k, { S: v }]),
            ),
          },
        }),
      );
    },
    open: () => Repository.open({ client, stack: table }),
    async [Symbol.asyncDispose]() {
      await run("delete", "--yes");
      client.destroy();
    },
  };
}

Deno.test("A table whose version record says 0.10.2.dev42+gced59de opens, acquires, and check says COMPATIBLE", async () => {
  await using env = await deployedTable();
  const dev = "0.10.2.dev42+gced59de";
  await env.putVersion({
    "schema_version": "0.10.0",
    "client_min_version": "0.0.0",
    "lambda_version": dev,
    "updated_by": `client:${dev}`,
  });
  const repo = await env.open();
  await repo.setSystemDefaults([Limit.perMinute("rpm", 1)]);
  const limiter = new RateLimiter(repo);
  const got = await limiter.acquire(
    { entityId: "k", resource: "api", consume: { rpm: 1 } },
    () => "admitted",
  );
  assert.equal(got, "admitted");

  const check = await env.run("check");
  assert.equal(check.code, 0, check.out + check.err);
  assert.match(check.out, /^Result: COMPATIBLE$/m);
  assert.match(check.out, /Workers: 0\.10\.2\.dev42\+gced59de/);
  const version = await env.run("version");
  assert.equal(version.code, 0, version.out + version.err);
  assert.match(version.out, /Worker Version: +0\.10\.2\.dev42\+gced59de/);
  assert.match(version.out, /^Status: COMPATIBLE$/m);
});

Deno.test("Release candidates and post-releases of the Python client open and check as compatible", async () => {
  await using env = await deployedTable();
  for (const v of ["0.11.0rc1", "0.10.1.post1"]) {
    await env.putVersion({
      "schema_version": "0.10.0",
      "client_min_version": "0.10.0rc1",
      "lambda_version": v,
      "updated_by": `cli:${v}`,
    });
    await env.open();
    const check = await env.run("--output", "json", "check");
    assert.equal(check.code, 0, check.out + check.err);
    assert.equal(JSON.parse(check.out).result, "COMPATIBLE", v);
  }
});

Deno.test("Unreadable stored versions give typed errors and reasons, never a bare SyntaxError", async () => {
  await using env = await deployedTable();

  // Schema: open refuses with the typed error; check names the schema.
  await env.putVersion({
    "schema_version": "ten",
    "client_min_version": "0.0.0",
  });
  await assert.rejects(env.open(), (e) => {
    assert.ok(e instanceof IncompatibleSchemaError, String(e));
    assert.equal(e.code, "INCOMPATIBLE_SCHEMA");
    assert.equal(e.schemaVersion, "ten");
    return true;
  });
  const schema = await env.run("check");
  assert.equal(schema.code, 3, schema.out + schema.err);
  assert.match(schema.out, /Schema ten of the table .* not a version/);

  // Minimum client version: read as 0.0.0, and said so.
  await env.putVersion({
    "schema_version": "0.10.0",
    "client_min_version": "1.2",
    "lambda_version": "0.10.0",
  });
  await env.open();
  const min = await env.run("check");
  assert.equal(min.code, 0, min.out + min.err);
  assert.match(
    min.out,
    /Version "1\.2" \(clientMinVersion\) is not a version: .*read as 0\.0\.0/,
  );

  // Worker version: an update is available (spec 06 §4.2), not a schema problem.
  await env.putVersion({
    "schema_version": "0.10.0",
    "client_min_version": "0.0.0",
    "lambda_version": "nightly",
  });
  await env.open();
  const worker = await env.run("check");
  assert.equal(worker.code, 4, worker.out + worker.err);
  assert.match(
    worker.out,
    /Version "nightly" \(workerVersion\) is not a version/,
  );
  assert.doesNotMatch(worker.out, /Schema .* not compatible/);
});

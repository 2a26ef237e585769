/** `loadtest` on DynamoDB Local, in-process: a short run and its report. */
import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import { Repository } from "../../mod.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

async function cli(
  ep: string,
  table: string,
  ...argv: string[]
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(["--endpoint-url", ep, "--name", table, ...argv], {
    out: (t) => out.push(t),
    err: (t) => err.push(t),
  }, {});
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("loadtest drives acquires and reports decisions, latency, refusals and DynamoDB calls", async () => {
  const ep = await endpoint();
  const table = tableName("load");
  const { client } = await localClient();
  try {
    assert.equal((await cli(ep, table, "deploy")).code, 0);

    // 3 entities with 20 tokens each and 1 token / 3 s of refill: most of 2 s of acquires are refused.
    const r = await cli(
      ep,
      table,
      "--output",
      "json",
      "loadtest",
      "--entities",
      "3",
      "--concurrency",
      "4",
      "--duration",
      "2",
      "-l",
      "rpm:20/min",
    );
    assert.equal(r.code, 0, r.err);
    const report = JSON.parse(r.out);
    assert.equal(report.decisions, report.admitted + report.refused);
    assert.equal(report.errors, 0);
    assert.ok(report.admitted >= 3 && report.admitted <= 3 * 21, r.out);
    assert.ok(report.refused > 0, r.out);
    assert.ok(report.elapsedSeconds >= 2, r.out);
    assert.equal(
      report.decisionsPerSecond,
      Math.round(report.decisions / report.elapsedSeconds * 10) / 10,
    );
    const l = report.latencyMs;
    assert.ok(0 < l.p50 && l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max);
    const d = report.dynamodb;
    assert.ok(d.calls > 0 && d.attempts >= d.calls);
    assert.equal(
      Object.values(d.byCommand as Record<string, number>).reduce(
        (a, b) => a + b,
        0,
      ),
      d.calls,
    );
    assert.equal(
      d.callsPerDecision,
      Math.round(d.calls / report.decisions * 1000) / 1000,
    );
    assert.deepEqual(report.consume, { rpm: 1 });
    assert.equal(report.bucketsDeleted, 3);
    const repo = await Repository.open({ client, stack: table });
    assert.deepEqual(await repo.getEntityBuckets("loadtest-0"), []);

    // The table report, with stored limits this time.
    await cli(
      ep,
      table,
      "resource",
      "set-defaults",
      "loadtest",
      "-l",
      "rpm:100000/min",
    );
    const text = await cli(
      ep,
      table,
      "loadtest",
      "--entities",
      "2",
      "--duration",
      "1",
      "--no-cleanup",
    );
    assert.equal(text.code, 0, text.err);
    assert.match(
      text.out,
      /^Load test of table '.*', namespace 'default', resource 'loadtest': 2 entities, concurrency 8, 1\.\d s/,
    );
    assert.match(text.out, /Limits: rpm: 100,000\/min/);
    assert.match(text.out, /\| Decisions\/s +\| +\d+\.\d \|/);
    assert.match(
      text.out,
      /\| Latency p50 \/ p95 \/ p99 +\| +[\d.]+ \/ [\d.]+ \/ [\d.]+ ms \|/,
    );
    assert.match(text.out, /\| DynamoDB calls \/ decision +\| +\d\.\d\d \|/);
    assert.match(text.out, /\| UpdateItemCommand +\| +[\d,]+ \| +\d\.\d{3} \|/);
    assert.equal(
      (await repo.getEntityBuckets("loadtest-1")).length,
      1,
      "--no-cleanup keeps them",
    );

    const bad = await cli(
      ep,
      table,
      "loadtest",
      "--consume",
      "tpm=1",
      "--duration",
      "1",
    );
    assert.equal(bad.code, 2);
    assert.match(
      bad.err,
      /Invalid --consume "tpm": no such limit \(the limits are rpm\)/,
    );
  } finally {
    await cli(ep, table, "delete", "--yes");
    client.destroy();
  }
});

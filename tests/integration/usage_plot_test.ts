/** `usage list --plot`: a chart per limit on a terminal, the table otherwise. */
import assert from "node:assert/strict";
import { PutItemCommand } from "@aws-sdk/client-dynamodb";
import { main } from "../../cli.ts";
import { Repository } from "../../mod.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

Deno.test("usage list --plot draws a chart per limit on a terminal and prints the table when stdout is not one", async () => {
  const table = tableName("plot");
  const ep = await endpoint();
  const { client } = await localClient();
  const run = async (terminal: boolean, ...argv: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(["--endpoint-url", ep, "--name", table, ...argv], {
      out: (t) => out.push(t),
      err: (t) => err.push(t),
      outIsTerminal: () => terminal,
      columns: () => 60,
    }, {});
    return { code, out: out.join("\n"), err: err.join("\n") };
  };
  try {
    assert.equal((await run(false, "deploy")).code, 0);
    const ns = (await Repository.open({ client, stack: table })).namespaceId;
    for (const [hour, rpm] of [["10", 5], ["11", 30], ["12", 10]] as const) {
      const start = `2026-01-15T${hour}:00:00Z`;
      await client.send(
        new PutItemCommand({
          TableName: table,
          Item: {
            PK: { S: `${ns}/ENTITY#k1` },
            SK: { S: `#USAGE#api#${start}` },
            entity_id: { S: "k1" },
            resource: { S: "api" },
            window: { S: "hourly" },
            window_start: { S: start },
            rpm: { N: String(rpm) },
            total_events: { N: "2" },
            ttl: { N: "9999999999" },
          },
        }),
      );
    }
    const chart = await run(true, "usage", "list", "-e", "k1", "--plot");
    assert.equal(chart.code, 0, chart.err);
    assert.match(
      chart.out,
      /^rpm on api for k1 \(hourly\): 3 window\(s\) 2026-01-15T10:00:00Z \.\. 2026-01-15T12:00:00Z, peak 30$/m,
    );
    assert.match(chart.out, /^\s+30 [┤┼].*╭╮/m, chart.out);
    assert.doesNotMatch(chart.out, /Total: 3 snapshots/);

    const piped = await run(false, "usage", "list", "-e", "k1", "--plot");
    assert.equal(piped.code, 0, piped.err);
    assert.match(piped.out, /Total: 3 snapshots/);
    assert.doesNotMatch(piped.out, /[┤┼╭╮]/);
  } finally {
    await run(false, "delete", "--yes", "--drop-table");
    client.destroy();
  }
});

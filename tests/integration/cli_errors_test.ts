/**
 * The CLI reports every library error the same way: one line with the
 * message, what to do when the message does not say it, and the stable code.
 */
import assert from "node:assert/strict";
import { main } from "../../cli.ts";
import { endpoint, freshRepo } from "./_harness.ts";

async function cli(argv: string[]): Promise<{ code: number; err: string }> {
  const err: string[] = [];
  const code = await main(argv, {
    out: () => {},
    err: (t) => err.push(t),
    sleep: () => Promise.resolve(),
  }, {});
  return { code, err: err.join("\n") };
}

Deno.test("main() prints a library error as one line ending in its code", async () => {
  await using local = await freshRepo();
  const ep = await endpoint();
  const table = local.repo.tableName;

  const missing = await cli([
    "--endpoint-url",
    ep,
    "--name",
    table,
    "-N",
    "typo",
    "entity",
    "show",
    "x",
  ]);
  assert.equal(missing.code, 1, missing.err);
  assert.equal(missing.err.split("\n").length, 1, missing.err);
  assert.match(
    missing.err,
    /^Error: Namespace 'typo' not found\. .* \[NAMESPACE_NOT_FOUND\]$/,
  );
});

/**
 * What a new user runs first, as they would run it: the README's usage
 * example (extracted from README.md and run with the Deno permissions the
 * README documents) and the demo (`deno task start`) on an endpoint of
 * their own. Each runs twice against the same DynamoDB Local.
 */
import assert from "node:assert/strict";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { endpoint, localClient } from "./_harness.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function run(
  args: readonly string[],
  env: Record<string, string>,
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [...args],
    cwd: ROOT,
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).output();
  const d = new TextDecoder();
  return {
    code: out.code,
    out: d.decode(out.stdout),
    err: d.decode(out.stderr),
  };
}

/** The first `ts` code block after a heading. */
function codeAfter(markdown: string, heading: string): string {
  const at = markdown.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `README has "${heading}"`);
  const m = /\n```ts[^\n]*\n([\s\S]*?)\n```\n/.exec(markdown.slice(at));
  assert.ok(m?.[1], `a ts block after "${heading}"`);
  return m[1];
}

async function dropTable(name: string): Promise<void> {
  const { client } = await localClient();
  try {
    await client.send(new DeleteTableCommand({ TableName: name }));
  } catch (e) {
    if (!(e instanceof Error && e.name === "ResourceNotFoundException")) {
      throw e;
    }
  } finally {
    client.destroy();
  }
}

Deno.test("the README usage example runs as written, twice, with the permissions the README names", async () => {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const example = codeAfter(readme, "## Usage");
  const stack = /stack: "([^"]+)"/.exec(example)?.[1];
  assert.ok(stack, "the example names its stack");
  // `deno run --allow-… app.ts` as the README's permission section writes it.
  const flags = /^deno run ((?:--allow-\S+ )+)app\.ts$/m.exec(readme)?.[1]
    ?.trim().split(" ");
  assert.ok(flags, "the README shows the deno run line for a service");
  assert.ok(flags.includes("--allow-sys=osRelease"), flags.join(" "));
  await Deno.mkdir(`${ROOT}dist`, { recursive: true });
  const file = `${ROOT}dist/readme_example.ts`;
  await Deno.writeTextFile(file, example);
  // The SDK's own configuration, as the example says: DynamoDB Local by env.
  const env = {
    AWS_ENDPOINT_URL_DYNAMODB: await endpoint(),
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "local",
    AWS_SECRET_ACCESS_KEY: "local",
  };
  await dropTable(stack);
  try {
    for (const attempt of [1, 2]) {
      const r = await run(["run", "--no-prompt", ...flags, file], env);
      assert.equal(r.code, 0, `run ${attempt}: ${r.out}${r.err}`);
      assert.match(r.out, /^admitted: the model used 620 tokens$/m);
      assert.match(r.out, /rpm: \d+/);
    }
  } finally {
    await dropTable(stack);
    await Deno.remove(file);
  }
});

Deno.test("the demo (deno task start) runs twice against the same ZAEL_ENDPOINT_URL", async () => {
  const env = { ZAEL_ENDPOINT_URL: await endpoint() };
  const namespaces: string[] = [];
  try {
    for (const attempt of [1, 2]) {
      const r = await run(["task", "start"], env);
      assert.equal(r.code, 0, `run ${attempt}: ${r.out}${r.err}`);
      assert.match(r.out, /rejected [1-9]\d*, errors 0/);
      assert.match(r.out, /every admitted acquire counted exactly once/);
      namespaces.push(/namespace "([^"]+)"/.exec(r.out)?.[1] ?? "");
    }
    assert.notEqual(namespaces[0], namespaces[1]);
  } finally {
    await dropTable("zae-limiter-demo");
  }
});

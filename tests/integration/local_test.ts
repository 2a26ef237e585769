/**
 * `local up|down|status|env`: `up` runs as its own process (DynamoDB Local
 * must outlive it), the demo runs against the endpoint it prints, and the
 * data directory keeps the tables across `down` and `up`.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { main } from "../../cli.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PERMISSIONS = [
  "--allow-net=127.0.0.1",
  "--allow-run",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-sys",
];

async function spawnCli(
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "cli.ts", ...args],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    out: dec.decode(out.stdout),
    err: dec.decode(out.stderr),
  };
}

async function cli(
  ...argv: string[]
): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, {
    out: (t) => out.push(t),
    err: (t) => err.push(t),
  }, {});
  return { code, out: out.join("\n"), err: err.join("\n") };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("local up starts DynamoDB Local that outlives it; the demo runs against it; down stops it and the data stays", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zael-local-" });
  const port = freePort();
  const flags = ["--port", String(port), "--data-dir", dir];
  const endpoint = `http://127.0.0.1:${port}`;
  try {
    const up = await spawnCli(["--name", "local-t", "local", "up", ...flags]);
    assert.equal(up.code, 0, up.err);
    assert.match(
      up.out,
      new RegExp(
        `✓ DynamoDB Local running on ${endpoint} \\(pid \\d+, data in `,
      ),
    );
    assert.match(up.out, /✓ Table 'local-t' created \(schema 0\.10\.0\)/);
    assert.match(up.out, new RegExp(`export ZAEL_ENDPOINT_URL=${endpoint}\\n`));

    // The CLI process has exited; DynamoDB Local still answers.
    const status = await cli("--output", "json", "local", "status", ...flags);
    assert.equal(status.code, 0, status.out);
    const s = JSON.parse(status.out);
    assert.deepEqual(
      [s.running, s.endpoint, s.table, s.inMemory, s.tableStatus],
      [true, endpoint, "local-t", false, "schema 0.10.0"],
    );
    const env = await cli("local", "env", ...flags, "--format", "direnv");
    assert.equal(env.out, `ZAEL_ENDPOINT_URL=${endpoint}\nZAEL_STACK=local-t`);

    const again = await cli("--name", "local-t", "local", "up", ...flags);
    assert.equal(again.code, 0, again.err);
    assert.match(
      again.out,
      new RegExp(`already running on ${endpoint} \\(pid ${s.pid},`),
    );

    const demo = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net=127.0.0.1",
        "--allow-run=java",
        "--allow-read",
        "--allow-env",
        "--allow-sys",
        "dev/demo.ts",
      ],
      cwd: ROOT,
      stdin: "null",
      env: { ZAEL_ENDPOINT_URL: endpoint, NO_COLOR: "1" },
    }).output();
    const demoOut = new TextDecoder().decode(demo.stdout);
    assert.equal(demo.code, 0, new TextDecoder().decode(demo.stderr));
    assert.ok(demoOut.includes(endpoint), demoOut);

    const down = await cli("local", "down", ...flags);
    assert.equal(down.code, 0, down.err);
    assert.match(
      down.out,
      new RegExp(`✓ Stopped DynamoDB Local \\(pid ${s.pid}\\); data kept in `),
    );
    const stopped = await cli("local", "status", ...flags);
    assert.equal(stopped.code, 1);
    assert.match(stopped.out, /DynamoDB Local: not running/);

    // Up again on the same data directory: the demo's table is still there.
    const back = await spawnCli([
      "--name",
      "zae-limiter-demo",
      "local",
      "up",
      ...flags,
    ]);
    assert.equal(back.code, 0, back.err);
    assert.match(
      back.out,
      /✓ Table 'zae-limiter-demo' ready \(schema 0\.10\.0\)/,
    );
    const namespaces = await cli(
      "--endpoint-url",
      endpoint,
      "--name",
      "zae-limiter-demo",
      "--output",
      "json",
      "namespace",
      "list",
    );
    assert.equal(namespaces.code, 0, namespaces.err);
    assert.ok(
      JSON.parse(namespaces.out).some((n: { name: string }) =>
        n.name.startsWith("tenant-acme-")
      ),
      namespaces.out,
    );
  } finally {
    const down = await cli("local", "down", ...flags);
    assert.equal(down.code, 0, down.err);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("local up refuses a port another process holds, naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zael-local-" });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const r = await cli(
      "local",
      "up",
      "--port",
      String(port),
      "--data-dir",
      dir,
    );
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      new RegExp(
        `Cannot start DynamoDB Local on port ${port}: another process listens there; pass --port`,
      ),
    );
    const down = await cli("local", "down", "--data-dir", dir);
    assert.match(
      down.out,
      /DynamoDB Local is not running \(no zae-limiter-local\.json in /,
    );
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

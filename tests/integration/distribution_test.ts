/**
 * How the project reaches users besides npm: the JSR package
 * (`deno publish --dry-run`), the single binary (`deno task compile`), and
 * its two alternatives where the Deno runtime download is unreachable, the
 * bundle (`deno task bundle`) and `deno install -g` (`deno task install:cli`).
 */
import assert from "node:assert/strict";
import { dirname } from "node:path";
import { verifyCli } from "../../dev/verify_cli.ts";
import { endpoint, tableName } from "./_harness.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const BINARY = `${ROOT}dist/zae-limiter`;

interface Output {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

async function run(
  program: string,
  args: readonly string[],
  options: {
    cwd?: string;
    env?: Record<string, string>;
    unset?: readonly string[];
  } = {},
): Promise<Output> {
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    DENO_NO_UPDATE_CHECK: "1",
    NO_COLOR: "1",
    ...options.env,
  };
  for (const name of options.unset ?? []) delete env[name];
  const out = await new Deno.Command(program, {
    args: [...args],
    cwd: options.cwd ?? ROOT,
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return {
    code: out.code,
    out: d.decode(out.stdout),
    err: d.decode(out.stderr),
  };
}

/** Every file under `dir` (relative to the root), subfolders included. */
async function coreFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
    if (e.isDirectory) out.push(...await coreFiles(`${dir}/${e.name}`));
    else out.push(`${dir}/${e.name}`);
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

Deno.test("deno publish --dry-run passes and would publish only the library", async () => {
  const r = await run(Deno.execPath(), [
    "publish",
    "--dry-run",
    "--allow-dirty",
  ]);
  assert.equal(r.code, 0, r.out + r.err);
  const text = r.out + r.err;
  assert.match(text, /Dry run complete/);
  const listed = [...text.matchAll(/file:\/\/(\S+) \(/g)]
    .map((m) => (m[1] ?? "").slice(ROOT.length)).sort();
  const core = (await coreFiles("core"))
    .filter((n) => n.endsWith(".ts") && !n.endsWith("_test.ts"));
  assert.deepEqual(
    listed,
    ["LICENSE", "README.md", "deno.json", "mod.ts", "testing.ts", ...core]
      .sort(),
  );
});

Deno.test("deno task compile builds a binary that answers --version, or exits non-zero with the reason", async () => {
  const r = await run(Deno.execPath(), ["task", "compile"], {
    unset: ["DENORT_BIN"],
  });
  if (r.code === 0) {
    assert.equal(await verifyCli([BINARY]), null);
  } else {
    // Where the Deno runtime cannot be downloaded (as on CI here): the reason and the alternatives.
    assert.match(r.err, /Cannot compile dist\/zae-limiter: .+/);
    assert.match(r.err, /deno task bundle/);
    assert.match(r.err, /deno task install:cli/);
    assert.equal(await exists(BINARY), false);
  }
});

Deno.test("deno task compile refuses a binary that is not the CLI (DENORT_BIN pointing to deno)", async () => {
  const r = await run(Deno.execPath(), ["task", "compile"], {
    env: { DENORT_BIN: Deno.execPath() },
  });
  assert.equal(r.code, 1, r.out + r.err);
  // Either the binary was built and refused (it is plain deno), or deno
  // compile itself failed on the wrong runtime (seen: a stack overflow).
  assert.match(
    r.err,
    /not the zae-limiter CLI: '--version' answered "deno \d+\.\d+\.\d+|deno compile exited/,
  );
  assert.match(r.err, /DENORT_BIN .* must be the denort runtime/);
  assert.equal(await exists(BINARY), false);
});

Deno.test("the bundle and deno install -g give a working zae-limiter command", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "zael-cli-" });
  const table = tableName("bin");
  const ep = await endpoint();
  // A user's environment: no repository config, an empty Deno cache, deno on PATH.
  const env = {
    DENO_DIR: `${tmp}/deno-dir`,
    PATH: `${dirname(Deno.execPath())}:${Deno.env.get("PATH") ?? ""}`,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "local",
    AWS_SECRET_ACCESS_KEY: "local",
  };
  try {
    await t.step(
      "deno task bundle: dist/zae-limiter.js runs alone, as documented",
      async () => {
        const built = await run(Deno.execPath(), ["task", "bundle"]);
        assert.equal(built.code, 0, built.err);
        await Deno.copyFile(
          `${ROOT}dist/zae-limiter.js`,
          `${tmp}/zae-limiter.js`,
        );
        const command = [
          Deno.execPath(),
          "run",
          "--no-config",
          "--cached-only",
          "--no-prompt",
          "--allow-net",
          "--allow-env",
          "--allow-read",
          "--allow-sys=hostname,osRelease",
          `${tmp}/zae-limiter.js`,
        ];
        assert.equal(await verifyCli(command, { cwd: tmp, env }), null);
        const [program = "", ...args] = command;
        const target = ["--endpoint-url", ep, "--name", table];
        const deployed = await run(program, [...args, ...target, "deploy"], {
          cwd: tmp,
          env,
        });
        assert.equal(deployed.code, 0, deployed.err);
        const check = await run(program, [...args, ...target, "check"], {
          cwd: tmp,
          env,
        });
        assert.equal(check.code, 0, check.out + check.err);
        assert.match(check.out, /^Result: COMPATIBLE$/m);
      },
    );

    await t.step(
      "deno task install:cli: a zae-limiter command on PATH",
      async () => {
        const installed = await run(Deno.execPath(), ["task", "install:cli"], {
          env: { DENO_INSTALL_ROOT: `${tmp}/install` },
        });
        assert.equal(installed.code, 0, installed.err);
        const bin = `${tmp}/install/bin/zae-limiter`;
        assert.equal(await verifyCli([bin], { cwd: tmp, env }), null);
        const version = await run(
          bin,
          ["--endpoint-url", ep, "--name", table, "version"],
          { cwd: tmp, env },
        );
        assert.equal(version.code, 0, version.out + version.err);
        assert.match(version.out, /^Status: COMPATIBLE$/m);
      },
    );
  } finally {
    await run(Deno.execPath(), [
      "run",
      "-A",
      `${ROOT}cli.ts`,
      "--endpoint-url",
      ep,
      "--name",
      table,
      "delete",
      "--yes",
      "--drop-table",
    ], { env });
    await Deno.remove(tmp, { recursive: true });
  }
});

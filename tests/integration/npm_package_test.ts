/**
 * The npm package as a Node user gets it: `deno task npm --pack` builds and
 * packs it, the tarball is installed into a scratch Node project (its
 * dependencies come from the npm registry, through npm's cache), plain
 * `node` runs acquires against DynamoDB Local, and `tsc` type-checks a
 * TypeScript consumer with `skipLibCheck` off.
 */
import assert from "node:assert/strict";
import { DeleteTableCommand } from "@aws-sdk/client-dynamodb";
import { CLIENT_VERSION } from "../../mod.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

const ROOT = new URL("../../", import.meta.url);

interface Output {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

async function run(
  program: string,
  args: readonly string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<Output> {
  const out = await new Deno.Command(program, {
    args: [...args],
    cwd: options.cwd ?? ROOT.pathname,
    ...(options.env ? { env: options.env } : {}),
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

/** `npm:name@1.2.3` of deno.json, as `name@1.2.3`. */
/** Every file under `dir`, subfolders included (names relative to `dir`). */
async function sourceFiles(dir: URL): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) {
      const sub = await sourceFiles(new URL(`${e.name}/`, dir));
      out.push(...sub.map((n) => `${e.name}/${n}`));
    } else out.push(e.name);
  }
  return out;
}

async function pinned(name: string): Promise<string> {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  ) as { imports: Record<string, string> };
  const spec = config.imports[name] ?? "";
  assert.match(spec, /^npm:.+@\d+\.\d+\.\d+$/, `${name} pinned in deno.json`);
  return spec.slice(4);
}

Deno.test("the npm package installs into a Node project, acquires under plain node, and type-checks a TypeScript consumer", async (t) => {
  const scratch = await Deno.makeTempDir({ prefix: "zael-npm-" });
  const { client } = await localClient();
  const table = tableName("npm");
  try {
    let tarball = "";
    await t.step(
      "deno task npm --pack builds ESM + .d.ts of the library only",
      async () => {
        const built = await run(Deno.execPath(), ["task", "npm", "--pack"]);
        assert.equal(built.code, 0, built.err);
        tarball = built.out.trim().split("\n").at(-1) ?? "";
        assert.match(tarball, /\.tgz$/);
        const listing = await run("tar", ["-tzf", tarball]);
        assert.equal(listing.code, 0, listing.err);
        const files = listing.out.trim().split("\n").map((f) =>
          f.replace(/^package\//, "")
        ).sort();
        const sources = (await sourceFiles(new URL("core/", ROOT)))
          .filter((n) => n.endsWith(".ts") && !n.endsWith("_test.ts"));
        // Every shipped module is mod or core/, in .js and .d.ts; nothing else of the repository.
        for (const f of files) {
          assert.match(
            f,
            /^(package\.json|README\.md|LICENSE|(mod|testing)\.(js|d\.ts)|core\/([a-z_]+\/)?[a-z_]+\.(js|d\.ts))$/,
          );
        }
        for (const n of ["mod.js", "mod.d.ts", "package.json", "LICENSE"]) {
          assert.ok(files.includes(n), n);
        }
        const shipped = files.filter((f) => f.startsWith("core/"));
        assert.ok(shipped.length > 0 && shipped.length <= sources.length * 2);
        const pkg = JSON.parse(
          await Deno.readTextFile(new URL("dist/npm/package.json", ROOT)),
        );
        assert.equal(pkg.type, "module");
        assert.equal(pkg.version, CLIENT_VERSION);
        assert.equal(pkg.license, "MIT");
        assert.deepEqual(pkg.exports["."], {
          types: "./mod.d.ts",
          import: "./mod.js",
        });
        assert.match(
          pkg.peerDependencies["@aws-sdk/client-dynamodb"],
          /^\^3\./,
        );
        assert.deepEqual(Object.keys(pkg.dependencies), ["semver"]);
      },
    );

    await t.step(
      "npm installs the tarball into a scratch project",
      async () => {
        await Deno.writeTextFile(
          `${scratch}/package.json`,
          JSON.stringify({ name: "consumer", private: true, type: "module" }),
        );
        const installed = await run("npm", [
          "install",
          "--no-audit",
          "--no-fund",
          "--prefer-offline",
          tarball,
          await pinned("typescript"),
          await pinned("@types/node"),
        ], { cwd: scratch });
        assert.equal(installed.code, 0, installed.err);
        for (const f of ["smoke.mjs", "consumer.ts"]) {
          await Deno.copyFile(
            new URL(`tests/node/${f}`, ROOT),
            `${scratch}/${f}`,
          );
        }
      },
    );

    await t.step(
      "plain node runs acquires against DynamoDB Local",
      async () => {
        const smoke = await run("node", ["smoke.mjs", table], {
          cwd: scratch,
          env: { ZAEL_TEST_ENDPOINT: await endpoint() },
        });
        assert.equal(smoke.code, 0, smoke.err);
        const report = JSON.parse(smoke.out.trim().split("\n").at(-1) ?? "");
        assert.equal(report.client, CLIENT_VERSION);
        assert.deepEqual(report.results.slice(0, 2), ["admitted", "admitted"]);
        assert.match(report.results[2], /^rejected, Retry-After \d+$/);
        assert.deepEqual(report.available, { rpm: 0 });
      },
    );

    await t.step(
      "tsc type-checks a consumer with skipLibCheck off, and catches a wrong call",
      async () => {
        const tsconfig = (files: string[]) =>
          JSON.stringify({
            compilerOptions: {
              module: "nodenext",
              target: "es2022",
              strict: true,
              skipLibCheck: false,
              noEmit: true,
              types: ["node"],
            },
            files,
          });
        await Deno.writeTextFile(
          `${scratch}/tsconfig.json`,
          tsconfig(["consumer.ts"]),
        );
        const tsc = `${scratch}/node_modules/typescript/bin/tsc`;
        const ok = await run("node", [tsc, "-p", "."], { cwd: scratch });
        assert.equal(ok.code, 0, ok.out + ok.err);
        // The declarations are real types, not `any`: a wrong call fails.
        await Deno.writeTextFile(
          `${scratch}/wrong.ts`,
          'import { Limit } from "@zae/limiter";\nexport const l = Limit.perMinute("rpm", "60");\n',
        );
        await Deno.writeTextFile(
          `${scratch}/tsconfig.json`,
          tsconfig(["wrong.ts"]),
        );
        const wrong = await run("node", [tsc, "-p", "."], { cwd: scratch });
        assert.notEqual(wrong.code, 0);
        assert.match(wrong.out, /wrong\.ts.*TS2345/);
      },
    );
  } finally {
    await client.send(new DeleteTableCommand({ TableName: table })).catch(
      () => {},
    );
    client.destroy();
    await Deno.remove(scratch, { recursive: true });
  }
});

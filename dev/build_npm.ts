// deno-lint-ignore-file no-console -- a build script reports what it did
/**
 * `deno task npm`: builds the npm package of the library into `dist/npm/`:
 * `mod.ts` and the `core/` modules it imports, compiled by TypeScript to ES
 * modules with `.d.ts` files (relative `.ts` imports rewritten to `.js`),
 * plus `package.json`, `README.md` and `LICENSE`. Nothing else of the
 * repository (CLI, workers, migrations, dev tools, tests) is included.
 *
 * The TypeScript check runs against ES2023 and `@types/node` 20 (what
 * Node 20 provides), so a newer built-in used in `core/` fails the build.
 *
 * `--pack` also runs `npm pack` and prints the path of the tarball.
 *
 * @module
 */
import ts from "typescript";

const ROOT = new URL("../", import.meta.url);
const OUT = new URL("dist/npm/", ROOT);

/** The package's peer and runtime dependencies: the bare imports of the library. */
const PEER_DEPENDENCIES = [
  "@aws-sdk/client-dynamodb",
  "@opentelemetry/api",
] as const;
const DEPENDENCIES = ["semver"] as const;
/** Node versions the package supports (README "Install"). */
const NODE_ENGINES = ">=20.4.0";

interface DenoConfig {
  readonly name: string;
  readonly version: string;
  readonly license?: string;
  readonly imports: Readonly<Record<string, string>>;
}

/** `npm:pkg@1.2.3` → `^1.2.3`. */
function caretRange(config: DenoConfig, name: string): string {
  const spec = config.imports[name];
  const m = spec ? /^npm:(?:@[^/]+\/)?[^@]+@(\d+\.\d+\.\d+)$/.exec(spec) : null;
  if (!m) {
    throw new Error(
      `Cannot derive a version range for "${name}": deno.json imports it as "${spec}"`,
    );
  }
  return `^${m[1]}`;
}

function compile(): readonly string[] {
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    // What Node 20 provides: ES2023 and Node's globals (fetch, AbortSignal,
    // crypto, TextEncoder) from @types/node 20, not the DOM.
    lib: ["lib.es2023.d.ts", "lib.esnext.disposable.d.ts"],
    types: ["node"],
    declaration: true,
    sourceMap: false,
    allowImportingTsExtensions: true,
    rewriteRelativeImportExtensions: true,
    verbatimModuleSyntax: true,
    erasableSyntaxOnly: true,
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    noImplicitOverride: true,
    useUnknownInCatchVariables: true,
    // The SDK's own declarations are checked by the consumer test instead.
    skipLibCheck: true,
    rootDir: new URL(".", ROOT).pathname,
    outDir: OUT.pathname,
    newLine: ts.NewLineKind.LineFeed,
  };
  // The repository has no package.json, so TypeScript would read the sources
  // as CommonJS: the host shows it one that says they are ES modules.
  const host = ts.createCompilerHost(options);
  const packageJson = new URL("package.json", ROOT).pathname;
  const { fileExists, readFile } = host;
  host.fileExists = (f) => f === packageJson || fileExists.call(host, f);
  host.readFile = (f) =>
    f === packageJson ? '{ "type": "module" }' : readFile.call(host, f);
  const program = ts.createProgram(
    [new URL("mod.ts", ROOT).pathname, new URL("testing.ts", ROOT).pathname],
    options,
    host,
  );
  const emitted = program.emit();
  const diagnostics = [
    ...ts.getPreEmitDiagnostics(program),
    ...emitted.diagnostics,
  ];
  if (diagnostics.length > 0) {
    const host: ts.FormatDiagnosticsHost = {
      getCanonicalFileName: (f) => f,
      getCurrentDirectory: () => new URL(".", ROOT).pathname,
      getNewLine: () => "\n",
    };
    throw new Error(
      `Cannot build the npm package: TypeScript reported ${diagnostics.length} problem(s)\n` +
        ts.formatDiagnostics(diagnostics, host),
    );
  }
  return program.getSourceFiles()
    .map((f) => f.fileName)
    .filter((f) => !f.includes("/node_modules/") && !f.endsWith(".d.ts"));
}

/** Builds `dist/npm/` and returns the package's name, version and source files. */
export async function buildNpm(): Promise<
  { name: string; version: string; sources: readonly string[] }
> {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("deno.json", ROOT)),
  ) as DenoConfig;
  await Deno.remove(OUT, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  const sources = compile();
  const pkg = {
    name: config.name,
    version: config.version,
    description:
      "A distributed rate limiter on DynamoDB: token buckets, leases, cascading limits, stored limits, namespaces (the TypeScript port of zae-limiter)",
    license: config.license ?? "MIT",
    type: "module",
    exports: {
      ".": { types: "./mod.d.ts", import: "./mod.js" },
      "./testing": { types: "./testing.d.ts", import: "./testing.js" },
      "./package.json": "./package.json",
    },
    types: "./mod.d.ts",
    files: [
      "mod.js",
      "mod.d.ts",
      "testing.js",
      "testing.d.ts",
      "core/",
      "README.md",
      "LICENSE",
    ],
    sideEffects: false,
    engines: { node: NODE_ENGINES },
    dependencies: Object.fromEntries(
      DEPENDENCIES.map((d) => [d, caretRange(config, d)]),
    ),
    peerDependencies: Object.fromEntries(
      PEER_DEPENDENCIES.map((d) => [d, caretRange(config, d)]),
    ),
    keywords: ["rate-limiter", "dynamodb", "token-bucket", "llm", "deno"],
  };
  await Deno.writeTextFile(
    new URL("package.json", OUT),
    JSON.stringify(pkg, null, 2) + "\n",
  );
  await Deno.copyFile(new URL("README.md", ROOT), new URL("README.md", OUT));
  await Deno.copyFile(new URL("LICENSE", ROOT), new URL("LICENSE", OUT));
  return { name: pkg.name, version: pkg.version, sources };
}

async function pack(): Promise<string> {
  const out = await new Deno.Command("npm", {
    args: ["pack", "--json", "--pack-destination", "..", "--silent"],
    cwd: OUT,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("Cannot pack dist/npm: npm pack failed");
  const [info] = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    filename: string;
  }[];
  if (!info) throw new Error("Cannot pack dist/npm: npm pack printed nothing");
  return new URL(`dist/${info.filename}`, ROOT).pathname;
}

if (import.meta.main) {
  try {
    const { name, version, sources } = await buildNpm();
    console.log(
      `built ${name}@${version} in dist/npm/ from ${sources.length} modules`,
    );
    if (Deno.args.includes("--pack")) console.log(await pack());
  } catch (e) {
    console.error(e instanceof Error ? e.message : e);
    Deno.exit(1);
  }
}

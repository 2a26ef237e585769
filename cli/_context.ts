/**
 * What every CLI command shares: the injected I/O port, global flags,
 * AWS client construction, the read-only connect, CLI error types, and
 * table / JSON rendering.
 *
 * @module
 */
import { errorName } from "../core/_sdk_errors.ts";
import {
  type AttributeValue,
  DynamoDBClient,
  type DynamoDBClientConfig,
  GetItemCommand,
} from "@aws-sdk/client-dynamodb";
import {
  CloudFormationClient,
  type CloudFormationClientConfig,
} from "@aws-sdk/client-cloudformation";
import { type Command, InvalidArgumentError, Option } from "commander";
import { type Limit, NamespaceNotFoundError, Repository } from "../mod.ts";
import type { VersionRecord } from "../mod.ts";
import {
  DEFAULT_NAMESPACE,
  pkSystem,
  RESERVED_NAMESPACE,
  skNamespace,
} from "../core/keys.ts";
import {
  decodeVersionRecord,
  readVersionItem,
} from "../core/store/version_record.ts";
import { formatLimit, safeParseLimitSpec } from "./limit_spec.ts";

/** Where the CLI writes, and how it waits. Tests pass buffers and an instant `sleep`. */
export interface CliIo {
  /** Writes one line (or block) of normal output; no trailing newline needed. */
  out(text: string): void;
  /** Writes one line (or block) of diagnostics. */
  err(text: string): void;
  /** Waits between polls of long operations. @default a real timer */
  sleep?(ms: number): Promise<void>;
  /** Whether diagnostics go to a terminal (progress bars are drawn in place). @default false */
  isTerminal?(): boolean;
  /** Writes raw diagnostic text (no newline added; may contain `\r`). @default line-buffered `err` */
  errRaw?(text: string): void;
  /** Width of the terminal, in columns. @default 80 */
  columns?(): number | undefined;
  /** Whether normal output goes to a terminal (charts are drawn only there). @default false */
  outIsTerminal?(): boolean;
  /**
   * A signal that aborts on the first Ctrl-C. Calling it opts the command in:
   * the first Ctrl-C then stops the work cleanly instead of ending the process.
   * @default no signal (Ctrl-C ends the process)
   */
  interruptSignal?(): AbortSignal;
}

/** Accepted values of `--output`. */
export const OUTPUT_FORMATS = ["table", "json"] as const;
/** One of {@linkcode OUTPUT_FORMATS}. */
export type OutputFormat = typeof OUTPUT_FORMATS[number];

/** Global flags after defaults are applied. */
export interface GlobalConfig {
  /** Stack and table name. */
  readonly name: string;
  /** AWS region, when given (else the SDK's default chain). */
  readonly region: string | undefined;
  /** Custom endpoint (DynamoDB Local, LocalStack), when given. */
  readonly endpointUrl: string | undefined;
  /** Namespace name for data commands. */
  readonly namespace: string;
  /** Output format. */
  readonly output: OutputFormat;
}

/** State shared by the commands of one `main()` call. */
export interface CliContext {
  /** The I/O port. */
  readonly io: CliIo;
  /** Environment variables (only `cli.ts` reads the real environment). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Waits (from `io.sleep`, or a real timer). */
  sleep(ms: number): Promise<void>;
  /** Milliseconds since the epoch. */
  now(): number;
  /** Exit code set by the command that ran. */
  exitCode: number;
  /** Clients created during the call, destroyed when `main()` returns. */
  readonly clients: { destroy(): void }[];
}

/** A usage error found after parsing (exit code 2). */
export class CliUsageError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "CliUsageError";
  }
}

/** A handled failure: the message is printed as `Error: …` and `main()` returns `exitCode`. */
export class CliExit extends Error {
  /** The exit code. */
  readonly exitCode: number;
  /** Creates the error. */
  constructor(exitCode: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CliExit";
    this.exitCode = exitCode;
  }
}

/** Exit codes of `main()`. */
export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  INCOMPATIBLE: 3,
  UPDATE_AVAILABLE: 4,
} as const;

/** Reads the global flags of any command (leaf or group). */
export function resolveGlobals(cmd: Command): GlobalConfig {
  const o = cmd.optsWithGlobals<{
    name?: string;
    region?: string;
    endpointUrl?: string;
    namespace?: string;
    output?: OutputFormat;
  }>();
  return {
    name: o.name ?? "zae-limiter",
    region: o.region,
    endpointUrl: o.endpointUrl,
    namespace: o.namespace ?? DEFAULT_NAMESPACE,
    output: o.output ?? "table",
  };
}

function region(
  g: GlobalConfig,
  env: CliContext["env"],
): string | undefined {
  return g.region ?? env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"] ??
    (g.endpointUrl ? "us-east-1" : undefined);
}

function hasAwsCredentials(env: CliContext["env"]): boolean {
  return Boolean(
    env["AWS_ACCESS_KEY_ID"] || env["AWS_PROFILE"] ||
      env["AWS_WEB_IDENTITY_TOKEN_FILE"] ||
      env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] ||
      env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"],
  );
}

/** Client configuration shared by every AWS client of the CLI. */
export function awsClientConfig(
  g: GlobalConfig,
  env: CliContext["env"],
): DynamoDBClientConfig & CloudFormationClientConfig {
  const r = region(g, env);
  return {
    maxAttempts: 3,
    ...(r ? { region: r } : {}),
    ...(g.endpointUrl ? { endpoint: g.endpointUrl } : {}),
    // A local endpoint does not check credentials, but the SDK needs some.
    ...(g.endpointUrl && !hasAwsCredentials(env)
      ? { credentials: { accessKeyId: "local", secretAccessKey: "local" } }
      : {}),
  };
}

/** A DynamoDB client for the global flags, destroyed when `main()` returns. */
export function dynamoClient(ctx: CliContext, g: GlobalConfig): DynamoDBClient {
  const client = new DynamoDBClient(awsClientConfig(g, ctx.env));
  ctx.clients.push(client);
  return client;
}

/** A CloudFormation client for the global flags, destroyed when `main()` returns. */
export function cloudFormationClient(
  ctx: CliContext,
  g: GlobalConfig,
): CloudFormationClient {
  const client = new CloudFormationClient(awsClientConfig(g, ctx.env));
  ctx.clients.push(client);
  return client;
}

/** Whether an SDK error says the table does not exist. */
export function isTableMissing(e: unknown): boolean {
  return errorName(e) === "ResourceNotFoundException";
}

function s(item: Record<string, AttributeValue>, key: string): string | null {
  const a = item[key];
  return a && "S" in a && typeof a.S === "string" ? a.S : null;
}

/** What {@linkcode readVersionState} found. */
export type VersionState =
  | { readonly kind: "no-table" }
  | { readonly kind: "not-initialized" }
  | {
    readonly kind: "legacy";
    readonly schemaVersion: string;
    /** The pre-0.10 record as stored at `SYSTEM#` / `#VERSION`. */
    readonly record: VersionRecord;
  }
  | { readonly kind: "record"; readonly record: VersionRecord };

/**
 * Reads the version record with plain GetItems, never writing: the current
 * key (`_/SYSTEM#`), then the pre-0.10 key (`SYSTEM#`) of an unmigrated table.
 */
export async function readVersionState(
  client: DynamoDBClient,
  table: string,
): Promise<VersionState> {
  const source = { client, name: table };
  let item: Record<string, AttributeValue> | undefined;
  try {
    item = await readVersionItem(source);
  } catch (e) {
    if (isTableMissing(e)) return { kind: "no-table" };
    throw e;
  }
  if (item) return { kind: "record", record: decodeVersionRecord(item) };
  const legacy = await readVersionItem(source, { legacy: true });
  if (legacy) {
    const record = decodeVersionRecord(legacy);
    return { kind: "legacy", schemaVersion: record.schemaVersion, record };
  }
  return { kind: "not-initialized" };
}

/** Options of {@linkcode connect}. */
export interface ConnectOptions {
  /** Namespace to bind; `-N` when absent. */
  readonly namespace?: string;
  /** Do not enforce version compatibility. @default false */
  readonly skipVersionCheck?: boolean;
}

/**
 * Opens a repository for a data command without side effects: the table must
 * exist and be initialized (only `deploy` creates and initializes), and the
 * namespace must be registered (only `namespace register` registers).
 *
 * `Repository.open` writes a version record and registers `default` on a
 * table that has none; the pre-flight read below keeps it from doing so.
 *
 * @throws {CliExit} the table is missing or not initialized
 * @throws {NamespaceNotFoundError} the namespace is not registered
 */
export async function connect(
  ctx: CliContext,
  cmd: Command,
  options: ConnectOptions = {},
): Promise<Repository> {
  const g = resolveGlobals(cmd);
  const client = dynamoClient(ctx, g);
  const namespace = options.namespace ?? g.namespace;
  const state = await readVersionState(client, g.name);
  switch (state.kind) {
    case "no-table":
      throw new CliExit(
        EXIT.FAILURE,
        `Cannot open table '${g.name}': it does not exist (nothing was created; run 'zae-limiter deploy --name ${g.name}')`,
      );
    case "not-initialized":
      throw new CliExit(
        EXIT.FAILURE,
        `Cannot open table '${g.name}': it has no version record (run 'zae-limiter deploy --name ${g.name}')`,
      );
    case "legacy":
      throw new CliExit(
        EXIT.FAILURE,
        `Cannot open table '${g.name}': it uses the pre-0.10 key layout (schema ${state.schemaVersion}); back it up and run the namespace-keys migration`,
      );
    case "record":
      break;
    default: {
      const _exhaustive: never = state;
      throw new Error(`Unknown state ${String(_exhaustive)}`);
    }
  }
  if (namespace === DEFAULT_NAMESPACE) {
    // open() would re-register a deleted `default`; a read must not.
    const fwd = await client.send(
      new GetItemCommand({
        TableName: g.name,
        Key: {
          PK: { S: pkSystem(RESERVED_NAMESPACE) },
          SK: { S: skNamespace(DEFAULT_NAMESPACE) },
        },
        ConsistentRead: true,
      }),
    );
    if (!fwd.Item || s(fwd.Item, "status") !== "active") {
      throw new NamespaceNotFoundError(DEFAULT_NAMESPACE);
    }
  }
  return await Repository.open({
    client,
    stack: g.name,
    namespace,
    provision: false,
    registerNamespace: false,
    skipVersionCheck: options.skipVersionCheck ?? false,
  });
}

/** Throws a usage error unless `--yes` was given. */
export function requireYes(yes: boolean | undefined, what: string): void {
  if (!yes) {
    throw new CliUsageError(
      `Refusing to ${what} without --yes (this command does not prompt)`,
    );
  }
}

/** Renders rows as the reference's ASCII box table. */
export function renderTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
  options: { rightAlign?: readonly number[] } = {},
): string {
  const widths = headers.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length))
  );
  const sep = `+${widths.map((w) => "-".repeat(w + 2)).join("+")}+`;
  const line = (cells: readonly string[], header: boolean) =>
    `|${
      widths.map((w, i) => {
        const c = cells[i] ?? "";
        return ` ${
          !header && options.rightAlign?.includes(i)
            ? c.padStart(w)
            : c.padEnd(w)
        } `;
      }).join("|")
    }|`;
  return [
    sep,
    line(headers, true),
    sep,
    ...rows.map((r) => line(r, false)),
    sep,
  ].join("\n");
}

/** Whole numbers with thousands separators (`1,000`). */
export function thousands(n: number): string {
  return Number.isInteger(n)
    ? n.toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",")
    : String(n);
}

/** Prints `value` as JSON when `--output json`, else runs `text`. */
export function emit(
  ctx: CliContext,
  g: GlobalConfig,
  value: unknown,
  text: () => void,
): void {
  if (g.output === "json") ctx.io.out(JSON.stringify(value, null, 2));
  else text();
}

/** Whether `text` is one JSON object or array (a command's `--output json` document). */
function isJsonDocument(text: string): boolean {
  const t = text.trim();
  if (!(t.startsWith("{") || t.startsWith("["))) return false;
  try {
    JSON.parse(t);
    return true;
  } catch {
    return false;
  }
}

/**
 * Wraps a command handler as a commander action that records the exit code.
 *
 * With `--output json`, standard output carries exactly one JSON document:
 * the first JSON object or array the handler prints. Text lines it prints
 * are not written; when it printed no JSON document, they are reported as
 * `{"ok", "exitCode", "messages"}`, so a script reads the outcome of every
 * command, writes included. A failure stays one line on stderr.
 */
export function action(
  ctx: CliContext,
  handler: (cmd: Command) => Promise<number>,
): (this: Command) => Promise<void> {
  return async function runAction(this: Command): Promise<void> {
    if (resolveGlobals(this).output !== "json") {
      ctx.exitCode = await handler(this);
      return;
    }
    const io = ctx.io;
    const messages: string[] = [];
    let documents = 0;
    (ctx as { io: CliIo }).io = {
      ...io,
      out(text: string): void {
        if (documents === 0 && isJsonDocument(text)) {
          documents++;
          io.out(text);
        } else if (text.trim() !== "") messages.push(text);
      },
    };
    try {
      ctx.exitCode = await handler(this);
    } finally {
      (ctx as { io: CliIo }).io = io;
    }
    if (documents === 0) {
      io.out(JSON.stringify(
        { ok: ctx.exitCode === EXIT.OK, exitCode: ctx.exitCode, messages },
        null,
        2,
      ));
    }
  };
}

/** The `i`-th positional argument of a command, as text. */
export function argAt(cmd: Command, i: number): string {
  const v: unknown = cmd.processedArgs[i];
  if (typeof v !== "string") {
    throw new CliUsageError(`Missing argument ${i + 1} of '${cmd.name()}'`);
  }
  return v;
}

/** Every positional argument from `i` on (a variadic argument), as text. */
export function argsFrom(cmd: Command, i: number): string[] {
  const v: unknown = cmd.processedArgs[i];
  return Array.isArray(v) ? v.map(String) : typeof v === "string" ? [v] : [];
}

/** A commander argument parser for whole numbers in `[min, max]`. */
export function intInRange(
  min: number,
  max: number,
): (value: string) => number {
  return function parseInt(value: string): number {
    const n = Number(value);
    if (!/^-?\d+$/.test(value) || n < min || n > max) {
      throw new InvalidArgumentError(
        `Expected a whole number from ${min} to ${max}.`,
      );
    }
    return n;
  };
}

/** The repeatable `-l, --limit <spec>` option (required unless `optional`). */
export function limitOption(): Option {
  return new Option(
    "-l, --limit <spec>",
    "limit as name:rate[/period][:burst], period [N]sec|min|hour|day (default min); repeatable",
  ).argParser(
    function collectLimit(
      value: string,
      previous: Limit[] | undefined,
    ): Limit[] {
      const r = safeParseLimitSpec(value);
      if (!r.ok) throw new InvalidArgumentError(r.error.message);
      return [...(previous ?? []), r.value];
    },
  ).makeOptionMandatory();
}

/** Prints limits one per line, indented. */
export function printLimits(
  ctx: CliContext,
  limits: readonly Limit[],
  indent = "  ",
): void {
  for (const l of limits) ctx.io.out(`${indent}${formatLimit(l)}`);
}

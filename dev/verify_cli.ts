/**
 * Checks that a command is really the `zae-limiter` CLI of this checkout:
 * `--version` prints {@linkcode CLIENT_VERSION}, `--help` shows the
 * command tree, and the `version` subcommand answers (`version --help`),
 * all without touching DynamoDB. Used by `deno task compile` on the binary
 * it built and by the tests of the bundle and of `deno install -g`.
 *
 * A plain `deno` binary (what `deno compile` produces when `DENORT_BIN`
 * points to `deno` instead of `denort`) fails the first check: it answers
 * `--version` with its own version.
 *
 * @module
 */
import { CLIENT_VERSION } from "../mod.ts";

/** Options for {@linkcode verifyCli}. */
export interface VerifyCliOptions {
  /** Working directory of the command. @default the current one */
  readonly cwd?: string;
  /** Extra environment variables. */
  readonly env?: Readonly<Record<string, string>>;
  /** Milliseconds each run may take. @default 60000 */
  readonly timeoutMs?: number;
}

/** Result of one run of the command. */
interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

async function run(
  command: readonly string[],
  args: readonly string[],
  options: VerifyCliOptions,
): Promise<Run> {
  const [program, ...rest] = command;
  if (program === undefined) throw new TypeError("Cannot run an empty command");
  const out = await new Deno.Command(program, {
    args: [...rest, ...args],
    ...(options.cwd ? { cwd: options.cwd } : {}),
    ...(options.env ? { env: { ...options.env } } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(options.timeoutMs ?? 60_000),
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    out: decoder.decode(out.stdout),
    err: decoder.decode(out.stderr),
  };
}

function firstLine(r: Run): string {
  const text = (r.out.trim() || r.err.trim()).split("\n")[0] ?? "";
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}

/**
 * Runs `command --version`, `command --help` and `command version --help`.
 *
 * @param command The program and the arguments before the CLI's own, e.g.
 *   `["dist/zae-limiter"]` or `["deno", "run", "-A", "dist/zae-limiter.js"]`.
 * @returns `null` when the command is the CLI, else the reason it is not.
 */
export async function verifyCli(
  command: readonly string[],
  options: VerifyCliOptions = {},
): Promise<string | null> {
  let version: Run;
  try {
    version = await run(command, ["--version"], options);
  } catch (e) {
    return `it could not be started (${e instanceof Error ? e.message : e})`;
  }
  if (version.code !== 0 || version.out.trim() !== CLIENT_VERSION) {
    return `'--version' answered "${
      firstLine(version)
    }" (exit ${version.code}), not "${CLIENT_VERSION}"`;
  }
  const help = await run(command, ["--help"], options);
  if (help.code !== 0 || !/^Usage: zae-limiter /m.test(help.out)) {
    return `'--help' answered "${
      firstLine(help)
    }" (exit ${help.code}), not the zae-limiter usage`;
  }
  const sub = await run(command, ["version", "--help"], options);
  if (sub.code !== 0 || !/^Usage: zae-limiter version /m.test(sub.out)) {
    return `'version --help' answered "${
      firstLine(sub)
    }" (exit ${sub.code}), not the usage of the version command`;
  }
  return null;
}

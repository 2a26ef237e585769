/**
 * `completion bash|zsh`: a shell completion script generated from the
 * command tree, so it always knows every command, subcommand and flag of
 * this version (global flags at every level, `--output` choices, flag
 * values skipped). The script is static: pressing Tab never runs the CLI.
 *
 * @module
 */
import { Argument, Command, type Option } from "commander";
import { action, type CliContext, EXIT } from "./_context.ts";

/** Shells {@linkcode renderCompletion} writes scripts for. */
export const COMPLETION_SHELLS = ["bash", "zsh"] as const;
/** One of {@linkcode COMPLETION_SHELLS}. */
export type CompletionShell = typeof COMPLETION_SHELLS[number];

/** A flag as completion sees it. */
interface FlagSpec {
  /** `-n` and `--name`, as given. */
  readonly names: readonly string[];
  readonly description: string;
  /** Whether the next word is the flag's value. */
  readonly takesValue: boolean;
  /** The accepted values, when the flag lists them. */
  readonly choices: readonly string[] | null;
  /** The value's placeholder in the help (`path`, `n`, …). */
  readonly placeholder: string;
}

/** Placeholders whose value is a file or directory name. */
const PATH_PLACEHOLDERS: ReadonlySet<string> = new Set(["path", "dir", "file"]);

/** A command level: its path from the root (`""`, `"/namespace"`, …). */
interface LevelSpec {
  readonly path: string;
  readonly commands: readonly { name: string; description: string }[];
  /** Accepted values of its first argument, when it lists them (`bash`, `zsh`). */
  readonly argumentChoices: readonly string[];
  /** Its own flags (the root's are global: {@linkcode TreeSpec.global}). */
  readonly flags: readonly FlagSpec[];
}

/** The command tree as completion sees it. */
interface TreeSpec {
  /** The root's flags, accepted at every level. */
  readonly global: readonly FlagSpec[];
  /** Every level, root first. */
  readonly levels: readonly LevelSpec[];
}

function flagSpec(o: Option): FlagSpec {
  return {
    names: [o.short, o.long].filter((n): n is string => Boolean(n)),
    description: o.description,
    takesValue: o.required || o.optional,
    choices: o.argChoices ? [...o.argChoices] : null,
    placeholder: /[<[]([^>\]]+)[>\]]/.exec(o.flags)?.[1] ?? "value",
  };
}

/** Root flags that are not global: every level has its own `--help`, and `--version` is the root's. */
const ROOT_ONLY: ReadonlySet<string> = new Set(["--help", "--version"]);

/** Every command level of the tree, root first, hidden commands and flags left out. */
function treeSpec(root: Command): TreeSpec {
  const levels: LevelSpec[] = [];
  const walk = (cmd: Command, path: string): void => {
    const help = cmd.createHelp();
    const subs = help.visibleCommands(cmd);
    levels.push({
      path,
      commands: subs.map((s) => ({
        name: s.name(),
        description: s.summary() || s.description(),
      })),
      argumentChoices: [...(cmd.registeredArguments[0]?.argChoices ?? [])],
      flags: help.visibleOptions(cmd)
        .filter((o) => cmd !== root || ROOT_ONLY.has(o.long ?? ""))
        .map(flagSpec),
    });
    for (const s of cmd.commands) {
      if (subs.includes(s)) walk(s, `${path}/${s.name()}`);
    }
  };
  walk(root, "");
  return {
    global: root.createHelp().visibleOptions(root)
      .filter((o) => !ROOT_ONLY.has(o.long ?? ""))
      .map(flagSpec),
    levels,
  };
}

/** Patterns of `"$cpath $previous_word"` that match `flag` at `path` (any path for a global flag). */
function flagPatterns(flag: FlagSpec, path: string | null): string {
  return flag.names.map((n) =>
    path === null ? `*${quote(` ${n}`)}` : quote(`${path} ${n}`)
  ).join("|");
}

/** Every flag with its level (`null` for a global one). */
function allFlags(tree: TreeSpec): [FlagSpec, string | null][] {
  return [
    ...tree.levels.flatMap((l) =>
      l.flags.map((f): [FlagSpec, string] => [f, l.path])
    ),
    ...tree.global.map((f): [FlagSpec, null] => [f, null]),
  ];
}

/** A single-quoted shell word (bash and zsh). */
function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The first sentence of a description, on one line, for a menu. */
function short(description: string): string {
  const line = description.replace(/\s+/g, " ").trim();
  return line.length > 70 ? `${line.slice(0, 69)}…` : line;
}

/** `case` arms shared by both shells: descend into subcommands, skip flag values. */
function walkArms(tree: TreeSpec, indent: string): string[] {
  const descend = tree.levels.flatMap((l) =>
    l.commands.filter((c) => c.name !== "help").map((c) =>
      quote(`${l.path}/${c.name}`)
    )
  );
  const valued = allFlags(tree).filter(([f]) => f.takesValue).map(([f, path]) =>
    flagPatterns(f, path)
  );
  return [
    `${indent}case "$cpath $w" in`,
    ...(valued.length > 0
      ? [`${indent}  ${valued.join("|")}) ((i++)); continue ;;`]
      : []),
    `${indent}esac`,
    `${indent}case "$cpath/$w" in`,
    ...(descend.length > 0
      ? [`${indent}  ${descend.join("|")}) cpath="$cpath/$w" ;;`]
      : []),
    `${indent}esac`,
  ];
}

function renderBash(prog: string, tree: TreeSpec): string {
  const fn = `_${prog.replace(/\W/g, "_")}`;
  const valueArms = allFlags(tree).filter(([f]) => f.takesValue).map(
    ([f, path]) => {
      const pattern = flagPatterns(f, path);
      return f.choices
        ? `    ${pattern}) COMPREPLY=($(compgen -W ${
          quote(f.choices.join(" "))
        } -- "$cur")); return ;;`
        : PATH_PLACEHOLDERS.has(f.placeholder)
        ? `    ${pattern}) COMPREPLY=(); return ;;`
        : `    ${pattern}) compopt +o default 2>/dev/null; COMPREPLY=(); return ;;`;
    },
  );
  const levelArms = tree.levels.map((l) => {
    const commands = [...l.commands.map((c) => c.name), ...l.argumentChoices]
      .join(" ");
    const flags = [...l.flags, ...tree.global].flatMap((f) => f.names).join(
      " ",
    );
    return `    ${quote(l.path)}) commands=${quote(commands)}; flags=${
      quote(flags)
    } ;;`;
  });
  return [
    `# bash completion for ${prog}, generated by '${prog} completion bash'.`,
    `# Load it in ~/.bashrc:  source <(${prog} completion bash)`,
    `# or install it:         ${prog} completion bash > ~/.local/share/bash-completion/completions/${prog}`,
    `${fn}() {`,
    `  local cur="\${COMP_WORDS[COMP_CWORD]}" cpath="" w i commands="" flags=""`,
    `  for ((i = 1; i < COMP_CWORD; i++)); do`,
    `    w="\${COMP_WORDS[i]}"`,
    ...walkArms(tree, "    "),
    `  done`,
    `  case "$cpath \${COMP_WORDS[COMP_CWORD-1]}" in`,
    ...valueArms,
    `  esac`,
    `  case "$cpath" in`,
    ...levelArms,
    `  esac`,
    `  if [[ "$cur" == -* || -z "$commands" ]]; then`,
    `    COMPREPLY=($(compgen -W "$flags" -- "$cur"))`,
    `  else`,
    `    COMPREPLY=($(compgen -W "$commands" -- "$cur"))`,
    `  fi`,
    `}`,
    `complete -o default -F ${fn} ${prog}`,
    ``,
  ].join("\n");
}

/** A `_describe` entry: `name:description`, colons in the name escaped. */
function describeEntry(name: string, description: string): string {
  return quote(`${name.replace(/:/g, "\\:")}:${short(description)}`);
}

function renderZsh(prog: string, tree: TreeSpec): string {
  const fn = `_${prog.replace(/\W/g, "_")}`;
  const valueArms = allFlags(tree).filter(([f]) => f.takesValue).map(
    ([f, path]) => {
      const pattern = flagPatterns(f, path);
      return f.choices
        ? `    ${pattern}) compadd -- ${
          f.choices.map(quote).join(" ")
        }; return ;;`
        : PATH_PLACEHOLDERS.has(f.placeholder)
        ? `    ${pattern}) _files; return ;;`
        : `    ${pattern}) _message -e values ${
          quote(`${f.names.at(-1) ?? ""} <${f.placeholder}>`)
        }; return ;;`;
    },
  );
  const levelArms = tree.levels.map((l) => {
    const commands = [
      ...l.commands.map((c) => describeEntry(c.name, c.description)),
      ...l.argumentChoices.map((c) => describeEntry(c, c)),
    ];
    const flags = [...l.flags, ...tree.global].flatMap((f) =>
      f.names.map((n) => describeEntry(n, f.description))
    );
    return [
      `    ${quote(l.path)})`,
      `      subcommands=(${commands.join(" ")})`,
      `      options=(${flags.join(" ")}) ;;`,
    ].join("\n");
  });
  return [
    `#compdef ${prog}`,
    `# zsh completion for ${prog}, generated by '${prog} completion zsh'.`,
    `# Load it in ~/.zshrc (after compinit):  source <(${prog} completion zsh)`,
    `# or install it as _${prog} in a directory of $fpath.`,
    `${fn}() {`,
    `  local cpath="" w i`,
    `  local -a subcommands options`,
    `  for ((i = 2; i < CURRENT; i++)); do`,
    `    w="\${words[i]}"`,
    ...walkArms(tree, "    "),
    `  done`,
    `  case "$cpath \${words[CURRENT-1]}" in`,
    ...valueArms,
    `  esac`,
    `  case "$cpath" in`,
    ...levelArms,
    `  esac`,
    `  if [[ "\${words[CURRENT]}" == -* || \${#subcommands} -eq 0 ]]; then`,
    `    _describe -t options option options`,
    `  else`,
    `    _describe -t commands command subcommands`,
    `  fi`,
    `}`,
    `if [[ "\${zsh_eval_context[-1]}" == loadautofunc ]]; then`,
    `  ${fn} "$@"`,
    `else`,
    `  compdef ${fn} ${prog}`,
    `fi`,
    ``,
  ].join("\n");
}

/**
 * A completion script for `shell` covering every visible command and flag
 * under `root`. Pure.
 *
 * @example Complete the subcommands of `namespace` in bash
 * ```ts ignore
 * const script = renderCompletion(createProgram(ctx), "bash");
 * ```
 */
export function renderCompletion(
  root: Command,
  shell: CompletionShell,
): string {
  const prog = root.name();
  const tree = treeSpec(root);
  switch (shell) {
    case "bash":
      return renderBash(prog, tree);
    case "zsh":
      return renderZsh(prog, tree);
    default: {
      const _exhaustive: never = shell;
      throw new TypeError(`Unknown shell ${String(_exhaustive)}`);
    }
  }
}

/** The `completion` command. */
export function makeCompletionCommand(ctx: CliContext): Command {
  return new Command("completion")
    .description("Print a bash or zsh completion script")
    .addArgument(
      new Argument("<shell>", "shell to complete in").choices(
        COMPLETION_SHELLS,
      ),
    )
    .addHelpText(
      "after",
      `
Examples:
  source <(zae-limiter completion bash)     # bash, in ~/.bashrc
  source <(zae-limiter completion zsh)      # zsh, in ~/.zshrc after compinit`,
    )
    .action(action(ctx, (cmd) => {
      let root: Command = cmd;
      while (root.parent) root = root.parent;
      const shell = cmd.processedArgs[0] as CompletionShell;
      ctx.io.out(renderCompletion(root, shell).replace(/\n$/, ""));
      return Promise.resolve(EXIT.OK);
    }));
}

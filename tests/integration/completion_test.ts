/**
 * `completion bash|zsh`: the generated scripts complete commands,
 * subcommands, flags (global ones at every level) and `--output` values in
 * the real shells. Bash runs the completion function as `complete -F` would;
 * zsh runs in a pseudo-terminal (`zsh/zpty`) with `compinit`, and Tab is
 * pressed. The zsh test is ignored, and so reported, where zsh is not
 * installed (`.ci/run` installs it).
 */
import assert from "node:assert/strict";
import { main } from "../../cli.ts";

async function script(shell: string): Promise<string> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(["completion", shell], {
    out: (t) => out.push(t),
    err: (t) => err.push(t),
  }, {});
  assert.equal(code, 0, err.join("\n"));
  return `${out.join("\n")}\n`;
}

async function has(program: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command(program, {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

async function run(
  program: string,
  args: string[],
): Promise<{ code: number; out: string; err: string }> {
  const r = await new Deno.Command(program, {
    args,
    stdin: "null",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const dec = new TextDecoder();
  return {
    code: r.code,
    out: dec.decode(r.stdout),
    err: dec.decode(r.stderr),
  };
}

Deno.test("completion bash completes commands, subcommands, flags and --output values", async () => {
  const dir = await Deno.makeTempDir({ prefix: "zael-completion-" });
  try {
    const file = `${dir}/zae-limiter.bash`;
    await Deno.writeTextFile(file, await script("bash"));
    const cases: [string[], string][] = [
      [["na"], "namespace"],
      [
        ["namespace", ""],
        "register list show delete recover orphans purge help",
      ],
      // A flag's value is skipped, even when it reads like a command.
      [["--name", "namespace", "namespace", "pu"], "purge"],
      [["namespace", "purge", "--n"], "--name --namespace"],
      [["--output", ""], "table json"],
      [["usage", "list", "--output", "j"], "json"],
      [["worker", "dead-letters", "r"], "redrive"],
      [["migrate", "apply", "--to", "0.10.0", "--seg"], "--segments"],
      [["completion", ""], "bash zsh"],
      [["-N", "tenant-a", "bucket", "reset", "--re"], "--resource --region"],
    ];
    const body = cases.map(([words]) =>
      `t zae-limiter ${words.map((w) => `'${w}'`).join(" ")}`
    ).join("\n");
    const r = await run("bash", [
      "-c",
      `source '${file}'
t() { COMP_WORDS=("$@"); COMP_CWORD=$((\${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _zae_limiter; echo "\${COMPREPLY[*]}"; }
${body}
complete -p zae-limiter`,
    ]);
    assert.equal(r.code, 0, r.err);
    const lines = r.out.trimEnd().split("\n");
    cases.forEach(([words, expected], i) => {
      assert.deepEqual(
        (lines[i] ?? "").split(" ").sort(),
        expected.split(" ").sort(),
        words.join(" "),
      );
    });
    assert.equal(
      lines.at(-1),
      "complete -o default -F _zae_limiter zae-limiter",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "completion zsh completes subcommands and flags on Tab in an interactive zsh",
  ignore: !(await has("zsh")),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "zael-completion-" });
    try {
      const file = `${dir}/zae-limiter.zsh`;
      await Deno.writeTextFile(file, await script("zsh"));
      const r = await run("zsh", ["-n", file]);
      assert.equal(r.code, 0, `zsh -n: ${r.err}`);
      // An interactive zsh in a pseudo-terminal: type, press Tab, read the
      // line until the completed word appears (zpty -r waits for the pattern;
      // the space zsh adds after it is drawn with escape sequences).
      const driver = `${dir}/drive.zsh`;
      await Deno.writeTextFile(
        driver,
        `zmodload zsh/zpty
zpty -b z zsh -f -i
zpty -w z 'PS1="> "; autoload -Uz compinit; compinit -u -D; source ${file}; zae-limiter() { :; }'
type() {
  local out
  zpty -n -w z "\${1}"$'\\t'
  zpty -r z out "*\${2}*" || return 1
  print -r -- "completed: \${2}"
  zpty -n -w z $'\\x15'
}
type 'zae-limiter namespace pu' 'namespace purge'
type 'zae-limiter migrate apply --seg' 'apply --segments'
type 'zae-limiter -n x usage list --output js' '--output json'
type 'zae-limiter completion z' 'completion zsh'
zpty -d z
`,
      );
      const z = await run("timeout", ["20", "zsh", "-f", driver]);
      assert.equal(z.code, 0, z.out + z.err);
      assert.deepEqual(z.out.trim().split("\n"), [
        "completed: namespace purge",
        "completed: apply --segments",
        "completed: --output json",
        "completed: completion zsh",
      ]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

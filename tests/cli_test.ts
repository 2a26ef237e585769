import assert from "node:assert/strict";
import type { Command } from "commander";
import { COMMANDS, createProgram, main } from "../cli.ts";
import {
  formatLimit,
  parseLimitSpec,
  safeParseLimitSpec,
} from "../cli/limit_spec.ts";
import { deployParameters, stackTags } from "../cli/infra.ts";
import { renderTable } from "../cli/_context.ts";
import { CLIENT_VERSION, Limit, SCHEMA_VERSION } from "../mod.ts";

interface Run {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

async function run(
  argv: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, {
    out: (t) => out.push(t),
    err: (t) => err.push(t),
    sleep: () => Promise.resolve(),
  }, env);
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("parseLimitSpec() reads name:rate[/period][:burst] like the reference", () => {
  const cases: [string, [string, number, number, number]][] = [
    ["rpm:1000", ["rpm", 1000, 1000, 60]],
    ["rpm:1000/min", ["rpm", 1000, 1000, 60]],
    ["rps:10/sec", ["rps", 10, 10, 1]],
    ["rph:5000/hour", ["rph", 5000, 5000, 3600]],
    ["rpd:100000/day", ["rpd", 100000, 100000, 86400]],
    ["rpm:1000:1500", ["rpm", 1500, 1000, 60]],
    ["tpm:10000/min:15000", ["tpm", 15000, 10000, 60]],
    ["x:10/5min", ["x", 10, 10, 300]],
    ["y:1/2day", ["y", 1, 1, 172800]],
  ];
  for (const [spec, [name, cp, ra, rp]] of cases) {
    const l = parseLimitSpec(spec);
    assert.deepEqual(
      [l.name, l.capacity, l.refillAmount, l.refillPeriodSeconds],
      [name, cp, ra, rp],
      spec,
    );
  }
});

Deno.test("safeParseLimitSpec() returns an error naming the -l value", () => {
  const cases: [string, RegExp][] = [
    ["rpm", /Invalid limit format: 'rpm'/],
    ["rpm:10/5weeks", /Invalid period in 'rpm:10\/5weeks': '\/5weeks'/],
    ["rpm:10/0min", /Invalid period/],
    ["rpm:abc", /Invalid limit values in 'rpm:abc'/],
    ["rpm:-5", /Invalid limit values in 'rpm:-5'/],
    ["rpm:10:0", /burst '0'/],
    ["rpm:10:x", /burst 'x'/],
    ["rpm:10:15:3", /more than 3 parts/],
    ["bad name:10", /Invalid limit 'bad name:10'/],
    [":10", /Invalid limit ':10'/],
  ];
  for (const [spec, message] of cases) {
    const r = safeParseLimitSpec(spec);
    assert.equal(r.ok, false, spec);
    if (!r.ok) {
      assert.match(r.error.message, message, spec);
      assert.equal(r.error.spec, spec);
      assert.equal(r.error.name, "LimitSpecSyntaxError");
    }
  }
  assert.throws(() => parseLimitSpec("nope"), {
    name: "LimitSpecSyntaxError",
  });
});

Deno.test("formatLimit() shows amount, period and burst like the reference", () => {
  assert.equal(
    formatLimit(Limit.perMinute("rpm", 1000, { burst: 1500 })),
    "rpm: 1,000/min (burst: 1,500)",
  );
  assert.equal(formatLimit(Limit.perSecond("rps", 10)), "rps: 10/sec");
  assert.equal(formatLimit(Limit.custom("x", 10, 10, 300)), "x: 10/5min");
  assert.equal(formatLimit(Limit.custom("x", 10, 10, 7200)), "x: 10/2hour");
  assert.equal(formatLimit(Limit.custom("x", 10, 10, 90)), "x: 10/90sec");
  assert.equal(formatLimit(Limit.perDay("d", 1234567)), "d: 1,234,567/day");
});

Deno.test("renderTable() draws the reference's ASCII box", () => {
  assert.equal(
    renderTable(["A", "Bee"], [["xx", "y"]]),
    [
      "+----+-----+",
      "| A  | Bee |",
      "+----+-----+",
      "| xx | y   |",
      "+----+-----+",
    ].join("\n"),
  );
});

Deno.test("main() returns 2 and names the flag for usage errors", async (t) => {
  const cases: [string[], RegExp][] = [
    [["frobnicate"], /unknown command 'frobnicate'/],
    [["check", "--bogus"], /unknown option '--bogus'/],
    [["--output", "xml", "check"], /--output <format>.*'xml'/],
    [["--name", "bad_name", "check"], /-n, --name <name>.*'bad_name'/],
    [["-N", "_", "entity", "show", "x"], /--namespace.*'_'/],
    [["entity", "set-limits", "k1"], /required option '-l, --limit <spec>'/],
    [
      ["entity", "set-limits", "k1", "-l", "rpm:abc"],
      /-l, --limit <spec>.*'rpm:abc'.*Invalid limit values in 'rpm:abc'/,
    ],
    [
      ["resource", "set-defaults", "gpt", "-l", "rpm:10/fortnight"],
      /Invalid period in 'rpm:10\/fortnight'/,
    ],
    [
      ["system", "set-defaults", "-l", "rpm:1", "--on-unavailable", "maybe"],
      /--on-unavailable.*'maybe'/,
    ],
    [["entity", "show"], /missing required argument 'entity-id'/],
    [["entity", "show", "a", "b"], /too many arguments/],
    [["delete"], /--yes/],
    [["namespace", "delete", "x"], /--yes/],
    [["namespace", "purge", "abc"], /--yes/],
    [["entity", "delete", "x"], /--yes/],
    [["entity", "delete-limits", "x"], /--yes/],
    [["resource", "delete-defaults", "r"], /--yes/],
    [["system", "delete-defaults"], /--yes/],
    [["usage", "list"], /--entity-id or --resource/],
    [["usage", "summary", "-w", "weekly", "-e", "x"], /--window.*'weekly'/],
    [["audit", "list"], /required option '-e, --entity-id <id>'/],
    [["audit", "list", "-e", "x", "--limit", "0"], /--limit <n>.*'0'/],
    [["pitr", "restore", "--target-table", "t-2"], /--time <iso> or --latest/],
    [
      ["pitr", "restore", "--target-table", "t-2", "--time", "yesterday"],
      /--time <iso>.*'yesterday'/,
    ],
    [["pitr", "enable", "--recovery-days", "36"], /--recovery-days <n>.*'36'/],
    [
      ["pitr", "restore", "--target-table", "t2", "--latest"],
      /--target-table <name>.*'t2'.*3 to 255/,
    ],
    [
      ["backup", "restore", "--backup-arn", "a", "--target-table", "bad name"],
      /--target-table <name>.*'bad name'/,
    ],
    [
      ["backup", "create", "--backup-name", "b/1"],
      /--backup-name <name>.*'b\/1'/,
    ],
    [
      ["deploy", "--create-iam-roles", "--no-iam"],
      /--create-iam-roles cannot be used with --no-iam/,
    ],
    [["deploy", "-t", "novalue"], /--tag 'novalue'/],
    [["deploy", "--log-retention-days", "2"], /--log-retention-days.*'2'/],
  ];
  for (const [argv, message] of cases) {
    await t.step(argv.join(" "), async () => {
      const r = await run(argv);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, message);
      assert.equal(r.err.split("\n").length, 1, `one line: ${r.err}`);
    });
  }
});

Deno.test("main() prints help for every command group with exit 0", async () => {
  const top = await run(["--help"]);
  assert.equal(top.code, 0);
  for (const name of Object.keys(COMMANDS)) {
    assert.match(top.out, new RegExp(`\\n  ${name}\\b`), name);
    const r = await run([name, "--help"]);
    assert.equal(r.code, 0, name);
    assert.match(r.out, new RegExp(`Usage: zae-limiter ${name}`), name);
  }
  const groups: Record<string, string[]> = {
    namespace: [
      "register",
      "list",
      "show",
      "delete",
      "recover",
      "orphans",
      "purge",
    ],
    entity: [
      "create",
      "show",
      "delete",
      "children",
      "verify",
      "set-limits",
      "get-limits",
      "delete-limits",
    ],
    resource: ["set-defaults", "get-defaults", "delete-defaults", "list"],
    system: ["set-defaults", "get-defaults", "delete-defaults"],
    audit: ["list"],
    usage: ["list", "summary"],
    bucket: ["reset"],
    backup: ["create", "list", "restore"],
    pitr: ["status", "enable", "restore"],
  };
  for (const [group, subs] of Object.entries(groups)) {
    const r = await run([group, "--help"]);
    for (const sub of subs) {
      assert.match(r.out, new RegExp(`\\n  ${sub}\\b`), `${group} ${sub}`);
    }
    for (const sub of subs) {
      const s = await run([group, sub, "--help"]);
      assert.equal(s.code, 0, `${group} ${sub}`);
      assert.match(s.out, new RegExp(`Usage: zae-limiter ${group} ${sub}`));
    }
  }
});

Deno.test("main() documents exit codes 3 and 4 in check --help", async () => {
  const r = await run(["check", "--help"]);
  assert.equal(r.code, 0);
  assert.match(r.out, /3 +INCOMPATIBLE/);
  assert.match(r.out, /4 +COMPATIBLE, update available/);
  const top = await run(["--help"]);
  assert.match(top.out, /Exit codes:/);
  assert.match(top.out, /ZAEL_STACK/);
});

Deno.test("main() with a command group and no subcommand is a usage error", async () => {
  const r = await run(["entity"]);
  assert.equal(r.code, 2);
  assert.match(r.err, /Usage: zae-limiter entity/);
});

Deno.test("main() --version prints the client version", async () => {
  const r = await run(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(r.out, CLIENT_VERSION);
});

Deno.test("main() cfn-template prints the template as JSON", async () => {
  const r = await run(["cfn-template"]);
  assert.equal(r.code, 0);
  const t = JSON.parse(r.out);
  assert.equal(t.AWSTemplateFormatVersion, "2010-09-09");
  assert.equal(t.Resources.RateLimitsTable.Type, "AWS::DynamoDB::Table");
  assert.equal(t.Resources.RateLimitsTable.DeletionPolicy, "Retain");
  const w = JSON.parse(
    (await run(["cfn-template", "--worker-image", "repo/w:1"])).out,
  );
  assert.equal(w.Parameters.WorkerImage.Default, "repo/w:1");
});

Deno.test("deployParameters() passes SchemaVersion and only the flags given", () => {
  assert.deepEqual(deployParameters({}), [
    { ParameterKey: "SchemaVersion", ParameterValue: SCHEMA_VERSION },
  ]);
  const p = Object.fromEntries(
    deployParameters({
      pitrRecoveryDays: 7,
      logRetentionDays: "90",
      alarms: false,
      createIamRoles: true,
      enableDeletionProtection: true,
      workerImage: "img:1",
    }).map((x) => [x.ParameterKey, x.ParameterValue]),
  );
  assert.deepEqual(p, {
    SchemaVersion: SCHEMA_VERSION,
    PITRRecoveryPeriodDays: "7",
    LogRetentionDays: "90",
    EnableAlarms: "false",
    EnableIAMRoles: "true",
    EnableDeletionProtection: "true",
    WorkerImage: "img:1",
  });
  assert.throws(() => deployParameters({ createIamRoles: true, iam: false }), {
    name: "CliUsageError",
  });
});

Deno.test("stackTags() lets managed tags win over user tags", () => {
  const tags = Object.fromEntries(
    stackTags("ZAEL-prod", {
      userTags: ["team=core", "ManagedBy=someone", "empty="],
      schemaVersion: "0.10.0",
      workerVersion: null,
    }).map((t) => [t.Key, t.Value]),
  );
  assert.deepEqual(tags, {
    team: "core",
    empty: "",
    ManagedBy: "zae-limiter",
    "zae-limiter:name": "prod",
    "zae-limiter:type": "limiter",
    "zae-limiter:version": CLIENT_VERSION,
    "zae-limiter:schema-version": "0.10.0",
  });
});

Deno.test("main() migrate rejects a bad --to and a missing rollback --to with exit 2", async () => {
  for (
    const argv of [
      ["migrate", "plan", "--to", "banana"],
      ["migrate", "apply", "--to", "1.x", "--yes"],
      ["migrate", "status", "--to", ""],
      ["migrate", "rollback", "--yes"],
      ["migrate", "apply", "--segments", "0", "--yes"],
      ["migrate", "apply", "--max-wcu", "-5", "--yes"],
    ]
  ) {
    const r = await run(argv);
    assert.equal(r.code, 2, argv.join(" "));
    assert.match(r.err, /--to|--segments|--max-wcu/, argv.join(" "));
  }
  const noYes = await run(["migrate", "apply"]);
  assert.equal(noYes.code, 2);
  assert.match(noYes.err, /--yes/);
});

Deno.test("worker run: a bad env default names the variable; the archiver without a destination is a usage error", async () => {
  const bad = await run(["worker", "run"], {
    ZAEL_WORKLOADS: "aggregator,bogus",
  });
  assert.equal(bad.code, 2);
  assert.match(bad.err, /ZAEL_WORKLOADS="aggregator,bogus"/);
  assert.match(bad.err, /bogus/);

  const windows = await run(["worker", "run"], {
    ZAEL_SNAPSHOT_WINDOWS: "hourly,weekly",
  });
  assert.equal(windows.code, 2);
  assert.match(windows.err, /ZAEL_SNAPSHOT_WINDOWS/);

  const noSink = await run(["worker", "run"], { ZAEL_WORKLOADS: "archiver" });
  assert.equal(noSink.code, 2);
  assert.match(noSink.err, /--archive-bucket <bucket> or --archive-dir <dir>/);

  // A flag on the command line wins over the environment.
  const flagWins = await run(
    [
      "worker",
      "run",
      "--workloads",
      "archiver",
      "--archive-dir",
      "/x",
      "--archive-bucket",
      "b",
    ],
    { ZAEL_WORKLOADS: "bogus" },
  );
  assert.equal(flagWins.code, 2);
  assert.match(flagWins.err, /only one of --archive-bucket and --archive-dir/);
});

Deno.test("an invalid table name, from --name or ZAEL_STACK, is a usage error (exit 2) before any call", async () => {
  // No network permission here: any DynamoDB call would fail with exit 1.
  const invalid = ["t2", "a_b", "a.b", "1abc", "bad name", "a".repeat(256)];
  for (const name of invalid) {
    const flag = await run([
      "--endpoint-url",
      "http://127.0.0.1:9",
      "--name",
      name,
      "version",
    ]);
    assert.equal(flag.code, 2, `--name ${name}: ${flag.err}`);
    assert.match(flag.err, /--name/);
    const env = await run(["--endpoint-url", "http://127.0.0.1:9", "version"], {
      ZAEL_STACK: name,
    });
    assert.equal(env.code, 2, `ZAEL_STACK=${name}: ${env.err}`);
    assert.match(env.err, /^error: ZAEL_STACK: Invalid name/);
    assert.equal(env.err.split("\n").length, 1, env.err);
  }
  const r = await run(["--name", "t2", "version"]);
  assert.match(r.err, /must be 3 to 255 characters/);
  // --help runs no command, so an invalid ZAEL_STACK does not stop it.
  assert.equal((await run(["--help"], { ZAEL_STACK: "t2" })).code, 0);
});

Deno.test("every command's --help lists the global flags", async () => {
  const paths: string[][] = [];
  const collect = (c: Command, path: string[]): void => {
    for (const sub of c.commands) {
      paths.push([...path, sub.name()]);
      collect(sub, [...path, sub.name()]);
    }
  };
  collect(
    createProgram({
      io: { out() {}, err() {} },
      env: {},
      sleep: () => Promise.resolve(),
      now: () => 0,
      exitCode: 0,
      clients: [],
    }),
    [],
  );
  assert.ok(paths.length > 50, `${paths.length} commands`);
  for (const path of paths) {
    const r = await run([...path, "--help"]);
    const what = path.join(" ");
    assert.equal(r.code, 0, what);
    assert.match(r.out, /Global Options:/, what);
    assert.match(r.out, /-n, --name <name>/, what);
    assert.match(r.out, /--region <region>/, what);
    assert.match(r.out, /--endpoint-url <url>/, what);
    assert.match(r.out, /-N, --namespace <namespace>/, what);
    assert.match(r.out, /--output <format>/, what);
  }
});

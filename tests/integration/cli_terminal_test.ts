/**
 * The CLI as a process, on a real pseudo-terminal and on pipes, against
 * DynamoDB Local: `usage list --plot` draws a chart only on a terminal; every
 * long command (bucket reset of an entity, namespace purge, dead-letter
 * redrive, migrate apply / verify / apply --delete) draws a progress bar in
 * place on a terminal, cut to its width, and writes plain lines to stderr
 * on a pipe, never past 100 %; `NO_COLOR` output has no colour; a closed
 * pipe (`| head`) ends the CLI quietly. The terminal is `script` from
 * util-linux (the tests are ignored without it); the deploy and upgrade
 * waits are tested in-process against a mocked CloudFormation
 * (cli_test.ts).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { GetItemCommand, PutItemCommand } from "@aws-sdk/client-dynamodb";
import { pkBucket, SK } from "../../core/keys.ts";
import { main } from "../../cli.ts";
import { RateLimiter, Repository } from "../../mod.ts";
import { createDynamoDbDeadLetterStore } from "../../workers/dead_letters_dynamodb.ts";
import { WORKER_CONSUMER_NAME } from "../../workers/heartbeat.ts";
import { endpoint, localClient, tableName } from "./_harness.ts";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const PERMISSIONS = [
  "--allow-net=127.0.0.1",
  "--allow-read",
  "--allow-env",
  "--allow-sys",
];
/** Progress at once and a plain line for every update, so short runs show it. */
const ENV = { ZAEL_PROGRESS_INTERVAL_MS: "0", NO_COLOR: "1" };

async function hasScript(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("script", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

interface Piped {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

/** Runs `cli.ts` with stdout and stderr on pipes. */
async function piped(args: string[]): Promise<Piped> {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "cli.ts", ...args],
    cwd: ROOT,
    env: ENV,
    stdin: "null",
    signal: AbortSignal.timeout(120_000),
  }).output();
  const dec = new TextDecoder();
  return {
    code: r.code,
    out: dec.decode(r.stdout),
    err: dec.decode(r.stderr),
  };
}

interface Screen {
  readonly code: number;
  /** Everything written to the terminal (stdout and stderr), escape sequences included. */
  readonly raw: string;
}

/** Runs `cli.ts` on a pseudo-terminal `columns` wide (stdout and stderr both on it). */
async function onTerminal(args: string[], columns = 100): Promise<Screen> {
  const command = [Deno.execPath(), "run", ...PERMISSIONS, "cli.ts", ...args]
    .map(quote).join(" ");
  const r = await new Deno.Command("script", {
    args: [
      "-qec",
      `stty cols ${columns} rows 40; exec ${command}`,
      "/dev/null",
    ],
    cwd: ROOT,
    env: ENV,
    stdin: "null",
    stderr: "inherit",
    signal: AbortSignal.timeout(120_000),
  }).output();
  return { code: r.code, raw: new TextDecoder().decode(r.stdout) };
}

/** The lines a command drew in place: the text after each "cursor to column 1", up to the next control sequence. */
function drawn(raw: string): string[] {
  // deno-lint-ignore no-control-regex
  return [...raw.matchAll(/\x1b\[1G([^\x1b\r\n]*)/g)]
    .map((m) => m[1] ?? "")
    .filter((l) => l.trim() !== "");
}

/** Every `value/total` count in the text is at most its total, and every percentage at most 100. */
function assertNeverPastTotal(text: string, what: string): void {
  for (const m of text.matchAll(/\b(\d[\d,]*)\/(\d[\d,]*)\b/g)) {
    const [v, t] = [m[1], m[2]].map((x) => Number((x ?? "").replace(/,/g, "")));
    assert.ok((v ?? 0) <= (t ?? 0), `${what}: ${m[0]} is past its total`);
  }
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)%/g)) {
    assert.ok(Number(m[1]) <= 100, `${what}: ${m[0]}`);
  }
}

// deno-lint-ignore no-control-regex
const SGR = /\x1b\[[0-9;]*m/;

/** The plain progress lines of stderr (no escape sequences at all). */
function plainLines(err: string, prefix: string): string[] {
  assert.ok(!err.includes("\x1b"), "no escape sequences off a terminal");
  return err.split("\n").filter((l) => l.startsWith(prefix));
}

Deno.test({
  name:
    "on a terminal the CLI draws charts and progress bars in place; on a pipe it prints the table and plain progress lines",
  ignore: !(await hasScript()),
  async fn(t) {
    const table = tableName("tty");
    const ep = await endpoint();
    const { client } = await localClient();
    const cli = async (...argv: string[]) => {
      const err: string[] = [];
      const code = await main(
        ["--endpoint-url", ep, "--name", table, ...argv],
        {
          out() {},
          err: (e) => err.push(e),
        },
        {},
      );
      assert.equal(code, 0, `${argv.join(" ")}: ${err.join("\n")}`);
    };
    const base = ["--endpoint-url", ep, "--name", table];
    try {
      await cli("deploy");
      await cli("system", "set-defaults", "-l", "rpm:1000");
      const repo = await Repository.open({ client, stack: table });

      await t.step(
        "usage list --plot: a chart on a terminal, the table on a pipe",
        async () => {
          for (
            const [hour, rpm] of [["10", 5], ["11", 30], ["12", 10]] as const
          ) {
            const start = `2026-01-15T${hour}:00:00Z`;
            await client.send(
              new PutItemCommand({
                TableName: table,
                Item: {
                  PK: { S: `${repo.namespaceId}/ENTITY#k1` },
                  SK: { S: `#USAGE#api#${start}` },
                  entity_id: { S: "k1" },
                  resource: { S: "api" },
                  window: { S: "hourly" },
                  window_start: { S: start },
                  rpm: { N: String(rpm) },
                  total_events: { N: "2" },
                  ttl: { N: "9999999999" },
                },
              }),
            );
          }
          const args = [...base, "usage", "list", "-e", "k1", "--plot"];
          const tty = await onTerminal(args, 60);
          assert.equal(tty.code, 0, tty.raw);
          assert.match(tty.raw, /rpm on api for k1 \(hourly\): 3 window\(s\)/);
          assert.match(tty.raw, /30 [┤┼].*╭╮/, tty.raw);
          assert.doesNotMatch(tty.raw, /Total: 3 snapshots/);
          assert.doesNotMatch(tty.raw, SGR, "NO_COLOR: no colour");

          const pipe = await piped(args);
          assert.equal(pipe.code, 0, pipe.err);
          assert.match(pipe.out, /Total: 3 snapshots/);
          assert.doesNotMatch(pipe.out, /[┤┼╭╮]/);
        },
      );

      await t.step(
        "bucket reset of an entity: a bar cut to the terminal width, plain lines on a pipe",
        async () => {
          const limiter = new RateLimiter(repo);
          const seed = async () => {
            for (const r of ["r1", "r2", "r3"]) {
              await limiter.acquire(
                { entityId: "e1", resource: r, consume: { rpm: 1 } },
                () => {},
              );
            }
          };
          await cli("entity", "create", "e1");
          await seed();
          const tty = await onTerminal([...base, "bucket", "reset", "e1"], 40);
          assert.equal(tty.code, 0, tty.raw);
          const lines = drawn(tty.raw);
          assert.ok(
            lines.some((l) => /^Resetting buckets of e1 [#-]+ \d\/3/.test(l)),
            lines.join("\n"),
          );
          for (const l of lines) {
            assert.ok(l.length <= 40, `fits 40 columns: ${JSON.stringify(l)}`);
          }
          assertNeverPastTotal(lines.join("\n"), "bucket reset (terminal)");
          assert.match(tty.raw, /Reset 3 bucket item\(s\) for entity 'e1'/);
          assert.doesNotMatch(tty.raw, SGR, "NO_COLOR: no colour");

          await seed();
          const pipe = await piped([...base, "bucket", "reset", "e1"]);
          assert.equal(pipe.code, 0, pipe.err);
          assert.deepEqual(plainLines(pipe.err, "Resetting"), [
            "Resetting buckets of e1 1/3 resources (33%)",
            "Resetting buckets of e1 2/3 resources (66%)",
            "Resetting buckets of e1 3/3 resources (100%)",
          ]);
          assert.doesNotMatch(
            pipe.out,
            /Resetting/,
            "progress is not on stdout",
          );
        },
      );

      await t.step(
        "namespace purge: drawn in place on a terminal, plain lines on a pipe",
        async () => {
          for (const mode of ["terminal", "pipe"] as const) {
            const name = `purge-${mode}`;
            await cli("namespace", "register", name);
            const ns = await Repository.open({
              client,
              stack: table,
              namespace: name,
            });
            for (let i = 0; i < 60; i++) {
              await ns.createEntity(`x${i}`);
            }
            const id = ns.namespaceId;
            await cli("namespace", "delete", name, "--yes");
            const args = [...base, "namespace", "purge", id, "--yes"];
            if (mode === "terminal") {
              const tty = await onTerminal(args);
              assert.equal(tty.code, 0, tty.raw);
              const lines = drawn(tty.raw).filter((l) =>
                l.startsWith("Purging")
              );
              assert.ok(lines.length > 0, tty.raw);
              assert.match(
                lines.at(-1) ?? "",
                new RegExp(
                  `^Purging namespace ${id}: \\d+ item\\(s\\) deleted$`,
                ),
              );
              assert.doesNotMatch(tty.raw, SGR, "NO_COLOR: no colour");
            } else {
              const pipe = await piped(args);
              assert.equal(pipe.code, 0, pipe.err);
              // One line per page of the namespace index (one page here).
              assert.deepEqual(plainLines(pipe.err, "Purging"), [
                `Purging namespace ${id}: 120 item(s) deleted`,
              ]);
              assert.match(pipe.out, /120 item\(s\) permanently deleted/);
            }
          }
        },
      );

      await t.step(
        "worker dead-letters redrive: a bar on a terminal, plain lines on a pipe",
        async () => {
          const store = createDynamoDbDeadLetterStore(client, {
            tableName: table,
            consumerName: WORKER_CONSUMER_NAME,
          });
          // Letters of real bucket writes: the aggregator counts them again.
          const limiter = new RateLimiter(repo);
          await limiter.acquire(
            { entityId: "dl", resource: "api", consume: { rpm: 1 } },
            () => {},
          );
          const bucket = (await client.send(
            new GetItemCommand({
              TableName: table,
              Key: {
                PK: { S: pkBucket(repo.namespaceId, "dl", "api", 0) },
                SK: { S: SK.STATE },
              },
              ConsistentRead: true,
            }),
          )).Item;
          assert.ok(bucket, "a bucket item to dead-letter");
          const seed = (from: number) =>
            store.send(
              [0, 1, 2, 3].map((i) => ({
                shardId: "shard-1",
                record: {
                  eventId: `ev-${from + i}`,
                  eventName: "MODIFY" as const,
                  sequenceNumber: String(1000 + from + i),
                  approximateCreationTime: Date.now(),
                  sizeBytes: 10,
                  keys: {
                    PK: bucket["PK"] ?? { S: "?" },
                    SK: bucket["SK"] ?? { S: "?" },
                  },
                  newImage: bucket,
                },
                reason: "retries_exhausted" as const,
                error: new Error("boom"),
                attempts: 3,
              })),
            );
          await seed(0);
          const args = [...base, "worker", "dead-letters", "redrive", "--yes"];
          const tty = await onTerminal(args);
          assert.equal(tty.code, 0, tty.raw);
          const lines = drawn(tty.raw);
          assert.ok(
            lines.some((l) => /^Redriving dead letters [#-]+ \d\/4$/.test(l)),
            lines.join("\n"),
          );
          assertNeverPastTotal(lines.join("\n"), "redrive (terminal)");
          assert.match(tty.raw, /Redriven: 4/);

          await seed(10);
          const pipe = await piped(args);
          assert.equal(pipe.code, 0, pipe.err);
          assert.deepEqual(plainLines(pipe.err, "Redriving"), [
            "Redriving dead letters 1/4 (25%)",
            "Redriving dead letters 2/4 (50%)",
            "Redriving dead letters 3/4 (75%)",
            "Redriving dead letters 4/4 (100%)",
          ]);
          assert.match(pipe.out, /Redriven: 4/);
        },
      );

      await t.step(
        "a closed pipe ends the CLI quietly with exit 0",
        async () => {
          const cmd = [
            Deno.execPath(),
            "run",
            ...PERMISSIONS,
            "cli.ts",
            ...base,
            "usage",
            "list",
            "-e",
            "k1",
          ]
            .map(quote).join(" ");
          for (const reader of ["true", "head -c 1 >/dev/null"]) {
            const r = await new Deno.Command("bash", {
              args: ["-c", `set -o pipefail; ${cmd} | ${reader}`],
              cwd: ROOT,
              stdin: "null",
            }).output();
            const err = new TextDecoder().decode(r.stderr);
            assert.equal(r.code, 0, `| ${reader}: ${err}`);
            assert.doesNotMatch(err, /BrokenPipe|Broken pipe/, reader);
          }
        },
      );
    } finally {
      await main([...base, "delete", "--yes"], { out() {}, err() {} }, {});
      client.destroy();
    }
  },
});

Deno.test({
  name:
    "migrate apply, verify and apply --delete draw a bar on a terminal and plain lines on a pipe",
  ignore: !(await hasScript()),
  async fn() {
    const { createTable, seedLegacyTable } = await import(
      "../_fixtures/legacy_items.ts"
    );
    const { DeleteTableCommand } = await import("@aws-sdk/client-dynamodb");
    const ep = await endpoint();
    const { client } = await localClient();
    const tables = [tableName("tty-migrate"), tableName("tty-migrate")];
    try {
      for (const table of tables) {
        await createTable(client, table);
        assert.equal(await seedLegacyTable(client, table, { items: 300 }), 300);
      }
      const [first, second] = tables as [string, string];
      const run = (
        mode: "terminal" | "pipe",
        table: string,
        ...argv: string[]
      ): Promise<{ code: number; text: string; err: string }> =>
        mode === "terminal"
          ? onTerminal(["--endpoint-url", ep, "--name", table, ...argv], 80)
            .then((s) => ({ code: s.code, text: s.raw, err: s.raw }))
          : piped(["--endpoint-url", ep, "--name", table, ...argv])
            .then((p) => ({ code: p.code, text: p.out, err: p.err }));
      const steps: [
        "terminal" | "pipe",
        string,
        string[],
        "copy" | "verify" | "delete",
      ][] = [
        [
          "terminal",
          first,
          ["migrate", "apply", "--yes", "--segments", "2"],
          "copy",
        ],
        [
          "pipe",
          second,
          ["migrate", "apply", "--yes", "--segments", "2"],
          "copy",
        ],
        ["terminal", first, ["migrate", "verify"], "verify"],
        ["pipe", second, ["migrate", "verify"], "verify"],
        [
          "terminal",
          first,
          ["migrate", "apply", "--delete", "--yes"],
          "delete",
        ],
        ["pipe", second, ["migrate", "apply", "--delete", "--yes"], "delete"],
      ];
      for (const [mode, table, argv, phase] of steps) {
        const what = `${mode}: ${argv.join(" ")}`;
        const r = await run(mode, table, ...argv);
        assert.equal(r.code, 0, `${what}: ${r.err}`);
        if (mode === "terminal") {
          // Redrawn in place: clear the line, then the bar, cut to 80 columns.
          // deno-lint-ignore no-control-regex
          const bars = [...r.err.matchAll(/\r\x1b\[2K([^\r\n\x1b]*)/g)]
            .map((m) => m[1] ?? "")
            .filter((l) => l.startsWith(phase));
          assert.ok(
            bars.some((l) => new RegExp(`^${phase} \\[[#-]+\\] +\\d`).test(l)),
            `${what}: ${JSON.stringify(r.err.slice(0, 2000))}`,
          );
          for (const l of bars) assert.ok(l.length < 80, `${what}: ${l}`);
          assertNeverPastTotal(bars.join("\n"), what);
          assert.doesNotMatch(r.err, SGR, `${what}: NO_COLOR`);
        } else {
          const lines = plainLines(r.err, `${phase} `);
          assert.ok(lines.length > 0, `${what}: ${r.err}`);
          for (const l of lines) {
            assert.match(
              l,
              new RegExp(`^${phase} [\\d.]+% [\\d,]+(/[\\d,]+)? items `),
              what,
            );
          }
          assert.match(
            lines.at(-1) ?? "",
            /^\w+ 100\.0% /,
            `${what}: ends at 100%`,
          );
          assertNeverPastTotal(lines.join("\n"), what);
          assert.doesNotMatch(
            r.text,
            new RegExp(`^${phase} `, "m"),
            `${what}: not on stdout`,
          );
        }
      }
    } finally {
      for (const table of tables) {
        await client.send(new DeleteTableCommand({ TableName: table })).catch(
          () => {},
        );
      }
      client.destroy();
    }
  },
});

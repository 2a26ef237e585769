// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * `deno task bench:compare [REV...]`: the acquire benchmark of
 * `dev/bench.ts` for several builds side by side in one process on one
 * DynamoDB Local: the working tree and each git revision REV (default: the
 * last commit before the admission work, 4eb7ab3), checked out into
 * temporary worktrees. The builds share one table (a namespace each, the
 * same limits and entities) with the raw conditional `UpdateItem`
 * baseline's items; cells alternate between the builds and the baseline,
 * round after round, each round starting with the next build,
 * and each cell is the median ratio acquire/raw over `ROUNDS` rounds, so
 * load that drifts during the run hits every build alike. The change column
 * compares the working tree with each revision. A second table splits each
 * build's ratio: the writes it sends replayed straight through the SDK
 * (floor/raw: what DynamoDB spends on that build's write) and acquire/floor
 * (what the library spends around it).
 *
 * The change column is the median over rounds of the working tree's ratio
 * against the revision's in the same round (cells measured a few seconds
 * apart), with a 90% bootstrap interval of that median (how far the run's
 * answer can be trusted; it narrows with more rounds) and the lower and
 * upper quartile of the paired changes (how far one round can). Name the
 * working tree's own commit as a revision (`bench:compare 4eb7ab3 HEAD`)
 * and its column is an A/A control: identical code, so whatever it shows
 * is noise. At concurrency 1 a second table gives the same comparison by
 * the median time per call (raw/acquire): ops/s is one over the mean time,
 * which a single pause of DynamoDB Local's JVM moves.
 *
 * Environment: `BENCH_MS` (per cell, default 3000), `ROUNDS` (default 3),
 * `CONC` (concurrencies, default `1,32`), `FLOORS` (`0` skips the floor
 * cells, leaving the time to more rounds), `OUT` (a file to write every
 * round's ratios to as JSON; `deno task bench:pool FILE...` pools several
 * runs).
 */
import { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import {
  acquireScenarios,
  formatFloors,
  type Op,
  rawBaseline,
} from "./_bench_setup.ts";
import { startDynamoDbLocal } from "./dynamodb_local.ts";
import {
  changeCell,
  type CompareCell,
  type CompareRun,
  median,
  pairedChanges,
} from "./_bench_stats.ts";

const BASELINES = Deno.args.length > 0 ? Deno.args : ["4eb7ab3"];
const MS = Number(Deno.env.get("BENCH_MS") ?? 3000);
const ROUNDS = Number(Deno.env.get("ROUNDS") ?? 3);
const CONC = (Deno.env.get("CONC") ?? "1,32").split(",").map(Number);
const FLOORS = Deno.env.get("FLOORS") !== "0";
const OUT = Deno.env.get("OUT");
/** Width of a change cell. */
const CELL = 40;
const ROOT = new URL("../", import.meta.url).pathname;

async function git(...args: string[]): Promise<string> {
  const out = await new Deno.Command("git", {
    args,
    cwd: ROOT,
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    throw new Error(
      `git ${args.join(" ")} failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return new TextDecoder().decode(out.stdout).trim();
}

/** Calls per second of `op` over `ms`, and the time of each call (at concurrency 1 only). */
async function measure(
  c: number,
  op: Op,
  ms: number,
): Promise<{ rate: number; times: number[] }> {
  let n = 0;
  const times: number[] = [];
  const end = performance.now() + ms;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: c }, async (_, w) => {
      while (performance.now() < end) {
        const t = performance.now();
        await op(w);
        if (c === 1) times.push(performance.now() - t);
        n++;
      }
    }),
  );
  return { rate: n / ((performance.now() - t0) / 1000), times };
}

const revs: { name: string; root: string }[] = [];
for (const b of BASELINES) {
  const rev = await git("rev-parse", "--short", b);
  const tree = await Deno.makeTempDir({ prefix: "zael-bench-" });
  await git("worktree", "add", "--detach", tree, rev);
  await Deno.symlink(`${ROOT}node_modules`, `${tree}/node_modules`);
  revs.push({ name: rev, root: `${tree}/` });
}
const local = await startDynamoDbLocal();
const client = new DynamoDBClient({
  endpoint: local.endpoint,
  region: "us-east-1",
  credentials: { accessKeyId: "local", secretAccessKey: "local" },
});
try {
  const builds = [...revs, {
    name: "working tree",
    root: ROOT,
  }];
  const scenarios: Record<string, Op[]> = {};
  const floors: Record<string, Op[]> = {};
  let table = "";
  for (const [i, b] of builds.entries()) {
    const lib = await import(`${b.root}mod.ts`);
    // One table for every build (a namespace each) and the raw items: in
    // DynamoDB Local a table's speed depends on when it was created (a
    // control run of HEAD against its own working tree on tables of their
    // own: -3% to -16% for identical code, following creation order).
    const repo = await lib.Repository.open({
      client,
      stack: "bench-compare",
      namespace: `build-${i}`,
      provision: true,
      registerNamespace: true,
    });
    table = repo.tableName;
    const built = await acquireScenarios(lib, repo);
    const floorOps = await formatFloors(client, built, 32);
    for (const [name, op] of built) {
      (scenarios[name] ??= []).push(op);
      (floors[name] ??= []).push(floorOps.get(name) as Op);
    }
  }
  const raw = await rawBaseline(client, table);
  console.log("warming up DynamoDB Local and caches...");
  await measure(32, raw, 3000);
  for (const ops of Object.values(scenarios)) {
    for (const op of ops) await measure(32, op, 1500);
  }
  console.log(
    `\nacquire/raw conditional UpdateItem, median of ${ROUNDS} rounds, ${MS} ms per cell`,
  );
  console.log(
    `scenario   conc  ${builds.map((b) => b.name.padStart(12)).join(" ")}   ${
      revs.map((r) =>
        `vs ${r.name}: median [90% CI] (quartiles)`.padStart(CELL)
      )
        .join(" ")
    }`,
  );
  const floorRows: string[] = [];
  const latRows: string[] = [];
  /** Every round's ratios, for `OUT`. */
  const cells: CompareCell[] = [];
  /** A table row: each build's median ratio, then the paired changes of the working tree. */
  const row = (name: string, c: number, ratios: number[][]): string => {
    const mine = ratios[ratios.length - 1] as number[];
    const changes = revs.map((_, i) =>
      changeCell(pairedChanges(mine, ratios[i] as number[])).padStart(CELL)
    );
    return `${name.padEnd(10)} ${String(c).padStart(4)}  ${
      ratios.map((r) => median(r).toFixed(2).padStart(12)).join(" ")
    }   ${changes.join(" ")}`;
  };
  for (const c of CONC) {
    for (const [name, ops] of Object.entries(scenarios)) {
      const ratios: number[][] = ops.map(() => []);
      // At concurrency 1, also raw/acquire of the median time per call.
      const latRatios: number[][] = ops.map(() => []);
      const floorRatios: number[][] = ops.map(() => []);
      for (let r = 0; r < ROUNDS; r++) {
        // Each round starts with another build, so no build is always measured last.
        for (let k = 0; k < ops.length; k++) {
          const i = (k + r) % ops.length;
          const op = ops[i] as Op;
          const before = await measure(c, raw, MS / 2);
          const x = await measure(c, op, MS);
          const f = FLOORS
            ? (await measure(c, floors[name]?.[i] as Op, MS)).rate
            : NaN;
          const after = await measure(c, raw, MS / 2);
          const rawRate = (before.rate + after.rate) / 2;
          ratios[i]?.push(x.rate / rawRate);
          floorRatios[i]?.push(f / rawRate);
          if (c === 1) {
            latRatios[i]?.push(
              median([...before.times, ...after.times]) / median(x.times),
            );
          }
        }
      }
      const m = ratios.map(median);
      const fm = floorRatios.map(median);
      floorRows.push(
        `${name.padEnd(10)} ${String(c).padStart(4)}  ${
          fm.map((x) => x.toFixed(2).padStart(12)).join(" ")
        }   ${
          m.map((x, i) => (x / (fm[i] as number)).toFixed(2).padStart(12))
            .join(" ")
        }`,
      );
      console.log(row(name, c, ratios));
      if (c === 1) latRows.push(row(name, c, latRatios));
      cells.push({ scenario: name, conc: c, ratios, latRatios });
    }
  }
  if (OUT) {
    const run: CompareRun = {
      builds: builds.map((b) => b.name),
      ms: MS,
      rounds: ROUNDS,
      cells,
    };
    await Deno.writeTextFile(OUT, JSON.stringify(run));
  }
  if (latRows.length > 0) {
    console.log(
      `\nthe same cells at concurrency 1 by the median time per call: raw/acquire (ops/s is 1/mean time, which a pause of DynamoDB Local's JVM moves)`,
    );
    for (const r of latRows) console.log(r);
  }
  if (FLOORS) {
    console.log(
      `\nthe same writes straight through the SDK (the stored format's floor, dev/_bench_setup.ts formatFloors): floor/raw, then acquire/floor (the library's own share)`,
    );
    console.log(
      `scenario   conc  ${builds.map((b) => b.name.padStart(12)).join(" ")}   ${
        builds.map((b) => b.name.padStart(12)).join(" ")
      }`,
    );
    for (const row of floorRows) console.log(row);
  }
} finally {
  client.destroy();
  await local.stop();
  for (const r of revs) {
    await git("worktree", "remove", "--force", r.root).catch(() => {});
  }
}

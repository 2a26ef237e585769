// deno-lint-ignore-file no-console -- a benchmark prints its figures
/**
 * `deno task bench:pool FILE...`: pools the rounds of several
 * `bench:compare` runs written with `OUT=FILE` (same builds, in the same
 * order) and prints, per scenario and concurrency, the last build's paired
 * change against each other build over every round of every run: the
 * median, its 90% bootstrap interval and the quartiles (see
 * `dev/_bench_stats.ts`). At concurrency 1 the median time per call is
 * pooled too.
 *
 * @module
 */
import { changeCell, type CompareRun, pairedChanges } from "./_bench_stats.ts";

/** One pooled row: a scenario at a concurrency against one build. */
export interface PooledRow {
  readonly scenario: string;
  readonly conc: number;
  readonly against: string;
  /** Per-round changes by ops/s. */
  readonly ops: number[];
  /** Per-round changes by the median time per call (concurrency 1 only). */
  readonly time: number[];
}

/**
 * Pools the paired changes of the last build against every other one.
 *
 * @throws {Error} the runs did not measure the same builds
 */
export function pool(runs: readonly CompareRun[]): PooledRow[] {
  const first = runs[0];
  if (!first) return [];
  const rows = new Map<string, PooledRow>();
  for (const [n, run] of runs.entries()) {
    if (run.builds.join("\u0000") !== first.builds.join("\u0000")) {
      throw new Error(
        `run ${n + 1} measured ${run.builds.join(", ")}, run 1 ${
          first.builds.join(", ")
        }: pool runs of the same builds`,
      );
    }
    const last = run.builds.length - 1;
    for (const cell of run.cells) {
      for (let b = 0; b < last; b++) {
        const key = `${cell.scenario}\u0000${cell.conc}\u0000${b}`;
        let row = rows.get(key);
        if (!row) {
          row = {
            scenario: cell.scenario,
            conc: cell.conc,
            against: run.builds[b] as string,
            ops: [],
            time: [],
          };
          rows.set(key, row);
        }
        row.ops.push(
          ...pairedChanges(
            cell.ratios[last] ?? [],
            cell.ratios[b] ?? [],
          ),
        );
        row.time.push(
          ...pairedChanges(
            cell.latRatios[last] ?? [],
            cell.latRatios[b] ?? [],
          ),
        );
      }
    }
  }
  return [...rows.values()];
}

if (import.meta.main) {
  if (Deno.args.length === 0) {
    console.error(
      "usage: deno task bench:pool FILE... (files written by OUT=FILE deno task bench:compare)",
    );
    Deno.exit(2);
  }
  const runs = await Promise.all(
    Deno.args.map(async (f) => JSON.parse(await Deno.readTextFile(f))),
  ) as CompareRun[];
  const rows = pool(runs);
  console.log(
    `${runs.length} runs, ${
      runs.map((r) => r.rounds).join(" + ")
    } rounds; change of ${
      runs[0]?.builds.at(-1)
    } against each build: median [90% CI] (quartiles)`,
  );
  for (const r of rows) {
    const time = r.time.length > 0 ? `   by time: ${changeCell(r.time)}` : "";
    console.log(
      `${r.scenario.padEnd(10)} ${String(r.conc).padStart(4)}  vs ${
        r.against.padEnd(12)
      } n=${r.ops.length}  ops/s: ${changeCell(r.ops)}${time}`,
    );
  }
}

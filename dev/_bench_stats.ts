/**
 * The statistics of `bench:compare` and `bench:pool`: quantiles, the
 * per-round paired changes of one build against another, and a bootstrap
 * confidence interval of their median. The quartiles of the paired changes
 * say how far one round can be trusted; the interval says how far the
 * median of the run can (it narrows with more rounds, the quartiles do not).
 *
 * @module
 */
import { seededRandom } from "./_seeded_random.ts";

/** What `bench:compare` writes to `OUT`: every round's ratios per scenario and concurrency. */
export interface CompareRun {
  readonly builds: readonly string[];
  readonly ms: number;
  readonly rounds: number;
  readonly cells: readonly CompareCell[];
}

/** One scenario at one concurrency: per build, each round's ratio. */
export interface CompareCell {
  readonly scenario: string;
  readonly conc: number;
  /** acquire/raw by ops/s. */
  readonly ratios: readonly (readonly number[])[];
  /** raw/acquire by the median time per call (concurrency 1 only, else empty). */
  readonly latRatios: readonly (readonly number[])[];
}

/** The `q` quantile of `xs`, interpolated between the nearest ranks (`NaN` when empty). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = s[Math.floor(at)] as number;
  const hi = s[Math.ceil(at)] as number;
  return lo + (hi - lo) * (at - Math.floor(at));
}

/** The median of `xs`. */
export function median(xs: readonly number[]): number {
  return quantile(xs, 0.5);
}

/**
 * Round by round, how much `mine` is above `theirs` (`+0.05` is 5% higher).
 *
 * @throws {RangeError} the two runs have different numbers of rounds
 */
export function pairedChanges(
  mine: readonly number[],
  theirs: readonly number[],
): number[] {
  if (mine.length !== theirs.length) {
    throw new RangeError(
      `paired rounds differ in number: ${mine.length} against ${theirs.length}`,
    );
  }
  return mine.map((x, r) => x / (theirs[r] as number) - 1);
}

/**
 * A percentile bootstrap interval of the median of `xs` at `level`
 * (e.g. `0.9`), from `resamples` resamples drawn with a fixed seed.
 */
export function medianInterval(
  xs: readonly number[],
  level = 0.9,
  resamples = 2000,
  seed = 1,
): readonly [number, number] {
  if (xs.length === 0) return [NaN, NaN];
  const random = seededRandom(seed);
  const medians: number[] = [];
  const sample = new Array<number>(xs.length);
  for (let b = 0; b < resamples; b++) {
    for (let i = 0; i < xs.length; i++) {
      sample[i] = xs[Math.floor(random() * xs.length)] as number;
    }
    medians.push(median(sample));
  }
  const tail = (1 - level) / 2;
  return [quantile(medians, tail), quantile(medians, 1 - tail)];
}

/** `0.051` as `+5.1%` (`digits` decimals). */
export function percent(x: number, digits = 0): string {
  return `${x >= 0 ? "+" : ""}${(x * 100).toFixed(digits)}%`;
}

/**
 * One paired comparison as a table cell: the median change, its 90%
 * interval and the quartiles of the per-round changes.
 */
export function changeCell(changes: readonly number[]): string {
  const [lo, hi] = medianInterval(changes);
  return `${percent(median(changes), 1)} [${percent(lo, 1)}..${
    percent(hi, 1)
  }] (${percent(quantile(changes, 0.25))}..${
    percent(quantile(changes, 0.75))
  })`;
}

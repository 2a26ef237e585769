/**
 * The saturated rows of `dev/bench.ts`: limits that bind, so that what is
 * admitted can be checked against the ideal bucket. The other rows use
 * limits of 10^9 a minute, which no row comes near: nothing there can be
 * over-admitted, and these rows are where the check means something.
 *
 * Each row runs its callers against real limits for a while and checks,
 * per bucket, the ideal bucket's envelope over the whole run: the tokens
 * of the admitted acquires are at most the capacity (every bucket starts
 * full, at most) plus the refill over the run (from before the first call
 * to after the last) plus what the row's leases gave back. The limiter's
 * clock is this process's clock (no skew), so no slack is credited; a
 * row passes with 0 over-admitted tokens.
 *
 * Rows:
 * - `hot key saturated`: one bucket (capacity 200, 200 a second), 32
 *   callers of one limiter, coalescing on (the default);
 * - `demo: cascade + adjust`: the demo's shape (`deno task start`) run for
 *   the row's time: two API keys under one project (cascade), each acquire
 *   takes `rps` 1 and `tps` 100 and adjusts `tps` to what the "model" used
 *   (20-179), 50 callers; prints DynamoDB calls per acquire;
 * - `reserve hot key saturated`: one bucket (capacity 200, 200 a second)
 *   shared by two limiters with the local reserve on, 16 callers each.
 *
 * @module
 */
import type { DynamoDBClient } from "@aws-sdk/client-dynamodb";
import type * as Lib from "../mod.ts";
import { reopen } from "./_bench_setup.ts";

type LibPart = Pick<
  typeof Lib,
  "Limit" | "RateLimiter" | "RateLimitExceeded" | "Repository"
>;

/** One bucket limit's check: tokens admitted against the envelope. */
export interface EnvelopeCheck {
  /** `entity/limit`. */
  readonly bucket: string;
  /** Tokens of the admitted acquires (their requested amounts). */
  readonly admitted: number;
  /** Capacity + refill over the run + tokens given back. */
  readonly bound: number;
}

/** What a saturated row did. */
export interface SaturatedFigures {
  /** Acquires decided (admitted or refused). */
  readonly decisions: number;
  /** Of which admitted. */
  readonly admitted: number;
  /** DynamoDB calls the row's clients sent (adjust commits included). */
  readonly calls: number;
  /** Seconds from before the first call to after the last. */
  readonly seconds: number;
  /** Per bucket limit. */
  readonly checks: readonly EnvelopeCheck[];
}

/** A saturated row: run it for `ms` and get its figures. */
export interface SaturatedRow {
  /** Row name. */
  readonly name: string;
  /** Runs the row. */
  run(ms: number): Promise<SaturatedFigures>;
}

/** A deadline above the 3 s default: a busy machine's slow answer is not an error here. */
const TIMEOUT_MS = 15_000;

interface Spec {
  readonly capacity: number;
  /** Tokens per second. */
  readonly rate: number;
}

/** Tokens over the envelope of every check (0 when the row is sound). */
export function overAdmitted(f: SaturatedFigures): number {
  return f.checks.reduce(
    (s, c) => s + Math.max(0, c.admitted - Math.floor(c.bound)),
    0,
  );
}

/** The saturated rows on `repo`'s table, each on its own resource and entities. */
export async function saturatedRows(
  lib: LibPart,
  repo: Lib.Repository,
  client: () => { client: DynamoDBClient; calls: () => number },
): Promise<SaturatedRow[]> {
  const { Limit } = lib;
  const tag = Date.now().toString(36);
  const hot: Spec = { capacity: 200, rate: 200 };
  await repo.setResourceDefaults("sat-hot", [
    Limit.custom("rps", hot.capacity, hot.rate, 1),
  ]);
  const parent: Record<string, Spec> = {
    rps: { capacity: 150, rate: 150 },
    tps: { capacity: 15_000, rate: 15_000 },
  };
  const child: Record<string, Spec> = {
    rps: { capacity: 100, rate: 100 },
    tps: { capacity: 10_000, rate: 10_000 },
  };
  const limits = (s: Record<string, Spec>) =>
    Object.entries(s).map(([n, x]) => Limit.custom(n, x.capacity, x.rate, 1));
  const open = () => reopen(lib, repo, client);

  /** Runs `callers` loops of `op` for `ms`; the run's interval in seconds. */
  const drive = async (
    callers: number,
    ms: number,
    op: (w: number) => Promise<void>,
  ): Promise<number> => {
    const t0 = performance.now();
    const end = t0 + ms;
    await Promise.all(
      Array.from({ length: callers }, async (_, w) => {
        while (performance.now() < end) await op(w);
      }),
    );
    return (performance.now() - t0) / 1000;
  };

  const hotRow = (name: string, processes: number, reserve: boolean) => ({
    name,
    async run(ms: number): Promise<SaturatedFigures> {
      const opened = await Promise.all(
        Array.from({ length: processes }, () => open()),
      );
      const limiters = opened.map((o) =>
        new lib.RateLimiter(
          o.repo,
          reserve
            ? { localReserve: { env: {} }, timeoutMs: TIMEOUT_MS }
            : { timeoutMs: TIMEOUT_MS },
        )
      );
      const entityId = `sat-${name.replaceAll(" ", "-")}-${tag}`;
      let decisions = 0;
      let admitted = 0;
      const calls0 = opened.reduce((s, o) => s + o.calls(), 0);
      const seconds = await drive(32, ms, async (w) => {
        const l = limiters[w % processes] as Lib.RateLimiter;
        try {
          await l.acquire(
            { entityId, resource: "sat-hot", consume: { rps: 1 } },
            () => {},
          );
          admitted++;
        } catch (e) {
          if (!(e instanceof lib.RateLimitExceeded)) throw e;
        }
        decisions++;
      });
      for (const l of limiters) await l.close();
      return {
        decisions,
        admitted,
        calls: opened.reduce((s, o) => s + o.calls(), 0) - calls0,
        seconds,
        checks: [{
          bucket: `${entityId}/rps`,
          admitted,
          bound: hot.capacity + hot.rate * seconds,
        }],
      };
    },
  });

  const demoRow: SaturatedRow = {
    name: "demo: cascade + adjust",
    async run(ms: number): Promise<SaturatedFigures> {
      const o = await open();
      const proj = `sat-proj-${tag}`;
      const keys = [`sat-key-1-${tag}`, `sat-key-2-${tag}`];
      await o.repo.createEntity(proj);
      await o.repo.setLimits(proj, limits(parent), { resource: "sat-demo" });
      for (const k of keys) {
        await o.repo.createEntity(k, { parentId: proj, cascade: true });
        await o.repo.setLimits(k, limits(child), { resource: "sat-demo" });
      }
      const limiter = new lib.RateLimiter(o.repo, { timeoutMs: TIMEOUT_MS });
      const calls0 = o.calls();
      // Per bucket: tokens of admitted acquires, and tokens given back.
      const took = new Map<string, number>();
      const gave = new Map<string, number>();
      const add = (m: Map<string, number>, k: string, v: number) =>
        m.set(k, (m.get(k) ?? 0) + v);
      let decisions = 0;
      let admitted = 0;
      let seed = 42;
      const rand = () => {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        return seed / 2147483648;
      };
      const seconds = await drive(50, ms, async (w) => {
        const key = keys[w % 3 === 0 ? 1 : 0] as string;
        const used = 20 + Math.floor(rand() * 160);
        try {
          await limiter.acquire(
            {
              entityId: key,
              resource: "sat-demo",
              consume: { rps: 1, tps: 100 },
            },
            (lease) => lease.adjust({ tps: used - 100 }),
          );
          admitted++;
          for (const e of [key, proj]) {
            add(took, `${e}/rps`, 1);
            add(took, `${e}/tps`, 100);
            add(gave, `${e}/tps`, Math.max(0, 100 - used));
          }
        } catch (e) {
          if (!(e instanceof lib.RateLimitExceeded)) throw e;
        }
        decisions++;
      });
      const calls = o.calls() - calls0;
      const checks: EnvelopeCheck[] = [];
      for (const e of [proj, ...keys]) {
        const spec = e === proj ? parent : child;
        for (const [n, s] of Object.entries(spec)) {
          const b = `${e}/${n}`;
          checks.push({
            bucket: b,
            admitted: took.get(b) ?? 0,
            bound: s.capacity + s.rate * seconds + (gave.get(b) ?? 0),
          });
        }
      }
      return { decisions, admitted, calls, seconds, checks };
    },
  };

  return [
    hotRow("hot key saturated", 1, false),
    demoRow,
    hotRow("reserve hot key saturated", 2, true),
  ];
}

/**
 * Test support: random concurrent histories of the real `RateLimiter`
 * with waiting and partial grants, for the ideal-bucket checker of
 * `checker.ts`. Several limiters (separate caches, like separate processes)
 * share one store and run, on the real clock, acquires that are plain,
 * partial (`min`), waiting (`wait`) or both, on a cascade child and a
 * standalone entity, with bodies that fail (rollback). The environment
 * gives the store (the memory store with injected faults in
 * `tests/wait_partial_memory_test.ts`, DynamoDB Local in
 * `tests/integration/wait_partial_oracle_test.ts`) and reports every write
 * that applied through the {@linkcode Recorder}.
 *
 * How calls map to the checker's operations:
 * - admitted: an acquire of what `lease.granted` says, on every bucket
 *   charged, over the call's whole interval (its waits included);
 * - refused plain or waiting: a refusal of the ask (the last try's);
 * - refused partial: a refusal of `min` when the error states `min` (even
 *   `min` did not fit), else (the tries ran out under contention) no effect
 *   and not checked (counted);
 * - over a capacity: never satisfiable;
 * - every write a call applied besides its admitted charge (a cascade side
 *   charged and given back by a refused try, the give-back of a rollback)
 *   is an adjustment at the write's own interval; a write that failed in a
 *   way that may have applied is an ambiguous one.
 *
 * @module
 */
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import {
  Limit,
  RateLimiter,
  RateLimitExceeded,
  type Repository,
  RequestExceedsCapacity,
} from "../../mod.ts";
import type { BucketStore, BucketWrite } from "../../testing.ts";
import type { LimiterSource } from "../../core/acquire/limiter_source.ts";
import {
  type AcquireOutcome,
  check,
  type EffectOutcome,
  format,
  type History,
  type Operation,
} from "./checker.ts";

/** A write that applied (or may have), as the checker sees it. */
export interface Applied {
  /** The bucket (entity id). */
  readonly bucket: string;
  /** Millitokens taken (negative: given back). */
  readonly delta: bigint;
  /** When the write was sent. */
  readonly start: bigint;
  /** When its answer came. */
  readonly end: bigint;
  /** `ambiguous` when the write failed in a way that may have applied it. */
  readonly outcome: EffectOutcome;
}

/** What one call saw of its writes. */
export interface CallContext {
  /** A fault hit one of its writes. */
  faulted: boolean;
  /** Writes whose condition failed (lost races). */
  lost: number;
  /** Writes that applied. */
  readonly applied: Applied[];
}

/** How an environment reports writes to the history. */
export interface Recorder {
  /** The history's random numbers (seeded). */
  readonly random: () => number;
  /** The context of the call in whose async scope this runs, if any. */
  call(): CallContext | undefined;
  /** Records writes sent (the refusal slack counts them). */
  sent(): void;
  /** Records writes that applied (`ambiguous`: may have). */
  applied(
    ws: readonly BucketWrite[],
    start: bigint,
    end: bigint,
    outcome?: EffectOutcome,
  ): void;
}

/** One history's parameters. */
export interface Scenario {
  /** Seed of the history's random numbers. */
  readonly seed: number;
  /** Tokens of the `tpm` limit, refilled per second. */
  readonly capacity: number;
  /** Limiters. */
  readonly clients: number;
  /** Inject faults (if the environment can). */
  readonly faults: boolean;
}

/** Where a history runs: a store and source with limit `tpm` of `capacity` per second, entities `parent` and `child` (cascade). */
export interface HistoryEnv {
  /** Opens the store and source of one history. */
  open(
    sc: Scenario,
    rec: Recorder,
  ): Promise<{
    readonly store: BucketStore;
    readonly source: Repository | LimiterSource;
  }>;
}

/** A finished history. */
export interface Run {
  /** The history. */
  readonly history: History;
  /** Writes sent. */
  readonly writes: number;
  /** Refusals left unchecked (contention). */
  readonly exempt: number;
  /** Calls per mode and outcome. */
  readonly modes: Record<string, number>;
}

/** The refill period of `tpm`, seconds. */
export const PERIOD_S = 1;
/** A refusal after this many lost races is the contention outcome, not a decision on the balance. */
const LOST_RACES = 4;

type Mode = "plain" | "partial" | "wait" | "wait+partial";

class BodyError extends Error {}

/** The tpm charge (positive) or give-back (negative) of one write. */
export function tpmDeltas(w: BucketWrite): { bucket: string; delta: bigint }[] {
  switch (w.kind) {
    case "plain": {
      const l = w.write.limits.find((x) => x.name === "tpm");
      return l && l.take !== 0n
        ? [{ bucket: w.write.ref.entityId, delta: l.take }]
        : [];
    }
    case "slow": {
      const l = w.write.limits.find((x) => x.name === "tpm");
      return l && l.consumed !== 0n
        ? [{ bucket: w.write.ref.entityId, delta: l.consumed }]
        : [];
    }
    case "debt": {
      const d = w.deltas.get("tpm");
      return d ? [{ bucket: w.ref.entityId, delta: d }] : [];
    }
    default:
      return [];
  }
}

/** Drops from `applied` the positive writes of `grant` on each bucket (the admitted charge). */
function transients(
  applied: readonly Applied[],
  buckets: readonly string[],
  grant: bigint,
): Applied[] {
  const out = [...applied];
  for (const b of buckets) {
    for (let i = out.length - 1; i >= 0; i--) {
      const a = out[i] as Applied;
      if (a.bucket === b && a.delta === grant) {
        out.splice(i, 1);
        break;
      }
    }
  }
  return out;
}

/** Runs one history in `env` (about 1.5 s of traffic on the real clock). */
export async function runHistory(sc: Scenario, env: HistoryEnv): Promise<Run> {
  let rnd = sc.seed >>> 0 || 1;
  const random = (): number => {
    rnd ^= rnd << 13;
    rnd ^= rnd >>> 17;
    rnd ^= rnd << 5;
    return (rnd >>> 0) / 2 ** 32;
  };
  const call = new AsyncLocalStorage<CallContext>();
  let writes = 0;
  const rec: Recorder = {
    random,
    call: () => call.getStore(),
    sent: () => {
      writes++;
    },
    applied: (ws, start, end, outcome = "applied") => {
      const c = call.getStore();
      if (!c) return;
      for (const w of ws) {
        c.applied.push(
          ...tpmDeltas(w).map((d) => ({ ...d, start, end, outcome })),
        );
      }
    },
  };
  const { store, source } = await env.open(sc, rec);
  const cap = sc.capacity;
  const limiters = Array.from(
    { length: sc.clients },
    () =>
      new RateLimiter(source, {
        bucketStore: store,
        // The refusal cache refuses from memory until a Retry-After, not
        // seeing give-backs meanwhile (documented): off, so every refusal
        // is judged on the store.
        refusalCacheSize: 0,
        onError: () => {},
        random,
      }),
  );
  const ops: Operation[] = [];
  let exempt = 0;
  const modes: Record<string, number> = {};
  const t0 = BigInt(Date.now());
  const end = Date.now() + 1500;
  let n = 0;
  await Promise.all(limiters.map(async (limiter) => {
    while (Date.now() < end) {
      const id = `op${n++}`;
      let label = id;
      const entityId = random() < 0.6 ? "child" : "solo";
      const buckets = entityId === "child" ? ["child", "parent"] : ["solo"];
      const r = random();
      const mode: Mode = r < 0.25
        ? "plain"
        : r < 0.6
        ? "partial"
        : r < 0.8
        ? "wait"
        : "wait+partial";
      // Now and then more than the capacity (a partial grant clamps it).
      const ask = 1 + Math.floor(random() * (cap + 2));
      const min = 1 + Math.floor(random() * ask);
      const partial = mode === "partial" || mode === "wait+partial";
      const waiting = mode === "wait" || mode === "wait+partial";
      const fails = random() < 0.15;
      const ctx: CallContext = { faulted: false, lost: 0, applied: [] };
      const start = BigInt(Date.now());
      let granted: number | null = null;
      let error: unknown = null;
      await call.run(ctx, async () => {
        try {
          await limiter.acquire(
            {
              entityId,
              resource: "llm",
              consume: { tpm: ask },
              ...(partial ? { min: { tpm: min } } : {}),
              ...(waiting ? { wait: { maxMs: 250 } } : {}),
            },
            (lease) => {
              granted = lease.granted.tpm ?? -1;
              if (fails) throw new BodyError();
            },
          );
        } catch (e) {
          if (!(e instanceof BodyError)) error = e;
        }
      });
      const stop = BigInt(Date.now());
      modes[`${mode}:${granted !== null ? "admitted" : "refused"}`] =
        (modes[`${mode}:${granted !== null ? "admitted" : "refused"}`] ?? 0) +
        1;
      const charge = (tokens: number) =>
        buckets.map((bucket) => ({
          bucket,
          limit: "tpm",
          amountMilli: BigInt(tokens) * 1000n,
        }));
      let outcome: AcquireOutcome;
      let amount = ask;
      if (granted !== null) {
        outcome = "admitted";
        amount = granted;
        assert.ok(
          granted >= (partial ? min : ask) && granted <= ask,
          `${id}: granted ${granted} outside [${partial ? min : ask}, ${ask}]`,
        );
      } else if (error instanceof RequestExceedsCapacity) {
        outcome = "never_satisfiable";
        amount = partial ? min : ask;
      } else if (error instanceof RateLimitExceeded) {
        const stated = error.violations.every((v) =>
          v.requested === (partial ? min : ask)
        );
        if (ctx.faulted) outcome = "error";
        else if (ctx.lost >= LOST_RACES || !stated) {
          outcome = "unchecked"; // contention: no effect, not judged
          exempt++;
        } else outcome = "refused";
        amount = partial ? min : ask;
      } else {
        outcome = "error";
      }
      label = `${id}(${mode} ${entityId} ask ${ask}${
        partial ? ` min ${min}` : ""
      } lost ${ctx.lost})`;
      ops.push({
        kind: "acquire",
        id: label,
        start,
        end: stop,
        charges: charge(amount),
        outcome,
      });
      const others = granted !== null
        ? transients(ctx.applied, buckets, BigInt(granted) * 1000n)
        : ctx.applied;
      others.forEach((a, i) =>
        ops.push({
          kind: "adjust",
          id: `${id}/w${i}`,
          start: a.start,
          end: a.end,
          charges: [{ bucket: a.bucket, limit: "tpm", amountMilli: a.delta }],
          outcome: a.outcome,
        })
      );
      await new Promise((r) => setTimeout(r, Math.floor(random() * 15)));
    }
  }));
  const params = {
    cp: BigInt(cap) * 1000n,
    ra: BigInt(cap) * 1000n,
    rp: BigInt(PERIOD_S) * 1000n,
  };
  return {
    history: {
      t0,
      limits: ["child", "parent", "solo"].map((bucket) => ({
        bucket,
        limit: "tpm",
        params,
      })),
      operations: ops,
    },
    writes,
    exempt,
    modes,
  };
}

/** Checks a run: 0 over-admissions, and no refusal without cause. */
export function checkRun(sc: Scenario, run: Run): void {
  const report = check(run.history, {
    slackMilli: 1n,
    refusalSlackMilli: BigInt(sc.capacity) * 10n + BigInt(run.writes) + 1n,
  });
  assert.equal(report.overAdmissions.length, 0, format(report));
  assert.ok(
    report.ok,
    `seed ${JSON.stringify(sc)} (${run.exempt} refusals left out): ${
      format(report)
    }`,
  );
}

/** The tpm limit of a scenario. */
export function tpmLimit(sc: Scenario): Limit {
  return Limit.custom("tpm", sc.capacity, sc.capacity, PERIOD_S);
}

/**
 * The admission oracle with waiting and partial grants, on the memory
 * store: several limiters (separate caches, like separate processes) share
 * one store and run random concurrent acquires on the real clock, each
 * plain, partial (`min`), waiting (`wait`) or both, on a cascade child and
 * a standalone entity, with bodies that fail (rollback) and, in some
 * histories, faults injected at the store (a throttle before a write, a
 * lost answer after it applied). The ideal-bucket checker of
 * `_oracle/checker.ts` judges each history: 0 over-admissions.
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
 *   is an adjustment at the write's own interval (the store's hook sees
 *   each write that applied, even one whose answer is then lost).
 *
 * Seeds are printed by fast-check on failure.
 */
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import fc from "fast-check";
import { Limit, RateLimitExceeded, RequestExceedsCapacity } from "../mod.ts";
import {
  type BucketWrite,
  MemoryBucketStore,
  type TransactResult,
  type WriteResult,
} from "../testing.ts";
import { MemoryLimiterSource } from "../core/store/memory_limiter_source.ts";
import { RateLimiter } from "../core/limiter.ts";
import {
  type AcquireOutcome,
  check,
  format,
  type History,
  type Operation,
} from "./_oracle/checker.ts";

interface Applied {
  readonly bucket: string;
  readonly delta: bigint;
  readonly start: bigint;
  readonly end: bigint;
}

interface CallContext {
  faulted: boolean;
  lost: number;
  readonly applied: Applied[];
}

/** The tpm charge (positive) or give-back (negative) of one write. */
function tpmDeltas(w: BucketWrite): { bucket: string; delta: bigint }[] {
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

class CountingStore extends MemoryBucketStore {
  readonly #call: AsyncLocalStorage<CallContext>;
  constructor(
    call: AsyncLocalStorage<CallContext>,
    options: ConstructorParameters<typeof MemoryBucketStore>[0],
  ) {
    super(options);
    this.#call = call;
  }
  override async write(
    w: BucketWrite,
    options?: { readonly answer?: boolean },
  ): Promise<WriteResult> {
    const r = await super.write(w, options);
    const c = this.#call.getStore();
    if (!r.ok && c) c.lost++;
    return r;
  }
  override async transact(
    ws: readonly BucketWrite[],
  ): Promise<TransactResult> {
    const r = await super.transact(ws);
    const c = this.#call.getStore();
    if (!r.ok && c) c.lost++;
    return r;
  }
}

/** A refusal after this many lost races is the contention outcome, not a decision on the balance. */
const LOST_RACES = 4;
const PERIOD_S = 1;

type Mode = "plain" | "partial" | "wait" | "wait+partial";

interface Scenario {
  readonly seed: number;
  readonly capacity: number;
  readonly clients: number;
  readonly faults: boolean;
}

class BodyError extends Error {}

interface Run {
  readonly history: History;
  readonly writes: number;
  readonly exempt: number;
  readonly modes: Record<string, number>;
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

async function runHistory(sc: Scenario): Promise<Run> {
  let rnd = sc.seed >>> 0 || 1;
  const random = (): number => {
    rnd ^= rnd << 13;
    rnd ^= rnd >>> 17;
    rnd ^= rnd << 5;
    return (rnd >>> 0) / 2 ** 32;
  };
  const call = new AsyncLocalStorage<CallContext>();
  let writes = 0;
  const started = new WeakMap<readonly BucketWrite[], bigint>();
  const store = new CountingStore(call, {
    hook: async (phase, op, ws) => {
      if (phase === "after") {
        const at = BigInt(Date.now());
        for (const w of ws) {
          call.getStore()?.applied.push(
            ...tpmDeltas(w).map((d) => ({
              ...d,
              start: started.get(ws) ?? at,
              end: at,
            })),
          );
        }
      }
      if (phase === "before") {
        started.set(ws, BigInt(Date.now()));
        if (op !== "read") writes++;
        await new Promise((r) => setTimeout(r, Math.floor(random() * 3)));
        if (sc.faults && op !== "read" && random() < 0.06) {
          const c = call.getStore();
          if (c) c.faulted = true;
          throw Object.assign(new Error("injected throttle"), {
            name: "ThrottlingException",
          });
        }
      } else if (sc.faults && random() < 0.04) {
        const c = call.getStore();
        if (c) c.faulted = true;
        throw Object.assign(new Error("injected: answer lost after apply"), {
          name: "InternalServerError",
        });
      }
    },
  });
  const source = new MemoryLimiterSource(store);
  const cap = sc.capacity;
  source.setSystemDefaults([Limit.custom("tpm", cap, cap, PERIOD_S)]);
  source.createEntity("parent");
  source.createEntity("child", { parentId: "parent", cascade: true });
  const limiters = Array.from(
    { length: sc.clients },
    () =>
      new RateLimiter(source, {
        bucketStore: store,
        // The refusal cache refuses from memory until a Retry-After, not
        // seeing give-backs meanwhile (documented): off, as in the other
        // memory-store oracle, so every refusal is judged on the store.
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
          outcome: "applied",
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

Deno.test("memory store: random histories with waiting and partial grants never over-admit", async () => {
  const seen: Record<string, number> = {};
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        capacity: fc.integer({ min: 3, max: 12 }),
        clients: fc.integer({ min: 2, max: 4 }),
        faults: fc.boolean(),
      }),
      async (sc) => {
        const { history, writes, exempt, modes } = await runHistory(sc);
        for (const [k, v] of Object.entries(modes)) {
          seen[k] = (seen[k] ?? 0) + v;
        }
        const report = check(history, {
          slackMilli: 1n,
          refusalSlackMilli: BigInt(sc.capacity) * 10n + BigInt(writes) + 1n,
        });
        assert.equal(report.overAdmissions.length, 0, format(report));
        assert.ok(
          report.ok,
          `seed ${JSON.stringify(sc)} (${exempt} refusals left out): ${
            format(report)
          }`,
        );
      },
    ),
    { numRuns: 6, endOnFailure: true },
  );
  // Every kind of call was exercised, admitted and refused.
  for (const mode of ["plain", "partial", "wait", "wait+partial"]) {
    assert.ok((seen[`${mode}:admitted`] ?? 0) > 0, JSON.stringify(seen));
  }
  assert.ok(
    (seen["partial:refused"] ?? 0) + (seen["wait:refused"] ?? 0) > 0,
    JSON.stringify(seen),
  );
});

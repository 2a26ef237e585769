/**
 * The admission algorithm without DynamoDB: several limiters (separate
 * caches, like separate processes) share one memory store, run random
 * concurrent acquires, cascades and rollbacks on the real clock, with
 * faults injected at the store (a throttle before a write applies, a lost
 * answer after it applied) and random store latency. The ideal-bucket
 * checker judges each history (the same checker as the DynamoDB Local
 * oracle in `tests/integration/oracle_test.ts`). Seeds are printed.
 *
 * Each limiter runs several concurrent callers, so its acquires on one
 * bucket coalesce (one write for a batch, `core/acquire/coalescer.ts`):
 * every write's parts are attributed to the calls whose shares it carried
 * ({@linkcode currentBatch}), so the checker sees each call's own charge.
 */
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import fc from "fast-check";
import { Limit, RateLimitExceeded } from "../mod.ts";
import {
  type BucketWrite,
  createTestLimiter,
  MemoryBucketStore,
  type TransactResult,
  type WriteResult,
} from "../testing.ts";
import { MemoryLimiterSource } from "../core/store/memory_limiter_source.ts";
import { RateLimiter } from "../core/limiter.ts";
import { currentBatch } from "../core/acquire/coalescer.ts";
import {
  check,
  format,
  type History,
  type Operation,
} from "./_oracle/checker.ts";

interface CallContext {
  faulted: boolean;
  /** Writes of this call whose condition failed (lost races). */
  lost: number;
  /** rpm changes of the writes this call applied. */
  readonly applied: {
    bucket: string;
    delta: bigint;
    start: bigint;
    end: bigint;
  }[];
}

/** The rpm charge (positive) or give-back (negative) of one write, per bucket. */
function rpmDeltas(w: BucketWrite): { bucket: string; delta: bigint }[] {
  switch (w.kind) {
    case "plain": {
      const l = w.write.limits.find((x) => x.name === "rpm");
      return l ? [{ bucket: w.write.ref.entityId, delta: l.take }] : [];
    }
    case "slow": {
      const l = w.write.limits.find((x) => x.name === "rpm");
      return l && l.consumed !== 0n
        ? [{ bucket: w.write.ref.entityId, delta: l.consumed }]
        : [];
    }
    case "debt": {
      const d = w.deltas.get("rpm");
      return d ? [{ bucket: w.ref.entityId, delta: d }] : [];
    }
    case "shards":
      return [];
  }
}

/** The contexts of the calls a write in this context carries: a coalesced write's, or the caller's own. */
function callsOf(call: AsyncLocalStorage<CallContext>): CallContext[] {
  const batch = currentBatch();
  const own = call.getStore();
  if (!batch) return own ? [own] : [];
  return batch.flatMap((s) => s.run(() => call.getStore()) ?? []);
}

/** The rpm parts of a write per call: a coalesced write's shares, or the whole write. */
function rpmParts(
  call: AsyncLocalStorage<CallContext>,
  ws: readonly BucketWrite[],
): [CallContext, { bucket: string; delta: bigint }[]][] {
  const batch = currentBatch();
  if (!batch) {
    const own = call.getStore();
    return own ? [[own, ws.flatMap(rpmDeltas)]] : [];
  }
  const total = ws.flatMap(rpmDeltas);
  const bucket = total[0]?.bucket ?? "?";
  const sum = batch.reduce((n, s) => n + (s.amounts.get("rpm") ?? 0n), 0n);
  const written = total.reduce((n, d) => n + d.delta, 0n);
  assert.equal(written, sum, "a coalesced write charges the sum of its shares");
  return batch.flatMap((s) => {
    const c = s.run(() => call.getStore());
    const d = s.amounts.get("rpm") ?? 0n;
    return c ? [[c, d === 0n ? [] : [{ bucket, delta: d }]]] : [];
  });
}

/** Counts each call's lost races (writes whose condition failed). */
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
    if (!r.ok) { for (const c of callsOf(this.#call)) c.lost++; }
    return r;
  }
  override async transact(
    ws: readonly BucketWrite[],
  ): Promise<TransactResult> {
    const r = await super.transact(ws);
    if (!r.ok) { for (const c of callsOf(this.#call)) c.lost++; }
    return r;
  }
}

/**
 * A refusal after this many lost races is the documented contention
 * outcome (the slow path gives up after 4 attempts), not a decision on the
 * balance: it is left out of the refusal checks, and counted.
 */
const LOST_RACES = 4;

interface Scenario {
  readonly seed: number;
  readonly capacity: number;
  readonly clients: number;
  /** Concurrent callers per limiter (their acquires coalesce). */
  readonly callers: number;
  readonly faults: boolean;
  /**
   * Every acquire also consumes a stored shadow limit (`spm`, capacity 1:
   * enforced, nearly every call would be refused or exceed the capacity),
   * and a quarter of the calls shadow `rpm` itself per call: the checker's
   * verdict on `rpm` must be unchanged, no write may charge `spm`, and a
   * call with only shadow limits is admitted and writes nothing.
   */
  readonly shadow?: boolean;
  /** Every acquire on the one bucket `solo` (a hot key). */
  readonly hot?: boolean;
  /**
   * Writes take 0-30 ms and acquires give up after 4-24 ms: a request that
   * gives up while a coalesced write carries its share is answered at
   * once, and its share, applied by that write, is given back when the
   * write ends (after the call returned). The history then carries the
   * final `tc` (the accounting must be exact).
   */
  readonly late?: boolean;
}

const SHADOW_LIMITS = ["spm"] as const;

/** Writes that charged a shadow limit (must stay empty). */
function shadowCharges(w: BucketWrite): string[] {
  const hit = (name: string, d: bigint): string[] =>
    (SHADOW_LIMITS as readonly string[]).includes(name) && d !== 0n
      ? [`${w.kind} ${name} ${d}`]
      : [];
  switch (w.kind) {
    case "plain":
      return w.write.limits.flatMap((l) => hit(l.name, l.take));
    case "slow":
      return w.write.limits.flatMap((l) => hit(l.name, l.consumed));
    case "debt":
      return [...w.deltas].flatMap(([n, d]) => hit(n, d));
    case "shards":
      return [];
  }
}

const PERIOD_S = 1;

class BodyError extends Error {}

async function runHistory(
  sc: Scenario,
): Promise<
  {
    history: History;
    writes: number;
    exempt: number;
    shadowWrites: string[];
    shadowChecked: number;
    shadowStored: string[];
    batched: number;
  }
> {
  let rnd = sc.seed >>> 0 || 1;
  const random = (): number => {
    rnd ^= rnd << 13;
    rnd ^= rnd >>> 17;
    rnd ^= rnd << 5;
    return (rnd >>> 0) / 2 ** 32;
  };
  const call = new AsyncLocalStorage<CallContext>();
  const shadowWrites: string[] = [];
  let shadowChecked = 0;
  let writes = 0;
  let batched = 0;
  const started = new WeakMap<readonly BucketWrite[], bigint>();
  const store = new CountingStore(call, {
    hook: async (phase, op, ws) => {
      if (phase === "after") {
        // Applied for certain (an "after" fault only loses the answer).
        const at = BigInt(Date.now());
        for (const [c, parts] of rpmParts(call, ws)) {
          c.applied.push(
            ...parts.map((d) => ({
              ...d,
              start: started.get(ws) ?? at,
              end: at,
            })),
          );
        }
      }
      if (phase === "before") {
        for (const w of ws) shadowWrites.push(...shadowCharges(w));
        started.set(ws, BigInt(Date.now()));
        if (op !== "read") writes++;
        if (currentBatch()) batched++;
        await new Promise((r) =>
          setTimeout(
            r,
            Math.floor(random() * (sc.late && op !== "read" ? 30 : 3)),
          )
        );
        if (sc.faults && op !== "read" && random() < 0.08) {
          for (const c of callsOf(call)) c.faulted = true;
          throw Object.assign(new Error("injected throttle"), {
            name: "ThrottlingException",
          });
        }
      } else if (sc.faults && random() < 0.05) {
        for (const c of callsOf(call)) c.faulted = true;
        throw Object.assign(new Error("injected: answer lost after apply"), {
          name: "InternalServerError",
        });
      }
    },
  });
  const source = new MemoryLimiterSource(store);
  source.setSystemDefaults([
    Limit.custom("rpm", sc.capacity, sc.capacity, PERIOD_S),
    ...(sc.shadow
      ? [
        Limit.custom("spm", 1, 1, 3600).withShadow(),
      ]
      : []),
  ]);
  source.createEntity("parent");
  source.createEntity("child", { parentId: "parent", cascade: true });
  // A known entity: the hot key's acquires take the fast path (coalesced).
  if (sc.hot) source.createEntity("solo");
  const limiters = Array.from(
    { length: sc.clients },
    () =>
      new RateLimiter(source, {
        bucketStore: store,
        refusalCacheSize: 0,
        onError: () => {},
        random,
      }),
  );
  const ops: Operation[] = [];
  const failed: { id: string; ctx: CallContext }[] = [];
  let exempt = 0;
  const t0 = BigInt(Date.now());
  const end = Date.now() + 1200;
  let n = 0;
  const callers = limiters.flatMap((l) =>
    Array.from({ length: sc.callers }, () => l)
  );
  await Promise.all(callers.map(async (limiter) => {
    while (Date.now() < end) {
      const id = `op${n++}`;
      const entityId = sc.hot || random() >= 0.5 ? "solo" : "child";
      const amount = 1 + Math.floor(random() * 3);
      const fails = random() < 0.2;
      const charges = (entityId === "child" ? ["child", "parent"] : ["solo"])
        .map((bucket) => ({
          bucket,
          limit: "rpm",
          amountMilli: BigInt(amount) * 1000n,
        }));
      const ctx: CallContext = { faulted: false, lost: 0, applied: [] };
      if (sc.shadow && random() < 0.25) {
        // Only shadow limits: admitted whatever the balance (an injected
        // fault may fail it, never a refusal), and no rpm written.
        let ok = false;
        await call.run(ctx, async () => {
          const lease = await limiter.acquire({
            entityId,
            resource: "api",
            consume: { rpm: amount, spm: amount },
            shadow: ["rpm"],
          }).catch((e) => {
            if (e instanceof RateLimitExceeded || !ctx.faulted) {
              shadowWrites.push(`${id}: ${e}`);
            }
            return null;
          });
          // A lost read answer leaves the report empty, never the admission.
          ok = lease === null
            ? ctx.faulted
            : ctx.faulted || lease.shadow.checked.length > 0;
          await lease?.commit();
        });
        if (!ok || ctx.applied.length > 0) {
          shadowWrites.push(`${id}: shadow-only call refused or wrote`);
        }
        continue;
      }
      const start = BigInt(Date.now());
      let outcome = "admitted" as "admitted" | "refused" | "error";
      let bodyRan = false;
      await call.run(ctx, async () => {
        try {
          await limiter.acquire(
            {
              entityId,
              resource: "api",
              consume: sc.shadow
                ? { rpm: amount, spm: amount }
                : { rpm: amount },
              ...(sc.late ? { timeoutMs: 4 + Math.floor(random() * 20) } : {}),
            },
            (lease) => {
              shadowChecked += lease.shadow.checked.length;
              bodyRan = true;
              if (fails) throw new BodyError();
            },
          );
        } catch (e) {
          if (e instanceof BodyError) return;
          outcome = e instanceof RateLimitExceeded ? "refused" : "error";
        }
      });
      const stop = BigInt(Date.now());
      ops.push({
        kind: "acquire",
        id,
        start,
        end: stop,
        charges,
        outcome: bodyRan
          ? "admitted"
          : ctx.faulted && outcome !== "refused"
          ? "error"
          : outcome === "refused" && ctx.lost >= LOST_RACES
          ? "error"
          : outcome,
      });
      if (!bodyRan && outcome === "refused" && ctx.lost >= LOST_RACES) {
        exempt++;
      }
      // A refused or failed call may have charged one cascade side and
      // given it back (or not, on a fault): other calls saw that transient
      // debit, so the checker gets every write it applied, read at the end
      // (a share applied after the call's deadline is given back later).
      if (!bodyRan) failed.push({ id, ctx });
      if (bodyRan && fails) {
        ops.push({
          kind: "rollback",
          id: `${id}/rollback`,
          start,
          end: stop,
          charges,
          outcome: ctx.faulted ? "ambiguous" : "applied",
        });
      }
      if (!sc.hot) {
        await new Promise((r) => setTimeout(r, Math.floor(random() * 20)));
      }
    }
  }));
  // Late writes end, and their give-backs (own 1 s grace) land.
  if (sc.late) await new Promise((r) => setTimeout(r, 1200));
  for (const { id, ctx } of failed) {
    ctx.applied.forEach((a, i) =>
      ops.push({
        kind: "adjust",
        id: `${id}/w${i}`,
        start: a.start,
        end: a.end,
        charges: [{ bucket: a.bucket, limit: "rpm", amountMilli: a.delta }],
        outcome: "applied",
      })
    );
  }
  const params = {
    cp: BigInt(sc.capacity) * 1000n,
    ra: BigInt(sc.capacity) * 1000n,
    rp: BigInt(PERIOD_S) * 1000n,
  };
  const buckets = ["child", "parent", "solo"];
  const tcOf = (entityId: string): bigint =>
    store.get({ ns: "default", entityId, resource: "api", shard: 0 })
      ?.limits.get("rpm")?.tc ?? 0n;
  return {
    history: {
      t0,
      limits: buckets.map((bucket) => ({ bucket, limit: "rpm", params })),
      operations: ops,
      ...(sc.late
        ? {
          finalConsumed: buckets.map((bucket) => ({
            bucket,
            limit: "rpm",
            tcMilli: tcOf(bucket),
          })),
        }
        : {}),
    },
    writes,
    exempt,
    shadowWrites,
    shadowChecked,
    shadowStored: sc.shadow
      ? ["child", "parent", "solo"].flatMap((entityId) => {
        const item = store.get({
          ns: "default",
          entityId,
          resource: "api",
          shard: 0,
        });
        return SHADOW_LIMITS.flatMap((n) => {
          const st = item?.limits.get(n);
          return st && st.tc !== 0n && st.tc !== null
            ? [`${entityId}/${n} tc=${st.tc}`]
            : [];
        });
      })
      : [],
    batched,
  };
}

Deno.test("memory store: random concurrent histories with faults never over-admit and refuse only with cause", async () => {
  let batchedTotal = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        capacity: fc.integer({ min: 3, max: 12 }),
        clients: fc.integer({ min: 2, max: 4 }),
        callers: fc.integer({ min: 1, max: 6 }),
        faults: fc.boolean(),
        shadow: fc.boolean(),
      }),
      async (sc) => {
        const { history, writes, exempt, batched, ...shadow } =
          await runHistory(
            sc,
          );
        batchedTotal += batched;
        // Shadow limits never charge (no write touches them) and are judged.
        assert.deepEqual(shadow.shadowWrites, [], JSON.stringify(sc));
        assert.deepEqual(shadow.shadowStored, [], JSON.stringify(sc));
        if (sc.shadow) assert.ok(shadow.shadowChecked > 0);
        const acquires = history.operations.filter((o) => o.kind === "acquire");
        assert.ok(acquires.length > 10, "the history has traffic");
        const report = check(history, {
          slackMilli: 1n,
          refusalSlackMilli: BigInt(sc.capacity) * 10n + BigInt(writes) + 1n,
        });
        assert.ok(
          report.ok,
          `seed ${
            JSON.stringify(sc)
          } (${exempt} refusals after ${LOST_RACES}+ lost races left out): ${
            format(report)
          }`,
        );
      },
    ),
    { numRuns: 6 },
  );
  assert.ok(batchedTotal > 0, "some acquires were coalesced");
});

for (const faults of [false, true]) {
  Deno.test(
    `memory store: a hot key with 32 concurrent callers in one process takes fewer writes than decisions and never over-admits${
      faults ? " (injected faults)" : ""
    }`,
    async () => {
      const seed = Math.floor(Math.random() * 2 ** 31) || 1;
      const sc = { seed, capacity: 40, clients: 1, callers: 32, faults };
      const { history, writes, exempt, batched } = await runHistory({
        ...sc,
        hot: true,
      });
      const decided = history.operations.filter((o) =>
        o.kind === "acquire" &&
        (o.outcome === "admitted" || o.outcome === "refused")
      ).length;
      const at = `seed ${JSON.stringify(sc)}`;
      assert.ok(batched > 0, `${at}: no write was coalesced`);
      assert.ok(
        writes < decided,
        `${at}: ${writes} writes for ${decided} decisions`,
      );
      const report = check(history, {
        slackMilli: 1n,
        refusalSlackMilli: BigInt(sc.capacity) * 10n + BigInt(writes) + 1n,
      });
      assert.ok(
        report.ok,
        `${at} (${exempt} refusals after ${LOST_RACES}+ lost races left out): ${
          format(report)
        }`,
      );
    },
  );
}

Deno.test("memory store: acquires that give up while a coalesced write carries their shares get them given back when it applies: exact accounting, never over-admit", async () => {
  let batchedTotal = 0;
  let errors = 0;
  let givenBack = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        capacity: fc.integer({ min: 20, max: 60 }),
        clients: fc.integer({ min: 1, max: 2 }),
        callers: fc.integer({ min: 4, max: 10 }),
        faults: fc.constant(false),
      }),
      async (sc) => {
        const { history, writes, exempt, batched } = await runHistory({
          ...sc,
          hot: true,
          late: true,
        });
        batchedTotal += batched;
        errors +=
          history.operations.filter((o) =>
            o.kind === "acquire" && o.outcome === "error"
          ).length;
        givenBack +=
          history.operations.filter((o) =>
            o.kind === "adjust" && o.charges.some((c) => c.amountMilli < 0n)
          ).length;
        const report = check(history, {
          slackMilli: 1n,
          refusalSlackMilli: BigInt(sc.capacity) * 10n + BigInt(writes) + 1n,
        });
        assert.ok(
          report.ok,
          `seed ${JSON.stringify(sc)} (${exempt} exempt): ${format(report)}`,
        );
      },
    ),
    { numRuns: 4 },
  );
  assert.ok(batchedTotal > 0, "some acquires were coalesced");
  assert.ok(errors > 0, "no acquire gave up: the test proves nothing");
  // Shares applied after their callers gave up, given back (the hot key has
  // no cascade: no other give-back of a failed call).
  assert.ok(givenBack > 0, `no late give-back (${errors} gave up)`);
});

Deno.test("memory store: createTestLimiter admits the capacity, refuses the next, and refills", async () => {
  const { limiter, source, store } = createTestLimiter();
  source.setSystemDefaults([Limit.custom("rps", 3, 3, 1)]);
  const req = { entityId: "k", resource: "api", consume: { rps: 1 } };
  for (let i = 0; i < 3; i++) await limiter.acquire(req, () => {});
  await assert.rejects(limiter.acquire(req, () => {}), RateLimitExceeded);
  const item = store.get({
    ns: "default",
    entityId: "k",
    resource: "api",
    shard: 0,
  });
  // Less than a token: the refused call may have stored the few
  // millitokens refilled since (the clock is real).
  const left = item?.limits.get("rps")?.tk ?? -1n;
  assert.ok(left >= 0n && left < 1000n, `stored ${left} millitokens`);
  await new Promise((r) => setTimeout(r, 400));
  await limiter.acquire(req, () => {}); // 1.2 tokens refilled
});

/**
 * One step of {@linkcode runNarrowHistory}: a call charging both limits, or
 * one that knows only `rpm` (a per-call override), from the cached limiter
 * or from a fresh one (a process that knows nothing: the slow path).
 */
interface NarrowStep {
  readonly kind: "wide" | "narrow" | "fresh";
  /** Pause before the call, ms. */
  readonly gap: number;
}

/**
 * A history on one bucket with limits `rpm` (never binding) and `tpm`
 * (binding), where some calls do not know `tpm`: their writes move the
 * item's one `rf`, and `tpm`'s refill since the old `rf` must be settled,
 * not lost (the checker flags the refusals a lost refill causes).
 *
 * `rpm` is either full at nearly every refill write (100, 100 a second),
 * or never full again after the first call (1000, 1 a second). A full
 * limit must not cost `tpm` the holdback of its refill on every write.
 */
async function runNarrowHistory(
  tpmCapacity: number,
  rpmFull: boolean,
  steps: readonly NarrowStep[],
): Promise<{ history: History; writes: number }> {
  const [rpmCapacity, rpmRate] = rpmFull ? [100, 100] : [1000, 1];
  let writes = 0;
  const store = new MemoryBucketStore({
    hook: (phase, op) => {
      if (phase === "before" && op !== "read") writes++;
    },
  });
  const source = new MemoryLimiterSource(store);
  const rpm = Limit.custom("rpm", rpmCapacity, rpmRate, PERIOD_S);
  const tpm = Limit.custom("tpm", tpmCapacity, tpmCapacity, PERIOD_S);
  source.setSystemDefaults([rpm, tpm]);
  const options = { bucketStore: store, refusalCacheSize: 0 };
  const wide = new RateLimiter(source, options);
  const narrow = new RateLimiter(source, options);
  const ops: Operation[] = [];
  const t0 = BigInt(Date.now());
  for (const [i, step] of steps.entries()) {
    await new Promise((r) => setTimeout(r, step.gap));
    const limiter = step.kind === "wide"
      ? wide
      : step.kind === "narrow"
      ? narrow
      : new RateLimiter(source, options);
    const consume = step.kind === "wide" ? { rpm: 1, tpm: 1 } : { rpm: 1 };
    const start = BigInt(Date.now());
    let outcome: "admitted" | "refused" = "admitted";
    try {
      await (await limiter.acquire({
        entityId: "solo",
        resource: "api",
        consume,
        ...(step.kind === "wide" ? {} : { limits: [rpm] }),
      })).commit();
    } catch (e) {
      if (!(e instanceof RateLimitExceeded)) throw e;
      outcome = "refused";
    }
    ops.push({
      kind: "acquire",
      id: `op${i}:${step.kind}`,
      start,
      end: BigInt(Date.now()),
      charges: Object.entries(consume).map(([limit, n]) => ({
        bucket: "solo",
        limit,
        amountMilli: BigInt(n) * 1000n,
      })),
      outcome,
    });
  }
  const params = (cp: number, ra: number) => ({
    cp: BigInt(cp) * 1000n,
    ra: BigInt(ra) * 1000n,
    rp: BigInt(PERIOD_S) * 1000n,
  });
  return {
    history: {
      t0,
      limits: [
        {
          bucket: "solo",
          limit: "rpm",
          params: params(rpmCapacity, rpmRate),
        },
        {
          bucket: "solo",
          limit: "tpm",
          params: params(tpmCapacity, tpmCapacity),
        },
      ],
      operations: ops,
    },
    writes,
  };
}

Deno.test("memory store: calls that do not know a limit stored on the item (an override, a fresh process's slow path) settle its refill when they move rf: no refusal the ideal bucket would admit", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 3, max: 8 }),
      fc.boolean(),
      fc.array(
        fc.record({
          kind: fc.constantFrom(
            "wide",
            "wide",
            "narrow",
            "fresh",
          ) as fc.Arbitrary<
            NarrowStep["kind"]
          >,
          gap: fc.oneof(
            fc.integer({ min: 0, max: 5 }),
            fc.integer({ min: 50, max: 250 }),
          ),
        }),
        { minLength: 15, maxLength: 30 },
      ),
      async (tpmCapacity, rpmFull, steps) => {
        // Drain tpm first, so that its refill decides the wide calls.
        const drain: NarrowStep[] = Array.from(
          { length: tpmCapacity + 1 },
          () => ({ kind: "wide", gap: 0 }),
        );
        const { history, writes } = await runNarrowHistory(
          tpmCapacity,
          rpmFull,
          [...drain, ...steps],
        );
        const report = check(history, {
          slackMilli: 1n,
          // The new bucket's holdback (1% of tpm's capacity; rpm never
          // binds) and a millitoken of rounding per write.
          refusalSlackMilli: BigInt(tpmCapacity) * 10n + BigInt(writes) + 1n,
        });
        assert.ok(
          report.ok,
          `tpm ${tpmCapacity}, rpm full ${rpmFull}, steps ${
            JSON.stringify(steps)
          }: ${format(report)}`,
        );
      },
    ),
    { numRuns: 6 },
  );
});

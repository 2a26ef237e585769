/**
 * The local reserve against the ideal bucket, without DynamoDB: several
 * limiters with the reserve on (separate caches and slices, like separate
 * processes) share one memory store and run random concurrent acquires,
 * cascades, rollbacks and adjustments on the real clock, with faults
 * injected at the store and random store latency; then they close.
 *
 * Two histories are checked by the checker of `tests/_oracle/checker.ts`:
 *
 * - **Store history**: every write the store applied, as the oracle sees
 *   DynamoDB. A checked charge (an acquire's write, a slice taken with it:
 *   the slice counts as consumed when it is taken) is an admitted acquire
 *   over the write's interval; a lease delta or give-back (slice give-backs
 *   included) is an adjustment. No write may over-admit.
 * - **Caller history**: what callers saw. An acquire admitted from a slice
 *   spends tokens taken when the slice was taken, so its interval starts at
 *   the start of the call that took the slice it may have used (the oldest
 *   slice its limiter held of the bucket when the call started, or the
 *   oldest call of its limiter in flight then, which may be taking one). Its
 *   admissions must fit the ideal bucket (every admission, and every
 *   window); rollbacks are give-backs, unused slice tokens and their
 *   give-backs are left out (leaving out a debit and its later capped
 *   give-back only raises the ideal balance, so nothing is hidden).
 *
 * Plus the ledger: after every limiter closed, each bucket's consumed
 * counter `tc` is what callers were admitted, adjusted and rolled back,
 * plus what failed calls wrote and what could not be given back (reported
 * stranded): every unused slice token went back.
 */
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import fc from "fast-check";
import {
  Limit,
  RateLimitExceeded,
  type SliceEvent,
  type StrandedCharge,
} from "../mod.ts";
import { type BucketWrite, MemoryBucketStore } from "../testing.ts";
import { MemoryLimiterSource } from "../core/store/memory_limiter_source.ts";
import { RateLimiter } from "../core/limiter.ts";
import {
  check,
  format,
  type History,
  type Operation,
} from "./_oracle/checker.ts";
import { ReserveRecorder } from "./_oracle/reserve_recorder.ts";

interface CallContext {
  readonly start: bigint;
  faulted: boolean;
  readonly applied: {
    bucket: string;
    delta: bigint;
    start: bigint;
    end: bigint;
  }[];
}

/** The rpm change of one write per bucket, and whether it was a checked charge. */
function rpmDeltas(
  w: BucketWrite,
): { bucket: string; delta: bigint; checked: boolean }[] {
  switch (w.kind) {
    case "plain": {
      const l = w.write.limits.find((x) => x.name === "rpm");
      return l && l.take !== 0n
        ? [{
          bucket: w.write.ref.entityId,
          delta: l.take,
          checked: l.min !== null,
        }]
        : [];
    }
    case "slow": {
      const l = w.write.limits.find((x) => x.name === "rpm");
      return l && l.consumed !== 0n
        ? [{
          bucket: w.write.ref.entityId,
          delta: l.consumed,
          checked: (l.check ?? true) && l.consumed > 0n,
        }]
        : [];
    }
    case "debt": {
      const d = w.deltas.get("rpm");
      return d ? [{ bucket: w.ref.entityId, delta: d, checked: false }] : [];
    }
    case "shards":
      return [];
  }
}

interface Scenario {
  readonly seed: number;
  readonly capacity: number;
  readonly clients: number;
  readonly faults: boolean;
  readonly ttlMs: number;
  readonly fraction: number;
}

const PERIOD_S = 1;
const BUCKETS = ["child", "parent", "solo"];

class BodyError extends Error {}

interface Run {
  store: History;
  caller: History;
  /** Each admitted acquire's own start (the caller history dates slices back). */
  callStarts: Map<string, bigint>;
  local: number;
  taken: number;
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
  // When each write was sent; a call's writes may stand for a decision
  // made (and a refill computed) from the call's start on.
  const started = new WeakMap<BucketWrite, bigint>();
  const storeOps: Operation[] = [];
  let w = 0;
  const store = new MemoryBucketStore({
    hook: async (phase, op, ws) => {
      if (phase === "after") {
        const at = BigInt(Date.now());
        const sent = (ws[0] && started.get(ws[0])) ?? at;
        const from = call.getStore()?.start;
        const start = from !== undefined && from < sent ? from : sent;
        for (const x of ws) {
          for (const d of rpmDeltas(x)) {
            const charge = {
              bucket: d.bucket,
              limit: "rpm",
              amountMilli: d.delta,
            };
            storeOps.push(
              d.checked
                ? {
                  kind: "acquire",
                  id: `w${w++}`,
                  start,
                  end: at,
                  charges: [charge],
                  outcome: "admitted",
                }
                : {
                  kind: "adjust",
                  id: `w${w++}`,
                  start,
                  end: at,
                  charges: [charge],
                  outcome: "applied",
                },
            );
            call.getStore()?.applied.push({ ...d, start: sent, end: at });
          }
        }
      }
      if (phase === "before") {
        if (ws[0]) started.set(ws[0], BigInt(Date.now()));
        await new Promise((r) => setTimeout(r, Math.floor(random() * 3)));
        if (sc.faults && op !== "read" && random() < 0.05) {
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
  source.setSystemDefaults([
    Limit.custom("rpm", sc.capacity, sc.capacity, PERIOD_S),
  ]);
  source.createEntity("parent");
  source.createEntity("child", { parentId: "parent", cascade: true });
  // Per limiter and bucket: the slices held, with the start of the call that took each.
  const held = Array.from(
    { length: sc.clients },
    () => new Map<string, Map<number, bigint>>(),
  );
  const stranded: { bucket: string; amountMilli: bigint }[] = [];
  // Per limiter: the start of each call in flight.
  const inFlight = Array.from(
    { length: sc.clients },
    () => new Map<string, bigint>(),
  );
  const onSlice = (i: number) => (e: SliceEvent) => {
    const slices = held[i] as Map<string, Map<number, bigint>>;
    let m = slices.get(e.entityId);
    if (!m) slices.set(e.entityId, m = new Map());
    if (e.kind === "taken") {
      if (!m.has(e.id)) {
        m.set(e.id, call.getStore()?.start ?? BigInt(Date.now()));
      }
    } else {
      m.delete(e.id);
    }
  };
  // A give-back that may not have been placed (a slice, a compensation) is
  // a debit that may stand.
  const onStranded = (c: StrandedCharge) => {
    if (c.kind !== "giveback") return;
    const tokens = c.amounts["rpm"] ?? c.amounts["*"] ?? 0;
    stranded.push({
      bucket: c.entityId,
      amountMilli: BigInt(Math.round(Math.abs(tokens) * 1000)),
    });
  };
  const limiters = Array.from(
    { length: sc.clients },
    (_, i) =>
      new RateLimiter(source, {
        bucketStore: store,
        refusalCacheSize: 0,
        onError: () => {},
        onStranded,
        random,
        localReserve: {
          ttlMs: sc.ttlMs,
          targetMs: 300,
          maxFraction: sc.fraction,
          env: {},
          onSlice: onSlice(i),
        },
      }),
  );
  const ops: Operation[] = [];
  const callStarts = new Map<string, bigint>();
  const t0 = BigInt(Date.now());
  const end = Date.now() + 1200;
  let n = 0;
  await Promise.all(limiters.map(async (limiter, li) => {
    while (Date.now() < end) {
      const id = `op${n++}`;
      const entityId = random() < 0.5 ? "child" : "solo";
      const amount = 1 + Math.floor(random() * 2);
      const fails = random() < 0.15;
      const more = random() < 0.1 ? 1 + Math.floor(random() * 2) : 0;
      const buckets = entityId === "child" ? ["child", "parent"] : ["solo"];
      const charges = buckets.map((bucket) => ({
        bucket,
        limit: "rpm",
        amountMilli: BigInt(amount) * 1000n,
      }));
      const start = BigInt(Date.now());
      // The oldest slice this limiter holds of the buckets: admissions from it spend tokens taken then.
      let since = start;
      for (const b of buckets) {
        for (const s of held[li]?.get(b)?.values() ?? []) {
          if (s < since) since = s;
        }
      }
      // A slice another call of this limiter is taking may serve this one.
      for (const s of inFlight[li]?.values() ?? []) if (s < since) since = s;
      const ctx: CallContext = { start, faulted: false, applied: [] };
      inFlight[li]?.set(id, start);
      let outcome = "admitted" as "admitted" | "refused" | "error";
      let bodyRan = false;
      let bodyEnd = start;
      await call.run(ctx, async () => {
        try {
          await limiter.acquire(
            { entityId, resource: "api", consume: { rpm: amount } },
            (lease) => {
              bodyRan = true;
              bodyEnd = BigInt(Date.now());
              if (more > 0) lease.adjust({ rpm: more });
              if (fails) throw new BodyError();
            },
          );
        } catch (e) {
          if (e instanceof BodyError) return;
          outcome = e instanceof RateLimitExceeded ? "refused" : "error";
        }
      });
      const stop = BigInt(Date.now());
      inFlight[li]?.delete(id);
      callStarts.set(id, start);
      ops.push({
        kind: "acquire",
        id,
        start: bodyRan ? since : start,
        end: bodyRan ? bodyEnd : stop,
        charges,
        outcome: bodyRan
          ? "admitted"
          : ctx.faulted && outcome !== "refused"
          ? "error"
          : outcome,
      });
      if (!bodyRan) {
        ctx.applied.forEach((a, i) =>
          ops.push({
            kind: "adjust",
            id: `${id}/w${i}`,
            start: a.start,
            end: a.end,
            charges: [{ bucket: a.bucket, limit: "rpm", amountMilli: a.delta }],
            // A coalesced write made in this call may carry other calls'
            // shares: none is certain to be this call's own.
            outcome: "ambiguous",
          })
        );
      } else if (more > 0 && !fails) {
        // Commit: a forced debit, from the slice or written.
        ops.push({
          kind: "adjust",
          id: `${id}/adjust`,
          start,
          end: stop,
          charges: buckets.map((bucket) => ({
            bucket,
            limit: "rpm",
            amountMilli: BigInt(more) * 1000n,
          })),
          outcome: ctx.faulted ? "ambiguous" : "applied",
        });
      }
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
      await new Promise((r) => setTimeout(r, Math.floor(random() * 8)));
    }
  }));
  let local = 0;
  let slices = 0;
  for (const l of limiters) {
    await l.close();
    const s = l.reserveStats();
    local += s?.localAdmissions ?? 0;
    slices += s?.slicesTaken ?? 0;
  }
  const params = {
    cp: BigInt(sc.capacity) * 1000n,
    ra: BigInt(sc.capacity) * 1000n,
    rp: BigInt(PERIOD_S) * 1000n,
  };
  const limits = BUCKETS.map((bucket) => ({ bucket, limit: "rpm", params }));
  const t1 = BigInt(Date.now());
  stranded.forEach((x, i) =>
    ops.push({
      kind: "adjust",
      id: `stranded${i}`,
      start: t0,
      end: t1,
      charges: [{ bucket: x.bucket, limit: "rpm", amountMilli: x.amountMilli }],
      // A give-back whose answer was lost may have applied after all.
      outcome: "ambiguous",
    })
  );
  const finalConsumed = BUCKETS.map((bucket) => ({
    bucket,
    limit: "rpm",
    tcMilli:
      store.get({ ns: "default", entityId: bucket, resource: "api", shard: 0 })
        ?.limits.get("rpm")?.tc ?? 0n,
  }));
  return {
    store: { t0, limits, operations: storeOps },
    caller: { t0, limits, operations: ops, finalConsumed },
    callStarts,
    local,
    taken: slices,
  };
}

Deno.test("localReserve on the memory store: random concurrent histories with faults never over-admit, in the store or to callers", async () => {
  let local = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
        capacity: fc.integer({ min: 10, max: 60 }),
        clients: fc.integer({ min: 2, max: 4 }),
        faults: fc.boolean(),
        ttlMs: fc.integer({ min: 30, max: 600 }),
        fraction: fc.constantFrom(0.1, 0.3, 0.5, 1),
      }),
      async (sc) => {
        const run = await runHistory(sc);
        local += run.local;
        const acquires = run.caller.operations.filter((o) =>
          o.kind === "acquire"
        );
        assert.ok(acquires.length > 20, "the history has traffic");
        const seed = JSON.stringify(sc);
        const stored = check(run.store, { slackMilli: 1n });
        assert.ok(stored.ok, `store history, ${seed}: ${format(stored)}`);
        // Refusals are the store's (checked there); here only admissions.
        const caller = check(
          {
            ...run.caller,
            operations: run.caller.operations.filter((o) =>
              o.kind !== "acquire" || o.outcome !== "refused"
            ),
          },
          { slackMilli: 1n },
        );
        assert.ok(caller.ok, `caller history, ${seed}: ${format(caller)}`);
        // The documented staleness bound: with each admission at its own
        // time, a window sees at most the tokens held in slices at its
        // start more than the ideal bucket: per bucket, at most one slice
        // of maxFraction of the capacity per limiter.
        const held = BigInt(sc.clients) *
          ((BigInt(sc.capacity) * 1000n * BigInt(sc.fraction * 100)) / 100n);
        const shifted = check(
          {
            t0: run.caller.t0 ?? 0n,
            limits: run.caller.limits,
            operations: run.caller.operations.flatMap((o): Operation[] =>
              o.kind !== "acquire"
                ? [o]
                : o.outcome === "refused"
                ? []
                : [{ ...o, start: run.callStarts.get(o.id) ?? o.start }]
            ),
          },
          { slackMilli: held + 1n },
        );
        assert.ok(
          shifted.ok,
          `time-shift beyond ${held} mtk, ${seed}: ${format(shifted)}`,
        );
      },
    ),
    { numRuns: 8 },
  );
  assert.ok(local > 50, `slices served acquires (${local})`);
});

// A slice taken on both sides of a cascade whose parent side is refused (the
// limiter's view of the parent was stale) gives the child's write back; when
// that give-back fails before applying (throttled), the call still goes on
// and is admitted by the fast path (it asks less than a slice). The child's
// write then stands: it must be reported as a give-back that did not happen,
// or the callers' accounting is off by the slice.
Deno.test("localReserve: a failed give-back of a slice write whose other side was refused is reported as a give-back", async () => {
  let throttleGiveBack = false;
  const store = new MemoryBucketStore({
    hook: (phase, _op, ws) => {
      if (phase !== "before" || !throttleGiveBack) return;
      const giveBack = ws.some((w) =>
        w.kind === "plain" && w.write.ref.entityId === "child" &&
        w.write.limits.some((l) => l.name === "rpm" && l.take < 0n)
      );
      if (!giveBack) return;
      throttleGiveBack = false;
      throw Object.assign(new Error("injected: throttled"), {
        name: "ThrottlingException",
      });
    },
  });
  const source = new MemoryLimiterSource(store);
  source.setSystemDefaults([Limit.custom("rpm", 60, 60, 3600)]);
  source.createEntity("parent");
  source.createEntity("child", { parentId: "parent", cascade: true });
  const rec = new ReserveRecorder("rpm");
  const stranded: StrandedCharge[] = [];
  const onStranded = rec.onStranded();
  const limiter = new RateLimiter(source, {
    bucketStore: rec.wrap(store),
    refusalCacheSize: 0,
    onError: () => {},
    onStranded: (c) => {
      stranded.push(c);
      onStranded(c);
    },
    localReserve: { ttlMs: 20, targetMs: 5000, maxFraction: 0.5, env: {} },
  });
  const other = new RateLimiter(source, { bucketStore: store });
  const t0 = BigInt(Date.now());
  const child = {
    entityId: "child",
    resource: "api",
    amount: 1,
    buckets: ["child", "parent"],
  };
  try {
    // Demand, known items; the slices expire and go back.
    for (let i = 0; i < 6; i++) await rec.acquire(0, limiter, child);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(limiter.reserveStats()?.heldTokens, {});
    // Another process drains the parent to one token: this limiter's view of it is stale.
    const left = Number(
      (store.get({
        ns: source.namespaceId,
        entityId: "parent",
        resource: "api",
        shard: 0,
      })
        ?.limits.get("rpm")?.tk ?? 0n) / 1000n,
    );
    await other.acquire({
      entityId: "parent",
      resource: "api",
      consume: { rpm: left - 1 },
    }, () => {});
    const taken = limiter.reserveStats()?.slicesTaken ?? 0;
    throttleGiveBack = true;
    await rec.acquire(0, limiter, child);
    assert.equal(throttleGiveBack, false, "the child's give-back was sent");
    assert.equal(rec.counts.admitted, 7, JSON.stringify(rec.counts));
    assert.equal(limiter.reserveStats()?.slicesTaken, taken, "no slice taken");
  } finally {
    await limiter.close();
  }
  const params = { cp: 60_000n, ra: 60_000n, rp: 3_600_000n };
  const tc = new Map(
    ["child", "parent"].map((b) => [
      b,
      store.get({
        ns: source.namespaceId,
        entityId: b,
        resource: "api",
        shard: 0,
      })
        ?.limits.get("rpm")?.tc ?? 0n,
    ]),
  );
  const limits = ["child", "parent"].map((bucket) => ({
    bucket,
    limit: "rpm",
    params,
  }));
  // The other process's charge of the parent, outside the recorder.
  const drained = (tc.get("parent") ?? 0n) - 7000n;
  const caller = check(
    rec.callerHistory(
      t0,
      limits.map((l) =>
        l.bucket === "parent" ? { ...l, consumedMilli: drained } : l
      ),
      tc,
    ),
    { slackMilli: 1n },
  );
  assert.ok(caller.ok, `caller history: ${format(caller)}`);
  const g = stranded.filter((s) => s.entityId === "child");
  assert.equal(g.length, 1, JSON.stringify(stranded));
  assert.equal(g[0]?.kind, "giveback");
  assert.ok((g[0]?.amounts["rpm"] ?? 0) > 1, "the slice write carried a slice");
});

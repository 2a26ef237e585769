/**
 * The admission oracle with waiting and partial grants on the memory store
 * (`_oracle/wait_partial_history.ts` says how calls become the checker's
 * operations): several limiters share one `MemoryBucketStore` whose hook
 * delays writes and, in some histories, injects faults (a throttle before a
 * write applies, a lost answer after it applied). 0 over-admissions, and no
 * refusal without cause. fast-check prints the failing scenario.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Limit, RateLimiter } from "../mod.ts";
import { type BucketWrite, MemoryBucketStore } from "../testing.ts";
import { MemoryLimiterSource } from "../core/store/memory_limiter_source.ts";
import {
  checkRun,
  type HistoryEnv,
  runHistory,
  type Scenario,
  tpmLimit,
} from "./_oracle/wait_partial_history.ts";

/** The memory store; the hook sees every write that applied, even one whose answer it then loses. */
const memory: HistoryEnv = {
  open(sc: Scenario, rec) {
    const started = new WeakMap<readonly BucketWrite[], bigint>();
    const store = new MemoryBucketStore({
      hook: async (phase, op, ws) => {
        if (phase === "after") {
          const at = BigInt(Date.now());
          // Only a write that applied reaches "after" (a failed condition does not).
          rec.applied(ws, started.get(ws) ?? at, at);
        }
        if (phase === "before") {
          started.set(ws, BigInt(Date.now()));
          if (op !== "read") rec.sent();
          await new Promise((r) => setTimeout(r, Math.floor(rec.random() * 3)));
          if (sc.faults && op !== "read" && rec.random() < 0.06) {
            const c = rec.call();
            if (c) c.faulted = true;
            throw Object.assign(new Error("injected throttle"), {
              name: "ThrottlingException",
            });
          }
        } else if (sc.faults && rec.random() < 0.04) {
          const c = rec.call();
          if (c) c.faulted = true;
          throw Object.assign(new Error("injected: answer lost after apply"), {
            name: "InternalServerError",
          });
        }
      },
    });
    const counting = {
      name: store.name,
      read: store.read.bind(store),
      async write(w: BucketWrite, o?: { readonly answer?: boolean }) {
        const r = await store.write(w, o);
        const c = rec.call();
        if (!r.ok && c) c.lost++;
        return r;
      },
      async transact(ws: readonly BucketWrite[]) {
        const r = await store.transact(ws);
        const c = rec.call();
        if (!r.ok && c) c.lost++;
        return r;
      },
    };
    const source = new MemoryLimiterSource(store);
    source.setSystemDefaults([tpmLimit(sc)]);
    source.createEntity("parent");
    source.createEntity("child", { parentId: "parent", cascade: true });
    return Promise.resolve({ store: counting, source });
  },
};

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
        const run = await runHistory(sc, memory);
        for (const [k, v] of Object.entries(run.modes)) {
          seen[k] = (seen[k] ?? 0) + v;
        }
        checkRun(sc, run);
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

Deno.test("partial grants and waiting work on the local fallback while the store is down", async () => {
  let down = false;
  const store = new MemoryBucketStore({
    hook: (phase) => {
      if (down && phase === "before") {
        return Promise.reject(
          Object.assign(new Error("injected outage"), {
            name: "ServiceUnavailable",
          }),
        );
      }
      return Promise.resolve();
    },
  });
  const source = new MemoryLimiterSource(store);
  source.setSystemDefaults([Limit.custom("tps", 1000, 1000, 1)]);
  source.createEntity("k");
  const limiter = new RateLimiter(source, {
    bucketStore: store,
    localFallback: { share: 0.5 },
    onError: () => {},
  });
  const req = { entityId: "k", resource: "llm" };
  await limiter.acquire({ ...req, consume: { tps: 1 } }, () => {}); // learn the limits
  down = true;
  // The local bucket holds half of the limit: 500 of the 800 asked.
  const lease = await limiter.acquire({
    ...req,
    consume: { tps: 800 },
    min: { tps: 100 },
  });
  assert.equal(lease.local, true);
  const first = lease.granted.tps ?? 0;
  assert.ok(first >= 500 && first < 520, `granted ${first}`);
  await lease.commit();
  // Empty now; refills 500 per second locally: a wait of 300 tokens takes ~600 ms.
  const t0 = Date.now();
  const waited = await limiter.acquire({
    ...req,
    consume: { tps: 300 },
    wait: { maxMs: 3000 },
  });
  assert.equal(waited.local, true);
  assert.ok(Date.now() - t0 >= 450, `waited ${Date.now() - t0} ms`);
  await waited.commit();
});

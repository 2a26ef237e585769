import assert from "node:assert/strict";
import { Limit, RateLimiterUnavailable } from "../../mod.ts";
import { createTestLimiter } from "../../testing.ts";
import type { StrandedCharge } from "../lease.ts";
import { currentBatch } from "./coalescer.ts";
import { observeNetZero } from "./batch_queue.ts";

const REF = { ns: "default", entityId: "k", resource: "api", shard: 0 };
const req = (timeoutMs?: number) => ({
  entityId: "k",
  resource: "api",
  consume: { rpm: 1 },
  onUnavailable: "block" as const,
  ...(timeoutMs ? { timeoutMs } : {}),
});

/** A limiter whose writes each take `ms`, counting writes and coalesced ones. */
function slowStore(ms: number, coalesceWrites = true) {
  const seen = { writes: 0, batches: [] as number[] };
  const stranded: StrandedCharge[] = [];
  const { limiter, source, store } = createTestLimiter({
    store: {
      hook: async (phase, op) => {
        if (phase !== "before" || op === "read") return;
        seen.writes++;
        const b = currentBatch();
        if (b) seen.batches.push(b.length);
        await new Promise((r) => setTimeout(r, ms));
      },
    },
    limiter: {
      onStranded: (c) => stranded.push(c),
      onError: () => {},
      coalesceWrites,
    },
  });
  source.setSystemDefaults([Limit.perHour("rpm", 100)]);
  source.createEntity("k"); // known: acquires take the fast path
  const tc = () => store.get(REF)?.limits.get("rpm")?.tc ?? 0n;
  return { limiter, seen, stranded, tc };
}

Deno.test("Coalescer: acquires that queue behind a write in flight are charged in one write of their sum", async () => {
  const { limiter, seen, tc } = slowStore(20);
  await limiter.acquire(req(), () => {}); // creates the bucket
  seen.writes = 0;
  await Promise.all(
    Array.from({ length: 10 }, () => limiter.acquire(req(), () => {})),
  );
  // The first is written alone; the nine that queued behind it share one write.
  assert.equal(seen.writes, 2);
  assert.deepEqual(seen.batches, [9]);
  assert.equal(tc(), 11_000n);
});

Deno.test("Coalescer: strict mode (coalesceWrites: false) writes every decision", async () => {
  const { limiter, seen, tc } = slowStore(5, false);
  await limiter.acquire(req(), () => {});
  seen.writes = 0;
  await Promise.all(
    Array.from({ length: 6 }, () => limiter.acquire(req(), () => {})),
  );
  assert.equal(seen.writes, 6);
  assert.deepEqual(seen.batches, []);
  assert.equal(tc(), 7000n);
});

Deno.test("Coalescer: an acquire whose deadline passes while it waits leaves the queue, nothing of it is written, and nothing is reported stranded", async () => {
  const { limiter, seen, stranded, tc } = slowStore(300);
  await limiter.acquire(req(), () => {});
  seen.writes = 0;
  const first = limiter.acquire(req(), () => {}); // in flight 0-300 ms
  const late = limiter.acquire(req(100), () => {}); // gives up at 100 ms, queued
  const other = limiter.acquire(req(), () => {}); // written after the first
  await assert.rejects(late, RateLimiterUnavailable);
  await first;
  await other;
  assert.equal(tc(), 3000n);
  assert.equal(seen.writes, 2);
  await new Promise((r) => setTimeout(r, 10)); // a late outcome settles
  assert.deepEqual(stranded, []); // never sent: certainly not applied
});

Deno.test("Coalescer: an acquire whose deadline passes while its share is in flight fails; the write admits the others, and the share it applied is given back, not reported stranded", async () => {
  const { limiter, seen, stranded, tc } = slowStore(300);
  await limiter.acquire(req(), () => {});
  seen.writes = 0;
  const first = limiter.acquire(req(), () => {}); // in flight 0-300 ms
  // Queued, then in flight from about 300 ms to 600 ms: gives up at 450 ms.
  const late = limiter.acquire(req(450), () => {});
  const other = limiter.acquire(req(), () => {});
  await assert.rejects(late, RateLimiterUnavailable);
  await first;
  await other; // admitted by the same write
  assert.deepEqual(seen.batches, [2]);
  assert.equal(tc(), 4000n); // the abandoned share applied, as a single write's would
  await limiter.close(); // waits for the give-back (a 300 ms write)
  assert.equal(tc(), 3000n); // given back once: only the admitted stand
  assert.deepEqual(stranded, []);
});

Deno.test("Coalescer: lease commits and rollbacks that queue behind a delta in flight are written as one delta of their sum", async () => {
  const { limiter, seen, tc } = slowStore(20);
  const leases = [];
  for (let i = 0; i < 9; i++) leases.push(await limiter.acquire(req()));
  assert.equal(tc(), 9000n);
  seen.writes = 0;
  seen.batches = [];
  // Three take 5 more (debt allowed), three give 1 back, three roll back.
  await Promise.all(leases.map((l, i) => {
    if (i % 3 === 0) l.adjust({ rpm: 5 });
    if (i % 3 === 1) l.adjust({ rpm: -1 });
    return i % 3 === 2 ? l.rollback() : l.commit();
  }));
  // The first is written alone; the eight that queued behind it share one write.
  assert.equal(seen.writes, 2);
  assert.deepEqual(seen.batches, [8]);
  assert.equal(tc(), 9000n + 3n * 5000n - 3n * 1000n - 3n * 1000n);
});

Deno.test("Coalescer: a give-back in a coalesced delta is still clamped to the capacity", async () => {
  const { limiter, seen } = slowStore(20);
  const leases = [];
  for (let i = 0; i < 4; i++) leases.push(await limiter.acquire(req()));
  seen.writes = 0;
  // Each gives back 50 more than it took: the bucket (capacity 100, 96 left) fills to 100, no higher.
  await Promise.all(leases.map((l) => {
    l.adjust({ rpm: -50 });
    return l.commit();
  }));
  assert.equal(seen.writes, 2);
  const a = await limiter.available({ entityId: "k", resource: "api" });
  assert.equal(a.rpm, 100);
});

Deno.test("Coalescer: a coalesced delta write that fails without a verdict fails every lease it carried, each reporting its own share", async () => {
  let fail = false;
  let writes = 0;
  const stranded: StrandedCharge[] = [];
  const { limiter, source } = createTestLimiter({
    store: {
      hook: async (phase, op) => {
        if (op === "read") return;
        if (phase === "before") {
          writes++;
          await new Promise((r) => setTimeout(r, 20));
        }
        if (phase === "after" && fail && currentBatch()) {
          throw Object.assign(new Error("socket hang up"), {
            name: "TimeoutError",
          });
        }
      },
    },
    limiter: {
      onStranded: (c) => stranded.push(c),
      onError: () => {},
    },
  });
  source.setSystemDefaults([Limit.perHour("rpm", 100)]);
  source.createEntity("k");
  const leases = [];
  for (let i = 0; i < 4; i++) leases.push(await limiter.acquire(req()));
  fail = true;
  writes = 0;
  const results = await Promise.allSettled(leases.map((l, i) => {
    l.adjust({ rpm: i + 1 });
    return l.commit();
  }));
  assert.equal(writes, 2);
  // The first wrote alone and succeeded; the three that shared a write failed.
  assert.deepEqual(results.map((r) => r.status), [
    "fulfilled",
    "rejected",
    "rejected",
    "rejected",
  ]);
  for (const r of results.slice(1)) {
    assert.ok(
      (r as PromiseRejectedResult).reason instanceof RateLimiterUnavailable,
    );
  }
  assert.deepEqual(
    stranded.map((s) => [s.kind, s.amounts.rpm]).sort(),
    [["debit", 2], ["debit", 3], ["debit", 4]],
  );
});

Deno.test("Coalescer: queued lease deltas that cancel out are not written, and observers see them", async () => {
  const { limiter, seen, tc } = slowStore(20);
  const leases = [];
  for (let i = 0; i < 3; i++) leases.push(await limiter.acquire(req()));
  seen.writes = 0;
  const netZero: number[] = [];
  const stop = observeNetZero((_, shares) => netZero.push(shares.length));
  try {
    // The first (5 more) is in flight; the other two (+2, -2) queue and cancel out.
    leases[0]?.adjust({ rpm: 5 });
    leases[1]?.adjust({ rpm: 2 });
    leases[2]?.adjust({ rpm: -2 });
    await Promise.all(leases.map((l) => l.commit()));
  } finally {
    stop();
  }
  assert.equal(seen.writes, 1);
  assert.deepEqual(netZero, [2]);
  assert.equal(tc(), 3000n + 5000n);
});

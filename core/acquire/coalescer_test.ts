import assert from "node:assert/strict";
import { Limit, RateLimiterUnavailable } from "../../mod.ts";
import { createTestLimiter } from "../../testing.ts";
import type { StrandedCharge } from "../lease.ts";
import { currentBatch } from "./coalescer.ts";

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

Deno.test("Coalescer: an acquire whose deadline passes while it waits leaves the queue, and nothing of it is written", async () => {
  const { limiter, seen, tc } = slowStore(300);
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
});

Deno.test("Coalescer: an acquire whose deadline passes while its share is in flight fails and reports its share stranded; the write admits the others", async () => {
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
  assert.deepEqual(
    stranded.map((s) => [s.kind, s.entityId, s.amounts]),
    [["debit", "k", { rpm: 1 }]],
  );
});

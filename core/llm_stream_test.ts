import assert from "node:assert/strict";
import fc from "fast-check";
import { createTestLimiter } from "../testing.ts";
import { StreamBudgetExceeded, ValidationError } from "./errors.ts";
import type { Lease } from "./lease.ts";
import { Limit } from "./limit.ts";
import { meterStream } from "./llm_stream.ts";
import { leaseHolds } from "./llm_usage.ts";

async function* chunksOf(sizes: readonly number[]): AsyncGenerator<number> {
  for (const s of sizes) yield s;
}

async function leaseFor(consume: Record<string, number>): Promise<Lease> {
  const { limiter, source } = createTestLimiter();
  source.setSystemDefaults([
    Limit.perMinute("otpm", 1_000_000),
    Limit.perMinute("tpm", 1_000_000),
    Limit.perMinute("itpm", 1_000_000),
  ]);
  return await limiter.acquire({ entityId: "k", resource: "llm", consume });
}

Deno.test("meterStream() passes every chunk within the reservation and settles to what was used", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.integer({ min: 0, max: 50 }), { maxLength: 30 }),
      fc.integer({ min: 0, max: 2000 }),
      fc.boolean(),
      async (sizes, reserve, declared) => {
        const lease = await leaseFor({ otpm: reserve, itpm: 40 });
        const seen: number[] = [];
        let stopped: StreamBudgetExceeded | null = null;
        try {
          for await (
            const c of meterStream(lease, chunksOf(sizes), {
              count: (n) => ({ otpm: n }),
              ...(declared ? { limits: ["otpm"] } : {}),
            })
          ) seen.push(c);
        } catch (e) {
          if (!(e instanceof StreamBudgetExceeded)) throw e;
          stopped = e;
        }
        // The chunks passed are the longest prefix within the reservation.
        let sum = 0;
        let k = 0;
        while (k < sizes.length && sum + (sizes[k] as number) <= reserve) {
          sum += sizes[k] as number;
          k++;
        }
        assert.deepEqual(seen, sizes.slice(0, k));
        const used = k < sizes.length ? sum + (sizes[k] as number) : sum;
        assert.equal(stopped !== null, k < sizes.length);
        if (stopped) {
          assert.equal(stopped.code, "STREAM_BUDGET_EXCEEDED");
          assert.equal(stopped.budget, reserve);
          assert.equal(stopped.used, used);
        }
        // Settled: the lease holds what the provider produced; other limits
        // untouched. A stream without chunks meters only declared limits.
        const metered = declared || sizes.length > 0;
        assert.deepEqual(leaseHolds(lease), {
          otpm: metered ? used : reserve,
          tpm: 0,
          itpm: 40,
        });
        await lease.commit();
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("meterStream() aborts the controller with the error and stops the source", async () => {
  const lease = await leaseFor({ otpm: 25 });
  const controller = new AbortController();
  let returned = false;
  async function* source(): AsyncGenerator<number> {
    try {
      for (;;) yield 10;
    } finally {
      returned = true;
    }
  }
  const it = meterStream(lease, source(), {
    count: (n) => ({ otpm: n }),
    controller,
  });
  const seen: number[] = [];
  const e = await (async () => {
    try {
      for await (const c of it) seen.push(c);
    } catch (e) {
      return e;
    }
  })();
  assert.ok(e instanceof StreamBudgetExceeded);
  assert.equal(controller.signal.reason, e);
  assert.ok(returned, "the provider's stream was closed");
  assert.deepEqual(seen, [10, 10]);
  await lease.rollback();
});

Deno.test("meterStream() with a budget above the reservation adds to the lease chunk by chunk", async () => {
  const lease = await leaseFor({ otpm: 10 });
  const it = meterStream(lease, chunksOf([8, 8, 8]), {
    count: (n) => ({ otpm: n }),
    budget: { otpm: 30 },
    settle: false,
  });
  const holds: number[] = [];
  for await (const _ of it) holds.push(leaseHolds(lease).otpm ?? -1);
  assert.deepEqual(holds, [10, 16, 24]);
  assert.deepEqual(leaseHolds(lease), { otpm: 24, tpm: 0, itpm: 0 });
  await lease.commit();
});

Deno.test("meterStream() without settle keeps the unused reservation", async () => {
  const lease = await leaseFor({ otpm: 100 });
  for await (
    const _ of meterStream(lease, chunksOf([5, 5]), {
      count: (n) => ({ otpm: n }),
      settle: false,
    })
  ) { /* drain */ }
  assert.equal(leaseHolds(lease).otpm, 100);
  await lease.commit();
});

Deno.test("meterStream() settles when the consumer breaks off, and counts alreadyUsed against the budget", async () => {
  const lease = await leaseFor({ tpm: 300 });
  for await (
    const c of meterStream(lease, chunksOf([10, 10, 10, 10]), {
      count: (n) => ({ tpm: n }),
      alreadyUsed: { tpm: 200 },
    })
  ) {
    if (c === 10) break;
  }
  assert.equal(leaseHolds(lease).tpm, 210, "the prompt plus one chunk");
  await assert.rejects(
    async () => {
      for await (
        const _ of meterStream(lease, chunksOf([5, 5]), {
          count: (n) => ({ tpm: n }),
          alreadyUsed: { tpm: 208 },
          budget: { tpm: 210 },
        })
      ) { /* drain */ }
    },
    (e: unknown) => e instanceof StreamBudgetExceeded && e.used === 213,
  );
  await lease.commit();
});

Deno.test("meterStream() settles on a source failure and rethrows it", async () => {
  const lease = await leaseFor({ otpm: 100 });
  const boom = new Error("connection reset");
  async function* failing(): AsyncGenerator<number> {
    yield 7;
    throw boom;
  }
  await assert.rejects(async () => {
    for await (
      const _ of meterStream(lease, failing(), { count: (n) => ({ otpm: n }) })
    ) { /* drain */ }
  }, (e: unknown) => e === boom);
  assert.equal(leaseHolds(lease).otpm, 7);
  await lease.commit();
});

Deno.test("meterStream() rejects bad counts naming the field, and names the lease does not hold", async () => {
  const lease = await leaseFor({ otpm: 100 });
  for (
    const [count, field] of [
      [() => ({ otpm: -1 }), "count(chunk).otpm"],
      [() => ({ otpm: 1.5 }), "count(chunk).otpm"],
      [() => ({ otpm: NaN }), "count(chunk).otpm"],
      [() => null, "count(chunk)"],
    ] as [(n: number) => Record<string, number>, string][]
  ) {
    await assert.rejects(
      async () => {
        for await (const _ of meterStream(lease, chunksOf([1]), { count })) {
          /* drain */
        }
      },
      (e: unknown) => e instanceof ValidationError && e.field === field,
    );
  }
  await assert.rejects(
    async () => {
      for await (
        const _ of meterStream(lease, chunksOf([1]), {
          count: () => ({ rpm: 1 }),
        })
      ) { /* drain */ }
    },
    ValidationError,
  );
  assert.equal(leaseHolds(lease).otpm, 100);
  await lease.rollback();
});
